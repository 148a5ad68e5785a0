//! Markets: the price book, spot pools, and each pool's spot capacity over time.
//!
//! A *pool* is (cloud, region, zone, instance type). Every pool has an on-demand and a
//! spot price per hour and a spot capacity that changes over time: always there, replayed
//! from a trace file (the format of `../shared/data/spot-traces`), or drawn from a
//! synthetic model (interruptions per pool-month). One [`SpotMarket`] serves both the
//! local land, which replays it onto real hosts, and the fleet simulator, which replays it
//! in virtual time — the market is modelled once.
//!
//! Time here is seconds since the market's epoch (`t`), so the same trace can run at
//! real speed, faster, or in virtual time.

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The price book that ships with the repository (`prices/land.toml`).
pub const REPOSITORY_PRICE_BOOK: &str = include_str!("../../../prices/land.toml");

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("price book: {0}")]
    PriceBook(String),
    #[error("trace {name}: {message}")]
    Trace { name: String, message: String },
    #[error("unknown pool {0}")]
    UnknownPool(String),
    #[error("pool id {0:?} is not cloud/region/zone/instance-type")]
    BadPoolId(String),
}

/// A plan's shape, for prices: slots it takes on a host, its vCPU and memory (the managed
/// instance of the same shape is its comparison), and the data it is modelled to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanShape {
    pub slots: u32,
    pub vcpu: u32,
    pub ram_gib: u32,
    pub data_gb: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceType {
    #[serde(rename = "type")]
    pub name: String,
    pub vcpu: u32,
    pub ram_gib: u32,
    pub local_disk_gb: u32,
    pub on_demand_hour: Decimal,
    pub spot_hour: Decimal,
    /// The cloud's managed multi-AZ PostgreSQL price for this shape.
    pub managed_ha_hour: Option<Decimal>,
    /// The type the land's hosts are (one per region).
    #[serde(default)]
    pub host: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionPrices {
    pub cloud: String,
    pub region: String,
    pub zones: Vec<String>,
    /// Seconds between a spot notice and the host's death in this cloud.
    pub notice_secs: u64,
    pub object_storage_gb_month: Decimal,
    pub root_disk_gb_month: Decimal,
    /// Replication traffic between zones, per GB.
    pub cross_zone_gb: Decimal,
    /// Traffic out to the internet (what clients receive through a proxy), per GB.
    pub internet_egress_gb: Decimal,
    pub managed_storage_gb_month: Decimal,
    #[serde(rename = "instance")]
    pub instances: Vec<InstanceType>,
}

impl RegionPrices {
    /// The instance type of the land's hosts here.
    pub fn host_type(&self) -> &InstanceType {
        // `PriceBook::parse` checked there is exactly one.
        self.instances.iter().find(|i| i.host).unwrap_or(&self.instances[0])
    }

    /// The managed multi-AZ hourly price for a shape, if the book lists one.
    pub fn managed_hour(&self, shape: &PlanShape) -> Option<Decimal> {
        self.instances
            .iter()
            .find(|i| i.vcpu == shape.vcpu && i.ram_gib == shape.ram_gib)
            .and_then(|i| i.managed_ha_hour)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook {
    pub version: String,
    pub plans: BTreeMap<String, PlanShape>,
    /// `cloud/region` of a land priced as `cloud/region` of the book.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(rename = "region")]
    pub regions: Vec<RegionPrices>,
}

impl PriceBook {
    /// The repository's price book.
    pub fn repository() -> Result<Self, MarketError> {
        Self::parse(REPOSITORY_PRICE_BOOK)
    }

    pub fn load(path: &Path) -> Result<Self, MarketError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MarketError::PriceBook(format!("read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses and checks a price book: every region has zones, instance types and exactly
    /// one host type; no price is negative; spot is never dearer than on-demand; aliases
    /// point at listed regions.
    pub fn parse(text: &str) -> Result<Self, MarketError> {
        let book: PriceBook = toml::from_str(text).map_err(|e| MarketError::PriceBook(e.to_string()))?;
        let bad = |m: String| Err(MarketError::PriceBook(m));
        if book.plans.is_empty() {
            return bad("no plans".into());
        }
        if book.regions.is_empty() {
            return bad("no regions".into());
        }
        for (name, p) in &book.plans {
            if p.slots == 0 || p.vcpu == 0 {
                return bad(format!("plan {name} has no slots or no vCPU"));
            }
        }
        for r in &book.regions {
            let at = format!("{}/{}", r.cloud, r.region);
            if r.zones.is_empty() {
                return bad(format!("{at} has no zones"));
            }
            if r.instances.iter().filter(|i| i.host).count() != 1 {
                return bad(format!("{at} must mark exactly one instance type `host = true`"));
            }
            let money = [
                r.object_storage_gb_month,
                r.root_disk_gb_month,
                r.cross_zone_gb,
                r.internet_egress_gb,
                r.managed_storage_gb_month,
            ];
            if money.iter().any(|m| m.is_sign_negative()) {
                return bad(format!("{at} has a negative price"));
            }
            for i in &r.instances {
                if i.on_demand_hour.is_sign_negative() || i.spot_hour.is_sign_negative() {
                    return bad(format!("{at} {} has a negative price", i.name));
                }
                if i.spot_hour > i.on_demand_hour {
                    return bad(format!("{at} {}: spot dearer than on-demand", i.name));
                }
            }
        }
        for (from, to) in &book.aliases {
            let known = book.regions.iter().any(|r| &format!("{}/{}", r.cloud, r.region) == to);
            if !known {
                return bad(format!("alias {from} points at {to}, which the book does not list"));
            }
        }
        Ok(book)
    }

    /// The prices of a cloud's region, through the aliases.
    pub fn region(&self, cloud: &str, region: &str) -> Option<&RegionPrices> {
        let key = format!("{cloud}/{region}");
        let target = self.aliases.get(&key).unwrap_or(&key);
        self.regions
            .iter()
            .find(|r| format!("{}/{}", r.cloud, r.region) == *target)
    }
}

/// (cloud, region, zone, instance type), written `cloud/region/zone/type`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoolId {
    pub cloud: String,
    pub region: String,
    pub zone: String,
    pub instance_type: String,
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.cloud, self.region, self.zone, self.instance_type)
    }
}

impl FromStr for PoolId {
    type Err = MarketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [c, r, z, t] if parts.iter().all(|p| !p.is_empty()) => Ok(PoolId {
                cloud: c.to_string(),
                region: r.to_string(),
                zone: z.to_string(),
                instance_type: t.to_string(),
            }),
            _ => Err(MarketError::BadPoolId(s.into())),
        }
    }
}

