//! Spot policy: table cases and properties over worlds with notices and vanishing capacity.

use super::*;

const T: &str = "t";

fn pool(zone: &str, price: u64) -> PoolView {
    PoolView {
        id: format!("a/r1/{zone}/{T}"),
        cloud: "a".into(),
        region: "r1".into(),
        zone: zone.into(),
        spot_price: price,
        preemptions: vec![],
        last_no_capacity: None,
    }
}

fn spot_host(id: &str, zone: &str) -> HostView {
    HostView {
        zone: zone.into(),
        market: Market::Spot,
        pool: format!("a/r1/{zone}/{T}"),
        launched_at: 990,
        last_beat_ms: Some(1_000_000),
        ..host(id, HostStatus::Running)
    }
}

fn spot_cluster(members: u32) -> ClusterIntent {
    ClusterIntent {
        members,
        spot: true,
        ..cluster("c", 1)
    }
}

fn spot_world(members: u32) -> World {
    World {
        now_ms: 1_000_000,
        clusters: vec![spot_cluster(members)],
        pools: vec![pool("z1", 100), pool("z2", 200), pool("z3", 300)],
        ..Default::default()
    }
}

fn member(id: &str, host: &str, role: Role) -> InstanceView {
    InstanceView {
        role,
        in_recovery: Some(role == Role::Standby),
        streaming: (role == Role::Standby).then_some(true),
        lsn: Some(100),
        ..instance(id, "c", host, Observed::Running)
    }
}

/// Primary `p` on `hp` (z1) with standby `s` on `hs` (z2), in sync, and a free spot host
/// `h3` in z3.
fn ha_spot_world() -> World {
    let mut w = spot_world(2);
    w.hosts = vec![spot_host("hp", "z1"), spot_host("hs", "z2"), spot_host("h3", "z3")];
    let mut p = member("p", "hp", Role::Primary);
    p.sync_standbys = vec!["s".into()];
    p.sync_streaming = vec!["s".into()];
    w.instances = vec![p, member("s", "hs", Role::Standby)];
    w
}

fn launches(p: &[Action]) -> Vec<(Market, Option<String>)> {
    p.iter()
        .filter_map(|a| match a {
            Action::LaunchHost { market, pool, .. } => Some((*market, pool.clone())),
            _ => None,
        })
        .collect()
}

fn created(p: &[Action]) -> Vec<(String, Role)> {
    p.iter()
        .filter_map(|a| match a {
            Action::CreateInstance { host_id, role, .. } => Some((host_id.clone(), *role)),
            _ => None,
        })
        .collect()
}

fn deleted(p: &[Action]) -> Vec<String> {
    p.iter()
        .filter_map(|a| match a {
            Action::DeleteInstance { instance_id } => Some(instance_id.clone()),
            _ => None,
        })
        .collect()
}

