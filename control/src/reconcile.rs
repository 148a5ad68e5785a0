//! The reconciler's executor: loads a snapshot, asks the planner, performs each action.
//!
//! Every action is recorded in the store before (launch: the host row comes first, so a
//! crash leaves a `launching` row that is re-driven with the same idempotency key) or as
//! (everything else: one statement) it takes effect, so a control plane that restarts
//! mid-action picks up where it left off. Deciding lives in `highrise-planner`.

use crate::auth;
use crate::store::{now, now_ms, HostRow, InstanceRow};
use crate::AppState;
use anyhow::{Context, Result};
use highrise_planner::{next_silence_deadline_ms, plan, Action, Market, Outcome, Role};
use highrise_provider::{LaunchRequest, ProviderError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Makes sure the land has every tenant network the store knows (a machine of the local
/// land loses its namespaces when it restarts; making one is idempotent).
async fn restore_networks(state: &AppState) {
    let networks = match state.store.all_networks().await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("list tenant networks: {e:#}");
            return;
        }
    };
    for n in networks {
        if let Err(e) = state.provider.create_network(&n.namespace, &n.cidr).await {
            tracing::error!(network = %n.id, namespace = %n.namespace, "restore tenant network: {e:#}");
        }
    }
}

pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    // Host silence is judged only from now on: while this process was down, nobody
    // could hear the agents.
    let started = now();
    if let Err(e) = resume_launches(&state).await {
        tracing::error!("resume host launches: {e:#}");
    }
    restore_networks(&state).await;
    // Copies between clouds' stores take their own time: beside the planner, not in it.
    let copier = tokio::spawn(crate::copies::run(Arc::clone(&state), shutdown.clone()));
    // Spend alerts, likewise.
    let alerts = tokio::spawn(crate::billing::run(Arc::clone(&state), shutdown.clone()));
    // What clusters keep in object storage, for their bills.
    let measurer = tokio::spawn(crate::stored::run(Arc::clone(&state), shutdown.clone()));
    // Orgs' older data keys retired, in the background (and again after a restart).
    let retirer = tokio::spawn(crate::reseal::run(Arc::clone(&state), shutdown.clone()));
    // Usage to the marketplaces orgs pay through.
    let exports = crate::marketplace::Exports::new(state.store.clone(), state.cfg.exporters.clone());
    let exporter = tokio::spawn(crate::marketplace::run(exports, shutdown.clone()));
    let mut changes = state.changes.subscribe();
    let mut lagging = std::collections::HashSet::new();
    let mut last_backup_round = tokio::time::Instant::now() - Duration::from_secs(60);
    let mut last_land_look = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        if *shutdown.borrow() {
            let _ = copier.await;
            let _ = alerts.await;
            let _ = measurer.await;
            let _ = retirer.await;
            let _ = exporter.await;
            return;
        }
        if last_land_look.elapsed() >= LAND_LOOK {
            last_land_look = tokio::time::Instant::now();
            match give_up_terminated(&state).await {
                Ok(true) => state.notify(),
                Ok(false) => {}
                Err(e) => tracing::error!("compare hosts with the land: {e:#}"),
            }
            if probe_clouds(&state).await {
                state.notify();
            }
        }
        if last_backup_round.elapsed() >= Duration::from_secs(1) {
            last_backup_round = tokio::time::Instant::now();
            match crate::durability::tick(&state, &mut lagging).await {
                Ok(true) => state.notify(),
                Ok(false) => {}
                Err(e) => tracing::error!("backup scheduler: {e:#}"),
            }
        }
        changes.mark_unchanged();
        let (acted, next) = match step(&state, started).await {
            Ok((n, next)) => (n > 0, next),
            Err(e) => {
                tracing::error!("reconcile: {e:#}");
                (false, None)
            }
        };
        if acted {
            continue;
        }
        // Plan again on news, at the latest after a round's pause — or sooner, when a host
        // that stops beating would be taken for dead.
        let pause = next
            .map(|t| Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0)))
            .map_or(ROUND, |d| d.clamp(Duration::from_millis(10), ROUND));
        tokio::select! {
            _ = changes.changed() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// The longest pause between two planning rounds (time-driven rules: silence, retries,
/// notices).
const ROUND: Duration = Duration::from_millis(500);

/// How often the land's own view of the hosts is read (a cloud's list call is rate
/// limited; silence is the fast signal, this is the sure one).
const LAND_LOOK: Duration = Duration::from_secs(2);

/// A host the land says is terminated (preempted, killed, its zone gone) is given up at
/// once instead of after `HOST_LOST_SECS` of silence: its standbys are replaced and a lost
/// single `sync` primary is restored right away. Returns whether any was.
///
/// The other way round, a host given up or released that the land still runs — its
/// termination failed, say because its cloud's API did not answer, and the host came back
/// with the cloud — is terminated again once its cloud answers.
async fn give_up_terminated(state: &AppState) -> Result<bool> {
    let land = state.provider.list_hosts().await.context("list the land's hosts")?;
    let unreachable = state.unreachable_clouds();
    let mut changed = false;
    for h in state.store.list_hosts().await.context("list hosts")? {
        let still_runs = || {
            land.iter()
                .any(|l| l.host_id == h.id && l.state != highrise_provider::HostState::Terminated)
        };
        if (h.status == "failed" || h.status == "released") && !unreachable.contains(&h.cloud) && still_runs() {
            tracing::warn!(host = %h.id, status = %h.status, "the land still runs a host that was given up: terminating it");
            if let Err(e) = state.provider.terminate_host(&h.id).await {
                tracing::error!(host = %h.id, "terminate a host that was given up: {e:#}");
            }
            continue;
        }
        if h.status != "running" {
            continue;
        }
        let gone = land
            .iter()
            .any(|l| l.host_id == h.id && l.state == highrise_provider::HostState::Terminated);
        if gone {
            tracing::warn!(host = %h.id, "the land reports the host terminated: giving it up");
            state.store.set_host_status(&h.id, "failed").await?;
            changed = true;
        }
    }
    Ok(changed)
}

/// How long a cloud's API may take to answer a probe: an outage often shows as a hang,
/// and the planner must not wait on it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks every cloud's API whether it answers (in parallel, within [`PROBE_TIMEOUT`]);
/// records since when each failing one has failed. Returns whether any cloud changed
/// between answering and not.
async fn probe_clouds(state: &AppState) -> bool {
    let clouds = state.provider.clouds();
    let answers = futures::future::join_all(clouds.iter().map(|c| async {
        match tokio::time::timeout(PROBE_TIMEOUT, state.provider.probe(&c.name)).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        }
    }))
    .await;
    let mut changed = false;
    for (cloud, answer) in clouds.iter().zip(answers) {
        let mut unreachable = state.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(()) => {
                if unreachable.remove(&cloud.name).is_some() {
                    tracing::warn!(cloud = %cloud.name, "the cloud's API answers again");
                    changed = true;
                }
            }
            Err(error) => match unreachable.get_mut(&cloud.name) {
                Some(u) => u.error = error,
                None => {
                    tracing::warn!(cloud = %cloud.name, "the cloud's API does not answer: {error}");
                    unreachable.insert(
                        cloud.name.clone(),
                        highrise_planner::clouds::Unreachable {
                            since_ms: now_ms(),
                            error,
                        },
                    );
                    changed = true;
                }
            },
        }
    }
    changed
}

