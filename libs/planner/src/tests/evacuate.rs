//! Evacuating a cloud: order, concurrency, pause, outcomes, clusters that stay.

use super::*;
use crate::evacuate::{Evacuation, Member, MemberState, MoveOutcome};

fn evac_world(n: usize, concurrency: u32) -> World {
    World {
        locations: vec![("a".into(), "r1".into()), ("b".into(), "r1".into())],
        clusters: (0..n).map(|i| cluster(&format!("c{i}"), 1)).collect(),
        evacuations: vec![Evacuation {
            id: "ev".into(),
            cloud: "a".into(),
            to: None,
            concurrency,
            paused: false,
            members: (0..n)
                .map(|i| Member {
                    cluster_id: format!("c{i}"),
                    state: MemberState::Waiting,
                    outcome: None,
                })
                .collect(),
        }],
        ..Default::default()
    }
}

fn started(p: &[Action]) -> Vec<String> {
    p.iter()
        .filter_map(|a| match a {
            Action::EvacuationMove { cluster_id, cloud, .. } => {
                assert_eq!(cloud, "b");
                Some(cluster_id.clone())
            }
            _ => None,
        })
        .collect()
}

fn done(p: &[Action]) -> bool {
    p.iter().any(|a| matches!(a, Action::EvacuationDone { .. }))
}

#[test]
fn clusters_move_in_order_a_few_at_a_time_until_none_is_left() {
    let mut w = evac_world(5, 2);
    assert_eq!(started(&plan(&w)), ["c0", "c1"]);
    let p = plan(&w);
    apply(&mut w, &p);
    assert!(started(&plan(&w)).is_empty(), "two move already");
    // c0's move succeeds: c2 starts in its place.
    w.evacuations[0].members[0].outcome = Some(MoveOutcome::Succeeded);
    let p = plan(&w);
    assert!(p.contains(&Action::EvacuationMember {
        evacuation_id: "ev".into(),
        cluster_id: "c0".into(),
        state: MemberState::Moved,
        why: None,
    }));
    assert_eq!(started(&p), ["c2"], "in the same round");
    apply(&mut w, &p);
    assert!(started(&plan(&w)).is_empty(), "c1 and c2 move");
    // Every move ends; the last round settles and finishes.
    for _ in 0..6 {
        for m in &mut w.evacuations[0].members {
            if m.state == MemberState::Moving {
                m.outcome = Some(MoveOutcome::Succeeded);
            }
        }
        let p = plan(&w);
        if done(&p) {
            return;
        }
        apply(&mut w, &p);
    }
    panic!("not finished: {:?}", w.evacuations);
}

#[test]
fn a_paused_evacuation_starts_nothing_and_a_failed_move_is_reported_with_why() {
    let mut w = evac_world(3, 1);
    w.evacuations[0].paused = true;
    assert!(started(&plan(&w)).is_empty());
    w.evacuations[0].paused = false;
    let p = plan(&w);
    apply(&mut w, &p);
    w.evacuations[0].members[0].outcome = Some(MoveOutcome::Ended("cancelled by its tenant".into()));
    let p = plan(&w);
    assert!(p.contains(&Action::EvacuationMember {
        evacuation_id: "ev".into(),
        cluster_id: "c0".into(),
        state: MemberState::Failed,
        why: Some("cancelled by its tenant".into()),
    }));
    assert!(!done(&p));
}

#[test]
fn spread_deleted_and_already_moved_clusters_are_settled_without_a_move() {
    let mut w = evac_world(3, 4);
    w.clusters[0].spread_clouds = true;
    w.clusters[1].deleted = true;
    w.clusters[2].cloud = "b".into();
    let p = plan(&w);
    assert!(started(&p).is_empty(), "{p:?}");
    let states: Vec<(String, MemberState)> = p
        .iter()
        .filter_map(|a| match a {
            Action::EvacuationMember { cluster_id, state, .. } => Some((cluster_id.clone(), *state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            ("c0".to_string(), MemberState::Staying),
            ("c1".to_string(), MemberState::Failed),
            ("c2".to_string(), MemberState::Moved)
        ]
    );
    assert!(done(&p), "nothing left to move: {p:?}");
}

#[test]
fn a_cluster_its_tenant_is_moving_waits_and_no_reachable_cloud_means_waiting() {
    let mut w = evac_world(1, 1);
    w.operations.push(OperationView {
        id: "mv".into(),
        cluster_id: "c0".into(),
        kind: OperationKind::MoveCluster,
        progress: None,
    });
    assert!(started(&plan(&w)).is_empty());
    w.operations.clear();
    w.unreachable.insert(
        "b".into(),
        crate::clouds::Unreachable {
            since_ms: 0,
            error: "down".into(),
        },
    );
    let p = plan(&w);
    assert!(started(&p).is_empty() && !done(&p), "{p:?}");
}
