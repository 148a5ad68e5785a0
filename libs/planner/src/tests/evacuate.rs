//! Evacuating a cloud: order, concurrency, pause, outcomes, spread clusters.

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
            holds: Default::default(),
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
fn deleted_and_already_moved_clusters_are_settled_without_a_move() {
    let mut w = evac_world(2, 4);
    w.clusters[0].deleted = true;
    w.clusters[1].cloud = "b".into();
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
            ("c0".to_string(), MemberState::Failed),
            ("c1".to_string(), MemberState::Moved)
        ]
    );
    assert!(done(&p), "nothing left to move: {p:?}");
}

#[test]
fn spread_clusters_move_off_the_cloud_whether_it_holds_their_primary_or_a_standby() {
    let mut w = evac_world(3, 4);
    for c in &mut w.clusters {
        c.spread_clouds = true;
        c.members = 2;
    }
    let mut hb = host("hb", HostStatus::Running);
    hb.cloud = "b".into();
    w.hosts = vec![host("ha", HostStatus::Running), hb];
    // c0: home a, standby in b. c1: home b, standby in a. c2: home b, nothing in a.
    w.clusters[1].cloud = "b".into();
    w.clusters[2].cloud = "b".into();
    w.instances = vec![
        instance("c0p", "c0", "ha", Observed::Running),
        instance("c0s", "c0", "hb", Observed::Running),
        instance("c1p", "c1", "hb", Observed::Running),
        instance("c1s", "c1", "ha", Observed::Running),
        instance("c2p", "c2", "hb", Observed::Running),
    ];
    let p = plan(&w);
    let moves: Vec<(String, String, String)> = p
        .iter()
        .filter_map(|a| match a {
            Action::EvacuationMove {
                cluster_id,
                cloud,
                from,
                ..
            } => Some((cluster_id.clone(), cloud.clone(), from.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("c0".to_string(), "b".to_string(), "a".to_string()),
            ("c1".to_string(), "b".to_string(), "a".to_string())
        ],
        "the home-a cluster moves to b, the home-b one stays home, both keep out of a: {p:?}"
    );
    assert!(p.contains(&Action::EvacuationMember {
        evacuation_id: "ev".into(),
        cluster_id: "c2".into(),
        state: MemberState::Moved,
        why: None,
    }));
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

#[test]
fn a_held_cluster_moves_only_to_a_cloud_it_is_held_to_or_stays_with_why() {
    use crate::evacuate::Hold;
    // Clouds a and c are one real cloud (its marketplace's), b another.
    let mut w = evac_world(3, 3);
    w.locations.push(("c".into(), "r1".into()));
    let hold = |clouds: &[&str]| Hold {
        clouds: clouds.iter().map(|c| c.to_string()).collect(),
        why: "its org pays through the X Marketplace".into(),
    };
    w.evacuations[0].holds.insert("c0".into(), hold(&["a", "c"]));
    w.evacuations[0].holds.insert("c1".into(), hold(&["a"]));
    let moves = |p: &[Action]| -> Vec<(String, String)> {
        p.iter()
            .filter_map(|a| match a {
                Action::EvacuationMove { cluster_id, cloud, .. } => Some((cluster_id.clone(), cloud.clone())),
                _ => None,
            })
            .collect()
    };
    let p = plan(&w);
    // c0 goes to the other cloud it may run on; c2, free, to the first other cloud.
    assert_eq!(moves(&p), [("c0".into(), "c".into()), ("c2".into(), "b".into())]);
    // c1 has nowhere to go: it stays, saying why, and the evacuation does not wait on it.
    let stays = Action::EvacuationMember {
        evacuation_id: "ev".into(),
        cluster_id: "c1".into(),
        state: MemberState::Staying,
        why: Some("its org pays through the X Marketplace".into()),
    };
    assert!(p.contains(&stays), "{p:?}");
    // Its cloud c out of reach: c0 waits (it may go there later), it does not stay.
    w.unreachable.insert(
        "c".into(),
        crate::clouds::Unreachable {
            since_ms: 0,
            error: "timed out".into(),
        },
    );
    let p = plan(&w);
    assert_eq!(moves(&p), [("c2".into(), "b".into())]);
    assert!(!p
        .iter()
        .any(|a| matches!(a, Action::EvacuationMember { cluster_id, .. } if cluster_id == "c0")));
    // Sent to b by name, a held cluster stays.
    w.unreachable.clear();
    w.evacuations[0].to = Some("b".into());
    let p = plan(&w);
    assert_eq!(moves(&p), [("c2".into(), "b".into())]);
    assert!(p.iter().any(|a| matches!(a,
        Action::EvacuationMember { cluster_id, state: MemberState::Staying, .. } if cluster_id == "c0")));
    // Once the held ones stay and the free one moved, the evacuation is done.
    apply(&mut w, &p);
    w.evacuations[0].members[2].outcome = Some(MoveOutcome::Succeeded);
    assert!(done(&plan(&w)), "{:?}", w.evacuations);
}
