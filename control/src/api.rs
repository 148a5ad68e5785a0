//! HTTP handlers: the public `/v1` API (API-key auth), the agent endpoints (host-token
//! auth), the proxy's routes endpoint (proxy token) and the OpenAPI document.
//!
//! Handlers validate input, call the store and shape answers; they never act on the data
//! plane themselves — the reconciler does, from what they record. Every error is an
//! [`ErrorBody`] with a 4xx/5xx status; internal details are logged, not returned.
//!
//! One module per resource (orgs, clusters, backups, hosts, operations, agents); this one
//! holds what they share: errors, extractors, validation, answer shaping, the router.

mod agents;
mod backups;
mod clusters;
mod hosts;
mod operations;
mod orgs;

use crate::auth::{self, Caller};
use crate::store::{self, now, now_ms, ClusterRow, OperationRow, ProjectRow, StoreError};
use crate::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
    fn too_many_failures(wait: Duration) -> Self {
        let secs = wait.as_secs_f64().ceil() as u64;
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_authentications",
                format!(
                    "too many failed authentications from this address or for this key (at most {} a minute); retry in {secs} s",
                    crate::limits::MAX_FAILURES
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
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "the request body must be a JSON object",
            ));
        }
        serde_json::from_value(value).map(Self).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("invalid request body: {e}"),
            )
        })
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
        // Failures count against the source address and the key id named, if any.
        let mut subjects = Vec::with_capacity(2);
        if let Some(ConnectInfo(from)) = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
            subjects.push(Subject::Address(from.ip()));
        }
        if let Some(id) = token.and_then(auth::key_id) {
            subjects.push(Subject::Key(id.to_string()));
        }
        let now = std::time::Instant::now();
        state
            .auth_limits
            .check(&subjects, now)
            .map_err(ApiError::too_many_failures)?;
        let authenticated = match token {
            Some(token) => auth::authenticate(state, token).await.ok(),
            None => None,
        };
        authenticated.ok_or_else(|| {
            state.auth_limits.failed(&subjects, now);
            ApiError::unauthorized()
        })
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
            Some(h) if host.status != "failed" && auth::ct_eq(&h, &auth::hash_secret(secret)) => {
                Ok(Self { host_id: host.id })
            }
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// A proxy, authenticated by the proxies' shared token.
struct ProxyCaller;

impl FromRequestParts<Arc<AppState>> for ProxyCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match bearer(parts) {
            Some(t) if auth::ct_eq(t, &state.cfg.proxy_token) => Ok(Self),
            _ => Err(ApiError::unauthorized()),
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

/// Free-text labels (API key names): 1–64 printable characters.
fn validate_label(kind: &str, label: &str) -> ApiResult<()> {
    if label.trim().is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "invalid {kind}: use 1-64 printable characters"
        )));
    }
    Ok(())
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
            _ => OperationStatus::Running,
        },
        cluster_id: o.cluster_id.clone(),
        error: o.error.clone(),
        created_at: o.created_at,
        updated_at: o.updated_at,
    }
}

fn connection_uri(state: &AppState, c: &ClusterRow, password: Option<&str>) -> String {
    let auth = match password {
        Some(p) => format!("{}:{p}", c.owner_name),
        None => c.owner_name.clone(),
    };
    format!(
        "postgresql://{auth}@{}/{}?options=endpoint%3D{}",
        state.cfg.proxy_public_addr, c.db_name, c.endpoint
    )
}

async fn cluster_view(state: &AppState, c: &ClusterRow) -> ApiResult<Cluster> {
    let instances = state
        .store
        .instances_of_cluster(&c.id)
        .await
        .map_err(store_err("cluster instances"))?;
    let primary_lsn = instances
        .iter()
        .find(|i| !i.deleting && i.role == "primary")
        .and_then(|i| i.lsn);
    let mut members = Vec::new();
    let pools = state.provider.pools();
    for i in instances.iter().filter(|i| !i.deleting) {
        let host = state.store.get_host(&i.host_id).await.ok();
        let (cloud, zone, silent) = match &host {
            Some(h) => {
                let silent =
                    h.last_beat_ms.is_none_or(|t| now_ms() - t > HOST_SILENCE_SECS * 1000) && h.status != "launching";
                (h.cloud.clone(), h.zone.clone(), silent)
            }
            None => (String::new(), String::new(), true),
        };
        let market = host.as_ref().map(|h| h.market.clone()).unwrap_or_default();
        let pool = host.as_ref().map(|h| h.pool()).unwrap_or_default();
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
            notice_deadline: host.as_ref().and_then(|h| h.notice_deadline),
            addr: i.addr.clone(),
            lag_bytes: match (i.role.as_str(), primary_lsn, i.lsn) {
                ("standby", Some(p), Some(s)) => Some(p.saturating_sub(s) as u64),
                _ => None,
            },
        });
    }
    let status = if c.deleted_at.is_some() {
        ClusterStatus::Deleting
    } else {
        match members.iter().find(|m| m.role == "primary").map(|m| m.state.as_str()) {
            Some("running") => ClusterStatus::Running,
            Some("unhealthy") | Some("failed") | Some("unreachable") => ClusterStatus::Degraded,
            _ => ClusterStatus::Creating,
        }
    };
    Ok(Cluster {
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
        term: c.term,
        database: c.db_name.clone(),
        user: c.owner_name.clone(),
        connection_uri: connection_uri(state, c, None),
        members,
        created_at: c.created_at,
    })
}

