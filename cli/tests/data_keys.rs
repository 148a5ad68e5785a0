//! Tenant data keys (issue 14), on the real `highrise up` with its filesystem object
//! store: a rotation makes a new generation seal what is written from then on while
//! everything sealed before still restores — a backup from before and one from after, and
//! a point in time whose WAL spans both generations; retiring the old generation seals
//! all it sealed again under the new one and destroys it, and all of it still restores;
//! deleting an org destroys its keys, so the objects it left can be opened by no key the
//! land holds (crypto-shredding).

mod common;

use common::*;
use highrise_backup::{Key, Keyring};
use serde_json::Value;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn backups(up: &Up, name: &str, key: &[&str]) -> Value {
    let mut args = vec!["backup", "list", name, "--output", "json"];
    args.extend_from_slice(key);
    json(&up.cli_ok(&args))
}

/// Creates a cluster and waits for its first base backup; returns its URI.
fn cluster_with_backup(up: &Up, name: &str, key: &[&str]) -> String {
    let mut args = vec!["cluster", "create", name, "--wait"];
    args.extend_from_slice(key);
    let uri = up.cli_ok(&args).lines().last().unwrap().trim().to_string();
    wait_for("the initial base backup", Duration::from_secs(120), || {
        let list = backups(up, name, key);
        let list = list.as_array().unwrap();
        assert!(!list.iter().any(|b| b["status"] == "failed"), "{list:?}");
        list.iter().any(|b| b["status"] == "complete")
    });
    uri
}

