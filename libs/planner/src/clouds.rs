//! Whole clouds: which ones are unreachable or dark, what a cluster that lived only in a
//! dark cloud does about it, and why work aimed at an unreachable cloud waits.
//!
//! Two signals, judged together: the control plane probes every cloud's API (a failing
//! probe makes the cloud *unreachable*: launches and terminations there cannot work), and
//! the agents beat. A cloud is *dark* when its API has failed for [`DARK_MS`] and none of
//! its hosts has been heard within [`crate::HOST_DEAD_MS`]: a partition of the control
//! plane from one host, or an API hiccup alone, never counts.

use crate::{Action, ClusterIntent, HostStatus, OperationKind, World};
use serde::{Deserialize, Serialize};

/// How long a cloud's API must keep failing before the cloud counts as dark (with every
/// host of it silent).
pub const DARK_MS: i64 = 5_000;

/// What a cluster whose every member was in a cloud that went dark does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudLoss {
    /// Restore it in a surviving cloud from the copy of its backups and WAL there (same
    /// endpoint and credentials; what the copy had not received yet is lost).
    #[default]
    Restore,
    /// Wait for the cloud to come back.
    Wait,
}

impl CloudLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            CloudLoss::Restore => "restore",
            CloudLoss::Wait => "wait",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "restore" => Some(CloudLoss::Restore),
            "wait" => Some(CloudLoss::Wait),
            _ => None,
        }
    }
}

/// A cloud whose API probe fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    /// Since when (unix milliseconds) every probe failed.
    pub since_ms: i64,
    /// The last probe's error.
    pub error: String,
}

/// Why `cloud` cannot be worked with right now, if it cannot.
pub fn unreachable<'a>(world: &'a World, cloud: &str) -> Option<&'a Unreachable> {
    world.unreachable.get(cloud)
}

/// The cloud is dark: its API has failed for [`DARK_MS`] and none of its hosts beats.
pub fn dark(world: &World, cloud: &str) -> bool {
    let Some(u) = unreachable(world, cloud) else {
        return false;
    };
    let heard = world.hosts.iter().any(|h| {
        h.cloud == cloud && h.status == HostStatus::Running && crate::silence_ms(world, h) <= crate::HOST_DEAD_MS
    });
    world.now_ms - u.since_ms >= DARK_MS && !heard
}

/// Where a cluster driven out of its cloud goes: the first reachable location of another
/// cloud, in the land's order, in a region of the same name where that cloud has one.
/// A cloud the cluster was moved off comes last.
pub fn refuge(world: &World, c: &ClusterIntent) -> Option<(String, String)> {
    refuge_within(world, c, |_| true)
}

/// [`refuge`] among the clouds `allowed` takes.
pub fn refuge_within(world: &World, c: &ClusterIntent, allowed: impl Fn(&str) -> bool) -> Option<(String, String)> {
    let open = |cloud: &str, avoided: bool| {
        cloud != c.cloud && allowed(cloud) && unreachable(world, cloud).is_none() && c.avoids(cloud) == avoided
    };
    [false, true].into_iter().find_map(|avoided| {
        world
            .locations
            .iter()
            .find(|(cloud, region)| open(cloud, avoided) && region == &c.region)
            .or_else(|| world.locations.iter().find(|(cloud, _)| open(cloud, avoided)))
            .cloned()
    })
}

/// Clusters that lived only in a dark cloud. One whose lost primary has been taken out
/// for a restore (no member left anywhere) moves home to a surviving cloud, where the
/// restore then happens; under `wait`, or with no surviving cloud, an event says what
/// the cluster waits for. A cluster still being created is not moved: its tenant chose
/// the cloud (see [`waiting`]).
pub fn plan_loss(world: &World) -> Vec<Action> {
    let mut actions = Vec::new();
    for c in world.clusters.iter().filter(|c| !c.deleted) {
        if !dark(world, &c.cloud) {
            continue;
        }
        let members: Vec<_> = world
            .instances
            .iter()
            .filter(|i| i.cluster_id == c.id && !i.deleting)
            .collect();
        if !members.is_empty() {
            // A member elsewhere took over (failover), or the lost primary waits for a
            // decision in `plan_failover`.
            continue;
        }
        let creating = world
            .operations
            .iter()
            .any(|o| o.cluster_id == c.id && o.kind == OperationKind::CreateCluster);
        if creating {
            continue;
        }
        match (c.on_cloud_loss, refuge(world, c)) {
            (CloudLoss::Restore, Some((cloud, region))) => actions.push(Action::Relocate {
                cluster_id: c.id.clone(),
                message: format!(
                    "cloud {} is dark (its API fails and its hosts are silent): the cluster moves to {cloud}/{region} \
                     and its primary restores there from the copy of its backups and WAL; the endpoint and \
                     credentials stay",
                    c.cloud
                ),
                cloud,
                region,
            }),
            (CloudLoss::Restore, None) => actions.push(Action::Event {
                cluster_id: c.id.clone(),
                kind: "cloud_lost".into(),
                message: format!(
                    "cloud {} is dark and no other cloud of the land is reachable: the cluster waits for one",
                    c.cloud
                ),
            }),
            (CloudLoss::Wait, _) => actions.push(Action::Event {
                cluster_id: c.id.clone(),
                kind: "cloud_lost".into(),
                message: format!(
                    "cloud {} is dark; on-cloud-loss is wait, so the cluster waits for the cloud to come back \
                     (`highrise cluster update NAME --on-cloud-loss restore` restores it in a surviving cloud)",
                    c.cloud
                ),
            }),
        }
    }
    actions
}

/// Operations that wait for a member in an unreachable cloud: an event names the cloud
/// and the provider's error, so a create, a restore or a move aimed at a cloud that is
/// down says why it waits. The message for the operation's own status.
pub fn waiting(world: &World, c: &ClusterIntent) -> Option<String> {
    let u = unreachable(world, &c.cloud)?;
    let placed = world
        .instances
        .iter()
        .filter(|i| i.cluster_id == c.id && !i.deleting)
        .filter(|i| {
            world
                .hosts
                .iter()
                .any(|h| h.id == i.host_id && h.cloud == c.cloud && h.region == c.region)
        })
        .count() as u32;
    (placed < c.members).then(|| {
        format!(
            "waiting for cloud {}: its API does not answer ({}), so no host can be launched there",
            c.cloud, u.error
        )
    })
}
