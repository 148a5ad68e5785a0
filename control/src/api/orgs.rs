//! Orgs, projects and API keys: a tenant's account and its credentials.

use super::*;

#[utoipa::path(post, path = "/v1/orgs", request_body = CreateOrg,
    responses((status = 201, body = CreatedOrg), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_org(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateOrg>,
) -> ApiResult<(StatusCode, Json<CreatedOrg>)> {
    if !caller.operator {
        return Err(ApiError::forbidden("only the operator may create orgs"));
    }
    validate_name("org", &req.name)?;
    let org = store::OrgRow {
        id: auth::new_id("org"),
        name: req.name,
        operator: false,
        created_at: now(),
    };
    let (key, secret) = auth::make_key(&org.id, "admin");
    state
        .store
        .create_org(&org, &auth::new_id("prj"), &key)
        .await
        .map_err(store_err("org"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedOrg {
            org: Org {
                id: org.id,
                name: org.name,
                created_at: org.created_at,
            },
            api_key: CreatedApiKey {
                key: key_view(&key),
                secret,
            },
        }),
    ))
}

pub(super) fn project_view(p: ProjectRow) -> Project {
    Project {
        id: p.id,
        org_id: p.org_id,
        name: p.name,
        created_at: p.created_at,
    }
}

#[utoipa::path(get, path = "/v1/projects", responses((status = 200, body = [Project]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_projects(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<Project>>> {
    let rows = state
        .store
        .list_projects(&caller.org_id)
        .await
        .map_err(store_err("projects"))?;
    Ok(Json(rows.into_iter().map(project_view).collect()))
}

#[utoipa::path(post, path = "/v1/projects", request_body = CreateProject,
    responses((status = 201, body = Project), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_project(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    validate_name("project", &req.name)?;
    let p = ProjectRow {
        id: auth::new_id("prj"),
        org_id: caller.org_id,
        name: req.name,
        created_at: now(),
    };
    state.store.create_project(&p).await.map_err(store_err("project"))?;
    Ok((StatusCode::CREATED, Json(project_view(p))))
}

pub(super) fn key_view(k: &store::ApiKeyRow) -> ApiKey {
    ApiKey {
        id: k.id.clone(),
        org_id: k.org_id.clone(),
        name: k.name.clone(),
        created_at: k.created_at,
        revoked_at: k.revoked_at,
    }
}

#[utoipa::path(get, path = "/v1/api-keys", responses((status = 200, body = [ApiKey]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_api_keys(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<ApiKey>>> {
    let rows = state
        .store
        .list_api_keys(&caller.org_id)
        .await
        .map_err(store_err("API keys"))?;
    Ok(Json(rows.iter().map(key_view).collect()))
}

/// Create an API key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody)))]
pub(super) async fn create_api_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    validate_label("key name", &req.name)?;
    let (key, secret) = auth::make_key(&caller.org_id, &req.name);
    state.store.create_api_key(&key).await.map_err(store_err("API key"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: key_view(&key),
            secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_api_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .revoke_api_key(&caller.org_id, &id, now())
        .await
        .map_err(store_err("API key"))?;
    Ok(StatusCode::NO_CONTENT)
}
