//! Evacuating a cloud (issue 11) on the real `highrise up`: five clusters, single-node and
//! HA (one of them spread over both clouds), under ledger writers, moved from `local-a` to `local-b` two at a time — nothing
//! acknowledged lost, each move's write pause measured — with `up` killed while moves are
//! in flight and started again: the evacuation carries on from the store, can be paused
//! (the running moves finish, nothing new starts) and resumed, and finishes.

mod common;

use common::ha::*;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Writer = tokio::task::JoinHandle<(Vec<i64>, Vec<(Instant, bool)>)>;

fn writers(uris: &[(String, String)]) -> (Vec<Writer>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = uris
        .iter()
        .map(|(_, uri)| tokio::spawn(ledger_writer(uri.clone(), stop.clone())))
        .collect();
    (handles, stop)
}

fn evacuation(up: &Up, id: &str) -> Value {
    serde_json::from_str(&up.cli_ok(&["cloud", "evacuation", id, "--output", "json"])).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloud_is_evacuated_under_writers_and_the_evacuation_survives_a_restart() {
    let tmp = temp_root();
    let root = tmp.path().to_path_buf();
    let r = root.clone();
    let (up, mut uris) = tokio::task::spawn_blocking(move || {
        let up = Up::start_in(&r);
        // Oldest first: the HA clusters move before the crash, the others after it.
        let mut uris = Vec::new();
        let (uri, _) = ha_cluster(&up, "h1", 1);
        uris.push(("h1".to_string(), uri));
        // h2's standby lives in local-b already: it moves off local-a all the same.
        let (uri, _) = ha_cluster_with(&up, "h2", &["--replicas", "1", "--spread-clouds"]);
        uris.push(("h2".to_string(), uri));
        for name in ["s1", "s2", "s3"] {
            let uri = up.create_cluster(name);
            psql_ok(&uri, "create table ledger(id bigserial primary key)");
            uris.push((name.to_string(), uri));
        }
        (up, uris)
    })
    .await
    .unwrap();

    // Writers on every cluster; the evacuation begins.
    let (handles, stop) = writers(&uris);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let begun = Instant::now();
    let (up, out) = tokio::task::spawn_blocking(move || {
        let out = up.cli_ok(&[
            "cloud",
            "evacuate",
            "local-a",
            "--to",
            "local-b",
            "--concurrency",
            "2",
            "--output",
            "json",
        ]);
        (up, out)
    })
    .await
    .unwrap();
    let e: Value = serde_json::from_str(&out).unwrap();
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(e["clusters"].as_array().unwrap().len(), 5, "{e}");
    assert!(e["counts"]["moving"].as_u64().unwrap() <= 2, "{e}");
    // Until two clusters have moved and more are moving; never more than two at once.
    let (u, i) = (Arc::new(up), id.clone());
    let u2 = u.clone();
    let before_crash = tokio::task::spawn_blocking(move || {
        let mut seen = Value::Null;
        wait_for("two clusters moved, more moving", Duration::from_secs(120), || {
            seen = evacuation(&u2, &i);
            assert!(seen["counts"]["moving"].as_u64().unwrap() <= 2, "{seen}");
            assert_eq!(seen["counts"]["failed"], 0, "{seen}");
            seen["counts"]["moved"].as_u64().unwrap() >= 2 && seen["counts"]["moving"].as_u64().unwrap() >= 1
        });
        seen
    })
    .await
    .unwrap();
    // `up` dies in the middle of moves (every agent and database of the local land with
    // it) and starts again: the evacuation carries on from the store.
    let mut up = Arc::try_unwrap(u).unwrap_or_else(|_| panic!("up still shared"));
    let crashed = Instant::now();
    up.crash();
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<Vec<i64>> = Vec::new();
    for (n, h) in handles.into_iter().enumerate() {
        let (ids, mut timeline) = h.await.unwrap();
        // The moves' pauses, not the crash's outage.
        timeline.retain(|(t, _)| *t < crashed);
        let (pause, failures) = longest_pause(&timeline, begun);
        let name = &uris[n].0;
        let moved = before_crash["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == name.as_str() && c["state"] == "moved");
        eprintln!(
            "{name}: {} commits, longest write pause {pause:?} ({failures} failed attempts){}",
            ids.len(),
            if moved { ", moved" } else { "" }
        );
        // A move's switchover pauses writes for 0.4–0.8 s on this machine when the test runs
        // alone; the bound leaves room for the whole suite's load on two cores (1.07 s seen).
        // It still tells a switchover from an outage (a failover takes seconds).
        if moved && name.starts_with('h') {
            assert!(pause <= Duration::from_secs(2), "{name}: write pause {pause:?}");
        }
        acked.push(ids);
    }

    let old_proxies = up.proxies();
    drop(up);
    let r = root.clone();
    let up = tokio::task::spawn_blocking(move || Up::start_in(&r)).await.unwrap();
    for (_, uri) in &mut uris {
        *uri = uri.replace(&old_proxies, &up.proxies());
    }
    let (handles, stop) = writers(&uris);
    let (u, i) = (Arc::new(up), id.clone());
    let u2 = u.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut seen = evacuation(&u2, &i);
        assert_eq!(seen["status"], "running", "{seen}");
        // Paused: no new move starts, the running ones finish.
        let paused: Value =
            serde_json::from_str(&u2.cli_ok(&["cloud", "evacuation", &i, "--pause", "--output", "json"])).unwrap();
        assert_eq!(paused["status"], "paused", "{paused}");
        wait_for("the running moves to finish", Duration::from_secs(180), || {
            seen = evacuation(&u2, &i);
            assert_eq!(seen["counts"]["failed"], 0, "{seen}");
            seen["counts"]["moving"] == 0
        });
        let moved = seen["counts"]["moved"].clone();
        let again = evacuation(&u2, &i);
        assert_eq!(again["counts"]["moving"], 0, "nothing starts while paused: {again}");
        assert_eq!(again["counts"]["moved"], moved, "nothing starts while paused: {again}");
        let resumed: Value =
            serde_json::from_str(&u2.cli_ok(&["cloud", "evacuation", &i, "--resume", "--output", "json"])).unwrap();
        assert_eq!(resumed["status"], "running", "{resumed}");
        wait_for("the evacuation to finish", Duration::from_secs(240), || {
            seen = evacuation(&u2, &i);
            seen["status"] == "finished"
        });
        seen
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for (n, h) in handles.into_iter().enumerate() {
        acked[n].extend(h.await.unwrap().0);
    }
    assert_eq!(done["counts"]["moved"], 5, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    let u2 = u.clone();
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || {
        let id = id2;
        for (n, (name, uri)) in uris.iter().enumerate() {
            let shown = show(&u2, name);
            assert_eq!(shown["cloud"], "local-b", "{shown}");
            assert_eq!(shown["avoid_cloud"], "local-a", "{shown}");
            let members = shown["members"].as_array().unwrap();
            assert!(
                !members.is_empty() && members.iter().all(|m| m["cloud"] == "local-b"),
                "{shown}"
            );
            check_ledger(uri, &acked[n]);
        }
        // The fleet view as a person reads it.
        let text = u2.cli_ok(&["cloud", "evacuation", &id]);
        assert!(
            text.contains("finished") && text.matches(" moved ").count() == 5,
            "{text}"
        );
    })
    .await
    .unwrap();
}
