//! Google Service Control's `services.report`
//! (`POST {base}/v1/services/{service}:report`), the way Google Cloud Marketplace SaaS
//! products report usage: one operation per org and hour, its `consumerId` the customer's
//! usage reporting id, one metric per dimension (`{service}/{dimension}`, an `int64Value`),
//! and a stable `operationId` so that a report sent again is the same operation. The
//! service answers 200 with `reportErrors` for the operations it refused.
//!
//! The OAuth access token (the publisher's service account) is the operator's to fetch and
//! refresh: the exporter reads it from a file at every call ([`Token`]).

use super::{call, http_client, rfc3339, Exporter, SendError, Token};
use crate::store::OutboxRow;
use highrise_billing::export::Outcome;
use highrise_billing::marketplace::Marketplace;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GcpConfig {
    /// `https://servicecontrol.googleapis.com`, or a test double's address.
    pub base_url: String,
    /// The product's service name, e.g. `highrise.endpoints.vendor.cloud.goog`.
    pub service: String,
    pub token: Token,
    pub timeout: Duration,
}

pub struct GcpExporter {
    cfg: GcpConfig,
    http: reqwest::Client,
}

impl GcpExporter {
    pub fn new(cfg: GcpConfig) -> anyhow::Result<Self> {
        let http = http_client(cfg.timeout)?;
        Ok(Self { cfg, http })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportResponse {
    #[serde(default)]
    report_errors: Vec<ReportError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportError {
    operation_id: String,
    status: Status,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
}

#[async_trait::async_trait]
impl Exporter for GcpExporter {
    fn marketplace(&self) -> Marketplace {
        Marketplace::Gcp
    }

    async fn send(&self, records: &[OutboxRow]) -> Result<Vec<Outcome>, SendError> {
        // One operation per org's window, in the order the records come.
        let mut operations: Vec<serde_json::Value> = Vec::new();
        let mut ids: Vec<&str> = Vec::new();
        for r in records {
            let metric = json!({
                "metricName": format!("{}/{}", self.cfg.service, r.dimension),
                "metricValues": [{ "int64Value": r.quantity.to_string() }],
            });
            if ids.last() == Some(&r.operation_id.as_str()) {
                if let Some(sets) = operations.last_mut().and_then(|o| o["metricValueSets"].as_array_mut()) {
                    sets.push(metric);
                }
                continue;
            }
            ids.push(&r.operation_id);
            operations.push(json!({
                "operationId": r.operation_id,
                "operationName": "highrise/usage",
                "consumerId": r.account,
                "startTime": rfc3339(r.window_start),
                "endTime": rfc3339(r.window_end),
                "metricValueSets": [metric],
            }));
        }
        let url = format!(
            "{}/v1/services/{}:report",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.service
        );
        let request = self
            .http
            .post(url)
            .bearer_auth(self.cfg.token.get().await?)
            .json(&json!({ "operations": operations }));
        let answer: ReportResponse = match call("services.report", request).await? {
            Ok(a) => a,
            Err(refused) => return Ok(records.iter().map(|_| Outcome::Rejected(refused.clone())).collect()),
        };
        Ok(records
            .iter()
            .map(
                |r| match answer.report_errors.iter().find(|e| e.operation_id == r.operation_id) {
                    None => Outcome::Accepted(Some(r.operation_id.clone())),
                    Some(e) => {
                        let why = format!("code {}: {}", e.status.code, e.status.message);
                        match e.status.code {
                            // ALREADY_EXISTS: the id was taken by a different operation.
                            6 => Outcome::Conflict(why),
                            // UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED.
                            14 | 13 | 4 | 8 => Outcome::Retry(why),
                            _ => Outcome::Rejected(why),
                        }
                    }
                },
            )
            .collect())
    }
}
