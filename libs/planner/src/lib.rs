//! Pure reconciliation decisions: `plan(world) -> Vec<Action>`.
//!
//! The planner owns *what* should happen next, never *how*: it reads a snapshot of desired
//! state (clusters the tenants asked for) and observed state (hosts, instances as agents
//! report them, open operations) and returns the actions that move the world toward the
//! desired state. It does no I/O, holds no clock (the snapshot carries `now`) and is
//! deterministic, so the control plane's executor and the tests — and later the fleet
//! simulator — all run the very same decisions.
//!
//! Every action is safe to repeat: the executor may crash after performing an action and
//! before recording it, and the next plan over the new snapshot must converge anyway.

pub mod backups;
pub mod cells;
pub mod clouds;
pub mod evacuate;
pub mod moves;
pub mod spot;
pub mod storage;

pub use spot::{PoolView, SpotPolicy};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An instance that never reported a running server (so never held any data).
fn never_ran(i: &InstanceView) -> bool {
    i.lsn.is_none() && i.in_recovery.is_none()
}

/// How many plan slots one host offers. A `small` instance takes 1, `medium` 2, `large` 4.
pub const HOST_SLOTS: u32 = 8;

/// A host that has not registered this long after its launch is given up on.
pub const HOST_LAUNCH_TIMEOUT_SECS: i64 = 120;

/// A host silent for this long (milliseconds) is considered gone: agents beat twice a
/// second, so this is two missed beats. Safe to keep short: failover also needs the
/// primary's synchronous standbys to have lost it, and they can acknowledge nothing more.
pub const HOST_DEAD_MS: i64 = 1_000;

/// A host silent for this long (milliseconds) is given up: marked failed and terminated,
/// so the standbys it held are replaced elsewhere.
pub const HOST_LOST_MS: i64 = 30_000;

/// A running host that holds nothing, launched at least this long ago, is released (it
/// costs money and no plan needs it).
pub const HOST_IDLE_SECS: i64 = 300;

/// Standbys in the synchronous set; commits wait for `ANY SYNC_QUORUM` of them.
pub const SYNC_QUORUM: usize = 1;

/// After a launch in a cloud/region failed, wait this long before trying there again
/// (a cloud that is down must not turn into a storm of launch calls).
pub const LAUNCH_RETRY_SECS: i64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIntent {
    pub id: String,
    pub cloud: String,
    pub region: String,
    /// The cell of the cluster's org: its members run on that cell's hosts only (`""`:
    /// the land's one cell when it has no others).
    #[serde(default)]
    pub cell: String,
    /// Capacity each member needs on a host.
    pub slots: u32,
    /// Members wanted: the primary plus its standbys.
    pub members: u32,
    /// Fencing generation: increments whenever the primary changes.
    pub term: i64,
    /// A requested planned switchover: the target standby, or `""` for the most advanced.
    pub switchover_to: Option<String>,
    /// Standbys go to other clouds of the land where it has them (the primary stays in
    /// `cloud`), so losing a whole provider loses at most the primary.
    pub spread_clouds: bool,
    /// Members run on spot capacity (distinct pools, on-demand fallback).
    pub spot: bool,
    /// Every acknowledged commit is in object storage (`durability: sync`) and a complete
    /// base backup is there: a primary lost with no standby to take over is restored from
    /// object storage, losing nothing.
    pub restorable: bool,
    /// The tenant asked for deletion.
    pub deleted: bool,
    /// The storage level last announced to the tenant (an event per change).
    #[serde(default)]
    pub storage_level: storage::Level,
    /// The smallest host disk the members need, in bytes (`0`: any host); storage
    /// autoscaling raises it and the members move to hosts with such disks.
    #[serde(default)]
    pub disk_bytes: u64,
    /// Storage autoscaling: the largest disk it may grow to (`0`: off).
    #[serde(default)]
    pub autoscale_max_bytes: u64,
    /// What happens when every member was in a cloud that went dark.
    #[serde(default)]
    pub on_cloud_loss: clouds::CloudLoss,
    /// A complete base backup of the cluster is in object storage (whatever its
    /// durability): what a restore after losing its cloud starts from.
    #[serde(default)]
    pub has_backup: bool,
    /// A cloud the cluster was moved off (a move of a spread cluster, an evacuation): no
    /// member stays or is placed there, whatever `spread_clouds` allows, until a later move
    /// brings the cluster back.
    #[serde(default)]
    pub avoid_cloud: Option<String>,
}

impl ClusterIntent {
    /// No member of the cluster may be in `cloud`: the cloud it was moved off (never its
    /// home, should a later relocation have brought it back there).
    pub fn avoids(&self, cloud: &str) -> bool {
        self.avoid_cloud.as_deref() == Some(cloud) && cloud != self.cloud
    }
}

