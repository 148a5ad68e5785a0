//! Spend against an org's billing terms: what its usage cost over a range (priced by the
//! list-price book), alerts as that spend reaches shares of its prepaid commitment (fired
//! once each, sent to its webhook until the webhook takes them), and the monthly hard
//! limit that refuses new clusters. Its loop also issues the invoices due
//! (`crate::invoicing`).

use crate::store::{AlertRow, BillingTermsRow};
use crate::AppState;
use anyhow::{Context, Result};
use highrise_billing::budget;
use highrise_billing::invoice::{self, HourUsage};
use highrise_billing::marketplace::Marketplace;
use highrise_provider::market::PriceBook as LandPrices;
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often commitments are checked for alerts and undelivered alerts sent again.
const ROUND: Duration = Duration::from_secs(2);

/// The org's usage in hours `[from, to)` priced at list prices: the invoice's lines and
/// their total.
pub async fn priced(state: &AppState, org_id: &str, from: i64, to: i64) -> Result<(Vec<invoice::Line>, Decimal)> {
    let rows = state
        .store
        .metered_usage(org_id, None, from, to, true)
        .await
        .context("read usage")?;
    let usage: Vec<HourUsage> = rows
        .into_iter()
        .map(|r| HourUsage {
            cluster_id: r.cluster_id,
            cluster: r.cluster_name,
            dimension: r.dimension,
            cloud: r.cloud,
            region: r.region,
            hour: r.hour.unwrap_or(from),
            quantity: u64::try_from(r.quantity).unwrap_or(0),
        })
        .collect();
    Ok(invoice::lines(&usage, &state.cfg.list_prices.0, from)?)
}

/// What the org's usage in hours `[from, to)` costs at list prices.
pub async fn spent(state: &AppState, org_id: &str, from: i64, to: i64) -> Result<Decimal> {
    Ok(priced(state, org_id, from, to).await?.1)
}

