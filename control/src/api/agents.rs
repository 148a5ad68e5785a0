//! Agents and proxies: registration, the long-polled desired state and routes, heartbeats
//! (with the usage counters they carry).

use super::*;

/// Trade a host's bootstrap token for a host-scoped token.
#[utoipa::path(post, path = "/v1/agent/register", request_body = RegisterHost,
    responses((status = 200, body = Registered), (status = 401, body = ErrorBody)))]
pub(super) async fn agent_register(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RegisterHost>,
) -> ApiResult<Json<Registered>> {
    let expected = auth::bootstrap_token(&state, &req.host_id);
    if !auth::ct_eq(&expected, &req.bootstrap_token) {
        return Err(ApiError::unauthorized());
    }
    let secret = auth::random_hex(32);
    match state
        .store
        .register_host(&req.host_id, &auth::hash_secret(&secret), &req.address, now_ms())
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::unauthorized()),
        Err(e) => return Err(ApiError::internal("register host", e)),
    }
    state.notify();
    tracing::info!(host = %req.host_id, address = %req.address, "host registered");
    Ok(Json(Registered {
        host_token: format!("{}.{secret}", req.host_id),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LongPoll {
    /// The version the caller has; the call returns when the document differs from it.
    known: Option<String>,
    /// Seconds to wait for a change (0–60).
    wait: Option<u64>,
}

/// A proxy's long-poll for its routing table.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutesQuery {
    /// The version the caller has; the call returns when the table differs from it.
    known: Option<String>,
    /// Seconds to wait for a change (0–60).
    wait: Option<u64>,
    /// The cell the proxy serves: only routes of clusters whose org that cell's proxies
    /// serve. All routes when omitted.
    cell: Option<String>,
}

/// Waits until `fetch()`'s version differs from `known` or the wait runs out.
pub(super) async fn long_poll<T, F, Fut>(state: &AppState, q: &LongPoll, fetch: F) -> ApiResult<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ApiResult<(String, T)>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let mut closing = state.closing.subscribe();
    loop {
        let mut rx = state.changes.subscribe();
        rx.mark_unchanged();
        let (version, doc) = fetch().await?;
        if q.known.as_deref() != Some(version.as_str()) || *closing.borrow_and_update() {
            return Ok(doc);
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, rx.changed()) => {
                if changed.is_err() {
                    return Ok(doc);
                }
            }
            // This control plane is being stopped: answer now.
            _ = closing.changed() => return Ok(doc),
        }
    }
}

/// The host's desired state (long-poll with `known` and `wait`); `410 host_given_up` to a
/// host the control plane gave up (its agent then stops every instance).
#[utoipa::path(get, path = "/v1/agent/desired", params(LongPoll),
    responses((status = 200, body = DesiredState), (status = 401, body = ErrorBody),
        (status = 410, body = ErrorBody)))]
pub(super) async fn agent_desired(
    State(state): State<Arc<AppState>>,
    host: HostCaller,
    ApiQuery(q): ApiQuery<LongPoll>,
) -> ApiResult<Json<DesiredState>> {
    let doc = long_poll(&state, &q, || async {
        let rows = state
            .store
            .desired_for_host(&host.host_id)
            .await
            .map_err(store_err("desired state"))?;
        let instances = backups::fill_desired(&state, rows).await?;
        let version = content_version(&instances);
        Ok((version.clone(), DesiredState { version, instances }))
    })
    .await?;
    Ok(Json(doc))
}

