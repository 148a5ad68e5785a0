//! Losing a whole cloud: when a cloud counts as dark, what a cluster that lived only there
//! does, and how waiting for an unreachable cloud is explained.

use super::*;
use crate::clouds::{dark, refuge, CloudLoss, Unreachable, DARK_MS};

const NOW: i64 = 1_000_000;

fn in_cloud(h: HostView, cloud: &str) -> HostView {
    HostView {
        cloud: cloud.into(),
        ..h
    }
}

fn api_down_since(since_ms: i64) -> Unreachable {
    Unreachable {
        since_ms,
        error: "cloud a is down".into(),
    }
}

/// A single-node cluster whose primary ran on `h1` in cloud `a`; `h1` is given up, `h2`
/// in cloud `b` beats; cloud `a`'s API has failed for `failing_ms`.
fn lost_world(failing_ms: i64) -> World {
    World {
        now_ms: NOW,
        locations: vec![("a".into(), "r1".into()), ("b".into(), "r1".into())],
        clusters: vec![ClusterIntent {
            has_backup: true,
            avoid_cloud: None,
            ..cluster("c", 1)
        }],
        hosts: vec![
            host("h1", HostStatus::Failed),
            in_cloud(
                HostView {
                    last_beat_ms: Some(NOW),
                    ..host("h2", HostStatus::Running)
                },
                "b",
            ),
        ],
        instances: vec![InstanceView {
            lsn: Some(500),
            in_recovery: Some(false),
            ..instance("p", "c", "h1", Observed::Running)
        }],
        unreachable: [("a".to_string(), api_down_since(NOW - failing_ms))].into(),
        ..Default::default()
    }
}

