//! Metering ingestion (issue 15's performance figure): how many usage readings a second
//! the control plane's store takes when every host's heartbeat carries its instances'
//! counters, with `METER_HOSTS` simulated agents, on SQLite and on PostgreSQL — against,
//! as the baseline in the same run, the heartbeat write every beat makes anyway
//! (`Store::heartbeat`, the instances' observed state). The store is driven directly, as
//! the heartbeat handler drives it (`api/agents.rs`: `heartbeat`, then `record_readings`);
//! HTTP and TLS are left out, being the same for both.
//!
//! `bench/run metering` runs it (release build). Env: METER_HOSTS (10000),
//! METER_PER_HOST (2 instances), METER_ROUNDS (3 timed rounds after a first that creates
//! the meters), METER_CONC (8 heartbeats in flight).

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{Context, Result};
use common::*;
use highrise_api::ObservedInstance;
use highrise_control::store::Store;
use highrise_pg::scratch::ScratchServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 2026-11-01T00:00:00Z, ms.
const T0: i64 = 1_793_491_200_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Fleet {
    hosts: Vec<String>,
    lives: Vec<Vec<Life>>,
    observed: Vec<Vec<ObservedInstance>>,
}

/// `hosts` hosts, each with `per_host` instances of one cluster; ten clusters an org.
async fn seed(store: &Store, hosts: usize, per_host: usize) -> Result<Fleet> {
    let mut fleet = Fleet {
        hosts: Vec::new(),
        lives: Vec::new(),
        observed: Vec::new(),
    };
    for h in 0..hosts {
        let org = format!("o{}", h / 10);
        if h % 10 == 0 {
            store
                .create_org(
                    &org_row(&org, &org),
                    &format!("p{}", h / 10),
                    &key_row(&format!("k{}", h / 10), &org),
                )
                .await?;
        }
        let host = format!("h{h}");
        let market = if h % 2 == 0 { "spot" } else { "on_demand" };
        store.insert_host(&host_row(&host, market)).await?;
        let cluster = format!("c{h}");
        let mut c = cluster_row(
            &cluster,
            &org,
            &format!("p{}", h / 10),
            &format!("db{h}"),
            &format!("ep-{h}"),
        );
        c.plan = ["small", "medium", "large"][h % 3].into();
        store
            .create_cluster(&c, &op_row(&format!("op{h}"), &org, &cluster, "create"))
            .await?;
        let mut lives = Vec::new();
        let mut observed = Vec::new();
        for i in 0..per_host {
            let id = format!("i{h}-{i}");
            store.insert_instance(&instance_row(&id, &cluster, &host)).await?;
            observed.push(serde_json::from_value(serde_json::json!({
                "id": id, "state": "running", "addr": format!("10.0.{}.{}:5432", h / 250, h % 250),
                "error": null, "sync_standbys": [], "sync_streaming": [], "term": 1,
            }))?);
            lives.push(Life {
                id,
                host: "",
                cluster: cluster.clone(),
                start: T0 + (h as i64 % 60_000),
                end: None,
            });
        }
        fleet.hosts.push(host);
        fleet.lives.push(lives);
        fleet.observed.push(observed);
    }
    Ok(fleet)
}

/// Runs `beat(host index)` for every host, `conc` at a time; the time it took.
async fn round<F, Fut>(hosts: usize, conc: usize, beat: F) -> Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let beat = Arc::new(beat);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..conc {
        let beat = Arc::clone(&beat);
        workers.push(tokio::spawn(async move {
            for h in (w..hosts).step_by(conc) {
                beat(h).await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(started.elapsed())
}

async fn bench(name: &str, url: &str) -> Result<()> {
    let (hosts, per_host, rounds, conc) = (
        env("METER_HOSTS", 10_000),
        env("METER_PER_HOST", 2),
        env("METER_ROUNDS", 3),
        env("METER_CONC", 8),
    );
    let store = Store::open(url).await.context("open the store")?;
    let seeding = Instant::now();
    let fleet = Arc::new(seed(&store, hosts, per_host).await.context("seed the fleet")?);
    eprintln!(
        "{name}: seeded {hosts} hosts in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let (mut beat_time, mut meter_time) = (Duration::ZERO, Duration::ZERO);
    for r in 0..=rounds {
        // A minute between beats (of simulated time); the hour boundary is crossed too.
        let t = T0 + 40 * 60_000 + r as i64 * 7 * 60_000;
        let (s, f) = (store.clone(), Arc::clone(&fleet));
        let b = round(hosts, conc, move |h| {
            let (s, f) = (s.clone(), Arc::clone(&f));
            async move {
                s.heartbeat(&f.hosts[h], t, &f.observed[h]).await?;
                Ok(())
            }
        })
        .await?;
        let (s, f) = (store.clone(), Arc::clone(&fleet));
        let m = round(hosts, conc, move |h| {
            let (s, f) = (s.clone(), Arc::clone(&f));
            async move {
                let readings: Vec<_> = f.lives[h].iter().filter_map(|l| l.reading(t)).collect();
                let o = s.record_readings(&f.hosts[h], &readings).await?;
                anyhow::ensure!(o.taken == readings.len(), "{o:?}");
                Ok(())
            }
        })
        .await?;
        // The first round creates every meter: not timed.
        if r > 0 {
            beat_time += b;
            meter_time += m;
        }
    }
    let beats = (hosts * rounds) as f64;
    let readings = beats * per_host as f64;
    println!(
        "| {name} | {hosts} | {per_host} | {:.0} | {:.0} | {:.0} | {:.2} |",
        beats / beat_time.as_secs_f64(),
        beats / meter_time.as_secs_f64(),
        readings / meter_time.as_secs_f64(),
        meter_time.as_secs_f64() / beat_time.as_secs_f64(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    println!("| store | hosts | instances/host | heartbeats/s (baseline: heartbeat write) | metered heartbeats/s | readings/s | metering ÷ heartbeat time |");
    println!("|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    bench(
        "SQLite",
        &format!("sqlite://{}", dir.path().join("control.db").display()),
    )
    .await?;
    let pg = ScratchServer::start(&[]).await?;
    bench("PostgreSQL", &pg.admin_url()).await?;
    Ok(())
}
