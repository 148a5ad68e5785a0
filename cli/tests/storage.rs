//! A full disk never takes a database down (issue 12), on the real `highrise up` with a
//! host disk of its own (`--host-disk`: a loop-mounted ext4 image) and real PostgreSQL:
//! filling it turns the database read-only before it is full, the tenant frees space in a
//! read-write session and writes resume; a single transaction that would fill the disk is
//! cancelled before it does; a disk filled by something else comes back once the agent's
//! reserve is released; a standby's full disk holds the primary back; with autoscaling the
//! same load moves the cluster onto a larger disk instead. A ledger writer logs every
//! acknowledged insert; none may be lost.

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
        // The agent turned it read-only; its next heartbeat says so.
        let mut shown = Value::Null;
        wait_for("the level reported", Duration::from_secs(10), || {
            shown = show(&u);
            shown["storage_level"] == "read_only" || shown["storage_level"] == "critical"
        });
        assert_eq!(shown["status"], "running", "{shown}");
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
        // Every new session is told why, and how to free space, before its first query.
        wait_for("new sessions warned", Duration::from_secs(10), || {
            let (ok, _, err) = psql(&read_uri, "select 1");
            ok && err.contains("WARNING:  this database is read-only because its storage is nearly full")
                && err.contains("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        });
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
        // The agent acts at once; the control plane tells the story a beat later.
        wait_for("the event that writes are back", Duration::from_secs(10), || {
            kinds(&u, "fill") == ["storage_warning", "storage_read_only", "storage_read_write"]
        });
        assert_eq!(show(&u)["storage_level"], "normal");
        wait_for("new sessions no longer warned", Duration::from_secs(10), || {
            let (ok, _, err) = psql(&free_uri, "select 1");
            ok && !err.contains("WARNING")
        });
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

/// The disk `GET /v1/hosts` (operator) shows for the host whose directory is `host_dir`.
async fn host_disk(up: &Up, host_dir: &std::path::Path) -> Value {
    let id = host_dir.file_name().unwrap().to_str().unwrap();
    let hosts: Value = reqwest::Client::new()
        .get(format!("{}/v1/hosts", up.api_url))
        .bearer_auth(&up.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let host = hosts.as_array().unwrap().iter().find(|h| h["id"] == id).unwrap();
    host["disk"].clone()
}

/// Another process's file on the host's disk, taking all but `leave` bytes of its room.
fn fill_from_outside(host_dir: &std::path::Path, leave: u64) -> std::path::PathBuf {
    let outside = host_dir.join("someone-elses.log");
    let fs = nix::sys::statvfs::statvfs(host_dir).unwrap();
    #[allow(clippy::unnecessary_cast)]
    let free_bytes = fs.blocks_available() as u64 * fs.fragment_size() as u64;
    let status = std::process::Command::new("fallocate")
        .args(["-l", &free_bytes.saturating_sub(leave).to_string()])
        .arg(&outside)
        .status()
        .unwrap();
    assert!(status.success());
    outside
}

/// PIDs of the agent of the host whose directory is `host_dir`.
fn agent_of(host_dir: &std::path::Path) -> Vec<nix::unistd::Pid> {
    processes_mentioning(&host_dir.to_string_lossy())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" agent "))
        .map(|(p, _)| nix::unistd::Pid::from_raw(p as i32))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_filled_from_outside_comes_back_once_the_reserve_is_released() {
    use nix::sys::signal::{kill, Signal};
    let tmp = temp_root();
    let up = Arc::new(Up::start_with(tmp.path(), &["--host-disk", "300MiB"]));
    let u = up.clone();
    let (uri, host_dir, pgdata) = tokio::task::spawn_blocking(move || {
        let uri = u.create_cluster("full");
        psql_ok(&uri, "create table ledger (id bigserial primary key)");
        let mut shown = Value::Null;
        wait_for("the agent to hold its reserve", Duration::from_secs(30), || {
            shown = serde_json::from_str(&u.cli_ok(&["cluster", "show", "full", "--output", "json"])).unwrap();
            shown["members"][0]["storage"]["disk_reserve_bytes"]
                .as_u64()
                .unwrap_or(0)
                >= 32 << 20
        });
        let m = &shown["members"][0];
        let host_dir = u.data_dir.join("land/hosts").join(m["host_id"].as_str().unwrap());
        let pgdata = host_dir
            .join("i")
            .join(m["instance_id"].as_str().unwrap())
            .join("pgdata");
        (uri, host_dir, pgdata)
    })
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Something else on the host fills its disk while the agent cannot react, and the
    // server dies: a restart needs to write WAL, which a full disk refuses.
    let agent = agent_of(&host_dir);
    assert_eq!(agent.len(), 1, "one agent for the host");
    kill(agent[0], Signal::SIGSTOP).unwrap();
    let outside = fill_from_outside(&host_dir, 256 << 10);
    let pid = std::fs::read_to_string(pgdata.join("postmaster.pid")).unwrap();
    let pid: i32 = pid.lines().next().unwrap().trim().parse().unwrap();
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    kill(agent[0], Signal::SIGCONT).unwrap();

    // The agent releases its reserve and the server comes back; the event says why.
    let (u, read_uri) = (up.clone(), uri.clone());
    tokio::task::spawn_blocking(move || {
        wait_for("the server back", Duration::from_secs(60), || {
            psql(&read_uri, "select count(*) from ledger").0
        });
        wait_for("the story in events", Duration::from_secs(10), || {
            kinds(&u, "full").contains(&"storage_full".to_string())
        });
        let (_, msg) = events(&u, "full")
            .into_iter()
            .find(|(k, _)| k == "storage_full")
            .unwrap();
        assert!(
            msg.contains("released its reserve") && msg.contains("other data on the host"),
            "{msg}"
        );
        let shown: Value = serde_json::from_str(&u.cli_ok(&["cluster", "show", "full", "--output", "json"])).unwrap();
        assert_eq!(shown["status"], "running", "{shown}");
        assert_eq!(shown["storage_level"], "full", "{shown}");
        let (ok, _, err) = psql(&read_uri, "insert into ledger default values");
        assert!(!ok && err.contains("read-only transaction"), "{err}");
    })
    .await
    .unwrap();
    // The operator sees it per host too.
    let disk = host_disk(&up, &host_dir).await;
    assert_eq!(disk["reserve_released"], true, "{disk}");
    assert_eq!(disk["reserve_bytes"], 0, "{disk}");

    // The other data goes; the reserve is taken again and writes resume.
    std::fs::remove_file(&outside).unwrap();
    let (u, write_uri) = (up.clone(), uri.clone());
    tokio::task::spawn_blocking(move || {
        wait_for("writes allowed again", Duration::from_secs(30), || {
            psql(&write_uri, "insert into ledger default values").0
        });
        wait_for("the reserve held again", Duration::from_secs(30), || {
            let shown: Value =
                serde_json::from_str(&u.cli_ok(&["cluster", "show", "full", "--output", "json"])).unwrap();
            shown["members"][0]["storage"]["disk_reserve_bytes"]
                .as_u64()
                .unwrap_or(0)
                > 0
        });
        wait_for("the event that writes are back", Duration::from_secs(10), || {
            kinds(&u, "full").last().map(String::as_str) == Some("storage_read_write")
        });
    })
    .await
    .unwrap();
    let disk = host_disk(&up, &host_dir).await;
    assert_eq!(disk["reserve_released"], false, "{disk}");
    assert!(disk["reserve_bytes"].as_u64().unwrap() >= 32 << 20, "{disk}");
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = writer.await.unwrap();
    assert!(!acked.is_empty());
    check_ledger(&uri, &acked);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standbys_filling_disk_holds_the_primarys_writes_back() {
    let tmp = temp_root();
    let up = Arc::new(Up::start_with(tmp.path(), &["--host-disk", "300MiB"]));
    let u = up.clone();
    let (uri, shown) = tokio::task::spawn_blocking(move || ha_cluster(&u, "pair", 1))
        .await
        .unwrap();
    let standby = member(&shown, "standby");
    let host_dir = up
        .data_dir
        .join("land/hosts")
        .join(standby["host_id"].as_str().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Something else fills the standby's host to well past the read-only mark (but not so
    // far that its reserve goes).
    let outside = fill_from_outside(&host_dir, 40 << 20);
    let (u, write_uri) = (up.clone(), uri.clone());
    tokio::task::spawn_blocking(move || {
        wait_for("the primary to refuse writes", Duration::from_secs(30), || {
            let (ok, _, err) = psql(&write_uri, "insert into ledger default values");
            !ok && err.contains("read-only transaction")
        });
        assert_eq!(
            psql_ok(&write_uri, "select count(*) > 0 from ledger"),
            "t",
            "reads go on"
        );
        wait_for("the read-only event", Duration::from_secs(10), || {
            kinds(&u, "pair").contains(&"storage_read_only".to_string())
        });
        assert_eq!(show(&u, "pair")["status"], "running");
    })
    .await
    .unwrap();

    // The standby's host gets its room back: the primary takes writes again.
    std::fs::remove_file(&outside).unwrap();
    let (u, write_uri) = (up.clone(), uri.clone());
    tokio::task::spawn_blocking(move || {
        wait_for("writes allowed again", Duration::from_secs(30), || {
            psql(&write_uri, "insert into ledger default values").0
        });
        wait_for("the event that writes are back", Duration::from_secs(10), || {
            kinds(&u, "pair").last().map(String::as_str) == Some("storage_read_write")
        });
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = writer.await.unwrap();
    assert!(!acked.is_empty());
    check_ledger(&uri, &acked);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_autoscaling_the_same_load_moves_the_cluster_onto_a_larger_disk_without_going_read_only() {
    let tmp = temp_root();
    let up = Arc::new(Up::start_with(tmp.path(), &["--host-disk", "300MiB"]));
    let u = up.clone();
    let (uri, first_host) = tokio::task::spawn_blocking(move || {
        let out = u.cli_ok(&["cluster", "create", "grow", "--storage-autoscale", "1GiB", "--wait"]);
        let uri = out.lines().last().unwrap().trim().to_string();
        psql_ok(&uri, "create table ledger (id bigserial primary key)");
        psql_ok(&uri, "create table big (t text)");
        let shown = show(&u, "grow");
        assert_eq!(shown["storage_autoscale_max_bytes"], 1u64 << 30, "{shown}");
        (uri, shown["members"][0]["host_id"].as_str().unwrap().to_string())
    })
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));

    // The same kind of load that made a plain cluster read-only, a little slower: 1 MB
    // transactions, until the cluster runs on a larger disk.
    let (u, fill_uri) = (up.clone(), uri.clone());
    let started = std::time::Instant::now();
    let moved_at = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut last_check = std::time::Instant::now();
        loop {
            assert!(std::time::Instant::now() < deadline, "not moved: {}", show(&u, "grow"));
            let (ok, _, err) = psql(
                &fill_uri,
                "insert into big select repeat(md5(g::text), 30) from generate_series(1, 1000) g",
            );
            assert!(ok || !err.contains("read-only"), "went read-only: {err}");
            std::thread::sleep(Duration::from_millis(300));
            if last_check.elapsed() < Duration::from_secs(1) {
                continue;
            }
            last_check = std::time::Instant::now();
            let shown = show(&u, "grow");
            let members = shown["members"].as_array().unwrap();
            let moved = members.len() == 1
                && members[0]["role"] == "primary"
                && members[0]["state"] == "running"
                && members[0]["host_id"] != first_host.as_str();
            if moved {
                return std::time::Instant::now();
            }
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, timeline) = writer.await.unwrap();
    let (pause, failures) = longest_pause(&timeline, started);
    eprintln!(
        "autoscale: moved after {:?}; longest write pause {pause:?} ({failures} failed attempts)",
        moved_at - started
    );
    check_ledger(&uri, &acked);
    assert!(pause <= Duration::from_secs(2), "write pause {pause:?}");

    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        let shown = show(&u, "grow");
        assert_eq!(shown["storage_disk_bytes"], 600u64 << 20, "{shown}");
        let disk = &shown["members"][0]["storage"];
        assert!(disk["disk_total_bytes"].as_u64().unwrap() > 500 << 20, "{disk}");
        let kinds: Vec<String> = events(&u, "grow").into_iter().map(|(k, _)| k).collect();
        assert!(kinds.contains(&"storage_autoscale".to_string()), "{kinds:?}");
        assert!(!kinds.contains(&"storage_read_only".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"switchover_started".to_string()), "{kinds:?}");
    })
    .await
    .unwrap();
}
