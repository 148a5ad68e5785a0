//! API keys: created with a role (at most the creator's), optionally limited to one
//! project and given an end; the secret is shown once; revoked at will.

use super::*;

/// `project` is the key's project's name, when it is limited to one.
pub(super) fn key_view(k: &store::ApiKeyRow, project: Option<String>) -> ApiKey {
    ApiKey {
        id: k.id.clone(),
        org_id: k.org_id.clone(),
        name: k.name.clone(),
        role: k.role,
        project,
        expires_at: k.expires_at,
        created_by: k.created_by.clone(),
        created_at: k.created_at,
        revoked_at: k.revoked_at,
    }
}

/// The org's API keys (sessions are not listed).
#[utoipa::path(get, path = "/v1/api-keys", params(PageQuery),
    responses((status = 200, body = [ApiKey], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_api_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Paged<ApiKey>> {
    require(&caller, Action::ReadKeys)?;
    let page = page.page()?;
    let rows = state
        .store
        .list_api_keys(&caller.org_id)
        .await
        .map_err(store_err("API keys"))?;
    let projects = state
        .store
        .list_projects(&caller.org_id)
        .await
        .map_err(store_err("projects"))?;
    let name_of = |id: &Option<String>| {
        id.as_ref().map(|id| {
            projects
                .iter()
                .find(|p| &p.id == id)
                .map_or_else(|| id.clone(), |p| p.name.clone())
        })
    };
    let p = page.apply(rows, |k| format!("{:020}{}", k.created_at, k.id));
    Ok(Paged {
        items: p.items.iter().map(|k| key_view(k, name_of(&k.project_id))).collect(),
        next: p.next,
    })
}

/// Create an API key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn create_api_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    require(&caller, Action::WriteKeys)?;
    validate_label("key name", &req.name)?;
    let role = req.role.unwrap_or(Role::Developer);
    if !crate::access::may_grant(caller.role, role) {
        return Err(ApiError::forbidden(format!(
            "the {} role may not make a key with the {role} role",
            caller.role
        )));
    }
    let expires_at = match req.expires_in_seconds {
        Some(s) if !(60..=315_360_000).contains(&s) => {
            return Err(ApiError::invalid(
                "expires_in_seconds must be between 60 (a minute) and 315360000 (ten years)",
            ))
        }
        Some(s) => Some(now() + s),
        None => None,
    };
    let project = match &req.project {
        Some(name) => Some(resolve_project(&state, &caller, Some(name)).await?),
        None => None,
    };
    let (key, secret) = auth::make_key(
        &caller.org_id,
        &req.name,
        auth::KeyGrant {
            role,
            project_id: project.as_ref().map(|p| p.id.clone()),
            expires_at,
            user_id: None,
            created_by: Some(caller.actor.clone()),
        },
    );
    caller.audit_target(format!("api-keys/{}", key.id));
    state.store.create_api_key(&key).await.map_err(store_err("API key"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: key_view(&key, project.map(|p| p.name)),
            secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_api_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    require(&caller, Action::WriteKeys)?;
    let key = match state.store.api_key(&id).await {
        Ok(k) if k.org_id == caller.org_id && k.user_id.is_none() => k,
        Ok(_) | Err(StoreError::NotFound) => return Err(ApiError::not_found("API key")),
        Err(e) => return Err(store_err("API key")(e)),
    };
    if !crate::access::may_manage(caller.role, key.role) {
        return Err(ApiError::forbidden(format!(
            "the {} role may not revoke a key with the {} role",
            caller.role, key.role
        )));
    }
    state
        .store
        .revoke_api_key(&caller.org_id, &id, now())
        .await
        .map_err(store_err("API key"))?;
    Ok(StatusCode::NO_CONTENT)
}
