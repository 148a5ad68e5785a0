//! Cluster events: what happened to a cluster, oldest first.

use super::*;

/// The cluster's events, oldest first.
#[utoipa::path(get, path = "/v1/clusters/{cluster}/events", params(("cluster" = String, Path, description = "Cluster id or name"), ClusterPageQuery),
    responses((status = 200, body = [ClusterEvent], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn cluster_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ClusterPageQuery>,
) -> ApiResult<Paged<ClusterEvent>> {
    require(&caller, Action::ReadClusters)?;
    let page = Page::new(q.limit, q.cursor.as_deref())?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let events = state.store.events(&c.id).await.map_err(store_err("events"))?;
    let p = page.apply(events, |e| e.id.clone());
    Ok(Paged {
        items: p
            .items
            .into_iter()
            .map(|e| ClusterEvent {
                at: e.at,
                kind: e.kind,
                message: e.message,
            })
            .collect(),
        next: p.next,
    })
}
