//! The control plane moves to a new address (issue 11) on the real `highrise up`: it is
//! stopped and started again at another port over the same store, the land's metadata
//! tells where it went, and every agent and proxy follows — while the databases keep
//! answering, none restarted, nothing acknowledged lost.

mod common;

use common::ha::*;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn started_at(uri: &str) -> String {
    psql_ok(uri, "select pg_postmaster_start_time()")
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_and_proxies_follow_the_control_plane_to_a_new_address_and_no_database_restarts() {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let u = up.clone();
    let uris = tokio::task::spawn_blocking(move || {
        let (ha, _) = ha_cluster(&u, "ha", 1);
        let one = u.create_cluster("one");
        psql_ok(&one, "create table ledger(id bigserial primary key)");
        vec![ha, one]
    })
    .await
    .unwrap();
    let before: Vec<String> = uris.iter().map(|u| started_at(u)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = uris
        .iter()
        .map(|u| tokio::spawn(ledger_writer(u.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The control plane moves.
    let moved_from = Instant::now();
    let moved_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/land/control-plane/move", up.land_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_url = answer["api_url"].as_str().unwrap().to_string();
    assert_ne!(new_url, up.api_url, "a new address");
    assert!(
        reqwest::get(format!("{}/v1/clouds", up.api_url)).await.is_err(),
        "nothing answers at the old address"
    );

    // Every agent beats to the new address.
    let key = up.api_key.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts: Value = reqwest::Client::new()
            .get(format!("{new_url}/v1/hosts"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let running: Vec<&Value> = hosts
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["status"] == "running")
            .collect();
        if !running.is_empty() && running.iter().all(|h| h["last_heartbeat"].as_i64() > Some(moved_at)) {
            break;
        }
        assert!(Instant::now() < deadline, "agents still silent: {hosts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agents_back = moved_from.elapsed();

    // Every proxy serves a cluster created after the move: each took its routes from the
    // control plane at its new address (the CLI found it through the rewritten config).
    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        let late = u.create_cluster("late");
        for one in each_host(&late) {
            wait_for("the proxy to serve the new cluster", Duration::from_secs(10), || {
                psql(&one, "select 'via the moved control plane'").1.trim() == "via the moved control plane"
            });
        }
    })
    .await
    .unwrap();

    stop.store(true, Ordering::Relaxed);
    for (n, w) in writers.into_iter().enumerate() {
        let (acked, timeline) = w.await.unwrap();
        let (pause, failures) = longest_pause(&timeline, moved_from);
        eprintln!(
            "cluster {n}: {} commits, longest write pause {pause:?} ({failures} failed) across the move; agents back after {agents_back:?}",
            acked.len()
        );
        assert_eq!(failures, 0, "cluster {n} kept answering");
        check_ledger(&uris[n], &acked);
    }
    let after: Vec<String> = uris.iter().map(|u| started_at(u)).collect();
    assert_eq!(before, after, "no database restarted");
}
