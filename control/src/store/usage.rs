//! Usage: each source's meter (its last reading taken) and the hourly usage records its
//! readings add to.

use super::*;
use highrise_api::{MeterKind, MeterReading};
use highrise_billing::meter::{self, Reading, Share, Spread};

/// What one heartbeat's readings did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MeterOutcome {
    /// Readings that added usage (possibly zero units).
    pub taken: usize,
    /// Not newer than the last reading taken: a duplicate or a late one.
    pub stale: usize,
    /// Sources whose counter went down (a host that lost its disk under the same id):
    /// `(source, last value, reading)`; the reading is the new baseline.
    pub regressed: Vec<(String, u64, u64)>,
    /// Sources this host has no instance of (already forgotten, or never its own).
    pub unknown: usize,
}

/// Who sends readings: a host's agent (its instances' counters) or a proxy (its
/// endpoints' traffic, where it runs).
enum Reporter<'a> {
    Host(&'a str),
    Proxy {
        proxy: &'a str,
        cloud: &'a str,
        region: &'a str,
    },
}

impl Reporter<'_> {
    /// What its meters are kept under (`meters.host_id`): a host's id, `proxy:<name>`.
    fn id(&self) -> String {
        match self {
            Reporter::Host(h) => (*h).to_string(),
            Reporter::Proxy { proxy, .. } => format!("proxy:{proxy}"),
        }
    }

    /// The meter a reading of `source` moves: an instance's id is its own; an endpoint's
    /// traffic is counted by every proxy apart.
    fn source(&self, source: &str) -> String {
        match self {
            Reporter::Host(_) => source.to_string(),
            Reporter::Proxy { proxy, .. } => format!("proxy:{proxy}:{source}"),
        }
    }

    /// Whether it counts this kind (a proxy does not count instances' time, nor an agent
    /// traffic; object storage is the control plane's own measurement).
    fn counts(&self, kind: MeterKind) -> bool {
        let traffic = matches!(kind, MeterKind::ProxyBytesIn | MeterKind::ProxyBytesOut);
        kind != MeterKind::ObjectStorageMibMs && traffic == matches!(self, Reporter::Proxy { .. })
    }
}

/// A usage record: per cluster, dimension, place and hour (`hour` is `None` in a sum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub cluster_id: String,
    pub cluster_name: String,
    pub dimension: String,
    pub cloud: String,
    pub region: String,
    pub hour: Option<i64>,
    pub quantity: i64,
}

/// A usage row as selected: `cluster_id, cluster_name, dimension, cloud, region,
/// quantity`, and `hour` when `hourly`.
pub(super) fn usage_row(r: &AnyRow, hourly: bool) -> Result<UsageRow> {
    Ok(UsageRow {
        cluster_id: r.try_get("cluster_id")?,
        cluster_name: r.try_get("cluster_name")?,
        dimension: r.try_get("dimension")?,
        cloud: r.try_get("cloud")?,
        region: r.try_get("region")?,
        hour: if hourly { Some(r.try_get("hour")?) } else { None },
        quantity: r.try_get("quantity")?,
    })
}

/// A cluster whose objects are measured (deleted ones too, while their row is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredCluster {
    pub org_id: String,
    pub cluster_id: String,
    pub name: String,
    pub cloud: String,
    pub region: String,
}

/// One measurement of a cluster's objects in one cloud's object store.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub org_id: &'a str,
    pub cluster_id: &'a str,
    pub cluster_name: &'a str,
    /// The store's cloud and region: the usage is recorded (and priced) there.
    pub cloud: &'a str,
    pub region: &'a str,
    pub bytes: u64,
    pub at_ms: i64,
}

/// Where usage is recorded: org, cluster and its name, dimension, cloud, region.
struct Labels {
    org: String,
    cluster: String,
    name: String,
    dimension: String,
    cloud: String,
    region: String,
}

impl Labels {
    /// What a meter's usage is recorded under (fixed at its first reading).
    fn of_meter(m: &AnyRow) -> Result<Self> {
        Ok(Self {
            org: m.try_get("org_id")?,
            cluster: m.try_get("cluster_id")?,
            name: m.try_get("cluster_name")?,
            dimension: m.try_get("dimension")?,
            cloud: m.try_get("cloud")?,
            region: m.try_get("region")?,
        })
    }
}