fn events(p: &[Action]) -> Vec<String> {
    p.iter()
        .filter_map(|a| match a {
            Action::Event { kind, .. } => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn members_launch_into_distinct_pools_cheapest_first_in_new_zones() {
    let p = plan(&spot_world(2));
    assert_eq!(
        launches(&p),
        vec![
            (Market::Spot, Some("a/r1/z1/t".into())),
            (Market::Spot, Some("a/r1/z2/t".into()))
        ]
    );
    // A third member goes to the third zone even though it is the dearest pool.
    let p = plan(&spot_world(3));
    assert_eq!(launches(&p).len(), 3);
    assert_eq!(launches(&p)[2].1.as_deref(), Some("a/r1/z3/t"));
}

#[test]
fn a_spot_host_in_a_pool_the_cluster_is_in_is_not_used_for_another_member() {
    let mut w = spot_world(2);
    w.hosts = vec![
        spot_host("h1", "z1"),
        spot_host("h2", "z1"),
        host("od", HostStatus::Running),
    ];
    let p = plan(&w);
    assert_eq!(created(&p), vec![("h1".into(), Role::Primary)]);
    assert_eq!(launches(&p), vec![(Market::Spot, Some("a/r1/z2/t".into()))]);
}

#[test]
fn volatile_and_refusing_pools_are_skipped() {
    let mut w = spot_world(1);
    w.pools[0].preemptions = vec![900, 950, 990];
    w.pools[1].last_no_capacity = Some(990);
    assert_eq!(launches(&plan(&w)), vec![(Market::Spot, Some("a/r1/z3/t".into()))]);
    // Old trouble is forgotten.
    w.now_ms = (1000 + w.spot.volatile_window_secs) * 1000;
    assert_eq!(launches(&plan(&w)), vec![(Market::Spot, Some("a/r1/z1/t".into()))]);
}

#[test]
fn without_a_usable_pool_a_member_falls_back_to_on_demand_and_says_so() {
    let mut w = spot_world(1);
    for p in &mut w.pools {
        p.last_no_capacity = Some(995);
    }
    let p = plan(&w);
    assert_eq!(launches(&p), vec![(Market::OnDemand, None)]);
    assert!(events(&p).contains(&"spot_fallback".to_string()), "{p:?}");
    w.hosts = vec![HostView {
        last_beat_ms: Some(1_000_000),
        ..host("od", HostStatus::Running)
    }];
    let p = plan(&w);
    assert_eq!(created(&p), vec![("od".into(), Role::Primary)]);
}

#[test]
fn a_notice_on_the_primary_switches_over_at_once_and_places_a_replacement_elsewhere() {
    let mut w = ha_spot_world();
    w.hosts[0].notice = Some(1010);
    let p = plan(&w);
    assert!(
        p.contains(&Action::Drain {
            instance_id: "p".into()
        }),
        "{p:?}"
    );
    assert_eq!(created(&p), vec![("h3".into(), Role::Standby)]);
    assert!(deleted(&p).is_empty(), "{p:?}");
    // The drained primary stops, the standby reports its final position: it is promoted.
    w.instances[0].draining = true;
    w.instances[0].observed = Observed::Stopped;
    w.instances[1].streaming = Some(false);
    let p = plan(&w);
    assert!(
        p.iter()
            .any(|a| matches!(a, Action::Failover { to, from: Some(f), .. } if to == "s" && f == "p")),
        "{p:?}"
    );
}

#[test]
fn a_notice_on_a_standby_builds_the_replacement_before_dropping_it() {
    let mut w = ha_spot_world();
    w.hosts[1].notice = Some(1010);
    let p = plan(&w);
    assert_eq!(created(&p), vec![("h3".into(), Role::Standby)]);
    assert!(deleted(&p).is_empty(), "dropped before the replacement streams: {p:?}");
    assert!(!p.iter().any(|a| matches!(a, Action::Drain { .. })), "{p:?}");
    // The replacement comes up but does not stream yet: the doomed standby stays.
    let mut r = member("r", "h3", Role::Standby);
    r.streaming = Some(false);
    w.instances.push(r);
    assert!(deleted(&plan(&w)).is_empty());
    // It streams, but the primary's PostgreSQL does not count it yet (still catching up):
    // dropping the doomed one now would make every commit wait for it.
    w.instances[2].streaming = Some(true);
    w.instances[0].sync_standbys = vec!["r".into(), "s".into()];
    assert!(deleted(&plan(&w)).is_empty(), "{:?}", plan(&w));
    w.instances[0].sync_streaming = vec!["r".into(), "s".into()];
    assert_eq!(deleted(&plan(&w)), vec!["s".to_string()]);
}

#[test]
fn a_single_node_spot_cluster_migrates_on_notice() {
    let mut w = spot_world(1);
    w.hosts = vec![spot_host("hp", "z1"), spot_host("h2", "z2")];
    w.instances = vec![member("p", "hp", Role::Primary)];
    w.hosts[0].notice = Some(1030);
    let p = plan(&w);
    assert_eq!(created(&p), vec![("h2".into(), Role::Standby)]);
    let mut r = member("r", "h2", Role::Standby);
    r.streaming = Some(false);
    w.instances.push(r);
    assert!(!plan(&w).iter().any(|a| matches!(a, Action::Drain { .. })));
    w.instances[1].streaming = Some(true);
    w.instances[0].sync_standbys = vec!["r".into()];
    let p = plan(&w);
    assert!(
        p.contains(&Action::Drain {
            instance_id: "p".into()
        }),
        "{p:?}"
    );
    assert!(deleted(&p).is_empty(), "{p:?}");
}

#[test]
fn a_fallback_member_returns_to_spot_once_a_pool_has_been_calm() {
    let mut w = spot_world(2);
    w.hosts = vec![
        spot_host("hp", "z1"),
        host("od", HostStatus::Running),
        spot_host("h2", "z2"),
    ];
    w.hosts[1].zone = "z2".into();
    w.hosts[1].last_beat_ms = Some(1_000_000);
    let mut p = member("p", "hp", Role::Primary);
    p.sync_standbys = vec!["s".into()];
    p.sync_streaming = vec!["s".into()];
    w.instances = vec![p, member("s", "od", Role::Standby)];
    for pl in &mut w.pools {
        pl.preemptions = vec![1000 - w.spot.stable_secs + 10];
    }
    assert!(plan(&w).is_empty(), "moved before the pools calmed: {:?}", plan(&w));
    w.now_ms += 10000;
    w.hosts.iter_mut().for_each(|h| h.last_beat_ms = Some(w.now_ms));
    let p = plan(&w);
    assert_eq!(created(&p), vec![("h2".into(), Role::Standby)]);
    assert!(events(&p).contains(&"spot_replacement".to_string()));
    assert!(deleted(&p).is_empty());
    // The spot member streams and carries commits: the on-demand one goes.
    w.instances.push(member("r", "h2", Role::Standby));
    assert!(deleted(&plan(&w)).is_empty(), "before it carries commits");
    w.instances[0].sync_streaming = vec!["r".into(), "s".into()];
    assert_eq!(deleted(&plan(&w)), vec!["s".to_string()]);
}

#[test]
fn an_on_demand_primary_returns_to_spot_by_switchover() {
    let mut w = spot_world(2);
    w.hosts = vec![
        host("od", HostStatus::Running),
        spot_host("h1", "z1"),
        spot_host("h2", "z2"),
    ];
    w.hosts[0].last_beat_ms = Some(1_000_000);
    let mut p = member("p", "od", Role::Primary);
    p.sync_standbys = vec!["s".into(), "r".into()];
    p.sync_streaming = vec!["r".into(), "s".into()];
    w.instances = vec![p, member("s", "h1", Role::Standby), member("r", "h2", Role::Standby)];
    // Not while the synchronous set changes: a member still being removed, or a standby
    // not yet streaming, holds the switchover back (a return to spot is never urgent).
    let mut busy = w.clone();
    let mut old = member("old", "h2", Role::Standby);
    old.deleting = true;
    busy.instances.push(old);
    assert!(
        !plan(&busy).iter().any(|a| matches!(a, Action::Drain { .. })),
        "{:?}",
        plan(&busy)
    );
    let mut copying = w.clone();
    copying.instances[2].streaming = Some(false);
    assert!(!plan(&copying).iter().any(|a| matches!(a, Action::Drain { .. })));
    let p = plan(&w);
    assert!(
        p.contains(&Action::Drain {
            instance_id: "p".into()
        }),
        "{p:?}"
    );
    assert!(deleted(&p).is_empty());
}

#[test]
fn a_host_whose_notice_ran_out_is_given_up_once_it_goes_quiet() {
    let mut w = ha_spot_world();
    w.hosts[1].notice = Some(1000);
    w.now_ms = 1_001_000;
    assert!(!plan(&w).contains(&Action::AbandonHost { host_id: "hs".into() }));
    w.now_ms = 1_000_000 + HOST_DEAD_MS + 1000;
    w.hosts
        .iter_mut()
        .filter(|h| h.id != "hs")
        .for_each(|h| h.last_beat_ms = Some(w.now_ms));
    assert!(plan(&w).contains(&Action::AbandonHost { host_id: "hs".into() }));
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Agents and the land for spot worlds: hosts register; a new standby streams one round
/// after it starts and carries commits one round later; a draining primary stops and its standbys report final positions; a
/// host whose notice ran out dies (stops beating, its members gone with it).
fn observe_spot(world: &mut World) {
    let now = world.now();
    for h in world.hosts.iter_mut() {
        if h.status == HostStatus::Launching {
            h.status = HostStatus::Running;
        }
        let dead = h.notice.is_some_and(|d| now > d);
        if !dead && h.status == HostStatus::Running {
            h.last_beat_ms = Some(now * 1000);
        }
    }
    let dead: BTreeSet<String> = world
        .hosts
        .iter()
        .filter(|h| h.notice.is_some_and(|d| now > d) || h.status == HostStatus::Failed)
        .map(|h| h.id.clone())
        .collect();
    let terms: BTreeMap<String, i64> = world.clusters.iter().map(|c| (c.id.clone(), c.term)).collect();
    let before = world.instances.clone();
    for i in world.instances.iter_mut() {
        if dead.contains(&i.host_id) {
            continue; // Nobody reports for a dead host.
        }
        let primary = before
            .iter()
            .find(|p| p.cluster_id == i.cluster_id && !p.deleting && p.role == Role::Primary);
        let primary_up = primary.is_some_and(|p| !p.draining && !dead.contains(&p.host_id));
        let was_running = i.observed == Observed::Running;
        i.observed = if i.deleting {
            Observed::Absent
        } else if i.role == Role::Primary && i.draining {
            Observed::Stopped
        } else {
            Observed::Running
        };
        i.in_recovery = Some(i.role == Role::Standby);
        i.streaming = (i.role == Role::Standby).then_some(primary_up && was_running);
        i.lsn = Some(100);
        i.term = terms.get(&i.cluster_id).copied().unwrap_or(1);
        if i.role == Role::Primary {
            i.sync_standbys = before
                .iter()
                .filter(|s| s.cluster_id == i.cluster_id && !s.deleting && s.role == Role::Standby)
                .filter(|s| s.observed == Observed::Running)
                .map(|s| s.id.clone())
                .collect();
            // A named standby that streamed a round ago has caught up: it carries commits.
            let named = i.sync_standbys.clone();
            i.sync_streaming = before
                .iter()
                .filter(|s| s.cluster_id == i.cluster_id && s.streaming == Some(true) && named.contains(&s.id))
                .map(|s| s.id.clone())
                .collect();
        }
    }
}

/// Copies of the cluster's data that exist: its running primary and streaming standbys,
/// not on dead hosts, not being removed.
fn copies(world: &World, cluster: &str) -> usize {
    world
        .instances
        .iter()
        .filter(|i| i.cluster_id == cluster && !i.deleting)
        .filter(|i| {
            world
                .hosts
                .iter()
                .any(|h| h.id == i.host_id && h.notice.is_none_or(|d| world.now() <= d))
        })
        .filter(|i| (i.role == Role::Primary && i.observed == Observed::Running) || i.streaming == Some(true))
        .count()
}

fn arb_spot_world() -> impl Strategy<Value = (World, Vec<(usize, usize)>)> {
    let clusters = proptest::collection::vec(1u32..=3, 1..5);
    // (round, host index) at which a spot notice is posted: one at a time (rounds apart
    // by more than a notice lasts), at any moment of the cluster's life.
    let notices = proptest::collection::vec((0usize..3, 0usize..8), 0..5).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(k, (jitter, host))| (3 + 10 * k + jitter, host))
            .collect::<Vec<_>>()
    });
    let zones = 2usize..=4;
    (clusters, notices, zones).prop_map(|(cs, notices, zones)| {
        let world = World {
            now_ms: 1_000_000,
            observing_since: 0,
            locations: vec![("a".into(), "r1".into())],
            clusters: cs
                .iter()
                .enumerate()
                .map(|(n, m)| ClusterIntent {
                    id: format!("c{n}"),
                    members: *m,
                    spot: true,
                    ..cluster("c", 1)
                })
                .collect(),
            pools: (1..=zones).map(|z| pool(&format!("z{z}"), 100 * z as u64)).collect(),
            ..Default::default()
        };
        (world, notices)
    })
}

proptest! {
    /// Spot clusters under random notices (each 8 rounds long, one at a time): every notice is acted on
    /// before its host dies (no member of a cluster is left only on doomed hosts), no plan
    /// ever leaves a cluster without a copy of its data, and once calm, members sit in
    /// distinct pools while the land has enough of them.
    #[test]
    fn every_notice_is_acted_on_before_the_host_dies_and_no_copy_is_dropped_early(
        (mut world, notices) in arb_spot_world()
    ) {
        for round in 0..60 {
            world.now_ms += 1000;
            for (at, idx) in &notices {
                if *at == round {
                    let spot_hosts: Vec<usize> = (0..world.hosts.len())
                        .filter(|i| world.hosts[*i].market == Market::Spot && world.hosts[*i].notice.is_none())
                        .collect();
                    if !spot_hosts.is_empty() {
                        let h = spot_hosts[idx % spot_hosts.len()];
                        world.hosts[h].notice = Some(world.now() + 8);
                        let pool = world.hosts[h].pool.clone();
                        let now = world.now();
                        for p in world.pools.iter_mut().filter(|p| p.id == pool) {
                            p.preemptions.push(now);
                        }
                    }
                }
            }
            let had: BTreeMap<String, usize> =
                world.clusters.iter().map(|c| (c.id.clone(), copies(&world, &c.id))).collect();
            let p = plan(&world);
            apply(&mut world, &p);
            for c in &world.clusters {
                if had[&c.id] > 0 {
                    prop_assert!(copies(&world, &c.id) > 0, "round {round}: plan {p:?} dropped the last copy of {}", c.id);
                }
            }
            // A host at its deadline serves no primary: each was switched over (a single
            // node: migrated) in time.
            for h in world.hosts.iter().filter(|h| h.notice == Some(world.now())) {
                for i in world.instances.iter().filter(|i| i.host_id == h.id && !i.deleting && i.role == Role::Primary) {
                    prop_assert!(
                        i.draining || i.observed == Observed::Stopped,
                        "round {round}: primary {} still serving on dying host {}", i.id, h.id
                    );
                }
            }
            observe_spot(&mut world);
        }
        // Calm: after the last notice, every cluster is whole, in distinct pools.
        for c in &world.clusters {
            let live: Vec<&InstanceView> =
                world.instances.iter().filter(|i| i.cluster_id == c.id && !i.deleting).collect();
            prop_assert_eq!(live.len() as u32, c.members, "{} not whole: {:?}", c.id, live);
            let pools: BTreeSet<&str> = live
                .iter()
                .filter_map(|i| world.hosts.iter().find(|h| h.id == i.host_id))
                .map(|h| h.pool.as_str())
                .collect();
            prop_assert!(
                pools.len() == live.len() || live.len() > world.pools.len(),
                "{} has two members in one pool: {:?}", c.id, pools
            );
        }
    }
}

#[test]
fn storage_autoscaling_moves_a_single_node_to_a_larger_disk_by_switchover() {
    use crate::storage::{Level, Reading, Report};
    const MIB: u64 = 1024 * 1024;
    let mut w = World {
        now_ms: 1_000_000,
        locations: vec![("a".into(), "r1".into())],
        clusters: vec![ClusterIntent {
            autoscale_max_bytes: 1024 * MIB,
            ..cluster("c", 1)
        }],
        hosts: vec![HostView {
            disk_bytes: Some(300 * MIB),
            ..host("small", HostStatus::Running)
        }],
        ..Default::default()
    };
    let mut p = member("p", "small", Role::Primary);
    p.cluster_id = "c".into();
    p.storage = Some(Report {
        reading: Reading {
            used_bytes: 180 * MIB,
            plan_bytes: 10 * 1024 * MIB,
            disk_total_bytes: 300 * MIB,
            disk_free_bytes: 90 * MIB,
            reserve_bytes: 32 * MIB,
        },
        level: Level::Normal,
    });
    w.instances = vec![p];
    // A host without a disk of its own (a shared file system) never grows.
    let mut shared = w.clone();
    shared.hosts[0].disk_bytes = None;
    assert!(!plan(&shared).iter().any(|a| matches!(a, Action::GrowDisk { .. })));
    let mut grown = 0;
    for round in 0..30 {
        observe_spot(&mut w);
        // The old primary goes only once another member is the primary.
        let old_gone = w.instances.iter().any(|i| i.id == "p" && i.deleting);
        let other_primary = w.instances.iter().any(|i| i.id != "p" && i.role == Role::Primary);
        assert!(!old_gone || other_primary, "round {round}: {:?}", w.instances);
        let p = plan(&w);
        grown += p.iter().filter(|a| matches!(a, Action::GrowDisk { .. })).count();
        for a in &p {
            if let Action::LaunchHost { disk_bytes, .. } = a {
                assert_eq!(*disk_bytes, Some(600 * MIB), "launched with the doubled disk");
            }
        }
        apply(&mut w, &p);
        w.now_ms += 1000;
    }
    assert_eq!(grown, 1, "one decision to grow");
    assert_eq!(w.clusters[0].disk_bytes, 600 * MIB);
    let live: Vec<&InstanceView> = w.instances.iter().filter(|i| !i.deleting).collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].role, Role::Primary);
    assert_ne!(live[0].host_id, "small");
    let host = w.hosts.iter().find(|h| h.id == live[0].host_id).unwrap();
    assert_eq!(host.disk_bytes, Some(600 * MIB));
    assert_eq!(w.clusters[0].term, 2, "moved by one switchover");
}

