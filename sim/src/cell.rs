//! One cell of the fleet on virtual time: a few clusters and the hosts they share, the
//! simulated land (launches, spot capacity, notices, deaths) and agents (instances that
//! come up, stream, drain, promote), the production planner in the loop, and the meters
//! (availability, outages, lost acknowledged commits, cost).
//!
//! Data is modelled by positions: while a cluster accepts writes its acknowledged position
//! advances with time; its primary and every streaming standby hold it; a standby that
//! stops streaming keeps the position it had. When a standby is promoted, whatever it did
//! not hold is lost (the planner must never let that happen: the meter checks it).

use crate::report::PolicyResult;
use crate::{Calibration, Policy, Shape, SimConfig, SimRegion};
use anyhow::Result;
use highrise_planner::{
    plan, Action, ClusterIntent, HostStatus, HostView, InstanceView, Market as PMarket, Observed, PoolView, Role, World,
};
use highrise_provider::market::{PoolId, SpotMarket};
use rust_decimal::prelude::ToPrimitive;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// The plan and shape of the fleet's `n`th cluster.
pub(crate) fn cluster_kind(cfg: &SimConfig, n: u32) -> (&String, Shape) {
    let n = n as usize;
    (
        &cfg.plans[n % cfg.plans.len()],
        cfg.shapes[(n / cfg.plans.len()) % cfg.shapes.len()],
    )
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick,
    Market,
    HostBoot(String),
    HostDeath(String),
    Ready(String),
    DrainDone(String),
    PromoteDone(String),
    DeleteDone(String),
}

struct Host {
    view: HostView,
    alive: bool,
    /// The notice's deadline, whoever sees it.
    deadline: Option<f64>,
    pool: PoolId,
    billed_until: Option<f64>,
}

struct Inst {
    view: InstanceView,
    /// Reached running once (its address is known, so it is in the synchronous set).
    has_addr: bool,
    /// The acknowledged position it holds.
    pos: f64,
}

struct Cl {
    intent: ClusterIntent,
    acked: f64,
    first_up: Option<f64>,
    down_since: Option<f64>,
    up_secs: f64,
    watched_secs: f64,
    outages: Vec<f64>,
    lost_commits: f64,
    /// The next primary restores from object storage.
    restoring: bool,
}

/// Money spent, USD.
#[derive(Debug, Default, Clone)]
pub(crate) struct Spend {
    pub spot: f64,
    pub on_demand: f64,
    pub disks: f64,
    pub storage: f64,
    pub traffic: f64,
}

struct Cell<'a> {
    cfg: &'a SimConfig,
    cal: &'a Calibration,
    policy: Policy,
    region: &'a SimRegion,
    market: &'a SpotMarket,
    pool_ids: Vec<PoolId>,
    now: f64,
    end: f64,
    hosts: BTreeMap<String, Host>,
    insts: BTreeMap<String, Inst>,
    clusters: Vec<Cl>,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    next_id: u64,
    /// Each pool's record, as the control plane keeps it: preemption times and the last
    /// refused launch.
    pool_events: BTreeMap<String, PoolRecord>,
    spend: Spend,
    timeline: Option<Vec<(f64, String, String)>>,
    events: BTreeMap<String, u64>,
    /// The planner's last event about each cluster (why a cluster is down, at the end).
    last_event: BTreeMap<String, String>,
}

#[derive(Default)]
struct PoolRecord {
    preemptions: Vec<i64>,
    last_no_capacity: Option<i64>,
}

fn ms(t: f64) -> u64 {
    (t * 1000.0).max(0.0) as u64
}

