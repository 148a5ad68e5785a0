//! HTTP handlers: the public `/v1` API (API-key auth), the agent endpoints (host-token
//! auth), the proxy's routes endpoint (proxy token) and the OpenAPI document.
//!
//! Handlers validate input, call the store and shape answers; they never act on the data
//! plane themselves — the reconciler does, from what they record. Every error is an
//! [`ErrorBody`] with a 4xx/5xx status; internal details are logged, not returned.
//!
//! Every `/v1` handler first asks whether its caller's role and key scope allow the action
//! (`crate::access`); every mutating call is written to the audit log by one layer here.
//!
//! One module per resource (orgs, projects, members, keys, sessions, clusters, events,
//! metrics, backups, hosts, operations, audit, agents); this one holds what they share: errors, extractors,
//! validation, answer shaping, the audit layer, the router.

mod agents;
mod audit;
mod backups;
mod billing;
mod clusters;
mod data_keys;
mod endpoints;
mod evacuations;
mod events;
mod hosts;
mod invoices;
mod keys;
mod members;
mod metrics;
mod networks;
mod operations;
mod orgs;
mod projects;
mod sessions;
mod tls;
mod usage;

use crate::access::Action;
use crate::auth::{self, Caller};
use crate::store::{
    self, now, now_ms, ClusterRow, NetworkRow, OperationRow, PrivateEndpointRow, ProjectRow, StoreError,
};
use crate::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use highrise_api::Role;
use highrise_api::*;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

// ---------------------------------------------------------------------------------------
// Errors and extractors
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    fn too_many_failures(max: usize, wait: Duration) -> Self {
        let secs = wait.as_secs_f64().ceil() as u64;
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_authentications",
                format!(
                    "too many failed authentications from this address or for this key (at most {max} a minute); retry in {secs} s"
                ),
            )
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    fn not_supported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "not_supported", message)
    }
    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{} not found", what.into()))
    }
    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credentials: pass `Authorization: Bearer <key>`",
        )
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {e:#}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the control plane's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

fn store_err(what: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(what),
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        StoreError::Quota(q) => ApiError::new(StatusCode::CONFLICT, "quota_exceeded", q.to_string()),
        StoreError::Db(e) => ApiError::internal(what, e),
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A host whose agent has not sent a heartbeat for this long is reported unreachable
/// (agents beat twice a second).
const HOST_SILENCE_SECS: i64 = 10;

/// `Json<T>` whose rejections are JSON error bodies.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(v)) => v,
            Err(rej) => {
                let rej: JsonRejection = rej;
                return Err(ApiError::new(rej.status(), "invalid_request", rej.body_text()));
            }
        };
        // serde accepts a struct written as an array; the API does not.
        let mut value = value;
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "the request body must be a JSON object",
            ));
        }
        integral_numbers(&mut value);
        serde_json::from_value(value).map(Self).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("invalid request body: {e}"),
            )
        })
    }
}

/// Writes every number with no fractional part as an integer (`1.0` as `1`): JSON and
/// its schemas do not tell them apart, serde's integer fields do.
fn integral_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15)
            {
                *n = serde_json::Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// `Query<T>` whose rejections are JSON error bodies.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(rej) => {
                let rej: QueryRejection = rej;
                Err(ApiError::new(rej.status(), "invalid_request", rej.body_text()))
            }
        }
    }
}

/// `Path<T>` whose rejections are JSON error bodies.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(rej) => {
                let rej: PathRejection = rej;
                Err(ApiError::new(rej.status(), "invalid_request", rej.body_text()))
            }
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        use crate::limits::Subject;
        let token = bearer(parts);
        let slot = parts.extensions.get::<crate::audit::AuditSlot>().cloned();
        // Failures count against the source address and the key id named, if any.
        let mut subjects = Vec::with_capacity(2);
        if let Some(ConnectInfo(from)) = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
            subjects.push(Subject::Address(from.ip()));
        }
        let key_id = token.and_then(auth::key_id);
        if let Some(id) = key_id {
            subjects.push(Subject::Key(id.to_string()));
        }
        if let Some(slot) = &slot {
            slot.note(|n| n.actor = Some(key_id.map_or("anonymous".into(), |id| format!("unauthenticated key:{id}"))));
        }
        let now = std::time::Instant::now();
        state
            .auth_limits
            .check(&subjects, now)
            .map_err(|w| ApiError::too_many_failures(state.auth_limits.max(), w))?;
        let authenticated = match token {
            Some(token) => auth::authenticate(state, token).await.ok(),
            None => None,
        };
        let mut caller = authenticated.ok_or_else(|| {
            state.auth_limits.failed(&subjects, now);
            ApiError::unauthorized()
        })?;
        if let Some(slot) = &slot {
            slot.note(|n| {
                n.org_id = Some(caller.org_id.clone());
                n.actor = Some(caller.actor.clone());
            });
        }
        caller.audit = slot;
        Ok(caller)
    }
}