/// Waits until everything the server has written so far is in object storage.
fn wait_archived(up: &Up, name: &str, uri: &str, key: &[&str]) {
    let lsn = highrise_pg::parse_lsn(&psql_ok(uri, "select pg_current_wal_lsn()")).unwrap();
    let mut args = vec!["cluster", "show", name, "--output", "json"];
    args.extend_from_slice(key);
    wait_for("the WAL to be archived", Duration::from_secs(60), || {
        json(&up.cli_ok(&args))["archive"]["archived_lsn"]
            .as_str()
            .and_then(highrise_pg::parse_lsn)
            .is_some_and(|a| a >= lsn)
    });
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Every sealed object an org left in the land's stores, with its name as sealed (its
/// path under the store's directory). An upload in flight is not an object yet: the
/// filesystem store stages it as `<name>#<n>` and renames it into place, so a staged file
/// is skipped, and one renamed between listing and reading is read under its new name
/// by the next call.
fn objects_of(up: &Up, org_id: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let stores = up.data_dir.join("objects");
    for store in std::fs::read_dir(&stores).unwrap().flatten() {
        for f in files_under(&store.path().join(org_id)) {
            let name = f.strip_prefix(store.path()).unwrap().to_string_lossy().into_owned();
            if name.contains('#') {
                continue;
            }
            match std::fs::read(&f) {
                Ok(bytes) => out.push((name, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("read {}: {e}", f.display()),
            }
        }
    }
    out
}

/// The generations of the objects under a cluster's corner of every store.
fn generations(up: &Up, org_id: &str, cluster_id: &str) -> Vec<u32> {
    objects_of(up, org_id)
        .iter()
        .filter(|(name, _)| name.starts_with(&format!("{org_id}/{cluster_id}/")))
        .filter_map(|(_, bytes)| Keyring::generation_of(bytes))
        .collect()
}

/// Every data key the land holds, as `(org, generation, key)`, unwrapped with its master key.
async fn land_keys(up: &Up) -> Vec<(String, i64, Key)> {
    let master = Key::from_hex(&std::fs::read_to_string(up.data_dir.join("master.key")).unwrap()).unwrap();
    let db = format!("sqlite://{}", up.data_dir.join("control.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new().connect(&db).await.unwrap();
    let rows = sqlx::query("SELECT org_id, generation, wrapped FROM org_data_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let org: String = r.get("org_id");
            let wrapped: String = r.get("wrapped");
            let key = master.unwrap_key(&wrapped, &org).unwrap();
            (org, r.get("generation"), key)
        })
        .collect()
}

#[test]
fn a_rotated_key_seals_new_objects_and_backups_from_both_sides_restore() {
    let up = Up::start();
    let uri = cluster_with_backup(&up, "ledger", &[]);
    let shown = json(&up.cli_ok(&["cluster", "show", "ledger", "--output", "json"]));
    let (org, id) = (
        shown["org_id"].as_str().unwrap().to_string(),
        shown["id"].as_str().unwrap().to_string(),
    );
    psql_ok(&uri, "create table t (v text); insert into t values ('before')");
    wait_archived(&up, "ledger", &uri, &[]);
    assert!(generations(&up, &org, &id).iter().all(|g| *g == 1));

    let rotated = json(&up.cli_ok(&["org", "rotate-key", "--output", "json"]));
    assert_eq!(rotated["generation"], 2);
    // The hosts take the new key up within seconds: WAL written from then on is sealed
    // with generation 2.
    wait_for("WAL sealed with generation 2", Duration::from_secs(60), || {
        psql_ok(&uri, "insert into t values ('after rotation')");
        wait_archived(&up, "ledger", &uri, &[]);
        generations(&up, &org, &id).contains(&2)
    });
    wait_archived(&up, "ledger", &uri, &[]);
    let between = psql_ok(&uri, "select now()");
    psql_ok(&uri, "insert into t values ('after the point')");
    wait_archived(&up, "ledger", &uri, &[]);
    up.cli_ok(&["backup", "create", "ledger", "--wait"]);
    psql_ok(&uri, "insert into t values ('after backup 2')");
    wait_archived(&up, "ledger", &uri, &[]);
    let gens = generations(&up, &org, &id);
    assert!(gens.contains(&1) && gens.contains(&2), "{gens:?}");
    let keys = up.cli_ok(&["org", "keys"]);
    assert!(
        keys.contains("2            yes") && keys.contains("1            no"),
        "{keys}"
    );

    // A point before the second backup: the first backup (generation 1), then WAL of both
    // generations.
    let mid = up.cli_ok(&[
        "cluster",
        "restore",
        "mid",
        "--from",
        "ledger",
        "--time",
        between.trim(),
        "--wait",
    ]);
    let mid_uri = mid.lines().last().unwrap().trim();
    let rows = psql_ok(mid_uri, "select string_agg(distinct v, ',' order by v) from t");
    assert_eq!(rows, "after rotation,before");

    // The end: the second backup (generation 2) and what followed.
    let end = up.cli_ok(&["cluster", "restore", "end", "--from", "ledger", "--wait"]);
    let end_uri = end.lines().last().unwrap().trim();
    assert_eq!(
        psql_ok(end_uri, "select count(*) from t where v = 'after backup 2'"),
        "1"
    );
    // Verify reads every part of each backup back with the keys of their generations.
    up.cli_ok(&["backup", "verify", "ledger"]);

    // Retiring generation 1: everything it sealed is sealed again under generation 2 —
    // the first backup, the WAL before the rotation — and generation 1 is destroyed.
    // The restored clusters take their first base backups meanwhile: until those are
    // done (they seal with the key they started with) the retirement is refused (409).
    let mut retired = Value::Null;
    wait_for("the retirement to be allowed", Duration::from_secs(120), || {
        let out = up.cli(&["org", "retire-keys", "--output", "json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            assert!(err.contains("409"), "{err}");
            return false;
        }
        retired = json(&String::from_utf8_lossy(&out.stdout));
        true
    });
    // An operation in the background, waited for: its outcome says what it did.
    assert_eq!(retired["kind"], "retire_data_keys", "{retired}");
    assert_eq!(retired["status"], "succeeded", "{retired}");
    let outcome = retired["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome.starts_with("generation(s) 1 retired: ") && !outcome.contains(": 0 of"),
        "{retired}"
    );
    let left = generations(&up, &org, &id);
    assert!(!left.is_empty() && left.iter().all(|g| *g == 2), "{left:?}");
    let keys = up.cli_ok(&["org", "keys"]);
    assert!(keys.contains("2            yes") && !keys.contains("\n1 "), "{keys}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        !rt.block_on(land_keys(&up)).iter().any(|(o, g, _)| *o == org && *g == 1),
        "generation 1 is destroyed"
    );
    // What generation 1 sealed still restores, now under generation 2.
    let again = up.cli_ok(&[
        "cluster",
        "restore",
        "mid-again",
        "--from",
        "ledger",
        "--time",
        between.trim(),
        "--wait",
    ]);
    let again_uri = again.lines().last().unwrap().trim();
    assert_eq!(
        psql_ok(again_uri, "select string_agg(distinct v, ',' order by v) from t"),
        "after rotation,before"
    );
    up.cli_ok(&["backup", "verify", "ledger"]);
    // With one generation left there is nothing to retire.
    assert!(up.cli_ok(&["org", "retire-keys"]).contains("nothing to retire"));
}

#[test]
fn a_deleted_org_leaves_objects_no_key_opens() {
    let up = Up::start();
    let created = json(&up.cli_ok(&["org", "create", "globex", "--output", "json"]));
    let org = created["org"]["id"].as_str().unwrap().to_string();
    let b_key = format!("--api-key={}", created["api_key"]["secret"].as_str().unwrap());
    let as_b: &[&str] = &[&b_key];
    // The operator's org has keys too (two generations): they must not open globex's.
    up.cli_ok(&["org", "rotate-key"]);
    let uri = cluster_with_backup(&up, "doomed", as_b);
    psql_ok(
        &uri,
        "create table secrets (v text); insert into secrets values ('the recipe')",
    );
    wait_archived(&up, "doomed", &uri, as_b);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Before: the org's own key opens every object it has.
    let objects = objects_of(&up, &org);
    assert!(objects.len() >= 3, "{} objects", objects.len());
    let keys = rt.block_on(land_keys(&up));
    let own: Vec<(u32, Key)> = keys
        .iter()
        .filter(|(o, ..)| *o == org)
        .map(|(_, g, k)| (*g as u32, k.clone()))
        .collect();
    let ring = Keyring::new(own).unwrap();
    for (name, bytes) in &objects {
        assert!(
            ring.open(name, bytes).is_ok(),
            "{name} does not open with its org's key"
        );
    }

    // An org with a cluster is not deleted; without, it is, after the name is confirmed.
    let busy = up.cli(&["org", "delete", "globex", "--confirm", "globex"]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("still has 1 cluster"));
    let mut args = vec!["cluster", "delete", "doomed", "--wait"];
    args.extend_from_slice(as_b);
    up.cli_ok(&args);
    let unconfirmed = up.cli(&["org", "delete", "globex", "--confirm", "glob"]);
    assert!(!unconfirmed.status.success());
    up.cli_ok(&["org", "delete", "globex", "--confirm", "globex"]);

    // After: its key no longer works, its name is free, and the objects it left (the
    // deleted cluster's backups, kept for their retention) open with no key the land
    // holds — not another org's, not the master key.
    let refused = up.cli(&["cluster", "list", &b_key]);
    assert!(!refused.status.success());
    let keys = rt.block_on(land_keys(&up));
    assert!(!keys.iter().any(|(o, ..)| *o == org), "the org's keys are gone");
    assert!(!keys.is_empty(), "other orgs keep theirs");
    let left = objects_of(&up, &org);
    assert!(!left.is_empty(), "the deleted cluster's backups are still stored");
    let master = Key::from_hex(&std::fs::read_to_string(up.data_dir.join("master.key")).unwrap()).unwrap();
    for (name, bytes) in &left {
        for (other, generation, key) in &keys {
            // Try the key under whatever generation the object names.
            let g = Keyring::generation_of(bytes).unwrap();
            let ring = Keyring::new(vec![(g, key.clone())]).unwrap();
            assert!(
                ring.open(name, bytes).is_err(),
                "{name} opened with {other}'s generation {generation}"
            );
        }
        let ring = Keyring::new(vec![(Keyring::generation_of(bytes).unwrap(), master.clone())]).unwrap();
        assert!(ring.open(name, bytes).is_err(), "{name} opened with the master key");
    }
    up.cli_ok(&["org", "create", "globex"]);
}

#[test]
fn a_retirement_cut_short_by_a_restart_is_taken_up_again() {
    let tmp = temp_root();
    let mut up = Up::start_in(tmp.path());
    cluster_with_backup(&up, "ledger", &[]);
    let shown = json(&up.cli_ok(&["cluster", "show", "ledger", "--output", "json"]));
    let (org, id) = (
        shown["org_id"].as_str().unwrap().to_string(),
        shown["id"].as_str().unwrap().to_string(),
    );
    up.cli_ok(&["org", "rotate-key"]);
    assert!(
        generations(&up, &org, &id).contains(&1),
        "the backup before the rotation"
    );
    // The control plane stops with a retirement it had taken on still running (its
    // operation in the store, as a process killed mid-way leaves it).
    up.stop();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = format!("sqlite://{}", up.data_dir.join("control.db").display());
        let pool = sqlx::sqlite::SqlitePoolOptions::new().connect(&db).await.unwrap();
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        sqlx::query(
            "INSERT INTO operations (id, org_id, cluster_id, kind, status, error, created_at, updated_at) \
             VALUES ('op_cut_short', $1, NULL, 'retire_data_keys', 'running', NULL, $2, $2)",
        )
        .bind(&org)
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    // Started again, the control plane carries it out.
    let up = Up::start_in(tmp.path());
    let op = rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let op: Value = http
                .get(format!("{}/v1/operations/op_cut_short", up.api_url))
                .bearer_auth(&up.api_key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if op["status"] != "running" {
                return op;
            }
            assert!(std::time::Instant::now() < deadline, "still running: {op}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(op["status"], "succeeded", "{op}");
    assert!(
        op["outcome"]
            .as_str()
            .unwrap_or_default()
            .starts_with("generation(s) 1 retired: "),
        "{op}"
    );
    let left = generations(&up, &org, &id);
    assert!(!left.is_empty() && left.iter().all(|g| *g == 2), "{left:?}");
    // Asked for again, there is nothing left to retire.
    let done = json(&up.cli_ok(&["org", "retire-keys", "--output", "json"]));
    assert_eq!(
        done["outcome"], "only one data key generation: nothing to retire",
        "{done}"
    );
}
