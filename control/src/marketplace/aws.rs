//! AWS Marketplace Metering's `BatchMeterUsage`, through the AWS SDK (cargo feature
//! `aws`): up to 25 records a call, each naming the customer by `CustomerAWSAccountId`
//! and `LicenseArn` (`CustomerIdentifier` is deprecated from 2026-03-31; the SDK's model
//! still has it as a required string, so it goes out empty), timestamped at
//! the hour's start and sent within 6 hours of it. The service answers per record
//! (`Success`; `CustomerNotSubscribed`; `DuplicateRecord` — it holds a *different*
//! quantity for that customer, dimension and time) and lists the records it did not
//! process (`UnprocessedRecords`: sent again). An identical record sent again is the same
//! record: that is what makes the outbox's resend safe.
//!
//! The SDK's own retries are off: the outbox retries, with its own backoff and the
//! knowledge of which records may already be held.

use super::{Exporter, SendError};
use crate::store::OutboxRow;
use aws_sdk_marketplacemetering as metering;
use highrise_billing::export::Outcome;
use highrise_billing::marketplace::Marketplace;
use metering::error::SdkError;
use metering::operation::batch_meter_usage::BatchMeterUsageError;
use metering::primitives::DateTime;
use metering::types::{UsageRecord, UsageRecordResultStatus};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The Metering API's address, when not AWS's own (a test's).
    pub endpoint_url: Option<String>,
    pub region: String,
    /// The product's code in AWS Marketplace.
    pub product_code: String,
    pub timeout: Duration,
}

pub struct AwsExporter {
    client: metering::Client,
    product_code: String,
}

impl AwsExporter {
    /// An exporter with the credentials the SDK's configuration `sdk` carries.
    pub fn new(cfg: &AwsConfig, sdk: &metering::config::Builder) -> Self {
        let mut conf = sdk
            .clone()
            .region(metering::config::Region::new(cfg.region.clone()))
            .retry_config(metering::config::retry::RetryConfig::disabled())
            .timeout_config(
                metering::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(cfg.timeout)
                    .build(),
            );
        if let Some(url) = &cfg.endpoint_url {
            conf = conf.endpoint_url(url);
        }
        Self {
            client: metering::Client::from_conf(conf.build()),
            product_code: cfg.product_code.clone(),
        }
    }
}

impl AwsExporter {
    /// An exporter with the credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN` (optional).
    pub fn from_env(cfg: &AwsConfig) -> anyhow::Result<Self> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
            anyhow::bail!("aws: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY hold the metering credentials");
        };
        let creds = metering::config::Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "environment");
        let sdk = metering::config::Builder::new()
            .behavior_version(metering::config::BehaviorVersion::latest())
            .credentials_provider(creds);
        Ok(Self::new(cfg, &sdk))
    }
}

/// Whether the service's echo of a record is `r`'s: the same dimension and time, and the
/// same customer when the echo names one (moto's leaves it out; records for different
/// customers in one call are then told apart by their order).
fn echoes(u: &UsageRecord, r: &OutboxRow) -> bool {
    u.dimension() == r.dimension
        && u.timestamp().secs() == r.hour
        && u.customer_aws_account_id().is_none_or(|a| a == r.account)
}

/// The first echo not yet taken that is `r`'s.
fn take<'a>(
    echoes_of: impl Iterator<Item = Option<&'a UsageRecord>>,
    used: &mut [bool],
    r: &OutboxRow,
) -> Option<usize> {
    let i = echoes_of
        .enumerate()
        .position(|(i, u)| !used[i] && u.is_some_and(|u| echoes(u, r)))?;
    used[i] = true;
    Some(i)
}

#[async_trait::async_trait]
impl Exporter for AwsExporter {
    fn marketplace(&self) -> Marketplace {
        Marketplace::Aws
    }

