//! Signing in: a user's email and password give a session (a key bound to the user that
//! expires); an invitation is accepted with its token (and a new user's password). Both
//! are unauthenticated, limited like failed keys (per address and per user), and audited
//! whether they succeed or not.

use super::*;
use crate::limits::Subject;

/// How long a session lasts.
const SESSION_SECS: i64 = 12 * 3600;

/// The shortest password a new user may choose.
const MIN_PASSWORD: usize = 12;

/// The source address and the limiter's subjects of an unauthenticated call about `who`.
fn subjects(from: Option<std::net::SocketAddr>, who: String) -> (String, Vec<Subject>) {
    let mut subjects = vec![Subject::Key(who)];
    let source = match from {
        Some(a) => {
            subjects.push(Subject::Address(a.ip()));
            a.ip().to_string()
        }
        None => "unknown".into(),
    };
    (source, subjects)
}

/// The Argon2id check, off the async threads.
async fn password_matches(hash: Option<String>, password: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || auth::check_password(hash.as_deref(), &password))
        .await
        .map_err(|e| ApiError::internal("check a password", e))
}

/// Sign in with email and password: a session key for one of the user's orgs.
#[utoipa::path(post, path = "/v1/login", request_body = Login, security(()),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    Peer(from): Peer,
    ApiJson(req): ApiJson<Login>,
) -> ApiResult<Json<Session>> {
    let email = members::normalize_email(&req.email)?;
    let (source, subjects) = subjects(from, format!("login:{email}"));
    let now_i = std::time::Instant::now();
    state
        .auth_limits
        .check(&subjects, now_i)
        .map_err(|w| ApiError::too_many_failures(state.auth_limits.max(), w))?;
    let user = match state.store.user_by_email(&email).await {
        Ok(u) => Some(u),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(store_err("user")(e)),
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = password_matches(hash, req.password).await?;
    let memberships = match &user {
        Some(u) => state.store.memberships(&u.id).await.map_err(store_err("memberships"))?,
        None => Vec::new(),
    };
    let Some(user) = user.filter(|_| ok) else {
        state.auth_limits.failed(&subjects, now_i);
        // Recorded where someone can look: the user's orgs, or the operator's.
        let orgs: Vec<String> = memberships.iter().map(|(m, _)| m.org_id.clone()).collect();
        let orgs = if orgs.is_empty() {
            state
                .store
                .list_operator_orgs()
                .await
                .map(|o| o.into_iter().map(|o| o.id).take(1).collect())
                .unwrap_or_default()
        } else {
            orgs
        };
        for org in orgs {
            crate::audit::record(
                &state,
                &org,
                &format!("login:{email}"),
                "login",
                &format!("users/{email}"),
                &source,
                "failed",
            )
            .await;
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong email or password",
        ));
    };
    let chosen = match &req.org {
        Some(name) => memberships.iter().find(|(_, n)| n == name),
        None if memberships.len() == 1 => memberships.first(),
        None if memberships.is_empty() => None,
        None => {
            let names: Vec<&str> = memberships.iter().map(|(_, n)| n.as_str()).collect();
            return Err(ApiError::invalid(format!(
                "you belong to several orgs; name one with `org`: {}",
                names.join(", ")
            )));
        }
    };
    let Some((member, org_name)) = chosen else {
        return Err(ApiError::forbidden(match &req.org {
            Some(_) => "you are not a member of that org",
            None => "you are not a member of any org yet: accept an invitation first",
        }));
    };
    let expires_at = now() + SESSION_SECS;
    let (key, secret) = auth::make_key(
        &member.org_id,
        "session",
        auth::KeyGrant {
            role: member.role,
            project_id: None,
            expires_at: Some(expires_at),
            user_id: Some(user.id.clone()),
            created_by: Some(format!("user:{}", user.id)),
        },
    );
    state.store.create_api_key(&key).await.map_err(store_err("session"))?;
    crate::audit::record(
        &state,
        &member.org_id,
        &format!("user:{}", user.id),
        "login",
        &format!("sessions/{}", key.id),
        &source,
        "ok",
    )
    .await;
    Ok(Json(Session {
        user_id: user.id,
        email: user.email,
        org_id: member.org_id.clone(),
        org: org_name.clone(),
        role: member.role,
        key_id: key.id,
        secret,
        expires_at,
    }))
}

