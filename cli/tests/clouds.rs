//! Losing a whole cloud (issue 11) on the real `highrise up`: every cloud of the land has a
//! proxy of its own, connection URIs list them all, and an HA cluster spread over both
//! clouds fails over when the primary's cloud goes dark — its clients reconnect through
//! the surviving cloud's proxy with the URI they had, nothing acknowledged lost; a
//! cluster that lived only in the lost cloud is restored in the other by itself, and the
//! lost cloud's hosts, coming back with their stale state, serve no second primary.

mod common;

use common::ha::*;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn land_post(url: String) -> u16 {
    reqwest::Client::new().post(url).send().await.unwrap().status().as_u16()
}

/// Starts a ledger writer on `uri`, lets it commit for `warm`, then takes `local-a` down
/// (`freeze`: its hosts stop where they are, to resume with it). Returns the writer, its
/// stop flag, its count of acknowledged commits and the moment the loss was complete.
async fn write_then_lose_local_a(
    up: &Up,
    uri: &str,
    warm: Duration,
    freeze: bool,
) -> (
    tokio::task::JoinHandle<(Vec<i64>, Vec<(Instant, bool)>)>,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Instant,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(ledger_writer_counted(uri.to_string(), stop.clone(), acks.clone()));
    tokio::time::sleep(warm).await;
    let how = if freeze { "?freeze=true" } else { "" };
    assert_eq!(
        land_post(format!("{}/land/clouds/local-a/down{how}", up.land_url)).await,
        200
    );
    // The loss is complete when the land says so: a commit acknowledged while the call
    // was under way came before it (a run lost commits acknowledged after the call began).
    let lost_at = Instant::now();
    (writer, stop, acks, lost_at)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_spread_over_two_clouds_survives_losing_the_primarys_cloud_with_the_same_uri() {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    assert_eq!(up.proxy_addrs.len(), 2, "a proxy per cloud: {:?}", up.proxy_addrs);
    let u = up.clone();
    let (uri, before) = tokio::task::spawn_blocking(move || {
        ha_cluster_with(
            &u,
            "wide",
            &["--replicas", "1", "--spread-clouds", "--durability", "sync"],
        )
    })
    .await
    .unwrap();
    // The URI lists every cloud's proxy; each one serves the cluster.
    assert!(uri.contains(&up.proxies()), "{uri}");
    for one in each_host(&uri) {
        assert_eq!(psql_ok(&one, "select 'via one proxy'"), "via one proxy");
    }
    let primary = member(&before, "primary");
    assert_eq!(primary["cloud"], "local-a", "{before}");
    assert_eq!(member(&before, "standby")["cloud"], "local-b", "{before}");

    // local-a goes dark: its hosts and its proxy, with every connection through it.
    let (writer, stop, acks, lost_at) = write_then_lose_local_a(&up, &uri, Duration::from_millis(500), false).await;
    let u = up.clone();
    let after = tokio::task::spawn_blocking(move || {
        wait_for("the standby in local-b to take over", Duration::from_secs(60), || {
            let shown = show(&u, "wide");
            shown["status"] == "running" && member(&shown, "primary")["cloud"] == "local-b"
        });
        show(&u, "wide")
    })
    .await
    .unwrap();
    // Writes go on through local-b's proxy, by the URI the writer always had.
    stop_after_commits(&acks, &stop, 2, "commits after the failover", Duration::from_secs(60)).await;
    let (acked, timeline) = writer.await.unwrap();
    let (pause, failures) = longest_pause(&timeline, lost_at);
    let after_failover = timeline.iter().filter(|(at, ok)| *ok && *at > lost_at + pause).count();
    eprintln!(
        "cloud lost: longest write pause {pause:?} ({failures} failed attempts); {} acked, {after_failover} after the failover",
        acked.len()
    );
    assert!(after_failover > 0, "no commit through the surviving proxy");
    check_ledger(&uri, &acked);
    assert_eq!(after["connection_uri"], before["connection_uri"], "the same URI");
    assert!(refused(&up.proxy_addrs[0]), "local-a's proxy is down with its cloud");

    // The cloud comes back: its proxy listens again and serves the cluster where it is now.
    assert_eq!(land_post(format!("{}/land/clouds/local-a/up", up.land_url)).await, 204);
    let first = each_host(&uri)[0].clone();
    tokio::task::spawn_blocking(move || {
        wait_for("local-a's proxy to serve again", Duration::from_secs(30), || {
            psql(&first, "select 1").0
        });
    })
    .await
    .unwrap();
}

/// Whether nothing accepts connections on an address.
fn refused(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_err()
}

/// A cluster that lived only in `local-a` — one member, `durability: async`, its backups
/// and WAL copied to `local-b`'s store — comes back in `local-b` by itself when `local-a`
/// goes dark (its hosts frozen, its API refusing): same URI and credentials, every commit
/// up to what the copy held present (the lost ones, if any, are the last before the
/// loss), the time to recovery reported. When `local-a` comes back, its old primary
/// resumes as it was — a primary of the old term — yet serves nothing: its proxy asks for
/// the current routes before serving, its agent hears it was given up and stops it, and
/// the control plane terminates the host.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_that_lived_only_in_a_lost_cloud_is_restored_in_another_by_itself() {
    let up = Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let u = up.clone();
    let uri = tokio::task::spawn_blocking(move || {
        let out = u.cli_ok(&["cluster", "create", "solo", "--cloud", "local-a", "--wait"]);
        let uri = out.lines().last().unwrap().trim().to_string();
        psql_ok(&uri, "create table ledger(id bigserial primary key)");
        wait_for("a base backup copied to local-b", Duration::from_secs(120), || {
            let list: serde_json::Value =
                serde_json::from_str(&u.cli_ok(&["backup", "list", "solo", "--output", "json"])).unwrap();
            let complete = list.as_array().unwrap().iter().any(|b| b["status"] == "complete");
            complete && show(&u, "solo")["copy_lag_bytes"] == 0
        });
        uri
    })
    .await
    .unwrap();
    let before = show(&up, "solo");
    assert_eq!(before["cloud"], "local-a", "{before}");
    assert_eq!(before["on_cloud_loss"], "restore", "{before}");
    let old_host = member(&before, "primary")["host_id"].as_str().unwrap().to_string();

    let (writer, stop, acks, lost_at) = write_then_lose_local_a(&up, &uri, Duration::from_secs(2), true).await;
    let u = up.clone();
    let after = tokio::task::spawn_blocking(move || {
        wait_for("the cluster restored in local-b", Duration::from_secs(180), || {
            let shown = show(&u, "solo");
            shown["status"] == "running"
                && shown["cloud"] == "local-b"
                && shown["members"].as_array().unwrap().len() == 1
                && member(&shown, "primary")["cloud"] == "local-b"
        });
        show(&u, "solo")
    })
    .await
    .unwrap();
    // The writer, by the URI it always had, commits again through local-b's proxy.
    stop_after_commits(&acks, &stop, 2, "commits after the restore", Duration::from_secs(60)).await;
    let (acked, timeline) = writer.await.unwrap();
    let acked_at: Vec<Instant> = timeline.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t).collect();
    // Time to recovery: the longest stretch without a commit after the loss.
    let (rto, failures) = longest_pause(&timeline, lost_at);
    // The restored sequence may hand out again ids that commits lost with the cloud had
    // (it resumes where the copied WAL left it): a row committed after the loss is not
    // the earlier commit's, so the earlier commits are checked against the rest.
    let after_loss: std::collections::BTreeSet<i64> = (0..acked.len())
        .filter(|k| acked_at[*k] > lost_at)
        .map(|k| acked[k])
        .collect();
    let present: std::collections::BTreeSet<i64> = psql_ok(&uri, "select id from ledger")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .filter(|id| !after_loss.contains(id))
        .collect();
    let lost: Vec<usize> = (0..acked.len())
        .filter(|k| acked_at[*k] <= lost_at && !present.contains(&acked[*k]))
        .collect();
    assert!(
        after_loss
            .iter()
            .all(|id| psql_ok(&uri, &format!("select count(*) from ledger where id = {id}")) == "1"),
        "every commit after the restore is present"
    );
    // What was lost is a suffix of the commits before the loss: replay stops at the end
    // of the copied WAL, never leaves a hole.
    if let Some(first) = lost.first() {
        let at = |k: usize| {
            format!(
                "#{k} id {} at {:?}",
                acked[k],
                acked_at[k].saturating_duration_since(lost_at)
            )
        };
        assert!(
            lost.iter().enumerate().all(|(n, k)| *k == first + n),
            "lost commits with a hole: {} lost of {} acked, the first {}, the last {}; the last present id {:?}; \
             the first lost after a hole {}",
            lost.len(),
            acked.len(),
            at(*first),
            at(*lost.last().unwrap()),
            present.last(),
            lost.windows(2)
                .find(|w| w[1] != w[0] + 1)
                .map_or_else(String::new, |w| at(w[1]))
        );
        let window = lost_at.saturating_duration_since(acked_at[*first]);
        assert!(
            acked_at[*lost.last().unwrap()] <= lost_at && window < Duration::from_secs(10),
            "lost {} commits acknowledged up to {window:?} before the loss",
            lost.len()
        );
    }
    eprintln!(
        "cloud lost, single-cloud cluster: RTO {rto:?} (longest write pause, {failures} failed attempts); {} acked, \
         {} lost (acknowledged in the last {:?} before the loss); copy lag before: {}",
        acked.len(),
        lost.len(),
        lost.first().map(|k| lost_at.saturating_duration_since(acked_at[*k])),
        before["copy_lag_bytes"]
    );
    assert!(
        acked_at.last().is_some_and(|t| *t > lost_at + rto),
        "no commit after the loss"
    );
    assert_eq!(after["connection_uri"], before["connection_uri"], "the same URI");
    assert_eq!(after["endpoint"], before["endpoint"]);
    let events = up.cli_ok(&["cluster", "events", "solo"]);
    assert!(
        events.contains("cloud local-a is dark") && events.contains("relocated"),
        "the events explain: {events}"
    );

    // local-a comes back with its old primary as it was. Clients that connect through
    // local-a's proxy at once (the URI's first host) reach the new primary only: every
    // row they commit is in the cluster as local-b's proxy shows it.
    assert_eq!(land_post(format!("{}/land/clouds/local-a/up", up.land_url)).await, 204);
    let via_a = each_host(&uri)[0].clone();
    let back_at = Instant::now();
    let mut committed = Vec::new();
    while back_at.elapsed() < Duration::from_secs(4) {
        let (ok, out, _) = psql(&via_a, "insert into ledger default values returning id");
        if ok {
            committed.push(out.trim().parse::<i64>().unwrap());
        }
    }
    assert!(!committed.is_empty(), "local-a's proxy serves again");
    let via_b = each_host(&uri)[1].clone();
    let seen: std::collections::BTreeSet<i64> = psql_ok(&via_b, "select id from ledger")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let astray: Vec<&i64> = committed.iter().filter(|id| !seen.contains(id)).collect();
    assert!(
        astray.is_empty(),
        "commits through local-a's proxy went to a second primary: {astray:?}"
    );

    // The old host is terminated, nothing of the cluster runs in local-a, and the copy
    // (now in local-a's store) catches up again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hosts: serde_json::Value = reqwest::get(format!("{}/land/hosts", up.land_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let terminated = hosts
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["host_id"] == old_host.as_str() && h["state"] == "terminated");
        if terminated {
            break;
        }
        assert!(Instant::now() < deadline, "the old host still runs: {hosts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let u = up.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "the copy in local-a's store to catch up",
            Duration::from_secs(60),
            || {
                let shown = show(&u, "solo");
                shown["copy_cloud"] == "local-a" && shown["copy_lag_bytes"] == 0
            },
        );
        let shown = show(&u, "solo");
        let members = shown["members"].as_array().unwrap();
        assert_eq!(members.len(), 1, "{shown}");
        assert_eq!(members[0]["cloud"], "local-b", "{shown}");
        assert_eq!(psql_ok(&uri, "select pg_is_in_recovery()"), "f");
    })
    .await
    .unwrap();
}
