//! Tenant networks ("VPCs"): an org's own networks in the land, where its clusters'
//! private endpoints listen. The land makes and removes them (the local land: Linux
//! network namespaces).

use super::*;
use std::net::Ipv4Addr;

/// The range a network gets when none is given.
const DEFAULT_CIDR: &str = "10.0.0.0/24";

/// The most networks an org has (each is a namespace on the land's machines).
const MAX_NETWORKS: usize = 16;

/// An IPv4 address, as the OpenAPI document states it.
pub(super) const ADDRESS_PATTERN: &str =
    r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// A network's range as the OpenAPI document states it: an IPv4 address, /16 to /29.
pub(super) fn network_pattern() -> String {
    format!("{ADDRESS_PATTERN}/(1[6-9]|2[0-9])")
}

pub(super) fn network_view(n: NetworkRow) -> Network {
    Network {
        id: n.id,
        org_id: n.org_id,
        name: n.name,
        cidr: n.cidr,
        namespace: n.namespace,
        created_at: n.created_at,
    }
}

/// A network's range as given: IPv4, /16 to /29, written canonically (host bits cleared,
/// as with allow-list entries).
pub(super) fn network_range(cidr: &str) -> ApiResult<ipnet::Ipv4Net> {
    let net: ipnet::Ipv4Net = cidr.parse().map_err(|_| {
        let shown: String = cidr.chars().take(70).collect();
        ApiError::invalid(format!("{shown:?} is not an IPv4 network (for example {DEFAULT_CIDR})"))
    })?;
    if !(16..=29).contains(&net.prefix_len()) {
        return Err(ApiError::invalid(format!(
            "a network is /16 to /29 (got /{})",
            net.prefix_len()
        )));
    }
    Ok(net.trunc())
}

/// The address a new private endpoint takes: `wanted` when it is a host address of the
/// network and free, else the first free one from the network's 10th address.
pub(super) fn endpoint_address(net: ipnet::Ipv4Net, wanted: Option<&str>, taken: &[String]) -> ApiResult<Ipv4Addr> {
    let taken: Vec<Ipv4Addr> = taken
        .iter()
        .filter_map(|a| a.parse::<std::net::SocketAddrV4>().ok().map(|sa| *sa.ip()))
        .collect();
    let usable = |ip: Ipv4Addr| net.contains(&ip) && ip != net.network() && ip != net.broadcast();
    if let Some(w) = wanted {
        let ip: Ipv4Addr = w.parse().map_err(|_| {
            let shown: String = w.chars().take(70).collect();
            ApiError::invalid(format!("{shown:?} is not an IPv4 address"))
        })?;
        if !usable(ip) {
            // A well-formed address the network's range does not hold: a conflict with
            // the network as it is, not a malformed request.
            return Err(ApiError::conflict(format!("{ip} is not a host address of {net}")));
        }
        if taken.contains(&ip) {
            return Err(ApiError::conflict(format!(
                "{ip} is taken by another endpoint of the network"
            )));
        }
        return Ok(ip);
    }
    net.hosts()
        .skip(9)
        .chain(net.hosts().take(9))
        .find(|ip| usable(*ip) && !taken.contains(ip))
        .ok_or_else(|| ApiError::conflict(format!("every address of {net} is taken")))
}

