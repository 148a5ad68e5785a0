//! A cluster's private endpoints: listeners of the proxies inside the org's tenant
//! networks, each serving this one cluster, reachable from that network only.

use super::*;

/// The port private endpoints listen on inside a tenant network: PostgreSQL's own (the
/// network is the tenant's; nothing else listens there).
const PRIVATE_PORT: u16 = 5432;

fn endpoint_view(state: &AppState, c: &ClusterRow, e: PrivateEndpointRow, network: &str) -> PrivateEndpoint {
    let connection_uri = format!("postgresql://{}@{}/{}", user_info(c, None), e.address, c.db_name);
    let verified_uri = verified_uri_to(state, c, &e.id, std::slice::from_ref(&e.address), None);
    PrivateEndpoint {
        id: e.id,
        cluster_id: e.cluster_id,
        network_id: e.network_id,
        network: network.to_string(),
        address: e.address,
        connection_uri,
        verified_uri,
        created_at: e.created_at,
    }
}

/// The cluster's private endpoints.
#[utoipa::path(get, path = "/v1/clusters/{cluster}/endpoints",
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = [PrivateEndpoint]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_endpoints(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<Vec<PrivateEndpoint>>> {
    require(&caller, Action::ReadClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let rows = state
        .store
        .private_endpoints_of(&c.id)
        .await
        .map_err(store_err("private endpoints"))?;
    let networks = state
        .store
        .list_networks(&caller.org_id)
        .await
        .map_err(store_err("networks"))?;
    let name_of = |id: &str| {
        networks
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    Ok(Json(
        rows.into_iter()
            .map(|e| {
                let network = name_of(&e.network_id);
                endpoint_view(&state, &c, e, &network)
            })
            .collect(),
    ))
}

/// Give the cluster an endpoint inside one of the org's tenant networks. The proxies
/// listen on it within seconds (each proxy that runs where the network is).
#[utoipa::path(post, path = "/v1/clusters/{cluster}/endpoints", request_body = CreatePrivateEndpoint,
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 201, body = PrivateEndpoint), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
    ApiJson(req): ApiJson<CreatePrivateEndpoint>,
) -> ApiResult<(StatusCode, Json<PrivateEndpoint>)> {
    caller.audit_target(format!("clusters/{cluster}/endpoints"));
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let n = state
        .store
        .network_by_name(&caller.org_id, &req.network)
        .await
        .map_err(store_err("network"))?;
    let range = networks::network_range(&n.cidr)?;
    let taken = state
        .store
        .network_addresses(&n.id)
        .await
        .map_err(store_err("network addresses"))?;
    let ip = networks::endpoint_address(range, req.address.as_deref(), &taken)?;
    let e = PrivateEndpointRow {
        id: format!("ep-{}", auth::random_name(12)),
        cluster_id: c.id.clone(),
        network_id: n.id.clone(),
        address: std::net::SocketAddrV4::new(ip, PRIVATE_PORT).to_string(),
        created_at: now(),
    };
    state
        .store
        .create_private_endpoint(&e)
        .await
        .map_err(store_err("private endpoint"))?;
    tracing::info!(cluster = %c.id, endpoint = %e.id, network = %n.id, address = %e.address, "private endpoint made");
    state.notify();
    Ok((StatusCode::CREATED, Json(endpoint_view(&state, &c, e, &n.name))))
}

/// Remove a private endpoint: its listener closes and its sessions end.
#[utoipa::path(delete, path = "/v1/clusters/{cluster}/endpoints/{endpoint}",
    params(("cluster" = String, Path, description = "Cluster id or name"), ("endpoint" = String, Path, description = "Private endpoint id"), ProjectQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((cluster, endpoint)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<StatusCode> {
    caller.audit_target(format!("clusters/{cluster}/endpoints/{endpoint}"));
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    state
        .store
        .delete_private_endpoint(&c.id, &endpoint)
        .await
        .map_err(store_err("private endpoint"))?;
    state.notify();
    Ok(StatusCode::NO_CONTENT)
}