impl<'a> Cell<'a> {
    fn schedule(&mut self, at: f64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((ms(at), self.seq, ev)));
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:08}", self.next_id)
    }

    fn primary_up(&self, c: &ClusterIntent) -> bool {
        self.insts.values().any(|i| {
            let v = &i.view;
            v.cluster_id == c.id
                && !v.deleting
                && v.role == Role::Primary
                && v.observed == Observed::Running
                && v.in_recovery == Some(false)
                && !v.draining
                && self.hosts.get(&v.host_id).is_some_and(|h| h.alive)
        })
    }

    /// The cluster acknowledges commits: its primary is up and, if it has a synchronous
    /// set, one of the set streams.
    fn writable(&self, c: &ClusterIntent) -> bool {
        if !self.primary_up(c) {
            return false;
        }
        let sync: Vec<&Inst> = self
            .insts
            .values()
            .filter(|i| i.view.cluster_id == c.id && !i.view.deleting && i.view.role == Role::Standby && i.has_addr)
            .collect();
        sync.is_empty() || sync.iter().any(|s| s.view.streaming == Some(true))
    }

    /// Standbys stream while they run on a live host and their primary is up; the primary
    /// names its synchronous set.
    fn refresh(&mut self) {
        let up: BTreeMap<String, bool> = self
            .clusters
            .iter()
            .map(|c| (c.intent.id.clone(), self.primary_up(&c.intent)))
            .collect();
        let alive: BTreeMap<String, bool> = self.hosts.iter().map(|(k, h)| (k.clone(), h.alive)).collect();
        let acked: BTreeMap<String, f64> = self.clusters.iter().map(|c| (c.intent.id.clone(), c.acked)).collect();
        let terms: BTreeMap<String, i64> = self
            .clusters
            .iter()
            .map(|c| (c.intent.id.clone(), c.intent.term))
            .collect();
        let mut sync: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // A streaming standby in the set carries commits (the simulator has no catch-up).
        let mut carrying: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in self.insts.values_mut() {
            let v = &mut i.view;
            if !alive.get(&v.host_id).copied().unwrap_or(false) {
                continue; // Nobody reports for a dead host.
            }
            if v.role == Role::Standby && v.observed == Observed::Running {
                // A standby runs the desired state's term (the agent follows it).
                v.term = terms[&v.cluster_id];
                let s = up.get(&v.cluster_id).copied().unwrap_or(false) && !v.deleting;
                v.streaming = Some(s);
                if s {
                    i.pos = acked[&v.cluster_id];
                }
                v.lsn = Some((i.pos * 1000.0) as u64);
            }
            if v.role == Role::Standby && !v.deleting && i.has_addr {
                sync.entry(v.cluster_id.clone()).or_default().push(v.id.clone());
                if v.streaming == Some(true) {
                    carrying.entry(v.cluster_id.clone()).or_default().push(v.id.clone());
                }
            }
        }
        for i in self.insts.values_mut() {
            if i.view.role == Role::Primary && alive.get(&i.view.host_id).copied().unwrap_or(false) {
                i.view.sync_standbys = sync.get(&i.view.cluster_id).cloned().unwrap_or_default();
                i.view.sync_streaming = carrying.get(&i.view.cluster_id).cloned().unwrap_or_default();
                if i.view.in_recovery == Some(false) {
                    i.pos = acked[&i.view.cluster_id];
                    i.view.lsn = Some((i.pos * 1000.0) as u64);
                }
            }
        }
    }

    /// Moves the clock to `t`: acknowledged positions advance, money is spent.
    fn advance(&mut self, t: f64) {
        let dt = t - self.now;
        if dt <= 0.0 {
            return;
        }
        let writable: Vec<bool> = self.clusters.iter().map(|c| self.writable(&c.intent)).collect();
        for (c, w) in self.clusters.iter_mut().zip(writable) {
            if c.first_up.is_some() {
                c.watched_secs += dt;
                if w {
                    c.up_secs += dt;
                }
            }
            if w {
                c.acked += dt;
                // What is acknowledged is on every streaming standby (the synchronous set).
                for i in self.insts.values_mut() {
                    if i.view.cluster_id == c.intent.id && i.view.streaming == Some(true) {
                        i.pos = c.acked;
                    }
                }
            }
        }
        let at = self.now as u64;
        for h in self.hosts.values() {
            if h.billed_until.is_some_and(|b| b <= self.now) {
                continue;
            }
            let until = h.billed_until.map_or(t, |b| b.min(t));
            let secs = (until - self.now).max(0.0);
            let hours = secs / 3600.0;
            let price = match h.view.market {
                PMarket::Spot => self
                    .market
                    .spot_price(&h.pool, at)
                    .and_then(|d| d.to_f64())
                    .unwrap_or(0.0),
                PMarket::OnDemand => self
                    .market
                    .pool(&h.pool)
                    .and_then(|p| p.on_demand_hour.to_f64())
                    .unwrap_or(0.0),
            };
            match h.view.market {
                PMarket::Spot => self.spend.spot += price * hours,
                PMarket::OnDemand => self.spend.on_demand += price * hours,
            }
            let disk = self.region.pools[0].prices.root_disk_gb_month.to_f64().unwrap_or(0.0);
            self.spend.disks += disk * f64::from(self.cal.root_disk_gb) * secs / crate::MONTH_SECS as f64;
        }
        self.now = t;
    }

    /// Writable or not, after an event: outages begin and end here.
    fn account_outages(&mut self) {
        let writable: Vec<bool> = self.clusters.iter().map(|c| self.writable(&c.intent)).collect();
        for (c, w) in self.clusters.iter_mut().zip(writable) {
            match (w, c.first_up, c.down_since) {
                (true, None, _) => c.first_up = Some(self.now),
                (true, Some(_), Some(since)) => {
                    c.outages.push(self.now - since);
                    c.down_since = None;
                }
                (false, Some(_), None) => c.down_since = Some(self.now),
                _ => {}
            }
        }
    }

    fn world(&self) -> World {
        let now = self.now as i64;
        let pools: Vec<PoolView> = self
            .region
            .pools
            .iter()
            .take(if self.policy.one_pool() { 1 } else { usize::MAX })
            .map(|p| {
                let id = p.pool.id.to_string();
                let record = self.pool_events.get(&id);
                PoolView {
                    preemptions: record.map(|r| r.preemptions.clone()).unwrap_or_default(),
                    last_no_capacity: record.and_then(|r| r.last_no_capacity),
                    cloud: p.pool.id.cloud.clone(),
                    region: p.pool.id.region.clone(),
                    zone: p.pool.id.zone.clone(),
                    spot_price: self.market.spot_price(&p.pool.id, self.now as u64).map_or(0, |d| {
                        (d * rust_decimal::Decimal::from(1_000_000))
                            .to_u64()
                            .unwrap_or(u64::MAX)
                    }),
                    id,
                }
            })
            .collect();
        World {
            now_ms: now * 1000,
            observing_since: 0,
            locations: self.region.locations(),
            clusters: self.clusters.iter().map(|c| c.intent.clone()).collect(),
            hosts: self
                .hosts
                .values()
                // Long-gone hosts matter to no rule.
                .filter(|h| h.alive || h.view.status != HostStatus::Failed || now - h.view.launched_at < 600)
                .map(|h| {
                    let mut v = h.view.clone();
                    v.last_beat_ms = if h.alive { Some(now * 1000) } else { v.last_beat_ms };
                    v.notice = if self.policy.sees_notices() {
                        h.deadline.map(|d| d as i64)
                    } else {
                        None
                    };
                    v
                })
                .collect(),
            instances: self.insts.values().map(|i| i.view.clone()).collect(),
            operations: Vec::new(),
            pools,
            spot: self.policy.planner_policy(&self.cfg.spot),
            // The simulated land's APIs always answer (whole-cloud outages are not simulated).
            unreachable: Default::default(),
            evacuations: Vec::new(),
        }
    }

    fn data_mb(&self, cluster: &str) -> f64 {
        let plan = self
            .clusters
            .iter()
            .find(|c| c.intent.id == cluster)
            .map(|c| c.intent.slots)
            .unwrap_or(1);
        let gb = self
            .cfg
            .prices
            .plans
            .values()
            .find(|p| p.slots == plan)
            .map_or(20, |p| p.data_gb);
        f64::from(gb) * 1024.0
    }

    fn note(&mut self, cluster: &str, what: String, market: &str) {
        let first = self.clusters.first().is_some_and(|c| c.intent.id == cluster);
        if let (true, Some(t)) = (first, self.timeline.as_mut()) {
            t.push((self.now, what, market.to_string()));
        }
    }

    fn apply(&mut self, a: &Action) {
        let now = self.now;
        match a {
            Action::LaunchHost {
                cloud,
                region,
                cell,
                market,
                pool,
                disk_bytes,
            } => {
                let id = self.id("h");
                // A spot launch names its pool; an on-demand one goes to the zone with the
                // fewest live hosts.
                let pool_id = match pool.as_deref().and_then(|p| p.parse::<PoolId>().ok()) {
                    Some(p) => p,
                    None => {
                        let counts = |p: &PoolId| self.hosts.values().filter(|h| h.alive && h.pool == *p).count();
                        self.region
                            .pools
                            .iter()
                            .map(|p| p.pool.id.clone())
                            .min_by_key(|p| (counts(p), p.clone()))
                            .unwrap_or_else(|| self.region.pools[0].pool.id.clone())
                    }
                };
                let held = self
                    .hosts
                    .values()
                    .filter(|h| h.alive && h.view.market == PMarket::Spot && h.pool == pool_id)
                    .count() as u32;
                let refused = *market == PMarket::Spot && held >= self.market.capacity(&pool_id, now as u64);
                let view = HostView {
                    id: id.clone(),
                    cloud: cloud.clone(),
                    region: region.clone(),
                    zone: pool_id.zone.clone(),
                    cell: cell.clone(),
                    status: if refused {
                        HostStatus::Failed
                    } else {
                        HostStatus::Launching
                    },
                    launched_at: now as i64,
                    last_beat_ms: None,
                    market: *market,
                    pool: pool_id.to_string(),
                    notice: None,
                    disk_bytes: *disk_bytes,
                };
                if refused {
                    self.pool_events
                        .entry(pool_id.to_string())
                        .or_default()
                        .last_no_capacity = Some(now as i64);
                    *self.events.entry("spot launch refused".into()).or_default() += 1;
                }
                self.hosts.insert(
                    id.clone(),
                    Host {
                        view,
                        alive: !refused,
                        deadline: None,
                        pool: pool_id,
                        billed_until: refused.then_some(now),
                    },
                );
                if !refused {
                    self.schedule(now + self.cal.host_boot_secs, Ev::HostBoot(id));
                }
            }
            Action::AbandonHost { host_id } | Action::ReleaseHost { host_id } => {
                if let Some(h) = self.hosts.get_mut(host_id) {
                    h.view.status = HostStatus::Failed;
                    if h.alive {
                        h.alive = false;
                        h.view.last_beat_ms = Some(now as i64 * 1000);
                    }
                    h.billed_until.get_or_insert(now);
                }
            }
            Action::CreateInstance {
                cluster_id,
                host_id,
                slots,
                role,
            } => {
                let id = self.id("i");
                let term = self
                    .clusters
                    .iter()
                    .find(|c| &c.intent.id == cluster_id)
                    .map_or(1, |c| c.intent.term);
                let restoring = self.clusters.iter().any(|c| &c.intent.id == cluster_id && c.restoring);
                let delay = match role {
                    Role::Primary if restoring => {
                        self.cal.restore_start_secs + self.data_mb(cluster_id) / self.cal.restore_mb_per_sec
                    }
                    Role::Primary => self.cal.instance_create_secs,
                    Role::Standby => {
                        self.cal.standby_start_secs + self.data_mb(cluster_id) / self.cal.standby_copy_mb_per_sec
                    }
                };
                let market = self.hosts.get(host_id).map_or("?", |h| {
                    if h.view.market == PMarket::Spot {
                        "spot"
                    } else {
                        "on-demand"
                    }
                });
                self.note(cluster_id, format!("{id} placed as {role:?} on {host_id}"), market);
                self.insts.insert(
                    id.clone(),
                    Inst {
                        view: InstanceView {
                            id: id.clone(),
                            cluster_id: cluster_id.clone(),
                            host_id: host_id.clone(),
                            slots: *slots,
                            role: *role,
                            deleting: false,
                            observed: Observed::Creating,
                            error: None,
                            in_recovery: None,
                            lsn: None,
                            streaming: None,
                            sync_standbys: vec![],
                            sync_streaming: vec![],
                            term,
                            draining: false,
                            storage: None,
                        },
                        has_addr: false,
                        pos: 0.0,
                    },
                );
                self.schedule(now + delay, Ev::Ready(id));
            }
            Action::DeleteInstance { instance_id } => {
                if let Some(i) = self.insts.get_mut(instance_id) {
                    if !i.view.deleting {
                        i.view.deleting = true;
                        let cluster = i.view.cluster_id.clone();
                        self.note(&cluster, format!("{instance_id} removed"), "");
                        self.schedule(now + self.cal.delete_secs, Ev::DeleteDone(instance_id.clone()));
                    }
                }
            }
            Action::ForgetInstance { instance_id } => {
                self.insts.remove(instance_id);
            }
            Action::RemoveCluster { .. } | Action::CompleteOperation { .. } => {}
            Action::Failover {
                cluster_id,
                term,
                from,
                to,
                ..
            } => {
                let Some(ci) = self
                    .clusters
                    .iter()
                    .position(|c| &c.intent.id == cluster_id && c.intent.term == *term)
                else {
                    return;
                };
                let held = self.insts.get(to).map_or(0.0, |i| i.pos);
                let c = &mut self.clusters[ci];
                if held + 1e-6 < c.acked {
                    c.lost_commits += (c.acked - held) * self.cal.commits_per_sec;
                    c.acked = held;
                }
                c.intent.term += 1;
                c.intent.switchover_to = None;
                let new_term = c.intent.term;
                if let Some(f) = from.as_ref().and_then(|f| self.insts.get_mut(f)) {
                    f.view.deleting = true;
                    let fid = f.view.id.clone();
                    self.schedule(now + self.cal.delete_secs, Ev::DeleteDone(fid));
                }
                if let Some(t) = self.insts.get_mut(to) {
                    t.view.role = Role::Primary;
                    t.view.term = new_term;
                }
                *self.events.entry("failover or switchover".into()).or_default() += 1;
                self.note(cluster_id, format!("{to} promoted (term {new_term})"), "");
                self.schedule(now + self.cal.promote_secs, Ev::PromoteDone(to.clone()));
            }
            Action::RestorePrimary {
                cluster_id, term, from, ..
            } => {
                let Some(c) = self
                    .clusters
                    .iter_mut()
                    .find(|c| &c.intent.id == cluster_id && c.intent.term == *term)
                else {
                    return;
                };
                // Every acknowledged commit is in object storage (durability sync): the
                // restored primary starts from the acknowledged position.
                c.intent.term += 1;
                c.restoring = true;
                if let Some(f) = self.insts.get_mut(from) {
                    f.view.deleting = true;
                }
                *self.events.entry("restored from object storage".into()).or_default() += 1;
                self.note(cluster_id, format!("{from} lost: restoring from object storage"), "");
            }
            Action::Relocate {
                cluster_id,
                cloud,
                region,
                ..
            } => {
                if let Some(c) = self.clusters.iter_mut().find(|c| &c.intent.id == cluster_id) {
                    c.intent.cloud = cloud.clone();
                    c.intent.region = region.clone();
                }
            }
            // The simulator runs no evacuations.
            Action::EvacuationMove { .. } | Action::EvacuationMember { .. } | Action::EvacuationDone { .. } => {}
            Action::Drain { instance_id } => {
                if let Some(i) = self.insts.get_mut(instance_id) {
                    i.view.draining = true;
                }
                let half = self.cal.switchover_secs / 2.0;
                self.schedule(now + half, Ev::DrainDone(instance_id.clone()));
            }
            Action::CancelSwitchover { cluster_id, .. } => {
                for c in self.clusters.iter_mut().filter(|c| &c.intent.id == cluster_id) {
                    c.intent.switchover_to = None;
                }
            }
            Action::ReportProgress { .. } => {}
            Action::Event { kind, cluster_id, .. } => {
                *self.events.entry(kind.clone()).or_default() += 1;
                self.last_event.insert(cluster_id.clone(), kind.clone());
            }
            // The simulator models no storage: agents report none, so these never come.
            Action::GrowDisk {
                cluster_id, disk_bytes, ..
            } => {
                for c in self.clusters.iter_mut().filter(|c| &c.intent.id == cluster_id) {
                    c.intent.disk_bytes = *disk_bytes;
                }
            }
            Action::StorageLevel {
                cluster_id,
                level,
                kind,
                ..
            } => {
                for c in self.clusters.iter_mut().filter(|c| &c.intent.id == cluster_id) {
                    c.intent.storage_level = *level;
                }
                *self.events.entry(kind.clone()).or_default() += 1;
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Tick => {}
            Ev::Market => {
                let t = now as u64;
                for pid in self.pool_ids.clone() {
                    let mut spot: Vec<(String, i64)> = self
                        .hosts
                        .values()
                        .filter(|h| h.alive && h.view.market == PMarket::Spot && h.pool == pid)
                        .map(|h| (h.view.id.clone(), h.view.launched_at))
                        .collect();
                    spot.sort_by_key(|(id, at)| (*at, id.clone()));
                    let victims: Vec<String> = self
                        .market
                        .reclaimed(&pid, t, &spot)
                        .iter()
                        .map(|(id, _)| id.clone())
                        .collect();
                    let notice = self.market.pool(&pid).map_or(30, |p| p.notice_secs) as f64;
                    for v in victims {
                        let h = self.hosts.get_mut(&v).expect("a victim is a host");
                        if h.deadline.is_some() {
                            continue;
                        }
                        h.deadline = Some(now + notice);
                        self.pool_events
                            .entry(pid.to_string())
                            .or_default()
                            .preemptions
                            .push(now as i64);
                        *self.events.entry("spot notice".into()).or_default() += 1;
                        self.schedule(now + notice, Ev::HostDeath(v));
                    }
                }
                if let Some(next) = self.market.next_change_in(&self.pool_ids, t) {
                    self.schedule(next as f64, Ev::Market);
                }
            }
            Ev::HostBoot(id) => {
                if let Some(h) = self.hosts.get_mut(&id) {
                    if h.alive && h.view.status == HostStatus::Launching {
                        h.view.status = HostStatus::Running;
                    }
                }
            }
            Ev::HostDeath(id) => {
                if let Some(h) = self.hosts.get_mut(&id) {
                    if h.alive {
                        h.alive = false;
                        h.view.last_beat_ms = Some(now as i64 * 1000);
                        h.billed_until.get_or_insert(now);
                    }
                }
            }
            Ev::Ready(id) => {
                let Some(i) = self.insts.get(&id) else {
                    return;
                };
                let alive = self.hosts.get(&i.view.host_id).is_some_and(|h| h.alive);
                let cluster = i.view.cluster_id.clone();
                let term = self
                    .clusters
                    .iter()
                    .find(|c| c.intent.id == cluster)
                    .map_or(1, |c| c.intent.term);
                // A standby copies from the primary: no primary, no copy yet (try again).
                let primary_up = self
                    .clusters
                    .iter()
                    .find(|c| c.intent.id == cluster)
                    .is_some_and(|c| self.primary_up(&c.intent));
                let i = self.insts.get_mut(&id).expect("checked above");
                if !alive || i.view.deleting {
                    return;
                }
                if i.view.role == Role::Standby && !primary_up {
                    // No primary to copy from: it waits (see `copy_waiting_standbys`).
                    return;
                }
                i.view.observed = Observed::Running;
                i.has_addr = true;
                i.view.in_recovery = Some(i.view.role == Role::Standby);
                i.view.term = term;
                if i.view.role == Role::Primary {
                    for c in self.clusters.iter_mut().filter(|c| c.intent.id == cluster) {
                        c.restoring = false;
                    }
                    self.copy_waiting_standbys(&cluster);
                }
            }
            Ev::DrainDone(id) => {
                if let Some(i) = self.insts.get_mut(&id) {
                    if self.hosts.get(&i.view.host_id).is_some_and(|h| h.alive) {
                        i.view.observed = Observed::Stopped;
                    }
                }
            }
            Ev::PromoteDone(id) => {
                let term = self.insts.get(&id).map(|i| i.view.term);
                if let Some(i) = self.insts.get_mut(&id) {
                    if self.hosts.get(&i.view.host_id).is_some_and(|h| h.alive) && !i.view.deleting {
                        i.view.in_recovery = Some(false);
                        i.view.streaming = None;
                        i.view.observed = Observed::Running;
                        i.view.term = term.unwrap_or(i.view.term);
                    }
                }
                if let Some(c) = self.insts.get(&id).map(|i| i.view.cluster_id.clone()) {
                    self.copy_waiting_standbys(&c);
                }
            }
            Ev::DeleteDone(id) => {
                if let Some(i) = self.insts.get_mut(&id) {
                    if self.hosts.get(&i.view.host_id).is_some_and(|h| h.alive) {
                        i.view.observed = Observed::Absent;
                        i.view.streaming = None;
                    }
                }
            }
        }
    }

    /// Standbys that waited for a primary to copy from start their copy now.
    fn copy_waiting_standbys(&mut self, cluster: &str) {
        let waiting: Vec<String> = self
            .insts
            .values()
            .filter(|i| i.view.cluster_id == cluster && i.view.role == Role::Standby && !i.view.deleting)
            .filter(|i| i.view.observed == Observed::Creating)
            .map(|i| i.view.id.clone())
            .collect();
        let copy = self.cal.standby_start_secs + self.data_mb(cluster) / self.cal.standby_copy_mb_per_sec;
        for id in waiting {
            self.schedule(self.now + copy, Ev::Ready(id));
        }
    }

    /// Something is in motion: plan every second until it settles.
    fn busy(&self) -> bool {
        self.hosts.values().any(|h| {
            (h.alive && h.view.status == HostStatus::Launching)
                || h.deadline.is_some_and(|_| h.alive)
                || (!h.alive && h.view.status == HostStatus::Running)
        }) || self
            .insts
            .values()
            .any(|i| i.view.deleting || i.view.observed != Observed::Running)
            || self.clusters.iter().any(|c| {
                let live = self
                    .insts
                    .values()
                    .filter(|i| i.view.cluster_id == c.intent.id && !i.view.deleting)
                    .count() as u32;
                live != c.intent.members || !self.writable(&c.intent)
            })
    }

    fn has_fallback(&self) -> bool {
        self.policy != Policy::OnDemand
            && self.insts.values().any(|i| {
                self.hosts
                    .get(&i.view.host_id)
                    .is_some_and(|h| h.view.market == PMarket::OnDemand)
            })
    }

    /// Forgets what no rule looks at any more: hosts gone (and billed) for ten minutes with
    /// nothing on them, and pool records older than a day.
    fn prune(&mut self) {
        let now = self.now;
        let used: std::collections::BTreeSet<String> = self.insts.values().map(|i| i.view.host_id.clone()).collect();
        self.hosts
            .retain(|id, h| h.alive || used.contains(id) || h.billed_until.is_none_or(|b| now - b < 600.0));
        let horizon = now as i64 - 86_400;
        for r in self.pool_events.values_mut() {
            r.preemptions.retain(|at| *at >= horizon);
        }
    }

    /// Plans until the planner has nothing more to do; returns whether it acted.
    fn replan(&mut self) -> bool {
        let mut acted = false;
        for _ in 0..50 {
            self.refresh();
            *self.events.entry("planner rounds".into()).or_default() += 1;
            let actions = plan(&self.world());
            if actions.is_empty() {
                break;
            }
            let only_events = actions.iter().all(|a| matches!(a, Action::Event { .. }));
            for a in &actions {
                self.apply(a);
            }
            if only_events {
                break;
            }
            acted = true;
        }
        self.refresh();
        acted
    }

    fn run(&mut self) {
        self.schedule(0.0, Ev::Market);
        self.schedule(0.0, Ev::Tick);
        // Time-driven rules (silence, retries, back to spot) need the planner now and then:
        // a second after anything happens, backing off while nothing does, every two
        // minutes while a member waits on on-demand, else only on events.
        let mut gap = 1.0f64;
        let mut tick_at = 0.0f64;
        let mut handled = 0u64;
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            let t = at as f64 / 1000.0;
            if t > self.end {
                break;
            }
            handled += 1;
            if handled.is_multiple_of(256) {
                self.prune();
            }
            self.advance(t);
            let was_tick = ev == Ev::Tick;
            self.handle(ev);
            self.refresh();
            self.account_outages();
            let acted = self.replan();
            self.account_outages();
            // Anything that happened (or a plan that acted) may start a timer in the
            // planner: look again in a second; idle looks back off to ten minutes.
            gap = if acted || !was_tick {
                1.0
            } else {
                (gap * 2.0).min(600.0)
            };
            let want = if self.busy() {
                gap
            } else if self.has_fallback() {
                120.0
            } else {
                f64::INFINITY
            };
            if want.is_finite() && (tick_at <= self.now || tick_at > self.now + want) {
                tick_at = self.now + want;
                self.schedule(tick_at, Ev::Tick);
            }
        }
        self.advance(self.end);
        for c in &mut self.clusters {
            if let Some(since) = c.down_since {
                c.outages.push(self.end - since);
            }
        }
    }
}

