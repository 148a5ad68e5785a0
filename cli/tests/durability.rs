//! Durability in object storage, end to end: real `highrise up`, real PostgreSQL, the
//! filesystem object store under the data directory. Point-in-time restore into another
//! cloud after the source cloud went down, restore of a deleted cluster, verify naming a
//! damaged object, commits acknowledged in `sync` mode surviving the loss of a
//! single-node cluster's host, the loss window of `async` mode, a storage outage under
//! write load, and a restore to a moment before any backup finished.

mod common;

use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn show(up: &Up, name: &str) -> Value {
    serde_json::from_str(&up.cli_ok(&["cluster", "show", name, "--output", "json"])).unwrap()
}

fn backups(up: &Up, name: &str) -> Value {
    serde_json::from_str(&up.cli_ok(&["backup", "list", name, "--output", "json"])).unwrap()
}

fn parse_lsn(s: &str) -> u64 {
    highrise_pg::parse_lsn(s).unwrap_or_else(|| panic!("not an LSN: {s:?}"))
}

/// Creates a cluster and waits for its first base backup.
fn cluster_with_backup(up: &Up, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["cluster", "create", name, "--wait"];
    args.extend_from_slice(extra);
    let out = up.cli_ok(&args);
    let uri = out.lines().last().unwrap().trim().to_string();
    wait_for("the initial base backup", Duration::from_secs(120), || {
        let list = backups(up, name);
        let done = list.as_array().unwrap().iter().any(|b| b["status"] == "complete");
        assert!(
            !list.as_array().unwrap().iter().any(|b| b["status"] == "failed"),
            "{list}"
        );
        done
    });
    uri
}

/// Waits until everything the server has written so far is in object storage.
fn wait_archived(up: &Up, name: &str, uri: &str) {
    let lsn = parse_lsn(&psql_ok(uri, "select pg_current_wal_lsn()"));
    wait_for("the WAL to be archived", Duration::from_secs(60), || {
        show(up, name)["archive"]["archived_lsn"]
            .as_str()
            .is_some_and(|a| parse_lsn(a) >= lsn)
    });
}

fn restore(up: &Up, name: &str, args: &[&str]) -> String {
    let mut all = vec!["cluster", "restore", name, "--wait"];
    all.extend_from_slice(args);
    let out = up.cli_ok(&all);
    out.lines().last().unwrap().trim().to_string()
}

/// POSTs to the land's control endpoint; returns the status.
fn land_post(url: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::Client::new().post(url).send().await.unwrap().status().as_u16() })
}

/// A cluster's corner of its own cloud's object store (`highrise up` keeps one directory
/// per cloud).
fn cluster_objects(up: &Up, shown: &Value) -> std::path::PathBuf {
    up.data_dir
        .join("objects")
        .join(shown["cloud"].as_str().unwrap())
        .join(shown["org_id"].as_str().unwrap())
        .join(shown["id"].as_str().unwrap())
}