/// The org's tenant networks.
#[utoipa::path(get, path = "/v1/networks", params(PageQuery),
    responses((status = 200, body = [Network], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_networks(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Paged<Network>> {
    require(&caller, Action::ReadNetworks)?;
    let rows = state
        .store
        .list_networks(&caller.org_id)
        .await
        .map_err(store_err("networks"))?;
    Ok(page
        .page()?
        .apply(rows.into_iter().map(network_view), |n| n.name.clone()))
}

/// Make a tenant network in the land.
#[utoipa::path(post, path = "/v1/networks", request_body = CreateNetwork,
    responses((status = 201, body = Network), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_network(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateNetwork>,
) -> ApiResult<(StatusCode, Json<Network>)> {
    caller.audit_target(format!("networks/{}", req.name));
    require(&caller, Action::WriteNetworks)?;
    validate_name("network", &req.name)?;
    let cidr = network_range(req.cidr.as_deref().unwrap_or(DEFAULT_CIDR))?;
    let have = state
        .store
        .list_networks(&caller.org_id)
        .await
        .map_err(store_err("networks"))?
        .len();
    if have >= MAX_NETWORKS {
        return Err(ApiError::conflict(format!(
            "an org has at most {MAX_NETWORKS} networks; delete one first"
        )));
    }
    let id = auth::new_id("net");
    let n = NetworkRow {
        namespace: format!("hr-{id}"),
        id,
        org_id: caller.org_id.clone(),
        name: req.name,
        cidr: cidr.to_string(),
        created_at: now(),
    };
    state.store.create_network(&n).await.map_err(store_err("network"))?;
    if let Err(e) = state.provider.create_network(&n.namespace, &n.cidr).await {
        // Nothing half made stays: the row goes with the network the land did not make.
        let _ = state.provider.delete_network(&n.namespace).await;
        if let Err(e) = state.store.delete_network(&n).await {
            tracing::error!(network = %n.id, "remove the record of a network the land did not make: {e}");
        }
        return Err(land_err("make the network", e));
    }
    tracing::info!(network = %n.id, namespace = %n.namespace, cidr = %n.cidr, "tenant network made");
    Ok((StatusCode::CREATED, Json(network_view(n))))
}

/// Remove a tenant network no private endpoint uses.
#[utoipa::path(delete, path = "/v1/networks/{network}", params(("network" = String, Path, description = "Network name or id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_network(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.audit_target(format!("networks/{name}"));
    require(&caller, Action::WriteNetworks)?;
    let n = state
        .store
        .network_by_name(&caller.org_id, &name)
        .await
        .map_err(store_err("network"))?;
    // The record first (it refuses while endpoints use the network), then the land's
    // network. A network the land fails to remove holds no listener any more; the
    // failure is the operator's to see in the log.
    state.store.delete_network(&n).await.map_err(store_err("network"))?;
    if let Err(e) = state.provider.delete_network(&n.namespace).await {
        tracing::error!(network = %n.id, namespace = %n.namespace, "remove the land's network: {e}");
    }
    Ok(StatusCode::NO_CONTENT)
}

fn land_err(what: &str, e: highrise_provider::ProviderError) -> ApiError {
    match e {
        highrise_provider::ProviderError::Unsupported(m) => ApiError::not_supported(m),
        e => ApiError::internal(what, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // What the OpenAPI document calls a valid range or address is one the API takes.
        #[test]
        fn every_range_the_document_allows_is_taken(cidr in proptest::string::string_regex(&network_pattern()).unwrap()) {
            prop_assert!(network_range(&cidr).is_ok(), "{cidr:?}");
        }

        #[test]
        fn every_address_the_document_allows_parses(a in proptest::string::string_regex(ADDRESS_PATTERN).unwrap()) {
            prop_assert!(a.parse::<Ipv4Addr>().is_ok(), "{a:?}");
        }
    }

    #[test]
    fn ranges_are_checked_and_canonical() {
        assert_eq!(network_range("10.0.0.0/24").unwrap().to_string(), "10.0.0.0/24");
        assert_eq!(network_range("192.168.0.0/16").unwrap().to_string(), "192.168.0.0/16");
        assert_eq!(network_range("10.0.0.77/24").unwrap().to_string(), "10.0.0.0/24");
        for bad in ["10.0.0.0/8", "10.0.0.0/30", "2001:db8::/64", "ten", "10.0.0.0"] {
            assert!(network_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_take_free_host_addresses() {
        let net = network_range("10.0.0.0/24").unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(endpoint_address(net, None, &[]).unwrap(), ip("10.0.0.10"));
        let taken = vec!["10.0.0.10:5432".to_string(), "10.0.0.11:5432".to_string()];
        assert_eq!(endpoint_address(net, None, &taken).unwrap(), ip("10.0.0.12"));
        assert_eq!(
            endpoint_address(net, Some("10.0.0.99"), &taken).unwrap(),
            ip("10.0.0.99")
        );
        assert!(endpoint_address(net, Some("10.0.0.10"), &taken).is_err(), "taken");
        for bad in ["10.0.0.0", "10.0.0.255", "10.0.1.5", "nope"] {
            assert!(endpoint_address(net, Some(bad), &[]).is_err(), "{bad}");
        }
        // A small network fills up, lowest addresses last.
        let small = network_range("10.0.0.0/29").unwrap();
        let mut taken = Vec::new();
        for _ in 0..6 {
            let a = endpoint_address(small, None, &taken).unwrap();
            taken.push(format!("{a}:5432"));
        }
        assert!(endpoint_address(small, None, &taken).is_err(), "full");
    }
}
