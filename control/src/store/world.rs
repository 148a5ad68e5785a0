//! The planner's snapshot: one consistent read of everything `plan()` decides from.

use super::*;

impl Store {
    /// The planner's snapshot at `now_ms` (unix milliseconds); silence counts from no
    /// earlier than `observing_since` (unix seconds).
    pub async fn world(&self, now_ms: i64, observing_since: i64) -> Result<planner::World> {
        // Operations first: the rows an operation refers to were written with it (one
        // transaction), so they are in the reads that follow. Read the other way round, a
        // create arriving in between would show its operation without its cluster.
        let operations = sqlx::query(
            "SELECT id, cluster_id, kind, progress_json FROM operations WHERE status = 'running' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .filter_map(|r| {
            let kind = match r.try_get::<String, _>("kind").ok()?.as_str() {
                "create_cluster" => planner::OperationKind::CreateCluster,
                "delete_cluster" => planner::OperationKind::DeleteCluster,
                "switchover" => planner::OperationKind::Switchover,
                "restore_primary" => planner::OperationKind::RestorePrimary,
                "move_cluster" => planner::OperationKind::MoveCluster,
                _ => return None,
            };
            Some(planner::OperationView {
                id: r.try_get("id").ok()?,
                cluster_id: r.try_get::<Option<String>, _>("cluster_id").ok()??,
                kind,
                // Unreadable: reported again.
                progress: r
                    .try_get::<Option<String>, _>("progress_json")
                    .ok()?
                    .and_then(|j| serde_json::from_str(&j).ok()),
            })
        })
        .collect();
        let cluster_rows = sqlx::query(
            "SELECT id, cloud, region, plan, replicas, term, switchover_to, spread_clouds, spot, deleted_at, storage_level, \
             disk_bytes, autoscale_max_bytes, on_cloud_loss, avoid_cloud, \
             CASE WHEN EXISTS (SELECT 1 FROM backups b WHERE b.cluster_id = clusters.id AND b.status = 'complete') \
             THEN 1 ELSE 0 END AS has_backup, \
             CASE WHEN durability = 'sync' AND EXISTS (SELECT 1 FROM backups b WHERE b.cluster_id = clusters.id \
             AND b.status = 'complete') THEN 1 ELSE 0 END AS restorable, \
             (SELECT o.cell FROM orgs o WHERE o.id = clusters.org_id) AS cell FROM clusters ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        // The storage each cluster's plan includes: the guard's limit besides the disk.
        let mut plans = std::collections::BTreeMap::new();
        for r in &cluster_rows {
            let plan: String = r.try_get("plan")?;
            plans.insert(
                r.try_get::<String, _>("id")?,
                planner::plan_storage_bytes(&plan).unwrap_or(0),
            );
        }
        let clusters = cluster_rows
            .iter()
            .map(|r| {
                let plan: String = r.try_get("plan")?;
                Ok(planner::ClusterIntent {
                    id: r.try_get("id")?,
                    cloud: r.try_get("cloud")?,
                    region: r.try_get("region")?,
                    cell: r.try_get::<Option<String>, _>("cell")?.unwrap_or_default(),
                    slots: planner::plan_slots(&plan).unwrap_or(1),
                    members: 1 + u32::try_from(r.try_get::<i64, _>("replicas")?).unwrap_or(0),
                    term: r.try_get("term")?,
                    switchover_to: r.try_get("switchover_to")?,
                    spread_clouds: r.try_get::<i64, _>("spread_clouds")? != 0,
                    spot: r.try_get::<i64, _>("spot")? != 0,
                    restorable: r.try_get::<i64, _>("restorable")? != 0,
                    deleted: r.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
                    storage_level: planner_level(super::storage_level(r.try_get("storage_level")?)),
                    disk_bytes: r.try_get::<i64, _>("disk_bytes")?.max(0) as u64,
                    autoscale_max_bytes: r.try_get::<i64, _>("autoscale_max_bytes")?.max(0) as u64,
                    // An unknown policy (a newer writer's) is the default.
                    on_cloud_loss: planner::clouds::CloudLoss::parse(&r.try_get::<String, _>("on_cloud_loss")?)
                        .unwrap_or_default(),
                    has_backup: r.try_get::<i64, _>("has_backup")? != 0,
                    avoid_cloud: r.try_get("avoid_cloud")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let hosts = self
            .list_hosts()
            .await?
            .into_iter()
            .map(|h| planner::HostView {
                market: if h.market == "spot" {
                    planner::Market::Spot
                } else {
                    planner::Market::OnDemand
                },
                pool: h.pool(),
                notice: h.notice_deadline,
                status: match h.status.as_str() {
                    "launching" => planner::HostStatus::Launching,
                    "running" => planner::HostStatus::Running,
                    _ => planner::HostStatus::Failed,
                },
                id: h.id,
                cloud: h.cloud,
                region: h.region,
                zone: h.zone,
                cell: h.cell,
                launched_at: h.launched_at,
                last_beat_ms: h.last_beat_ms,
                disk_bytes: h.disk_bytes.map(|b| b.max(0) as u64),
            })
            .collect::<Vec<planner::HostView>>();
        // Hosts with a disk of their own (of a known size): on a shared file system the
        // disk's numbers are the machine's, not the host's, and the guard ignores them.
        let own_disk: std::collections::BTreeSet<String> = hosts
            .iter()
            .filter(|h| h.disk_bytes.is_some())
            .map(|h| h.id.clone())
            .collect();
        let instances = self
            .list_instances()
            .await?
            .into_iter()
            .map(|i| planner::InstanceView {
                storage: i.storage.map(|s| {
                    let own = own_disk.contains(&i.host_id);
                    planner::storage::Report {
                        reading: planner::storage::Reading {
                            used_bytes: s.data_bytes + s.wal_bytes,
                            plan_bytes: plans.get(&i.cluster_id).copied().unwrap_or(0),
                            disk_total_bytes: if own { s.disk_total_bytes } else { 0 },
                            disk_free_bytes: if own { s.disk_free_bytes } else { 0 },
                            reserve_bytes: if own { s.disk_reserve_bytes } else { 0 },
                        },
                        level: planner_level(s.level),
                    }
                }),
                observed: match i.observed.as_str() {
                    "creating" => planner::Observed::Creating,
                    "running" => planner::Observed::Running,
                    "unhealthy" => planner::Observed::Unhealthy,
                    "failed" => planner::Observed::Failed,
                    "absent" => planner::Observed::Absent,
                    "stopped" => planner::Observed::Stopped,
                    _ => planner::Observed::Unknown,
                },
                id: i.id,
                cluster_id: i.cluster_id,
                host_id: i.host_id,
                slots: u32::try_from(i.slots).unwrap_or(1),
                role: if i.role == "standby" {
                    planner::Role::Standby
                } else {
                    planner::Role::Primary
                },
                deleting: i.deleting,
                error: i.error,
                in_recovery: i.in_recovery,
                lsn: i.lsn.map(|l| l as u64),
                streaming: i.streaming,
                sync_standbys: i.sync_standbys,
                sync_streaming: i.sync_streaming,
                term: i.observed_term,
                draining: i.draining,
            })
            .collect();
        Ok(planner::World {
            now_ms,
            observing_since,
            locations: Vec::new(),
            clusters,
            hosts,
            instances,
            operations,
            pools: Vec::new(),
            spot: planner::SpotPolicy::default(),
            unreachable: Default::default(),
            evacuations: self.evacuations_view().await?,
        })
    }

    /// Unfinished evacuations as the planner sees them.
    async fn evacuations_view(&self) -> Result<Vec<planner::evacuate::Evacuation>> {
        use planner::evacuate::{Evacuation, Member, MemberState, MoveOutcome};
        let mut out = Vec::new();
        for e in self.open_evacuations().await? {
            let members = self
                .evacuation_clusters(&e.id)
                .await?
                .into_iter()
                .map(|m| Member {
                    // An unknown state (a newer writer's) is left alone as settled.
                    state: MemberState::parse(&m.state).unwrap_or(MemberState::Staying),
                    outcome: m.operation_status.as_deref().map(|s| match s {
                        "running" => MoveOutcome::Running,
                        "succeeded" => MoveOutcome::Succeeded,
                        other => MoveOutcome::Ended(
                            m.operation_error
                                .clone()
                                .unwrap_or_else(|| format!("its move operation ended {other}")),
                        ),
                    }),
                    cluster_id: m.cluster_id,
                })
                .collect();
            out.push(Evacuation {
                id: e.id,
                cloud: e.cloud,
                to: e.to_cloud,
                concurrency: u32::try_from(e.concurrency).unwrap_or(1).max(1),
                paused: e.status == "paused",
                members,
                // The reconciler adds what the org's bill holds clusters to.
                holds: Default::default(),
            });
        }
        Ok(out)
    }
}

/// The planner's view of a reported storage level.
fn planner_level(level: StorageLevel) -> planner::storage::Level {
    match level {
        StorageLevel::Normal => planner::storage::Level::Normal,
        StorageLevel::Warning => planner::storage::Level::Warning,
        StorageLevel::ReadOnly => planner::storage::Level::ReadOnly,
        StorageLevel::Critical => planner::storage::Level::Critical,
        StorageLevel::Full => planner::storage::Level::Full,
    }
}
