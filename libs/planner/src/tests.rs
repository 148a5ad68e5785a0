//! Planner tests: table cases plus properties over generated worlds. No I/O anywhere.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn cluster(id: &str, slots: u32) -> ClusterIntent {
    ClusterIntent {
        id: id.into(),
        cloud: "a".into(),
        region: "r1".into(),
        cell: String::new(),
        slots,
        members: 1,
        term: 1,
        switchover_to: None,
        spread_clouds: false,
        spot: false,
        restorable: false,
        deleted: false,
        storage_level: Default::default(),
        disk_bytes: 0,
        autoscale_max_bytes: 0,
        on_cloud_loss: Default::default(),
        has_backup: false,
        avoid_cloud: None,
    }
}

fn host(id: &str, status: HostStatus) -> HostView {
    HostView {
        id: id.into(),
        cloud: "a".into(),
        region: "r1".into(),
        zone: "z1".into(),
        cell: String::new(),
        status,
        launched_at: 0,
        last_beat_ms: Some(0),
        market: Market::OnDemand,
        pool: String::new(),
        notice: None,
        disk_bytes: None,
    }
}

fn instance(id: &str, cluster: &str, host: &str, observed: Observed) -> InstanceView {
    InstanceView {
        id: id.into(),
        cluster_id: cluster.into(),
        host_id: host.into(),
        slots: 1,
        role: Role::Primary,
        deleting: false,
        observed,
        error: None,
        in_recovery: None,
        lsn: None,
        streaming: None,
        sync_standbys: vec![],
        sync_streaming: vec![],
        term: 1,
        draining: false,
        storage: None,
    }
}

/// What the executor does, in memory: enough to check that plans converge.
fn apply(world: &mut World, actions: &[Action]) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1000);
    for a in actions {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match a {
            Action::LaunchHost {
                cloud,
                region,
                cell,
                market,
                pool,
                disk_bytes,
            } => world.hosts.push(HostView {
                id: format!("h{n}"),
                cloud: cloud.clone(),
                region: region.clone(),
                cell: cell.clone(),
                zone: pool
                    .as_ref()
                    .and_then(|p| p.split('/').nth(2))
                    .map_or_else(|| format!("z{}", n % 2), str::to_string),
                status: HostStatus::Launching,
                launched_at: world.now(),
                last_beat_ms: None,
                market: *market,
                pool: pool.clone().unwrap_or_default(),
                notice: None,
                disk_bytes: *disk_bytes,
            }),
            Action::AbandonHost { host_id } | Action::ReleaseHost { host_id } => {
                for h in world.hosts.iter_mut().filter(|h| &h.id == host_id) {
                    h.status = HostStatus::Failed;
                }
            }
            Action::CreateInstance {
                cluster_id,
                host_id,
                slots,
                role,
            } => world.instances.push(InstanceView {
                id: format!("i{n}"),
                cluster_id: cluster_id.clone(),
                host_id: host_id.clone(),
                slots: *slots,
                role: *role,
                deleting: false,
                observed: Observed::Unknown,
                error: None,
                in_recovery: None,
                lsn: None,
                streaming: None,
                sync_standbys: vec![],
                sync_streaming: vec![],
                term: 1,
                draining: false,
                storage: None,
            }),
            Action::DeleteInstance { instance_id } => {
                for i in world.instances.iter_mut().filter(|i| &i.id == instance_id) {
                    i.deleting = true;
                }
            }
            Action::ForgetInstance { instance_id } => world.instances.retain(|i| &i.id != instance_id),
            Action::RemoveCluster { cluster_id } => world.clusters.retain(|c| &c.id != cluster_id),
            Action::CompleteOperation { operation_id, .. } => world.operations.retain(|o| &o.id != operation_id),
            Action::Failover {
                cluster_id,
                term,
                from,
                to,
                ..
            } => {
                let Some(c) = world
                    .clusters
                    .iter_mut()
                    .find(|c| &c.id == cluster_id && c.term == *term)
                else {
                    continue;
                };
                c.term += 1;
                c.switchover_to = None;
                for i in world.instances.iter_mut().filter(|i| &i.cluster_id == cluster_id) {
                    if Some(&i.id) == from.as_ref() {
                        i.deleting = true;
                    }
                    if &i.id == to {
                        i.role = Role::Primary;
                    }
                }
            }
            Action::Drain { instance_id } => {
                for i in world.instances.iter_mut().filter(|i| &i.id == instance_id) {
                    i.draining = true;
                }
            }
            Action::CancelSwitchover { cluster_id, .. } => {
                for c in world.clusters.iter_mut().filter(|c| &c.id == cluster_id) {
                    c.switchover_to = None;
                }
            }
            Action::RestorePrimary {
                cluster_id, term, from, ..
            } => {
                for c in world
                    .clusters
                    .iter_mut()
                    .filter(|c| &c.id == cluster_id && c.term == *term)
                {
                    c.term += 1;
                }
                for i in world.instances.iter_mut().filter(|i| &i.id == from) {
                    i.deleting = true;
                }
            }
            Action::GrowDisk {
                cluster_id, disk_bytes, ..
            } => {
                if let Some(c) = world.clusters.iter_mut().find(|c| &c.id == cluster_id) {
                    c.disk_bytes = *disk_bytes;
                }
            }
            Action::StorageLevel { cluster_id, level, .. } => {
                if let Some(c) = world.clusters.iter_mut().find(|c| &c.id == cluster_id) {
                    c.storage_level = *level;
                }
            }
            Action::Relocate {
                cluster_id,
                cloud,
                region,
                ..
            } => {
                for c in world.clusters.iter_mut().filter(|c| &c.id == cluster_id) {
                    c.cloud = cloud.clone();
                    c.region = region.clone();
                }
            }
            Action::EvacuationMove {
                evacuation_id,
                cluster_id,
                cloud,
                region,
                from,
            } => {
                for c in world.clusters.iter_mut().filter(|c| &c.id == cluster_id) {
                    c.cloud = cloud.clone();
                    c.region = region.clone();
                    c.avoid_cloud = Some(from.clone());
                }
                world.operations.push(OperationView {
                    id: format!("op{n}"),
                    cluster_id: cluster_id.clone(),
                    kind: OperationKind::MoveCluster,
                    progress: None,
                });
                for e in world.evacuations.iter_mut().filter(|e| &e.id == evacuation_id) {
                    for m in e.members.iter_mut().filter(|m| &m.cluster_id == cluster_id) {
                        m.state = crate::evacuate::MemberState::Moving;
                        m.outcome = Some(crate::evacuate::MoveOutcome::Running);
                    }
                }
            }
            Action::EvacuationMember {
                evacuation_id,
                cluster_id,
                state,
                ..
            } => {
                for e in world.evacuations.iter_mut().filter(|e| &e.id == evacuation_id) {
                    for m in e.members.iter_mut().filter(|m| &m.cluster_id == cluster_id) {
                        m.state = *state;
                    }
                }
            }
            Action::EvacuationDone { evacuation_id } => world.evacuations.retain(|e| &e.id != evacuation_id),
            Action::Event { .. } => {}
            Action::ReportProgress { operation_id, progress } => {
                for o in world.operations.iter_mut().filter(|o| &o.id == operation_id) {
                    o.progress = Some(progress.clone());
                }
            }
        }
    }
}