/// Hosts recorded as launching may never have reached the provider (a crash between the
/// two steps): ask again, with the same id, which the provider treats as idempotent.
async fn resume_launches(state: &AppState) -> Result<()> {
    for h in state.store.list_hosts().await.context("list hosts")? {
        if h.status == "launching" {
            launch(state, &h).await;
        }
    }
    Ok(())
}

/// One planning round; returns how many actions changed the world, and when a silent
/// host would next be taken for dead (unix ms).
async fn step(state: &AppState, started: i64) -> Result<(usize, Option<i64>)> {
    let mut world = state.store.world(now_ms(), started).await.context("load world")?;
    world.locations = state
        .provider
        .clouds()
        .into_iter()
        .flat_map(|c| c.regions.into_iter().map(move |r| (c.name.clone(), r.name)))
        .collect();
    world.spot = state.cfg.spot.clone();
    world.unreachable = state.unreachable.lock().unwrap_or_else(|e| e.into_inner()).clone();
    crate::billing::hold_evacuated(state, &mut world)
        .await
        .context("hold marketplace clusters to their cloud")?;
    world.pools = crate::spot::pools_view(state.provider.pools(), &state.store, world.now(), &world.spot)
        .await
        .context("load the pools' record")?;
    let next = next_silence_deadline_ms(&world);
    let mut changed = 0;
    for action in &plan(&world) {
        tracing::debug!(?action, "perform");
        if perform(state, action)
            .await
            .with_context(|| format!("perform {action:?}"))?
        {
            changed += 1;
        }
    }
    // Only a change of the world calls for another round at once: a plan that merely
    // repeats an event (a failover that waits, a lost primary) waits for news.
    if changed > 0 {
        state.notify();
    }
    Ok((changed, next))
}

