//! The land: the clouds, regions and zones clusters can go to (every tenant), and its hosts
//! (operators).

use super::*;

/// The land's hosts (operator keys only).
#[utoipa::path(get, path = "/v1/hosts", params(PageQuery),
    responses((status = 200, body = [Host], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_hosts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Paged<Host>> {
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may list hosts"));
    }
    let page = q.page()?;
    let mut hosts = state.store.list_hosts().await.map_err(store_err("hosts"))?;
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let instances = state.store.list_instances().await.map_err(store_err("instances"))?;
    let disks = state.store.host_disks().await.map_err(store_err("host disks"))?;
    Ok(page.apply(
        hosts.into_iter().map(|h| Host {
            instances: instances.iter().filter(|i| i.host_id == h.id).count() as u32,
            disk: disks.get(&h.id).copied(),
            id: h.id,
            cloud: h.cloud,
            region: h.region,
            zone: h.zone,
            cell: h.cell,
            market: h.market,
            address: h.address,
            status: h.status,
            last_heartbeat: h.last_beat_ms.map(|t| t.div_euclid(1000)),
        }),
        |h| h.id.clone(),
    ))
}

/// The clouds of the land with their regions and zones: where `cluster create --cloud
/// --region` can go.
#[utoipa::path(get, path = "/v1/clouds",
    responses((status = 200, body = [CloudInfo]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_clouds(State(state): State<Arc<AppState>>, _caller: Caller) -> Json<Vec<CloudInfo>> {
    Json(
        state
            .provider
            .clouds()
            .into_iter()
            .map(|c| CloudInfo {
                name: c.name,
                regions: c
                    .regions
                    .into_iter()
                    .map(|r| RegionInfo {
                        name: r.name,
                        zones: r.zones,
                    })
                    .collect(),
            })
            .collect(),
    )
}
