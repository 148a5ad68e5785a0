//! Invoices: a month's invoice from its hourly usage priced by the list-price book, with
//! the org's credits and then its prepaid commitment drawn down; and issuing, which
//! freezes a closed month's invoice [`invoice::ISSUE_AFTER`] its end under the next
//! number. Months are issued in order; usage recorded for an issued month after its
//! invoice rides on the first invoice not yet issued ([`invoice::carried`]), so an issued
//! invoice never changes and no unit is invoiced twice or lost.

use crate::store::{IssuedRow, Store, StoreError, UsageRow};
use anyhow::{Context, Result};
use highrise_api::{Invoice, InvoiceLine};
use highrise_billing::invoice::{self, HourUsage};
use highrise_billing::prices::PriceBook;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Invoices are in the price book's currency.
pub const CURRENCY: &str = "USD";

/// The price book invoices are priced with, and its version.
#[derive(Clone, Copy)]
pub struct Pricing<'a> {
    pub book: &'a PriceBook,
    pub version: &'a str,
}

/// An amount as invoices show it: to the cent.
pub fn money(d: Decimal) -> String {
    format!("{d:.2}")
}

/// An invoice's number as shown: `HR-000042`.
pub fn number(n: i64) -> String {
    format!("HR-{n:06}")
}

/// The month (`YYYY-MM`, UTC) starting at `start` (Unix seconds).
pub fn label(start: i64) -> Result<String> {
    Ok(jiff::Timestamp::from_second(start)?.strftime("%Y-%m").to_string())
}

/// The start (Unix seconds) of the month after the one starting at `start`.
fn next_month(start: i64) -> Result<i64> {
    Ok(crate::billing::month_of(start)?.1)
}

/// The start (Unix seconds) of the month `YYYY-MM`.
fn start_of(month: &str) -> Result<i64> {
    let (y, m) = month.split_once('-').context("a stored month is not YYYY-MM")?;
    let date = jiff::civil::Date::new(y.parse()?, m.parse()?, 1)?;
    Ok(date.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second())
}

/// The first month (its start) whose invoice is not issued yet: the month after the last
/// issued, else the month of the org's first usage; `None` for an org with no usage.
pub async fn first_unissued(store: &Store, org_id: &str) -> Result<Option<i64>> {
    if let Some(last) = store.last_issued_month(org_id).await? {
        return Ok(Some(next_month(start_of(&last)?)?));
    }
    match store.first_usage_hour(org_id).await? {
        Some(hour) => Ok(Some(crate::billing::month_of(hour)?.0)),
        None => Ok(None),
    }
}

/// The org's invoice of the month starting at `start`: the issued one as frozen, else
/// computed now (`draft` while the month runs, `closed` until it is issued).
pub async fn invoice(store: &Store, prices: Pricing<'_>, org_id: &str, start: i64, now: i64) -> Result<Invoice> {
    let month = label(start)?;
    if let Some(row) = store.issued_invoice(org_id, &month).await? {
        return frozen(&row);
    }
    Ok(compute(store, prices, org_id, start, now).await?.0)
}

/// An issued invoice as stored.
pub fn frozen(row: &IssuedRow) -> Result<Invoice> {
    let mut inv: Invoice = serde_json::from_str(&row.document)
        .with_context(|| format!("read the issued invoice of {} for {}", row.org_id, row.month))?;
    inv.status = "issued".into();
    inv.number = Some(number(row.number));
    inv.issued_at = Some(row.issued_at);
    Ok(inv)
}

/// Issues every invoice due at `now` (oldest month first, per org); returns how many.
/// A month issued meanwhile by another control plane is left to it; an org whose
/// invoice cannot be made (usage with no price) is said so and the others go on.
pub async fn issue_due(store: &Store, prices: Pricing<'_>, now: i64) -> Result<usize> {
    let mut issued = 0;
    for org_id in store.metered_orgs().await? {
        match issue_org(store, prices, &org_id, now).await {
            Ok(n) => issued += n,
            Err(e) => tracing::error!(org = %org_id, "issue invoices: {e:#}"),
        }
    }
    Ok(issued)
}

/// Issues the org's invoices due at `now`, oldest month first.
async fn issue_org(store: &Store, prices: Pricing<'_>, org_id: &str, now: i64) -> Result<usize> {
    let mut issued = 0;
    while let Some(start) = first_unissued(store, org_id).await? {
        if !invoice::due(next_month(start)?, now) {
            break;
        }
        let (inv, holds, period) = compute(store, prices, org_id, start, now)
            .await
            .with_context(|| format!("make the invoice of {}", label(start).unwrap_or_default()))?;
        let row = IssuedRow {
            org_id: org_id.to_string(),
            month: inv.month.clone(),
            number: 0,
            issued_at: now,
            total: inv.total.clone(),
            credits_applied: inv.credits_applied.clone(),
            commitment_applied: inv.commitment_applied.clone(),
            commitment_period: period,
            due: inv.due.clone(),
            document: serde_json::to_string(&inv).context("write the invoice")?,
        };
        match store.issue_invoice(&row, &holds).await {
            Ok(n) => {
                tracing::info!(org = %org_id, month = %inv.month, number = %number(n), total = %inv.total, "invoice issued");
                issued += 1;
            }
            Err(StoreError::Conflict(why)) => {
                tracing::debug!(org = %org_id, "issue the invoice of {}: {why}", inv.month);
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("issue the invoice of {}", inv.month)),
        }
    }
    Ok(issued)
}