/// What one unit of `dimension` costs us in `cloud`/`region` by the land's price book: an
/// instance-millisecond of a plan is its share of a host (its slots of the host's) at the
/// host type's hourly price on its market; disk is the host's own (its local disk is in
/// its hourly price), so it costs nothing more; object storage the region's price per
/// GB-month; a byte of traffic out is the region's
/// internet egress price per GB (10^9 bytes), in is free. `None` for what the book does
/// not price.
pub fn unit_cost(land: &LandPrices, dimension: &str, cloud: &str, region: &str) -> Option<Decimal> {
    match dimension {
        "disk_mib_ms" | "proxy_bytes_in" => return land.region(cloud, region).map(|_| Decimal::ZERO),
        // A GB-month of 730 hours, in MiB-milliseconds.
        "object_storage_mib_ms" => {
            return land.region(cloud, region).map(|r| {
                r.object_storage_gb_month * Decimal::from(1u64 << 20)
                    / Decimal::from(1_000_000_000u64)
                    / Decimal::from(730u64 * 3_600_000)
            })
        }
        "proxy_bytes_out" => {
            return land
                .region(cloud, region)
                .map(|r| r.internet_egress_gb / Decimal::from(1_000_000_000u64))
        }
        _ => {}
    }
    let mut parts = dimension.split(':');
    let (Some("instance_ms"), Some(plan), Some(market), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let shape = land.plans.get(plan)?;
    let host = land.region(cloud, region)?.host_type();
    let hour = match market {
        "spot" => host.spot_hour,
        "on_demand" => host.on_demand_hour,
        _ => return None,
    };
    Some(hour * Decimal::from(shape.slots) / Decimal::from(highrise_planner::HOST_SLOTS) / Decimal::from(3_600_000))
}

/// The real cloud a land's cloud and region are (`local-a` is priced as `aws`, by the
/// land book's aliases), else the cloud itself.
pub fn cloud_family(land: &LandPrices, cloud: &str, region: &str) -> String {
    land.aliases
        .get(&format!("{cloud}/{region}"))
        .and_then(|to| to.split('/').next())
        .unwrap_or(cloud)
        .to_string()
}

/// The land's clouds a marketplace counts (those with a region priced as its cloud), in
/// the land's order.
pub fn marketplace_clouds(state: &AppState, m: Marketplace) -> Vec<String> {
    let land = &state.cfg.land_prices;
    state
        .provider
        .clouds()
        .into_iter()
        .filter(|c| {
            c.regions
                .iter()
                .any(|r| cloud_family(land, &c.name, &r.name) == m.cloud())
        })
        .map(|c| c.name)
        .collect()
}

/// What holds the clusters of orgs that pay through a marketplace to its cloud, for the
/// evacuations of `world` (an evacuation must not take them off it).
pub async fn hold_evacuated(state: &AppState, world: &mut highrise_planner::World) -> Result<()> {
    if world.evacuations.is_empty() {
        return Ok(());
    }
    let held = state.store.marketplace_clusters().await?;
    for e in &mut world.evacuations {
        for (cluster, marketplace) in &held {
            let Some(m) = Marketplace::parse(marketplace) else {
                continue;
            };
            if e.members.iter().any(|x| &x.cluster_id == cluster) {
                let hold = highrise_planner::evacuate::Hold {
                    clouds: marketplace_clouds(state, m),
                    why: format!(
                        "its org pays through the {}, which counts only what runs on {}",
                        m.title(),
                        m.cloud()
                    ),
                };
                e.holds.insert(cluster.clone(), hold);
            }
        }
    }
    Ok(())
}

/// The marketplace the org pays through, if any.
pub async fn marketplace_of(state: &AppState, org_id: &str) -> Result<Option<Marketplace>> {
    Ok(state
        .store
        .marketplace_link(org_id)
        .await?
        .and_then(|l| Marketplace::parse(&l.marketplace)))
}

/// The start and end (Unix seconds, UTC) of the month holding `t`.
pub fn month_of(t: i64) -> Result<(i64, i64)> {
    let utc = jiff::tz::TimeZone::UTC;
    let first = jiff::Timestamp::from_second(t)?
        .to_zoned(utc.clone())
        .date()
        .first_of_month();
    let next = first.checked_add(jiff::Span::new().months(1))?;
    Ok((
        first.to_zoned(utc.clone())?.timestamp().as_second(),
        next.to_zoned(utc)?.timestamp().as_second(),
    ))
}

/// A decimal amount as stored.
pub fn amount(s: &str) -> Result<Decimal> {
    Decimal::from_str(s).with_context(|| format!("read the amount {s:?}"))
}

/// The month's spend and the hard limit when the spend has reached it.
pub async fn over_hard_limit(state: &AppState, org_id: &str, now: i64) -> Result<Option<(Decimal, Decimal)>> {
    let terms = state.store.billing_terms(org_id).await?;
    let Some(limit) = terms.hard_limit.as_deref().map(amount).transpose()? else {
        return Ok(None);
    };
    let (from, to) = month_of(now)?;
    let spent = spent(state, org_id, from, to).await?;
    Ok(budget::over_limit(spent, limit).then_some((spent, limit)))
}

/// The period an alert of a commitment counts in.
pub fn commitment_period(t: &BillingTermsRow) -> String {
    format!(
        "commitment:{}-{}",
        t.commitment_from.unwrap_or(0),
        t.commitment_to.unwrap_or(0)
    )
}

/// What the org's commitment has drawn down so far: `(amount, spent)`.
pub async fn commitment_spent(
    state: &AppState,
    org_id: &str,
    t: &BillingTermsRow,
    now: i64,
) -> Result<Option<(Decimal, Decimal)>> {
    let Some(c) = t.commitment.as_deref() else {
        return Ok(None);
    };
    let amount = amount(c)?;
    // Usage is kept by the hour: the hours the period touches, the first one whole.
    let hour = highrise_billing::meter::HOUR;
    let from = t.commitment_from.unwrap_or(0).div_euclid(hour) * hour;
    let to = t.commitment_to.unwrap_or(i64::MAX / 2).min(now + hour);
    Ok(Some((amount, spent(state, org_id, from, to).await?)))
}

/// Checks every commitment for alerts, sends what is undelivered and issues the invoices
/// due; every [`ROUND`].
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let http = match crate::webhook::client(state.cfg.webhooks_to_private) {
        Ok(c) => c,
        Err(e) => return tracing::error!("spend alerts: build the webhook client: {e}"),
    };
    loop {
        let now = crate::store::now();
        if let Err(e) = fire_alerts(&state, now).await {
            tracing::error!("spend alerts: {e:#}");
        }
        if let Err(e) = deliver(&state, &http).await {
            tracing::error!("spend alert webhooks: {e:#}");
        }
        let prices = crate::invoicing::Pricing {
            book: &state.cfg.list_prices.0,
            version: &state.cfg.list_prices.1,
        };
        if let Err(e) = crate::invoicing::issue_due(&state.store, prices, now).await {
            tracing::error!("issue invoices: {e:#}");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(ROUND) => {}
        }
    }
}

