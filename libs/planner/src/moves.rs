//! Moves and resizes as the tenant watches them: which step one is at.
//!
//! A move (another cloud or region), a resize (another plan) and storage autoscaling all
//! replace misplaced members ([`crate::spot::leaving`]) and switch the primary over. Their
//! operation reports one of [`STEPS`] steps, read off the cluster's members; the control
//! plane stores it with the operation when it changes, and `--wait` shows it.

use crate::spot;
use crate::{ClusterIntent, HostView, InstanceView, Observed, Role};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Build the new members, let them catch up, switch over, retire the old members.
pub const STEPS: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 1 to [`STEPS`].
    pub step: u32,
    pub steps: u32,
    /// What the step is doing, for a person.
    pub doing: String,
}

/// Where the move of `c` (already changed to its new place and plan) stands, from its
/// members (`instances`: every member, leaving ones too).
pub fn progress(c: &ClusterIntent, instances: &[&InstanceView], hosts: &BTreeMap<&str, &HostView>) -> Progress {
    let live: Vec<&InstanceView> = instances.iter().filter(|i| !i.deleting).copied().collect();
    let leaving = spot::leaving(c, &live, hosts);
    let placed: Vec<&InstanceView> = live
        .iter()
        .filter(|i| !leaving.contains_key(i.id.as_str()))
        .copied()
        .collect();
    let at = |step: u32, doing: String| Progress {
        step,
        steps: STEPS,
        doing,
    };
    if placed.iter().any(|i| i.role == Role::Primary) {
        let old = instances.len() - placed.len();
        return at(
            4,
            if old == 0 {
                "done".into()
            } else {
                format!("retiring {old} old member{}", if old == 1 { "" } else { "s" })
            },
        );
    }
    if c.switchover_to.is_some() || live.iter().any(|i| i.role == Role::Primary && i.draining) {
        return at(3, "switching the primary over to a new member".into());
    }
    let want = c.members as usize;
    let running: Vec<&InstanceView> = placed
        .iter()
        .filter(|i| i.observed == Observed::Running)
        .copied()
        .collect();
    if running.len() < want {
        return at(1, format!("building new members ({} of {want} running)", running.len()));
    }
    let streaming = running.iter().filter(|i| i.streaming == Some(true)).count();
    if streaming < running.len() {
        return at(
            2,
            format!("new members catching up ({streaming} of {} streaming)", running.len()),
        );
    }
    at(3, "switching the primary over to a new member".into())
}
