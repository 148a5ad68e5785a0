//! Spot policy: where a spot cluster's members go and which must leave.
//!
//! Members of a spot cluster go to distinct spot pools, preferring zones (and clouds, for a
//! spread cluster) they are not in yet, then the cheapest pool weighted by its recent
//! preemptions. A pool that preempted too often lately, or refused a launch for lack of
//! capacity a moment ago, is not used; when no pool is usable the member falls back to
//! on-demand, and returns to spot (by the same replace-then-switchover path, one member
//! at a time) once some pool has been calm for [`SpotPolicy::stable_secs`].
//!
//! A member whose host has a spot notice is *leaving*: a replacement is placed at once, a
//! leaving primary is switched over to an in-sync standby, and a leaving standby is
//! dropped when its replacement streams. The record of each pool (preemptions, refused
//! launches) is kept in state by the control plane; this module only reads it.

use crate::{ClusterIntent, HostView, InstanceView, Market, Observed, Role, World};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The knobs of the spot policy (short in tests, long in production).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpotPolicy {
    /// Preemptions are counted over this window.
    pub volatile_window_secs: i64,
    /// A pool with this many preemptions within the window is not used.
    pub volatile_preemptions: usize,
    /// A pool that refused a spot launch for lack of capacity is not tried for this long.
    pub no_capacity_backoff_secs: i64,
    /// A fallback member returns to spot once a pool has been calm (no preemption, no
    /// refused launch) this long.
    pub stable_secs: i64,
    /// Members go to distinct pools, new zones first. Off only for the simulator's naive
    /// baseline (everything in the cheapest pool).
    pub spread: bool,
    /// No usable pool: place on on-demand. Off only for the simulator's baselines that
    /// wait for spot capacity instead.
    pub fallback: bool,
}

impl Default for SpotPolicy {
    fn default() -> Self {
        SpotPolicy {
            volatile_window_secs: 6 * 3600,
            volatile_preemptions: 3,
            no_capacity_backoff_secs: 300,
            stable_secs: 1800,
            spread: true,
            fallback: true,
        }
    }
}

/// A spot pool as the control plane knows it: its price and its recent record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    /// `cloud/region/zone/instance-type`, as hosts report theirs.
    pub id: String,
    pub cloud: String,
    pub region: String,
    pub zone: String,
    /// Spot price in micro-dollars per hour.
    pub spot_price: u64,
    /// When hosts of this pool got spot notices (or died of preemption), recent first or not.
    pub preemptions: Vec<i64>,
    /// When a spot launch here last failed for lack of capacity.
    pub last_no_capacity: Option<i64>,
}

fn recent_preemptions(world: &World, p: &PoolView, window: i64) -> usize {
    p.preemptions.iter().filter(|t| world.now() - **t < window).count()
}

/// The pool may take a new spot member now.
pub fn usable(world: &World, p: &PoolView) -> bool {
    let pol = &world.spot;
    let refused = p
        .last_no_capacity
        .is_some_and(|t| world.now() - t < pol.no_capacity_backoff_secs);
    !refused && recent_preemptions(world, p, pol.volatile_window_secs) < pol.volatile_preemptions
}

/// The pool has been calm long enough for a fallback member to return to it.
pub fn stable(world: &World, p: &PoolView) -> bool {
    let pol = &world.spot;
    usable(world, p)
        && p.last_no_capacity.is_none_or(|t| world.now() - t >= pol.stable_secs)
        && recent_preemptions(world, p, pol.stable_secs) == 0
}

/// What a member's placement must avoid or prefers to avoid.
pub struct Taken<'a> {
    pub pools: BTreeSet<&'a str>,
    pub zones: BTreeSet<&'a str>,
    pub clouds: BTreeSet<&'a str>,
}

/// Usable pools for a new member in `allowed` locations, best first: a zone, then a cloud,
/// the cluster is not in yet; then price weighted by recent preemptions; then id.
pub fn ranked<'w>(world: &'w World, allowed: &[(&str, &str)], taken: &Taken<'_>) -> Vec<&'w PoolView> {
    let window = world.spot.volatile_window_secs;
    let spread = world.spot.spread;
    let mut pools: Vec<&PoolView> = world
        .pools
        .iter()
        .filter(|p| allowed.contains(&(p.cloud.as_str(), p.region.as_str())))
        .filter(|p| !spread || !taken.pools.contains(p.id.as_str()))
        .filter(|p| usable(world, p))
        .collect();
    pools.sort_by_key(|p| {
        (
            spread && taken.zones.contains(p.zone.as_str()),
            spread && taken.clouds.contains(p.cloud.as_str()),
            u128::from(p.spot_price) * (1 + recent_preemptions(world, p, window) as u128),
            p.id.clone(),
        )
    });
    pools
}