/// Accept an invitation: a new user chooses a password here (at least 12 characters); a
/// user who has one gives it.
#[utoipa::path(post, path = "/v1/invites/accept", request_body = AcceptInvite, security(()),
    responses((status = 200, body = OrgMember), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(super) async fn accept_invite(
    State(state): State<Arc<AppState>>,
    Peer(from): Peer,
    ApiJson(req): ApiJson<AcceptInvite>,
) -> ApiResult<Json<OrgMember>> {
    let parsed = req
        .token
        .strip_prefix(members::INVITE_PREFIX)
        .and_then(|t| {
            let mut it = t.splitn(3, '.');
            Some((it.next()?, it.next()?, it.next()?))
        })
        .filter(|(o, u, s)| o.len() <= 64 && u.len() <= 64 && s.len() <= 128);
    let Some((org_id, user_id, secret)) = parsed else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "that is not an invitation token",
        ));
    };
    let (source, subjects) = subjects(from, format!("invite:{user_id}"));
    let now_i = std::time::Instant::now();
    state
        .auth_limits
        .check(&subjects, now_i)
        .map_err(|w| ApiError::too_many_failures(state.auth_limits.max(), w))?;
    let refused = |state: &AppState| {
        state.auth_limits.failed(&subjects, now_i);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this invitation is not valid (unknown, used, expired, or the password is wrong)",
        )
    };
    let member = match state.store.member(org_id, user_id).await {
        Ok(m) => m,
        Err(StoreError::NotFound) => return Err(refused(&state)),
        Err(e) => return Err(store_err("member")(e)),
    };
    let valid = member.joined_at.is_none()
        && member.invite_expires_at.is_some_and(|t| t > now())
        && member
            .invite_hash
            .as_deref()
            .is_some_and(|h| auth::ct_eq(h, &auth::hash_secret(secret)));
    let user = state.store.user(&member.user_id).await.map_err(store_err("user"))?;
    let (actor, target) = (format!("user:{}", user.id), format!("members/{}", user.email));
    let record = |result| crate::audit::record(&state, org_id, &actor, "accept invitation", &target, &source, result);
    if !valid {
        record("failed").await;
        return Err(refused(&state));
    }
    let new_hash = match &user.password_hash {
        Some(h) => {
            if !password_matches(Some(h.clone()), req.password).await? {
                record("failed").await;
                return Err(refused(&state));
            }
            None
        }
        None => {
            if req.password.chars().count() < MIN_PASSWORD || req.password.len() > 1024 {
                return Err(ApiError::invalid(format!(
                    "choose a password of {MIN_PASSWORD} to 1024 characters"
                )));
            }
            let p = req.password;
            let h = tokio::task::spawn_blocking(move || auth::hash_password(&p))
                .await
                .map_err(|e| ApiError::internal("hash a password", e))?
                .map_err(|e| ApiError::internal("hash a password", e))?;
            Some(h)
        }
    };
    state
        .store
        .accept_invite(org_id, &user.id, new_hash.as_deref(), now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => refused(&state),
            e => store_err("member")(e),
        })?;
    record("ok").await;
    let m = state
        .store
        .member(org_id, &user.id)
        .await
        .map_err(store_err("member"))?;
    Ok(Json(OrgMember {
        user_id: m.user_id,
        email: m.email,
        role: m.role,
        status: "active".into(),
        created_at: m.created_at,
    }))
}

/// End the caller's session: its key stops working at once. API keys are revoked with
/// `DELETE /v1/api-keys/{id}` instead.
#[utoipa::path(post, path = "/v1/logout",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn logout(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<StatusCode> {
    if !caller.actor.starts_with("user:") {
        return Err(ApiError::conflict(
            "this is an API key, not a session: revoke it with DELETE /v1/api-keys/{id}",
        ));
    }
    caller.audit_target(format!("sessions/{}", caller.key_id));
    state
        .store
        .revoke_api_key(&caller.org_id, &caller.key_id, now())
        .await
        .map_err(store_err("session"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is (an authenticated no-op).
#[utoipa::path(get, path = "/v1/me",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub(super) async fn me(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Me>> {
    let org = state.store.get_org(&caller.org_id).await.map_err(store_err("org"))?;
    let project = match &caller.project_id {
        Some(id) => Some(
            state
                .store
                .project(&caller.org_id, id)
                .await
                .map_err(store_err("project"))?
                .name,
        ),
        None => None,
    };
    Ok(Json(Me {
        actor: caller.actor,
        org_id: org.id,
        org: org.name,
        role: caller.role,
        project,
        operator: caller.operator,
    }))
}
