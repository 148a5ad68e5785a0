//! Moving a cluster (issue 11, first step) on the real `highrise up`: to another cloud, and
//! to another plan, by replace-then-switchover under a ledger writer through the proxy —
//! nothing acknowledged lost, a short write pause, the same connection string.

mod common;

use common::ha::*;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn members(shown: &Value) -> Vec<Value> {
    shown["members"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicated_cluster_moves_to_another_cloud_and_changes_plan_without_losing_a_commit() {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let u = up.clone();
    let (uri, before) = tokio::task::spawn_blocking(move || ha_cluster(&u, "mover", 1))
        .await
        .unwrap();
    assert!(members(&before).iter().all(|m| m["cloud"] == "local-a"), "{before}");
    // Some data, and a backup of it: the new members are to be built from object storage,
    // not from the primary.
    let (u, bulk_uri) = (up.clone(), uri.clone());
    let data_bytes = tokio::task::spawn_blocking(move || {
        psql_ok(
            &bulk_uri,
            "create table bulk as select g, repeat(md5(g::text), 12) as pad from generate_series(1, 80000) g",
        );
        // After the creation image (taken on its own right after the create).
        wait_for("the first backup to finish", Duration::from_secs(60), || {
            let list: Value =
                serde_json::from_str(&u.cli_ok(&["backup", "list", "mover", "--output", "json"])).unwrap();
            let all = list.as_array().unwrap();
            !all.is_empty() && all.iter().all(|b| b["status"] == "complete")
        });
        u.cli_ok(&["backup", "create", "mover", "--wait"]);
        psql_ok(&bulk_uri, "select pg_database_size(current_database())")
            .trim()
            .parse::<u64>()
            .unwrap()
    })
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // To the other cloud.
    let started = Instant::now();
    let u = up.clone();
    let out = tokio::task::spawn_blocking(move || u.cli(&["cluster", "move", "mover", "--to", "local-b", "--wait"]))
        .await
        .unwrap();
    let moved = started.elapsed();
    let steps = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{steps}");
    // The operation's steps, as `--wait` shows them.
    assert!(steps.contains("step 1/4: building new members"), "{steps}");
    assert!(steps.contains("step 4/4: retiring"), "{steps}");
    let u = up.clone();
    let after = tokio::task::spawn_blocking(move || {
        wait_members_running(&u, "mover", 2, "two members in the new cloud", Duration::from_secs(60));
        show(&u, "mover")
    })
    .await
    .unwrap();
    assert_eq!(after["cloud"], "local-b", "{after}");
    assert!(members(&after).iter().all(|m| m["cloud"] == "local-b"), "{after}");
    assert_eq!(
        after["connection_uri"], before["connection_uri"],
        "the same connection string"
    );
    assert_eq!(after["term"], 2, "one switchover: {after}");
    // Both new members were built from the backup; the old primary sent each only the WAL
    // after it — at most what was written since the stream began, far below the data.
    let (lsn_uri, u) = (uri.clone(), up.clone());
    let (now_lsn, seeds) = tokio::task::spawn_blocking(move || {
        let now = psql_ok(&lsn_uri, "select pg_current_wal_lsn() - '0/0'")
            .trim()
            .parse::<u64>()
            .unwrap();
        (now, members(&show(&u, "mover")))
    })
    .await
    .unwrap();
    for m in &seeds {
        let seed = &m["seed"];
        assert_eq!(seed["from"], "backup", "{m}");
        assert_eq!(seed["primary_bytes"], 0, "{m}");
        let start = seed["stream_start_lsn"]
            .as_u64()
            .unwrap_or_else(|| panic!("no stream start: {m}"));
        let streamed = now_lsn.saturating_sub(start);
        eprintln!(
            "{}: built from {}; streamed from the primary at most {} KiB of {} KiB of data",
            m["instance_id"],
            seed["backup_id"],
            streamed / 1024,
            data_bytes / 1024
        );
        assert!(
            streamed < data_bytes / 2,
            "streamed {streamed} B for {data_bytes} B of data"
        );
    }

    // To a bigger plan, in place.
    let resized_from = Instant::now();
    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        u.cli_ok(&["cluster", "update", "mover", "--plan", "medium"]);
        wait_for("the resize to finish", Duration::from_secs(90), || {
            let shown = show(&u, "mover");
            shown["term"] == 3
                && members(&shown).len() == 2
                && members(&shown)
                    .iter()
                    .all(|m| m["state"] == "running" && m["cloud"] == "local-b")
        });
        // And back down: the new small members must allow as many connections as the
        // medium primary they follow until the switchover (PostgreSQL pauses a standby's
        // recovery otherwise — found by bench/run moves).
        wait_for("the resize up's operation to end", Duration::from_secs(30), || {
            u.cli(&["cluster", "update", "mover", "--plan", "small"])
                .status
                .success()
        });
        wait_for("the resize down to finish", Duration::from_secs(90), || {
            let shown = show(&u, "mover");
            shown["term"] == 4
                && members(&shown).len() == 2
                && members(&shown).iter().all(|m| m["state"] == "running")
                && shown["status"] == "running"
        });
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, timeline) = writer.await.unwrap();
    let (pause, failures) = longest_pause(&timeline, started);
    eprintln!(
        "move: {moved:?}; resize: {:?}; longest write pause {pause:?} ({failures} failed attempts); {} acked",
        resized_from.elapsed(),
        acked.len()
    );
    check_ledger(&uri, &acked);
    assert!(pause <= Duration::from_secs(2), "write pause {pause:?}");

    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        let shown = show(&u, "mover");
        assert_eq!(shown["plan"], "small");
        let events = u.cli_ok(&["cluster", "events", "mover"]);
        assert!(
            events.contains("move_started") && events.contains("moving from local-a/region-1 to local-b/region-1"),
            "{events}"
        );
        assert!(events.contains("resizing from small to medium"), "{events}");
        assert!(events.contains("resizing from medium to small"), "{events}");
        // A second move to where it is, and a move of a cluster that is not there, are refused.
        let again = u.cli(&["cluster", "move", "mover", "--to", "local-b"]);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
        let nowhere = u.cli(&["cluster", "move", "mover", "--to", "local-z"]);
        assert!(String::from_utf8_lossy(&nowhere.stderr).contains("unknown cloud"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_cancelled_before_its_switchover_leaves_the_cluster_as_it_was() {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let u = up.clone();
    let (uri, before) = tokio::task::spawn_blocking(move || ha_cluster(&u, "stayer", 1))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));
    let started = Instant::now();
    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        u.cli_ok(&["cluster", "move", "stayer", "--to", "local-b"]);
        // Cancelled once the first new member exists, long before it could take over.
        wait_for("a member in the new cloud", Duration::from_secs(60), || {
            members(&show(&u, "stayer")).iter().any(|m| m["cloud"] == "local-b")
        });
        let op: Value =
            serde_json::from_str(&u.cli_ok(&["cluster", "move", "stayer", "--cancel", "--output", "json"])).unwrap();
        assert_eq!(op["kind"], "move_cluster", "{op}");
        assert_eq!(op["status"], "cancelled", "{op}");
        // Nothing left to cancel.
        let again = u.cli(&["cluster", "move", "stayer", "--cancel"]);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("move in progress"));
        wait_for("the members built for the move to go", Duration::from_secs(60), || {
            let shown = show(&u, "stayer");
            members(&shown).len() == 2
                && members(&shown)
                    .iter()
                    .all(|m| m["cloud"] == "local-a" && m["state"] == "running")
        });
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, timeline) = writer.await.unwrap();
    check_ledger(&uri, &acked);
    let (pause, _) = longest_pause(&timeline, started);
    eprintln!("cancelled move: longest write pause {pause:?}, {} acked", acked.len());
    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        let after = show(&u, "stayer");
        assert_eq!(after["cloud"], "local-a", "{after}");
        assert_eq!(after["term"], before["term"], "no switchover: {after}");
        let ids = |v: &Value| {
            let mut ids: Vec<String> = members(v).iter().map(|m| m["instance_id"].to_string()).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&after), ids(&before), "the same members as before");
        let events = u.cli_ok(&["cluster", "events", "stayer"]);
        assert!(events.contains("move_cancelled"), "{events}");
    })
    .await
    .unwrap();
}
