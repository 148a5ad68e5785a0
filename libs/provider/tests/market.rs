//! The local land's market on real host records: spot launches need room in their pool,
//! a replayed trace takes capacity away and the newest spot hosts get notices, an
//! operator's capacity pins a whole region. The hosts' agent is `/bin/true` (it exits at
//! once): only the land's own bookkeeping is under test here; the e2e tests run real agents.

use highrise_provider::local::{default_clouds, LocalLand, LocalLandConfig};
use highrise_provider::market::{Trace, TraceReading};
use highrise_provider::{HostState, LaunchRequest, Market, Provider, ProviderError};
use std::time::{Duration, Instant};

fn land(traces: Vec<Trace>, speed: f64, capacity: u32) -> (std::sync::Arc<LocalLand>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalLandConfig::new(
        dir.path().join("land"),
        default_clouds(),
        "/bin/true".into(),
        "http://127.0.0.1:9".into(),
    )
    .unwrap();
    cfg.traces = traces;
    cfg.trace_speed = speed;
    cfg.spot_capacity = capacity;
    cfg.notice_secs = Some(60);
    (LocalLand::open(cfg).unwrap(), dir)
}

fn spot(id: &str, zone: &str) -> LaunchRequest {
    LaunchRequest {
        host_id: id.into(),
        cloud: "local-a".into(),
        region: "region-1".into(),
        market: Market::Spot,
        zone: Some(zone.into()),
        bootstrap_token: "t".into(),
        control_url: "http://127.0.0.1:9".into(),
        control_ca: None,
        disk_bytes: None,
    }
}

async fn state(land: &LocalLand, id: &str) -> HostState {
    land.list_hosts()
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.host_id == id)
        .map(|h| h.state)
        .unwrap()
}

#[tokio::test]
async fn spot_launches_need_room_and_an_operator_can_empty_a_region() {
    let (land, _dir) = land(Vec::new(), 1.0, 1);
    let h = land.launch_host(spot("h1", "zone-1")).await.unwrap();
    assert_eq!(h.instance_type, "m6id.4xlarge");
    assert_eq!(h.pool().to_string(), "local-a/region-1/zone-1/m6id.4xlarge");
    let refused = land.launch_host(spot("h2", "zone-1")).await.unwrap_err();
    assert!(matches!(refused, ProviderError::NoCapacity(_)), "{refused}");
    assert!(refused.to_string().contains("zone-1"), "{refused}");
    land.launch_host(spot("h3", "zone-2")).await.unwrap();
    // The whole region runs out: every spot host in it gets a notice.
    let pools = land.set_capacity("local-a/region-1", Some(0)).unwrap();
    assert_eq!(pools.len(), 3);
    assert_eq!(state(&land, "h1").await, HostState::Preempting);
    assert_eq!(state(&land, "h3").await, HostState::Preempting);
    assert!(land.set_capacity("nowhere", Some(1)).is_err());
    let status = land.pool_status();
    assert!(status.iter().all(|p| p.notice_secs == 60));
    assert_eq!(
        status
            .iter()
            .find(|p| p.id.ends_with("zone-1/m6id.4xlarge") && p.id.starts_with("local-a"))
            .unwrap()
            .spot_capacity,
        0
    );
}

#[tokio::test]
async fn a_replayed_trace_takes_capacity_away_and_the_host_gets_a_notice() {
    // Capacity for one trace second, then none; replayed at 10 trace seconds per second.
    let trace = Trace::parse(
        "t",
        br#"{"metadata":{"gap_seconds":5},"data":[0,1]}"#,
        TraceReading::OneIsPreempted,
    )
    .unwrap();
    let (land, _dir) = land(vec![trace], 10.0, 4);
    land.launch_host(spot("h1", "zone-1")).await.unwrap();
    assert_eq!(state(&land, "h1").await, HostState::Running);
    land.spawn_market();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&land, "h1").await != HostState::Preempting {
        assert!(
            Instant::now() < deadline,
            "no notice after the trace took capacity away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With no capacity, a spot launch into that pool is refused.
    assert!(land.launch_host(spot("h2", "zone-1")).await.is_err());
}
