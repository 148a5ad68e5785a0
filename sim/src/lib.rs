//! The fleet simulator: the production planner (`highrise_planner::plan`) on virtual time,
//! against a simulated land (spot pools from trace files or a synthetic model, priced by
//! the price book, through the same `SpotMarket` the local land uses) and simulated
//! agents whose step durations come from a calibration file (`sim/calibration.toml`,
//! taken from `bench/` results).
//!
//! The fleet is cut into cells of a few clusters with their own hosts, simulated
//! independently (hosts are shared inside a cell, as slots are on a real land) and in
//! parallel; each cell is event-driven and deterministic for a seed. Every policy runs on
//! the same clusters, pools and market in the same run: the Highrise policy, all
//! on-demand (self-managed), a naive spot policy (one pool, no spread, no fallback, no
//! notice handling) and a SkyServe-like policy (spread and dynamic on-demand fallback, but
//! replacement only after a preemption), plus the managed multi-AZ price for the same
//! shapes.

mod cell;
pub mod report;

use anyhow::{bail, Context, Result};
use highrise_planner::SpotPolicy;
use highrise_provider::market::{
    host_pools, Availability, Pool, PoolId, PriceBook, RegionPrices, SpotMarket, Synthetic, Trace, MONTH_SECS,
};
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The repository's calibration (`sim/calibration.toml`).
pub const REPOSITORY_CALIBRATION: &str = include_str!("../calibration.toml");

/// Step durations and the usage model; see `sim/calibration.toml` for each figure's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub host_boot_secs: f64,
    pub instance_create_secs: f64,
    pub standby_copy_mb_per_sec: f64,
    pub standby_start_secs: f64,
    pub restore_mb_per_sec: f64,
    pub restore_start_secs: f64,
    pub switchover_secs: f64,
    pub promote_secs: f64,
    pub delete_secs: f64,
    pub commits_per_sec: f64,
    pub async_archive_lag_secs: f64,
    pub wal_per_month_x_data: f64,
    pub backups_kept: u32,
    pub root_disk_gb: u32,
    pub synthetic_outage_secs: f64,
}

impl Calibration {
    pub fn parse(text: &str) -> Result<Self> {
        let c: Calibration = toml::from_str(text).context("parse the calibration")?;
        let positive = [
            c.host_boot_secs,
            c.instance_create_secs,
            c.standby_copy_mb_per_sec,
            c.restore_mb_per_sec,
            c.switchover_secs,
            c.promote_secs,
            c.delete_secs,
            c.commits_per_sec,
            c.synthetic_outage_secs,
        ];
        if positive.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
            bail!("calibration: every duration, throughput and rate must be a positive number");
        }
        Ok(c)
    }

    pub fn repository() -> Result<Self> {
        Self::parse(REPOSITORY_CALIBRATION)
    }
}

/// A cluster's shape in the fleet mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// One member, every commit in object storage before it is acknowledged.
    SingleSync,
    /// A primary and one synchronous standby.
    PrimaryPlusOne,
    /// A primary and two standbys (commits wait for one of them).
    PrimaryPlusTwo,
}

impl Shape {
    pub fn members(self) -> u32 {
        match self {
            Shape::SingleSync => 1,
            Shape::PrimaryPlusOne => 2,
            Shape::PrimaryPlusTwo => 3,
        }
    }
}

/// Who decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The production planner with its spot policy.
    Highrise,
    /// The production planner, every member on on-demand (self-managed on IaaS).
    OnDemand,
    /// Everything in the region's cheapest pool; no spread, no fallback, no notice handling.
    NaiveSpot,
    /// Spread over pools and fall back to on-demand when spot is gone, but members are
    /// replaced only once preempted (SkyServe-style dynamic fallback for a stateful job).
    SkyServeLike,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::Highrise,
        Policy::OnDemand,
        Policy::NaiveSpot,
        Policy::SkyServeLike,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Highrise => "highrise",
            Policy::OnDemand => "on-demand",
            Policy::NaiveSpot => "naive spot",
            Policy::SkyServeLike => "skyserve-like",
        }
    }

    fn spot(self) -> bool {
        self != Policy::OnDemand
    }

    fn sees_notices(self) -> bool {
        self == Policy::Highrise
    }

    fn one_pool(self) -> bool {
        self == Policy::NaiveSpot
    }

    fn planner_policy(self, base: &SpotPolicy) -> SpotPolicy {
        match self {
            Policy::Highrise | Policy::OnDemand => base.clone(),
            Policy::NaiveSpot => SpotPolicy {
                spread: false,
                fallback: false,
                // Naive: keeps launching into its pool.
                volatile_preemptions: usize::MAX,
                ..base.clone()
            },
            Policy::SkyServeLike => base.clone(),
        }
    }
}