/// 403 unless the caller may do `action`.
fn require(caller: &Caller, action: Action) -> ApiResult<()> {
    if caller.may(action) {
        return Ok(());
    }
    let what = match action {
        Action::ReadClusters => "read clusters",
        Action::WriteClusters => "change clusters",
        Action::ReadProjects => "read projects",
        Action::WriteProjects => "manage projects",
        Action::ReadNetworks => "read networks",
        Action::WriteNetworks => "manage networks",
        Action::ReadMembers => "read members",
        Action::WriteMembers => "manage members",
        Action::ReadKeys => "read API keys",
        Action::WriteKeys => "manage API keys",
        Action::ReadAudit => "read the audit log",
        Action::ReadUsage => "read the org's usage and bills",
        Action::WriteBilling => "change the org's billing settings",
        Action::Operate => "operate the land",
    };
    let who = if caller.project_id.is_some() {
        format!("a {} key limited to one project", caller.role)
    } else {
        format!("the {} role", caller.role)
    };
    Err(ApiError::forbidden(format!("{who} may not {what}")))
}

// ---------------------------------------------------------------------------------------
// The audit layer
// ---------------------------------------------------------------------------------------

/// The source address of a request, as the audit log shows it.
fn source_of(ext: &axum::http::Extensions) -> String {
    ext.get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".into(), |ConnectInfo(a)| a.ip().to_string())
}

/// Records every mutating `/v1` call — who, what, on what, from where, with which status —
/// in the caller's org's audit chain (the operator's when the caller was not identified).
/// Sign-ins record themselves; agents and proxies are not tenants' actions.
async fn audited(State(state): State<Arc<AppState>>, mut req: Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    let path = req.uri().path().to_string();
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let own_record = path.starts_with("/v1/agent/")
        || path.starts_with("/v1/proxy/")
        || path == "/v1/login"
        || path == "/v1/invites/accept";
    if !mutating || own_record {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_string());
    let action = format!("{} {route}", req.method());
    let source = source_of(req.extensions());
    let slot = crate::audit::AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let resp = next.run(req).await;
    let note = slot.take();
    let org_id = match note.org_id {
        Some(o) => o,
        None => match state.store.list_operator_orgs().await {
            Ok(orgs) if !orgs.is_empty() => orgs[0].id.clone(),
            Ok(_) => return resp,
            Err(e) => {
                tracing::error!("find the operator org for an audit entry: {e:#}");
                return resp;
            }
        },
    };
    crate::audit::record(
        &state,
        &org_id,
        note.actor.as_deref().unwrap_or("anonymous"),
        &action,
        note.target.as_deref().unwrap_or(path.trim_start_matches("/v1/")),
        &source,
        resp.status().as_str(),
    )
    .await;
    resp
}

/// The caller's address, when the server knows it.
struct Peer(Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|ConnectInfo(a)| *a),
        ))
    }
}

/// An agent, authenticated by its host-scoped token (`Bearer <host_id>.<token>`).
struct HostCaller {
    host_id: String,
}

