//! The metadata store's behaviour, run unchanged against SQLite and against a throwaway
//! real PostgreSQL server that the test starts in its own directory and port.

use highrise_api::{InstanceState, ObservedInstance};
use highrise_control::store::*;
use highrise_pg::scratch::ScratchServer;
use std::time::Duration;

mod common;
use common::*;

async fn exercise(store: Store) {
    // Settings: first writer wins.
    let a = store.setting_or_init("k", || "one".into()).await.unwrap();
    let b = store.setting_or_init("k", || "two".into()).await.unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("one", "one"));

    // Orgs, projects, keys.
    assert_eq!(store.org_count().await.unwrap(), 0);
    store
        .create_org(&org_row("o1", "alpha"), "p1", &key_row("k1", "o1"))
        .await
        .unwrap();
    store
        .create_org(&org_row("o2", "beta"), "p2", &key_row("k2", "o2"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_org(&org_row("o3", "alpha"), "p3", &key_row("k3", "o3"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.org_count().await.unwrap(),
        2,
        "a failed create leaves nothing behind"
    );
    assert_eq!(store.project_by_name("o1", "default").await.unwrap().id, "p1");
    let extra = ProjectRow {
        id: "p1b".into(),
        org_id: "o1".into(),
        name: "web".into(),
        created_at: 2,
    };
    store.create_project(&extra).await.unwrap();
    assert!(matches!(
        store.create_project(&extra).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_projects("o1").await.unwrap().len(), 2);
    assert!(matches!(
        store.project_by_name("o2", "web").await,
        Err(StoreError::NotFound)
    ));

    assert_eq!(store.api_key("k1").await.unwrap().org_id, "o1");
    store.create_api_key(&key_row("k1b", "o1")).await.unwrap();
    assert_eq!(store.list_api_keys("o1").await.unwrap().len(), 2);
    assert!(matches!(
        store.revoke_api_key("o2", "k1b", 9).await,
        Err(StoreError::NotFound)
    ));
    store.revoke_api_key("o1", "k1b", 9).await.unwrap();
    store.revoke_api_key("o1", "k1b", 10).await.unwrap();
    assert_eq!(store.api_key("k1b").await.unwrap().revoked_at, Some(9));

    // Clusters and their operations.
    store
        .create_cluster(
            &cluster_row("c1", "o1", "p1", "shop", "ep-1"),
            &op_row("op1", "o1", "c1", "create_cluster"),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_cluster(
                &cluster_row("c2", "o1", "p1", "shop", "ep-2"),
                &op_row("op2", "o1", "c2", "create_cluster")
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        matches!(store.get_operation("o1", "op2").await, Err(StoreError::NotFound)),
        "rolled back"
    );
    // The same name in another project or org is fine.
    store
        .create_cluster(
            &cluster_row("c3", "o1", "p1b", "shop", "ep-3"),
            &op_row("op3", "o1", "c3", "create_cluster"),
        )
        .await
        .unwrap();
    store
        .create_cluster(
            &cluster_row("c4", "o2", "p2", "shop", "ep-4"),
            &op_row("op4", "o2", "c4", "create_cluster"),
        )
        .await
        .unwrap();
    assert_eq!(store.find_cluster("o1", "p1", "shop").await.unwrap().id, "c1");
    assert_eq!(store.find_cluster("o1", "p1", "c3").await.unwrap().id, "c3");
    assert!(matches!(
        store.find_cluster("o2", "p2", "c1").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_clusters("o1", None, None, 100).await.unwrap().len(), 2);
    // Pages in creation order.
    let first = store.list_clusters("o1", None, None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let rest = store
        .list_clusters("o1", None, Some((first[0].created_at, &first[0].id)), 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0].id, first[0].id);
    let in_p1b: Vec<String> = store
        .list_clusters("o1", Some("p1b"), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(in_p1b, vec!["c3".to_string()]);
    assert!(store
        .list_clusters("o1", Some("p2"), None, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.get_operation("o2", "op1").await,
        Err(StoreError::NotFound)
    ));

    // Hosts, instances, heartbeats, routes.
    let host = host_row("h1", "on_demand");
    store.insert_host(&host).await.unwrap();
    store
        .host_launched("h1", "zone-1", "127.9.1.1", "m6id.4xlarge", Some(300 << 20))
        .await
        .unwrap();
    assert!(matches!(
        store.register_host("nope", "t", "a", 4).await,
        Err(StoreError::NotFound)
    ));
    store.register_host("h1", "thash", "127.9.1.1", 4).await.unwrap();
    let h = store.get_host("h1").await.unwrap();
    assert_eq!(h.disk_bytes, Some(300 << 20), "the land's answer names the disk");
    assert_eq!(
        (h.status.as_str(), h.zone.as_str(), h.token_hash.as_deref()),
        ("running", "zone-1", Some("thash"))
    );
    assert_eq!(h.pool(), "local-a/region-1/zone-1/m6id.4xlarge");
    // A spot notice counts once: a later report does not move the deadline.
    assert!(store.set_host_notice("h1", 100).await.unwrap());
    assert!(!store.set_host_notice("h1", 200).await.unwrap());
    assert_eq!(store.get_host("h1").await.unwrap().notice_deadline, Some(100));
    store.add_pool_event(&h.pool(), "preempted", 5).await.unwrap();
    store.add_pool_event(&h.pool(), "no_capacity", 9).await.unwrap();
    let events = store.pool_events_since(6).await.unwrap();
    assert_eq!(events, vec![(h.pool(), "no_capacity".to_string(), 9)]);

    store.insert_instance(&instance_row("i1", "c1", "h1")).await.unwrap();
    let desired = store.desired_for_host("h1").await.unwrap();
    assert_eq!(desired.len(), 1);
    let spec = &desired[0].spec;
    assert_eq!((spec.id.as_str(), spec.database.as_str()), ("i1", "shop"));
    assert_eq!((spec.durability.as_str(), spec.backup.as_deref()), ("async", None));
    let route = |routes: Vec<highrise_api::Route>| routes.into_iter().find(|r| r.endpoint == "ep-1").unwrap();
    assert_eq!(route(store.routes().await.unwrap()).addr, None, "no address yet");
    let running = ObservedInstance {
        id: "i1".into(),
        state: InstanceState::Running,
        addr: Some("127.9.1.1:25000".into()),
        error: None,
        in_recovery: Some(false),
        lsn: Some(100),
        streaming: None,
        sync_standbys: vec![],
        sync_streaming: vec![],
        term: 1,
        archived_lsn: Some(90),
        archive_error: None,
        storage: None,
        seed: None,
        max_connections: Some(400),
        sealing_generation: Some(3),
        connections: Some(1),
        xacts: Some(10),
    };
    assert!(store.heartbeat("h1", 7, std::slice::from_ref(&running)).await.unwrap());
    // What the org's primaries seal with (retiring older data keys waits for the newest).
    assert_eq!(
        store.org_primaries_sealing("o1").await.unwrap(),
        vec![Sealing {
            cluster_id: "c1".into(),
            host_id: "h1".into(),
            running: true,
            generation: Some(3),
        }]
    );
    assert!(store.org_cluster_ids("o1").await.unwrap().contains(&"c1".to_string()));
    assert_eq!(store.org_backup_running("o1").await.unwrap(), None);
    // What the server runs with is a floor for every member (a standby must allow as many
    // connections as its primary), above what a small plan allows.
    assert_eq!(
        store.desired_for_host("h1").await.unwrap()[0].spec.min_connections,
        Some(400)
    );
    let measured = highrise_api::StorageUsage {
        data_bytes: 30 << 20,
        wal_bytes: 16 << 20,
        disk_free_bytes: 1 << 30,
        disk_total_bytes: 4 << 30,
        disk_reserve_bytes: 64 << 20,
        level: highrise_api::StorageLevel::Normal,
    };
    let moved = ObservedInstance {
        lsn: Some(200),
        storage: Some(measured),
        ..running.clone()
    };
    assert!(
        !store.heartbeat("h1", 8, &[moved]).await.unwrap(),
        "only the position and the storage moved"
    );
    assert_eq!(store.instances_of_cluster("c1").await.unwrap()[0].lsn, Some(200));
    // A beat without a new measurement keeps the last one.
    store.heartbeat("h1", 9, std::slice::from_ref(&running)).await.unwrap();
    assert_eq!(
        store.instances_of_cluster("c1").await.unwrap()[0].storage,
        Some(measured)
    );
    assert_eq!(
        store.instances_of_cluster("c1").await.unwrap()[0].archived_lsn,
        Some(90)
    );
    // A new storage level is news for the planner (it tells the tenant), and kept.
    let full = highrise_api::StorageUsage {
        disk_free_bytes: 100 << 20,
        level: highrise_api::StorageLevel::ReadOnly,
        ..measured
    };
    let filled = ObservedInstance {
        storage: Some(full),
        ..running.clone()
    };
    assert!(store.heartbeat("h1", 10, &[filled]).await.unwrap());
    assert_eq!(store.instances_of_cluster("c1").await.unwrap()[0].storage, Some(full));
    let world = store.world(10, 0).await.unwrap();
    let seen = world.instances[0].storage.unwrap();
    assert_eq!(seen.level, highrise_planner::storage::Level::ReadOnly);
    assert_eq!(seen.reading.reserve_bytes, 64 << 20);
    assert_eq!(seen.reading.used_bytes, 46 << 20);
    // The host's own disk, as its agent read it.
    assert!(store.host_disks().await.unwrap().is_empty(), "nothing reported yet");
    let disk = highrise_api::HostDisk {
        total_bytes: 300 << 20,
        free_bytes: 10 << 20,
        reserve_bytes: 0,
        reserve_released: true,
    };
    store.record_host_disk("h1", &disk).await.unwrap();
    assert_eq!(store.host_disks().await.unwrap().get("h1"), Some(&disk));

    // The backup ledger: one pending backup at a time, handed to the primary, completed
    // only by the primary's host, and kept (and found by name) after the cluster is gone.
    let c1 = store.find_cluster("o1", "p1", "c1").await.unwrap();
    let b1 = highrise_control::durability::new_backup(&c1, "manual");
    store.insert_backup(&b1).await.unwrap();
    let again = highrise_control::durability::new_backup(&c1, "manual");
    assert!(matches!(
        store.insert_backup(&again).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.desired_for_host("h1").await.unwrap()[0].spec.backup.as_deref(),
        Some(b1.id.as_str())
    );
    let report = highrise_api::BackupReport {
        id: b1.id.clone(),
        status: "complete".into(),
        timeline: Some(1),
        start_lsn: Some(0x2000028),
        end_lsn: Some(0x2000100),
        size_bytes: Some(1000),
        stored_bytes: Some(100),
        error: None,
        from_creation: true,
    };
    assert!(
        !store.record_backup("h-other", &report, 9).await.unwrap(),
        "not the primary's host"
    );
    assert!(store.record_backup("h1", &report, 9).await.unwrap());
    assert!(!store.record_backup("h1", &report, 10).await.unwrap(), "recorded once");
    assert_eq!(store.desired_for_host("h1").await.unwrap()[0].spec.backup, None);
    let by_name = store.backups_by_name("o1", "p1", &c1.name).await.unwrap();
    assert_eq!(by_name.len(), 1);
    assert_eq!(
        (by_name[0].status.as_str(), by_name[0].end_lsn),
        ("complete", Some(0x2000100))
    );
    assert_eq!(
        by_name[0].since,
        Some(c1.created_at),
        "a creation image is restorable since creation"
    );

    // Data keys: the first writer wins; a rotation adds a generation, newest first; a
    // generation taken already is a conflict.
    let k1 = store.org_data_keys_or_init("o1", || "wrapped-1".into()).await.unwrap();
    let k2 = store.org_data_keys_or_init("o1", || "wrapped-2".into()).await.unwrap();
    assert_eq!(
        (k1[0].wrapped.as_str(), k2[0].wrapped.as_str()),
        ("wrapped-1", "wrapped-1")
    );
    store.add_org_data_key("o1", 2, "wrapped-g2").await.unwrap();
    assert!(matches!(
        store.add_org_data_key("o1", 2, "again").await,
        Err(StoreError::Conflict(_))
    ));
    let keys = store.org_data_keys("o1").await.unwrap();
    let gens: Vec<(i64, &str)> = keys.iter().map(|k| (k.generation, k.wrapped.as_str())).collect();
    assert_eq!(gens, vec![(2, "wrapped-g2"), (1, "wrapped-1")]);
    // An org with live clusters is not deleted.
    assert!(matches!(store.delete_org("o1", 20).await, Err(StoreError::Conflict(_))));
    let routes = store.routes().await.unwrap();
    assert_eq!(routes.len(), 3, "every live cluster has a route entry");
    assert_eq!(route(routes).addr.as_deref(), Some("127.9.1.1:25000"));

    let world = store.world(10_000, 0).await.unwrap();
    assert_eq!(world.clusters.len(), 3);
    assert_eq!(world.instances[0].observed, highrise_planner::Observed::Running);
    assert_eq!(world.operations.len(), 3);
    store.complete_operation("op1", None, 11).await.unwrap();
    store.complete_operation("op1", Some("late"), 12).await.unwrap();
    let op = store.get_operation("o1", "op1").await.unwrap();
    assert_eq!(
        (op.status.as_str(), op.error),
        ("succeeded", None),
        "completion happens once"
    );

    // Failover is a compare-and-set on the term.
    store
        .insert_instance(&InstanceRow {
            id: "i2".into(),
            role: "standby".into(),
            created_at: 7,
            ..store.instances_of_cluster("c1").await.unwrap()[0].clone()
        })
        .await
        .unwrap();
    assert!(store.failover("c1", 1, Some("i1"), "i2", 14, "test").await.unwrap());
    assert!(
        !store.failover("c1", 1, Some("i2"), "i1", 15, "stale").await.unwrap(),
        "term moved on"
    );
    let c1 = store.find_cluster("o1", "p1", "c1").await.unwrap();
    assert_eq!(c1.term, 2);
    let members = store.instances_of_cluster("c1").await.unwrap();
    assert!(members.iter().any(|m| m.id == "i1" && m.deleting));
    assert!(members
        .iter()
        .any(|m| m.id == "i2" && m.role == "primary" && !m.deleting));
    assert_eq!(
        route(store.routes().await.unwrap()).addr,
        None,
        "until i2 reports itself promoted in term 2"
    );
    let events = store.events("c1").await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["failover_started", "promoted"]);
    // A cluster with a live member is not moved home to another cloud.
    assert!(!store.relocate("c1", "local-b", "region-1", 20, "why").await.unwrap());
    store.forget_instance("i2").await.unwrap();

    // Deletion: idempotent request, then the reconciler's steps.
    let c1 = store.find_cluster("o1", "p1", "shop").await.unwrap();
    let del = store
        .delete_cluster(&c1, &op_row("op5", "o1", "c1", "delete_cluster"))
        .await
        .unwrap();
    let again = store
        .delete_cluster(&c1, &op_row("op6", "o1", "c1", "delete_cluster"))
        .await
        .unwrap();
    assert_eq!(del.id, again.id);
    assert!(matches!(
        store.find_cluster("o1", "p1", "shop").await,
        Err(StoreError::NotFound)
    ));
    assert!(store.routes().await.unwrap().iter().all(|r| r.endpoint != "ep-1"));
    store.mark_instance_deleting("i1").await.unwrap();
    assert!(store.desired_for_host("h1").await.unwrap().is_empty());
    assert!(store.heartbeat("h1", 13, &[]).await.unwrap());
    assert_eq!(store.instances_of_cluster("c1").await.unwrap()[0].observed, "absent");
    store.forget_instance("i1").await.unwrap();
    store.remove_cluster("c1").await.unwrap();
    assert!(matches!(
        store.find_cluster("o1", "p1", "c1").await,
        Err(StoreError::NotFound)
    ));
    // The name is free again.
    store
        .create_cluster(
            &cluster_row("c5", "o1", "p1", "shop", "ep-5"),
            &op_row("op7", "o1", "c5", "create_cluster"),
        )
        .await
        .unwrap();
    // Nothing of it left anywhere: its home moves, with the event that says why; its
    // cloud-loss policy reaches the planner.
    assert!(store
        .relocate("c5", "local-b", "region-1", 21, "cloud local-a is dark")
        .await
        .unwrap());
    let c5 = store.cluster_by_id("c5").await.unwrap();
    assert_eq!((c5.cloud.as_str(), c5.region.as_str()), ("local-b", "region-1"));
    let last = store.last_event("c5").await.unwrap().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.message.as_str()),
        ("relocated", "cloud local-a is dark")
    );
    store.set_on_cloud_loss("c5", "wait").await.unwrap();
    let world = store.world(30_000, 0).await.unwrap();
    let w5 = world.clusters.iter().find(|c| c.id == "c5").unwrap();
    assert_eq!(w5.on_cloud_loss, highrise_planner::clouds::CloudLoss::Wait);
    assert!(!w5.has_backup);

    evacuations(&store, c5).await;
    access(&store).await;
    org_operations(&store).await;
}

/// An org's own operations (no cluster's): one of a kind at a time, listed while they
/// run, with what they did once finished.
async fn org_operations(store: &Store) {
    let op = |id: &str, org: &str| OperationRow {
        cluster_id: None,
        ..op_row(id, org, "", "retire_data_keys")
    };
    assert_eq!(store.begin_org_operation(&op("r1", "o1")).await.unwrap(), None);
    // Another of the same org while it runs: refused, naming it; another org's: taken.
    assert_eq!(
        store.begin_org_operation(&op("r2", "o1")).await.unwrap().as_deref(),
        Some("r1")
    );
    assert_eq!(store.begin_org_operation(&op("r3", "o2")).await.unwrap(), None);
    let running: Vec<String> = store
        .running_operations("retire_data_keys")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(running, ["r1", "r3"]);
    store
        .set_operation_outcome("r1", "generation(s) 1 retired")
        .await
        .unwrap();
    store.complete_operation("r1", None, 9).await.unwrap();
    let done = store.get_operation("o1", "r1").await.unwrap();
    assert_eq!(
        (done.status.as_str(), done.outcome.as_deref()),
        ("succeeded", Some("generation(s) 1 retired"))
    );
    // Finished, a new one may begin; a finished one's outcome stays as it was.
    assert_eq!(store.begin_org_operation(&op("r4", "o1")).await.unwrap(), None);
    store.set_operation_outcome("r1", "changed").await.unwrap();
    assert_eq!(
        store.get_operation("o1", "r1").await.unwrap().outcome.as_deref(),
        Some("generation(s) 1 retired")
    );
}

/// An evacuation of the cloud `c` is in: its clusters wait, move with their operation in
/// one transaction, settle, and the evacuation finishes; one at a time per cloud.
async fn evacuations(store: &Store, c: ClusterRow) {
    let row = |id: &str| EvacuationRow {
        id: id.into(),
        cloud: c.cloud.clone(),
        to_cloud: Some("local-a".into()),
        concurrency: 2,
        status: "running".into(),
        created_by: "key:k1".into(),
        created_at: 40,
        updated_at: 40,
    };
    store.create_evacuation(&row("ev1")).await.unwrap();
    assert!(matches!(
        store.create_evacuation(&row("ev2")).await,
        Err(StoreError::Conflict(_))
    ));
    let members = store.evacuation_clusters("ev1").await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(
        (members[0].cluster_id.as_str(), members[0].state.as_str()),
        (c.id.as_str(), "waiting")
    );
    let world = store.world(41_000, 0).await.unwrap();
    assert_eq!(world.evacuations.len(), 1);
    assert_eq!(
        world.evacuations[0].members[0].state,
        highrise_planner::evacuate::MemberState::Waiting
    );

    let op = op_row("op-ev", &c.org_id, &c.id, "move_cluster");
    let to = MoveTo {
        cloud: "local-a",
        region: "region-1",
        plan: &c.plan,
        avoid: Some(&c.cloud),
    };
    assert!(store
        .start_evacuation_move("ev1", &c, &to, &op, "evacuating")
        .await
        .unwrap());
    assert!(
        !store
            .start_evacuation_move(
                "ev1",
                &c,
                &to,
                &op_row("op-ev2", &c.org_id, &c.id, "move_cluster"),
                "again"
            )
            .await
            .unwrap(),
        "it moves already"
    );
    let moved = store.cluster_by_id(&c.id).await.unwrap();
    assert_eq!(moved.cloud, "local-a");
    assert_eq!(
        moved.avoid_cloud.as_deref(),
        Some("local-b"),
        "it keeps out of the cloud it left"
    );
    let world = store.world(41_500, 0).await.unwrap();
    let intent = world.clusters.iter().find(|w| w.id == c.id).unwrap();
    assert!(intent.avoids("local-b"));
    let members = store.evacuation_clusters("ev1").await.unwrap();
    assert_eq!(members[0].state, "moving");
    assert_eq!(members[0].operation_status.as_deref(), Some("running"));
    // Cancelled, it is back where it was, avoiding nothing.
    store.cancel_move(&c.id, 41, "key:k1").await.unwrap();
    let back = store.cluster_by_id(&c.id).await.unwrap();
    assert_eq!((back.cloud.as_str(), back.avoid_cloud), ("local-b", None));
    store.set_evacuation_paused("ev1", true, 42).await.unwrap();
    assert!(store.world(43_000, 0).await.unwrap().evacuations[0].paused);
    store.set_evacuation_paused("ev1", false, 44).await.unwrap();
    store
        .set_evacuation_cluster("ev1", &c.id, "moved", None, 45)
        .await
        .unwrap();
    store.finish_evacuation("ev1", 46).await.unwrap();
    assert!(store.open_evacuations().await.unwrap().is_empty());
    assert_eq!(store.get_evacuation("ev1").await.unwrap().status, "finished");
    assert!(matches!(
        store.set_evacuation_paused("ev1", true, 47).await,
        Err(StoreError::NotFound)
    ));
    // The cloud may be evacuated again.
    store.create_evacuation(&row("ev3")).await.unwrap();
}

/// Users, members, scoped keys and the audit chain.
async fn access(store: &Store) {
    use highrise_api::Role;
    // A key with a role, a project and an end keeps them.
    let mut k = key_row("k9", "o1");
    k.role = Role::Viewer;
    k.project_id = Some("p1b".into());
    k.expires_at = Some(99);
    store.create_api_key(&k).await.unwrap();
    let got = store.api_key("k9").await.unwrap();
    assert_eq!(
        (got.role, got.project_id.as_deref(), got.expires_at),
        (Role::Viewer, Some("p1b"), Some(99))
    );

    // Invitations make users once; a second invitation of a member is a conflict.
    let user = |id: &str, email: &str| UserRow {
        id: id.into(),
        email: email.into(),
        password_hash: None,
        created_at: 5,
    };
    let ann = store
        .invite_member("o1", &user("u1", "ann@example.com"), Role::Owner, "ih1", 100)
        .await
        .unwrap();
    assert_eq!((ann.user_id.as_str(), ann.joined_at), ("u1", None));
    assert!(matches!(
        store
            .invite_member("o1", &user("u9", "ann@example.com"), Role::Viewer, "ih", 100)
            .await,
        Err(StoreError::Conflict(_))
    ));
    // The same person in another org is the same user.
    let again = store
        .invite_member("o2", &user("u9", "ann@example.com"), Role::Viewer, "ih2", 100)
        .await
        .unwrap();
    assert_eq!(again.user_id, "u1");
    store.accept_invite("o1", "u1", Some("phc"), 6).await.unwrap();
    assert!(matches!(
        store.accept_invite("o1", "u1", None, 7).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .user_by_email("ann@example.com")
            .await
            .unwrap()
            .password_hash
            .as_deref(),
        Some("phc")
    );
    assert_eq!(store.memberships("u1").await.unwrap().len(), 1, "o2 not joined yet");
    store
        .invite_member("o1", &user("u2", "bob@example.com"), Role::Developer, "ih3", 100)
        .await
        .unwrap();
    store.accept_invite("o1", "u2", Some("phc2"), 8).await.unwrap();
    assert_eq!(
        store.member("o1", "bob@example.com").await.unwrap().role,
        Role::Developer
    );
    // The last owner stays one.
    assert!(matches!(
        store.set_member_role("o1", "u1", Role::Admin).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.remove_member("o1", "u1", 9).await,
        Err(StoreError::Conflict(_))
    ));
    store.set_member_role("o1", "u2", Role::Owner).await.unwrap();
    store.set_member_role("o1", "u1", Role::Viewer).await.unwrap();
    // Removing a member ends their sessions.
    let mut session = key_row("s1", "o1");
    session.user_id = Some("u1".into());
    store.create_api_key(&session).await.unwrap();
    assert!(store.list_api_keys("o1").await.unwrap().iter().all(|k| k.id != "s1"));
    store.remove_member("o1", "u1", 10).await.unwrap();
    assert_eq!(store.api_key("s1").await.unwrap().revoked_at, Some(10));
    assert_eq!(store.list_members("o1").await.unwrap().len(), 1);

    // The audit chain: numbered per org, filtered, paged.
    let entry = |org: &str, actor: &str, target: &str, at_ms: i64| AuditRow {
        org_id: org.into(),
        seq: 0,
        at_ms,
        actor: actor.into(),
        action: "POST /v1/clusters".into(),
        target: target.into(),
        source: "127.0.0.1".into(),
        result: "202".into(),
        hash: String::new(),
    };
    let seal = |prev: &str, r: &AuditRow| format!("{prev}>{}", r.seq);
    for (i, (actor, target)) in [
        ("user:u1", "cluster a"),
        ("key:k1", "cluster b"),
        ("user:u1", "project x"),
    ]
    .into_iter()
    .enumerate()
    {
        let row = store
            .append_audit(&entry("o1", actor, target, 1000 * (i as i64 + 1)), seal)
            .await
            .unwrap();
        assert_eq!(row.seq, i as i64 + 1);
    }
    let other = store
        .append_audit(&entry("o2", "key:x", "cluster z", 1), seal)
        .await
        .unwrap();
    assert_eq!((other.seq, other.hash.as_str()), (1, ">1"));
    let all = store
        .audit(
            "o1",
            &AuditFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>(),
        [">1", ">1>2", ">1>2>3"]
    );
    let by = |f: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .audit(
                    "o1",
                    &AuditFilter {
                        limit: if f.limit == 0 { 100 } else { f.limit },
                        ..f
                    },
                )
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(AuditFilter {
            actor: Some("user:u1".into()),
            ..Default::default()
        })
        .await,
        [1, 3]
    );
    assert_eq!(
        by(AuditFilter {
            target: Some("cluster".into()),
            ..Default::default()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        by(AuditFilter {
            since_ms: Some(2000),
            until_ms: Some(2500),
            ..Default::default()
        })
        .await,
        [2]
    );
    assert_eq!(
        by(AuditFilter {
            after_seq: Some(1),
            limit: 1,
            ..Default::default()
        })
        .await,
        [2]
    );

    // A cluster's certificate: the first of two issuers wins; a renewal replaces only the
    // certificate it read.
    let cert = |n: &str| ClusterCertRow {
        server_name: "cl-x.db.localhost".into(),
        cert_pem: format!("cert {n}"),
        key_sealed: format!("key {n}"),
        not_after: 100,
    };
    assert_eq!(store.cluster_cert("cl-x").await.unwrap(), None);
    let first = store.replace_cluster_cert("cl-x", None, &cert("1"), 1).await.unwrap();
    assert_eq!(first, cert("1"));
    assert_eq!(
        store.replace_cluster_cert("cl-x", None, &cert("2"), 1).await.unwrap(),
        cert("1")
    );
    assert_eq!(
        store
            .replace_cluster_cert("cl-x", Some(&first), &cert("3"), 2)
            .await
            .unwrap(),
        cert("3")
    );
    assert_eq!(
        store
            .replace_cluster_cert("cl-x", Some(&first), &cert("4"), 3)
            .await
            .unwrap(),
        cert("3")
    );

    // The master key's record, and re-sealing all it seals at once — or nothing.
    let row = MasterKeyRow {
        fingerprint: "fp1".into(),
        audit_key_sealed: "audit1".into(),
    };
    assert_eq!(store.init_master_key_row(&row).await.unwrap(), row);
    let other = MasterKeyRow {
        fingerprint: "fp9".into(),
        ..row.clone()
    };
    assert_eq!(
        store.init_master_key_row(&other).await.unwrap(),
        row,
        "the first record stays"
    );
    store.add_org_data_key("o1", 7, "wrapped-by-1").await.unwrap();
    let old = store.sealed_under_master_key().await.unwrap();
    let mut new = old.clone();
    new.audit_key = "audit2".into();
    for k in &mut new.data_keys {
        k.2 = format!("{}-by-2", k.0);
    }
    for k in &mut new.cluster_keys {
        k.1 = "key-by-2".into();
    }
    // Read before someone changed a value: nothing is re-sealed.
    let mut stale = old.clone();
    stale.cluster_keys[0].1 = "not what is stored".into();
    assert!(matches!(
        store.reseal_master_key("fp1", "fp2", &stale, &new).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.master_key_row().await.unwrap(), Some(row.clone()));
    store.reseal_master_key("fp1", "fp2", &old, &new).await.unwrap();
    let now = store.sealed_under_master_key().await.unwrap();
    assert_eq!(
        (now.audit_key.as_str(), now.data_keys.len()),
        ("audit2", old.data_keys.len())
    );
    assert!(
        now.data_keys.iter().all(|k| k.2.ends_with("-by-2")),
        "{:?}",
        now.data_keys
    );
    assert_eq!(now.cluster_keys, vec![("cl-x".to_string(), "key-by-2".to_string())]);
    assert_eq!(store.master_key_row().await.unwrap().unwrap().fingerprint, "fp2");

    // Projects: only an empty one goes.
    let p1b = store.project("o1", "p1b").await.unwrap();
    assert!(matches!(store.delete_project(&p1b).await, Err(StoreError::Conflict(_))));
    let empty = ProjectRow {
        id: "p-empty".into(),
        org_id: "o1".into(),
        name: "empty".into(),
        created_at: 1,
    };
    store.create_project(&empty).await.unwrap();
    store.delete_project(&empty).await.unwrap();
    assert!(matches!(
        store.project("o1", "p-empty").await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("control.db").display());
    exercise(Store::open(&url).await.unwrap()).await;
    // Migrations are applied once; reopening keeps the data.
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.org_count().await.unwrap(), 2);
}

#[tokio::test]
async fn store_on_postgres() {
    let pg = ScratchServer::start(&[]).await.unwrap();
    exercise(Store::open(&pg.admin_url()).await.unwrap()).await;
    let store = Store::open(&pg.admin_url()).await.unwrap();
    assert_eq!(store.org_count().await.unwrap(), 2);
}

/// Writers cancelled at any moment (a request past its deadline) never leave a pooled
/// connection inside a transaction: on SQLite that would hold the write lock for good,
/// and every later write would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_writers_leave_no_transaction_behind_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("control.db").display());
    let store = std::sync::Arc::new(Store::open(&url).await.unwrap());
    for n in 0..1000u32 {
        let s = store.clone();
        let id = format!("o{n}");
        // Cancelled somewhere between before BEGIN and after COMMIT.
        let cut = Duration::from_micros(u64::from(n % 40) * 25);
        let _ = tokio::time::timeout(cut, async move {
            s.create_org(&org_row(&id, &id), &format!("p{n}"), &key_row(&format!("k{n}"), &id))
                .await
        })
        .await;
    }
    // Every connection of the pool still takes writes at once.
    for n in 0..20u32 {
        let id = format!("after{n}");
        tokio::time::timeout(
            Duration::from_secs(10),
            store.create_org(&org_row(&id, &id), &format!("pa{n}"), &key_row(&format!("ka{n}"), &id)),
        )
        .await
        .expect("a write after the cancelled ones hangs")
        .unwrap();
    }
}