async fn launch(state: &AppState, h: &HostRow) {
    let spot = h.market == "spot";
    let req = LaunchRequest {
        host_id: h.id.clone(),
        cloud: h.cloud.clone(),
        region: h.region.clone(),
        market: if spot {
            highrise_provider::Market::Spot
        } else {
            highrise_provider::Market::OnDemand
        },
        zone: (!h.zone.is_empty()).then(|| h.zone.clone()),
        bootstrap_token: auth::bootstrap_token(state, &h.id),
        control_url: state.cfg.agent_url.clone(),
        control_ca: state.cfg.ca.as_ref().map(|ca| ca.cert_pem().to_string()),
        disk_bytes: h.disk_bytes.and_then(|b| u64::try_from(b).ok()),
    };
    match state.provider.launch_host(req).await {
        Ok(info) => {
            let recorded = state
                .store
                .host_launched(&h.id, &info.zone, &info.address, &info.instance_type, info.disk_bytes)
                .await;
            if let Err(e) = recorded {
                tracing::error!(host = %h.id, "record launched host: {e:#}");
            }
            tracing::info!(host = %h.id, cloud = %info.cloud, zone = %info.zone, market = %h.market, address = %info.address, "host launched");
        }
        Err(e) => {
            if spot && matches!(e, ProviderError::NoCapacity(_)) {
                // The pool's record: the planner leaves it alone for a while.
                if let Err(e) = state
                    .store
                    .add_pool_event(&h.pool(), crate::store::pools::NO_CAPACITY, now())
                    .await
                {
                    tracing::error!(host = %h.id, "record refused spot launch: {e:#}");
                }
                tracing::warn!(host = %h.id, pool = %h.pool(), "spot launch refused: {e}");
            } else {
                tracing::error!(host = %h.id, "launch host: {e:#}");
            }
            if let Err(e) = state.store.set_host_status(&h.id, "failed").await {
                tracing::error!(host = %h.id, "record failed launch: {e:#}");
            }
        }
    }
}

