//! Evacuating a cloud: every cluster moved off it, a few at a time.
//!
//! An evacuation lists the clusters that were in its cloud when it began, in order. Each
//! is `waiting`, `moving` (its move operation runs), `moved`, `failed` (its move failed or
//! was cancelled, with why) or `staying` (it must stay, with why: its org's bill holds it
//! to clouds the evacuation cannot take it to, see [`Hold`]). While
//! the evacuation runs — not paused — waiting clusters start moving in order as long as
//! fewer than its concurrency are moving; a pause starts no new move and lets running
//! ones finish. A spread cluster moves like any other and then keeps out of the evacuated
//! cloud ([`crate::ClusterIntent::avoid_cloud`]). It is finished when nothing waits or moves. Everything it knows lives in
//! the metadata store, so a control plane restarted midway carries on where it was.

use crate::{clouds, Action, ClusterIntent, World};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Waiting,
    Moving,
    Moved,
    Failed,
    Staying,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Waiting => "waiting",
            MemberState::Moving => "moving",
            MemberState::Moved => "moved",
            MemberState::Failed => "failed",
            MemberState::Staying => "staying",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => MemberState::Waiting,
            "moving" => MemberState::Moving,
            "moved" => MemberState::Moved,
            "failed" => MemberState::Failed,
            "staying" => MemberState::Staying,
            _ => return None,
        })
    }
}

/// How a member's move operation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveOutcome {
    Running,
    Succeeded,
    /// Failed or cancelled, with why.
    Ended(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub cluster_id: String,
    pub state: MemberState,
    /// The member's move operation, once started (`None`: not started, or its record is
    /// gone).
    pub outcome: Option<MoveOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evacuation {
    pub id: String,
    pub cloud: String,
    /// Where the clusters go; the first other cloud that answers (a region of the same
    /// name first) when `None`.
    pub to: Option<String>,
    pub concurrency: u32,
    pub paused: bool,
    /// In the order they move.
    pub members: Vec<Member>,
    /// Members that may run on some clouds only (by cluster id): an org that pays through
    /// a cloud's marketplace keeps its clusters on that cloud.
    #[serde(default)]
    pub holds: BTreeMap<String, Hold>,
}

/// The clouds a cluster may run on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub clouds: Vec<String>,
    pub why: String,
}

/// The cluster has something in `cloud`: its home (where its primary belongs), or a live
/// member on a host there (a spread cluster's standby).
pub fn in_cloud(world: &World, c: &ClusterIntent, cloud: &str) -> bool {
    c.cloud == cloud
        || world
            .instances
            .iter()
            .filter(|i| i.cluster_id == c.id && !i.deleting)
            .any(|i| world.hosts.iter().any(|h| h.id == i.host_id && h.cloud == cloud))
}

/// Where a cluster of `e` goes: a cluster whose home is elsewhere (a spread cluster with
/// a standby in the evacuated cloud) stays home; else `e.to` (its region of the cluster's
/// region's name, else its first), or the first other reachable cloud — of the clouds it
/// is held to, if it is ([`Hold`]). `Ok(None)`: nowhere to go right now (it waits);
/// `Err(why)`: it must stay.
pub fn destination(world: &World, e: &Evacuation, c: &ClusterIntent) -> Result<Option<(String, String)>, String> {
    if c.cloud != e.cloud {
        return Ok(Some((c.cloud.clone(), c.region.clone())));
    }
    let hold = e.holds.get(&c.id);
    let allowed = |cloud: &str| hold.is_none_or(|h| h.clouds.iter().any(|k| k == cloud));
    if let Some(h) = hold {
        let to_allowed = match &e.to {
            Some(to) => allowed(to),
            None => world.locations.iter().any(|(k, _)| k != &e.cloud && allowed(k)),
        };
        if !to_allowed {
            return Err(h.why.clone());
        }
    }
    Ok(match &e.to {
        Some(to) => world
            .locations
            .iter()
            .find(|(cloud, region)| cloud == to && region == &c.region)
            .or_else(|| world.locations.iter().find(|(cloud, _)| cloud == to))
            .cloned(),
        None => clouds::refuge_within(world, c, allowed),
    })
}

/// The next steps of every evacuation in the world.
pub fn plan(world: &World) -> Vec<Action> {
    world.evacuations.iter().flat_map(|e| plan_one(world, e)).collect()
}

fn plan_one(world: &World, e: &Evacuation) -> Vec<Action> {
    let mut actions = Vec::new();
    let settle = |cluster_id: &str, state: MemberState, why: Option<String>| Action::EvacuationMember {
        evacuation_id: e.id.clone(),
        cluster_id: cluster_id.to_string(),
        state,
        why,
    };
    let mut moving = 0u32;
    let mut open = 0usize;
    for m in &e.members {
        let cluster = world.clusters.iter().find(|c| c.id == m.cluster_id && !c.deleted);
        match m.state {
            MemberState::Moving => match (&m.outcome, cluster) {
                (Some(MoveOutcome::Succeeded), _) => actions.push(settle(&m.cluster_id, MemberState::Moved, None)),
                (Some(MoveOutcome::Ended(why)), _) => {
                    actions.push(settle(&m.cluster_id, MemberState::Failed, Some(why.clone())))
                }
                (_, None) => actions.push(settle(
                    &m.cluster_id,
                    MemberState::Failed,
                    Some("the cluster was deleted".into()),
                )),
                (Some(MoveOutcome::Running), Some(_)) => {
                    moving += 1;
                    open += 1;
                }
                (None, Some(_)) => actions.push(settle(
                    &m.cluster_id,
                    MemberState::Failed,
                    Some("its move operation is gone".into()),
                )),
            },
            MemberState::Waiting => open += 1,
            _ => {}
        }
    }
    // New moves, in order, up to the concurrency.
    for m in e.members.iter().filter(|m| m.state == MemberState::Waiting) {
        let Some(c) = world.clusters.iter().find(|c| c.id == m.cluster_id && !c.deleted) else {
            actions.push(settle(
                &m.cluster_id,
                MemberState::Failed,
                Some("the cluster was deleted".into()),
            ));
            open -= 1;
            continue;
        };
        if !in_cloud(world, c, &e.cloud) {
            // Moved meanwhile (by its tenant, or restored elsewhere after a loss).
            actions.push(settle(&m.cluster_id, MemberState::Moved, None));
            open -= 1;
            continue;
        }
        if e.paused || moving >= e.concurrency {
            continue;
        }
        let moving_now = world
            .operations
            .iter()
            .any(|o| o.cluster_id == c.id && o.kind == crate::OperationKind::MoveCluster);
        if moving_now {
            // Its tenant moves it already: wait for that to end.
            continue;
        }
        match destination(world, e, c) {
            Err(why) => {
                actions.push(settle(&m.cluster_id, MemberState::Staying, Some(why)));
                open -= 1;
            }
            Ok(Some((cloud, region))) => {
                actions.push(Action::EvacuationMove {
                    evacuation_id: e.id.clone(),
                    cluster_id: c.id.clone(),
                    cloud,
                    region,
                    from: e.cloud.clone(),
                });
                moving += 1;
            }
            Ok(None) => {
                // No cloud to go to right now: it waits, and the evacuation with it.
            }
        }
    }
    if open == 0 {
        actions.push(Action::EvacuationDone {
            evacuation_id: e.id.clone(),
        });
    }
    actions
}
