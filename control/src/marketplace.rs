//! Usage sent to cloud marketplaces (issue 15): the exporter trait — one implementation
//! per marketplace API — and the rounds that stage each linked org's settled hours into
//! the outbox and send what is due. The rules (which hours, what quantity, how many a
//! call, when to try again, what an answer means) are `highrise_billing::export`'s; this
//! module does the I/O.
//!
//! * [`azure`]: the Azure Marketplace metering API's `batchUsageEvent`;
//! * [`gcp`]: Google Service Control's `services.report`;
//! * `aws` (cargo feature `aws`): AWS Marketplace Metering's `BatchMeterUsage` through the
//!   AWS SDK.

use crate::store::{OutboxRow, Settle, Store};
use anyhow::{Context, Result};
use highrise_billing::export::{self, Outcome, State, Total};
use highrise_billing::marketplace::Marketplace;
use highrise_billing::meter::HOUR;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[cfg(feature = "aws")]
pub mod aws;
pub mod azure;
pub mod gcp;
pub mod tokens;

/// How often hours are staged and due records sent.
const ROUND: Duration = Duration::from_secs(10);

/// The most due records one round takes per marketplace (the rest wait for the next).
const ROUND_RECORDS: i64 = 1000;

/// A call that failed as a whole (unreachable, timed out, throttled, the service's own
/// error): every record in it is tried again later.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// The service may have taken the records (the answer, not the call, was lost).
    pub in_doubt: bool,
}

impl SendError {
    /// Refused before the service looked (unreachable, throttled, unavailable).
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            in_doubt: false,
        }
    }

    /// Sent, with no answer to tell whether it was taken.
    pub fn unanswered(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            in_doubt: true,
        }
    }

    /// A transport error: refused when no connection was made, else unanswered.
    pub fn from_http(what: &str, e: &reqwest::Error) -> Self {
        let mut message = format!("{what}: {e}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        if e.is_connect() {
            Self::refused(message)
        } else {
            Self::unanswered(message)
        }
    }
}

/// One marketplace's metering API.
#[async_trait::async_trait]
pub trait Exporter: Send + Sync {
    fn marketplace(&self) -> Marketplace;

    /// Sends one call's records (at most [`export::batch_limit`]; an org's hour whole) and
    /// returns each record's outcome, in order.
    async fn send(&self, records: &[OutboxRow]) -> Result<Vec<Outcome>, SendError>;
}

pub use tokens::{Fetcher, Token};

/// The marketplaces' APIs as the operator configures them: a TOML file with an `[aws]`,
/// `[azure]` and `[gcp]` table for each marketplace usage is sent to (`highrise up
/// --marketplaces FILE`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketplacesFile {
    pub aws: Option<AwsSection>,
    pub azure: Option<AzureSection>,
    pub gcp: Option<GcpSection>,
}

/// AWS Marketplace Metering; credentials from `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    pub region: String,
    pub product_code: String,
    /// The Metering API's address when not AWS's own.
    pub endpoint_url: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    #[serde(default = "azure_url")]
    pub base_url: String,
    pub plan_id: String,
    /// A token kept fresh by something else, read at every call; or
    pub token_file: Option<PathBuf>,
    /// the publisher's app in Entra ID, whose tokens the control plane fetches.
    pub entra_id: Option<EntraIdSection>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// The publisher's app registration (client credentials).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraIdSection {
    #[serde(default = "entra_authority")]
    pub authority: String,
    pub tenant_id: String,
    pub client_id: String,
    /// Read at every fetch, so a rotated secret is taken up without a restart.
    pub client_secret_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpSection {
    #[serde(default = "gcp_url")]
    pub base_url: String,
    pub service: String,
    /// A token kept fresh by something else, read at every call; or
    pub token_file: Option<PathBuf>,
    /// the service account's key file (JSON, as Google issues it): the control plane
    /// fetches its tokens.
    pub service_account_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

fn azure_url() -> String {
    "https://marketplaceapi.microsoft.com".into()
}

fn entra_authority() -> String {
    "https://login.microsoftonline.com".into()
}

fn gcp_url() -> String {
    "https://servicecontrol.googleapis.com".into()
}

/// The exporters a marketplaces file configures; its mistakes refused with the reason.
pub fn exporters_from_file(path: &Path) -> Result<Vec<Arc<dyn Exporter>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    exporters(&text).with_context(|| format!("configure the marketplaces from {}", path.display()))
}

