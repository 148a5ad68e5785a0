//! Cells (issue 14), on the real `highrise up` (two cells by default): orgs are placed in
//! cells, every cluster of an org runs on its cell's hosts only, and killing every host of
//! one cell leaves the other cell's clusters serving without a single error.

mod common;

use common::ha::{check_ledger, ledger_writer, show};
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The control plane's hosts (operator).
async fn hosts(up: &Up) -> Vec<Value> {
    reqwest::Client::new()
        .get(format!("{}/v1/hosts", up.api_url))
        .bearer_auth(&up.api_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The cells of the hosts a cluster's members run on.
async fn member_cells(up: &Up, shown: &Value) -> Vec<String> {
    let hosts = hosts(up).await;
    shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let h = hosts
                .iter()
                .find(|h| h["id"] == m["host_id"])
                .expect("the member's host");
            h["cell"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_host_of_a_cell_leaves_the_other_cells_clusters_untouched() {
    let tmp = temp_root();
    let root = tmp.path().to_path_buf();
    // The operator's org went to c1 (the first); a new org goes to the emptiest cell.
    let (up, _a_uri, b_uri, b_key) = tokio::task::spawn_blocking(move || {
        let up = Up::start_with(&root, &[]);
        let created = json(&up.cli_ok(&["org", "create", "globex", "--output", "json"]));
        assert_eq!(created["org"]["cell"], "c2", "{created}");
        let b_key = format!("--api-key={}", created["api_key"]["secret"].as_str().unwrap());
        let a_uri = up.create_cluster("a");
        let out = up.cli_ok(&["cluster", "create", "b", "--replicas", "1", "--wait", &b_key]);
        let b_uri = out.lines().last().unwrap().trim().to_string();
        psql_ok(&b_uri, "create table ledger (id bigserial primary key)");
        (up, a_uri, b_uri, b_key)
    })
    .await
    .unwrap();
    let shown_a = show(&up, "a");
    let shown_b: Value = json(&up.cli_ok(&["cluster", "show", "b", "--output", "json", &b_key]));
    assert_eq!(member_cells(&up, &shown_a).await, vec!["c1"]);
    assert_eq!(member_cells(&up, &shown_b).await, vec!["c2", "c2"]);

    // Org B writes all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(b_uri.clone(), Arc::clone(&stop)));
    wait_for_async("B's writer to commit", || async {
        psql(&b_uri, "select count(*) from ledger").1 != "0"
    })
    .await;

    // Every host of cell c1 is killed.
    let c1: Vec<String> = hosts(&up)
        .await
        .iter()
        .filter(|h| h["cell"] == "c1" && h["status"] == "running")
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!c1.is_empty());
    let http = reqwest::Client::new();
    for id in &c1 {
        let status = http
            .post(format!("{}/land/hosts/{id}/kill", up.land_url))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "kill {id}: {status}");
    }
    // A's cluster is down with its cell (the control plane sees its host fall silent)…
    let t = std::time::Instant::now();
    wait_for_async("A's cluster to be seen down", || async {
        show(&up, "a")["status"] != "running"
    })
    .await;
    eprintln!("A seen {} after {:?}", show(&up, "a")["status"], t.elapsed());
    // … while B's writer kept going a while longer.
    let acked_before = psql_ok(&b_uri, "select count(*) from ledger").parse::<u64>().unwrap();
    wait_for_async("B's writer to go on", || async {
        psql_ok(&b_uri, "select count(*) from ledger").parse::<u64>().unwrap() > acked_before + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (acked, timeline) = writer.await.unwrap();
    let failed = timeline.iter().filter(|(_, ok)| !ok).count();
    assert_eq!(failed, 0, "B's writer saw {failed} failed attempts");
    check_ledger(&b_uri, &acked);
    let after: Value = json(&up.cli_ok(&["cluster", "show", "b", "--output", "json", &b_key]));
    assert_eq!(after["status"], "running");
    assert_eq!(after["term"], shown_b["term"], "B's cluster did not even fail over");
}

/// [`wait_for`] for async conditions (60 s).
async fn wait_for_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