#[test]
fn a_cluster_moved_to_another_cloud_and_resized_goes_member_by_member_with_one_switchover() {
    let mut w = World {
        now_ms: 1_000_000,
        locations: vec![("a".into(), "r1".into()), ("b".into(), "r1".into())],
        clusters: vec![ClusterIntent {
            members: 2,
            ..cluster("c", 1)
        }],
        hosts: vec![host("a1", HostStatus::Running), host("a2", HostStatus::Running)],
        ..Default::default()
    };
    w.hosts[1].zone = "z2".into();
    let mut p = member("p", "a1", Role::Primary);
    p.cluster_id = "c".into();
    let mut s = member("s", "a2", Role::Standby);
    s.cluster_id = "c".into();
    w.instances = vec![p, s];
    // Moved to cloud b and resized to 2 slots at once.
    w.clusters[0].cloud = "b".into();
    w.clusters[0].slots = 2;
    w.operations = vec![OperationView {
        id: "op".into(),
        cluster_id: "c".into(),
        kind: OperationKind::MoveCluster,
        progress: None,
    }];
    let (mut done, mut steps) = (false, Vec::new());
    for round in 0..40 {
        observe_spot(&mut w);
        let live = w.instances.iter().filter(|i| !i.deleting).count();
        assert!(
            live >= 2,
            "round {round}: fewer members than asked for: {:?}",
            w.instances
        );
        let p = plan(&w);
        done |= p.contains(&Action::CompleteOperation {
            operation_id: "op".into(),
            outcome: Outcome::Succeeded,
        });
        for a in &p {
            if let Action::ReportProgress { progress, .. } = a {
                steps.push(progress.step);
            }
        }
        apply(&mut w, &p);
        w.now_ms += 1000;
    }
    assert!(done, "the move completed");
    // Reported step by step, never back.
    assert!(steps.windows(2).all(|s| s[0] <= s[1]), "{steps:?}");
    for step in [1, 3, 4] {
        assert!(steps.contains(&step), "step {step} reported: {steps:?}");
    }
    let live: Vec<&InstanceView> = w.instances.iter().filter(|i| !i.deleting).collect();
    assert_eq!(live.len(), 2);
    for i in &live {
        let h = w.hosts.iter().find(|h| h.id == i.host_id).unwrap();
        assert_eq!(h.cloud, "b", "{i:?}");
        assert_eq!(i.slots, 2);
    }
    assert_eq!(w.clusters[0].term, 2, "one switchover");
}