/// The exporters a marketplaces file's text configures.
pub fn exporters(text: &str) -> Result<Vec<Arc<dyn Exporter>>> {
    let f: MarketplacesFile = toml::from_str(text).context("parse the marketplaces file")?;
    let url_ok = |u: &str| reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    let timeout = |secs: u64| -> Result<Duration> {
        anyhow::ensure!((1..=600).contains(&secs), "timeout_secs: 1 to 600");
        Ok(Duration::from_secs(secs))
    };
    let mut out: Vec<Arc<dyn Exporter>> = Vec::new();
    if let Some(a) = f.azure {
        anyhow::ensure!(url_ok(&a.base_url), "azure.base_url: an http(s) URL");
        anyhow::ensure!(!a.plan_id.is_empty(), "azure.plan_id: the offer's plan");
        let token = match (a.token_file, a.entra_id) {
            (Some(file), None) => Token::File(file),
            (None, Some(e)) => {
                anyhow::ensure!(url_ok(&e.authority), "azure.entra_id.authority: an http(s) URL");
                let id_ok =
                    |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
                anyhow::ensure!(
                    id_ok(&e.tenant_id),
                    "azure.entra_id.tenant_id: the directory's id or domain"
                );
                anyhow::ensure!(id_ok(&e.client_id), "azure.entra_id.client_id: the app's id");
                Token::Fetched(Arc::new(Fetcher::entra_id(
                    &e.authority,
                    &e.tenant_id,
                    &e.client_id,
                    e.client_secret_file,
                    timeout(a.timeout_secs)?,
                )?))
            }
            _ => anyhow::bail!("azure: give either token_file or [azure.entra_id]"),
        };
        out.push(Arc::new(azure::AzureExporter::new(azure::AzureConfig {
            base_url: a.base_url,
            token,
            plan_id: a.plan_id,
            timeout: timeout(a.timeout_secs)?,
        })?));
    }
    if let Some(g) = f.gcp {
        anyhow::ensure!(url_ok(&g.base_url), "gcp.base_url: an http(s) URL");
        anyhow::ensure!(
            !g.service.is_empty()
                && g.service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "gcp.service: the product's service name (e.g. highrise.endpoints.vendor.cloud.goog)"
        );
        out.push(Arc::new(gcp::GcpExporter::new(gcp::GcpConfig {
            base_url: g.base_url,
            service: g.service,
            token: match (g.token_file, g.service_account_file) {
                (Some(file), None) => Token::File(file),
                (None, Some(key)) => Token::Fetched(Arc::new(
                    Fetcher::service_account(&key, timeout(g.timeout_secs)?).context("gcp.service_account_file")?,
                )),
                _ => anyhow::bail!("gcp: give either token_file or service_account_file"),
            },
            timeout: timeout(g.timeout_secs)?,
        })?));
    }
    if let Some(a) = f.aws {
        anyhow::ensure!(!a.product_code.is_empty(), "aws.product_code: the product's code");
        anyhow::ensure!(!a.region.is_empty(), "aws.region: the Metering API's region");
        anyhow::ensure!(
            a.endpoint_url.as_deref().is_none_or(url_ok),
            "aws.endpoint_url: an http(s) URL"
        );
        #[cfg(feature = "aws")]
        out.push(Arc::new(aws::AwsExporter::from_env(&aws::AwsConfig {
            endpoint_url: a.endpoint_url,
            region: a.region,
            product_code: a.product_code,
            timeout: timeout(a.timeout_secs)?,
        })?));
        #[cfg(not(feature = "aws"))]
        anyhow::bail!("aws: this control plane was built without the `aws` feature (the AWS SDK)");
    }
    Ok(out)
}