fn objects_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(objects_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Each cloud has its own object store: a cluster's WAL and backups are kept in its cloud's
/// store and copied to the next cloud's, verified in both, and restored from the copy alone
/// once its own cloud's store is gone.
#[test]
fn backups_are_copied_to_a_second_cloud_and_restore_from_the_copy_alone() {
    let up = Up::start();
    let uri = cluster_with_backup(&up, "twice", &[]);
    psql_ok(&uri, "create table t (id int primary key)");
    psql_ok(&uri, "insert into t select generate_series(1, 1000)");
    up.cli_ok(&["backup", "create", "twice", "--wait"]);
    psql_ok(&uri, "insert into t values (1001)");
    wait_archived(&up, "twice", &uri);
    let shown = show(&up, "twice");
    assert_eq!(shown["backup_copies"], 2, "{shown}");
    assert_eq!(shown["copy_cloud"], "local-b", "{shown}");
    wait_for("the second copy to catch up", Duration::from_secs(60), || {
        show(&up, "twice")["copy_lag_bytes"] == 0
    });
    let human = up.cli_ok(&["cluster", "show", "twice"]);
    assert!(
        human.contains("copies:     WAL and backups in local-a's store and local-b's (0 B behind)"),
        "{human}"
    );
    let v: Value = serde_json::from_str(&up.cli_ok(&["backup", "verify", "twice", "--output", "json"])).unwrap();
    let copies = v["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{v}");
    assert!(copies.iter().all(|c| c["ok"] == true), "{v}");
    let newest = v["backup"].as_str().unwrap();
    let (a, b) = (cluster_objects(&up, &shown), {
        let mut s = shown.clone();
        s["cloud"] = "local-b".into();
        cluster_objects(&up, &s)
    });
    for dir in [&a, &b] {
        assert!(
            dir.join("base").join(newest).join("manifest").is_file(),
            "{}",
            dir.display()
        );
    }
    // A damaged object in local-a's store: a restore there reads it first, fails on it
    // half-way and reads the copy in local-b's instead.
    let part = a.join("base").join(newest).join("part-000000");
    let mut bytes = std::fs::read(&part).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x55;
    std::fs::write(&part, bytes).unwrap();
    let healed = restore(&up, "healed", &["--from", "twice", "--cloud", "local-a"]);
    assert_eq!(psql_ok(&healed, "select count(*) from t").trim(), "1001");
    // Nothing of local-a's store is left; the copy alone restores every row.
    let store_a = up.data_dir.join("objects").join("local-a");
    std::fs::rename(&store_a, store_a.with_extension("gone")).unwrap();
    let back = restore(&up, "back", &["--from", "twice", "--cloud", "local-b"]);
    assert_eq!(psql_ok(&back, "select count(*) from t").trim(), "1001");
}

#[test]
fn point_in_time_restore_into_another_cloud_and_from_a_deleted_cluster() {
    let up = Up::start();
    let src = cluster_with_backup(&up, "src", &[]);
    psql_ok(
        &src,
        "create table t (id int primary key, note text, at timestamptz default clock_timestamp())",
    );
    for i in 1..=3 {
        psql_ok(
            &src,
            &format!("insert into t (id, note) values ({i}, 'SECRET-MARKER-{i}')"),
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let target = psql_ok(
        &src,
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(200));
    for i in 4..=6 {
        psql_ok(
            &src,
            &format!("insert into t (id, note) values ({i}, 'SECRET-MARKER-{i}')"),
        );
    }
    wait_archived(&up, "src", &src);
    up.cli_ok(&["backup", "create", "src", "--wait"]);

    // Nothing in object storage shows the rows: every object is encrypted.
    let objects = objects_under(&up.data_dir.join("objects"));
    assert!(objects.len() > 5, "{objects:?}");
    for o in &objects {
        let bytes = std::fs::read(o).unwrap();
        assert!(
            !bytes.windows(13).any(|w| w == b"SECRET-MARKER"),
            "{} holds plain rows",
            o.display()
        );
    }

    // The source's whole cloud goes down; the restore lands in the other one.
    assert_eq!(land_post(&format!("{}/land/clouds/local-a/down", up.land_url)), 200);
    let dst = restore(
        &up,
        "dst",
        &["--from", "src", "--time", target.trim(), "--cloud", "local-b"],
    );
    assert_eq!(
        psql_ok(&dst, "select string_agg(id::text, ',' order by id) from t").trim(),
        "1,2,3"
    );
    assert_eq!(show(&up, "dst")["cloud"], "local-b");
    // The restored cluster archives and backs up on its own.
    wait_for("the restored cluster's own backup", Duration::from_secs(120), || {
        backups(&up, "dst")
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["status"] == "complete")
    });

    // The source is deleted; its backups and WAL still restore it, to the end. Its backups
    // are listed by name and by id alike.
    let src_id = show(&up, "src")["id"].as_str().unwrap().to_string();
    up.cli_ok(&["cluster", "delete", "src", "--wait"]);
    let by_name = backups(&up, "src");
    assert!(!by_name.as_array().unwrap().is_empty());
    assert_eq!(backups(&up, &src_id), by_name);
    let again = restore(&up, "again", &["--from", "src", "--cloud", "local-b"]);
    assert_eq!(
        psql_ok(&again, "select string_agg(id::text, ',' order by id) from t").trim(),
        "1,2,3,4,5,6"
    );
    let verified = up.cli_ok(&["backup", "verify", "src"]);
    assert!(verified.contains("every checksum matches"), "{verified}");

    // A damaged object: verify and restore stop and name it.
    let list = backups(&up, "src");
    let newest = list.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Every copy: a restore reads the copy in a reachable cloud first (local-a is down)
    // and falls back to the other (tested above); the newest backup may not be copied yet
    // (the copier leaves local-a's store alone while local-a is down).
    let objects = objects_under(&up.data_dir.join("objects"));
    let parts: Vec<_> = objects
        .iter()
        .filter(|p| p.to_string_lossy().contains(&format!("base/{newest}/part-000000")))
        .collect();
    assert!(!parts.is_empty(), "the backup's first part: {objects:?}");
    for part in parts {
        let mut bytes = std::fs::read(part).unwrap();
        let n = bytes.len() / 2;
        bytes[n] ^= 0x55;
        std::fs::write(part, bytes).unwrap();
    }
    let out = up.cli(&["backup", "verify", "src"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("base/{newest}/part-000000")) && err.contains("corrupt"),
        "{err}"
    );
    let out = up.cli(&[
        "cluster", "restore", "broken", "--from", "src", "--cloud", "local-b", "--wait",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("part-000000"), "{err}");

    // Another org cannot restore (or even see) this org's cluster.
    let org: Value = serde_json::from_str(&up.cli_ok(&["org", "create", "other-org", "--output", "json"])).unwrap();
    let key = org["api_key"]["secret"].as_str().unwrap();
    let out = up.cli(&["backup", "list", "src", "--api-key", key]);
    assert!(!out.status.success());
    let out = up.cli(&["cluster", "restore", "steal", "--from", "src", "--api-key", key]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

/// Inserts one row per commit until stopped; returns the acknowledged ids and when each
/// was acknowledged.
async fn ledger_writer(uri: String, stop: Arc<AtomicBool>) -> Vec<(i64, Instant)> {
    let mut acked = Vec::new();
    let Ok(mut c) = connect_any(&uri).await else {
        return acked;
    };
    while !stop.load(Ordering::Relaxed) {
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::query_scalar::<_, i64>("insert into ledger default values returning id").fetch_one(&mut c),
        )
        .await;
        match res {
            Ok(Ok(id)) => acked.push((id, Instant::now())),
            _ => break,
        }
    }
    acked
}

/// A single-node cluster under a ledger writer loses its host (disk wiped) at a random
/// moment; a restore from object storage is checked against the ledger. Returns the
/// acknowledged ids missing from the restore, with the seconds of commits they span.
async fn lose_the_host_and_restore(durability: &str) -> (usize, usize, f64) {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let u = up.clone();
    let d = durability.to_string();
    let uri = tokio::task::spawn_blocking(move || {
        let uri = cluster_with_backup(&u, "solo", &["--durability", &d]);
        psql_ok(&uri, "create table ledger (id bigserial primary key)");
        uri
    })
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri, stop.clone()));
    let wait_ms = 1500 + u64::from(std::process::id() % 1500);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let shown = show(&up, "solo");
    let host = shown["members"][0]["host_id"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/land/hosts/{host}/kill", up.land_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    // Restore once the control plane sees the host gone, so the new cluster goes to
    // another host (one placed on a host that just died would wait until it is given up).
    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        // (A `sync` cluster then restores itself from object storage in a new term.)
        wait_for("the dead host to show", Duration::from_secs(60), || {
            let shown = show(&u, "solo");
            shown["members"][0]["state"] == "unreachable" || shown["term"] != 1
        })
    })
    .await
    .unwrap();
    let acked = writer.await.unwrap();
    assert!(acked.len() > 10, "the writer wrote only {} rows", acked.len());
    let late: Vec<_> = acked.iter().filter(|(_, at)| *at > killed).collect();
    assert!(late.is_empty(), "commits acknowledged after the kill: {}", late.len());

    let u = up.clone();
    let restored = tokio::task::spawn_blocking(move || {
        let uri = restore(&u, "back", &["--from", "solo"]);
        psql_ok(&uri, "select id from ledger")
    })
    .await
    .unwrap();
    let present: std::collections::BTreeSet<i64> = restored.lines().map(|l| l.trim().parse().unwrap()).collect();
    let lost: Vec<&(i64, Instant)> = acked.iter().filter(|(id, _)| !present.contains(id)).collect();
    let window = match (lost.first(), acked.last()) {
        (Some((_, first)), Some((_, last))) => last.duration_since(*first).as_secs_f64(),
        _ => 0.0,
    };
    (acked.len(), lost.len(), window)
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_durability_keeps_every_acknowledged_commit_of_a_lost_single_node_cluster() {
    let (acked, lost, _) = lose_the_host_and_restore("sync").await;
    assert_eq!(lost, 0, "{lost} of {acked} acknowledged commits lost in sync mode");
}

#[tokio::test(flavor = "multi_thread")]
async fn async_durability_loses_at_most_about_a_second_of_commits() {
    let (acked, lost, window) = lose_the_host_and_restore("async").await;
    println!("async mode: {lost} of {acked} acknowledged commits lost, spanning {window:.3} s");
    assert!(window < 2.0, "lost {lost} commits spanning {window:.3} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_outage_under_write_load_loses_nothing() {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let u = up.clone();
    let uri = tokio::task::spawn_blocking(move || {
        let uri = cluster_with_backup(&u, "busy", &[]);
        psql_ok(&uri, "create table ledger (id bigserial primary key)");
        uri
    })
    .await
    .unwrap();
    let shown = show(&up, "busy");
    let wal = cluster_objects(&up, &shown).join("wal");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The store fails: the WAL directory is replaced by a file, so every write fails.
    let aside = wal.with_extension("aside");
    std::fs::rename(&wal, &aside).unwrap();
    std::fs::write(&wal, b"not a directory").unwrap();
    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the archive lag to be reported", Duration::from_secs(30), || {
            let s = show(&u, "busy");
            let events = u.cli_ok(&["cluster", "events", "busy"]);
            s["archive"]["error"].is_string() && events.contains("archive_lagging")
        });
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(&wal).unwrap();
    std::fs::rename(&aside, &wal).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 10, "the writer wrote only {} rows", acked.len());

    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        wait_archived(&u, "busy", &uri);
        wait_for("the catch-up event", Duration::from_secs(30), || {
            u.cli_ok(&["cluster", "events", "busy"]).contains("archive_caught_up")
        });
        let back = restore(&u, "after", &["--from", "busy"]);
        let present: std::collections::BTreeSet<i64> = psql_ok(&back, "select id from ledger")
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let lost: Vec<i64> = acked
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !present.contains(id))
            .collect();
        assert!(lost.is_empty(), "lost acknowledged commits: {lost:?}");
    })
    .await
    .unwrap();
}