impl FromRequestParts<Arc<AppState>> for HostCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let (host_id, secret) = token.split_once('.').ok_or_else(ApiError::unauthorized)?;
        let host = match state.store.get_host(host_id).await {
            Ok(h) => h,
            Err(StoreError::NotFound) => return Err(ApiError::unauthorized()),
            Err(e) => return Err(ApiError::internal("look up host", e)),
        };
        match host.token_hash {
            Some(h) if auth::ct_eq(&h, &auth::hash_secret(secret)) => match host.status.as_str() {
                // Given up (silent too long, or lost with its cloud) and replaced: the
                // agent learns it the first time it is heard again and stops everything
                // it runs, so a host that comes back never serves a second primary.
                "failed" => Err(ApiError::new(
                    StatusCode::GONE,
                    "host_given_up",
                    "this host was given up and its instances replaced: stop every instance",
                )),
                _ => Ok(Self { host_id: host.id }),
            },
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// A proxy, authenticated by the proxies' shared token.
struct ProxyCaller {
    /// The cell whose proxies it is one of (a cell's token); `None`: the land's token,
    /// good for every cell.
    cell: Option<String>,
}

impl FromRequestParts<Arc<AppState>> for ProxyCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if auth::ct_eq(token, &state.cfg.proxy_token) {
            return Ok(Self { cell: None });
        }
        match auth::cell_of_proxy_token(&state.cfg.proxy_token, &state.cfg.cells, token) {
            Some(cell) => Ok(Self {
                cell: Some(cell.to_string()),
            }),
            None => Err(ApiError::unauthorized()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Names of orgs, projects and clusters: 1–63 of `[a-z0-9-]`, starting with a letter, not
/// ending with `-` (they become DNS labels and database names).
fn validate_name(kind: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(70).collect();
        Err(ApiError::invalid(format!(
            "invalid {kind} name {shown:?}: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'"
        )))
    }
}

/// Free-text labels (API key names): 1–64 characters, no control characters, not only
/// spaces.
fn validate_label(kind: &str, label: &str) -> ApiResult<()> {
    if !label.chars().any(|c| c != ' ' && !c.is_control())
        || label.chars().count() > 64
        || label.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "invalid {kind}: use 1-64 printable characters"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Pages of lists
// ---------------------------------------------------------------------------------------

/// The most items one page holds, and the number when `limit` is not given.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

/// `limit` and `cursor` of a list request.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// Items per page, 1–1000 (100 when omitted).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the previous page ended (its `x-next-cursor` header): the items after this
    /// key come next.
    #[param(max_length = 300)]
    cursor: Option<String>,
}

/// `limit` and `cursor` of a list paged in the store by creation time and id.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TimePageQuery {
    /// Items per page, 1–1000 (100 when omitted).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the previous page ended (its `x-next-cursor` header): `<unix seconds>.<id>`.
    #[param(pattern = "^[0-9]{1,18}\\.[a-z0-9_]{1,64}$")]
    cursor: Option<String>,
}

/// A page request, checked: how many, and after which item's key.
struct Page {
    limit: usize,
    after: Option<String>,
}

impl Page {
    fn new(limit: Option<u32>, cursor: Option<&str>) -> ApiResult<Self> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        if cursor.is_some_and(|c| c.chars().count() > 300) {
            return Err(bad_cursor());
        }
        Ok(Self {
            limit: limit as usize,
            after: cursor.map(str::to_string),
        })
    }

    /// The `(unix seconds, id)` a [`TimePageQuery`] cursor names.
    fn after_time_and_id(&self) -> ApiResult<Option<(i64, &str)>> {
        match &self.after {
            None => Ok(None),
            Some(a) => a
                .split_once('.')
                .and_then(|(t, id)| {
                    let ok = !id.is_empty() && id.len() <= 64 && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit());
                    Some((t.parse::<i64>().ok().filter(|_| ok)?, id))
                })
                .map(Some)
                .ok_or_else(bad_cursor),
        }
    }

    /// One page of `items`, which come sorted by `key` (unique per item).
    fn apply<T>(self, items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> String) -> Paged<T> {
        let mut out: Vec<T> = items
            .into_iter()
            .filter(|i| self.after.as_ref().is_none_or(|a| key(i).as_str() > a.as_str()))
            .take(self.limit + 1)
            .collect();
        self.paged(&mut out, key)
    }

    /// Trims `items` (at most `limit + 1` of them, in key order) to the page.
    fn paged<T>(&self, items: &mut Vec<T>, key: impl Fn(&T) -> String) -> Paged<T> {
        let next = if items.len() > self.limit {
            items.truncate(self.limit);
            items.last().map(&key)
        } else {
            None
        };
        Paged {
            items: std::mem::take(items),
            next,
        }
    }
}

impl PageQuery {
    fn page(&self) -> ApiResult<Page> {
        Page::new(self.limit, self.cursor.as_deref())
    }
}

impl TimePageQuery {
    fn page(&self) -> ApiResult<Page> {
        Page::new(self.limit, self.cursor.as_deref())
    }
}

fn bad_cursor() -> ApiError {
    ApiError::invalid("cursor: pass the x-next-cursor of the previous page")
}

/// The cursor key of an item paged by creation time and id.
fn time_key(created_at: i64, id: &str) -> String {
    format!("{created_at}.{id}")
}

/// A page of a list: the JSON array, and an `x-next-cursor` header when more follow.
struct Paged<T> {
    items: Vec<T>,
    next: Option<String>,
}

impl<T: serde::Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut r = Json(self.items).into_response();
        if let Some(next) = self.next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
            r.headers_mut().insert("x-next-cursor", next);
        }
        r
    }
}

// ---------------------------------------------------------------------------------------
// Shaping answers
// ---------------------------------------------------------------------------------------

fn operation_view(o: &OperationRow) -> Operation {
    Operation {
        id: o.id.clone(),
        kind: o.kind.clone(),
        status: match o.status.as_str() {
            "succeeded" => OperationStatus::Succeeded,
            "failed" => OperationStatus::Failed,
            "cancelled" => OperationStatus::Cancelled,
            _ => OperationStatus::Running,
        },
        cluster_id: o.cluster_id.clone(),
        error: o.error.clone(),
        created_at: o.created_at,
        updated_at: o.updated_at,
        progress: o
            .progress_json
            .as_deref()
            .filter(|_| o.status == "running")
            .and_then(|j| serde_json::from_str::<highrise_planner::moves::Progress>(j).ok())
            .map(|p| highrise_api::OperationProgress {
                step: p.step,
                steps: p.steps,
                doing: p.doing,
            }),
        outcome: o.outcome.clone(),
    }
}