/// The marketplace export: a store and one exporter per marketplace that has one
/// configured (an org linked to a marketplace without one has its records staged, and
/// they wait).
#[derive(Clone)]
pub struct Exports {
    store: Store,
    exporters: Vec<Arc<dyn Exporter>>,
}

impl Exports {
    pub fn new(store: Store, exporters: Vec<Arc<dyn Exporter>>) -> Self {
        Self { store, exporters }
    }

    /// Stages every linked org's due hours, then sends every marketplace's due records,
    /// as of `now` (Unix seconds; injected, so a test runs a month of hours).
    pub async fn round(&self, now: i64) -> Result<()> {
        self.stage(now).await.context("stage marketplace records")?;
        for ex in &self.exporters {
            self.send(ex.as_ref(), now)
                .await
                .with_context(|| format!("send {} records", ex.marketplace().as_str()))?;
        }
        Ok(())
    }

    async fn stage(&self, now: i64) -> Result<()> {
        for org in self.store.marketplace_orgs().await? {
            let Some(m) = Marketplace::parse(&org.link.marketplace) else {
                continue;
            };
            let link = &org.link;
            let link_hour = link.linked_at.div_euclid(HOUR) * HOUR;
            let mut expected = org.cursor.map(|(_, through)| through);
            // Relinked: on from where the last link stopped, never before the new one.
            let start = expected.unwrap_or(link_hour).max(link_hour);
            for hour in export::due_hours(m, start, now) {
                let totals: Vec<Total> = self
                    .store
                    .usage_totals(&org.org_id, link_hour, hour + HOUR)
                    .await?
                    .into_iter()
                    .map(|(usage_dimension, q)| Total {
                        usage_dimension,
                        metered: u64::try_from(q).unwrap_or(0),
                    })
                    .collect();
                let reported = self.store.reported_units(&org.org_id, link_hour).await?;
                let rows: Vec<OutboxRow> = export::stage(m, hour, &totals, &reported)
                    .into_iter()
                    .map(|s| OutboxRow {
                        org_id: org.org_id.clone(),
                        dimension: s.dimension,
                        hour: s.hour,
                        marketplace: m.as_str().into(),
                        account: link.account.clone(),
                        licence: link.licence.clone(),
                        window_start: s.window_start,
                        window_end: s.window_end,
                        quantity: i64::try_from(s.quantity).unwrap_or(i64::MAX),
                        operation_id: export::operation_id(&org.org_id, s.window_start),
                        state: State::Pending.as_str().into(),
                        attempts: 0,
                        in_doubt: false,
                        next_attempt_at: now,
                        last_error: None,
                        receipt: None,
                        staged_at: now,
                        settled_at: None,
                    })
                    .collect();
                if !self
                    .store
                    .stage_marketplace_records(&org.org_id, link.linked_at, expected, hour + HOUR, &rows)
                    .await?
                {
                    // Another control plane staged it; it sends them too.
                    break;
                }
                expected = Some(hour + HOUR);
            }
        }
        Ok(())
    }