/// A restore can stop at any moment since the cluster's creation: its first backup is the
/// image it was created from (the host's template) plus all of its WAL.
#[test]
fn point_in_time_restore_reaches_back_to_the_cluster_creation() {
    let up = Up::start();
    // Object storage is away while the cluster is created and first written to, so no
    // backup can finish before the target.
    let objects = up.data_dir.join("objects");
    let aside = objects.with_extension("aside");
    std::fs::rename(&objects, &aside).unwrap();
    std::fs::write(&objects, b"away").unwrap();
    let out = up.cli_ok(&["cluster", "create", "young", "--wait"]);
    let uri = out.lines().last().unwrap().trim().to_string();
    psql_ok(&uri, "create table t (id int primary key)");
    psql_ok(&uri, "insert into t values (1)");
    let target = psql_ok(
        &uri,
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    psql_ok(&uri, "insert into t values (2)");
    let list = backups(&up, "young");
    assert!(
        !list.as_array().unwrap().iter().any(|b| b["status"] == "complete"),
        "{list}"
    );

    std::fs::remove_file(&objects).unwrap();
    std::fs::rename(&aside, &objects).unwrap();
    let mut first = Value::Null;
    wait_for("the first backup", Duration::from_secs(120), || {
        let list = backups(&up, "young");
        assert!(
            !list.as_array().unwrap().iter().any(|b| b["status"] == "failed"),
            "{list}"
        );
        first = list
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["status"] == "complete")
            .cloned()
            .unwrap_or(Value::Null);
        !first.is_null()
    });
    assert_eq!(first["from_creation"], true, "{first}");
    let target_secs = psql_ok(
        &uri,
        &format!("select extract(epoch from '{target}'::timestamptz)::bigint"),
    );
    assert!(
        first["finished_at"].as_i64().unwrap() >= target_secs.parse::<i64>().unwrap(),
        "the backup finished after the target: {first}"
    );

    let dst = restore(&up, "young-then", &["--from", "young", "--time", &target]);
    assert_eq!(psql_ok(&dst, "select id from t order by id"), "1");
    // The creation image verifies, and so does the restored cluster's own first backup.
    let v = up.cli_ok(&["backup", "verify", "young"]);
    assert!(v.contains("every checksum matches"), "{v}");
    wait_for("the restored cluster's first backup", Duration::from_secs(120), || {
        backups(&up, "young-then")
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["status"] == "complete" && b["from_creation"] == false)
    });
    let v = up.cli_ok(&["backup", "verify", "young-then"]);
    assert!(v.contains("every checksum matches"), "{v}");

    // Before the creation, there is nothing to restore.
    let out = up.cli(&[
        "cluster",
        "restore",
        "unborn",
        "--from",
        "young",
        "--time",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was created at"),
        "{out:?}"
    );
}