/// The cluster's connection URI: every proxy (libpq tries them in order, so a client gets
/// through while any one answers; each routes to the same primary), the database, and the
/// endpoint in `options`.
fn connection_uri(state: &AppState, c: &ClusterRow, password: Option<&str>) -> String {
    let auth = user_info(c, password);
    format!(
        "postgresql://{auth}@{}/{}?options=endpoint%3D{}",
        proxies_of(state, c).join(","),
        c.db_name,
        c.endpoint
    )
}

/// The connection URI that verifies the proxy (`sslmode=verify-full`): the host name
/// `<endpoint>.<domain>` for each proxy (what its certificate names and what libpq sends
/// as SNI, so no routing option is needed) and, when the proxies have IP addresses,
/// `hostaddr` for where to connect (no DNS needed). `None` without a CA.
fn verified_uri(state: &AppState, c: &ClusterRow, password: Option<&str>) -> Option<String> {
    verified_uri_to(state, c, &c.endpoint, proxies_of(state, c), password)
}

/// The proxies that serve the cluster: its org's cell's, or the land's shared ones.
fn proxies_of<'a>(state: &'a AppState, c: &ClusterRow) -> &'a [String] {
    highrise_planner::cells::proxy_cell(&state.cfg.cells, &c.cell)
        .and_then(|cell| state.cfg.cell_proxy_addrs.get(cell))
        .unwrap_or(&state.cfg.proxy_public_addrs)
}

/// The verifying URI of `endpoint` served at `addrs` (`host:port` each).
fn verified_uri_to(
    state: &AppState,
    c: &ClusterRow,
    endpoint: &str,
    addrs: &[String],
    password: Option<&str>,
) -> Option<String> {
    state.cfg.ca.as_ref()?;
    let name = format!("{endpoint}.{}", state.cfg.tls_domain);
    let hosts: Vec<String> = addrs
        .iter()
        .map(|a| match a.rsplit_once(':') {
            Some((_, port)) => format!("{name}:{port}"),
            None => name.clone(),
        })
        .collect();
    let ips: Option<Vec<String>> = addrs
        .iter()
        .map(|a| a.parse::<std::net::SocketAddr>().ok().map(|sa| sa.ip().to_string()))
        .collect();
    let hostaddr = ips.map_or_else(String::new, |ips| format!("hostaddr={}&", ips.join(",")));
    Some(format!(
        "postgresql://{}@{}/{}?{hostaddr}sslmode=verify-full",
        user_info(c, password),
        hosts.join(","),
        c.db_name
    ))
}

/// The URI's user part: the owner, and its password when given.
fn user_info(c: &ClusterRow, password: Option<&str>) -> String {
    match password {
        Some(p) => format!("{}:{p}", c.owner_name),
        None => c.owner_name.clone(),
    }
}

async fn cluster_view(state: &AppState, c: &ClusterRow) -> ApiResult<Cluster> {
    let mut views = cluster_views(state, std::slice::from_ref(c)).await?;
    views
        .pop()
        .ok_or_else(|| ApiError::internal("shape a cluster", "no view made"))
}

/// The views of several clusters, with two queries for all of them (members, hosts).
async fn cluster_views(state: &AppState, clusters: &[ClusterRow]) -> ApiResult<Vec<Cluster>> {
    let ids: Vec<String> = clusters.iter().map(|c| c.id.clone()).collect();
    let instances = state
        .store
        .instances_of_clusters(&ids)
        .await
        .map_err(store_err("cluster instances"))?;
    let mut host_ids: Vec<String> = instances.iter().map(|i| i.host_id.clone()).collect();
    host_ids.sort();
    host_ids.dedup();
    let hosts: std::collections::HashMap<String, store::HostRow> = state
        .store
        .hosts_by_ids(&host_ids)
        .await
        .map_err(store_err("hosts"))?
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    let pools = state.provider.pools();
    let now = now_ms();
    Ok(clusters
        .iter()
        .map(|c| {
            let members: Vec<&store::InstanceRow> = instances.iter().filter(|i| i.cluster_id == c.id).collect();
            view_of(state, c, &members, &hosts, &pools, now)
        })
        .collect())
}