    async fn send(&self, rows: &[OutboxRow]) -> Result<Vec<Outcome>, SendError> {
        let mut records = Vec::with_capacity(rows.len());
        let mut outcomes: Vec<Option<Outcome>> = vec![None; rows.len()];
        for (i, r) in rows.iter().enumerate() {
            let built = i32::try_from(r.quantity)
                .map_err(|_| format!("quantity {} is more than BatchMeterUsage takes", r.quantity))
                .and_then(|q| {
                    UsageRecord::builder()
                        .timestamp(DateTime::from_secs(r.hour))
                        .customer_aws_account_id(&r.account)
                        .set_license_arn(r.licence.clone())
                        .dimension(&r.dimension)
                        .quantity(q)
                        .build()
                        .map_err(|e| e.to_string())
                });
            match built {
                Ok(u) => records.push(u),
                Err(e) => outcomes[i] = Some(Outcome::Rejected(e)),
            }
        }
        if records.is_empty() {
            return Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or(Outcome::Rejected(String::new())))
                .collect());
        }
        let answer = self
            .client
            .batch_meter_usage()
            .product_code(&self.product_code)
            .set_usage_records(Some(records))
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(e) => return whole_call(e, rows.len()),
        };
        let mut unprocessed_used = vec![false; out.unprocessed_records().len()];
        let mut results_used = vec![false; out.results().len()];
        Ok(rows
            .iter()
            .zip(outcomes)
            .map(|(r, refused)| {
                if let Some(o) = refused {
                    return o;
                }
                if take(out.unprocessed_records().iter().map(Some), &mut unprocessed_used, r).is_some() {
                    return Outcome::Retry("unprocessed: BatchMeterUsage asks for it again".into());
                }
                let Some(i) = take(out.results().iter().map(|x| x.usage_record()), &mut results_used, r) else {
                    return Outcome::InDoubt("BatchMeterUsage gave no result for it".into());
                };
                let res = &out.results()[i];
                match res.status() {
                    Some(UsageRecordResultStatus::Success) => {
                        Outcome::Accepted(res.metering_record_id().map(Into::into))
                    }
                    Some(UsageRecordResultStatus::DuplicateRecord) => Outcome::Conflict(
                        "DuplicateRecord: AWS holds a different quantity for this customer, dimension and hour".into(),
                    ),
                    Some(UsageRecordResultStatus::CustomerNotSubscribed) => {
                        Outcome::Rejected("CustomerNotSubscribed: the customer cannot use the product".into())
                    }
                    other => Outcome::InDoubt(format!("status {other:?}")),
                }
            })
            .collect())
    }
}

/// A call that failed as a whole: throttled or unavailable (refused, sent again); timed out, not
/// dispatched, an internal error, an unreadable answer (in doubt); a timestamp out of
/// bounds (sent again: the outbox's deadline decides whether it still can be); the rest
/// refuses every record.
fn whole_call(
    e: SdkError<BatchMeterUsageError, metering::config::http::HttpResponse>,
    n: usize,
) -> Result<Vec<Outcome>, SendError> {
    let message = format!("BatchMeterUsage: {}", metering::error::DisplayErrorContext(&e));
    // Unavailable or throttled, whatever the body says: looked at nothing.
    if e.raw_response()
        .is_some_and(|r| matches!(r.status().as_u16(), 429 | 503))
    {
        return Err(SendError::refused(message));
    }
    match &e {
        SdkError::ServiceError(se) => match se.err() {
            BatchMeterUsageError::ThrottlingException(_) => Err(SendError::refused(message)),
            BatchMeterUsageError::InternalServiceErrorException(_) => Err(SendError::unanswered(message)),
            BatchMeterUsageError::TimestampOutOfBoundsException(_) => Ok(vec![Outcome::Retry(message); n]),
            _ if se.raw().status().is_server_error() => Err(SendError::unanswered(message)),
            _ => Ok(vec![Outcome::Rejected(message); n]),
        },
        SdkError::ConstructionFailure(_) => Ok(vec![Outcome::Rejected(message); n]),
        // Timed out, the connection broken, the answer unreadable: it may have been taken.
        _ => Err(SendError::unanswered(message)),
    }
}
