//! The land's hosts, as operators see them.

use super::*;

/// The land's hosts (operator keys only).
#[utoipa::path(get, path = "/v1/hosts", responses((status = 200, body = [Host]), (status = 403, body = ErrorBody)))]
pub(super) async fn list_hosts(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<Host>>> {
    if !caller.operator {
        return Err(ApiError::forbidden("only the operator may list hosts"));
    }
    let hosts = state.store.list_hosts().await.map_err(store_err("hosts"))?;
    let instances = state.store.list_instances().await.map_err(store_err("instances"))?;
    Ok(Json(
        hosts
            .into_iter()
            .map(|h| Host {
                instances: instances.iter().filter(|i| i.host_id == h.id).count() as u32,
                id: h.id,
                cloud: h.cloud,
                region: h.region,
                zone: h.zone,
                market: h.market,
                address: h.address,
                status: h.status,
                last_heartbeat: h.last_beat_ms.map(|t| t.div_euclid(1000)),
            })
            .collect(),
    ))
}
