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
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // To the other cloud.
    let started = Instant::now();
    let u = up.clone();
    tokio::task::spawn_blocking(move || u.cli_ok(&["cluster", "move", "mover", "--to", "local-b", "--wait"]))
        .await
        .unwrap();
    let moved = started.elapsed();
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
    assert!(pause <= Duration::from_secs(1), "write pause {pause:?}");

    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        let shown = show(&u, "mover");
        assert_eq!(shown["plan"], "medium");
        let events = u.cli_ok(&["cluster", "events", "mover"]);
        assert!(
            events.contains("move_started") && events.contains("moving from local-a/region-1 to local-b/region-1"),
            "{events}"
        );
        assert!(events.contains("resizing from small to medium"), "{events}");
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