/// A pool and its list prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: PoolId,
    pub vcpu: u32,
    pub ram_gib: u32,
    pub on_demand_hour: Decimal,
    /// The book's typical spot price (a trace's own prices take its place where it has them).
    pub spot_hour: Decimal,
    pub notice_secs: u64,
}

/// The host pools of each (cloud, region, zones) of a land, priced by the book: one pool
/// per zone, of the region's host type. Locations the book does not price are skipped.
pub fn host_pools(book: &PriceBook, locations: &[(String, String, Vec<String>)]) -> Vec<Pool> {
    let mut pools = Vec::new();
    for (cloud, region, zones) in locations {
        let Some(prices) = book.region(cloud, region) else {
            continue;
        };
        let host = prices.host_type();
        for zone in zones {
            pools.push(Pool {
                id: PoolId {
                    cloud: cloud.clone(),
                    region: region.clone(),
                    zone: zone.clone(),
                    instance_type: host.name.clone(),
                },
                vcpu: host.vcpu,
                ram_gib: host.ram_gib,
                on_demand_hour: host.on_demand_hour,
                spot_hour: host.spot_hour,
                notice_secs: prices.notice_secs,
            });
        }
    }
    pools
}

/// How a trace's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceReading {
    /// 1 = no spot capacity at this tick (preempted / could not be obtained): the reading
    /// of the upstream collection scripts, which record the column as `preempted`.
    #[default]
    OneIsPreempted,
    /// 1 = capacity available.
    OneIsAvailable,
}

/// One pool's spot availability, one value per tick; cycles when replayed past its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub name: String,
    pub gap_secs: u64,
    /// `true` where the pool has spot capacity.
    pub available: Vec<bool>,
    /// Spot price per hour at each tick, where the file has them.
    pub prices: Option<Vec<Decimal>>,
}