/// How a host is paid for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Market {
    #[default]
    OnDemand,
    Spot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostStatus {
    /// Asked of the provider; the agent has not registered yet.
    Launching,
    /// The agent registered.
    Running,
    /// Launch failed or the host is gone; never placed on again.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub id: String,
    pub cloud: String,
    pub region: String,
    pub zone: String,
    /// The cell the host serves (see [`ClusterIntent::cell`]).
    #[serde(default)]
    pub cell: String,
    pub status: HostStatus,
    pub launched_at: i64,
    /// When the host's agent was last heard from, in unix milliseconds.
    pub last_beat_ms: Option<i64>,
    pub market: Market,
    /// `cloud/region/zone/instance-type` (empty while an on-demand launch has no zone yet).
    pub pool: String,
    /// A spot notice: the unix second at which the host dies.
    pub notice: Option<i64>,
    /// The size of the host's own disk, when it was launched with one.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Standby,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observed {
    /// The agent has not reported this instance yet.
    Unknown,
    Creating,
    Running,
    Unhealthy,
    Failed,
    /// The agent reports that it no longer has this instance.
    Absent,
    /// Stopped on purpose (a primary drained for a switchover).
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub cluster_id: String,
    pub host_id: String,
    pub slots: u32,
    pub role: Role,
    /// Removal was decided; the instance is no longer in its host's desired state.
    pub deleting: bool,
    pub observed: Observed,
    pub error: Option<String>,
    /// The server says it is a standby (`None`: not reported).
    pub in_recovery: Option<bool>,
    /// Flushed (primary) or received-and-flushed (standby) WAL position.
    pub lsn: Option<u64>,
    /// A standby's WAL receiver streams from a primary right now.
    pub streaming: Option<bool>,
    /// A primary's running `synchronous_standby_names` members.
    pub sync_standbys: Vec<String>,
    /// A primary: the standbys PostgreSQL counts toward its synchronous commits right now
    /// (caught up and streaming; a named standby still catching up is not among them).
    #[serde(default)]
    pub sync_streaming: Vec<String>,
    /// The term of the spec the instance last reported running.
    pub term: i64,
    /// A primary being stopped for a switchover: no longer routed.
    pub draining: bool,
    /// What the agent last measured of the instance's storage and the level it applies.
    #[serde(default)]
    pub storage: Option<storage::Report>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    CreateCluster,
    DeleteCluster,
    Switchover,
    /// A lost primary restored from object storage.
    RestorePrimary,
    /// Members moved to the cluster's (new) cloud and region or plan, by
    /// replace-then-switchover.
    MoveCluster,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationView {
    pub id: String,
    pub cluster_id: String,
    pub kind: OperationKind,
    /// The step it was last reported at (moves).
    #[serde(default)]
    pub progress: Option<moves::Progress>,
}

/// One consistent snapshot of the metadata store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    /// The moment of the snapshot, in unix milliseconds (liveness is judged to the
    /// millisecond; everything else to the second, see [`World::now`]).
    pub now_ms: i64,
    /// Since when the decider has been watching: silence is counted from no earlier than
    /// this, so a control plane that was down does not mistake every host for lost.
    pub observing_since: i64,
    /// Every (cloud, region) the land offers, in the land's order.
    pub locations: Vec<(String, String)>,
    pub clusters: Vec<ClusterIntent>,
    pub hosts: Vec<HostView>,
    pub instances: Vec<InstanceView>,
    pub operations: Vec<OperationView>,
    /// The land's spot pools and their recent record.
    pub pools: Vec<PoolView>,
    pub spot: SpotPolicy,
    /// Clouds whose API probe fails, from the control plane's probes.
    #[serde(default)]
    pub unreachable: BTreeMap<String, clouds::Unreachable>,
    /// Evacuations of a cloud that are not finished.
    #[serde(default)]
    pub evacuations: Vec<evacuate::Evacuation>,
}