/// Where the pools' spot capacity comes from.
#[derive(Debug, Clone)]
pub enum Market {
    /// One pool per trace file, named by its path.
    Traces(Vec<Trace>),
    /// The price book's regions, each zone a pool, with capacity outages at this rate.
    Synthetic { per_month: f64 },
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub market: Market,
    pub prices: PriceBook,
    pub calibration: Calibration,
    pub clusters: u32,
    pub days: f64,
    pub seed: u64,
    /// Cluster shapes, cycled through.
    pub shapes: Vec<Shape>,
    /// Plans, cycled through.
    pub plans: Vec<String>,
    pub policies: Vec<Policy>,
    /// Clusters per cell (an independent group with its own hosts).
    pub cell_size: u32,
    /// The spot policy's knobs (the production defaults).
    pub spot: SpotPolicy,
    /// Record the members' timeline of the first cluster (for the chart).
    pub timeline: bool,
    /// HA clusters run with `durability: sync` (every commit in object storage first), so
    /// one that loses every member is restored without loss; else `async`, and such a
    /// cluster waits for a person (`highrise cluster restore`), as in production.
    pub ha_sync: bool,
}

/// A pool of the simulation: the market's pool and the prices of the region it is priced as.
#[derive(Debug, Clone)]
pub(crate) struct SimPool {
    pub pool: Pool,
    pub prices: RegionPrices,
}

/// A region the fleet's clusters live in, with its pools. In trace mode a region name
/// seen in several data sets is one region of several "clouds" (the data sets), which an
/// HA cluster spreads over.
#[derive(Debug, Clone)]
pub(crate) struct SimRegion {
    pub region: String,
    pub pools: Vec<SimPool>,
}

impl SimRegion {
    /// The (cloud, region) pairs of its pools, in order of first appearance.
    pub fn locations(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for p in &self.pools {
            let l = (p.pool.id.cloud.clone(), p.pool.id.region.clone());
            if !out.contains(&l) {
                out.push(l);
            }
        }
        out
    }
}

/// Prices for a simulated cloud: its own entry in the book, else the book's region of the
/// cloud its name starts with (`aws-02-15-2023` → `aws`), else the book's first region.
fn prices_for<'a>(book: &'a PriceBook, cloud: &str, region: &str) -> &'a RegionPrices {
    book.region(cloud, region)
        .or_else(|| book.regions.iter().find(|r| cloud.starts_with(&r.cloud)))
        .unwrap_or(&book.regions[0])
}

/// Splits a trace's name (`…/<dataset>/<zone>_<type>.json`) into (cloud, region, zone,
/// instance type): the dataset directory is the cloud, the zone's region is the zone
/// without its trailing letter.
fn trace_pool(name: &str) -> (String, String, String, String) {
    let path = Path::new(name);
    let cloud = path
        .parent()
        .and_then(|p| p.file_name())
        .map_or_else(|| "traces".to_string(), |s| s.to_string_lossy().to_string());
    let stem = path
        .file_stem()
        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().to_string());
    let (zone, itype) = stem.split_once('_').unwrap_or((stem.as_str(), "pool"));
    let region = zone.trim_end_matches(|c: char| c.is_ascii_alphabetic()).to_string();
    let region = if region.is_empty() { zone.to_string() } else { region };
    (cloud, region, zone.to_string(), itype.to_string())
}