/// Performs one action; returns whether it changed anything.
async fn perform(state: &AppState, action: &Action) -> Result<bool> {
    match action {
        Action::LaunchHost {
            cloud,
            region,
            cell,
            market,
            pool,
            disk_bytes,
        } => {
            // A spot launch goes into its pool: the pool names zone and instance type.
            let pool: Option<highrise_provider::market::PoolId> = pool.as_deref().and_then(|p| p.parse().ok());
            let h = HostRow {
                id: auth::new_id("host"),
                cloud: cloud.clone(),
                region: region.clone(),
                zone: pool.as_ref().map(|p| p.zone.clone()).unwrap_or_default(),
                market: match market {
                    Market::Spot => "spot".into(),
                    Market::OnDemand => "on_demand".into(),
                },
                address: None,
                status: "launching".into(),
                token_hash: None,
                last_beat_ms: None,
                launched_at: now(),
                instance_type: pool.map(|p| p.instance_type).unwrap_or_default(),
                notice_deadline: None,
                disk_bytes: disk_bytes.and_then(|b| i64::try_from(b).ok()),
                cell: cell.clone(),
            };
            state.store.insert_host(&h).await.context("record host launch")?;
            launch(state, &h).await;
        }
        Action::ReleaseHost { host_id } => {
            state.store.set_host_status(host_id, "released").await?;
            tracing::info!(host = %host_id, "releasing an idle host");
            if let Err(e) = state.provider.terminate_host(host_id).await {
                tracing::error!(host = %host_id, "terminate idle host: {e:#}");
            }
        }
        Action::AbandonHost { host_id } => {
            state.store.set_host_status(host_id, "failed").await?;
            if let Err(e) = state.provider.terminate_host(host_id).await {
                tracing::error!(host = %host_id, "terminate abandoned host: {e:#}");
            }
        }
        Action::CreateInstance {
            cluster_id,
            host_id,
            slots,
            role,
        } => {
            state
                .store
                .insert_instance(&InstanceRow {
                    id: auth::new_id("inst"),
                    cluster_id: cluster_id.clone(),
                    host_id: host_id.clone(),
                    slots: i64::from(*slots),
                    role: match role {
                        Role::Primary => "primary".into(),
                        Role::Standby => "standby".into(),
                    },
                    deleting: false,
                    observed: "unknown".into(),
                    addr: None,
                    error: None,
                    created_at: now(),
                    in_recovery: None,
                    lsn: None,
                    streaming: None,
                    sync_standbys: vec![],
                    sync_streaming: vec![],
                    observed_term: 0,
                    draining: false,
                    archived_lsn: None,
                    archive_error: None,
                    storage: None,
                    seed: None,
                    max_connections: None,
                })
                .await?;
            if *role == Role::Standby {
                state
                    .store
                    .add_event(
                        cluster_id,
                        now(),
                        "member_added",
                        &format!("new standby placed on host {host_id}"),
                    )
                    .await?;
            }
            tracing::info!(cluster = %cluster_id, host = %host_id, ?role, "instance placed");
        }
        Action::DeleteInstance { instance_id } => state.store.mark_instance_deleting(instance_id).await?,
        Action::ForgetInstance { instance_id } => state.store.forget_instance(instance_id).await?,
        Action::RemoveCluster { cluster_id } => {
            state.store.remove_cluster(cluster_id).await?;
            tracing::info!(cluster = %cluster_id, "cluster removed");
        }
        Action::EvacuationMove {
            evacuation_id,
            cluster_id,
            cloud,
            region,
            from,
        } => {
            let c = state.store.cluster_by_id(cluster_id).await?;
            let at = now();
            let op = crate::store::OperationRow {
                id: auth::new_id("op"),
                org_id: c.org_id.clone(),
                cluster_id: Some(c.id.clone()),
                kind: "move_cluster".into(),
                status: "running".into(),
                error: None,
                created_at: at,
                updated_at: at,
                progress_json: None,
                outcome: None,
            };
            let why = if c.cloud == *cloud {
                format!(
                    "evacuating {from}: its members there are replaced in other clouds (evacuation {evacuation_id})"
                )
            } else {
                format!(
                    "evacuating {from}: moving to {cloud}/{region}, new members there, then a switchover (evacuation {evacuation_id})"
                )
            };
            let to = crate::store::MoveTo {
                cloud,
                region,
                plan: &c.plan,
                avoid: Some(from),
            };
            match state
                .store
                .start_evacuation_move(evacuation_id, &c, &to, &op, &why)
                .await
            {
                Ok(started) => {
                    if started {
                        tracing::info!(cluster = %c.id, evacuation = %evacuation_id, "{why}");
                    }
                    return Ok(started);
                }
                // The tenant's quota of running operations is full: the next round tries again.
                Err(crate::store::StoreError::Quota(why)) => {
                    tracing::warn!(cluster = %c.id, evacuation = %evacuation_id, "the move waits: {why}");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Action::EvacuationMember {
            evacuation_id,
            cluster_id,
            state: s,
            why,
        } => {
            state
                .store
                .set_evacuation_cluster(evacuation_id, cluster_id, s.as_str(), why.as_deref(), now())
                .await?;
            tracing::info!(cluster = %cluster_id, evacuation = %evacuation_id, state = s.as_str(), why = ?why, "evacuation");
        }
        Action::EvacuationDone { evacuation_id } => {
            state.store.finish_evacuation(evacuation_id, now()).await?;
            tracing::info!(evacuation = %evacuation_id, "evacuation finished");
        }
        Action::ReportProgress { operation_id, progress } => {
            let json = serde_json::to_string(progress).context("encode the progress")?;
            state.store.set_operation_progress(operation_id, &json, now()).await?;
            tracing::info!(operation = %operation_id, step = progress.step, "{}", progress.doing);
        }
        Action::CompleteOperation { operation_id, outcome } => {
            let error = match outcome {
                Outcome::Succeeded => None,
                Outcome::Failed(e) => Some(e.as_str()),
            };
            state.store.complete_operation(operation_id, error, now()).await?;
            tracing::info!(operation = %operation_id, ?outcome, "operation completed");
        }
        Action::Failover {
            cluster_id,
            term,
            from,
            to,
            reason,
        } => {
            let done = state
                .store
                .failover(cluster_id, *term, from.as_deref(), to, now(), reason)
                .await?;
            if done {
                tracing::warn!(cluster = %cluster_id, from = ?from, to = %to, term = term + 1, "failover: {reason}");
            }
            return Ok(done);
        }
        Action::RestorePrimary {
            cluster_id,
            term,
            from,
            cloud_lost,
        } => {
            return crate::durability::restore_primary(state, cluster_id, *term, from, cloud_lost.as_deref()).await;
        }
        Action::Relocate {
            cluster_id,
            cloud,
            region,
            message,
        } => {
            let moved = state.store.relocate(cluster_id, cloud, region, now(), message).await?;
            if moved {
                tracing::warn!(cluster = %cluster_id, to = %cloud, "{message}");
            }
            return Ok(moved);
        }
        Action::Drain { instance_id } => {
            state.store.drain(instance_id).await?;
            tracing::info!(instance = %instance_id, "switchover: draining the primary");
        }
        Action::CancelSwitchover { cluster_id, reason } => {
            state.store.cancel_switchover(cluster_id).await?;
            state
                .store
                .add_event(cluster_id, now(), "switchover_cancelled", reason)
                .await?;
            for op in state.store.open_operations_of(cluster_id, "switchover").await? {
                state.store.complete_operation(&op, Some(reason), now()).await?;
            }
        }
        Action::GrowDisk {
            cluster_id,
            disk_bytes,
            message,
        } => {
            tracing::warn!(cluster = %cluster_id, "{message}");
            state.store.grow_disk(cluster_id, *disk_bytes, now(), message).await?;
        }
        Action::StorageLevel {
            cluster_id,
            level,
            kind,
            message,
        } => {
            tracing::warn!(cluster = %cluster_id, "{message}");
            state
                .store
                .announce_storage_level(cluster_id, level.as_str(), now(), kind, message)
                .await?;
        }
        Action::Event {
            cluster_id,
            kind,
            message,
        } => {
            let last = state.store.last_event(cluster_id).await?;
            if last.is_some_and(|e| &e.kind == kind && &e.message == message) {
                return Ok(false);
            }
            tracing::warn!(cluster = %cluster_id, "{message}");
            state.store.add_event(cluster_id, now(), kind, message).await?;
            return Ok(false);
        }
    }
    Ok(true)
}