/// Runs one policy over the whole fleet, cell by cell (in parallel).
pub(crate) fn run_policy(
    cfg: &SimConfig,
    policy: Policy,
    regions: &[SimRegion],
    market: &SpotMarket,
) -> Result<PolicyResult> {
    // Clusters are dealt to regions round-robin, then cut into cells per region.
    let mut by_region: Vec<Vec<u32>> = vec![Vec::new(); regions.len()];
    for n in 0..cfg.clusters {
        by_region[n as usize % regions.len()].push(n);
    }
    let mut jobs: Vec<(usize, Vec<u32>)> = Vec::new();
    for (r, ns) in by_region.iter().enumerate() {
        for chunk in ns.chunks(cfg.cell_size.max(1) as usize) {
            jobs.push((r, chunk.to_vec()));
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(jobs.len().max(1));
    let jobs = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((idx, (r, ns))) = job else {
                    return;
                };
                let out = run_cell(cfg, policy, &regions[r], market, &ns, idx == 0 && cfg.timeline);
                results.lock().unwrap_or_else(|p| p.into_inner()).push((idx, out));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(idx, _)| *idx);
    Ok(PolicyResult::combine(
        cfg,
        policy,
        results.into_iter().map(|(_, r)| r).collect(),
    ))
}

/// What one cell measured.
pub(crate) struct CellResult {
    pub up_secs: f64,
    pub watched_secs: f64,
    pub outages: Vec<f64>,
    pub lost_commits: f64,
    pub spend: Spend,
    pub never_up: u32,
    pub timeline: Option<Vec<(f64, String, String)>>,
    pub events: BTreeMap<String, u64>,
}

fn run_cell(
    cfg: &SimConfig,
    policy: Policy,
    region: &SimRegion,
    market: &SpotMarket,
    ns: &[u32],
    timeline: bool,
) -> CellResult {
    let end = cfg.days * 86_400.0;
    let locations = region.locations();
    let clusters: Vec<Cl> = ns
        .iter()
        .map(|n| {
            let (plan, shape) = cluster_kind(cfg, *n);
            // Homes cycle through the region's clouds; HA clusters spread over them.
            let (cloud, region_name) = locations[*n as usize % locations.len()].clone();
            Cl {
                intent: ClusterIntent {
                    id: format!("c{n:06}"),
                    cloud,
                    region: region_name,
                    // A simulated fleet shard runs on one placement cell.
                    cell: String::new(),
                    slots: highrise_planner::plan_slots(plan).unwrap_or(1),
                    members: shape.members(),
                    term: 1,
                    switchover_to: None,
                    spread_clouds: locations.len() > 1 && shape.members() > 1,
                    spot: policy.spot(),
                    // Single-node clusters are `durability: sync` with backups kept.
                    restorable: shape == Shape::SingleSync || cfg.ha_sync,
                    deleted: false,
                    storage_level: Default::default(),
                    disk_bytes: 0,
                    autoscale_max_bytes: 0,
                    on_cloud_loss: Default::default(),
                    has_backup: shape == Shape::SingleSync || cfg.ha_sync,
                    avoid_cloud: None,
                },
                acked: 0.0,
                first_up: None,
                down_since: None,
                up_secs: 0.0,
                watched_secs: 0.0,
                outages: Vec::new(),
                lost_commits: 0.0,
                restoring: false,
            }
        })
        .collect();
    let mut cell = Cell {
        cfg,
        cal: &cfg.calibration,
        policy,
        region,
        market,
        pool_ids: region.pools.iter().map(|p| p.pool.id.clone()).collect(),
        now: 0.0,
        end,
        hosts: BTreeMap::new(),
        insts: BTreeMap::new(),
        clusters,
        queue: BinaryHeap::new(),
        seq: 0,
        next_id: 0,
        pool_events: BTreeMap::new(),
        spend: Spend::default(),
        timeline: timeline.then(Vec::new),
        events: BTreeMap::new(),
        last_event: BTreeMap::new(),
    };
    cell.run();
    // Object storage and traffic follow the usage model, per cluster-month.
    let months = end / crate::MONTH_SECS as f64;
    let prices = &region.pools[0].prices;
    for c in &cell.clusters {
        let plan = cfg
            .prices
            .plans
            .values()
            .find(|p| p.slots == c.intent.slots)
            .map_or(20.0, |p| f64::from(p.data_gb));
        let stored = plan * (f64::from(cfg.calibration.backups_kept) + cfg.calibration.wal_per_month_x_data);
        cell.spend.storage += stored * prices.object_storage_gb_month.to_f64().unwrap_or(0.0) * months;
        let standbys = f64::from(c.intent.members.saturating_sub(1));
        cell.spend.traffic += plan
            * cfg.calibration.wal_per_month_x_data
            * standbys
            * prices.cross_zone_gb.to_f64().unwrap_or(0.0)
            * months;
    }
    // Clusters down for the last day of the run, by the planner's last word on them.
    for c in &cell.clusters {
        let down_long = c.down_since.is_some_and(|d| end - d > 86_400.0) || c.first_up.is_none();
        if down_long {
            let why = cell
                .last_event
                .get(&c.intent.id)
                .cloned()
                .unwrap_or_else(|| "no event".into());
            let members = c.intent.members;
            *cell
                .events
                .entry(format!("down at the end ({members} members): {why}"))
                .or_default() += 1;
        }
    }
    CellResult {
        up_secs: cell.clusters.iter().map(|c| c.up_secs).sum(),
        watched_secs: cell.clusters.iter().map(|c| c.watched_secs).sum(),
        outages: cell.clusters.iter().flat_map(|c| c.outages.iter().copied()).collect(),
        lost_commits: cell.clusters.iter().map(|c| c.lost_commits).sum(),
        spend: cell.spend.clone(),
        never_up: cell.clusters.iter().filter(|c| c.first_up.is_none()).count() as u32,
        timeline: cell.timeline.take(),
        events: cell.events.clone(),
    }
}