#[test]
fn retention_drops_old_backups_and_the_wal_only_they_needed() {
    let up = Up::start();
    let uri = cluster_with_backup(&up, "kept", &["--retain-count", "1", "--retain-days", "0"]);
    let first = backups(&up, "kept")[0]["id"].as_str().unwrap().to_string();
    // Write a few WAL segments, so that some lie wholly before the next backup.
    psql_ok(
        &uri,
        "create table t (id int); insert into t select generate_series(1, 300000)",
    );
    psql_ok(&uri, "insert into t select generate_series(1, 300000)");
    wait_archived(&up, "kept", &uri);
    let shown = show(&up, "kept");
    let prefix = cluster_objects(&up, &shown);
    let segments = |p: &std::path::Path| {
        std::fs::read_dir(p.join("wal/00000001"))
            .unwrap()
            .flatten()
            .filter(|d| !objects_under(&d.path()).is_empty())
            .count()
    };
    let before = segments(&prefix);
    up.cli_ok(&["backup", "create", "kept", "--wait"]);
    wait_for("retention to drop the first backup", Duration::from_secs(30), || {
        let list = backups(&up, "kept");
        list.as_array().unwrap().len() == 1 && list[0]["id"] != first.as_str()
    });
    assert!(
        objects_under(&prefix.join("base").join(&first)).is_empty(),
        "the first backup's objects are gone"
    );
    wait_for(
        "the WAL only the first backup needed to go",
        Duration::from_secs(30),
        || segments(&prefix) < before,
    );
    let back = restore(&up, "from-kept", &["--from", "kept"]);
    assert_eq!(psql_ok(&back, "select count(*) from t").trim(), "600000");
}