    /// Sends a marketplace's pending records, oldest hour first, until a call fails or
    /// leaves a record to retry: later hours wait behind it (GCP wants an org's windows in
    /// order), and the marketplace as a whole backs off from the failure.
    async fn send(&self, ex: &dyn Exporter, now: i64) -> Result<()> {
        let m = ex.marketplace();
        let pending = self
            .store
            .pending_marketplace_records(m.as_str(), ROUND_RECORDS)
            .await?;
        if pending.first().is_some_and(|r| r.next_attempt_at > now) {
            return Ok(());
        }
        let mut due = Vec::with_capacity(pending.len());
        for r in pending {
            match export::past_deadline(m, r.hour, r.in_doubt, now) {
                Some(o) => self.settle(&r, o, now).await?,
                None => due.push(r),
            }
        }
        for batch in export::batches(due, export::batch_limit(m), |r| (r.org_id.clone(), r.hour)) {
            let outcomes = match ex.send(&batch).await {
                Ok(o) => o,
                Err(e) if e.in_doubt => batch.iter().map(|_| Outcome::InDoubt(e.message.clone())).collect(),
                Err(e) => batch.iter().map(|_| Outcome::Retry(e.message.clone())).collect(),
            };
            let mut outcomes = outcomes.into_iter();
            let mut again = false;
            for r in &batch {
                let o = outcomes
                    .next()
                    .unwrap_or_else(|| Outcome::InDoubt("the marketplace did not answer for it".into()));
                again |= matches!(o, Outcome::Retry(_) | Outcome::InDoubt(_));
                self.settle(r, o, now).await?;
            }
            if again {
                break;
            }
        }
        Ok(())
    }

    async fn settle(&self, r: &OutboxRow, o: Outcome, now: i64) -> Result<()> {
        let state = o.state();
        let (receipt, error) = match &o {
            Outcome::Accepted(receipt) => (receipt.clone(), None),
            Outcome::Duplicate => (None, None),
            Outcome::Conflict(e)
            | Outcome::Rejected(e)
            | Outcome::Expired(e)
            | Outcome::Retry(e)
            | Outcome::InDoubt(e) => (None, Some(e.clone())),
        };
        let attempts = u32::try_from(r.attempts).unwrap_or(u32::MAX);
        let s = Settle {
            state,
            receipt,
            error,
            in_doubt: matches!(o, Outcome::InDoubt(_)),
            next_attempt_at: if state == State::Pending {
                export::retry_at(now, attempts)
            } else {
                r.next_attempt_at
            },
        };
        if !self.store.settle_marketplace_record(r, &s, now).await? {
            return Ok(());
        }
        match state {
            State::Accepted => {}
            State::Pending => {
                if r.attempts == 0 {
                    tracing::warn!(org = %r.org_id, hour = r.hour, "{}: {}", r.marketplace, s.error.as_deref().unwrap_or(""));
                }
            }
            State::Conflict | State::Rejected | State::Expired => {
                tracing::warn!(
                    org = %r.org_id, hour = r.hour, dimension = %r.dimension,
                    "{} record {}: {}", r.marketplace, state.as_str(), s.error.as_deref().unwrap_or("")
                );
            }
        }
        Ok(())
    }
}

/// Runs [`Exports::round`] every [`ROUND`] until shut down.
pub async fn run(exports: Exports, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = exports.round(crate::store::now()).await {
            tracing::error!("marketplace export: {e:#}");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(ROUND) => {}
        }
    }
}

/// An RFC 3339 UTC time of Unix seconds (`2026-11-01T08:00:00Z`).
pub(crate) fn rfc3339(t: i64) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.to_string())
}

/// An HTTP client for a marketplace API: bounded time, no redirects.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("build the marketplace HTTP client")
}

/// Sends one JSON call and reads its answer: `Ok(Ok(answer))`; `Ok(Err(refusal))` when the
/// service refused the request itself (every record in it is refused); `Err` when the call
/// is worth another try.
pub(crate) async fn call<T: serde::de::DeserializeOwned>(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<Result<T, String>, SendError> {
    let resp = request.send().await.map_err(|e| SendError::from_http(what, &e))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| SendError::from_http(&format!("{what}: read the answer"), &e))?;
    if !status.is_success() {
        return Ok(Err(call_failed(status, &body)?));
    }
    serde_json::from_str(&body)
        .map(Ok)
        .map_err(|e| SendError::unanswered(format!("{what}: unreadable answer: {e}")))
}