/// Drives the planner with agents that do as told until nothing changes; returns the
/// cluster's live members' clouds (sorted) and whether its move operation completed.
fn run_move(w: &mut World, rounds: usize) -> (Vec<String>, bool) {
    let mut done = false;
    for round in 0..rounds {
        observe_spot(w);
        let want = w.clusters[0].members as usize;
        let live = w.instances.iter().filter(|i| !i.deleting).count();
        assert!(
            live >= want,
            "round {round}: fewer members than asked for: {:?}",
            w.instances
        );
        let p = plan(w);
        done |= p.contains(&Action::CompleteOperation {
            operation_id: "op".into(),
            outcome: Outcome::Succeeded,
        });
        apply(w, &p);
        w.now_ms += 1000;
    }
    let mut clouds: Vec<String> = w
        .instances
        .iter()
        .filter(|i| !i.deleting)
        .map(|i| w.hosts.iter().find(|h| h.id == i.host_id).unwrap().cloud.clone())
        .collect();
    clouds.sort();
    (clouds, done)
}

fn spread_world(clouds: &[&str], members: &[(&str, &str, Role)]) -> World {
    let mut w = World {
        now_ms: 1_000_000,
        locations: clouds.iter().map(|c| (c.to_string(), "r1".to_string())).collect(),
        clusters: vec![ClusterIntent {
            members: members.len() as u32,
            spread_clouds: true,
            ..cluster("c", 1)
        }],
        operations: vec![OperationView {
            id: "op".into(),
            cluster_id: "c".into(),
            kind: OperationKind::MoveCluster,
            progress: None,
        }],
        ..Default::default()
    };
    for (id, cloud, role) in members {
        let mut h = host(&format!("h-{id}"), HostStatus::Running);
        h.cloud = cloud.to_string();
        w.hosts.push(h);
        let mut m = member(id, &format!("h-{id}"), *role);
        m.cluster_id = "c".into();
        w.instances.push(m);
    }
    let standbys: Vec<String> = members
        .iter()
        .filter(|(_, _, r)| *r == Role::Standby)
        .map(|(id, _, _)| id.to_string())
        .collect();
    for i in w.instances.iter_mut().filter(|i| i.role == Role::Primary) {
        i.sync_standbys = standbys.clone();
        i.sync_streaming = standbys.clone();
    }
    w
}

