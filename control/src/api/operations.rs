//! Operations: long-running requests and their outcome.

use super::*;

/// The org's operations, newest first (a project key's: those on its project's clusters).
#[utoipa::path(get, path = "/v1/operations", params(TimePageQuery),
    responses((status = 200, body = [Operation], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_operations(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TimePageQuery>,
) -> ApiResult<Paged<Operation>> {
    require(&caller, Action::ReadClusters)?;
    let page = q.page()?;
    let after = page.after_time_and_id()?;
    let mut ops = state
        .store
        .list_operations(
            &caller.org_id,
            caller.project_id.as_deref(),
            after,
            page.limit as i64 + 1,
        )
        .await
        .map_err(store_err("operations"))?;
    let p = page.paged(&mut ops, |o| time_key(o.created_at, &o.id));
    Ok(Paged {
        items: p.items.iter().map(operation_view).collect(),
        next: p.next,
    })
}

#[utoipa::path(get, path = "/v1/operations/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_operation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Operation>> {
    require(&caller, Action::ReadClusters)?;
    let op = state
        .store
        .get_operation(&caller.org_id, &id)
        .await
        .map_err(store_err("operation"))?;
    if let Some(scope) = &caller.project_id {
        let in_scope = match &op.cluster_id {
            Some(c) => state
                .store
                .cluster_project(c)
                .await
                .map_err(store_err("cluster"))?
                .is_some_and(|p| &p == scope),
            None => false,
        };
        if !in_scope {
            return Err(ApiError::not_found("operation"));
        }
    }
    Ok(Json(operation_view(&op)))
}