#[derive(Deserialize)]
struct TraceFile {
    metadata: TraceMetadata,
    data: Vec<serde_json::Value>,
    /// Numbers, read exactly from their JSON text.
    #[serde(default)]
    prices: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct TraceMetadata {
    gap_seconds: u64,
}

impl Trace {
    /// Parses a trace file: `{"metadata": {"gap_seconds": G}, "data": [0, 1, ...]}`, with
    /// an optional `prices` array of the same length.
    pub fn parse(name: &str, bytes: &[u8], reading: TraceReading) -> Result<Self, MarketError> {
        let err = |message: String| MarketError::Trace {
            name: name.into(),
            message,
        };
        let file: TraceFile = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
        if file.metadata.gap_seconds == 0 {
            return Err(err("gap_seconds is 0".into()));
        }
        if file.data.is_empty() {
            return Err(err("no data".into()));
        }
        let mut available = Vec::with_capacity(file.data.len());
        for (i, v) in file.data.iter().enumerate() {
            let one = match v.as_f64() {
                Some(0.0) => false,
                Some(1.0) => true,
                _ => return Err(err(format!("value {i} is {v}, not 0 or 1"))),
            };
            available.push(match reading {
                TraceReading::OneIsPreempted => !one,
                TraceReading::OneIsAvailable => one,
            });
        }
        let prices = match file.prices {
            None => None,
            Some(p) if p.len() != available.len() => {
                return Err(err(format!("{} prices for {} ticks", p.len(), available.len())));
            }
            Some(p) => {
                let mut out = Vec::with_capacity(p.len());
                for (i, v) in p.iter().enumerate() {
                    let price = v
                        .as_number()
                        .and_then(|n| Decimal::from_str(&n.to_string()).ok())
                        .or_else(|| v.as_str().and_then(|s| Decimal::from_str(s).ok()))
                        .filter(|d| !d.is_sign_negative())
                        .ok_or_else(|| err(format!("price {i} is {v}, not a price")))?;
                    out.push(price);
                }
                Some(out)
            }
        };
        Ok(Trace {
            name: name.into(),
            gap_secs: file.metadata.gap_seconds,
            available,
            prices,
        })
    }

    /// Every `*.json` file under `dir` (recursively, in path order), each named by its path
    /// relative to `dir`.
    pub fn load_dir(dir: &Path, reading: TraceReading) -> Result<Vec<Trace>, MarketError> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| MarketError::Trace {
                name: d.display().to_string(),
                message: e.to_string(),
            })?;
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    files.push(p);
                }
            }
        }
        files.sort();
        let mut traces = Vec::with_capacity(files.len());
        for p in files {
            let name = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            let bytes = std::fs::read(&p).map_err(|e| MarketError::Trace {
                name: name.clone(),
                message: e.to_string(),
            })?;
            traces.push(Trace::parse(&name, &bytes, reading)?);
        }
        if traces.is_empty() {
            return Err(MarketError::Trace {
                name: dir.display().to_string(),
                message: "no *.json trace files".into(),
            });
        }
        Ok(traces)
    }

    fn tick(&self, t: u64) -> usize {
        ((t / self.gap_secs) % self.available.len() as u64) as usize
    }

    pub fn available_at(&self, t: u64) -> bool {
        self.available[self.tick(t)]
    }

    pub fn price_at(&self, t: u64) -> Option<Decimal> {
        self.prices.as_ref().map(|p| p[self.tick(t)])
    }

    /// The first tick boundary after `t` where availability changes (`None`: never).
    pub fn next_change(&self, t: u64) -> Option<u64> {
        let now = self.available_at(t);
        let mut boundary = (t / self.gap_secs + 1) * self.gap_secs;
        for _ in 0..self.available.len() {
            if self.available_at(boundary) != now {
                return Some(boundary);
            }
            boundary += self.gap_secs;
        }
        None
    }
}

/// Synthetic spot availability: capacity outages arrive as a Poisson process at
/// `per_month` a pool-month and last an exponentially distributed time with the given mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// Sorted, disjoint `[start, end)` outages.
    outages: Vec<(u64, u64)>,
}

pub const MONTH_SECS: u64 = 30 * 86_400;