/// What the API shows of a cluster, from its row, its members and their hosts.
fn view_of(
    state: &AppState,
    c: &ClusterRow,
    instances: &[&store::InstanceRow],
    hosts: &std::collections::HashMap<String, store::HostRow>,
    pools: &[highrise_provider::market::Pool],
    now_ms: i64,
) -> Cluster {
    let primary_lsn = instances
        .iter()
        .find(|i| !i.deleting && i.role == "primary")
        .and_then(|i| i.lsn);
    let mut members = Vec::new();
    for i in instances.iter().filter(|i| !i.deleting) {
        let host = hosts.get(&i.host_id);
        let (cloud, zone, silent) = match host {
            Some(h) => {
                let silent =
                    h.last_beat_ms.is_none_or(|t| now_ms - t > HOST_SILENCE_SECS * 1000) && h.status != "launching";
                (h.cloud.clone(), h.zone.clone(), silent)
            }
            None => (String::new(), String::new(), true),
        };
        let market = host.map(|h| h.market.clone()).unwrap_or_default();
        let pool = host.map(|h| h.pool()).unwrap_or_default();
        // The member's share of its host's price.
        let price_hour = pools.iter().find(|p| p.id.to_string() == pool).map(|p| {
            let host_price = if market == "spot" {
                p.spot_hour
            } else {
                p.on_demand_hour
            };
            let share = host_price * rust_decimal::Decimal::from(i.slots)
                / rust_decimal::Decimal::from(highrise_planner::HOST_SLOTS);
            share.round_dp(4).to_string()
        });
        members.push(Member {
            instance_id: i.id.clone(),
            host_id: i.host_id.clone(),
            role: i.role.clone(),
            // What the agent last said is stale once its host has gone quiet.
            state: if silent {
                "unreachable".into()
            } else {
                i.observed.clone()
            },
            cloud,
            zone,
            market,
            pool,
            price_hour,
            notice_deadline: host.and_then(|h| h.notice_deadline),
            addr: i.addr.clone(),
            lag_bytes: match (i.role.as_str(), primary_lsn, i.lsn) {
                ("standby", Some(p), Some(s)) => Some(p.saturating_sub(s) as u64),
                _ => None,
            },
            storage: i.storage,
            seed: i.seed.clone(),
        });
    }
    let status = if c.deleted_at.is_some() {
        ClusterStatus::Deleting
    } else {
        match members.iter().find(|m| m.role == "primary").map(|m| m.state.as_str()) {
            Some("running") => ClusterStatus::Running,
            // Stopped: drained for a switchover that has not promoted its target yet.
            Some("unhealthy") | Some("failed") | Some("unreachable") | Some("stopped") => ClusterStatus::Degraded,
            _ => ClusterStatus::Creating,
        }
    };
    let storage_used_bytes = instances
        .iter()
        .find(|i| !i.deleting && i.role == "primary")
        .and_then(|i| i.storage)
        .map(|s| s.data_bytes + s.wal_bytes);
    Cluster {
        storage_limit_bytes: highrise_planner::plan_storage_bytes(&c.plan).unwrap_or(0),
        storage_used_bytes,
        storage_level: instances
            .iter()
            .find(|i| !i.deleting && i.role == "primary")
            .and_then(|i| i.storage)
            .map_or(StorageLevel::Normal, |s| s.level),
        storage_autoscale_max_bytes: (c.autoscale_max_bytes > 0).then_some(c.autoscale_max_bytes as u64),
        storage_disk_bytes: (c.disk_bytes > 0).then_some(c.disk_bytes as u64),
        backup_copies: u32::try_from(c.backup_copies).unwrap_or(1),
        copy_cloud: state.cfg.storage.copy_cloud(&c.cloud, c.backup_copies),
        copy_lag_bytes: c.copy_lag_bytes.map(|b| b.max(0) as u64),
        on_cloud_loss: match c.on_cloud_loss.as_str() {
            "wait" => highrise_api::OnCloudLoss::Wait,
            _ => highrise_api::OnCloudLoss::Restore,
        },
        id: c.id.clone(),
        name: c.name.clone(),
        org_id: c.org_id.clone(),
        project: c.project_name.clone(),
        cloud: c.cloud.clone(),
        region: c.region.clone(),
        plan: c.plan.clone(),
        pg_version: u32::try_from(c.pg_version).unwrap_or(0),
        replicas: u32::try_from(c.replicas).unwrap_or(0),
        spot: c.spot,
        spread_clouds: c.spread_clouds,
        avoid_cloud: c.avoid_cloud.clone(),
        durability: c.durability.clone(),
        backup_policy: highrise_api::BackupPolicy {
            interval_seconds: c.backup_interval,
            retain_count: u32::try_from(c.backup_retain_count).unwrap_or(1),
            retain_days: u32::try_from(c.backup_retain_days).unwrap_or(0),
        },
        archive: instances
            .iter()
            .find(|i| !i.deleting && i.role == "primary" && (i.archived_lsn.is_some() || i.archive_error.is_some()))
            .map(|i| highrise_api::ArchiveState {
                archived_lsn: i.archived_lsn.map(|l| highrise_backup::fmt_lsn(l as u64)),
                lag_bytes: match (i.lsn, i.archived_lsn) {
                    (Some(l), Some(a)) => Some(l.saturating_sub(a).max(0) as u64),
                    _ => None,
                },
                error: i.archive_error.clone(),
            }),
        status,
        endpoint: c.endpoint.clone(),
        public: c.public_endpoint,
        allowed_cidrs: c.allowed_cidrs.clone(),
        connection_limit: u32::try_from(c.connection_limit).ok().filter(|&l| l > 0),
        term: c.term,
        database: c.db_name.clone(),
        user: c.owner_name.clone(),
        connection_uri: connection_uri(state, c, None),
        verified_uri: verified_uri(state, c, None),
        members,
        created_at: c.created_at,
    }
}