/// What is left of the org's credits: every credit granted less what its `issued`
/// invoices drew.
pub async fn credit_balance(store: &Store, org_id: &str, issued: &[IssuedRow]) -> Result<Decimal> {
    let mut balance = Decimal::ZERO;
    for c in store.credits(org_id).await? {
        balance += crate::billing::amount(&c.amount)?;
    }
    for i in issued {
        balance -= crate::billing::amount(&i.credits_applied)?;
    }
    Ok(balance)
}

fn hour_usage(r: UsageRow, hour: i64) -> HourUsage {
    HourUsage {
        cluster_id: r.cluster_id,
        cluster: r.cluster_name,
        dimension: r.dimension,
        cloud: r.cloud,
        region: r.region,
        hour: r.hour.unwrap_or(hour),
        quantity: u64::try_from(r.quantity).unwrap_or(0),
    }
}

/// The invoice of the month starting at `start` as it stands at `now`, the usage it holds
/// (per cluster, dimension and place) and the commitment it draws down.
async fn compute(
    store: &Store,
    prices: Pricing<'_>,
    org_id: &str,
    start: i64,
    now: i64,
) -> Result<(Invoice, Vec<UsageRow>, Option<String>)> {
    let end = next_month(start)?;
    let mut usage: Vec<HourUsage> = store
        .metered_usage(org_id, None, start, end, true)
        .await
        .context("read usage")?
        .into_iter()
        .map(|r| hour_usage(r, start))
        .collect();
    // The first month not issued carries what issued months recorded after their invoices,
    // as usage of the hour before it.
    if store.last_issued_month(org_id).await?.is_some() && first_unissued(store, org_id).await? == Some(start) {
        let hour = start - highrise_billing::meter::HOUR;
        let recorded: Vec<HourUsage> = store
            .metered_usage(org_id, None, i64::MIN / 2, start, false)
            .await?
            .into_iter()
            .map(|r| hour_usage(r, hour))
            .collect();
        let invoiced: Vec<HourUsage> = store
            .invoiced_usage(org_id)
            .await?
            .into_iter()
            .map(|r| hour_usage(r, hour))
            .collect();
        usage.extend(invoice::carried(&recorded, &invoiced, hour));
    }
    let (lines, total) = invoice::lines(&usage, prices.book, start)?;

    // Credits first, then the commitment in force in the month, as issued invoices left them.
    let issued = store.issued_invoices(org_id).await?;
    let amount = |s: &str| crate::billing::amount(s);
    let credits = credit_balance(store, org_id, &issued).await?;
    let terms = store.billing_terms(org_id).await?;
    let (mut commitment, mut period) = (Decimal::ZERO, None);
    if let Some(c) = terms.commitment.as_deref() {
        let from = terms.commitment_from.unwrap_or(0);
        let to = terms.commitment_to.unwrap_or(i64::MAX);
        if from < end && to > start {
            let name = crate::billing::commitment_period(&terms);
            commitment = amount(c)?;
            for i in issued.iter().filter(|i| i.commitment_period.as_deref() == Some(&name)) {
                commitment -= amount(&i.commitment_applied)?;
            }
            period = Some(name);
        }
    }
    let settled = invoice::settle(total, credits, commitment);

    let mut holds: BTreeMap<(String, String, String, String), UsageRow> = BTreeMap::new();
    for u in &usage {
        let row = holds
            .entry((
                u.cluster_id.clone(),
                u.dimension.clone(),
                u.cloud.clone(),
                u.region.clone(),
            ))
            .or_insert_with(|| UsageRow {
                cluster_id: u.cluster_id.clone(),
                cluster_name: u.cluster.clone(),
                dimension: u.dimension.clone(),
                cloud: u.cloud.clone(),
                region: u.region.clone(),
                hour: None,
                quantity: 0,
            });
        row.quantity += i64::try_from(u.quantity).context("a quantity past i64")?;
    }
    let marketplace = store.marketplace_link(org_id).await?.map(|l| l.marketplace);
    let inv = Invoice {
        month: label(start)?,
        status: if now < end { "draft" } else { "closed" }.into(),
        number: None,
        issued_at: None,
        period_start: start,
        period_end: end,
        currency: CURRENCY.into(),
        price_book: prices.version.to_string(),
        lines: lines
            .into_iter()
            .map(|l| InvoiceLine {
                carried: l.carried,
                cluster_id: l.cluster_id,
                cluster: l.cluster,
                dimension: l.dimension,
                cloud: l.cloud,
                region: l.region,
                first_hour: l.first_hour,
                last_hour: l.last_hour,
                quantity: l.quantity,
                unit_price: l.unit_price.to_string(),
                per: l.per,
                amount: money(l.amount),
            })
            .collect(),
        total: money(total),
        credits_applied: money(settled.credits_applied),
        commitment_applied: money(settled.commitment_applied),
        due: money(settled.due),
        marketplace,
    };
    let period = (settled.commitment_applied > Decimal::ZERO).then_some(period).flatten();
    Ok((inv, holds.into_values().collect(), period))
}
