//! Strict test doubles of the cloud marketplaces' metering APIs, as documented (no
//! emulator exists for Azure's or GCP's; moto accepts AWS's but checks nothing): HTTP
//! servers on loopback that hold what they accepted, check every rule the real service
//! states — limits per call, known customers and dimensions, the time window a record
//! may fall in, one record per key — answer with the service's statuses, and take
//! injected faults (a 5xx, an answer that never comes, an answer lost after the records
//! were taken). What an exporter must never do (send a different quantity for a key the
//! service holds, break a window chain) is also kept as a violation for the test to
//! assert empty.
#![allow(dead_code)] // each test file uses its own share

pub mod tokens;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault the next call meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers this status without looking at the call.
    Status(u16),
    /// Never answers (the client's timeout ends the call).
    Hang,
    /// Takes the records, then the answer is lost (502 to the client): the sender crashed
    /// or its connection broke between sending and recording.
    LoseAnswer,
    /// (AWS) leaves the call's first record unprocessed.
    Unprocessed,
}

/// What a double holds; the test reads it.
#[derive(Debug, Default)]
pub struct Book {
    /// Accepted quantities by (customer, dimension, hour start).
    pub accepted: BTreeMap<(String, String, i64), i64>,
    /// Records the service answered as duplicates of one it held (the same quantity).
    pub duplicates: usize,
    /// Records refused as too old.
    pub expired: usize,
    /// Calls that reached the service (faulted ones too).
    pub calls: usize,
    /// Broken rules an exporter must never break.
    pub violations: Vec<String>,
    /// GCP: operations by id, with the content first accepted.
    pub operations: HashMap<String, Value>,
    /// GCP: where each consumer's last window ended.
    pub last_end: BTreeMap<String, i64>,
    /// The service is down: every call answers 503.
    pub down: bool,
    faults: VecDeque<Fault>,
}

/// A marketplace double on a loopback port.
pub struct Double {
    pub url: String,
    pub book: Arc<Mutex<Book>>,
    /// The service's clock (Unix seconds), set by the test.
    pub clock: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Double {
    pub fn fail_next(&self, f: Fault) {
        self.book.lock().unwrap().faults.push_back(f);
    }

    pub fn set_down(&self, down: bool) {
        self.book.lock().unwrap().down = down;
    }

    pub fn set_now(&self, t: i64) {
        self.clock.store(t, Ordering::SeqCst);
    }

    /// Accepted quantities summed by dimension.
    pub fn totals(&self) -> BTreeMap<String, i64> {
        let mut t = BTreeMap::new();
        for ((_, d, _), q) in &self.book.lock().unwrap().accepted {
            *t.entry(d.clone()).or_default() += q;
        }
        t
    }
}

#[derive(Clone)]
struct Shared {
    book: Arc<Mutex<Book>>,
    clock: Arc<AtomicI64>,
    token: String,
    customers: BTreeSet<String>,
    dimensions: BTreeSet<String>,
    /// Azure: the plan; GCP: the service name; AWS: the product code.
    product: String,
}

impl Shared {
    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Takes the next fault (a hang waits here, past any client's timeout).
    async fn fault(&self) -> Option<Fault> {
        let f = {
            let mut b = self.book.lock().unwrap();
            b.calls += 1;
            if b.down {
                Some(Fault::Status(503))
            } else {
                b.faults.pop_front()
            }
        };
        if f == Some(Fault::Hang) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        f
    }

    fn authorized(&self, headers: &HeaderMap, scheme: &str) -> bool {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(scheme) && (scheme != "Bearer " || v[7..] == self.token))
    }

    /// Holds a record under its key, once: `Ok(true)` taken, `Ok(false)` a duplicate of
    /// the same quantity, `Err(held)` a different quantity under a held key.
    fn hold(&self, b: &mut Book, key: (String, String, i64), q: i64) -> Result<bool, i64> {
        match b.accepted.get(&key) {
            None => {
                b.accepted.insert(key, q);
                Ok(true)
            }
            Some(&held) if held == q => {
                b.duplicates += 1;
                Ok(false)
            }
            Some(&held) => {
                b.violations
                    .push(format!("{key:?}: sent {q}, the service holds {held}"));
                Err(held)
            }
        }
    }
}

async fn serve(shared: Shared, router: Router) -> Double {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Double {
        url,
        book: shared.book,
        clock: shared.clock,
        task,
    }
}

fn shared(token: &str, customers: &[&str], dimensions: &[&str], product: &str) -> Shared {
    Shared {
        book: Arc::default(),
        clock: Arc::default(),
        token: token.into(),
        customers: customers.iter().map(|s| s.to_string()).collect(),
        dimensions: dimensions.iter().map(|s| s.to_string()).collect(),
        product: product.into(),
    }
}

fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .or_else(|| {
            s.parse::<jiff::civil::DateTime>()
                .ok()
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp()))
        })
        .map(|t| t.as_second())
}

