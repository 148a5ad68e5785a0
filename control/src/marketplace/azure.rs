//! The Azure Marketplace metering API: `POST {base}/api/batchUsageEvent?api-version=2018-08-31`
//! with up to 25 usage events, one per resource (the customer's SaaS subscription id),
//! dimension and hour. The service answers per event: `Accepted`, `Duplicate` (it holds an
//! event for that resource, dimension and hour already: ours, sent before — taken as
//! accepted), `Expired` (more than 24 hours old), or a refusal (`ResourceNotFound`,
//! `InvalidDimension`, `BadArgument`, …).
//!
//! The access token (Microsoft Entra ID, for the publisher's app) is the operator's to
//! fetch and refresh: the exporter reads it from a file at every call ([`Token`]).

use super::{call, http_client, rfc3339, Exporter, SendError, Token};
use crate::store::OutboxRow;
use highrise_billing::export::Outcome;
use highrise_billing::marketplace::Marketplace;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// `https://marketplaceapi.microsoft.com`, or a test double's address.
    pub base_url: String,
    pub token: Token,
    /// The offer's plan the dimensions belong to.
    pub plan_id: String,
    pub timeout: Duration,
}

pub struct AzureExporter {
    cfg: AzureConfig,
    http: reqwest::Client,
}

impl AzureExporter {
    pub fn new(cfg: AzureConfig) -> anyhow::Result<Self> {
        let http = http_client(cfg.timeout)?;
        Ok(Self { cfg, http })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    resource_id: &'a str,
    quantity: i64,
    dimension: &'a str,
    effective_start_time: String,
    plan_id: &'a str,
}

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    result: Vec<EventResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventResult {
    #[serde(default)]
    usage_event_id: Option<String>,
    status: String,
    resource_id: String,
    dimension: String,
    effective_start_time: String,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[async_trait::async_trait]
impl Exporter for AzureExporter {
    fn marketplace(&self) -> Marketplace {
        Marketplace::Azure
    }

    async fn send(&self, records: &[OutboxRow]) -> Result<Vec<Outcome>, SendError> {
        let events: Vec<Event> = records
            .iter()
            .map(|r| Event {
                resource_id: &r.account,
                quantity: r.quantity,
                dimension: &r.dimension,
                effective_start_time: rfc3339(r.hour),
                plan_id: &self.cfg.plan_id,
            })
            .collect();
        let url = format!(
            "{}/api/batchUsageEvent?api-version=2018-08-31",
            self.cfg.base_url.trim_end_matches('/')
        );
        let request = self
            .http
            .post(url)
            .bearer_auth(self.cfg.token.get().await?)
            .header("x-ms-requestid", uuid::Uuid::new_v4().to_string())
            .json(&serde_json::json!({ "request": events }));
        let answer: BatchResponse = match call("batchUsageEvent", request).await? {
            Ok(a) => a,
            Err(refused) => return Ok(records.iter().map(|_| Outcome::Rejected(refused.clone())).collect()),
        };
        Ok(records
            .iter()
            .map(|r| {
                let start = rfc3339(r.hour);
                let Some(e) = answer.result.iter().find(|e| {
                    e.resource_id == r.account
                        && e.dimension == r.dimension
                        && same_time(&e.effective_start_time, &start)
                }) else {
                    return Outcome::InDoubt("no result for the event".into());
                };
                let why = || {
                    format!(
                        "{}: {}",
                        e.status,
                        e.error.as_ref().map(|v| v.to_string()).unwrap_or_default()
                    )
                };
                match e.status.as_str() {
                    "Accepted" => Outcome::Accepted(e.usage_event_id.clone()),
                    "Duplicate" => Outcome::Duplicate,
                    "Expired" => Outcome::Expired(why()),
                    "Error" => Outcome::Retry(why()),
                    _ => Outcome::Rejected(why()),
                }
            })
            .collect())
    }
}

/// Whether two renderings of a time are the same instant (the service may echo it without
/// its `Z`).
fn same_time(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        s.parse::<jiff::Timestamp>().ok().or_else(|| {
            s.parse::<jiff::civil::DateTime>()
                .ok()
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp()))
        })
    };
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}