/// What the agents and provider do: hosts register, instances start, deleted ones vanish.
fn observe(world: &mut World) {
    for h in world.hosts.iter_mut() {
        if h.status == HostStatus::Launching {
            h.status = HostStatus::Running;
        }
        h.last_beat_ms = Some(world.now_ms);
    }
    let terms: BTreeMap<String, i64> = world.clusters.iter().map(|c| (c.id.clone(), c.term)).collect();
    for i in world.instances.iter_mut() {
        i.observed = if i.deleting {
            Observed::Absent
        } else {
            Observed::Running
        };
        i.in_recovery = Some(i.role == Role::Standby);
        i.streaming = Some(i.role == Role::Standby);
        i.term = terms.get(&i.cluster_id).copied().unwrap_or(1);
    }
}

#[test]
fn new_cluster_without_hosts_launches_one_host() {
    let world = World {
        clusters: vec![cluster("c1", 1), cluster("c2", 1)],
        ..Default::default()
    };
    assert_eq!(
        plan(&world),
        vec![Action::LaunchHost {
            cloud: "a".into(),
            region: "r1".into(),
            cell: String::new(),
            market: Market::OnDemand,
            pool: None,
            disk_bytes: None,
        }]
    );
}

#[test]
fn launching_host_is_not_launched_twice() {
    let world = World {
        clusters: vec![cluster("c1", 1)],
        hosts: vec![host("h1", HostStatus::Launching)],
        ..Default::default()
    };
    assert!(plan(&world).is_empty());
}

#[test]
fn places_on_running_host_with_room() {
    let world = World {
        clusters: vec![cluster("c1", 1)],
        hosts: vec![host("h1", HostStatus::Running)],
        ..Default::default()
    };
    assert_eq!(
        plan(&world),
        vec![Action::CreateInstance {
            cluster_id: "c1".into(),
            host_id: "h1".into(),
            slots: 1,
            role: Role::Primary,
        }]
    );
}

#[test]
fn members_run_on_their_cells_hosts_only() {
    let in_cell = |mut c: ClusterIntent, cell: &str| {
        c.cell = cell.into();
        c
    };
    let host_in = |id: &str, cell: &str| HostView {
        cell: cell.into(),
        ..host(id, HostStatus::Running)
    };
    // Room on c1's host only: c2's cluster does not take it, it gets a host of its own
    // cell launched; a launch already under way for c2 is not doubled.
    let mut world = World {
        clusters: vec![in_cell(cluster("a", 1), "c1"), in_cell(cluster("b", 1), "c2")],
        hosts: vec![host_in("h1", "c1")],
        ..Default::default()
    };
    let p = plan(&world);
    assert!(p.contains(&Action::CreateInstance {
        cluster_id: "a".into(),
        host_id: "h1".into(),
        slots: 1,
        role: Role::Primary,
    }));
    assert!(!p
        .iter()
        .any(|a| matches!(a, Action::CreateInstance { cluster_id, .. } if cluster_id == "b")));
    assert!(
        p.contains(&Action::LaunchHost {
            cloud: "a".into(),
            region: "r1".into(),
            cell: "c2".into(),
            market: Market::OnDemand,
            pool: None,
            disk_bytes: None,
        }),
        "{p:?}"
    );
    world.hosts.push(HostView {
        status: HostStatus::Launching,
        ..host_in("h2", "c2")
    });
    assert!(!plan(&world).iter().any(|a| matches!(a, Action::LaunchHost { .. })));
}

#[test]
fn full_host_triggers_launch() {
    let mut world = World {
        clusters: vec![cluster("c1", 4), cluster("c2", 4), cluster("c3", 1)],
        hosts: vec![host("h1", HostStatus::Running)],
        ..Default::default()
    };
    world.instances.push(InstanceView {
        slots: 8,
        ..instance("i0", "c0", "h1", Observed::Running)
    });
    world.clusters.push(cluster("c0", 8));
    let p = plan(&world);
    assert_eq!(
        p.iter().filter(|a| matches!(a, Action::LaunchHost { .. })).count(),
        2,
        "9 slots of demand need two 8-slot hosts: {p:?}"
    );
}

