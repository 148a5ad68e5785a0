//! HA test helpers: a ledger writer that records every acknowledged commit, HA clusters,
//! their members, and the check that no acknowledged commit is lost.

use super::*;
use serde_json::Value;

/// Writes rows one by one through the proxy, reconnecting after errors, and records
/// every id whose commit was acknowledged.
pub async fn ledger_writer(
    uri: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<i64>, Vec<(std::time::Instant, bool)>) {
    ledger_writer_counted(uri, stop, Default::default()).await
}

/// [`ledger_writer`] that also counts its acknowledged commits in `acks` as it goes, so a
/// test can wait for the writer itself to commit again instead of sleeping.
pub async fn ledger_writer_counted(
    uri: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Vec<i64>, Vec<(std::time::Instant, bool)>) {
    let mut acked = Vec::new();
    let mut timeline = Vec::new();
    let mut conn: Option<sqlx::PgConnection> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(40), connect_any(&uri)).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    timeline.push((std::time::Instant::now(), false));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().unwrap();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::query_scalar::<_, i64>("insert into ledger default values returning id").fetch_one(c),
        )
        .await;
        match res {
            Ok(Ok(id)) => {
                acked.push(id);
                timeline.push((std::time::Instant::now(), true));
                acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {
                conn = None;
                timeline.push((std::time::Instant::now(), false));
            }
        }
    }
    (acked, timeline)
}

/// Waits (up to `timeout`) until the writer counting into `acks` has acknowledged `more`
/// commits from now, then stops it.
pub async fn stop_after_commits(
    acks: &std::sync::atomic::AtomicUsize,
    stop: &std::sync::atomic::AtomicBool,
    more: usize,
    what: &str,
    timeout: Duration,
) {
    let until = acks.load(std::sync::atomic::Ordering::Relaxed) + more;
    let deadline = Instant::now() + timeout;
    while acks.load(std::sync::atomic::Ordering::Relaxed) < until {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Creates an HA cluster and waits until its primary's commits wait for a standby.
pub fn ha_cluster(up: &Up, name: &str, replicas: u32) -> (String, Value) {
    ha_cluster_with(up, name, &["--replicas", &replicas.to_string()])
}

/// `cluster show NAME` as JSON.
pub fn show(up: &Up, name: &str) -> Value {
    serde_json::from_str(&up.cli_ok(&["cluster", "show", name, "--output", "json"])).expect("cluster show JSON")
}

/// The longest time between two acknowledged commits after `from` (a write pause), and
/// the number of failed attempts in that span.
pub fn longest_pause(timeline: &[(std::time::Instant, bool)], from: std::time::Instant) -> (Duration, usize) {
    let mut last_ok = from;
    let mut longest = Duration::ZERO;
    let mut failures = 0;
    for (t, ok) in timeline.iter().filter(|(t, _)| *t >= from) {
        if *ok {
            longest = longest.max(t.duration_since(last_ok));
            last_ok = *t;
        } else {
            failures += 1;
        }
    }
    (longest, failures)
}

/// Creates a cluster with `args` (it must have standbys, or `--durability sync`), and
/// waits until its primary's commits wait for every standby.
pub fn ha_cluster_with(up: &Up, name: &str, args: &[&str]) -> (String, Value) {
    let mut cmd = vec!["cluster", "create", name, "--wait"];
    cmd.extend_from_slice(args);
    let out = up.cli_ok(&cmd);
    let uri = out.lines().last().unwrap().trim().to_string();
    psql_ok(&uri, "create table ledger(id bigserial primary key)");
    wait_for("commits to wait for the standbys", Duration::from_secs(60), || {
        let shown: Value = serde_json::from_str(&up.cli_ok(&["cluster", "show", name, "--output", "json"])).unwrap();
        let standbys = shown["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "standby")
            .count();
        psql_ok(&uri, "show synchronous_standby_names").matches("inst_").count() == standbys
    });
    let shown: Value = serde_json::from_str(&up.cli_ok(&["cluster", "show", name, "--output", "json"])).unwrap();
    (uri, shown)
}

/// The first member of `shown` with this role.
pub fn member<'a>(shown: &'a Value, role: &str) -> &'a Value {
    shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == role)
        .unwrap()
}

/// Waits until the cluster has `n` members, all running.
pub fn wait_members_running(up: &Up, name: &str, n: usize, what: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        let shown: Value = serde_json::from_str(&up.cli_ok(&["cluster", "show", name, "--output", "json"])).unwrap();
        let members = shown["members"].as_array().unwrap();
        members.len() == n && members.iter().all(|m| m["state"] == "running")
    });
}

/// The acknowledged ids that are not in the ledger `uri` reaches.
pub fn lost_commits(uri: &str, acked: &[i64]) -> Vec<i64> {
    let present: std::collections::BTreeSet<i64> = psql_ok(uri, "select id from ledger")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    acked.iter().filter(|id| !present.contains(id)).copied().collect()
}

pub fn check_ledger(uri: &str, acked: &[i64]) {
    let lost = lost_commits(uri, acked);
    assert!(lost.is_empty(), "lost acknowledged commits: {lost:?}");
}

/// Each acknowledged id with the time it was acknowledged (a writer's timeline holds one
/// successful attempt per id, in order).
pub fn ack_times<'a>(
    acked: &'a [i64],
    timeline: &'a [(std::time::Instant, bool)],
) -> impl Iterator<Item = (i64, std::time::Instant)> + 'a {
    acked
        .iter()
        .copied()
        .zip(timeline.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t))
}
