//! Members: the users of an org and their roles. An invitation makes a member (and the
//! user, when new); the invited person accepts it (see `sessions`).

use super::*;

/// How long an invitation may wait to be accepted.
const INVITE_VALID_SECS: i64 = 7 * 24 * 3600;

/// Invitation tokens: `hri_<org id>.<user id>.<secret>`.
pub(super) const INVITE_PREFIX: &str = "hri_";

fn member_view(m: &store::MemberRow) -> OrgMember {
    OrgMember {
        user_id: m.user_id.clone(),
        email: m.email.clone(),
        role: m.role,
        status: if m.joined_at.is_some() { "active" } else { "invited" }.into(),
        created_at: m.created_at,
    }
}

/// An email address as people write them: `local@domain`, at most 254 characters,
/// compared in lowercase.
pub(super) fn normalize_email(email: &str) -> ApiResult<String> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && e.matches('@').count() == 1
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(ApiError::invalid("invalid email address"))
    }
}

#[utoipa::path(get, path = "/v1/members", params(PageQuery),
    responses((status = 200, body = [OrgMember], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_members(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Paged<OrgMember>> {
    require(&caller, Action::ReadMembers)?;
    let rows = state
        .store
        .list_members(&caller.org_id)
        .await
        .map_err(store_err("members"))?;
    Ok(page.page()?.apply(rows.iter().map(member_view), |m| m.email.clone()))
}

/// Invite someone by email with a role (at most the inviter's); the token is in this
/// answer only.
#[utoipa::path(post, path = "/v1/members", request_body = InviteMember,
    responses((status = 201, body = InvitedMember), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn invite_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<InviteMember>,
) -> ApiResult<(StatusCode, Json<InvitedMember>)> {
    caller.audit_target(format!("members/{}", req.email));
    require(&caller, Action::WriteMembers)?;
    let email = normalize_email(&req.email)?;
    if !crate::access::may_grant(caller.role, req.role) {
        return Err(ApiError::forbidden(format!(
            "the {} role may not invite a member with the {} role",
            caller.role, req.role
        )));
    }
    let secret = auth::random_hex(32);
    let at = now();
    let expires = at + INVITE_VALID_SECS;
    let new_user = store::UserRow {
        id: auth::new_id("usr"),
        email,
        password_hash: None,
        created_at: at,
    };
    let m = state
        .store
        .invite_member(
            &caller.org_id,
            &new_user,
            req.role,
            &auth::hash_secret(&secret),
            expires,
        )
        .await
        .map_err(store_err("member"))?;
    Ok((
        StatusCode::CREATED,
        Json(InvitedMember {
            invite_token: format!("{INVITE_PREFIX}{}.{}.{secret}", caller.org_id, m.user_id),
            invite_expires_at: expires,
            member: member_view(&m),
        }),
    ))
}

/// The member a path names (user id or email), with the caller's right to manage them.
async fn managed_member(state: &AppState, caller: &Caller, user: &str) -> ApiResult<store::MemberRow> {
    require(caller, Action::WriteMembers)?;
    let m = state
        .store
        .member(&caller.org_id, &user.to_lowercase())
        .await
        .map_err(store_err("member"))?;
    if !crate::access::may_manage(caller.role, m.role) {
        return Err(ApiError::forbidden(format!(
            "the {} role may not change a member with the {} role",
            caller.role, m.role
        )));
    }
    Ok(m)
}

/// Change a member's role (only owners make or unmake owners; the last owner stays).
#[utoipa::path(patch, path = "/v1/members/{user}", request_body = UpdateMember,
    params(("user" = String, Path, description = "User id or email")),
    responses((status = 200, body = OrgMember), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn update_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateMember>,
) -> ApiResult<Json<OrgMember>> {
    let m = managed_member(&state, &caller, &user).await?;
    if !crate::access::may_grant(caller.role, req.role) {
        return Err(ApiError::forbidden(format!(
            "the {} role may not give the {} role",
            caller.role, req.role
        )));
    }
    state
        .store
        .set_member_role(&caller.org_id, &m.user_id, req.role)
        .await
        .map_err(store_err("member"))?;
    let m = state
        .store
        .member(&caller.org_id, &m.user_id)
        .await
        .map_err(store_err("member"))?;
    Ok(Json(member_view(&m)))
}

/// Remove a member; their sessions in this org end at once.
#[utoipa::path(delete, path = "/v1/members/{user}", params(("user" = String, Path, description = "User id or email")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn remove_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let m = managed_member(&state, &caller, &user).await?;
    state
        .store
        .remove_member(&caller.org_id, &m.user_id, now())
        .await
        .map_err(store_err("member"))?;
    Ok(StatusCode::NO_CONTENT)
}