impl Synthetic {
    pub fn new(per_month: f64, mean_outage_secs: f64, horizon_secs: u64, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut outages: Vec<(u64, u64)> = Vec::new();
        if per_month > 0.0 && per_month.is_finite() {
            let rate = per_month / MONTH_SECS as f64;
            let mut t = 0.0f64;
            loop {
                // Inverse-CDF sampling of the exponential gaps.
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                t += -u.ln() / rate;
                if t >= horizon_secs as f64 {
                    break;
                }
                let v: f64 = rng.gen_range(f64::EPSILON..1.0);
                let len = (-v.ln() * mean_outage_secs).max(1.0);
                let start = t as u64;
                let end = (t + len) as u64;
                match outages.last_mut() {
                    Some((_, e)) if *e >= start => *e = (*e).max(end),
                    _ => outages.push((start, end)),
                }
                t += len;
            }
        }
        Synthetic { outages }
    }

    pub fn available_at(&self, t: u64) -> bool {
        let i = self.outages.partition_point(|(s, _)| *s <= t);
        i == 0 || self.outages[i - 1].1 <= t
    }

    pub fn next_change(&self, t: u64) -> Option<u64> {
        let i = self.outages.partition_point(|(s, _)| *s <= t);
        if i > 0 && self.outages[i - 1].1 > t {
            return Some(self.outages[i - 1].1);
        }
        self.outages.get(i).map(|(s, _)| *s)
    }
}

/// Where a pool's spot availability comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    Always,
    Trace(Trace),
    Synthetic(Synthetic),
}

impl Availability {
    fn available_at(&self, t: u64) -> bool {
        match self {
            Availability::Always => true,
            Availability::Trace(tr) => tr.available_at(t),
            Availability::Synthetic(s) => s.available_at(t),
        }
    }

    fn next_change(&self, t: u64) -> Option<u64> {
        match self {
            Availability::Always => None,
            Availability::Trace(tr) => tr.next_change(t),
            Availability::Synthetic(s) => s.next_change(t),
        }
    }
}

#[derive(Debug, Clone)]
struct PoolMarket {
    pool: Pool,
    availability: Availability,
    /// Spot hosts the pool holds while it has capacity.
    capacity: u32,
    /// An operator's override of the whole model.
    fixed: Option<u32>,
}

/// Every pool's spot market: capacity and price at time `t`.
#[derive(Debug, Clone, Default)]
pub struct SpotMarket {
    pools: BTreeMap<PoolId, PoolMarket>,
}

