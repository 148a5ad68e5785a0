//! Losing a whole cloud (issue 11) on the real `highrise up`: every cloud of the land has a
//! proxy of its own, connection URIs list them all, and an HA cluster spread over both
//! clouds fails over when the primary's cloud goes dark — its clients reconnect through
//! the surviving cloud's proxy with the URI they had, nothing acknowledged lost.

mod common;

use common::ha::*;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn land_post(url: String) -> u16 {
    reqwest::Client::new().post(url).send().await.unwrap().status().as_u16()
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

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(uri.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // local-a goes dark: its hosts and its proxy, with every connection through it.
    let lost_at = Instant::now();
    assert_eq!(
        land_post(format!("{}/land/clouds/local-a/down", up.land_url)).await,
        200
    );
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
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
