//! Org settings: the org (name, id, your role), its quotas and what it uses of them, its
//! projects, and — for the roles that may — the monthly hard limit and the spend alerts'
//! webhook.

use super::page::{self, csrf_field, time};
use super::*;
use axum::extract::Query;
use axum::response::Html;
use highrise_api::{BillingSettings, BillingStatus, Project, QuotaUsage};
use maud::html;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub(super) struct Saved {
    saved: Option<String>,
}

pub(super) async fn show(signed: Signed, Query(saved): Query<Saved>) -> Result<Html<String>, Failure> {
    let quotas: QuotaUsage = signed.api.get("/v1/quotas").await?;
    let projects: Vec<Project> = signed.api.get("/v1/projects?limit=1000").await?;
    let billing: Option<BillingStatus> = if signed.may(Action::ReadUsage) {
        Some(signed.api.get("/v1/billing").await?)
    } else {
        None
    };
    let q = &quotas.quotas;
    let body = html! {
        h1 { "Settings" }
        @if saved.saved.is_some() { p.notice role="status" { "Saved." } }
        div.grid {
            section.card {
                h2 { "Org" }
                dl.facts {
                    dt { "Name" } dd { (signed.me.org) }
                    dt { "Id" } dd { code { (signed.me.org_id) } }
                    dt { "You" } dd { (signed.me.actor) ", " (signed.me.role.as_str()) }
                }
            }
            section.card {
                h2 { "Quotas" }
                p.muted { "Set by the operator; ask them for more." }
                dl.facts {
                    dt { "Clusters" } dd data-quota="clusters" { (quotas.clusters) " of " (q.max_clusters) }
                    dt { "Members per cluster" } dd { "up to " (q.max_members_per_cluster) }
                    dt { "Backup storage" } dd { (page::bytes(quotas.storage_bytes.max(0) as u64)) " of " (page::bytes(q.max_storage_bytes.max(0) as u64)) }
                    dt { "Operations at once" } dd { (quotas.running_operations) " of " (q.max_concurrent_operations) }
                }
            }
        }
        section.card {
            h2 { "Projects" }
            div.table-wrap { table {
                thead { tr { th { "Name" } th { "Created" } } }
                tbody { @for p in &projects { tr { td { (p.name) } td { (time(p.created_at)) } } } }
            } }
            p.muted { "Create and delete projects with " code { "highrise project" } "; the console shows the " code { "default" } " project's clusters." }
        }
        @if let Some(b) = &billing {
            section.card {
                h2 { "Spending" }
                @if signed.may(Action::WriteBilling) {
                    form.stack method="post" action="/console/settings/billing" {
                        (csrf_field(&signed.csrf))
                        div.row {
                            label { "Monthly hard limit (USD, empty: none)"
                                input type="text" name="hard_limit" inputmode="decimal" pattern="[0-9]{1,12}(\\.[0-9]{1,2})?" value=(b.hard_limit.as_deref().unwrap_or("")); }
                            label { "Spend alerts webhook (empty: none)"
                                input type="url" name="alert_webhook" value=(b.alert_webhook.as_deref().unwrap_or("")) placeholder="https://example.com/hooks/spend"; }
                        }
                        p.muted { "New clusters are refused once the month's spend reaches the limit. Alerts at 50, 80 and 100 % of a commitment are POSTed to the webhook (public addresses only)." }
                        div { button.primary type="submit" { "Save" } }
                    }
                } @else {
                    dl.facts {
                        dt { "Hard limit" } dd { (b.hard_limit.as_deref().unwrap_or("none")) }
                        dt { "Alerts webhook" } dd { (b.alert_webhook.as_deref().unwrap_or("none")) }
                    }
                }
            }
        }
    };
    Ok(Html(
        page::page("Settings", Some(&signed), "settings", body).into_string(),
    ))
}

#[derive(Deserialize)]
pub(super) struct BillingForm {
    #[serde(default)]
    hard_limit: String,
    #[serde(default)]
    alert_webhook: String,
}

pub(super) async fn set_billing(Posted { signed, form }: Posted<BillingForm>) -> Result<Response, Failure> {
    let some = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let req = BillingSettings {
        hard_limit: some(form.hard_limit),
        alert_webhook: some(form.alert_webhook),
    };
    let _: BillingStatus = signed.api.put("/v1/billing", &req).await?;
    Ok(see_other("/console/settings?saved=billing"))
}