/// A whole call's HTTP failure: what is worth another try (429 or 5xx, expired
/// credentials) is a [`SendError`]; the rest (the request itself refused) refuses every
/// record.
fn call_failed(status: reqwest::StatusCode, body: &str) -> Result<String, SendError> {
    let text = format!("{status}: {}", body.chars().take(300).collect::<String>());
    match status.as_u16() {
        // Looked at nothing: throttled, unavailable, or our credentials.
        429 | 503 | 401 | 403 => Err(SendError::refused(text)),
        // A server error may come after the records were taken.
        500..=599 => Err(SendError::unanswered(text)),
        _ => Ok(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        format!(
            "{:#}",
            exporters(text).err().unwrap_or_else(|| panic!("accepted: {text}"))
        )
    }

    #[test]
    fn marketplaces_files_are_checked_with_the_reason() {
        assert!(exporters("").unwrap().is_empty());
        let both = exporters(
            "[azure]\nplan_id = \"payg\"\ntoken_file = \"/run/azure.token\"\n\
             [gcp]\nservice = \"highrise.endpoints.vendor.cloud.goog\"\ntoken_file = \"/run/gcp.token\"\n",
        )
        .unwrap();
        let kinds: Vec<Marketplace> = both.iter().map(|e| e.marketplace()).collect();
        assert_eq!(kinds, [Marketplace::Azure, Marketplace::Gcp]);
        let fetched = exporters(
            "[azure]\nplan_id = \"payg\"\n[azure.entra_id]\ntenant_id = \"contoso.onmicrosoft.com\"\n\
             client_id = \"00001111-aaaa-2222-bbbb-3333cccc4444\"\nclient_secret_file = \"/run/azure.secret\"\n",
        )
        .unwrap();
        assert_eq!(fetched.len(), 1);
        for (bad, why) in [
            ("[azure]\nplan_id = \"p\"\n", "either token_file or [azure.entra_id]"),
            ("[azure]\nplan_id = \"\"\ntoken_file = \"t\"\n", "azure.plan_id"),
            (
                "[azure]\nplan_id = \"p\"\ntoken_file = \"t\"\nbase_url = \"ftp://x\"\n",
                "azure.base_url",
            ),
            (
                "[azure]\nplan_id = \"p\"\ntoken_file = \"t\"\ntimeout_secs = 0\n",
                "timeout_secs",
            ),
            ("[gcp]\nservice = \"a b\"\ntoken_file = \"t\"\n", "gcp.service"),
            (
                "[azure]\nplan_id = \"p\"\ntoken_file = \"t\"\n[azure.entra_id]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n",
                "either token_file or [azure.entra_id]",
            ),
            (
                "[azure]\nplan_id = \"p\"\n[azure.entra_id]\ntenant_id = \"a/b\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n",
                "azure.entra_id.tenant_id",
            ),
            ("[gcp]\nservice = \"s\"\n", "either token_file or service_account_file"),
            (
                "[gcp]\nservice = \"s\"\nservice_account_file = \"/nonexistent/key.json\"\n",
                "gcp.service_account_file",
            ),
            ("[oracle]\n", "unknown field"),
            (
                "[aws]\nregion = \"us-east-1\"\nproduct_code = \"\"\n",
                "aws.product_code",
            ),
        ] {
            let e = refusal(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        #[cfg(not(feature = "aws"))]
        assert!(refusal("[aws]\nregion = \"us-east-1\"\nproduct_code = \"p\"\n").contains("without the `aws` feature"));
    }

    #[tokio::test]
    async fn a_token_file_is_read_at_every_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let token = Token::File(path.clone());
        let missing = token.get().await.unwrap_err();
        assert!(!missing.in_doubt && missing.message.contains("read the access token"));
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(token.get().await.unwrap(), "first");
        std::fs::write(&path, "refreshed").unwrap();
        assert_eq!(token.get().await.unwrap(), "refreshed");
    }
}
