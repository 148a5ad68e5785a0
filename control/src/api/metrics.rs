//! A cluster's recent metrics: each member's samples as the control plane keeps them in
//! memory from heartbeats (`crate::metrics`), read back by the host the member is on.

use super::*;

/// Each member's recent samples (connections, transactions, WAL positions, storage), one
/// every few seconds for the last half hour: a live view the control plane keeps in memory.
#[utoipa::path(get, path = "/v1/clusters/{cluster}/metrics",
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = ClusterMetrics), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn cluster_metrics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<ClusterMetrics>> {
    require(&caller, Action::ReadClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let view = cluster_view(&state, &c).await?;
    let now = now_ms();
    let members = view
        .members
        .into_iter()
        .map(|m| MemberMetrics {
            samples: state.metrics.series(&m.host_id, &m.instance_id, now),
            instance_id: m.instance_id,
            role: m.role,
            cloud: m.cloud,
        })
        .collect();
    Ok(Json(ClusterMetrics {
        sample_every_ms: crate::metrics::SAMPLE_EVERY_MS,
        window_ms: crate::metrics::WINDOW_MS,
        members,
    }))
}