// ---------------------------------------------------------------------------------------
// Router and OpenAPI
// ---------------------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(title = "Highrise control plane API", description = "Cloud-neutral PostgreSQL as a service"),
    paths(
        orgs::create_org, orgs::get_quotas, orgs::org_quotas, orgs::set_quotas, projects::list_projects, projects::create_project, projects::delete_project,
        keys::list_api_keys, keys::create_api_key, keys::revoke_api_key, members::list_members,
        members::invite_member, members::update_member, members::remove_member, sessions::login,
        sessions::accept_invite, sessions::me, sessions::logout, audit::list_audit, audit::verify_audit, clusters::list_clusters, clusters::create_cluster, clusters::get_cluster,
        clusters::update_cluster, clusters::delete_cluster, events::cluster_events, metrics::cluster_metrics, clusters::switchover,
        networks::list_networks, networks::create_network, networks::delete_network,
        data_keys::list_data_keys, data_keys::rotate_data_key, data_keys::retire_data_keys, orgs::delete_org,
        endpoints::list_endpoints, endpoints::create_endpoint, endpoints::delete_endpoint,
        clusters::move_cluster,
        clusters::cancel_move,
        hosts::list_hosts, hosts::list_clouds, evacuations::evacuate_cloud, evacuations::get_evacuation,
        evacuations::pause_evacuation, evacuations::resume_evacuation, operations::list_operations, operations::get_operation, agents::agent_register,
        agents::agent_desired, agents::agent_heartbeat, agents::proxy_routes, agents::proxy_usage,
        backups::list_backups, backups::list_ledger, backups::create_backup, backups::verify_backup,
        backups::verify_any_backup, tls::ca_certificate, usage::get_usage,
        invoices::list_invoices, invoices::get_invoice, invoices::invoice_pdf, invoices::invoice_html, billing::get_billing, billing::set_billing,
        billing::set_commitment, billing::grant_credit, billing::margin_report, billing::link_marketplace, billing::marketplace_records
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        // What every handler may answer besides its own responses: a deadline passed, and
        // (API-key endpoints) too many failed authentications.
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Public: asks for no credentials, so none can be wrong or short of a role.
            if path == "/v1/tls/ca" {
                continue;
            }
            let keyed = !path.starts_with("/v1/agent/") && !path.starts_with("/v1/proxy/");
            let has_path_params = path.contains('{');
            for (op, mutates) in [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ] {
                let Some(op) = op else { continue };
                let has_body = op.request_body.is_some();
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, what: &str| {
                    responses.entry(code.into()).or_insert_with(|| error(what).into());
                };
                add("503", "The request passed its deadline; retry it.");
                add("401", "Missing or invalid credentials.");
                if keyed {
                    add(
                        "429",
                        "Too many failed authentications from this address or for this key; see Retry-After.",
                    );
                    add("403", "The caller's role or key scope does not allow this.");
                }
                if has_params || has_body {
                    add("400", "A parameter or field is invalid.");
                }
                if has_path_params || has_body {
                    add(
                        "404",
                        "Not found (or not the caller's), or a thing the request names is not.",
                    );
                }
                if keyed && mutates {
                    add(
                        "409",
                        "It conflicts with the current state, or passes a quota (`quota_exceeded`).",
                    );
                }
                if has_body {
                    add("415", "The body is not `application/json`.");
                    add("422", "The body is not a JSON object of the documented shape.");
                }
            }
        }
    }
}

/// The OpenAPI document: generated from the handlers and the wire types, plus the rules of
/// a request body that a derive cannot state (so that a request the document calls valid
/// is one the API takes).
fn openapi_document() -> serde_json::Value {
    let mut doc = match serde_json::to_value(ApiDoc::openapi()) {
        Ok(d) => d,
        Err(e) => return serde_json::json!({ "error": format!("serialize the OpenAPI document: {e}") }),
    };
    // A single-node spot cluster needs `durability: sync` (`clusters::check_spot_safety`).
    if let Some(s) = doc.pointer_mut("/components/schemas/CreateCluster") {
        s["if"] = serde_json::json!({ "properties": { "spot": { "const": true } }, "required": ["spot"] });
        s["then"] = serde_json::json!({ "anyOf": [
            { "properties": { "replicas": { "type": "integer", "minimum": 1 } }, "required": ["replicas"] },
            { "properties": { "durability": { "const": "sync" } }, "required": ["durability"] }
        ] });
    }
    // An allow-list entry: what `clusters::allow_list` takes (it takes more: any IPv6
    // spelling; the document names the common ones, and everything it names is taken).
    for schema in ["CreateCluster", "UpdateCluster"] {
        if let Some(items) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/allowed_cidrs/items")) {
            *items = serde_json::json!({ "type": "string", "pattern": format!("^({})$", clusters::CIDR_PATTERN) });
        }
    }
    // A network's range and an endpoint's address: what `networks` takes.
    let patterns = [
        ("CreateNetwork", "cidr", networks::network_pattern()),
        (
            "CreatePrivateEndpoint",
            "address",
            networks::ADDRESS_PATTERN.to_string(),
        ),
    ];
    for (schema, field, pattern) in patterns {
        if let Some(serde_json::Value::Object(prop)) =
            doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
        {
            prop.insert("pattern".into(), format!("^({pattern})$").into());
        }
    }
    doc
}

