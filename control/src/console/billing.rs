//! Usage and invoices: this month's bill so far with its lines, spend per day as a chart
//! (server-rendered SVG), the org's credits, commitment and alerts, and every invoice with
//! its PDF and HTML (fetched from the API with the session's key).

use super::page::{self, time};
use super::*;
use axum::extract::{Path, State};
use axum::response::Html;
use highrise_api::{BillingStatus, Invoice, InvoiceSummary, Usage};
use highrise_billing::spend;
use maud::{html, Markup};
use rust_decimal::Decimal;

/// Spend per day of the month as bars: `days` (day start, amount) within the month that
/// starts at `start` and has `len` days.
fn spend_chart(days: &[(i64, Decimal)], start: i64, len: i64) -> Markup {
    const W: i64 = 720;
    const H: i64 = 180;
    const PAD: i64 = 24;
    let max = days.iter().map(|(_, a)| *a).max().unwrap_or_default();
    let total: Decimal = days.iter().map(|(_, a)| *a).sum();
    let slot = (W - PAD) / len.max(1);
    let height = |a: Decimal| -> i64 {
        if max.is_zero() {
            return 0;
        }
        let h = a * Decimal::from(H - PAD) / max;
        h.round().try_into().unwrap_or(0)
    };
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label={ "Spend per day this month: $" (crate::invoicing::money(total)) " so far" } {
                line x1=(PAD) y1=(H - PAD) x2=(W) y2=(H - PAD) stroke="#b9c2cd" {}
                @for (day, amount) in days {
                    @let i = (day - start).div_euclid(spend::DAY);
                    @let h = height(*amount);
                    rect x=(PAD + i * slot + 2) y=(H - PAD - h) width=((slot - 4).max(1)) height=(h) fill="#1f5fbf" {
                        title { (page::day(*day)) ": $" (crate::invoicing::money(*amount)) }
                    }
                }
                text x="0" y="12" font-size="11" fill="#5b6675" { "$" (crate::invoicing::money(max)) }
                text x=(PAD) y=(H - 6) font-size="11" fill="#5b6675" { (page::day(start)) }
                text x=(W) y=(H - 6) font-size="11" fill="#5b6675" text-anchor="end" { (page::day(start + (len - 1) * spend::DAY)) }
            }
            figcaption.muted { "Spend per day (UTC) at list prices: $" (crate::invoicing::money(total)) " this month so far." }
        }
    }
}

pub(super) async fn show(State(console): State<Arc<Console>>, signed: Signed) -> Result<Html<String>, Failure> {
    let status: BillingStatus = signed.api.get("/v1/billing").await?;
    let draft: Invoice = signed
        .api
        .get(&format!("/v1/invoices/{}", segment(&status.month)))
        .await?;
    let invoices: Vec<InvoiceSummary> = signed.api.get("/v1/invoices").await?;
    let usage: Usage = signed
        .api
        .get(&format!("/v1/usage?hourly=true&from={}", draft.period_start))
        .await?;
    let hours: Vec<spend::Hour> = usage
        .records
        .iter()
        .filter_map(|r| {
            Some(spend::Hour {
                hour: r.hour?,
                dimension: &r.dimension,
                cloud: &r.cloud,
                region: &r.region,
                quantity: r.quantity,
            })
        })
        .collect();
    let chart = match spend::daily(&hours, &console.state.cfg.list_prices.0) {
        Ok(days) => spend_chart(
            &days,
            draft.period_start,
            (draft.period_end - draft.period_start) / spend::DAY,
        ),
        Err(e) => html! { p.badge.bad { "Spend per day cannot be shown: " (e) "." } },
    };
    let body = html! {
        h1 { "Usage and invoices" }
        div.grid {
            section.card {
                h2 { "This month (" (status.month) ")" }
                p { "Spent so far " strong data-month-spent=(status.month_spent) { "$" (status.month_spent) } }
                dl.facts {
                    @if let Some(limit) = &status.hard_limit { dt { "Hard limit" } dd { "$" (limit) " — new clusters are refused at it" } }
                    @if let Some(c) = &status.commitment { dt { "Commitment" } dd { "$" (c.balance) " left of $" (c.amount) } }
                    dt { "Credits" } dd { "$" (status.credit_balance) }
                    @if let Some(m) = &status.marketplace { dt { "Paid through" } dd { (m.marketplace) } }
                }
            }
            section.card { (chart) }
        }
        section.card {
            h2 { "The bill so far" }
            @if draft.lines.is_empty() {
                p.empty { "No usage this month yet: clusters are billed by the second they run." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th { "Cluster" } th { "What" } th.hide-narrow { "Where" } th { "Quantity" } th.hide-narrow { "Unit price" } th { "Amount" } } }
                    tbody { @for l in &draft.lines {
                        tr {
                            td { (l.cluster) } td { (crate::documents::what(l)) }
                            td.hide-narrow { (l.cloud) " · " (l.region) }
                            td { (crate::documents::quantity(l)) }
                            td.hide-narrow { "$" (crate::documents::unit(l)) }
                            td { "$" (l.amount) }
                        }
                    } }
                    tfoot { tr { td colspan="2" { strong { "Total" } } td.hide-narrow {} td {} td.hide-narrow {} td { strong { "$" (draft.total) } } } }
                } }
            }
        }
        section.card {
            h2 { "Invoices" }
            div.table-wrap { table {
                thead { tr { th { "Month" } th { "Number" } th { "Status" } th { "Total" } th { "Due" } th { "Download" } } }
                tbody { @for i in &invoices {
                    tr data-invoice=(i.month) {
                        td { (i.month) } td { (i.number.as_deref().unwrap_or("—")) } td { (i.status) }
                        td { "$" (i.total) } td { "$" (i.due) }
                        td { a href={ "/console/invoices/" (segment(&i.month)) "/pdf" } { "PDF" } " · " a href={ "/console/invoices/" (segment(&i.month)) "/html" } { "HTML" } }
                    }
                } }
            } }
        }
        @if !status.alerts.is_empty() {
            section.card {
                h2 { "Spend alerts" }
                ol.timeline { @for a in &status.alerts { li { time { (time(a.fired_at)) } (a.threshold) "% of $" (a.budget) " (" (a.period) "): $" (a.spent) " spent" } } }
            }
        }
    };
    Ok(Html(
        page::page("Usage and invoices", Some(&signed), "billing", body).into_string(),
    ))
}

/// An invoice as the API renders it (`pdf` or `html`), fetched with the session's key.
pub(super) async fn document(signed: Signed, Path((month, kind)): Path<(String, String)>) -> Result<Response, Failure> {
    let content_type = match kind.as_str() {
        "pdf" => "application/pdf",
        "html" => "text/html; charset=utf-8",
        _ => {
            return Err(Failure {
                status: StatusCode::NOT_FOUND,
                message: "An invoice comes as pdf or html.".into(),
            })
        }
    };
    let bytes = signed
        .api
        .call(Method::GET, &format!("/v1/invoices/{}/{kind}", segment(&month)), None)
        .await?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}