impl World {
    /// The moment of the snapshot, in unix seconds.
    pub fn now(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Ask the provider for a new host in this cloud/region (a spot host in `pool`).
    LaunchHost {
        cloud: String,
        region: String,
        /// The cell the host will serve.
        cell: String,
        market: Market,
        pool: Option<String>,
        /// A disk of its own of this size (storage autoscaling asks for one).
        disk_bytes: Option<u64>,
    },
    /// A launch that never registered: stop waiting for it and give its capacity up.
    AbandonHost {
        host_id: String,
    },
    /// A healthy host that holds nothing: terminate it.
    ReleaseHost {
        host_id: String,
    },
    /// Put a new instance of the cluster on the host's desired state.
    CreateInstance {
        cluster_id: String,
        host_id: String,
        slots: u32,
        role: Role,
    },
    /// Take the instance off its host's desired state; the agent stops and removes it.
    DeleteInstance {
        instance_id: String,
    },
    /// The agent confirmed the instance is gone: drop its record.
    ForgetInstance {
        instance_id: String,
    },
    /// Every instance of a deleted cluster is gone: drop the cluster's record.
    RemoveCluster {
        cluster_id: String,
    },
    CompleteOperation {
        operation_id: String,
        outcome: Outcome,
    },
    /// Make `to` the primary of the next term; `from` (the failed primary) leaves the
    /// cluster. Only valid while the cluster is still in `term`.
    Failover {
        cluster_id: String,
        term: i64,
        from: Option<String>,
        to: String,
        reason: String,
    },
    /// The primary of `term` is gone with its host and no standby can take over: start a
    /// new term whose primary restores from object storage (latest base backup and all
    /// archived WAL); `from` leaves the cluster. `cloud_lost`: the primary went with its
    /// whole cloud (dark), so the restore is not lossless for an `async` cluster.
    RestorePrimary {
        cluster_id: String,
        term: i64,
        from: String,
        cloud_lost: Option<String>,
    },
    /// The cluster's home cloud is dark and nothing of it is left: it moves to `cloud` /
    /// `region`, where its restore (already begun) places the new primary.
    Relocate {
        cluster_id: String,
        cloud: String,
        region: String,
        message: String,
    },
    /// Stop routing to the primary and stop it, for a switchover; its walsenders pass
    /// every WAL byte to the connected standbys before it exits.
    Drain {
        instance_id: String,
    },
    /// A requested switchover cannot happen (its target is gone).
    CancelSwitchover {
        cluster_id: String,
        reason: String,
    },
    /// The cluster's primary runs at a new storage level: record it as announced and tell
    /// the tenant (`kind`, `message`).
    StorageLevel {
        cluster_id: String,
        level: storage::Level,
        kind: String,
        message: String,
    },
    /// Storage autoscaling: the cluster's members need hosts with disks of `disk_bytes`
    /// from now on (those on smaller disks are replaced, a primary by switchover).
    GrowDisk {
        cluster_id: String,
        disk_bytes: u64,
        message: String,
    },
    /// An evacuation starts moving one of its clusters to `cloud` / `region`, off the
    /// evacuated cloud `from` (which the cluster then avoids).
    EvacuationMove {
        evacuation_id: String,
        cluster_id: String,
        cloud: String,
        region: String,
        from: String,
    },
    /// One cluster of an evacuation reached a new state (`why`: for failed and staying).
    EvacuationMember {
        evacuation_id: String,
        cluster_id: String,
        state: evacuate::MemberState,
        why: Option<String>,
    },
    /// Nothing of the evacuation waits or moves any more.
    EvacuationDone {
        evacuation_id: String,
    },
    /// A running operation moved on to another step.
    ReportProgress {
        operation_id: String,
        progress: moves::Progress,
    },
    /// Tell the operator something (deduplicated by the executor).
    Event {
        cluster_id: String,
        kind: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed(String),
}

/// Decide the next actions. Deterministic: the same world gives the same plan.
pub fn plan(world: &World) -> Vec<Action> {
    let mut actions = Vec::new();
    let hosts: BTreeMap<&str, &HostView> = world.hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    let mut used: BTreeMap<&str, u32> = BTreeMap::new();
    for i in &world.instances {
        *used.entry(i.host_id.as_str()).or_default() += i.slots;
    }
    let live_clusters: BTreeSet<&str> = world
        .clusters
        .iter()
        .filter(|c| !c.deleted)
        .map(|c| c.id.as_str())
        .collect();

    // Launches that never came up.
    for h in &world.hosts {
        if h.status == HostStatus::Launching && world.now() - h.launched_at > HOST_LAUNCH_TIMEOUT_SECS {
            actions.push(Action::AbandonHost { host_id: h.id.clone() });
        }
    }

    // Hosts that went silent for good, or whose spot notice ran out and that went quiet,
    // or that went quiet with their whole cloud (dark: nothing there answers).
    for h in &world.hosts {
        let quiet = silence_ms(world, h) > HOST_DEAD_MS;
        let preempted = h.notice.is_some_and(|d| world.now() > d) && quiet;
        let with_cloud = quiet && clouds::dark(world, &h.cloud);
        if h.status == HostStatus::Running && (silence_ms(world, h) > HOST_LOST_MS || preempted || with_cloud) {
            actions.push(Action::AbandonHost { host_id: h.id.clone() });
        }
    }

    // Instances: remove those whose cluster is gone or whose host failed; forget removed.
    for i in &world.instances {
        let host_failed = hosts
            .get(i.host_id.as_str())
            .is_none_or(|h| h.status == HostStatus::Failed);
        if i.deleting {
            if i.observed == Observed::Absent || host_failed {
                actions.push(Action::ForgetInstance {
                    instance_id: i.id.clone(),
                });
            }
        } else if !live_clusters.contains(i.cluster_id.as_str())
            || (host_failed && (i.role == Role::Standby || never_ran(i)))
        {
            // A standby on a lost host is replaced elsewhere. A primary is not once it has
            // run: its data went with the host, and an empty new primary would be a
            // silently wrong database; failover (or a restore) must take its place. One
            // that never came up (its host died first) held nothing and is placed again.
            actions.push(Action::DeleteInstance {
                instance_id: i.id.clone(),
            });
        }
    }

    // Failover and fencing, before placement: a promotion changes who is primary.
    for c in world.clusters.iter().filter(|c| !c.deleted) {
        actions.extend(plan_failover(world, c, &hosts));
    }
    // Clusters that lived only in a cloud that went dark.
    actions.extend(clouds::plan_loss(world));
    // Evacuations: the next clusters to move off their cloud.
    actions.extend(evacuate::plan(world));

    // Storage: the level of the cluster's fullest member (a standby's full disk holds the
    // primary's writes back too), told to the tenant when it changes.
    for c in world.clusters.iter().filter(|c| !c.deleted) {
        let report = world
            .instances
            .iter()
            .filter(|i| i.cluster_id == c.id && !i.deleting)
            .filter(|i| i.role == Role::Standby || i.term == c.term)
            .filter_map(|i| i.storage.as_ref().map(|s| (s, i.role == Role::Primary)))
            .max_by_key(|(s, primary)| (s.level, *primary))
            .map(|(s, _)| s);
        // Autoscaling grows the disk before the read-only mark is near: from the primary's
        // host (the standbys follow the same target), when that host has a disk of its own
        // of a known size (a shared file system's fullness is not the host's).
        let primary_disk = world
            .instances
            .iter()
            .filter(|i| i.cluster_id == c.id && !i.deleting && i.role == Role::Primary && i.term == c.term)
            .find_map(|i| {
                let host = hosts.get(i.host_id.as_str())?;
                Some((i.storage.as_ref()?, host.disk_bytes?))
            });
        if let Some((r, host_disk)) = primary_disk {
            if let Some(grow) = storage::autoscale(&r.reading, Some(host_disk), c.disk_bytes, c.autoscale_max_bytes) {
                actions.push(Action::GrowDisk {
                    cluster_id: c.id.clone(),
                    disk_bytes: grow.to_bytes,
                    message: grow.message,
                });
            }
        }
        if let Some(r) = report {
            if let Some((kind, message)) = storage::announce(c.storage_level, r.level, &r.reading) {
                actions.push(Action::StorageLevel {
                    cluster_id: c.id.clone(),
                    level: r.level,
                    kind: kind.to_string(),
                    message,
                });
            }
        }
    }

    // Placement: each live cluster has `members` instances, one of them the primary, each
    // on its own host, spread over zones where the region has several; a spot cluster's
    // members on spot hosts of distinct pools (see `spot`).
    let mut launching_need: BTreeMap<LaunchKey<'_>, (u32, u32)> = BTreeMap::new();
    let mut extra_members: Vec<Action> = Vec::new();
    for c in world.clusters.iter().filter(|c| !c.deleted) {
        let live: Vec<&InstanceView> = world
            .instances
            .iter()
            .filter(|i| i.cluster_id == c.id && !i.deleting)
            .collect();
        let leaving = spot::leaving(c, &live, &hosts);
        let staying: Vec<&InstanceView> = live
            .iter()
            .copied()
            .filter(|i| !leaving.contains_key(i.id.as_str()))
            .collect();
        let host_of = |i: &InstanceView| hosts.get(i.host_id.as_str()).copied();
        let mut taken_hosts: BTreeSet<&str> = live.iter().map(|i| i.host_id.as_str()).collect();
        // Where the staying members are; leaving ones do not count (their replacement may
        // go to the same zone if it must, never to the same host).
        let mut taken = spot::Taken {
            pools: staying
                .iter()
                .filter_map(|i| host_of(i))
                .filter(|h| h.market == Market::Spot)
                .map(|h| h.pool.as_str())
                .collect(),
            zones: staying
                .iter()
                .filter_map(|i| host_of(i))
                .map(|h| h.zone.as_str())
                .collect(),
            clouds: staying
                .iter()
                .filter_map(|i| host_of(i))
                .map(|h| h.cloud.as_str())
                .collect(),
        };
        // Where members may go: the cluster's cloud and region; with spread_clouds, also
        // every other cloud (in its region of the same name, else its first region).
        let mut allowed: Vec<(&str, &str)> = vec![(c.cloud.as_str(), c.region.as_str())];
        if c.spread_clouds {
            for (cloud, region) in &world.locations {
                if allowed.iter().any(|(a, _)| a == cloud) || c.avoids(cloud) {
                    continue;
                }
                let same = world.locations.iter().any(|(oc, or)| oc == cloud && or == &c.region);
                if same && region != &c.region {
                    continue;
                }
                allowed.push((cloud.as_str(), region.as_str()));
            }
        }
        // Leaving members: a standby goes once the standbys that stay can carry the
        // cluster (its replacement streams); a primary goes by switchover (`plan_failover`).
        let ready = spot::ready_standbys(&live, &leaving);
        for i in &live {
            let Some(why) = leaving.get(i.id.as_str()) else {
                continue;
            };
            let replaced = ready as u32 + 1 >= c.members;
            let go = match why {
                spot::Leaving::Excess => true,
                spot::Leaving::Notice
                | spot::Leaving::BackToSpot
                | spot::Leaving::SmallDisk
                | spot::Leaving::Elsewhere
                | spot::Leaving::Resize => replaced,
            };
            if i.role == Role::Standby && go {
                extra_members.push(Action::DeleteInstance {
                    instance_id: i.id.clone(),
                });
            }
        }
        // A leaving primary is still the primary: its replacement comes as a standby.
        let mut has_primary = live.iter().any(|i| i.role == Role::Primary);
        let mut missing = c.members.saturating_sub(staying.len() as u32);
        // A spot cluster whole and at rest, with a member on on-demand: when some pool has
        // been calm long enough, one member returns to spot (a new spot member first; the
        // on-demand one then leaves as excess).
        // At rest: nothing leaving, nothing still being removed, everyone running.
        let settling = world.instances.iter().any(|i| i.cluster_id == c.id && i.deleting);
        let at_rest = leaving.is_empty()
            && !settling
            && staying.len() as u32 == c.members
            && staying.iter().all(|i| i.observed == Observed::Running);
        let fallback_member = staying
            .iter()
            .any(|i| host_of(i).is_some_and(|h| h.market == Market::OnDemand));
        let mut back_to_spot = false;
        if c.spot && at_rest && fallback_member {
            let calm = spot::ranked(world, &allowed, &taken)
                .into_iter()
                .any(|p| spot::stable(world, p));
            if calm {
                missing += 1;
                back_to_spot = true;
            }
        }
        // Hosts this cluster alone needs launched, per launch key (its members need
        // distinct hosts; other clusters may share them).
        let mut own_need: BTreeMap<LaunchKey<'_>, u32> = BTreeMap::new();
        for _ in 0..missing {
            let primary_turn = !has_primary;
            let here: Vec<(&str, &str)> = if primary_turn {
                vec![(c.cloud.as_str(), c.region.as_str())]
            } else {
                allowed.clone()
            };
            // A spread cluster's standby must go to a cloud it is not in, while one is left.
            let needs_new_cloud =
                c.spread_clouds && !primary_turn && allowed.iter().any(|(cl, _)| !taken.clouds.contains(cl));
            let fits = |h: &&HostView| {
                h.status == HostStatus::Running
                    // Not on a host that stopped beating (it may be gone) or is doomed.
                    && silence_ms(world, h) <= HOST_DEAD_MS
                    && h.notice.is_none()
                    && here.contains(&(h.cloud.as_str(), h.region.as_str()))
                    && (!needs_new_cloud || !taken.clouds.contains(h.cloud.as_str()))
                    && !taken_hosts.contains(h.id.as_str())
                    && used.get(h.id.as_str()).copied().unwrap_or(0) + c.slots <= HOST_SLOTS
                    && disk_fits(c, h)
                    // Only the hosts of the org's cell: losing a cell touches no other.
                    && h.cell == c.cell
            };
            // A cloud, then a zone, the cluster is not in yet first; then the fullest host,
            // so empty hosts stay free for big plans.
            let preference = |h: &&HostView| {
                (
                    !taken.clouds.contains(h.cloud.as_str()),
                    !taken.zones.contains(h.zone.as_str()),
                    used.get(h.id.as_str()).copied().unwrap_or(0),
                    std::cmp::Reverse(h.id.clone()),
                )
            };
            let mut choice: Option<(&HostView, Option<&PoolView>)> = None;
            let mut launch_at: Option<LaunchKey<'_>> = None;
            if c.spot {
                let pools = spot::ranked(world, &here, &taken);
                let pools: Vec<&PoolView> = pools
                    .into_iter()
                    .filter(|p| !needs_new_cloud || !taken.clouds.contains(p.cloud.as_str()))
                    .collect();
                let rank = |h: &HostView| pools.iter().position(|p| p.id == h.pool);
                choice = world
                    .hosts
                    .iter()
                    .filter(|h| h.market == Market::Spot && rank(h).is_some())
                    .filter(fits)
                    .max_by_key(|h| (preference(h), std::cmp::Reverse(rank(h))))
                    .map(|h| (h, rank(h).map(|r| pools[r])));
                if choice.is_none() {
                    launch_at = pools.first().map(|p| LaunchKey {
                        cloud: p.cloud.as_str(),
                        region: p.region.as_str(),
                        cell: c.cell.as_str(),
                        market: Market::Spot,
                        pool: Some(p.id.as_str()),
                        disk_bytes: (c.disk_bytes > 0).then_some(c.disk_bytes),
                    });
                }
            }
            let fallback = c.spot && choice.is_none() && launch_at.is_none();
            if fallback && (back_to_spot || !world.spot.fallback) {
                // Only spot is worth a move (or the policy waits for spot): not this round.
                break;
            }
            if !c.spot || fallback {
                choice = world
                    .hosts
                    .iter()
                    .filter(|h| h.market == Market::OnDemand)
                    .filter(fits)
                    .max_by_key(preference)
                    .map(|h| (h, None));
            }
            if fallback {
                actions.push(Action::Event {
                    cluster_id: c.id.clone(),
                    kind: "spot_fallback".into(),
                    message:
                        "no spot pool has capacity or is calm enough: the new member runs on on-demand until one is"
                            .into(),
                });
            }
            match choice {
                Some((h, pool)) => {
                    *used.entry(h.id.as_str()).or_default() += c.slots;
                    taken_hosts.insert(h.id.as_str());
                    taken.zones.insert(h.zone.as_str());
                    taken.clouds.insert(h.cloud.as_str());
                    if let Some(p) = pool {
                        taken.pools.insert(p.id.as_str());
                    }
                    let role = if has_primary { Role::Standby } else { Role::Primary };
                    has_primary = true;
                    actions.push(Action::CreateInstance {
                        cluster_id: c.id.clone(),
                        host_id: h.id.clone(),
                        slots: c.slots,
                        role,
                    });
                    let why = if leaving.values().any(|w| *w == spot::Leaving::Notice) {
                        Some("replaces a member whose host has a spot notice".to_string())
                    } else if back_to_spot {
                        Some("spot capacity has been calm: a member returns to spot".to_string())
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        actions.push(Action::Event {
                            cluster_id: c.id.clone(),
                            kind: "spot_replacement".into(),
                            message: format!("new {role:?} on host {} ({}): {why}", h.id, h.pool).to_lowercase(),
                        });
                    }
                }
                None => {
                    // Launch where the member should go: the primary in the cluster's
                    // cloud, a standby preferably in a cloud the cluster is not in yet.
                    let at = launch_at.unwrap_or_else(|| {
                        let (cloud, region) = if primary_turn {
                            (c.cloud.as_str(), c.region.as_str())
                        } else {
                            allowed
                                .iter()
                                .copied()
                                .find(|(cloud, _)| !taken.clouds.contains(cloud))
                                .unwrap_or((c.cloud.as_str(), c.region.as_str()))
                        };
                        LaunchKey {
                            cloud,
                            region,
                            cell: c.cell.as_str(),
                            market: Market::OnDemand,
                            pool: None,
                            disk_bytes: (c.disk_bytes > 0).then_some(c.disk_bytes),
                        }
                    });
                    taken.clouds.insert(at.cloud);
                    if let Some(p) = at.pool {
                        taken.pools.insert(p);
                        if let Some(pv) = world.pools.iter().find(|pv| pv.id == p) {
                            taken.zones.insert(pv.zone.as_str());
                        }
                    }
                    has_primary = true;
                    launching_need.entry(at.clone()).or_default().0 += c.slots;
                    *own_need.entry(at).or_default() += 1;
                }
            }
        }
        for (at, n) in own_need {
            let need = launching_need.entry(at).or_default();
            need.1 = need.1.max(n);
        }
    }
    actions.extend(extra_members);
    for (key, (slots, distinct)) in launching_need {
        let same = |h: &HostView| {
            h.cloud == key.cloud
                && h.region == key.region
                && h.cell == key.cell
                && h.market == key.market
                && key.pool.is_none_or(|p| h.pool == p)
                && h.disk_bytes == key.disk_bytes
        };
        let failed_recently = world
            .hosts
            .iter()
            .any(|h| h.status == HostStatus::Failed && same(h) && world.now() - h.launched_at < LAUNCH_RETRY_SECS);
        if failed_recently {
            continue;
        }
        let launching = world
            .hosts
            .iter()
            .filter(|h| h.status == HostStatus::Launching && same(h))
            .count() as u32;
        let hosts_needed = slots.div_ceil(HOST_SLOTS).max(distinct);
        for _ in launching..hosts_needed {
            actions.push(Action::LaunchHost {
                cloud: key.cloud.to_string(),
                region: key.region.to_string(),
                cell: key.cell.to_string(),
                market: key.market,
                pool: key.pool.map(str::to_string),
                disk_bytes: key.disk_bytes,
            });
        }
    }

    // Hosts that hold nothing and are not wanted by this plan.
    for h in &world.hosts {
        let idle = h.status == HostStatus::Running
            && world.now() - h.launched_at >= HOST_IDLE_SECS
            && !world.instances.iter().any(|i| i.host_id == h.id)
            && !actions
                .iter()
                .any(|a| matches!(a, Action::CreateInstance { host_id, .. } if host_id == &h.id));
        if idle {
            actions.push(Action::ReleaseHost { host_id: h.id.clone() });
        }
    }

    // Deleted clusters whose instances are all gone.
    for c in world.clusters.iter().filter(|c| c.deleted) {
        if !world.instances.iter().any(|i| i.cluster_id == c.id) {
            actions.push(Action::RemoveCluster {
                cluster_id: c.id.clone(),
            });
        }
    }

    // Operations.
    for op in &world.operations {
        let outcome = match op.kind {
            OperationKind::CreateCluster | OperationKind::RestorePrimary => {
                let cluster = world.clusters.iter().find(|c| c.id == op.cluster_id);
                let members: Vec<&InstanceView> = world
                    .instances
                    .iter()
                    .filter(|i| i.cluster_id == op.cluster_id && !i.deleting)
                    .collect();
                match cluster {
                    None => Some(Outcome::Failed("cluster was removed".into())),
                    Some(c) if c.deleted => Some(Outcome::Failed("cluster was deleted".into())),
                    Some(c) => {
                        // Waiting for a cloud that does not answer: the operation says so.
                        let why = clouds::waiting(world, c);
                        if let Some(doing) = why
                            .clone()
                            .or_else(|| op.progress.is_some().then(|| "placing the members".to_string()))
                        {
                            let now = moves::Progress {
                                step: 1,
                                steps: 1,
                                doing,
                            };
                            if op.progress.as_ref() != Some(&now) {
                                actions.push(Action::ReportProgress {
                                    operation_id: op.id.clone(),
                                    progress: now,
                                });
                            }
                        }
                        if let Some(why) = why {
                            actions.push(Action::Event {
                                cluster_id: c.id.clone(),
                                kind: "cloud_unreachable".into(),
                                message: why,
                            });
                        }
                        if let Some(f) = members.iter().find(|i| i.observed == Observed::Failed) {
                            Some(Outcome::Failed(
                                f.error.clone().unwrap_or_else(|| "instance failed".into()),
                            ))
                        } else if members.len() as u32 >= c.members
                            && members.iter().all(|i| i.observed == Observed::Running)
                        {
                            Some(Outcome::Succeeded)
                        } else {
                            None
                        }
                    }
                }
            }
            OperationKind::Switchover => {
                let cluster = world.clusters.iter().find(|c| c.id == op.cluster_id);
                match cluster {
                    None => Some(Outcome::Failed("cluster was removed".into())),
                    Some(c) if c.deleted => Some(Outcome::Failed("cluster was deleted".into())),
                    Some(c) if c.switchover_to.is_none() => {
                        let promoted = world.instances.iter().any(|i| {
                            i.cluster_id == c.id
                                && !i.deleting
                                && i.role == Role::Primary
                                && i.in_recovery == Some(false)
                                && i.term == c.term
                                && i.observed == Observed::Running
                        });
                        promoted.then_some(Outcome::Succeeded)
                    }
                    Some(_) => None,
                }
            }
            OperationKind::MoveCluster => {
                let cluster = world.clusters.iter().find(|c| c.id == op.cluster_id);
                match cluster {
                    None => Some(Outcome::Failed("cluster was removed".into())),
                    Some(c) if c.deleted => Some(Outcome::Failed("cluster was deleted".into())),
                    Some(c) => {
                        let mine = |i: &&InstanceView| i.cluster_id == c.id;
                        let live: Vec<&InstanceView> =
                            world.instances.iter().filter(mine).filter(|i| !i.deleting).collect();
                        let settled = !world.instances.iter().filter(mine).any(|i| i.deleting)
                            && live.len() as u32 == c.members
                            && live.iter().all(|i| i.observed == Observed::Running)
                            && spot::leaving(c, &live, &hosts).is_empty();
                        if !settled {
                            let all: Vec<&InstanceView> = world.instances.iter().filter(mine).collect();
                            let mut now = moves::progress(c, &all, &hosts);
                            if let Some(why) = clouds::waiting(world, c) {
                                now.doing = format!("{}: {why}", now.doing);
                                actions.push(Action::Event {
                                    cluster_id: c.id.clone(),
                                    kind: "cloud_unreachable".into(),
                                    message: why,
                                });
                            }
                            if op.progress.as_ref() != Some(&now) {
                                actions.push(Action::ReportProgress {
                                    operation_id: op.id.clone(),
                                    progress: now,
                                });
                            }
                        }
                        settled.then_some(Outcome::Succeeded)
                    }
                }
            }
            OperationKind::DeleteCluster => {
                let gone = !world.clusters.iter().any(|c| c.id == op.cluster_id)
                    || (!world.instances.iter().any(|i| i.cluster_id == op.cluster_id));
                gone.then_some(Outcome::Succeeded)
            }
        };
        if let Some(outcome) = outcome {
            actions.push(Action::CompleteOperation {
                operation_id: op.id.clone(),
                outcome,
            });
        }
    }
    actions
}

/// Where a host is launched: hosts of one key are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LaunchKey<'a> {
    cloud: &'a str,
    region: &'a str,
    cell: &'a str,
    market: Market,
    pool: Option<&'a str>,
    disk_bytes: Option<u64>,
}

/// The host's disk is as big as the cluster's members need.
pub(crate) fn disk_fits(c: &ClusterIntent, h: &HostView) -> bool {
    c.disk_bytes == 0 || h.disk_bytes.is_some_and(|d| d >= c.disk_bytes)
}

/// Milliseconds since the host was last heard from (or since observation began).
pub(crate) fn silence_ms(world: &World, h: &HostView) -> i64 {
    world.now_ms
        - h.last_beat_ms
            .unwrap_or(i64::MIN)
            .max(world.observing_since.saturating_mul(1000))
}

/// The next moment (unix ms) at which a running host that beats no more would be taken for
/// dead: the decider plans again then rather than at its next periodic round, so a failover
/// follows the silence threshold by milliseconds, not by up to a round.
pub fn next_silence_deadline_ms(world: &World) -> Option<i64> {
    world
        .hosts
        .iter()
        .filter(|h| h.status == HostStatus::Running)
        .map(|h| world.now_ms - silence_ms(world, h) + HOST_DEAD_MS + 1)
        .filter(|t| *t > world.now_ms)
        .min()
}

fn host_alive(world: &World, hosts: &BTreeMap<&str, &HostView>, host_id: &str) -> bool {
    hosts
        .get(host_id)
        .is_some_and(|h| h.status == HostStatus::Running && silence_ms(world, h) <= HOST_DEAD_MS)
}

/// Failure detection, the safe choice of a new primary, and fencing of stale primaries.
///
/// A primary is failed when its host is gone or silent, or its agent reports it failed,
/// absent or unhealthy — and no standby still streams from it (the standbys' view). A
/// standby is promoted only if it provably holds every acknowledged commit: commits wait
/// for `ANY k` of the primary's synchronous set S, so once `|S| - k + 1` members of S
/// have stopped streaming and reported their final positions, the furthest of them has
/// every acknowledged commit. Otherwise nothing is promoted and an event says why.
fn plan_failover(world: &World, c: &ClusterIntent, hosts: &BTreeMap<&str, &HostView>) -> Vec<Action> {
    let mut actions = Vec::new();
    let live: Vec<&InstanceView> = world
        .instances
        .iter()
        .filter(|i| i.cluster_id == c.id && !i.deleting)
        .collect();
    // Fencing: a member that runs as a primary but is not this term's primary steps down.
    for i in &live {
        let stale = i.in_recovery == Some(false) && (i.role != Role::Primary || i.term < c.term);
        if stale {
            actions.push(Action::DeleteInstance {
                instance_id: i.id.clone(),
            });
        }
    }
    let Some(primary) = live.iter().find(|i| i.role == Role::Primary) else {
        // No primary (it was lost and is being restored): a standby that never ran was
        // copying from the old one and never will; it goes, so the cluster can be whole.
        for s in live.iter().filter(|s| s.role == Role::Standby && never_ran(s)) {
            actions.push(Action::DeleteInstance {
                instance_id: s.id.clone(),
            });
        }
        return actions;
    };
    let standbys: Vec<&&InstanceView> = live.iter().filter(|i| i.role == Role::Standby).collect();
    // Lost for good (its host given up) with no standby that ever ran to take over: what
    // is left is object storage.
    let host_given_up = hosts
        .get(primary.host_id.as_str())
        .is_none_or(|h| h.status == HostStatus::Failed);
    let no_successor = !standbys
        .iter()
        .any(|s| s.lsn.is_some() && host_alive(world, hosts, &s.host_id));
    if host_given_up && !never_ran(primary) && no_successor && primary.in_recovery != Some(true) {
        // Its whole cloud went dark: under `restore`, the copy of its backups and WAL in a
        // surviving cloud brings it back there (losing what the copy had not received).
        let lost_cloud = hosts
            .get(primary.host_id.as_str())
            .map(|h| h.cloud.as_str())
            .filter(|cloud| clouds::dark(world, cloud));
        let after_loss = lost_cloud.is_some()
            && c.on_cloud_loss == clouds::CloudLoss::Restore
            && c.has_backup
            && clouds::refuge(world, c).is_some();
        if c.restorable || after_loss {
            actions.push(Action::RestorePrimary {
                cluster_id: c.id.clone(),
                term: c.term,
                from: primary.id.clone(),
                cloud_lost: lost_cloud.map(str::to_string),
            });
            // Standbys still copying from the lost primary never will: they go, and new
            // ones copy from the restored primary.
            for s in standbys.iter().filter(|s| never_ran(s)) {
                actions.push(Action::DeleteInstance {
                    instance_id: s.id.clone(),
                });
            }
        } else if let Some(cloud) = lost_cloud {
            let why = if c.on_cloud_loss == clouds::CloudLoss::Wait {
                "on-cloud-loss is wait, so the cluster waits for the cloud to come back"
            } else if !c.has_backup {
                "the cluster has no complete base backup to restore from elsewhere, so it waits for the cloud to come back"
            } else {
                "no other cloud of the land is reachable, so the cluster waits for one"
            };
            actions.push(Action::Event {
                cluster_id: c.id.clone(),
                kind: "cloud_lost".into(),
                message: format!(
                    "primary {} was lost with cloud {cloud}, which is dark; {why}",
                    primary.id
                ),
            });
        } else {
            actions.push(Action::Event {
                cluster_id: c.id.clone(),
                kind: "primary_lost".into(),
                message: format!(
                    "primary {} was lost with its host and no standby can take over; with durability=async its last commits may be missing from object storage: restore it with `highrise cluster restore`",
                    primary.id
                ),
            });
        }
        return actions;
    }
    if standbys.is_empty() {
        return actions;
    }
    let sync_set: Vec<&str> = primary.sync_standbys.iter().map(String::as_str).collect();
    let leaving = spot::leaving(c, &live, hosts);
    // A primary that must leave (a spot notice on its host, or an on-demand fallback whose
    // spot replacement streams) is switched over to the most advanced standby.
    // A return to spot is never urgent: it waits until the synchronous set has settled
    // (no member being removed, every standby streaming), so the switchover never races a
    // change of the set.
    let settled = !world.instances.iter().any(|i| i.cluster_id == c.id && i.deleting)
        && standbys
            .iter()
            .all(|s| s.observed == Observed::Running && s.streaming == Some(true));
    // Unhurried, it waits until the members that stay can carry the whole cluster: one of
    // them becomes the primary and the others are its standbys, all in step already (a
    // spread cluster moved off the primary's cloud has a ready standby elsewhere at once;
    // switching to it before the replacement streams would leave commits waiting for it).
    let must_leave = match leaving.get(primary.id.as_str()) {
        Some(spot::Leaving::Notice) => true,
        Some(w) if *w == spot::Leaving::BackToSpot || w.misplaced() => {
            settled && spot::ready_standbys(&live, &leaving) as u32 >= c.members
        }
        _ => false,
    };
    let target = c.switchover_to.clone().or_else(|| must_leave.then(String::new));
    // Planned switchover: drain the primary once a suitable target streams from it.
    if let Some(target) = &target {
        if !primary.draining {
            let suitable = standbys.iter().any(|s| {
                (target.is_empty() || &s.id == target)
                    && !leaving.contains_key(s.id.as_str())
                    && s.observed == Observed::Running
                    && s.streaming == Some(true)
                    && sync_set.contains(&s.id.as_str())
            });
            let exists = target.is_empty() || standbys.iter().any(|s| &s.id == target);
            if suitable {
                actions.push(Action::Drain {
                    instance_id: primary.id.clone(),
                });
                if c.switchover_to.is_none() {
                    let why = match leaving.get(primary.id.as_str()) {
                        Some(spot::Leaving::Notice) => "its host has a spot notice",
                        Some(spot::Leaving::SmallDisk) => "its host's disk is smaller than the storage now needs",
                        Some(spot::Leaving::Elsewhere) => "the cluster moves to another cloud or region",
                        Some(spot::Leaving::Resize) => "the cluster changes its plan",
                        _ => "it runs on on-demand and spot capacity is back",
                    };
                    actions.push(Action::Event {
                        cluster_id: c.id.clone(),
                        kind: "switchover_started".into(),
                        message: format!("switching over from primary {}: {why}", primary.id),
                    });
                }
            } else if !exists {
                actions.push(Action::CancelSwitchover {
                    cluster_id: c.id.clone(),
                    reason: format!("{target} is not a standby of this cluster"),
                });
            }
            // Waiting for a target; but a primary that fails meanwhile is failed over.
            let primary_ok = host_alive(world, hosts, &primary.host_id) && primary.observed == Observed::Running;
            if suitable || !exists || primary_ok {
                return actions;
            }
        }
    }
    let primary_host_alive = host_alive(world, hosts, &primary.host_id);
    let drained = primary.draining && matches!(primary.observed, Observed::Stopped);
    let failed = !primary_host_alive
        || drained
        || matches!(
            primary.observed,
            Observed::Failed | Observed::Absent | Observed::Unhealthy
        );
    let still_followed = standbys.iter().any(|s| s.streaming == Some(true));
    if !failed || still_followed || primary.in_recovery == Some(true) {
        return actions;
    }
    let reporters: Vec<&&&InstanceView> = standbys
        .iter()
        .filter(|s| sync_set.contains(&s.id.as_str()))
        .filter(|s| host_alive(world, hosts, &s.host_id))
        .filter(|s| s.observed == Observed::Running && s.in_recovery == Some(true) && s.streaming == Some(false))
        .filter(|s| s.lsn.is_some() && s.term == c.term)
        .collect();
    // A member of the set that is gone for good (removed, its data with it) can never
    // report; it counts as reported with nothing. A commit only it acknowledged is lost
    // with it whatever is promoted, so waiting for it would only keep the cluster down.
    let gone: Vec<&str> = sync_set
        .iter()
        .copied()
        .filter(|id| !live.iter().any(|i| i.id == *id))
        .collect();
    let needed = (sync_set.len() + 1).saturating_sub(SYNC_QUORUM);
    if sync_set.is_empty() || reporters.is_empty() || reporters.len() + gone.len() < needed {
        actions.push(Action::Event {
            cluster_id: c.id.clone(),
            kind: "failover_waiting".into(),
            message: format!(
                "primary {} is down; waiting: {} of the {} synchronous standbys have reported their final position, {} needed to prove one holds every acknowledged commit",
                primary.id,
                reporters.len(),
                sync_set.len(),
                needed.max(1)
            ),
        });
        return actions;
    }
    // The most advanced; among equals, one that is not leaving.
    let Some(best) = reporters.iter().max_by_key(|s| {
        (
            s.lsn,
            !leaving.contains_key(s.id.as_str()),
            std::cmp::Reverse(s.id.clone()),
        )
    }) else {
        return actions;
    };
    // A switchover's target, when it is among the most advanced.
    let best = match c.switchover_to.as_deref() {
        Some(t) if !t.is_empty() => reporters
            .iter()
            .find(|s| s.id == t && s.lsn == best.lsn)
            .unwrap_or(best),
        _ => best,
    };
    let reason = if drained {
        format!("planned switchover from {}", primary.id)
    } else if primary_host_alive {
        format!("primary {} reported {:?}", primary.id, primary.observed)
    } else {
        format!("host {} of primary {} is gone", primary.host_id, primary.id)
    };
    if reporters.len() < needed {
        actions.push(Action::Event {
            cluster_id: c.id.clone(),
            kind: "failover_incomplete_quorum".into(),
            message: format!(
                "promoting {}: synchronous standby(s) {} are gone with their data; a commit only they acknowledged cannot be recovered",
                best.id,
                gone.join(", ")
            ),
        });
    }
    actions.push(Action::Failover {
        cluster_id: c.id.clone(),
        term: c.term,
        from: Some(primary.id.clone()),
        to: best.id.clone(),
        reason,
    });
    actions
}

/// Every plan, smallest first.
pub const PLANS: [&str; 3] = ["small", "medium", "large"];

/// Slots a plan takes on a host, or `None` for an unknown plan.
pub fn plan_slots(plan: &str) -> Option<u32> {
    match plan {
        "small" => Some(1),
        "medium" => Some(2),
        "large" => Some(4),
        _ => None,
    }
}

/// The storage a plan includes, in bytes (data and WAL of each member).
pub fn plan_storage_bytes(plan: &str) -> Option<u64> {
    const GIB: u64 = 1 << 30;
    match plan {
        "small" => Some(10 * GIB),
        "medium" => Some(50 * GIB),
        "large" => Some(200 * GIB),
        _ => None,
    }
}

/// Memory budget in MiB of a plan's instance.
pub fn plan_memory_mb(slots: u32) -> u32 {
    256 * slots
}

#[cfg(test)]
mod tests;