/// The longest any request may take; a handler still busy then is dropped (a store
/// transaction in it rolls back) and the caller told to retry.
const REQUEST_LIMIT: Duration = Duration::from_secs(15);

/// The longest a long-poll may take (its `wait` is at most 60 s).
const LONG_POLL_LIMIT: Duration = Duration::from_secs(75);

/// The longest a backup verification may take: it reads the whole backup back.
const VERIFY_LIMIT: Duration = Duration::from_secs(3600);

/// Answers `503 timeout` when the request takes longer than `limit`.
async fn within(limit: Duration, req: Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s; retry it", limit.as_secs()),
        )
        .into_response(),
    }
}

/// The API and, beside it at `/console`, the console built on it.
pub fn router(state: Arc<AppState>) -> Router {
    let api = api_router(state.clone());
    api.clone().merge(crate::console::router(state, api))
}

fn api_router(state: Arc<AppState>) -> Router {
    let long_polls = Router::new()
        .route("/v1/agent/desired", get(agents::agent_desired))
        .route("/v1/proxy/routes", get(agents::proxy_routes))
        .route_layer(axum::middleware::from_fn(|req, next| {
            within(LONG_POLL_LIMIT, req, next)
        }));
    let verify = Router::new()
        .route(
            "/v1/clusters/{cluster}/backups/{id}/verify",
            post(backups::verify_backup),
        )
        .route("/v1/backups/{id}/verify", post(backups::verify_any_backup))
        .route_layer(axum::middleware::from_fn(|req, next| within(VERIFY_LIMIT, req, next)));
    Router::new()
        .route("/v1/openapi.json", get(|| async { Json(openapi_document()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/tls/ca", get(tls::ca_certificate))
        .route("/v1/orgs", post(orgs::create_org))
        .route("/v1/orgs/{org}", axum::routing::delete(orgs::delete_org))
        .route("/v1/data-keys", get(data_keys::list_data_keys))
        .route("/v1/data-keys/rotate", post(data_keys::rotate_data_key))
        .route("/v1/data-keys/retire", post(data_keys::retire_data_keys))
        .route("/v1/usage", get(usage::get_usage))
        .route("/v1/invoices", get(invoices::list_invoices))
        .route("/v1/invoices/{month}", get(invoices::get_invoice))
        .route("/v1/invoices/{month}/pdf", get(invoices::invoice_pdf))
        .route("/v1/invoices/{month}/html", get(invoices::invoice_html))
        .route("/v1/billing", get(billing::get_billing).put(billing::set_billing))
        .route("/v1/orgs/{org}/commitment", put(billing::set_commitment))
        .route("/v1/orgs/{org}/credits", post(billing::grant_credit))
        .route("/v1/orgs/{org}/margin", get(billing::margin_report))
        .route("/v1/orgs/{org}/marketplace/records", get(billing::marketplace_records))
        .route("/v1/orgs/{org}/marketplace", put(billing::link_marketplace))
        .route("/v1/orgs/{org}/quotas", get(orgs::org_quotas).put(orgs::set_quotas))
        .route("/v1/quotas", get(orgs::get_quotas))
        .route(
            "/v1/projects",
            get(projects::list_projects).post(projects::create_project),
        )
        .route(
            "/v1/projects/{project}",
            axum::routing::delete(projects::delete_project),
        )
        .route("/v1/api-keys", get(keys::list_api_keys).post(keys::create_api_key))
        .route("/v1/api-keys/{id}", axum::routing::delete(keys::revoke_api_key))
        .route("/v1/members", get(members::list_members).post(members::invite_member))
        .route(
            "/v1/members/{user}",
            axum::routing::patch(members::update_member).delete(members::remove_member),
        )
        .route("/v1/login", post(sessions::login))
        .route("/v1/me", get(sessions::me))
        .route("/v1/logout", post(sessions::logout))
        .route("/v1/invites/accept", post(sessions::accept_invite))
        .route("/v1/audit", get(audit::list_audit))
        .route("/v1/audit/verify", post(audit::verify_audit))
        .route(
            "/v1/clusters",
            get(clusters::list_clusters).post(clusters::create_cluster),
        )
        .route(
            "/v1/clusters/{cluster}",
            get(clusters::get_cluster)
                .delete(clusters::delete_cluster)
                .patch(clusters::update_cluster),
        )
        .route("/v1/clusters/{cluster}/events", get(events::cluster_events))
        .route("/v1/clusters/{cluster}/metrics", get(metrics::cluster_metrics))
        .route(
            "/v1/clusters/{cluster}/endpoints",
            get(endpoints::list_endpoints).post(endpoints::create_endpoint),
        )
        .route(
            "/v1/clusters/{cluster}/endpoints/{endpoint}",
            axum::routing::delete(endpoints::delete_endpoint),
        )
        .route(
            "/v1/networks",
            get(networks::list_networks).post(networks::create_network),
        )
        .route(
            "/v1/networks/{network}",
            axum::routing::delete(networks::delete_network),
        )
        .route("/v1/clusters/{cluster}/switchover", post(clusters::switchover))
        .route(
            "/v1/clusters/{cluster}/move",
            post(clusters::move_cluster).delete(clusters::cancel_move),
        )
        .route(
            "/v1/clusters/{cluster}/backups",
            get(backups::list_backups).post(backups::create_backup),
        )
        .route("/v1/backups", get(backups::list_ledger))
        .route("/v1/hosts", get(hosts::list_hosts))
        .route("/v1/clouds", get(hosts::list_clouds))
        .route("/v1/clouds/{cloud}/evacuate", post(evacuations::evacuate_cloud))
        .route("/v1/evacuations/{evacuation}", get(evacuations::get_evacuation))
        .route(
            "/v1/evacuations/{evacuation}/pause",
            post(evacuations::pause_evacuation),
        )
        .route(
            "/v1/evacuations/{evacuation}/resume",
            post(evacuations::resume_evacuation),
        )
        .route("/v1/operations", get(operations::list_operations))
        .route("/v1/operations/{id}", get(operations::get_operation))
        .route("/v1/agent/register", post(agents::agent_register))
        .route("/v1/agent/heartbeat", post(agents::agent_heartbeat))
        .route("/v1/proxy/usage", post(agents::proxy_usage))
        .route_layer(axum::middleware::from_fn(|req, next| within(REQUEST_LIMIT, req, next)))
        .merge(long_polls)
        .merge(verify)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), audited))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Finding a caller's cluster (by id or name, in a project)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ProjectQuery {
    /// Project name (`default` when omitted).
    project: Option<String>,
}

/// A list under a cluster: its project, and a page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ClusterPageQuery {
    /// Project name (`default` when omitted).
    project: Option<String>,
    /// Items per page, 1–1000 (100 when omitted).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the previous page ended (its `x-next-cursor` header): the items after this
    /// key come next.
    #[param(max_length = 300)]
    cursor: Option<String>,
}