// ---- Azure: POST /api/batchUsageEvent?api-version=2018-08-31 ----

/// The Azure Marketplace metering API: the plan `plan` with `dimensions`, SaaS
/// subscriptions `customers`.
pub async fn azure(token: &str, plan: &str, customers: &[&str], dimensions: &[&str]) -> Double {
    let s = shared(token, customers, dimensions, plan);
    let router = Router::new()
        .route("/api/batchUsageEvent", post(azure_batch))
        .with_state(s.clone());
    serve(s, router).await
}

async fn azure_batch(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = s.fault().await;
    if let Some(Fault::Status(code)) = fault {
        return (StatusCode::from_u16(code).unwrap(), "injected failure").into_response();
    }
    if q.get("api-version").map(String::as_str) != Some("2018-08-31") {
        return (StatusCode::BAD_REQUEST, "api-version must be 2018-08-31").into_response();
    }
    if !s.authorized(&headers, "Bearer ") {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    };
    let Some(events) = v["request"].as_array() else {
        return (StatusCode::BAD_REQUEST, "request: an array of usage events").into_response();
    };
    if events.is_empty() || events.len() > 25 {
        s.book
            .lock()
            .unwrap()
            .violations
            .push(format!("a batch of {} events", events.len()));
        return (StatusCode::BAD_REQUEST, "a batch holds 1 to 25 usage events").into_response();
    }
    let now = s.now();
    let mut results = Vec::new();
    let mut seen = BTreeSet::new();
    let mut b = s.book.lock().unwrap();
    for e in events {
        let resource = e["resourceId"].as_str().unwrap_or_default().to_string();
        let dimension = e["dimension"].as_str().unwrap_or_default().to_string();
        let start = e["effectiveStartTime"].as_str().unwrap_or_default().to_string();
        let quantity = e["quantity"].as_f64().unwrap_or(-1.0);
        let t = parse_time(&start);
        let status = if !s.customers.contains(&resource) {
            "ResourceNotFound"
        } else if e["planId"].as_str() != Some(s.product.as_str()) {
            "InvalidPlan"
        } else if !s.dimensions.contains(&dimension) {
            "InvalidDimension"
        } else if quantity <= 0.0 || quantity.fract() != 0.0 {
            "InvalidQuantity"
        } else {
            match t {
                None => "BadArgument",
                Some(t) if t > now => "BadArgument",
                Some(t) if now - t > 24 * 3600 => {
                    b.expired += 1;
                    "Expired"
                }
                Some(t) => {
                    let key = (resource.clone(), dimension.clone(), t.div_euclid(3600) * 3600);
                    if !seen.insert(key.clone()) {
                        b.violations.push(format!("{key:?} twice in one batch"));
                    }
                    match s.hold(&mut b, key, quantity as i64) {
                        Ok(true) => "Accepted",
                        _ => "Duplicate",
                    }
                }
            }
        };
        let mut r = json!({
            "status": status, "resourceId": resource, "dimension": dimension,
            "effectiveStartTime": start.trim_end_matches('Z'), "quantity": quantity,
            "planId": e["planId"], "messageTime": now,
        });
        if status == "Accepted" {
            r["usageEventId"] = json!(uuid::Uuid::new_v4().to_string());
        } else {
            r["error"] = json!({ "code": status, "message": format!("{status}") });
        }
        results.push(r);
    }
    if fault == Some(Fault::LoseAnswer) {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let count = results.len();
    Json(json!({ "result": results, "count": count })).into_response()
}

// ---- GCP: POST /v1/services/{service}:report ----

/// Google Service Control for the service `service`, with usage reporting ids
/// `customers` and metrics `{service}/{dimension}`.
pub async fn gcp(token: &str, service: &str, customers: &[&str], dimensions: &[&str]) -> Double {
    let s = shared(token, customers, dimensions, service);
    let router = Router::new()
        .route("/v1/services/{call}", post(gcp_report))
        .with_state(s.clone());
    serve(s, router).await
}

async fn gcp_report(State(s): State<Shared>, Path(call): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = s.fault().await;
    if let Some(Fault::Status(code)) = fault {
        return (StatusCode::from_u16(code).unwrap(), "injected failure").into_response();
    }
    if call != format!("{}:report", s.product) {
        return (StatusCode::NOT_FOUND, "no such service").into_response();
    }
    if !s.authorized(&headers, "Bearer ") {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    };
    let Some(ops) = v["operations"].as_array() else {
        return (StatusCode::BAD_REQUEST, "operations: an array").into_response();
    };
    if ops.is_empty() || ops.len() > 1000 {
        return (StatusCode::BAD_REQUEST, "1 to 1000 operations a report").into_response();
    }
    let now = s.now();
    let mut errors = Vec::new();
    let mut b = s.book.lock().unwrap();
    for op in ops {
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        let mut refuse = |code: i32, msg: String| {
            errors.push(json!({ "operationId": id, "status": { "code": code, "message": msg } }))
        };
        if uuid::Uuid::parse_str(&id).is_err() {
            refuse(3, "operationId: a UUID".into());
            continue;
        }
        if let Some(held) = b.operations.get(&id) {
            if held != op {
                b.violations
                    .push(format!("operation {id} sent again with a different content"));
                refuse(6, "the operation id is taken by a different operation".into());
            }
            // The same operation again: nothing more is counted.
            b.duplicates += 1;
            continue;
        }
        let consumer = op["consumerId"].as_str().unwrap_or_default().to_string();
        if !s.customers.contains(&consumer) {
            refuse(7, format!("consumer {consumer} is not entitled"));
            continue;
        }
        let (Some(start), Some(end)) = (
            op["startTime"].as_str().and_then(parse_time),
            op["endTime"].as_str().and_then(parse_time),
        ) else {
            refuse(3, "startTime, endTime: RFC 3339 times".into());
            continue;
        };
        if end <= start || end - start > 3600 || end > now {
            b.violations
                .push(format!("operation {id}: window {start}..{end} at {now}"));
            refuse(
                3,
                "a window ends after it starts, within an hour, not in the future".into(),
            );
            continue;
        }
        if let Some(&last) = b.last_end.get(&consumer) {
            if start != last {
                b.violations
                    .push(format!("{consumer}: a window from {start}, the last ended at {last}"));
                refuse(3, format!("the window must start where the last ended ({last})"));
                continue;
            }
        }
        let mut metrics = Vec::new();
        for set in op["metricValueSets"].as_array().into_iter().flatten() {
            let name = set["metricName"].as_str().unwrap_or_default();
            let dim = name.strip_prefix(&format!("{}/", s.product)).unwrap_or_default();
            let value = set["metricValues"][0]["int64Value"]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok());
            match value {
                Some(q) if q >= 0 && s.dimensions.contains(dim) => metrics.push((dim.to_string(), q)),
                _ => metrics.clear(),
            }
            if metrics.is_empty() {
                break;
            }
        }
        if metrics.is_empty() {
            refuse(3, "metricValueSets: known metrics with int64 values".into());
            continue;
        }
        for (dim, q) in metrics {
            let _ = s.hold(&mut b, (consumer.clone(), dim, start), q);
        }
        b.operations.insert(id.clone(), op.clone());
        b.last_end.insert(consumer, end);
    }
    if fault == Some(Fault::LoseAnswer) {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let mut answer = json!({ "serviceConfigId": "2026-12-01r0", "serviceRolloutId": "2026-12-01r0" });
    if !errors.is_empty() {
        answer["reportErrors"] = json!(errors);
    }
    Json(answer).into_response()
}

// ---- AWS: POST / with X-Amz-Target: AWSMPMeteringService.BatchMeterUsage ----

/// AWS Marketplace Metering for the product `product_code`, with the customers
/// (`account`, licence ARN) subscribed to it.
pub async fn aws(product_code: &str, customers: &[(&str, &str)], dimensions: &[&str]) -> Double {
    let pairs: Vec<String> = customers.iter().map(|(a, l)| format!("{a}|{l}")).collect();
    let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let s = shared("", &pairs, dimensions, product_code);
    let router = Router::new().route("/", post(aws_batch)).with_state(s.clone());
    serve(s, router).await
}

fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/x-amz-json-1.1")],
        json!({ "__type": kind, "message": message }).to_string(),
    )
        .into_response()
}