#[utoipa::path(post, path = "/v1/agent/heartbeat", request_body = Heartbeat,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub(super) async fn agent_heartbeat(
    State(state): State<Arc<AppState>>,
    host: HostCaller,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<StatusCode> {
    let mut changed = state
        .store
        .heartbeat(&host.host_id, now_ms(), &hb.instances)
        .await
        .map_err(store_err("heartbeat"))?;
    let at = now_ms();
    for i in &hb.instances {
        state.metrics.record(at, &host.host_id, i);
    }
    if let Some(disk) = &hb.disk {
        state
            .store
            .record_host_disk(&host.host_id, disk)
            .await
            .map_err(store_err("host disk"))?;
    }
    if let Some(notice) = &hb.notice {
        changed |= crate::spot::record_notice(&state, &host.host_id, notice)
            .await
            .map_err(store_err("spot notice"))?;
    }
    for b in &hb.backups {
        if state
            .store
            .record_backup(&host.host_id, b, now())
            .await
            .map_err(store_err("backup report"))?
        {
            tracing::info!(backup = %b.id, status = %b.status, error = ?b.error, "backup finished");
            changed = true;
        }
    }
    if changed {
        state.notify();
    }
    // Last: a failure here answers with an error, so the agent keeps its closed counters
    // and sends every counter again (a reading taken twice adds nothing).
    let metered = state
        .store
        .record_readings(&host.host_id, &hb.meters)
        .await
        .map_err(store_err("usage readings"))?;
    for (source, last, now) in &metered.regressed {
        tracing::warn!(host = %host.host_id, %source, "usage counter went down from {last} to {now}: taken as the new baseline");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A proxy's traffic counters, taken into hourly usage per endpoint's cluster (see
/// `Store::record_proxy_readings`). A failure answers with an error and the proxy sends
/// its counters again (a reading taken twice adds nothing).
#[utoipa::path(post, path = "/v1/proxy/usage", request_body = ProxyUsage,
    responses((status = 200, body = ProxyUsageTaken), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(super) async fn proxy_usage(
    State(state): State<Arc<AppState>>,
    _proxy: ProxyCaller,
    ApiJson(u): ApiJson<ProxyUsage>,
) -> ApiResult<Json<ProxyUsageTaken>> {
    for (what, v) in [("proxy", &u.proxy), ("cloud", &u.cloud), ("region", &u.region)] {
        validate_name(what, v)?;
    }
    if u.readings.len() > MAX_PROXY_READINGS {
        return Err(ApiError::invalid(format!(
            "{} readings in one report: at most {MAX_PROXY_READINGS}",
            u.readings.len()
        )));
    }
    if let Some(r) = u
        .readings
        .iter()
        .find(|r| !matches!(r.kind, MeterKind::ProxyBytesIn | MeterKind::ProxyBytesOut))
    {
        return Err(ApiError::invalid(format!(
            "a proxy counts traffic only, not {}",
            r.kind.as_str()
        )));
    }
    let o = state
        .store
        .record_proxy_readings(&u.proxy, &u.cloud, &u.region, &u.readings)
        .await
        .map_err(store_err("proxy usage readings"))?;
    for (source, last, now) in &o.regressed {
        tracing::warn!(proxy = %u.proxy, %source, "traffic counter went down from {last} to {now}: taken as the new baseline");
    }
    Ok(Json(ProxyUsageTaken {
        taken: o.taken + o.regressed.len(),
        stale: o.stale,
        unknown: o.unknown,
    }))
}

/// The routing table of the proxies (long-poll with `known` and `wait`): a cell's proxy
/// (its cell's token) gets its cell's routes only; the land's token gets every cell's, or
/// the one named by `cell`.
#[utoipa::path(get, path = "/v1/proxy/routes", params(RoutesQuery),
    responses((status = 200, body = RouteTable), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn proxy_routes(
    State(state): State<Arc<AppState>>,
    proxy: ProxyCaller,
    ApiQuery(mut q): ApiQuery<RoutesQuery>,
) -> ApiResult<Json<RouteTable>> {
    // A cell's proxy gets its cell's routes, whatever it asks for.
    match (&proxy.cell, &q.cell) {
        (Some(mine), Some(asked)) if mine != asked => {
            return Err(ApiError::forbidden(format!(
                "this proxy's token is cell {mine}'s, not {asked}'s"
            )))
        }
        (Some(mine), _) => q.cell = Some(mine.clone()),
        (None, _) => {}
    }
    if let Some(cell) = &q.cell {
        if !state.cfg.cells.contains(cell) {
            return Err(ApiError::invalid(format!(
                "the land has no cell {cell:?} (its cells: {})",
                if state.cfg.cells.is_empty() {
                    "none".to_string()
                } else {
                    state.cfg.cells.join(", ")
                }
            )));
        }
    }
    let poll = LongPoll {
        known: q.known.clone(),
        wait: q.wait,
    };
    let doc = long_poll(&state, &poll, || async {
        let mut routes: Vec<Route> = state
            .store
            .routes_with_cells()
            .await
            .map_err(store_err("routes"))?
            .into_iter()
            .filter(|(org_cell, _)| {
                q.cell
                    .as_deref()
                    .is_none_or(|cell| highrise_planner::cells::proxy_cell(&state.cfg.cells, org_cell) == Some(cell))
            })
            .map(|(_, r)| r)
            .collect();
        // With a CA every member serves TLS with its cluster's certificate: the proxy
        // verifies the cluster's name with the CA, and authenticates clients itself
        // (SCRAM through a proxy that speaks TLS to the server cannot be end to end).
        // Without one the exchange passes through and the proxy holds no verifier.
        let server_ca = state.cfg.ca.as_ref().map(|ca| ca.cert_pem().to_string());
        for r in &mut routes {
            match server_ca {
                Some(_) => r.server_name = Some(crate::member_tls::server_name(&r.cluster_id, &state.cfg.tls_domain)),
                None => r.login = None,
            }
        }
        let version = content_version(&(&routes, &server_ca));
        Ok((
            version.clone(),
            RouteTable {
                version,
                routes,
                server_ca,
            },
        ))
    })
    .await?;
    Ok(Json(doc))
}