/// The pools and the market they trade in.
pub(crate) fn build_market(cfg: &SimConfig) -> Result<(Vec<SimRegion>, SpotMarket)> {
    let horizon = (cfg.days * 86_400.0) as u64 + 86_400;
    let mut regions: Vec<SimRegion> = Vec::new();
    let mut availability: Vec<(PoolId, Availability)> = Vec::new();
    match &cfg.market {
        Market::Traces(traces) => {
            if traces.is_empty() {
                bail!("no traces");
            }
            for tr in traces {
                let (cloud, region, zone, itype) = trace_pool(&tr.name);
                let prices = prices_for(&cfg.prices, &cloud, &region).clone();
                let host = prices.host_type().clone();
                // A trace's own prices are for its own (GPU) instance type: they set the
                // shape of the spot price over time, scaled so their mean is the book's
                // spot price of the host type.
                let trace = match &tr.prices {
                    Some(p) if !p.is_empty() => {
                        let mean: rust_decimal::Decimal =
                            p.iter().copied().sum::<rust_decimal::Decimal>() / rust_decimal::Decimal::from(p.len());
                        let mut scaled = tr.clone();
                        if !mean.is_zero() {
                            scaled.prices = Some(p.iter().map(|x| (x / mean * host.spot_hour).round_dp(6)).collect());
                        }
                        scaled
                    }
                    _ => tr.clone(),
                };
                let pool = Pool {
                    id: PoolId {
                        cloud: cloud.clone(),
                        region: region.clone(),
                        zone,
                        instance_type: itype,
                    },
                    vcpu: host.vcpu,
                    ram_gib: host.ram_gib,
                    on_demand_hour: host.on_demand_hour,
                    spot_hour: host.spot_hour,
                    notice_secs: prices.notice_secs,
                };
                availability.push((pool.id.clone(), Availability::Trace(trace)));
                match regions.iter_mut().find(|r| r.region == region) {
                    Some(r) => r.pools.push(SimPool { pool, prices }),
                    None => regions.push(SimRegion {
                        region,
                        pools: vec![SimPool { pool, prices }],
                    }),
                }
            }
        }
        Market::Synthetic { per_month } => {
            for r in &cfg.prices.regions {
                let pools = host_pools(&cfg.prices, &[(r.cloud.clone(), r.region.clone(), r.zones.clone())]);
                for (i, p) in pools.iter().enumerate() {
                    let seed =
                        cfg.seed ^ (availability.len() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64;
                    availability.push((
                        p.id.clone(),
                        Availability::Synthetic(Synthetic::new(
                            *per_month,
                            cfg.calibration.synthetic_outage_secs,
                            horizon,
                            seed,
                        )),
                    ));
                }
                regions.push(SimRegion {
                    region: r.region.clone(),
                    pools: pools
                        .into_iter()
                        .map(|pool| SimPool {
                            pool,
                            prices: r.clone(),
                        })
                        .collect(),
                });
            }
        }
    }
    let all: Vec<Pool> = regions
        .iter()
        .flat_map(|r| r.pools.iter().map(|p| p.pool.clone()))
        .collect();
    // A pool with capacity holds as many spot hosts as a cell can ask for.
    let mut market = SpotMarket::new(all, 1_000);
    for (id, a) in availability {
        market.set_availability(&id, a).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // Clusters live where spreading is possible: regions with at least two pools (all
    // regions if none has two).
    let spreadable: Vec<SimRegion> = regions.iter().filter(|r| r.pools.len() >= 2).cloned().collect();
    let regions = if spreadable.is_empty() { regions } else { spreadable };
    Ok((regions, market))
}

/// Runs every policy over the same fleet; returns one result per policy.
pub fn run(cfg: &SimConfig) -> Result<report::Report> {
    let days_ok = cfg.days.is_finite() && cfg.days > 0.0;
    if cfg.clusters == 0 || !days_ok || cfg.shapes.is_empty() || cfg.plans.is_empty() {
        bail!("nothing to simulate: give clusters, days, shapes and plans");
    }
    for p in &cfg.plans {
        if !cfg.prices.plans.contains_key(p) || highrise_planner::plan_slots(p).is_none() {
            bail!("unknown plan {p:?}");
        }
    }
    let (regions, market) = build_market(cfg)?;
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for policy in &cfg.policies {
        results.push(cell::run_policy(cfg, *policy, &regions, &market)?);
    }
    let managed = managed_cost(cfg, &regions);
    Ok(report::Report {
        clusters: cfg.clusters,
        days: cfg.days,
        cluster_months: f64::from(cfg.clusters) * cfg.days * 86_400.0 / MONTH_SECS as f64,
        seed: cfg.seed,
        market: match &cfg.market {
            Market::Traces(t) => format!("{} trace files (1 = no capacity)", t.len()),
            Market::Synthetic { per_month } => format!("synthetic, {per_month} interruptions per pool-month"),
        },
        policies: results,
        managed_per_cluster_month: managed,
        wall_secs: started.elapsed().as_secs_f64(),
    })
}

/// The managed multi-AZ price of the same fleet, per cluster-month: the book's managed
/// price of each plan's shape (a primary and one standby), times 1.5 for a primary with
/// two standbys (a multi-AZ cluster of three), plus its storage. A single-node sync
/// cluster is compared with the same multi-AZ price: it is what a tenant who wants its
/// commits to survive a host would buy.
fn managed_cost(cfg: &SimConfig, regions: &[SimRegion]) -> f64 {
    let hours = MONTH_SECS as f64 / 3600.0;
    let mut total = 0.0;
    for n in 0..cfg.clusters {
        let r = &regions[n as usize % regions.len()];
        let prices = &r.pools[0].prices;
        let (plan, shape) = cell::cluster_kind(cfg, n);
        let size = &cfg.prices.plans[plan];
        let hour = prices.managed_hour(size).and_then(|d| d.to_f64()).unwrap_or(0.0);
        let scale = if shape.members() > 2 { 1.5 } else { 1.0 };
        let storage = prices.managed_storage_gb_month.to_f64().unwrap_or(0.0) * f64::from(size.data_gb);
        total += hour * scale * hours + storage;
    }
    total / f64::from(cfg.clusters)
}

#[cfg(test)]
mod tests;