/// The project a request names (`default` when it names none — a project key's own
/// project), within the caller's reach: another project than a project key's is not found.
async fn resolve_project(state: &AppState, caller: &Caller, name: Option<&str>) -> ApiResult<ProjectRow> {
    let p = match (name, &caller.project_id) {
        (None, Some(scope)) => state.store.project(&caller.org_id, scope).await,
        (name, _) => {
            let name = name.unwrap_or("default");
            if validate_name("project", name).is_err() && !name.starts_with("prj_") {
                // No project can have that name or id.
                return Err(ApiError::not_found("project"));
            }
            state.store.project_by_name(&caller.org_id, name).await
        }
    };
    let shown: String = name.unwrap_or("default").chars().take(70).collect();
    match p {
        Ok(p) if caller.project_id.as_ref().is_none_or(|s| s == &p.id) => Ok(p),
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::not_found(format!("project {shown:?}"))),
        Err(e) => Err(store_err("project")(e)),
    }
}

/// A live cluster of the caller's org by id, or by name within `project` (`default`); a
/// project key finds only its project's. A cluster being deleted is gone for the API
/// (its deletion is followed through its operation; its backups stay listed).
async fn find_cluster(
    state: &AppState,
    caller: &Caller,
    project: Option<&str>,
    cluster: &str,
) -> ApiResult<ClusterRow> {
    let project = resolve_project(state, caller, project).await?;
    let c = state
        .store
        .find_cluster(&caller.org_id, &project.id, cluster)
        .await
        .map_err(store_err("cluster"))?;
    if c.deleted_at.is_some() || caller.project_id.as_ref().is_some_and(|s| s != &c.project_id) {
        return Err(ApiError::not_found("cluster"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_request_that_takes_too_long_is_answered_503_timeout() {
        let app: Router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/quick", get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn(|req, next| {
                within(Duration::from_millis(200), req, next)
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let slow = tokio::time::timeout(Duration::from_secs(10), get("/slow"))
            .await
            .expect("answered");
        assert!(slow.starts_with("HTTP/1.1 503"), "{slow}");
        assert!(slow.contains("\"timeout\""), "{slow}");
        assert!(get("/quick").await.starts_with("HTTP/1.1 200"));
    }
}
