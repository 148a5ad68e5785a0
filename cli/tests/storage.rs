//! A full disk never takes a database down (issue 12), on the real `highrise up` with a
//! host disk of its own (`--host-disk`: a loop-mounted ext4 image) and real PostgreSQL:
//! filling it turns the database read-only before it is full, the tenant frees space in a
//! read-write session and writes resume; a single transaction that would fill the disk is
//! cancelled before it does. A ledger writer logs every acknowledged insert; none may be
//! lost.

mod common;

use common::ha::*;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn events(up: &Up, name: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(&up.cli_ok(&["cluster", "events", name, "--output", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn kinds(up: &Up, name: &str) -> Vec<String> {
    events(up, name)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("storage_"))
        .collect()
}

/// Frees space as the service's docs tell a tenant of a read-only database to: a session
/// that asks for read-write, then the statement (each `-c` its own transaction).
fn in_read_write_session(uri: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", uri])
        .args(["-c", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql} in a read-write session: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filling_disk_turns_the_database_read_only_in_time_and_freeing_space_brings_writes_back() {
    let tmp = temp_root();
    let up = Arc::new(Up::start_with(tmp.path(), &["--host-disk", "300MiB"]));
    let u = up.clone();
    let uri = tokio::task::spawn_blocking(move || {
        let uri = u.create_cluster("fill");
        psql_ok(
            &uri,
            "create table ledger (id bigserial primary key, at timestamptz default now())",
        );
        psql_ok(&uri, "create table big (t text)");
        uri
    })
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));

    // Fill the disk in 2 MB transactions until the database refuses.
    let (u, fill_uri) = (up.clone(), uri.clone());
    let refused = tokio::task::spawn_blocking(move || {
        for _ in 0..400 {
            let (ok, _, err) = psql(
                &fill_uri,
                "insert into big select repeat(md5(g::text), 30) from generate_series(1, 2000) g",
            );
            if !ok {
                return err;
            }
        }
        dump_logs(&u.root);
        panic!("400 MB went into a 300 MB disk");
    })
    .await
    .unwrap();
    assert!(refused.contains("read-only transaction"), "{refused}");
    let show = |up: &Up| -> Value {
        serde_json::from_str(&up.cli_ok(&["cluster", "show", "fill", "--output", "json"])).unwrap()
    };
    let (u, read_uri) = (up.clone(), uri.clone());
    tokio::task::spawn_blocking(move || {
        let shown = show(&u);
        assert_eq!(shown["status"], "running", "{shown}");
        assert_eq!(shown["storage_level"], "read_only", "{shown}");
        let disk = &shown["members"][0]["storage"];
        assert!(
            disk["disk_free_bytes"].as_u64().unwrap() > 4 << 20,
            "read-only before the disk is full: {disk}"
        );
        // Reads go on; the events say why writes do not, with the numbers.
        assert_eq!(psql_ok(&read_uri, "select count(*) > 0 from big").trim(), "t");
        wait_for("the story in events", Duration::from_secs(10), || {
            kinds(&u, "fill") == ["storage_warning", "storage_read_only"]
        });
        let (_, msg) = events(&u, "fill").pop().unwrap();
        assert!(msg.contains("% of its disk") && msg.contains("READ WRITE"), "{msg}");
        let text = u.cli_ok(&["cluster", "show", "fill"]);
        assert!(text.contains("READ-ONLY"), "{text}");
    })
    .await
    .unwrap();

    // The tenant frees space in a session that asks for read-write; writes come back.
    let (u, free_uri) = (up.clone(), uri.clone());
    tokio::task::spawn_blocking(move || {
        in_read_write_session(&free_uri, "truncate big");
        wait_for("writes allowed again", Duration::from_secs(30), || {
            psql(&free_uri, "insert into ledger default values").0
        });
        assert_eq!(
            kinds(&u, "fill"),
            ["storage_warning", "storage_read_only", "storage_read_write"]
        );
        assert_eq!(show(&u)["storage_level"], "normal");
    })
    .await
    .unwrap();

    // One transaction that alone would fill the disk (the incident that took a database
    // down: PostgreSQL could not even restart) is cancelled before it does.
    let (u, big_uri) = (up.clone(), uri.clone());
    tokio::task::spawn_blocking(move || {
        let (ok, _, err) = psql(
            &big_uri,
            "insert into big select repeat(md5(g::text), 30) from generate_series(1, 1000000) g",
        );
        assert!(!ok, "a 1 GB insert went into a 300 MB disk");
        assert!(err.contains("canceling statement"), "{err}");
        assert_eq!(psql_ok(&big_uri, "select 1").trim(), "1", "the server stays up");
        // Its dead rows hold the space until vacuumed; the tenant truncates.
        in_read_write_session(&big_uri, "truncate big");
        wait_for("writes allowed again", Duration::from_secs(30), || {
            psql(&big_uri, "insert into ledger default values").0
        });
        let shown = show(&u);
        assert_eq!(shown["status"], "running", "{shown}");
    })
    .await
    .unwrap();

    stop.store(true, Ordering::Relaxed);
    let (acked, _) = writer.await.unwrap();
    assert!(!acked.is_empty());
    check_ledger(&uri, &acked);
}
