//! Projects: groups of an org's clusters (a key may be limited to one).

use super::*;

pub(super) fn project_view(p: ProjectRow) -> Project {
    Project {
        id: p.id,
        org_id: p.org_id,
        name: p.name,
        created_at: p.created_at,
    }
}

/// The org's projects (a project key sees its own only).
#[utoipa::path(get, path = "/v1/projects", params(PageQuery),
    responses((status = 200, body = [Project], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn list_projects(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Paged<Project>> {
    require(&caller, Action::ReadProjects)?;
    let rows = state
        .store
        .list_projects(&caller.org_id)
        .await
        .map_err(store_err("projects"))?;
    let rows = rows
        .into_iter()
        .filter(|p| caller.project_id.as_ref().is_none_or(|s| s == &p.id));
    Ok(page.page()?.apply(rows.map(project_view), |p| p.name.clone()))
}

#[utoipa::path(post, path = "/v1/projects", request_body = CreateProject,
    responses((status = 201, body = Project), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_project(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    caller.audit_target(format!("projects/{}", req.name));
    require(&caller, Action::WriteProjects)?;
    validate_name("project", &req.name)?;
    let p = ProjectRow {
        id: auth::new_id("prj"),
        org_id: caller.org_id.clone(),
        name: req.name,
        created_at: now(),
    };
    state.store.create_project(&p).await.map_err(store_err("project"))?;
    Ok((StatusCode::CREATED, Json(project_view(p))))
}

/// Delete an empty project (not `default`).
#[utoipa::path(delete, path = "/v1/projects/{project}", params(("project" = String, Path, description = "Project name or id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_project(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    require(&caller, Action::WriteProjects)?;
    let p = resolve_project(&state, &caller, Some(&name)).await?;
    if p.name == "default" {
        return Err(ApiError::conflict(
            "the default project stays (clusters go there when no project is named)",
        ));
    }
    state.store.delete_project(&p).await.map_err(store_err("project"))?;
    Ok(StatusCode::NO_CONTENT)
}
