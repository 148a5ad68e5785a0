//! Operations: long-running requests and their outcome.

use super::*;

#[utoipa::path(get, path = "/v1/operations", responses((status = 200, body = [Operation])))]
pub(super) async fn list_operations(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Operation>>> {
    let ops = state
        .store
        .list_operations(&caller.org_id)
        .await
        .map_err(store_err("operations"))?;
    Ok(Json(ops.iter().map(operation_view).collect()))
}

#[utoipa::path(get, path = "/v1/operations/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 404, body = ErrorBody)))]
pub(super) async fn get_operation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Operation>> {
    let op = state
        .store
        .get_operation(&caller.org_id, &id)
        .await
        .map_err(store_err("operation"))?;
    Ok(Json(operation_view(&op)))
}