async fn aws_batch(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = s.fault().await;
    match fault {
        Some(Fault::Status(429)) => return aws_error(400, "ThrottlingException", "rate exceeded"),
        Some(Fault::Status(500)) => return aws_error(500, "InternalServiceErrorException", "injected"),
        Some(Fault::Status(code)) => return (StatusCode::from_u16(code).unwrap(), "injected failure").into_response(),
        _ => {}
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if header("x-amz-target") != "AWSMPMeteringService.BatchMeterUsage" {
        return aws_error(400, "UnknownOperationException", "unknown operation");
    }
    let auth = header("authorization");
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=") || !auth.contains("/aws-marketplace/aws4_request") {
        return aws_error(
            403,
            "MissingAuthenticationTokenException",
            "the request is not signed for aws-marketplace",
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return aws_error(400, "SerializationException", "body is not JSON");
    };
    if v["ProductCode"].as_str() != Some(s.product.as_str()) {
        return aws_error(400, "InvalidProductCodeException", "unknown product code");
    }
    let records = v["UsageRecords"].as_array().cloned().unwrap_or_default();
    let mut b = s.book.lock().unwrap();
    if records.is_empty() || records.len() > 25 {
        b.violations.push(format!("a batch of {} records", records.len()));
        return aws_error(400, "ValidationException", "UsageRecords: 1 to 25");
    }
    let now = s.now();
    for r in &records {
        // The SDK's model still has the deprecated CustomerIdentifier as a required
        // string: empty, it names no one.
        let named = r["CustomerIdentifier"].as_str().is_some_and(|c| !c.is_empty());
        if named || r["CustomerAWSAccountId"].as_str().is_none() || r["LicenseArn"].as_str().is_none() {
            b.violations
                .push(format!("a record not by CustomerAWSAccountId and LicenseArn: {r}"));
            return aws_error(
                400,
                "ValidationException",
                "CustomerAWSAccountId and LicenseArn are required",
            );
        }
        let t = r["Timestamp"].as_f64().unwrap_or(-1.0) as i64;
        if t > now || now - t > 6 * 3600 {
            // One record out of range refuses the whole batch.
            b.expired += records.len();
            return aws_error(
                400,
                "TimestampOutOfBoundsException",
                "a timestamp is outside the last 6 hours",
            );
        }
        if !s.dimensions.contains(r["Dimension"].as_str().unwrap_or_default()) {
            b.violations.push(format!("an unknown dimension: {r}"));
            return aws_error(400, "InvalidUsageDimensionException", "unknown dimension");
        }
    }
    let mut results = Vec::new();
    let mut unprocessed = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if i == 0 && fault == Some(Fault::Unprocessed) {
            unprocessed.push(r.clone());
            continue;
        }
        let account = r["CustomerAWSAccountId"].as_str().unwrap_or_default();
        let licence = r["LicenseArn"].as_str().unwrap_or_default();
        let dimension = r["Dimension"].as_str().unwrap_or_default();
        let t = r["Timestamp"].as_f64().unwrap_or(0.0) as i64;
        let quantity = r["Quantity"].as_i64().unwrap_or(1);
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{account}/{dimension}/{t}").as_bytes(),
        );
        let status = if !s.customers.contains(&format!("{account}|{licence}")) {
            "CustomerNotSubscribed"
        } else {
            match s.hold(&mut b, (account.to_string(), dimension.to_string(), t), quantity) {
                Ok(_) => "Success",
                Err(_) => "DuplicateRecord",
            }
        };
        results.push(json!({ "UsageRecord": r, "MeteringRecordId": id.to_string(), "Status": status }));
    }
    if fault == Some(Fault::LoseAnswer) {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    (
        [("content-type", "application/x-amz-json-1.1")],
        json!({ "Results": results, "UnprocessedRecords": unprocessed }).to_string(),
    )
        .into_response()
}