#[test]
fn replicas_go_to_distinct_hosts_in_distinct_zones() {
    let mut world = World {
        clusters: vec![ClusterIntent {
            members: 3,
            ..cluster("c1", 1)
        }],
        hosts: vec![
            host("h1", HostStatus::Running),
            host("h2", HostStatus::Running),
            HostView {
                zone: "z2".into(),
                ..host("h3", HostStatus::Running)
            },
        ],
        ..Default::default()
    };
    let p = plan(&world);
    let placed: Vec<(&str, Role)> = p
        .iter()
        .filter_map(|a| match a {
            Action::CreateInstance { host_id, role, .. } => Some((host_id.as_str(), *role)),
            _ => None,
        })
        .collect();
    assert_eq!(placed.len(), 3, "{p:?}");
    assert_eq!(placed.iter().filter(|(_, r)| *r == Role::Primary).count(), 1);
    // The second member goes to the other zone before a second host of the first zone.
    assert_eq!(placed[1].0, "h3", "{p:?}");
    // Lowering the count removes a standby, never the primary.
    apply(&mut world, &p);
    world.clusters[0].members = 1;
    let p = plan(&world);
    let removed: Vec<&String> = p
        .iter()
        .filter_map(|a| match a {
            Action::DeleteInstance { instance_id } => Some(instance_id),
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 2, "{p:?}");
    for id in removed {
        let i = world.instances.iter().find(|i| &i.id == id).unwrap();
        assert_eq!(i.role, Role::Standby);
    }
}

#[test]
fn spread_clusters_put_standbys_in_other_clouds() {
    let mut world = World {
        locations: vec![("a".into(), "r1".into()), ("b".into(), "r1".into())],
        clusters: vec![ClusterIntent {
            members: 2,
            spread_clouds: true,
            ..cluster("c1", 1)
        }],
        hosts: vec![host("h1", HostStatus::Running), host("h2", HostStatus::Running)],
        ..Default::default()
    };
    // No host in cloud b yet: the primary goes to a, and a host is launched in b.
    let p = plan(&world);
    assert!(
        p.contains(&Action::LaunchHost {
            cloud: "b".into(),
            region: "r1".into(),
            cell: String::new(),
            market: Market::OnDemand,
            pool: None,
            disk_bytes: None,
        }),
        "{p:?}"
    );
    assert_eq!(
        p.iter().filter(|a| matches!(a, Action::CreateInstance { .. })).count(),
        1,
        "the standby waits for its cloud: {p:?}"
    );
    apply(&mut world, &p);
    observe(&mut world);
    let p = plan(&world);
    let standby_host = p
        .iter()
        .find_map(|a| match a {
            Action::CreateInstance {
                host_id,
                role: Role::Standby,
                ..
            } => Some(host_id.clone()),
            _ => None,
        })
        .expect("a standby placed");
    let h = world.hosts.iter().find(|h| h.id == standby_host).unwrap();
    assert_eq!(h.cloud, "b");
}

#[test]
fn members_without_room_launch_distinct_hosts() {
    let world = World {
        clusters: vec![ClusterIntent {
            members: 3,
            ..cluster("c1", 1)
        }],
        ..Default::default()
    };
    let launches = plan(&world)
        .iter()
        .filter(|a| matches!(a, Action::LaunchHost { .. }))
        .count();
    assert_eq!(launches, 3, "three members need three hosts");
}

#[test]
fn failed_launch_is_retried_only_after_a_pause() {
    let mut world = World {
        now_ms: 100_000,
        clusters: vec![cluster("c1", 1)],
        hosts: vec![HostView {
            launched_at: 95,
            ..host("h1", HostStatus::Failed)
        }],
        ..Default::default()
    };
    assert!(plan(&world).is_empty(), "no launch storm while the cloud refuses");
    world.now_ms = (95 + LAUNCH_RETRY_SECS) * 1000;
    assert_eq!(
        plan(&world),
        vec![Action::LaunchHost {
            cloud: "a".into(),
            region: "r1".into(),
            cell: String::new(),
            market: Market::OnDemand,
            pool: None,
            disk_bytes: None,
        }]
    );
}

#[test]
fn an_idle_host_is_released_but_not_a_new_or_a_needed_one() {
    let mut world = World {
        now_ms: HOST_IDLE_SECS * 1000,
        hosts: vec![HostView {
            last_beat_ms: Some(HOST_IDLE_SECS * 1000),
            ..host("h1", HostStatus::Running)
        }],
        ..Default::default()
    };
    assert_eq!(plan(&world), vec![Action::ReleaseHost { host_id: "h1".into() }]);
    world.now_ms -= 1000;
    world.hosts[0].last_beat_ms = Some(world.now_ms);
    assert!(plan(&world).is_empty(), "released a new host");
    world.now_ms += 1000;
    world.hosts[0].last_beat_ms = Some(world.now_ms);
    world.clusters = vec![cluster("c1", 1)];
    assert!(matches!(plan(&world).as_slice(), [Action::CreateInstance { .. }]));
}

#[test]
fn stuck_launch_is_abandoned() {
    let world = World {
        now_ms: (HOST_LAUNCH_TIMEOUT_SECS + 1) * 1000,
        hosts: vec![host("h1", HostStatus::Launching)],
        ..Default::default()
    };
    assert_eq!(plan(&world), vec![Action::AbandonHost { host_id: "h1".into() }]);
}

#[test]
fn create_operation_completes_when_running_and_fails_with_agent_error() {
    let mut world = World {
        clusters: vec![cluster("c1", 1), cluster("c2", 1)],
        hosts: vec![host("h1", HostStatus::Running)],
        instances: vec![
            instance("i1", "c1", "h1", Observed::Running),
            InstanceView {
                error: Some("initdb failed".into()),
                ..instance("i2", "c2", "h1", Observed::Failed)
            },
        ],
        operations: vec![
            OperationView {
                id: "o1".into(),
                cluster_id: "c1".into(),
                kind: OperationKind::CreateCluster,
                progress: None,
            },
            OperationView {
                id: "o2".into(),
                cluster_id: "c2".into(),
                kind: OperationKind::CreateCluster,
                progress: None,
            },
        ],
        ..Default::default()
    };
    let p = plan(&world);
    assert!(p.contains(&Action::CompleteOperation {
        operation_id: "o1".into(),
        outcome: Outcome::Succeeded
    }));
    assert!(p.contains(&Action::CompleteOperation {
        operation_id: "o2".into(),
        outcome: Outcome::Failed("initdb failed".into())
    }));
    world.instances[0].observed = Observed::Creating;
    assert!(!plan(&world)
        .iter()
        .any(|a| matches!(a, Action::CompleteOperation { operation_id, .. } if operation_id == "o1")));
}

#[test]
fn delete_goes_through_deleting_absent_forget_remove() {
    let mut world = World {
        clusters: vec![ClusterIntent {
            deleted: true,
            ..cluster("c1", 1)
        }],
        hosts: vec![host("h1", HostStatus::Running)],
        instances: vec![instance("i1", "c1", "h1", Observed::Running)],
        operations: vec![OperationView {
            id: "o1".into(),
            cluster_id: "c1".into(),
            kind: OperationKind::DeleteCluster,
            progress: None,
        }],
        ..Default::default()
    };
    let p = plan(&world);
    assert_eq!(
        p,
        vec![Action::DeleteInstance {
            instance_id: "i1".into()
        }]
    );
    apply(&mut world, &p);
    // Until the agent confirms, nothing more happens, and nothing repeats.
    assert!(plan(&world).is_empty());
    world.instances[0].observed = Observed::Absent;
    let p = plan(&world);
    assert_eq!(
        p,
        vec![Action::ForgetInstance {
            instance_id: "i1".into()
        }]
    );
    apply(&mut world, &p);
    let p = plan(&world);
    assert!(p.contains(&Action::RemoveCluster {
        cluster_id: "c1".into()
    }));
    assert!(p.contains(&Action::CompleteOperation {
        operation_id: "o1".into(),
        outcome: Outcome::Succeeded
    }));
}

#[test]
fn a_primary_whose_host_died_before_it_ran_is_placed_again_but_not_one_that_ran() {
    // Nothing new goes to a host that stopped beating: it may be gone.
    let mut world = World {
        clusters: vec![cluster("c1", 1)],
        hosts: vec![host("h1", HostStatus::Running)],
        now_ms: HOST_DEAD_MS + 1000,
        ..Default::default()
    };
    let p = plan(&world);
    assert!(!p.iter().any(|a| matches!(a, Action::CreateInstance { .. })), "{p:?}");
    assert!(p.iter().any(|a| matches!(a, Action::LaunchHost { .. })), "{p:?}");
    // A primary placed there just before it died never ran: once the host is given up,
    // it is removed (and placed again elsewhere).
    world.hosts[0].status = HostStatus::Failed;
    world.instances = vec![instance("i1", "c1", "h1", Observed::Creating)];
    assert!(plan(&world).contains(&Action::DeleteInstance {
        instance_id: "i1".into()
    }));
    // One that ran held the data: never replaced by an empty one.
    world.instances[0].lsn = Some(100);
    world.instances[0].in_recovery = Some(false);
    assert!(!plan(&world)
        .iter()
        .any(|a| matches!(a, Action::DeleteInstance { .. } | Action::CreateInstance { .. })));
}

#[test]
fn instances_on_failed_hosts_are_forgotten_once_deleted() {
    let world = World {
        hosts: vec![host("h1", HostStatus::Failed)],
        instances: vec![InstanceView {
            deleting: true,
            ..instance("i1", "c1", "h1", Observed::Running)
        }],
        ..Default::default()
    };
    assert_eq!(
        plan(&world),
        vec![Action::ForgetInstance {
            instance_id: "i1".into()
        }]
    );
}

fn arb_world() -> impl Strategy<Value = World> {
    let clusters = proptest::collection::vec((1u32..=4, any::<bool>(), 0usize..2, 1u32..=4), 0..12);
    let hosts = proptest::collection::vec((0usize..3, 0usize..2), 0..4);
    (clusters, hosts).prop_map(|(cs, hs)| {
        let clouds = ["a", "b"];
        let statuses = [HostStatus::Launching, HostStatus::Running, HostStatus::Failed];
        World {
            now_ms: 10_000,
            observing_since: 0,
            locations: vec![("a".into(), "r1".into()), ("b".into(), "r1".into())],
            clusters: cs
                .iter()
                .enumerate()
                .map(|(n, (slots, deleted, cloud, members))| ClusterIntent {
                    id: format!("c{n}"),
                    cloud: clouds[*cloud].into(),
                    region: "r1".into(),
                    cell: String::new(),
                    slots: if *slots == 3 { 2 } else { *slots },
                    members: *members,
                    term: 1,
                    switchover_to: None,
                    spread_clouds: *members == 3,
                    spot: false,
                    restorable: false,
                    deleted: *deleted,
                    storage_level: Default::default(),
                    disk_bytes: 0,
                    autoscale_max_bytes: 0,
                    on_cloud_loss: Default::default(),
                    has_backup: false,
                    // Every other spread cluster keeps out of the other cloud.
                    avoid_cloud: (*members == 3 && n % 2 == 0).then(|| clouds[1 - *cloud].to_string()),
                })
                .collect(),
            hosts: hs
                .iter()
                .enumerate()
                .map(|(n, (st, cloud))| HostView {
                    id: format!("h{n}"),
                    cloud: clouds[*cloud].into(),
                    region: "r1".into(),
                    zone: format!("z{}", n % 2),
                    cell: String::new(),
                    status: statuses[*st],
                    launched_at: 0,
                    last_beat_ms: Some(10_000),
                    market: Market::OnDemand,
                    pool: String::new(),
                    notice: None,
                    disk_bytes: None,
                })
                .collect(),
            instances: vec![],
            operations: vec![],
            ..Default::default()
        }
    })
}

fn check_invariants(world: &World) -> Result<(), TestCaseError> {
    for h in &world.hosts {
        let used: u32 = world
            .instances
            .iter()
            .filter(|i| i.host_id == h.id)
            .map(|i| i.slots)
            .sum();
        prop_assert!(used <= HOST_SLOTS, "host {} over capacity: {used}", h.id);
    }
    for c in &world.clusters {
        let live: Vec<&InstanceView> = world
            .instances
            .iter()
            .filter(|i| i.cluster_id == c.id && !i.deleting)
            .collect();
        prop_assert!(
            live.len() as u32 <= c.members,
            "cluster {} has {} live members",
            c.id,
            live.len()
        );
        let primaries = live.iter().filter(|i| i.role == Role::Primary).count();
        prop_assert!(primaries <= 1, "cluster {} has {primaries} primaries", c.id);
        let hosts: BTreeSet<&str> = live.iter().map(|i| i.host_id.as_str()).collect();
        prop_assert_eq!(hosts.len(), live.len(), "two members of {} share a host", c.id);
    }
    for i in world.instances.iter().filter(|i| !i.deleting) {
        let h = world.hosts.iter().find(|h| h.id == i.host_id);
        prop_assert!(
            h.is_some_and(|h| h.status != HostStatus::Failed),
            "instance {} placed on a failed or unknown host",
            i.id
        );
    }
    Ok(())
}

proptest! {
    /// Running the planner and the (simulated) world in turns converges: every live
    /// cluster ends with one running instance, deleted ones vanish, capacity is never
    /// exceeded, and a cluster never gets a second live instance along the way.
    #[test]
    fn plans_converge_and_keep_invariants(mut world in arb_world()) {
        for _ in 0..10 {
            let p = plan(&world);
            apply(&mut world, &p);
            check_invariants(&world)?;
            observe(&mut world);
        }
        prop_assert!(plan(&world).is_empty(), "not converged: {:?}", plan(&world));
        for c in &world.clusters {
            prop_assert!(!c.deleted, "deleted cluster {} still recorded", c.id);
            let running = world
                .instances
                .iter()
                .filter(|i| i.cluster_id == c.id && i.observed == Observed::Running)
                .collect::<Vec<_>>();
            prop_assert_eq!(running.len() as u32, c.members);
            prop_assert_eq!(running.iter().filter(|i| i.role == Role::Primary).count(), 1);
            for i in &running {
                let h = world.hosts.iter().find(|h| h.id == i.host_id).map(|h| h.cloud.as_str());
                prop_assert!(h.is_some_and(|cl| !c.avoids(cl)), "{} placed in a cloud it avoids", i.id);
            }
        }
    }

    /// Planning twice over the same world gives the same plan (deterministic), and a plan
    /// applied once does not ask for the same launch or placement again (idempotent).
    #[test]
    fn plan_is_deterministic_and_idempotent(world in arb_world()) {
        let p1 = plan(&world);
        prop_assert_eq!(&p1, &plan(&world));
        let placed: Vec<&String> = p1
            .iter()
            .filter_map(|a| match a {
                Action::CreateInstance { cluster_id, .. } => Some(cluster_id),
                _ => None,
            })
            .collect();
        let mut after = world.clone();
        apply(&mut after, &p1);
        let p2 = plan(&after);
        for a in &p2 {
            prop_assert!(!matches!(a, Action::LaunchHost { .. }), "second launch: {:?}", p2);
            if let Action::CreateInstance { cluster_id, .. } = a {
                prop_assert!(!placed.contains(&cluster_id), "placed twice: {}", cluster_id);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------------------

/// A two-zone world: primary `p` on `hp`, standbys `s1..` on their own hosts.
fn ha_world(standbys: &[(&str, u64, bool)], sync: &[&str]) -> World {
    let mut world = World {
        now_ms: 100_000,
        clusters: vec![ClusterIntent {
            members: 1 + standbys.len() as u32,
            term: 3,
            ..cluster("c", 1)
        }],
        hosts: vec![HostView {
            last_beat_ms: Some(100_000),
            market: Market::OnDemand,
            pool: String::new(),
            notice: None,
            disk_bytes: None,
            ..host("hp", HostStatus::Running)
        }],
        instances: vec![InstanceView {
            in_recovery: Some(false),
            lsn: Some(1000),
            sync_standbys: sync.iter().map(|s| s.to_string()).collect(),
            sync_streaming: vec![],
            term: 3,
            ..instance("p", "c", "hp", Observed::Running)
        }],
        ..Default::default()
    };
    for (id, lsn, streaming) in standbys {
        world.hosts.push(HostView {
            last_beat_ms: Some(100_000),
            market: Market::OnDemand,
            pool: String::new(),
            notice: None,
            disk_bytes: None,
            ..host(&format!("h{id}"), HostStatus::Running)
        });
        world.instances.push(InstanceView {
            role: Role::Standby,
            in_recovery: Some(true),
            lsn: Some(*lsn),
            streaming: Some(*streaming),
            term: 3,
            ..instance(id, "c", &format!("h{id}"), Observed::Running)
        });
    }
    world
}

fn failovers(p: &[Action]) -> Vec<(String, i64)> {
    p.iter()
        .filter_map(|a| match a {
            Action::Failover { to, term, .. } => Some((to.clone(), *term)),
            _ => None,
        })
        .collect()
}

fn kill_primary_host(world: &mut World) {
    world.hosts[0].last_beat_ms = Some(world.now_ms - HOST_DEAD_MS - 1000);
}

#[test]
fn a_primary_host_is_dead_after_two_missed_beats_judged_to_the_millisecond() {
    // The standby has lost the primary (it reported its final position).
    let mut world = ha_world(&[("s1", 1000, false)], &["s1"]);
    for (silent_ms, fails_over) in [
        (0, false),
        (500, false),
        (HOST_DEAD_MS, false),
        (HOST_DEAD_MS + 1, true),
        (HOST_DEAD_MS + 400, true),
    ] {
        world.hosts[0].last_beat_ms = Some(world.now_ms - silent_ms);
        let p = plan(&world);
        assert_eq!(!failovers(&p).is_empty(), fails_over, "silent {silent_ms} ms: {p:?}");
    }
    // However long the silence, a standby that still streams vetoes it.
    world.hosts[0].last_beat_ms = Some(world.now_ms - 10 * HOST_DEAD_MS);
    world.instances[1].streaming = Some(true);
    assert!(failovers(&plan(&world)).is_empty());
}

#[test]
fn the_next_silence_deadline_is_the_earliest_host_that_would_be_taken_for_dead() {
    let mut world = ha_world(&[("s1", 1000, true), ("s2", 1000, true)], &["s1", "s2"]);
    let now = world.now_ms;
    world.hosts[0].last_beat_ms = Some(now - 300);
    world.hosts[1].last_beat_ms = Some(now - 100);
    world.hosts[2].last_beat_ms = Some(now - 5 * HOST_DEAD_MS); // dead already: no deadline
    assert_eq!(next_silence_deadline_ms(&world), Some(now - 300 + HOST_DEAD_MS + 1));
    world.hosts.iter_mut().for_each(|h| h.status = HostStatus::Failed);
    assert_eq!(next_silence_deadline_ms(&world), None);
}

#[test]
fn silence_counts_only_from_when_observation_began() {
    let mut world = ha_world(&[("s1", 1000, false)], &["s1"]);
    world.now_ms = 1_000_000; // every host last heard from at 100
    world.observing_since = 999; // the control plane just restarted
    assert!(plan(&world).is_empty(), "{:?}", plan(&world));
    world.observing_since = 0;
    let p = plan(&world);
    assert!(p.iter().any(|a| matches!(a, Action::AbandonHost { .. })), "{p:?}");
}

#[test]
fn switchover_drains_then_promotes_the_target_in_a_new_term() {
    let mut world = ha_world(&[("s1", 1000, true), ("s2", 1000, true)], &["s1", "s2"]);
    world.clusters[0].switchover_to = Some("s2".into());
    let p = plan(&world);
    assert_eq!(
        p,
        vec![Action::Drain {
            instance_id: "p".into()
        }]
    );
    apply(&mut world, &p);
    assert!(
        failovers(&plan(&world)).is_empty(),
        "not before the primary has stopped"
    );
    // The primary stops; its walsenders flushed everything to both standbys.
    world.instances[0].observed = Observed::Stopped;
    world.instances[1].streaming = Some(false);
    world.instances[2].streaming = Some(false);
    let p = plan(&world);
    assert_eq!(failovers(&p), vec![("s2".to_string(), 3)], "{p:?}");
    apply(&mut world, &p);
    assert_eq!(world.clusters[0].switchover_to, None);
}

#[test]
fn switchover_to_a_stranger_is_cancelled() {
    let mut world = ha_world(&[("s1", 1000, true)], &["s1"]);
    world.clusters[0].switchover_to = Some("nobody".into());
    assert!(matches!(plan(&world)[..], [Action::CancelSwitchover { .. }]));
}

#[test]
fn healthy_primary_is_left_alone() {
    let world = ha_world(&[("s1", 1000, true)], &["s1"]);
    assert!(plan(&world).is_empty(), "{:?}", plan(&world));
}

#[test]
fn lost_primary_host_promotes_the_synchronous_standby_in_a_new_term() {
    let mut world = ha_world(&[("s1", 1000, false)], &["s1"]);
    kill_primary_host(&mut world);
    let p = plan(&world);
    assert_eq!(failovers(&p), vec![("s1".to_string(), 3)], "{p:?}");
    apply(&mut world, &p);
    assert_eq!(world.clusters[0].term, 4);
    assert!(world.instances.iter().find(|i| i.id == "p").unwrap().deleting);
    // Idempotent: the next plan does not promote again; it replaces the lost member.
    let p = plan(&world);
    assert!(failovers(&p).is_empty(), "{p:?}");
    assert!(p
        .iter()
        .any(|a| matches!(a, Action::LaunchHost { .. } | Action::CreateInstance { .. })));
}

#[test]
fn a_standby_that_still_streams_vetoes_failover() {
    let mut world = ha_world(&[("s1", 1000, true)], &["s1"]);
    kill_primary_host(&mut world);
    assert!(failovers(&plan(&world)).is_empty());
}

#[test]
fn without_a_synchronous_standby_nothing_is_promoted_and_an_event_says_why() {
    let mut world = ha_world(&[("s1", 1000, false)], &[]);
    kill_primary_host(&mut world);
    let p = plan(&world);
    assert!(failovers(&p).is_empty());
    assert!(p
        .iter()
        .any(|a| matches!(a, Action::Event { kind, .. } if kind == "failover_waiting")));
}

#[test]
fn quorum_intersection_needs_enough_final_positions() {
    // ANY 1 (s1, s2): an acknowledged commit is on s1 or s2, so both must report.
    let mut world = ha_world(&[("s1", 900, false), ("s2", 1000, false)], &["s1", "s2"]);
    kill_primary_host(&mut world);
    world.hosts[2].last_beat_ms = Some(0); // s2's host is gone too
    assert!(
        failovers(&plan(&world)).is_empty(),
        "s1 alone may miss commits only s2 has"
    );
    world.hosts[2].last_beat_ms = Some(100_000);
    assert_eq!(
        failovers(&plan(&world)),
        vec![("s2".to_string(), 3)],
        "the furthest one"
    );
}

#[test]
fn a_synchronous_standby_gone_for_good_no_longer_blocks_failover_and_an_event_says_what_it_costs() {
    let mut world = ha_world(&[("s1", 900, false), ("s2", 1000, false)], &["s1", "s2"]);
    kill_primary_host(&mut world);
    world.hosts[2].last_beat_ms = Some(0);
    assert!(failovers(&plan(&world)).is_empty(), "s2 may still come back");
    // s2's host is given up and s2 removed: its data is gone; s1 is the best there is.
    world.instances.retain(|i| i.id != "s2");
    let p = plan(&world);
    assert_eq!(failovers(&p), vec![("s1".to_string(), 3)]);
    assert!(
        p.iter()
            .any(|a| matches!(a, Action::Event { kind, .. } if kind == "failover_incomplete_quorum")),
        "{p:?}"
    );
}

#[test]
fn a_lost_primary_without_a_successor_is_restored_from_object_storage_only_when_nothing_is_lost() {
    let mut world = World {
        now_ms: 100_000,
        clusters: vec![ClusterIntent {
            restorable: true,
            ..cluster("c", 1)
        }],
        hosts: vec![
            host("h1", HostStatus::Failed),
            HostView {
                last_beat_ms: Some(100_000),
                ..host("h2", HostStatus::Running)
            },
        ],
        instances: vec![InstanceView {
            lsn: Some(500),
            in_recovery: Some(false),
            ..instance("p", "c", "h1", Observed::Running)
        }],
        ..Default::default()
    };
    let p = plan(&world);
    assert!(
        p.contains(&Action::RestorePrimary {
            cluster_id: "c".into(),
            term: 1,
            from: "p".into(),
            cloud_lost: None,
        }),
        "{p:?}"
    );
    // A standby still copying from the lost primary goes with it.
    let mut copying = world.clone();
    copying.instances.push(InstanceView {
        role: Role::Standby,
        ..instance("s", "c", "h2", Observed::Creating)
    });
    let p2 = plan(&copying);
    assert!(
        p2.contains(&Action::DeleteInstance {
            instance_id: "s".into()
        }),
        "{p2:?}"
    );
    assert!(p2.iter().any(|a| matches!(a, Action::RestorePrimary { .. })), "{p2:?}");
    // The new term's primary is placed (it restores: the executor records from what).
    apply(&mut world, &p);
    let p = plan(&world);
    assert!(
        p.iter()
            .any(|a| matches!(a, Action::CreateInstance { role: Role::Primary, host_id, .. } if host_id == "h2")),
        "{p:?}"
    );
    // Without every commit in object storage, a person decides.
    world.clusters[0].restorable = false;
    world.clusters[0].term = 1;
    world.instances[0].deleting = false;
    let p = plan(&world);
    assert!(!p.iter().any(|a| matches!(a, Action::RestorePrimary { .. })), "{p:?}");
    assert!(
        p.iter()
            .any(|a| matches!(a, Action::Event { kind, .. } if kind == "primary_lost")),
        "{p:?}"
    );
    // A host that is only silent (not given up) may come back: nothing yet.
    world.clusters[0].restorable = true;
    world.hosts[0].status = HostStatus::Running;
    assert!(!plan(&world).iter().any(|a| matches!(a, Action::RestorePrimary { .. })));
}

#[test]
fn a_member_running_as_primary_outside_its_term_is_told_to_step_down() {
    let mut world = ha_world(&[("s1", 1000, true)], &["s1"]);
    world.instances[1].in_recovery = Some(false); // s1 thinks it is a primary
    let p = plan(&world);
    assert!(p.contains(&Action::DeleteInstance {
        instance_id: "s1".into()
    }));
    let mut world = ha_world(&[("s1", 1000, true)], &["s1"]);
    world.instances[0].term = 2; // the primary runs an older term's spec
    assert!(plan(&world).contains(&Action::DeleteInstance {
        instance_id: "p".into()
    }));
}

proptest! {
    /// Commits are acknowledged once `SYNC_QUORUM` members of the synchronous set have
    /// them. Whatever the planner promotes holds the last acknowledged position; after
    /// the promotion the cluster has one primary and a higher term; and planning again
    /// promotes nobody else.
    #[test]
    fn failover_never_loses_an_acknowledged_commit(
        lsns in proptest::collection::vec(0u64..2000, 1..4),
        streaming in proptest::collection::vec(any::<bool>(), 4),
        alive in proptest::collection::vec(any::<bool>(), 4),
        in_sync in proptest::collection::vec(any::<bool>(), 4),
        acked in 0u64..2000,
    ) {
        let ids = ["s0", "s1", "s2", "s3"];
        let sync: Vec<&str> = ids.iter().take(lsns.len()).enumerate().filter(|(n, _)| in_sync[*n]).map(|(_, s)| *s).collect();
        // The acknowledgement invariant: some synchronous standby holds `acked`.
        let holds = sync.iter().any(|s| lsns[ids.iter().position(|i| i == s).unwrap()] >= acked);
        prop_assume!(holds);
        let standbys: Vec<(&str, u64, bool)> = lsns.iter().enumerate().map(|(n, l)| (ids[n], *l, streaming[n])).collect();
        let mut world = ha_world(&standbys, &sync);
        kill_primary_host(&mut world);
        for (n, _) in lsns.iter().enumerate() {
            if !alive[n] {
                world.hosts[n + 1].last_beat_ms = Some(0);
            }
        }
        let p = plan(&world);
        let f = failovers(&p);
        prop_assert!(f.len() <= 1);
        if let Some((to, term)) = f.first() {
            let promoted = world.instances.iter().find(|i| &i.id == to).unwrap();
            prop_assert!(promoted.lsn.unwrap() >= acked, "promoted {} at {:?} behind {}", to, promoted.lsn, acked);
            prop_assert_eq!(*term, 3);
            apply(&mut world, &p);
            let primaries = world.instances.iter().filter(|i| !i.deleting && i.role == Role::Primary).count();
            prop_assert_eq!(primaries, 1);
            prop_assert_eq!(world.clusters[0].term, 4);
            prop_assert!(failovers(&plan(&world)).is_empty());
        }
    }
}

proptest! {
    /// Whatever else is going on, a member that runs as a primary without being this
    /// term's primary is told to step down, and no plan ever names two primaries.
    #[test]
    fn stale_primaries_always_step_down(
        roles in proptest::collection::vec(any::<bool>(), 1..4),
        terms in proptest::collection::vec(1i64..=3, 4),
        writable in proptest::collection::vec(any::<bool>(), 4),
        primary_alive in any::<bool>(),
    ) {
        let standbys: Vec<(&str, u64, bool)> = ["s0", "s1", "s2"].iter().take(roles.len()).map(|s| (*s, 500, true)).collect();
        let mut world = ha_world(&standbys, &["s0"]);
        if !primary_alive {
            kill_primary_host(&mut world);
        }
        for (n, i) in world.instances.iter_mut().enumerate() {
            i.term = terms[n];
            i.in_recovery = Some(!writable[n]);
            if n > 0 && roles[n - 1] {
                i.role = Role::Standby;
            }
        }
        let p = plan(&world);
        for i in &world.instances {
            let stale = i.in_recovery == Some(false) && (i.role != Role::Primary || i.term < world.clusters[0].term);
            if stale {
                prop_assert!(
                    p.contains(&Action::DeleteInstance { instance_id: i.id.clone() }),
                    "{} runs as a primary outside its term and was not told to step down: {:?}", i.id, p
                );
            }
        }
        apply(&mut world, &p);
        let primaries = world.instances.iter().filter(|i| !i.deleting && i.role == Role::Primary).count();
        prop_assert!(primaries <= 1);
    }
}

mod clouds;
mod evacuate;
mod spot;

#[test]
fn a_primarys_storage_level_is_announced_once_per_change() {
    use crate::storage::{Level, Reading, Report};
    const MIB: u64 = 1024 * 1024;
    let mut world = World {
        now_ms: 1_000_000,
        clusters: vec![cluster("c", 1)],
        hosts: vec![host("h1", HostStatus::Running)],
        instances: vec![instance("p", "c", "h1", Observed::Running)],
        ..Default::default()
    };
    let at = |free_mib: u64, level: Level| Report {
        reading: Reading {
            used_bytes: 100 * MIB,
            plan_bytes: 10 * 1024 * MIB,
            disk_total_bytes: 400 * MIB,
            disk_free_bytes: free_mib * MIB,
            reserve_bytes: 0,
        },
        level,
    };
    let announced = |w: &World| -> Vec<(String, Level)> {
        plan(w)
            .into_iter()
            .filter_map(|a| match a {
                Action::StorageLevel { kind, level, .. } => Some((kind, level)),
                _ => None,
            })
            .collect()
    };
    assert!(announced(&world).is_empty(), "nothing measured, nothing said");
    world.instances[0].storage = Some(at(300, Level::Normal));
    assert!(announced(&world).is_empty());
    let mut story = Vec::new();
    for (free, level) in [
        (70, Level::Warning),
        (70, Level::Warning),
        (30, Level::ReadOnly),
        (10, Level::Critical),
        (50, Level::ReadOnly),
        (100, Level::Warning),
        (300, Level::Normal),
    ] {
        world.instances[0].storage = Some(at(free, level));
        for (kind, level) in announced(&world) {
            world.clusters[0].storage_level = level;
            story.push(kind);
        }
    }
    assert_eq!(
        story,
        [
            "storage_warning",
            "storage_read_only",
            "storage_read_write",
            "storage_ok"
        ]
    );
    // A standby's fuller disk is the cluster's level: it holds the primary back.
    let mut standby = world.instances[0].clone();
    standby.id = "s".into();
    standby.role = Role::Standby;
    standby.storage = Some(at(20, Level::ReadOnly));
    world.instances.push(standby);
    assert_eq!(announced(&world), [("storage_read_only".to_string(), Level::ReadOnly)]);
}