impl SpotMarket {
    /// A market where every pool always holds `capacity` spot hosts.
    pub fn new(pools: Vec<Pool>, capacity: u32) -> Self {
        let pools = pools
            .into_iter()
            .map(|pool| {
                (
                    pool.id.clone(),
                    PoolMarket {
                        pool,
                        availability: Availability::Always,
                        capacity,
                        fixed: None,
                    },
                )
            })
            .collect();
        SpotMarket { pools }
    }

    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values().map(|p| &p.pool)
    }

    pub fn pool(&self, id: &PoolId) -> Option<&Pool> {
        self.pools.get(id).map(|p| &p.pool)
    }

    pub fn set_availability(&mut self, id: &PoolId, a: Availability) -> Result<(), MarketError> {
        let p = self
            .pools
            .get_mut(id)
            .ok_or_else(|| MarketError::UnknownPool(id.to_string()))?;
        p.availability = a;
        Ok(())
    }

    /// Gives each pool one trace, in order, cycling through the traces when there are
    /// fewer traces than pools.
    pub fn assign_traces(&mut self, traces: &[Trace]) {
        if traces.is_empty() {
            return;
        }
        for (i, p) in self.pools.values_mut().enumerate() {
            p.availability = Availability::Trace(traces[i % traces.len()].clone());
        }
    }

    /// Pins a pool's spot capacity to `n` hosts (an operator's control), or hands it back
    /// to its model (`None`).
    pub fn set_capacity(&mut self, id: &PoolId, n: Option<u32>) -> Result<(), MarketError> {
        let p = self
            .pools
            .get_mut(id)
            .ok_or_else(|| MarketError::UnknownPool(id.to_string()))?;
        p.fixed = n;
        Ok(())
    }

    /// Spot hosts the pool can hold at `t` (0 for an unknown pool).
    pub fn capacity(&self, id: &PoolId, t: u64) -> u32 {
        match self.pools.get(id) {
            Some(p) => match p.fixed {
                Some(n) => n,
                None if p.availability.available_at(t) => p.capacity,
                None => 0,
            },
            None => 0,
        }
    }

    /// The spot price per hour at `t`: the trace's own where it has one, else the book's.
    pub fn spot_price(&self, id: &PoolId, t: u64) -> Option<Decimal> {
        let p = self.pools.get(id)?;
        let traced = match &p.availability {
            Availability::Trace(tr) => tr.price_at(t),
            _ => None,
        };
        Some(traced.unwrap_or(p.pool.spot_hour))
    }

    /// The next time after `t` at which one of `ids`' capacity changes.
    pub fn next_change_in(&self, ids: &[PoolId], t: u64) -> Option<u64> {
        ids.iter()
            .filter_map(|id| self.pools.get(id))
            .filter(|p| p.fixed.is_none())
            .filter_map(|p| p.availability.next_change(t))
            .min()
    }

    /// The spot hosts that must go when the pool holds `running` (oldest first) at `t`:
    /// the newest beyond its capacity, as a cloud reclaims.
    pub fn reclaimed<'a, T>(&self, id: &PoolId, t: u64, running: &'a [T]) -> &'a [T] {
        let cap = self.capacity(id, t) as usize;
        if running.len() > cap {
            &running[cap..]
        } else {
            &[]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_price_book_parses_and_prices_the_local_land() {
        let book = PriceBook::repository().unwrap();
        let r = book.region("local-a", "region-1").unwrap();
        assert_eq!(r.cloud, "aws");
        assert!(r.host_type().host);
        for r in &book.regions {
            let small = &book.plans["small"];
            let managed = r.managed_hour(small).unwrap();
            // A spot host's eighth is far below the managed price of the same shape.
            let host = r.host_type();
            assert!(
                host.spot_hour / Decimal::from(8) < managed / Decimal::from(4),
                "{}",
                r.cloud
            );
        }
        let pools = host_pools(
            &book,
            &[
                (
                    "local-a".into(),
                    "region-1".into(),
                    vec!["zone-1".into(), "zone-2".into()],
                ),
                ("nowhere".into(), "x".into(), vec!["z".into()]),
            ],
        );
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].id.to_string(), "local-a/region-1/zone-1/m6id.4xlarge");
        assert_eq!(pools[0].notice_secs, 120);
    }

    #[test]
    fn bad_price_books_are_refused_with_a_reason() {
        let base = REPOSITORY_PRICE_BOOK;
        let cases = [
            (base.replace("host = true\n", ""), "exactly one"),
            (base.replace("spot_hour = \"0.0452\"", "spot_hour = \"9.0\""), "dearer"),
            (base.replace("\"aws/us-east-1\"", "\"aws/nowhere\""), "alias"),
            (base.replace("notice_secs = 120", "notice_secs = -1"), "price book"),
            ("version = 1".to_string(), "price book"),
            (
                "version = \"x\"\nregion = []\n[plans]\nsmall = { slots = 1, vcpu = 2, ram_gib = 8, data_gb = 20 }\n"
                    .to_string(),
                "no regions",
            ),
        ];
        for (text, want) in cases {
            let e = PriceBook::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} does not say {want}");
        }
    }

    #[test]
    fn pool_ids_round_trip_and_bad_ones_are_refused() {
        let id: PoolId = "aws/us-east-1/us-east-1a/m6id.large".parse().unwrap();
        assert_eq!(id.zone, "us-east-1a");
        assert_eq!(id.to_string().parse::<PoolId>().unwrap(), id);
        for bad in ["", "a/b/c", "a/b//d", "a/b/c/d/e"] {
            assert!(bad.parse::<PoolId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn traces_read_one_as_preempted_by_default_and_cycle() {
        let t = Trace::parse(
            "t",
            br#"{"metadata":{"gap_seconds":10},"data":[0,0,1,0]}"#,
            TraceReading::default(),
        )
        .unwrap();
        assert!(t.available_at(0) && t.available_at(19));
        assert!(!t.available_at(20) && !t.available_at(29));
        assert!(t.available_at(30) && t.available_at(40));
        assert!(!t.available_at(60), "cycles");
        assert_eq!(t.next_change(0), Some(20));
        assert_eq!(t.next_change(25), Some(30));
        let inverted = Trace::parse(
            "t",
            br#"{"metadata":{"gap_seconds":10},"data":[0,1]}"#,
            TraceReading::OneIsAvailable,
        )
        .unwrap();
        assert!(!inverted.available_at(0) && inverted.available_at(10));
        let flat = Trace::parse(
            "t",
            br#"{"metadata":{"gap_seconds":10},"data":[0,0]}"#,
            TraceReading::default(),
        )
        .unwrap();
        assert_eq!(flat.next_change(5), None);
    }

    #[test]
    fn bad_traces_are_refused_with_a_reason() {
        for (text, want) in [
            (r#"{"metadata":{"gap_seconds":0},"data":[0]}"#, "gap_seconds"),
            (r#"{"metadata":{"gap_seconds":5},"data":[]}"#, "no data"),
            (r#"{"metadata":{"gap_seconds":5},"data":[0,2]}"#, "value 1"),
            (r#"{"metadata":{"gap_seconds":5},"data":[0],"prices":[]}"#, "prices"),
            (r#"{"metadata":{"gap_seconds":5},"data":[0],"prices":[-1]}"#, "price 0"),
            (r#"{"data":[0]}"#, "metadata"),
        ] {
            let e = Trace::parse("x", text.as_bytes(), TraceReading::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} does not say {want}");
        }
    }

    #[test]
    fn the_shared_traces_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/spot-traces");
        if !dir.exists() {
            return; // The shared data sits beside the repository on the build machines only.
        }
        let traces = Trace::load_dir(&dir, TraceReading::default()).unwrap();
        assert_eq!(traces.len(), 21);
        assert!(traces.iter().all(|t| t.available.iter().any(|a| *a)));
    }

    #[test]
    fn synthetic_outages_follow_their_rate_and_are_deterministic() {
        let months = 1000;
        let s = Synthetic::new(0.05, 3600.0, months * MONTH_SECS, 7);
        let n = s.outages.len() as f64;
        assert!((25.0..=80.0).contains(&n), "{n} outages in {months} months at 5%/month");
        assert_eq!(s, Synthetic::new(0.05, 3600.0, months * MONTH_SECS, 7));
        let (start, end) = s.outages[0];
        assert!(s.available_at(start - 1) && !s.available_at(start) && s.available_at(end));
        assert_eq!(s.next_change(start - 1), Some(start));
        assert_eq!(s.next_change(start), Some(end));
        assert!(Synthetic::new(0.0, 60.0, MONTH_SECS, 1).available_at(5));
    }

    #[test]
    fn the_market_reclaims_the_newest_hosts_beyond_capacity() {
        let book = PriceBook::repository().unwrap();
        let pools = host_pools(&book, &[("aws".into(), "us-east-1".into(), vec!["us-east-1a".into()])]);
        let id = pools[0].id.clone();
        let mut m = SpotMarket::new(pools, 4);
        let hosts = ["h1", "h2", "h3"];
        assert!(m.reclaimed(&id, 0, &hosts).is_empty());
        m.set_capacity(&id, Some(1)).unwrap();
        assert_eq!(m.reclaimed(&id, 0, &hosts), &["h2", "h3"]);
        m.set_capacity(&id, None).unwrap();
        let trace = Trace::parse(
            "t",
            br#"{"metadata":{"gap_seconds":60},"data":[0,1],"prices":["0.1","0.2"]}"#,
            TraceReading::default(),
        )
        .unwrap();
        m.set_availability(&id, Availability::Trace(trace)).unwrap();
        assert_eq!(m.capacity(&id, 0), 4);
        assert_eq!(m.capacity(&id, 60), 0);
        assert_eq!(m.next_change_in(std::slice::from_ref(&id), 0), Some(60));
        assert_eq!(m.spot_price(&id, 61), Some(Decimal::new(2, 1)));
        let unknown: PoolId = "a/b/c/d".parse().unwrap();
        assert_eq!(m.capacity(&unknown, 0), 0);
        assert!(m.set_capacity(&unknown, Some(1)).is_err());
    }
}