/// Why a member of `c` must leave, if it must: its host has a notice; it is misplaced — its
/// host's disk is smaller than the cluster now needs (storage autoscaling), it is outside
/// the cluster's cloud and region (a move) or in the cloud a spread cluster was moved off, or of another size than the plan (a resize);
/// or it is one of the members beyond `c.members` (on-demand fallbacks of a spot cluster
/// first, standbys before the primary; then the newest standbys).
pub fn leaving<'w>(
    c: &ClusterIntent,
    live: &[&'w InstanceView],
    hosts: &BTreeMap<&str, &HostView>,
) -> BTreeMap<&'w str, Leaving> {
    let mut out = BTreeMap::new();
    let noticed = |i: &InstanceView| hosts.get(i.host_id.as_str()).is_some_and(|h| h.notice.is_some());
    for i in live.iter().filter(|i| noticed(i)) {
        out.insert(i.id.as_str(), Leaving::Notice);
    }
    let misplaced = |i: &InstanceView| -> Option<Leaving> {
        let h = hosts.get(i.host_id.as_str())?;
        let avoided = c.avoids(&h.cloud);
        if avoided || (!c.spread_clouds && (h.cloud != c.cloud || h.region != c.region)) {
            Some(Leaving::Elsewhere)
        } else if i.slots != c.slots {
            Some(Leaving::Resize)
        } else if !crate::disk_fits(c, h) {
            Some(Leaving::SmallDisk)
        } else {
            None
        }
    };
    for i in live.iter().filter(|i| !noticed(i)) {
        if let Some(why) = misplaced(i) {
            out.insert(i.id.as_str(), why);
        }
    }
    let staying: Vec<&&InstanceView> = live.iter().filter(|i| !noticed(i) && misplaced(i).is_none()).collect();
    let excess = staying.len().saturating_sub(c.members as usize);
    if excess == 0 {
        return out;
    }
    let on_demand = |i: &InstanceView| {
        c.spot
            && hosts
                .get(i.host_id.as_str())
                .is_some_and(|h| h.market == Market::OnDemand)
    };
    let mut order: Vec<&&InstanceView> = staying.clone();
    // On-demand members of a spot cluster first, standbys before the primary, newest first.
    order.sort_by_key(|i| (!on_demand(i), i.role == Role::Primary, std::cmp::Reverse(i.id.clone())));
    for i in order.into_iter().take(excess) {
        // A plain cluster's primary never goes as excess (lowered replicas drop standbys).
        if i.role == Role::Primary && !on_demand(i) {
            continue;
        }
        let why = if on_demand(i) {
            Leaving::BackToSpot
        } else {
            Leaving::Excess
        };
        out.insert(i.id.as_str(), why);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// Its host has a spot notice.
    Notice,
    /// An on-demand fallback whose spot replacement has been placed.
    BackToSpot,
    /// Beyond the cluster's member count.
    Excess,
    /// Its host's disk is smaller than the cluster now needs (storage autoscaling): like
    /// a return to spot, replaced first, a primary by a switchover once the set settled.
    SmallDisk,
    /// Outside the cluster's cloud and region (the cluster is moving): the same way.
    Elsewhere,
    /// Of another size than the cluster's plan (a resize): the same way.
    Resize,
}

impl Leaving {
    /// Misplaced members leave by replace-then-switchover, never in a hurry.
    pub fn misplaced(self) -> bool {
        matches!(self, Leaving::SmallDisk | Leaving::Elsewhere | Leaving::Resize)
    }
}

/// Standbys that can take over and carry the commits: running, streaming, not leaving,
/// and counted by the primary's PostgreSQL toward its synchronous commits (a standby that
/// streams but still catches up is not yet: removing the one it replaces then would make
/// commits wait for it).
pub fn ready_standbys(live: &[&InstanceView], leaving: &BTreeMap<&str, Leaving>) -> usize {
    let carrying: Vec<&str> = live
        .iter()
        .filter(|i| i.role == Role::Primary)
        .flat_map(|p| p.sync_streaming.iter().map(String::as_str))
        .collect();
    live.iter()
        .filter(|i| !leaving.contains_key(i.id.as_str()))
        .filter(|i| i.role == Role::Standby && i.observed == Observed::Running && i.streaming == Some(true))
        .filter(|i| carrying.contains(&i.id.as_str()))
        .count()
}