#[test]
fn a_spread_cluster_moved_off_its_cloud_gathers_where_it_may_with_one_switchover() {
    // Two clouds: primary in a, standby in b; moved to b, keeping out of a.
    let mut w = spread_world(&["a", "b"], &[("p", "a", Role::Primary), ("s", "b", Role::Standby)]);
    w.clusters[0].cloud = "b".into();
    w.clusters[0].avoid_cloud = Some("a".into());
    // The standby in b could take over at once, but the primary stays until the new
    // member streams too: commits would otherwise wait for it after the switchover.
    let p = plan(&w);
    assert!(!p.iter().any(|a| matches!(a, Action::Drain { .. })), "{p:?}");
    let (clouds, done) = run_move(&mut w, 40);
    assert!(done, "the move completed");
    assert_eq!(clouds, ["b", "b"]);
    assert_eq!(w.clusters[0].term, 2, "one switchover");
}

#[test]
fn evacuating_a_spread_clusters_standby_cloud_replaces_the_standby_without_a_switchover() {
    // Three clouds; c, holding a standby, is evacuated: the cluster stays home in a.
    let mut w = spread_world(
        &["a", "b", "c"],
        &[
            ("p", "a", Role::Primary),
            ("s1", "b", Role::Standby),
            ("s2", "c", Role::Standby),
        ],
    );
    w.clusters[0].avoid_cloud = Some("c".into());
    let (clouds, done) = run_move(&mut w, 40);
    assert!(done, "the move completed");
    assert_eq!(clouds.len(), 3);
    assert!(!clouds.contains(&"c".to_string()), "{clouds:?}");
    assert!(
        clouds.contains(&"b".to_string()),
        "still spread over what is left: {clouds:?}"
    );
    assert_eq!(w.clusters[0].term, 1, "the primary never moved");
    // A cloud the cluster keeps out of is never its refuge while another is open.
    w.clusters[0].avoid_cloud = Some("b".into());
    assert_eq!(
        crate::clouds::refuge(&w, &w.clusters[0]),
        Some(("c".into(), "r1".into()))
    );
}