fn events<'a>(p: &'a [Action], want: &str) -> Vec<&'a str> {
    p.iter()
        .filter_map(|a| match a {
            Action::Event { kind, message, .. } if kind == want => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cloud_is_dark_only_when_its_api_has_failed_for_a_while_and_no_host_of_it_beats() {
    let table = [
        // (API failing for, a host of the cloud still beats, dark)
        (DARK_MS, false, true),
        (DARK_MS - 1, false, false),
        (DARK_MS * 10, true, false),
    ];
    for (failing, beating, want) in table {
        let mut w = lost_world(failing);
        if beating {
            w.hosts.push(HostView {
                last_beat_ms: Some(NOW),
                ..host("h3", HostStatus::Running)
            });
        }
        assert_eq!(dark(&w, "a"), want, "failing {failing} ms, beating {beating}");
    }
    // A cloud whose API answers is never dark, however silent its hosts.
    let mut w = lost_world(DARK_MS);
    w.unreachable.clear();
    assert!(!dark(&w, "a"));
}

#[test]
fn a_cluster_that_lived_only_in_a_dark_cloud_is_restored_in_a_surviving_one() {
    let mut world = lost_world(DARK_MS);
    let p = plan(&world);
    assert!(
        p.contains(&Action::RestorePrimary {
            cluster_id: "c".into(),
            term: 1,
            from: "p".into(),
            cloud_lost: Some("a".into()),
        }),
        "{p:?}"
    );
    // Then it moves home to b, and its new primary is placed there; cloud a stays silent.
    for _ in 0..6 {
        let p = plan(&world);
        apply(&mut world, &p);
        for h in world.hosts.iter_mut().filter(|h| h.cloud == "b") {
            h.status = HostStatus::Running;
            h.last_beat_ms = Some(NOW);
        }
        for i in world.instances.iter_mut() {
            i.observed = if i.deleting {
                Observed::Absent
            } else {
                Observed::Running
            };
            i.lsn = Some(600);
            i.in_recovery = Some(i.role == Role::Standby);
            i.term = 2;
        }
    }
    let c = &world.clusters[0];
    assert_eq!((c.cloud.as_str(), c.term), ("b", 2), "{world:?}");
    let live: Vec<&InstanceView> = world.instances.iter().filter(|i| !i.deleting).collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!((live[0].host_id.as_str(), live[0].role), ("h2", Role::Primary));
    assert!(plan(&world).is_empty(), "settled: {:?}", plan(&world));
}

#[test]
fn the_relocation_says_where_and_keeps_the_endpoint() {
    let mut world = lost_world(DARK_MS);
    world.instances.clear();
    world.clusters[0].term = 2;
    let p = plan(&world);
    let moved: Vec<_> = p
        .iter()
        .filter_map(|a| match a {
            Action::Relocate {
                cloud, region, message, ..
            } => Some((cloud.as_str(), region.as_str(), message.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(moved.len(), 1, "{p:?}");
    assert_eq!((moved[0].0, moved[0].1), ("b", "r1"));
    assert!(
        moved[0].2.contains("cloud a is dark") && moved[0].2.contains("endpoint"),
        "{}",
        moved[0].2
    );
}

#[test]
fn nothing_is_restored_elsewhere_before_the_cloud_counts_as_dark() {
    let p = plan(&lost_world(DARK_MS - 1));
    assert!(!p.iter().any(|a| matches!(a, Action::RestorePrimary { .. })), "{p:?}");
    assert_eq!(events(&p, "primary_lost").len(), 1, "{p:?}");
}

#[test]
fn under_wait_or_without_a_backup_or_a_refuge_the_cluster_waits_and_says_why() {
    type Change = fn(&mut World);
    let cases: [(&str, Change); 3] = [
        ("on-cloud-loss is wait", |w| {
            w.clusters[0].on_cloud_loss = CloudLoss::Wait
        }),
        ("no complete base backup", |w| w.clusters[0].has_backup = false),
        ("no other cloud of the land is reachable", |w| {
            w.unreachable.insert("b".into(), api_down_since(NOW));
        }),
    ];
    for (why, change) in cases {
        let mut w = lost_world(DARK_MS);
        change(&mut w);
        let p = plan(&w);
        assert!(
            !p.iter().any(|a| matches!(a, Action::RestorePrimary { .. })),
            "{why}: {p:?}"
        );
        let said = events(&p, "cloud_lost");
        assert!(said.len() == 1 && said[0].contains(why), "{why}: {p:?}");
    }
}

#[test]
fn a_durable_cluster_already_restoring_in_a_dark_cloud_moves_out_unless_it_waits() {
    // The restore began in cloud a before a counted as dark: nothing of the cluster is
    // left anywhere, and its new primary cannot be launched there.
    let mut w = lost_world(DARK_MS);
    w.instances.clear();
    w.clusters[0].restorable = true;
    w.clusters[0].term = 2;
    assert!(plan(&w).iter().any(|a| matches!(a, Action::Relocate { .. })));
    w.clusters[0].on_cloud_loss = CloudLoss::Wait;
    let p = plan(&w);
    assert!(!p.iter().any(|a| matches!(a, Action::Relocate { .. })), "{p:?}");
    assert_eq!(events(&p, "cloud_lost").len(), 1, "{p:?}");
}

#[test]
fn an_ha_cluster_with_a_standby_elsewhere_fails_over_instead_of_restoring() {
    let mut w = lost_world(DARK_MS);
    w.clusters[0].members = 2;
    w.clusters[0].spread_clouds = true;
    w.instances[0].sync_standbys = vec!["s".into()];
    w.instances.push(InstanceView {
        role: Role::Standby,
        lsn: Some(500),
        in_recovery: Some(true),
        streaming: Some(false),
        ..instance("s", "c", "h2", Observed::Running)
    });
    let p = plan(&w);
    assert_eq!(failovers(&p), vec![("s".to_string(), 1)], "{p:?}");
    assert!(
        !p.iter()
            .any(|a| matches!(a, Action::RestorePrimary { .. } | Action::Relocate { .. })),
        "{p:?}"
    );
}

#[test]
fn a_create_aimed_at_an_unreachable_cloud_says_so_and_is_not_moved() {
    let w = World {
        now_ms: NOW,
        locations: vec![("a".into(), "r1".into()), ("b".into(), "r1".into())],
        clusters: vec![cluster("c", 1)],
        operations: vec![OperationView {
            id: "op".into(),
            cluster_id: "c".into(),
            kind: OperationKind::CreateCluster,
            progress: None,
        }],
        unreachable: [("a".to_string(), api_down_since(NOW - DARK_MS * 10))].into(),
        ..Default::default()
    };
    let p = plan(&w);
    let progress = p.iter().find_map(|a| match a {
        Action::ReportProgress { progress, .. } => Some(progress.doing.clone()),
        _ => None,
    });
    assert!(
        progress
            .as_deref()
            .is_some_and(|d| d.contains("waiting for cloud a") && d.contains("cloud a is down")),
        "{p:?}"
    );
    assert_eq!(events(&p, "cloud_unreachable").len(), 1, "{p:?}");
    assert!(!p.iter().any(|a| matches!(a, Action::Relocate { .. })), "{p:?}");
    // The cloud answers again: the operation's status says it moved on.
    let mut back = w.clone();
    back.unreachable.clear();
    back.operations[0].progress = Some(moves::Progress {
        step: 1,
        steps: 1,
        doing: progress.unwrap_or_default(),
    });
    let p = plan(&back);
    assert!(
        p.iter()
            .any(|a| matches!(a, Action::ReportProgress { progress, .. } if progress.doing == "placing the members")),
        "{p:?}"
    );
    assert!(events(&p, "cloud_unreachable").is_empty(), "{p:?}");
}

#[test]
fn the_refuge_is_a_reachable_other_cloud_in_a_region_of_the_same_name_first() {
    let mut w = World {
        locations: vec![
            ("a".into(), "r1".into()),
            ("b".into(), "r0".into()),
            ("b".into(), "r1".into()),
            ("c".into(), "r1".into()),
        ],
        ..Default::default()
    };
    let c = cluster("x", 1);
    assert_eq!(refuge(&w, &c), Some(("b".into(), "r1".into())));
    w.unreachable.insert("b".into(), api_down_since(0));
    assert_eq!(refuge(&w, &c), Some(("c".into(), "r1".into())));
    w.unreachable.insert("c".into(), api_down_since(0));
    assert_eq!(refuge(&w, &c), None);
}

#[test]
fn a_move_to_an_unreachable_cloud_says_so_in_its_step() {
    let mut w = lost_world(DARK_MS);
    // The cluster runs in b and is moving to a, whose API does not answer.
    w.hosts[1].status = HostStatus::Running;
    w.instances[0].host_id = "h2".into();
    w.operations.push(OperationView {
        id: "mv".into(),
        cluster_id: "c".into(),
        kind: OperationKind::MoveCluster,
        progress: None,
    });
    let p = plan(&w);
    let step = p.iter().find_map(|a| match a {
        Action::ReportProgress { progress, .. } => Some(progress.doing.clone()),
        _ => None,
    });
    assert!(step.is_some_and(|d| d.contains("waiting for cloud a")), "{p:?}");
    assert_eq!(events(&p, "cloud_unreachable").len(), 1, "{p:?}");
}

#[test]
fn a_dark_clouds_silent_hosts_are_given_up_at_once() {
    let mut w = lost_world(DARK_MS);
    // h1 still counts as running, silent for 2 s (well short of HOST_LOST_MS).
    w.hosts[0] = HostView {
        last_beat_ms: Some(NOW - 2_000),
        ..host("h1", HostStatus::Running)
    };
    let given_up = |p: &[Action]| p.contains(&Action::AbandonHost { host_id: "h1".into() });
    assert!(given_up(&plan(&w)), "{:?}", plan(&w));
    // The same silence in a cloud whose API answers is not enough yet.
    w.unreachable.clear();
    assert!(!given_up(&plan(&w)), "{:?}", plan(&w));
}
