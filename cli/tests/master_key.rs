//! Rotating the master key without downtime (issue 14), on the real `highrise up`:
//! `highrise land rotate-master-key` re-seals everything the master key seals in the
//! store — the orgs' data keys, the clusters' certificate keys, the audit chain's key —
//! under a new key while an HA cluster takes writes through the proxy. The databases never
//! restart and the writer loses nothing; backups from before restore after; the audit
//! chain still verifies; the old key opens nothing in the store any more, another key is
//! refused, and `up` starts again on the new key alone.

mod common;

use common::*;
use highrise_backup::Key;
use sqlx::Row;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts failed attempts while it inserts rows until `stop`, and acknowledged ones in
/// `done` as they come; the ids acknowledged.
async fn writer(uri: String, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>) -> (Vec<i64>, usize) {
    let (mut acked, mut failed) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let uri = uri.clone();
        let r = tokio::task::spawn_blocking(move || psql(&uri, "insert into ledger default values returning id"))
            .await
            .unwrap();
        match r {
            (true, out, _) => {
                acked.push(out.parse().unwrap());
                done.fetch_add(1, Ordering::Relaxed);
            }
            _ => failed += 1,
        }
    }
    (acked, failed)
}

/// What the store holds sealed under the master key: `(name, sealed bytes)`, with the
/// data keys as wrapped hex and their org.
async fn sealed(up: &Up) -> (Vec<(String, String)>, Vec<(String, Vec<u8>)>) {
    let db = format!("sqlite://{}", up.data_dir.join("control.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let data_keys = sqlx::query("SELECT org_id, wrapped FROM org_data_keys")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("org_id"), r.get("wrapped")))
        .collect();
    let mut secrets: Vec<(String, Vec<u8>)> = sqlx::query("SELECT cluster_id, key_sealed FROM cluster_certs")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let id: String = r.get("cluster_id");
            (
                format!("cluster-tls-key/{id}"),
                hex::decode(r.get::<String, _>("key_sealed")).unwrap(),
            )
        })
        .collect();
    let audit: String = sqlx::query("SELECT audit_key_sealed FROM master_key")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    secrets.push(("audit-chain-key".into(), hex::decode(audit).unwrap()));
    pool.close().await;
    (data_keys, secrets)
}

/// How many of the store's sealed values `master_hex` opens, of how many.
async fn opened_by(up: &Up, master_hex: &str) -> (usize, usize) {
    let key = Key::from_hex(master_hex.trim()).unwrap();
    let (data_keys, secrets) = sealed(up).await;
    let total = data_keys.len() + secrets.len();
    let opened = data_keys
        .iter()
        .filter(|(org, w)| key.unwrap_key(w, org).is_ok())
        .count()
        + secrets.iter().filter(|(name, s)| key.open(name, s).is_ok()).count();
    (opened, total)
}

#[tokio::test]
async fn the_master_key_is_rotated_under_writes_and_the_old_one_opens_nothing() {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let u = up.clone();
    let uri = tokio::task::spawn_blocking(move || {
        let (uri, _) = common::ha::ha_cluster(&u, "ha", 1);
        // (`ha_cluster` made the `ledger` table.)
        wait_for("the initial base backup", Duration::from_secs(120), || {
            u.cli_ok(&["backup", "list", "ha"]).contains("complete")
        });
        uri
    })
    .await
    .unwrap();
    let started = psql_ok(&uri, "select pg_postmaster_start_time()");
    let old = std::fs::read_to_string(up.data_dir.join("master.key")).unwrap();
    let (opened, total) = opened_by(&up, &old).await;
    assert!(
        total >= 3 && opened == total,
        "the key in use opens all: {opened}/{total}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writing = tokio::spawn(writer(uri.clone(), stop.clone(), done.clone()));
    // Some writes before the rotation, and some after it.
    let acked_at_least = |n: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), acked_at_least(5))
        .await
        .unwrap();
    let u = up.clone();
    let out = tokio::task::spawn_blocking(move || u.cli_ok(&["land", "rotate-master-key"]))
        .await
        .unwrap();
    assert!(out.contains("master key rotated"), "{out}");
    let before = done.load(Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), acked_at_least(before + 5))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writing.await.unwrap();

    // Nothing the data plane holds changed: no restart, no failed write, nothing lost.
    assert_eq!(psql_ok(&uri, "select pg_postmaster_start_time()"), started);
    assert_eq!(failed, 0, "writes failed during the rotation");
    assert!(!acked.is_empty());
    let count: usize = psql_ok(&uri, "select count(*) from ledger").parse().unwrap();
    assert_eq!(count, acked.len());

    // The new key is the key; the old one is gone from the disk and opens nothing.
    let new = std::fs::read_to_string(up.data_dir.join("master.key")).unwrap();
    assert_ne!(new.trim(), old.trim());
    assert!(!up.data_dir.join("master.key.next").exists());
    assert_eq!(opened_by(&up, &old).await.0, 0, "the old key opens something");
    let (opened, total) = opened_by(&up, &new).await;
    assert_eq!(opened, total);

    // The control plane works on: the audit chain verifies, the backup from before the
    // rotation restores (the data key unwraps under the new key), a new cluster runs.
    let mut up = Arc::try_unwrap(up).unwrap_or_else(|_| panic!("up still shared"));
    let (again, up) = tokio::task::spawn_blocking(move || {
        assert!(up.cli_ok(&["audit", "verify"]).contains("audit log intact"));
        let restored = up.cli_ok(&["cluster", "restore", "copy", "--from", "ha", "--wait"]);
        let copy = restored.lines().last().unwrap().trim().to_string();
        assert_eq!(psql_ok(&copy, "select count(*) > 0 from ledger"), "t");
        // And `up` starts again with the new key alone.
        let root = up.root.clone();
        up.stop();
        // Another key is refused, and changes nothing.
        let wrong = std::process::Command::new(BIN)
            .args([
                "up",
                "--api-listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&up.data_dir)
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("HIGHRISE_MASTER_KEY", "22".repeat(32))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&wrong.stderr);
        assert!(
            !wrong.status.success() && err.contains("sealed under another master key"),
            "{err}"
        );
        let again = Up::start_in(&root);
        assert!(again.cli_ok(&["cluster", "list"]).contains("copy"));
        (again, up)
    })
    .await
    .unwrap();
    drop(again);
    drop(up);
}