/// Adds `shares` to the hourly usage under `l`.
async fn add_usage(tx: &mut sqlx::Transaction<'static, sqlx::Any>, l: &Labels, shares: &[Share]) -> Result<()> {
    for s in shares {
        sqlx::query(
            "INSERT INTO usage_hourly (org_id, cluster_id, cluster_name, dimension, cloud, region, \
             hour, quantity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (cluster_id, dimension, cloud, region, hour) \
             DO UPDATE SET quantity = usage_hourly.quantity + excluded.quantity",
        )
        .bind(&l.org)
        .bind(&l.cluster)
        .bind(&l.name)
        .bind(&l.dimension)
        .bind(&l.cloud)
        .bind(&l.region)
        .bind(s.hour)
        .bind(i64::try_from(s.quantity).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Takes a heartbeat's counter readings into hourly usage, in one transaction: a
    /// reading adds its difference from the meter's last one, spread over the hours
    /// between them ([`meter::spread`]), and becomes the last one — only if the last one
    /// is still the one read (so two control planes, or a retry racing the original,
    /// cannot both add it). A source read for the first time starts from 0 at its
    /// counter's start, under the org, cluster, plan, market and place it has then; a
    /// counter begun after the meter's last reading is a new one, counted whole from its
    /// start ([`meter::spread_since`]).
    pub async fn record_readings(&self, host_id: &str, readings: &[MeterReading]) -> Result<MeterOutcome> {
        self.record(&Reporter::Host(host_id), readings).await
    }

    /// Takes a proxy's traffic readings (per endpoint) into hourly usage, as
    /// [`Store::record_readings`] does an agent's: the proxy's meter of an endpoint is
    /// recorded under the endpoint's cluster (the one that has it when first read) and the
    /// place the proxy runs in.
    pub async fn record_proxy_readings(
        &self,
        proxy: &str,
        cloud: &str,
        region: &str,
        readings: &[MeterReading],
    ) -> Result<MeterOutcome> {
        self.record(&Reporter::Proxy { proxy, cloud, region }, readings).await
    }

    async fn record(&self, reporter: &Reporter<'_>, readings: &[MeterReading]) -> Result<MeterOutcome> {
        let mut out = MeterOutcome::default();
        if readings.is_empty() {
            return Ok(out);
        }
        let reporter_id = reporter.id();
        let mut tx = self.begin().await?;
        for r in readings {
            let kind = r.kind.as_str();
            let Ok(value) = i64::try_from(r.value) else {
                out.unknown += 1;
                continue;
            };
            if !reporter.counts(r.kind) {
                out.unknown += 1;
                continue;
            }
            let source = reporter.source(&r.source);
            let row = sqlx::query(
                "SELECT host_id, org_id, cluster_id, cluster_name, dimension, cloud, region, last_value, last_at_ms \
                 FROM meters WHERE source = $1 AND kind = $2",
            )
            .bind(&source)
            .bind(kind)
            .fetch_optional(&mut *tx)
            .await?;
            let (labels, last) = match row {
                Some(m) => {
                    if m.try_get::<String, _>("host_id")? != reporter_id {
                        out.unknown += 1;
                        continue;
                    }
                    let last = Reading {
                        value: u64::try_from(m.try_get::<i64, _>("last_value")?).unwrap_or(0),
                        at_ms: m.try_get("last_at_ms")?,
                    };
                    (Labels::of_meter(&m)?, last)
                }
                None => {
                    let found = match reporter {
                        Reporter::Host(host_id) => sqlx::query(
                            "SELECT c.org_id, c.id AS cluster_id, c.name, c.plan, h.market, h.cloud, h.region \
                             FROM instances i JOIN clusters c ON c.id = i.cluster_id JOIN hosts h ON h.id = i.host_id \
                             WHERE i.id = $1 AND i.host_id = $2",
                        )
                        .bind(&r.source)
                        .bind(*host_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|i| -> Result<_> {
                            Ok(Labels {
                                org: i.try_get("org_id")?,
                                cluster: i.try_get("cluster_id")?,
                                name: i.try_get("name")?,
                                dimension: meter::dimension(
                                    kind,
                                    &i.try_get::<String, _>("plan")?,
                                    &i.try_get::<String, _>("market")?,
                                ),
                                cloud: i.try_get("cloud")?,
                                region: i.try_get("region")?,
                            })
                        })
                        .transpose()?,
                        Reporter::Proxy { cloud, region, .. } => {
                            sqlx::query("SELECT org_id, id AS cluster_id, name FROM clusters WHERE endpoint = $1")
                                .bind(&r.source)
                                .fetch_optional(&mut *tx)
                                .await?
                                .map(|c| -> Result<_> {
                                    Ok(Labels {
                                        org: c.try_get("org_id")?,
                                        cluster: c.try_get("cluster_id")?,
                                        name: c.try_get("name")?,
                                        dimension: kind.to_string(),
                                        cloud: (*cloud).to_string(),
                                        region: (*region).to_string(),
                                    })
                                })
                                .transpose()?
                        }
                    };
                    let Some(labels) = found else {
                        out.unknown += 1;
                        continue;
                    };
                    sqlx::query(
                        "INSERT INTO meters (source, kind, host_id, org_id, cluster_id, cluster_name, dimension, \
                         cloud, region, last_value, last_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10)",
                    )
                    .bind(&source)
                    .bind(kind)
                    .bind(&reporter_id)
                    .bind(&labels.org)
                    .bind(&labels.cluster)
                    .bind(&labels.name)
                    .bind(&labels.dimension)
                    .bind(&labels.cloud)
                    .bind(&labels.region)
                    .bind(r.since_ms)
                    .execute(&mut *tx)
                    .await?;
                    let start = Reading {
                        value: 0,
                        at_ms: r.since_ms,
                    };
                    (labels, start)
                }
            };
            let next = Reading {
                value: r.value,
                at_ms: r.at_ms,
            };
            match meter::spread_since(last, next, r.since_ms) {
                Spread::Stale => {
                    out.stale += 1;
                    continue;
                }
                Spread::Regressed => out.regressed.push((source.clone(), last.value, r.value)),
                Spread::Added(shares) => {
                    out.taken += 1;
                    add_usage(&mut tx, &labels, &shares).await?;
                }
            }
            let moved = sqlx::query(
                "UPDATE meters SET last_value = $1, last_at_ms = $2, closed = $3 \
                 WHERE source = $4 AND kind = $5 AND last_value = $6 AND last_at_ms = $7",
            )
            .bind(value)
            .bind(r.at_ms)
            .bind(i64::from(r.closed))
            .bind(&source)
            .bind(kind)
            .bind(i64::try_from(last.value).unwrap_or(i64::MAX))
            .bind(last.at_ms)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() != 1 {
                // Another writer took a reading of this meter meanwhile: add nothing here;
                // the agent sends the counter again with its next heartbeat.
                return Err(StoreError::Conflict(format!("meter {source} moved meanwhile")));
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Every cluster whose objects are measured: all with a row, deleted ones too (their
    /// backups are kept for their retention), but for those of deleted orgs — nobody is
    /// billed for them, and with the org's keys gone their store cannot even be opened.
    pub async fn metered_clusters(&self) -> Result<Vec<MeteredCluster>> {
        let rows = sqlx::query(
            "SELECT c.org_id, c.id, c.name, c.cloud, c.region FROM clusters c \
             WHERE c.org_id IN (SELECT o.id FROM orgs o WHERE o.deleted_at IS NULL) ORDER BY c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MeteredCluster {
                    org_id: r.try_get("org_id")?,
                    cluster_id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    cloud: r.try_get("cloud")?,
                    region: r.try_get("region")?,
                })
            })
            .collect()
    }

    /// Takes one measurement of a cluster's objects in a store into usage, in one
    /// transaction: the time since the meter's last measurement at the size measured then
    /// (whole MiB, the meter's `rate`) is spread over the hours between
    /// ([`meter::spread`]) and the new size becomes the rate — only if the meter is still
    /// as read (two control planes measuring at once add the time once). The first
    /// measurement in a store starts the meter (nothing before it is counted); a store that
    /// holds none of the cluster's objects gets no meter. Whether it was taken (not: no
    /// meter needed, or not newer than the last measurement).
    pub async fn record_stored(&self, s: &Stored<'_>) -> Result<bool> {
        let source = format!("objects:{}:{}", s.cluster_id, s.cloud);
        let kind = MeterKind::ObjectStorageMibMs.as_str();
        let mib = i64::try_from(s.bytes >> 20).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT org_id, cluster_id, cluster_name, dimension, cloud, region, last_value, last_at_ms, rate \
             FROM meters WHERE source = $1 AND kind = $2",
        )
        .bind(&source)
        .bind(kind)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(m) = row else {
            if s.bytes == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO meters (source, kind, host_id, org_id, cluster_id, cluster_name, dimension, \
                 cloud, region, last_value, last_at_ms, rate) VALUES ($1, $2, 'control', $3, $4, $5, $2, $6, $7, 0, $8, $9) \
                 ON CONFLICT (source, kind) DO NOTHING",
            )
            .bind(&source)
            .bind(kind)
            .bind(s.org_id)
            .bind(s.cluster_id)
            .bind(s.cluster_name)
            .bind(s.cloud)
            .bind(s.region)
            .bind(s.at_ms)
            .bind(mib)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(true);
        };
        let last_value: i64 = m.try_get("last_value")?;
        let last_at: i64 = m.try_get("last_at_ms")?;
        let rate: i64 = m.try_get("rate")?;
        if s.at_ms <= last_at {
            return Ok(false);
        }
        let last = Reading {
            value: u64::try_from(last_value).unwrap_or(0),
            at_ms: last_at,
        };
        let grown = u64::try_from(rate)
            .unwrap_or(0)
            .saturating_mul((s.at_ms - last_at).unsigned_abs());
        let next = Reading {
            value: last.value.saturating_add(grown),
            at_ms: s.at_ms,
        };
        if let Spread::Added(shares) = meter::spread(last, next) {
            add_usage(&mut tx, &Labels::of_meter(&m)?, &shares).await?;
        }
        let moved = sqlx::query(
            "UPDATE meters SET last_value = $1, last_at_ms = $2, rate = $3 \
             WHERE source = $4 AND kind = $5 AND last_value = $6 AND last_at_ms = $7",
        )
        .bind(i64::try_from(next.value).unwrap_or(i64::MAX))
        .bind(s.at_ms)
        .bind(mib)
        .bind(&source)
        .bind(kind)
        .bind(last_value)
        .bind(last_at)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("meter {source} moved meanwhile")));
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The first hour the org has usage in (Unix seconds), if any.
    pub async fn first_usage_hour(&self, org_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(hour) AS first FROM usage_hourly WHERE org_id = $1")
            .bind(org_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("first")?)
    }

    /// Whether the org has usage of cluster `cluster_id` (a deleted cluster's id is still
    /// good for its usage).
    pub async fn has_usage(&self, org_id: &str, cluster_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM usage_hourly WHERE org_id = $1 AND cluster_id = $2 LIMIT 1")
            .bind(org_id)
            .bind(cluster_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The org's usage in hours `[from, to)` (Unix seconds), of one cluster or all; per
    /// hour, or summed over the range.
    pub async fn metered_usage(
        &self,
        org_id: &str,
        cluster_id: Option<&str>,
        from: i64,
        to: i64,
        hourly: bool,
    ) -> Result<Vec<UsageRow>> {
        let hour = if hourly { "u.hour" } else { "NULL" };
        let group = if hourly { ", u.hour" } else { "" };
        let sql = format!(
            "SELECT u.cluster_id, MAX(u.cluster_name) AS cluster_name, u.dimension, u.cloud, u.region, \
             {hour} AS hour, CAST(SUM(u.quantity) AS BIGINT) AS quantity \
             FROM usage_hourly u \
             WHERE u.org_id = $1 AND u.hour >= $2 AND u.hour < $3 AND ($4 = '' OR u.cluster_id = $4) \
             GROUP BY u.cluster_id, u.dimension, u.cloud, u.region{group} \
             ORDER BY u.cluster_id, u.dimension, u.cloud, u.region{group}"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(from)
            .bind(to)
            .bind(cluster_id.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| usage_row(r, hourly)).collect()
    }
}