// ---------------------------------------------------------------------------------------
// Router and OpenAPI
// ---------------------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(title = "Highrise control plane API", description = "Cloud-neutral PostgreSQL as a service"),
    paths(
        orgs::create_org, orgs::list_projects, orgs::create_project, orgs::list_api_keys, orgs::create_api_key,
        orgs::revoke_api_key, clusters::list_clusters, clusters::create_cluster, clusters::get_cluster,
        clusters::update_cluster, clusters::delete_cluster, clusters::cluster_events, clusters::switchover,
        hosts::list_hosts, operations::list_operations, operations::get_operation, agents::agent_register,
        agents::agent_desired, agents::agent_heartbeat, agents::proxy_routes,
        backups::list_backups, backups::create_backup, backups::verify_backup
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
            let keyed = !path.starts_with("/v1/agent/") && !path.starts_with("/v1/proxy/");
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut op.responses.responses;
                responses
                    .entry("503".into())
                    .or_insert_with(|| error("The request passed its deadline; retry it.").into());
                if keyed {
                    responses.entry("429".into()).or_insert_with(|| {
                        error("Too many failed authentications from this address or for this key; see Retry-After.")
                            .into()
                    });
                }
            }
        }
    }
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

pub fn router(state: Arc<AppState>) -> Router {
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
        .route_layer(axum::middleware::from_fn(|req, next| within(VERIFY_LIMIT, req, next)));
    Router::new()
        .route("/v1/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/orgs", post(orgs::create_org))
        .route("/v1/projects", get(orgs::list_projects).post(orgs::create_project))
        .route("/v1/api-keys", get(orgs::list_api_keys).post(orgs::create_api_key))
        .route("/v1/api-keys/{id}", axum::routing::delete(orgs::revoke_api_key))
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
        .route("/v1/clusters/{cluster}/events", get(clusters::cluster_events))
        .route("/v1/clusters/{cluster}/switchover", post(clusters::switchover))
        .route(
            "/v1/clusters/{cluster}/backups",
            get(backups::list_backups).post(backups::create_backup),
        )
        .route("/v1/hosts", get(hosts::list_hosts))
        .route("/v1/operations", get(operations::list_operations))
        .route("/v1/operations/{id}", get(operations::get_operation))
        .route("/v1/agent/register", post(agents::agent_register))
        .route("/v1/agent/heartbeat", post(agents::agent_heartbeat))
        .route_layer(axum::middleware::from_fn(|req, next| within(REQUEST_LIMIT, req, next)))
        .merge(long_polls)
        .merge(verify)
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
#[serde(deny_unknown_fields)]
struct ProjectQuery {
    /// Project name (`default` when omitted).
    project: Option<String>,
}

async fn resolve_project(state: &AppState, caller: &Caller, name: Option<&str>) -> ApiResult<ProjectRow> {
    let name = name.unwrap_or("default");
    validate_name("project", name)?;
    state
        .store
        .project_by_name(&caller.org_id, name)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("project {name:?}")),
            e => store_err("project")(e),
        })
}

/// A cluster of the caller's org by id, or by name within `project` (`default`).
async fn find_cluster(
    state: &AppState,
    caller: &Caller,
    project: Option<&str>,
    cluster: &str,
) -> ApiResult<ClusterRow> {
    let project = resolve_project(state, caller, project).await?;
    state
        .store
        .find_cluster(&caller.org_id, &project.id, cluster)
        .await
        .map_err(store_err("cluster"))
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