async fn fire_alerts(state: &AppState, now: i64) -> Result<()> {
    for (org_id, t) in state.store.orgs_with_commitments().await? {
        if t.commitment_from.is_some_and(|f| f > now) {
            continue;
        }
        let Some((budget_amount, spent)) = commitment_spent(state, &org_id, &t, now)
            .await
            .with_context(|| format!("spend of {org_id}"))?
        else {
            continue;
        };
        for threshold in budget::reached(spent, budget_amount) {
            let alert = AlertRow {
                org_id: org_id.clone(),
                period: commitment_period(&t),
                threshold: i64::from(threshold),
                spent: format!("{spent:.2}"),
                budget: format!("{budget_amount:.2}"),
                fired_at: now,
                delivered_at: None,
                attempts: 0,
                last_error: None,
            };
            if state.store.fire_alert(&alert).await? {
                tracing::warn!(org = %org_id, "spend reached {threshold}% of the commitment: {spent:.2} of {budget_amount:.2}");
            }
        }
    }
    Ok(())
}

/// Sends every undelivered alert to its org's webhook (alerts of an org without one wait
/// for one to be set).
async fn deliver(state: &AppState, http: &reqwest::Client) -> Result<()> {
    for a in state.store.undelivered_alerts().await? {
        let Some(url) = state.store.billing_terms(&a.org_id).await?.alert_webhook else {
            continue;
        };
        let body = highrise_api::SpendAlert {
            org_id: a.org_id.clone(),
            period: a.period.clone(),
            threshold: u32::try_from(a.threshold).unwrap_or(0),
            spent: a.spent.clone(),
            budget: a.budget.clone(),
            fired_at: a.fired_at,
            delivered_at: None,
            attempts: 0,
            last_error: None,
        };
        let error = match crate::webhook::refused(&url, state.cfg.webhooks_to_private) {
            Some(why) => Some(why),
            None => match http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("the webhook answered {}", r.status())),
                Err(e) => Some(format!("{:#}", anyhow::Error::from(e))),
            },
        };
        if let Some(e) = &error {
            if a.attempts == 0 {
                tracing::warn!(org = %a.org_id, threshold = a.threshold, "spend alert webhook: {e}");
            }
        }
        state
            .store
            .alert_attempted(&a, crate::store::now(), error.as_deref())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_runs_from_its_first_day_at_midnight_utc_to_the_next() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_second();
        assert_eq!(
            month_of(t("2026-12-04T08:30:00+05:00")).unwrap(),
            (t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            month_of(t("2027-01-01T00:00:00-01:00")).unwrap().0,
            t("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn an_instance_costs_its_share_of_a_host_on_its_market() {
        let land = LandPrices::repository().unwrap();
        // local-a is priced as aws/us-east-1: m6id.4xlarge hosts, 8 slots.
        let per_hour = |d: &str| {
            unit_cost(&land, d, "local-a", "region-1").map(|c| (c * Decimal::from(3_600_000)).round_dp(10).normalize())
        };
        assert_eq!(
            per_hour("instance_ms:small:on_demand"),
            Some(Decimal::from_str("0.11865").unwrap())
        );
        assert_eq!(
            per_hour("instance_ms:medium:spot"),
            Some(Decimal::from_str("0.0903").unwrap())
        );
        for unpriced in [
            "instance_ms:huge:spot",
            "instance_ms:small:reserved",
            "bytes",
            "instance_ms:small:spot:x",
        ] {
            assert_eq!(per_hour(unpriced), None, "{unpriced}");
        }
        assert_eq!(unit_cost(&land, "instance_ms:small:spot", "nowhere", "r"), None);
    }

    #[test]
    fn traffic_out_costs_the_regions_internet_egress_and_in_is_free() {
        let land = LandPrices::repository().unwrap();
        let per_gb = |d: &str, cloud: &str| {
            unit_cost(&land, d, cloud, "region-1").map(|c| (c * Decimal::from(1_000_000_000u64)).normalize())
        };
        // local-a is priced as aws/us-east-1, local-b as gcp/us-central1.
        assert_eq!(
            per_gb("proxy_bytes_out", "local-a"),
            Some(Decimal::from_str("0.09").unwrap())
        );
        assert_eq!(
            per_gb("proxy_bytes_out", "local-b"),
            Some(Decimal::from_str("0.12").unwrap())
        );
        assert_eq!(per_gb("proxy_bytes_in", "local-a"), Some(Decimal::ZERO));
        assert_eq!(unit_cost(&land, "proxy_bytes_out", "nowhere", "r"), None);
        // Object storage: S3's $0.023 a GB-month in local-a, by the GiB-month.
        let gib_month = unit_cost(&land, "object_storage_mib_ms", "local-a", "region-1").unwrap()
            * Decimal::from(1024u64 * 730 * 3_600_000);
        assert_eq!(gib_month.round_dp(6), Decimal::from_str("0.024696").unwrap());
    }
}
