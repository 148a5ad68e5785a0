//! Clusters: create, list, show, update, delete and switch over.

use super::*;
use crate::store::MoveTo;

/// The org's clusters in creation order, every project's unless `project` names one (a
/// project key's own only).
#[utoipa::path(get, path = "/v1/clusters", params(ListClustersQuery),
    responses((status = 200, body = [Cluster], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_clusters(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListClustersQuery>,
) -> ApiResult<Paged<Cluster>> {
    require(&caller, Action::ReadClusters)?;
    let page = Page::new(q.limit, q.cursor.as_deref())?;
    let project = match (q.project.as_deref(), &caller.project_id) {
        (None, None) => None,
        (name, _) => Some(resolve_project(&state, &caller, name).await?),
    };
    let after = page.after_time_and_id()?;
    let mut rows = state
        .store
        .list_clusters(
            &caller.org_id,
            project.as_ref().map(|p| p.id.as_str()),
            after,
            page.limit as i64 + 1,
        )
        .await
        .map_err(store_err("clusters"))?;
    let p = page.paged(&mut rows, |c| time_key(c.created_at, &c.id));
    let mut out = Vec::with_capacity(p.items.len());
    for c in &p.items {
        out.push(cluster_view(&state, c).await?);
    }
    Ok(Paged {
        items: out,
        next: p.next,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListClustersQuery {
    /// Only this project's clusters (every project's when omitted).
    project: Option<String>,
    /// Clusters per page, 1–1000 (100 when omitted).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the previous page ended (its `x-next-cursor` header): `<unix seconds>.<id>`.
    #[param(pattern = "^[0-9]{1,18}\\.[a-z0-9_]{1,64}$")]
    cursor: Option<String>,
}

/// Create a cluster. Answers at once with a running operation; poll it (or the cluster)
/// until it succeeds. The owner's password is in this answer only.
#[utoipa::path(post, path = "/v1/clusters", request_body = CreateCluster,
    responses((status = 202, body = CreatedCluster), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateCluster>,
) -> ApiResult<(StatusCode, Json<CreatedCluster>)> {
    caller.audit_target(format!("clusters/{}", req.name));
    require(&caller, Action::WriteClusters)?;
    validate_name("cluster", &req.name)?;
    let project = resolve_project(&state, &caller, req.project.as_deref()).await?;
    // An org paying through a marketplace gets that cloud unless it names one.
    let default_cloud = match &req.cloud {
        Some(_) => None,
        None => billing::marketplace_cloud(&state, &caller.org_id).await?,
    };
    let (cloud, region) = resolve_location(
        &state.provider.clouds(),
        req.cloud.as_deref().or(default_cloud.as_deref()),
        req.region.as_deref(),
    )?;
    billing::check_marketplace(
        &state,
        &caller.org_id,
        &cloud.name,
        &region.name,
        "creating a cluster in",
    )
    .await?;
    let plan = req.plan.clone().unwrap_or_else(|| "small".into());
    if highrise_planner::plan_slots(&plan).is_none() {
        return Err(ApiError::invalid("unknown plan: use small, medium or large"));
    }
    let pg_version = req.pg_version.unwrap_or(15);
    if pg_version != 15 {
        return Err(ApiError::not_supported(format!(
            "PostgreSQL {pg_version} is not supported yet; use 15"
        )));
    }
    let replicas = req.replicas.unwrap_or(0);
    if replicas > 3 {
        return Err(ApiError::invalid("replicas must be between 0 and 3"));
    }
    let spot = req.spot.unwrap_or(false);
    let durability = req.durability.clone().unwrap_or_else(|| "async".into());
    backups::validate_durability(&durability)?;
    check_spot_safety(spot, replicas, &durability, true)?;
    let policy = req.backup_policy.unwrap_or_default();
    backups::validate_policy(&policy)?;
    let allowed_cidrs = allow_list(req.allowed_cidrs.as_deref().unwrap_or_default())?;
    let connection_limit = connection_limit(req.connection_limit.unwrap_or(0))?;
    billing::check_hard_limit(&state, &caller.org_id).await?;
    let (restore_json, db_name) = match &req.restore {
        Some(r) => {
            let (record, db) = backups::plan_restore(&state, &caller, &project, r).await?;
            let json = serde_json::to_string(&record).map_err(|e| ApiError::internal("restore record", e))?;
            (Some(json), db)
        }
        None => (None, req.name.replace('-', "_")),
    };
    let password = auth::random_name(24);
    let repl_password = auth::random_name(32);
    let (scram, repl_scram) = {
        let (p, r) = (password.clone(), repl_password.clone());
        tokio::task::spawn_blocking(move || {
            (
                highrise_pg::scram_sha256_verifier(&p),
                highrise_pg::scram_sha256_verifier(&r),
            )
        })
        .await
        .map_err(|e| ApiError::internal("compute password verifiers", e))?
    };
    // Its org's cell says which proxies serve it (the URIs answered below).
    let cell = state
        .store
        .get_org(&caller.org_id)
        .await
        .map_err(store_err("org"))?
        .cell;
    let created = now();
    let c = ClusterRow {
        id: auth::new_id("cl"),
        org_id: caller.org_id.clone(),
        project_id: project.id.clone(),
        project_name: project.name.clone(),
        name: req.name.clone(),
        cloud: cloud.name.clone(),
        region: region.name.clone(),
        plan,
        pg_version: i64::from(pg_version),
        replicas: i64::from(replicas),
        spot,
        endpoint: format!("ep-{}", auth::random_name(12)),
        db_name,
        owner_name: "owner".into(),
        owner_scram: scram,
        repl_password,
        repl_scram,
        spread_clouds: req.spread_clouds.unwrap_or(false),
        term: 1,
        created_at: created,
        deleted_at: None,
        durability,
        backup_interval: policy.interval_seconds,
        backup_retain_count: i64::from(policy.retain_count),
        backup_retain_days: i64::from(policy.retain_days),
        restore_json,
        autoscale_max_bytes: autoscale_max(req.storage_autoscale_max_bytes)?,
        disk_bytes: 0,
        backup_copies: match req.backup_copies.unwrap_or(2) {
            n @ 1..=2 => i64::from(n),
            _ => return Err(ApiError::invalid("backup_copies is 1 or 2")),
        },
        copy_lag_bytes: None,
        copied_at: None,
        on_cloud_loss: cloud_loss(req.on_cloud_loss.unwrap_or_default()).into(),
        avoid_cloud: None,
        public_endpoint: req.public.unwrap_or(true),
        allowed_cidrs,
        connection_limit,
        cell,
    };
    let op = OperationRow {
        id: auth::new_id("op"),
        org_id: caller.org_id.clone(),
        cluster_id: Some(c.id.clone()),
        kind: "create_cluster".into(),
        status: "running".into(),
        error: None,
        created_at: created,
        updated_at: created,
        progress_json: None,
        outcome: None,
    };
    state
        .store
        .create_cluster(&c, &op)
        .await
        .map_err(store_err("cluster"))?;
    state.notify();
    tracing::info!(cluster = %c.id, name = %c.name, org = %c.org_id, "cluster requested");
    let view = cluster_view(&state, &c).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CreatedCluster {
            connection_uri: connection_uri(&state, &c, Some(&password)),
            verified_uri: verified_uri(&state, &c, Some(&password)),
            cluster: view,
            operation: operation_view(&op),
            password,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/clusters/{cluster}", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = Cluster), (status = 404, body = ErrorBody)))]
pub(super) async fn get_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<Cluster>> {
    require(&caller, Action::ReadClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    Ok(Json(cluster_view(&state, &c).await?))
}

/// Change a cluster: today its number of standbys (members are added or removed).
#[utoipa::path(patch, path = "/v1/clusters/{cluster}", request_body = UpdateCluster,
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = Cluster), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn update_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
    ApiJson(req): ApiJson<UpdateCluster>,
) -> ApiResult<Json<Cluster>> {
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    // Checked before anything changes.
    let allowed_cidrs = req.allowed_cidrs.as_deref().map(allow_list).transpose()?;
    let limit = req.connection_limit.map(connection_limit).transpose()?;
    if let Some(limit) = limit {
        state
            .store
            .set_connection_limit(&c.id, limit)
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
        tracing::info!(cluster = %c.id, limit, "connection limit changed");
    }
    if req.public.is_some() || allowed_cidrs.is_some() {
        let public = req.public.unwrap_or(c.public_endpoint);
        let allowed = allowed_cidrs.unwrap_or_else(|| c.allowed_cidrs.clone());
        state
            .store
            .set_endpoint_access(&c.id, public, &allowed)
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
        tracing::info!(cluster = %c.id, public, allowed = %allowed.join(","), "endpoint access changed");
    }
    if let Some(replicas) = req.replicas {
        if replicas > 3 {
            return Err(ApiError::invalid("replicas must be between 0 and 3"));
        }
        check_spot_safety(
            c.spot,
            replicas,
            req.durability.as_deref().unwrap_or(&c.durability),
            false,
        )?;
        state
            .store
            .set_replicas(&c, i64::from(replicas))
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
        tracing::info!(cluster = %c.id, replicas, "replica count changed");
    }
    if let Some(d) = &req.durability {
        backups::validate_durability(d)?;
        let replicas = req.replicas.map_or(c.replicas, i64::from);
        check_spot_safety(c.spot, u32::try_from(replicas).unwrap_or(0), d, false)?;
        state
            .store
            .set_durability(&c.id, d)
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
        tracing::info!(cluster = %c.id, durability = %d, "durability changed");
    }
    if let Some(plan) = &req.plan {
        if highrise_planner::plan_slots(plan).is_none() {
            return Err(ApiError::invalid("unknown plan: use small, medium or large"));
        }
        if plan != &c.plan {
            let why = format!(
                "resizing from {} to {}: members of the new size, then a switchover",
                c.plan, plan
            );
            begin_move(
                &state,
                &caller,
                &c,
                &MoveTo {
                    cloud: &c.cloud,
                    region: &c.region,
                    plan,
                    avoid: None,
                },
                &why,
            )
            .await?;
        }
    }
    if req.storage_autoscale_max_bytes.is_some() {
        let max = autoscale_max(req.storage_autoscale_max_bytes)?;
        state
            .store
            .set_storage_autoscale(&c.id, max)
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
    }
    if let Some(policy) = req.on_cloud_loss {
        state
            .store
            .set_on_cloud_loss(&c.id, cloud_loss(policy))
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
    }
    if let Some(p) = &req.backup_policy {
        backups::validate_policy(p)?;
        state
            .store
            .set_backup_policy(
                &c.id,
                p.interval_seconds,
                i64::from(p.retain_count),
                i64::from(p.retain_days),
            )
            .await
            .map_err(store_err("cluster"))?;
    }
    let c = find_cluster(&state, &caller, q.project.as_deref(), &c.id).await?;
    Ok(Json(cluster_view(&state, &c).await?))
}

/// The most sessions a tenant's role may be limited to: what the biggest plan's server
/// allows.
const MAX_CONNECTION_LIMIT: u32 = 1000;

/// A connection limit as stored (`0`: none), checked.
fn connection_limit(limit: u32) -> ApiResult<i64> {
    if limit > MAX_CONNECTION_LIMIT {
        return Err(ApiError::invalid(format!(
            "connection_limit is between 1 and {MAX_CONNECTION_LIMIT} (0: no limit), not {limit}"
        )));
    }
    Ok(i64::from(limit))
}

/// An allow-list entry as the OpenAPI document states it (unanchored): an IPv4 address,
/// or an IPv6 one written in full or ending in `::`, each with an optional prefix length.
pub(super) const CIDR_PATTERN: &str = concat!(
    r"(((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?)",
    r"|((([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,6}:|::)(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)",
);

/// The most entries an endpoint's allow-list holds.
const MAX_ALLOWED_CIDRS: usize = 64;

/// An endpoint's allow-list as given, each entry checked and written canonically: a
/// network in CIDR notation without host bits (`10.1.2.3/8` is `10.0.0.0/8`), a bare
/// address as its own network; duplicates dropped.
pub(super) fn allow_list(given: &[String]) -> ApiResult<Vec<String>> {
    if given.len() > MAX_ALLOWED_CIDRS {
        return Err(ApiError::invalid(format!(
            "allowed_cidrs holds at most {MAX_ALLOWED_CIDRS} networks, not {}",
            given.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(given.len());
    for entry in given {
        let e = entry.trim();
        let net = e
            .parse::<ipnet::IpNet>()
            .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                let shown: String = entry.chars().take(60).collect();
                ApiError::invalid(format!(
                    "allowed_cidrs: {shown:?} is not a network (10.0.0.0/8, 2001:db8::/32) or an address"
                ))
            })?;
        let canonical = net.trunc().to_string();
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

/// The stored name of a cloud-loss policy.
fn cloud_loss(p: highrise_api::OnCloudLoss) -> &'static str {
    match p {
        highrise_api::OnCloudLoss::Restore => "restore",
        highrise_api::OnCloudLoss::Wait => "wait",
    }
}

/// The cloud and region a cluster goes to: the named ones (404 naming what the land has),
/// else the land's first cloud and that cloud's first region.
fn resolve_location(
    clouds: &[highrise_provider::Cloud],
    cloud: Option<&str>,
    region: Option<&str>,
) -> ApiResult<(highrise_provider::Cloud, highrise_provider::Region)> {
    let cloud = match cloud {
        Some(name) => clouds.iter().find(|c| c.name == name).ok_or_else(|| {
            let known: Vec<&str> = clouds.iter().map(|c| c.name.as_str()).collect();
            let shown: String = name.chars().take(70).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown cloud {shown:?}; this land has: {}", known.join(", ")),
            )
        })?,
        None => clouds
            .first()
            .ok_or_else(|| ApiError::internal("choose cloud", "the land has no clouds"))?,
    };
    let region = match region {
        Some(name) => cloud.regions.iter().find(|r| r.name == name).ok_or_else(|| {
            let known: Vec<&str> = cloud.regions.iter().map(|r| r.name.as_str()).collect();
            let shown: String = name.chars().take(70).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "unknown region {shown:?} of cloud {}; it has: {}",
                    cloud.name,
                    known.join(", ")
                ),
            )
        })?,
        None => cloud
            .regions
            .first()
            .ok_or_else(|| ApiError::internal("choose region", "the cloud has no regions"))?,
    };
    Ok((cloud.clone(), region.clone()))
}

/// Storage autoscaling's maximum as stored (`0`: off); at most 1 PiB.
fn autoscale_max(bytes: Option<u64>) -> ApiResult<i64> {
    const MAX: u64 = 1 << 50;
    match bytes.unwrap_or(0) {
        b if b > MAX => Err(ApiError::invalid("storage_autoscale_max_bytes is at most 1 PiB")),
        b => Ok(b as i64),
    }
}

/// A spot host can be taken at any moment, its disk with it: a single-node spot cluster
/// keeps every acknowledged commit only if each is in object storage before it is
/// acknowledged. A create that asks for one is invalid (its schema says so); a change
/// that would make one conflicts with the cluster being on spot.
pub(super) fn check_spot_safety(spot: bool, replicas: u32, durability: &str, creating: bool) -> ApiResult<()> {
    if spot && replicas == 0 && durability != "sync" {
        let why = "a single-node spot cluster would lose acknowledged commits with its host: \
                   use durability=sync (every commit in object storage first) or at least 1 replica";
        return Err(if creating {
            ApiError::invalid(why)
        } else {
            ApiError::conflict(why)
        });
    }
    Ok(())
}

/// Delete a cluster: its PostgreSQL instance is stopped and its data removed.
#[utoipa::path(delete, path = "/v1/clusters/{cluster}", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 202, body = Operation), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let at = now();
    let op = OperationRow {
        id: auth::new_id("op"),
        org_id: caller.org_id.clone(),
        cluster_id: Some(c.id.clone()),
        kind: "delete_cluster".into(),
        status: "running".into(),
        error: None,
        created_at: at,
        updated_at: at,
        progress_json: None,
        outcome: None,
    };
    let op = state
        .store
        .delete_cluster(&c, &op)
        .await
        .map_err(store_err("cluster"))?;
    state.notify();
    tracing::info!(cluster = %c.id, "cluster deletion requested");
    Ok((StatusCode::ACCEPTED, Json(operation_view(&op))))
}

/// Move a cluster to another cloud and region: new members are built there (from the
/// cluster's latest backup in object storage where one serves, else a copy of the primary;
/// then streaming), the primary is switched over to one of them once the set has settled
/// (a write pause well under a second), and the old members are retired. The operation
/// reports its step; it can be cancelled until the switchover (`DELETE`). The connection
/// string stays the same. The cluster then keeps out of the cloud it left: a spread
/// cluster's standbys there are replaced in its other clouds (or, with no other, in the
/// new one).
#[utoipa::path(post, path = "/v1/clusters/{cluster}/move", request_body = MoveCluster,
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn move_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
    ApiJson(req): ApiJson<MoveCluster>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let clouds = state.provider.clouds();
    // By default the region named like the present one, where the target cloud has it.
    let region = req.region.clone().or_else(|| {
        clouds
            .iter()
            .find(|cl| cl.name == req.cloud)
            .filter(|cl| cl.regions.iter().any(|r| r.name == c.region))
            .map(|_| c.region.clone())
    });
    let (cloud, region) = resolve_location(&clouds, Some(&req.cloud), region.as_deref())?;
    billing::check_marketplace(&state, &caller.org_id, &cloud.name, &region.name, "moving it to").await?;
    if cloud.name == c.cloud && region.name == c.region {
        return Err(ApiError::conflict(format!(
            "the cluster is in {}/{} already",
            c.cloud, c.region
        )));
    }
    let why = format!(
        "moving from {}/{} to {}/{}: new members there, then a switchover",
        c.cloud, c.region, cloud.name, region.name
    );
    // The cloud it leaves, it keeps out of: a spread cluster's standbys too.
    let to = MoveTo {
        cloud: &cloud.name,
        region: &region.name,
        plan: &c.plan,
        avoid: (cloud.name != c.cloud).then_some(c.cloud.as_str()),
    };
    let op = begin_move(&state, &caller, &c, &to, &why).await?;
    Ok((StatusCode::ACCEPTED, Json(operation_view(&op))))
}

/// Cancel the cluster's running move or resize, before its primary switches over: the
/// cluster goes back to its place and plan, the members built for the move are retired,
/// and the operation ends `cancelled`. Refused (409) once the switchover has begun.
#[utoipa::path(delete, path = "/v1/clusters/{cluster}/move",
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = Operation), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn cancel_move(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<Operation>> {
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let op_id = state
        .store
        .cancel_move(&c.id, now(), &caller.actor)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("move in progress"),
            e => store_err("move")(e),
        })?;
    state.notify();
    tracing::info!(cluster = %c.id, operation = %op_id, "move cancelled");
    let op = state
        .store
        .get_operation(&caller.org_id, &op_id)
        .await
        .map_err(store_err("operation"))?;
    Ok(Json(operation_view(&op)))
}

/// A running operation of the caller's org on a cluster, starting now.
fn cluster_operation(caller: &Caller, cluster_id: &str, kind: &str) -> OperationRow {
    let at = now();
    OperationRow {
        id: auth::new_id("op"),
        org_id: caller.org_id.clone(),
        cluster_id: Some(cluster_id.to_string()),
        kind: kind.into(),
        status: "running".into(),
        error: None,
        created_at: at,
        updated_at: at,
        progress_json: None,
        outcome: None,
    }
}

/// Records a move (location and/or plan) and its operation; refuses a second one while
/// one runs.
async fn begin_move(
    state: &AppState,
    caller: &Caller,
    c: &ClusterRow,
    to: &MoveTo<'_>,
    why: &str,
) -> ApiResult<OperationRow> {
    if !state
        .store
        .open_operations_of(&c.id, "move_cluster")
        .await
        .map_err(store_err("operations"))?
        .is_empty()
    {
        return Err(ApiError::conflict(
            "a move or resize of this cluster is already in progress",
        ));
    }
    let op = cluster_operation(caller, &c.id, "move_cluster");
    state
        .store
        .move_cluster(c, to, &op, why)
        .await
        .map_err(store_err("move"))?;
    state.notify();
    tracing::info!(cluster = %c.id, "{why}");
    Ok(op)
}

/// Planned switchover: hold new connections, stop the primary once the target streams
/// (its WAL reaches every connected standby on the way out), promote the target in a new
/// term, release the held connections to it. Zero lost commits.
#[utoipa::path(post, path = "/v1/clusters/{cluster}/switchover", request_body = Switchover,
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn switchover(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
    ApiJson(req): ApiJson<Switchover>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let members = state
        .store
        .instances_of_cluster(&c.id)
        .await
        .map_err(store_err("cluster members"))?;
    let standbys: Vec<&store::InstanceRow> = members.iter().filter(|m| !m.deleting && m.role == "standby").collect();
    if standbys.is_empty() {
        return Err(ApiError::conflict("the cluster has no standby to switch over to"));
    }
    if let Some(to) = &req.to {
        if !standbys.iter().any(|m| &m.id == to) {
            let shown: String = to.chars().take(70).collect();
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{shown:?} is not a standby of this cluster"),
            ));
        }
    }
    if !state
        .store
        .open_operations_of(&c.id, "switchover")
        .await
        .map_err(store_err("operations"))?
        .is_empty()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "a switchover is already in progress",
        ));
    }
    let op = cluster_operation(&caller, &c.id, "switchover");
    state
        .store
        .request_switchover(&c.id, req.to.as_deref().unwrap_or(""), &op)
        .await
        .map_err(store_err("switchover"))?;
    state.notify();
    tracing::info!(cluster = %c.id, to = ?req.to, "switchover requested");
    Ok((StatusCode::ACCEPTED, Json(operation_view(&op))))
}

#[cfg(test)]
mod tests {
    use super::{allow_list, CIDR_PATTERN};
    use proptest::prelude::*;

    proptest! {
        // What the OpenAPI document calls a valid entry is one the API takes.
        #[test]
        fn every_entry_the_document_allows_is_taken(entry in proptest::string::string_regex(CIDR_PATTERN).unwrap()) {
            prop_assert!(allow_list(std::slice::from_ref(&entry)).is_ok(), "{entry:?}");
        }
    }

    #[test]
    fn allow_lists_are_checked_and_written_canonically() {
        let given = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            allow_list(&given(&["10.1.2.3/8", " 192.0.2.7 ", "2001:db8::1/32", "10.0.0.0/8"])).unwrap(),
            given(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"])
        );
        assert!(allow_list(&[]).unwrap().is_empty());
        for bad in ["10.0.0.0/33", "example.com", "", "10.0.0/8", "::/129"] {
            let e = allow_list(&given(&[bad])).unwrap_err();
            assert!(format!("{e:?}").contains("is not a network"), "{bad}: {e:?}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("10.0.{i}.0/24")).collect();
        assert!(format!("{:?}", allow_list(&many).unwrap_err()).contains("at most 64"));
    }
}
