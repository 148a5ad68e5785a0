//! HTTP handlers: the public `/v1` API (API-key auth), the agent endpoints (host-token
//! auth), the proxy's routes endpoint (proxy token) and the OpenAPI document.
//!
//! Handlers validate input, call the store and shape answers; they never act on the data
//! plane themselves — the reconciler does, from what they record. Every error is an
//! [`ErrorBody`] with a 4xx/5xx status; internal details are logged, not returned.

mod backups;

use crate::auth::{self, Caller};
use crate::store::{self, now, now_ms, ClusterRow, OperationRow, ProjectRow, StoreError};
use crate::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
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
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
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
        (self.status, Json(body)).into_response()
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
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        auth::authenticate(state, token)
            .await
            .map_err(|_| ApiError::unauthorized())
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
        create_org, list_projects, create_project, list_api_keys, create_api_key, revoke_api_key,
        list_clusters, create_cluster, get_cluster, update_cluster, delete_cluster, cluster_events, switchover, list_hosts, list_operations,
        get_operation, agent_register, agent_desired, agent_heartbeat, proxy_routes,
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
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/orgs", post(create_org))
        .route("/v1/projects", get(list_projects).post(create_project))
        .route("/v1/api-keys", get(list_api_keys).post(create_api_key))
        .route("/v1/api-keys/{id}", axum::routing::delete(revoke_api_key))
        .route("/v1/clusters", get(list_clusters).post(create_cluster))
        .route(
            "/v1/clusters/{cluster}",
            get(get_cluster).delete(delete_cluster).patch(update_cluster),
        )
        .route("/v1/clusters/{cluster}/events", get(cluster_events))
        .route("/v1/clusters/{cluster}/switchover", post(switchover))
        .route(
            "/v1/clusters/{cluster}/backups",
            get(backups::list_backups).post(backups::create_backup),
        )
        .route(
            "/v1/clusters/{cluster}/backups/{id}/verify",
            post(backups::verify_backup),
        )
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/operations", get(list_operations))
        .route("/v1/operations/{id}", get(get_operation))
        .route("/v1/agent/register", post(agent_register))
        .route("/v1/agent/desired", get(agent_desired))
        .route("/v1/agent/heartbeat", post(agent_heartbeat))
        .route("/v1/proxy/routes", get(proxy_routes))
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
// Orgs, projects, keys
// ---------------------------------------------------------------------------------------

/// Create an org with its `default` project and first admin key (operator keys only).
#[utoipa::path(post, path = "/v1/orgs", request_body = CreateOrg,
    responses((status = 201, body = CreatedOrg), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_org(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateOrg>,
) -> ApiResult<(StatusCode, Json<CreatedOrg>)> {
    if !caller.operator {
        return Err(ApiError::forbidden("only the operator may create orgs"));
    }
    validate_name("org", &req.name)?;
    let org = store::OrgRow {
        id: auth::new_id("org"),
        name: req.name,
        operator: false,
        created_at: now(),
    };
    let (key, secret) = auth::make_key(&org.id, "admin");
    state
        .store
        .create_org(&org, &auth::new_id("prj"), &key)
        .await
        .map_err(store_err("org"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedOrg {
            org: Org {
                id: org.id,
                name: org.name,
                created_at: org.created_at,
            },
            api_key: CreatedApiKey {
                key: key_view(&key),
                secret,
            },
        }),
    ))
}

fn project_view(p: ProjectRow) -> Project {
    Project {
        id: p.id,
        org_id: p.org_id,
        name: p.name,
        created_at: p.created_at,
    }
}

#[utoipa::path(get, path = "/v1/projects", responses((status = 200, body = [Project]), (status = 401, body = ErrorBody)))]
async fn list_projects(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<Project>>> {
    let rows = state
        .store
        .list_projects(&caller.org_id)
        .await
        .map_err(store_err("projects"))?;
    Ok(Json(rows.into_iter().map(project_view).collect()))
}

#[utoipa::path(post, path = "/v1/projects", request_body = CreateProject,
    responses((status = 201, body = Project), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_project(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    validate_name("project", &req.name)?;
    let p = ProjectRow {
        id: auth::new_id("prj"),
        org_id: caller.org_id,
        name: req.name,
        created_at: now(),
    };
    state.store.create_project(&p).await.map_err(store_err("project"))?;
    Ok((StatusCode::CREATED, Json(project_view(p))))
}

fn key_view(k: &store::ApiKeyRow) -> ApiKey {
    ApiKey {
        id: k.id.clone(),
        org_id: k.org_id.clone(),
        name: k.name.clone(),
        created_at: k.created_at,
        revoked_at: k.revoked_at,
    }
}

#[utoipa::path(get, path = "/v1/api-keys", responses((status = 200, body = [ApiKey]), (status = 401, body = ErrorBody)))]
async fn list_api_keys(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<ApiKey>>> {
    let rows = state
        .store
        .list_api_keys(&caller.org_id)
        .await
        .map_err(store_err("API keys"))?;
    Ok(Json(rows.iter().map(key_view).collect()))
}

/// Create an API key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody)))]
async fn create_api_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    validate_label("key name", &req.name)?;
    let (key, secret) = auth::make_key(&caller.org_id, &req.name);
    state.store.create_api_key(&key).await.map_err(store_err("API key"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: key_view(&key),
            secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_api_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .revoke_api_key(&caller.org_id, &id, now())
        .await
        .map_err(store_err("API key"))?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Clusters
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

#[utoipa::path(get, path = "/v1/clusters", responses((status = 200, body = [Cluster]), (status = 401, body = ErrorBody)))]
async fn list_clusters(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<Cluster>>> {
    let rows = state
        .store
        .list_clusters(&caller.org_id)
        .await
        .map_err(store_err("clusters"))?;
    let mut out = Vec::with_capacity(rows.len());
    for c in &rows {
        out.push(cluster_view(&state, c).await?);
    }
    Ok(Json(out))
}

/// Create a cluster. Answers at once with a running operation; poll it (or the cluster)
/// until it succeeds. The owner's password is in this answer only.
#[utoipa::path(post, path = "/v1/clusters", request_body = CreateCluster,
    responses((status = 202, body = CreatedCluster), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateCluster>,
) -> ApiResult<(StatusCode, Json<CreatedCluster>)> {
    validate_name("cluster", &req.name)?;
    let project = resolve_project(&state, &caller, req.project.as_deref()).await?;
    let clouds = state.provider.clouds();
    let cloud = match &req.cloud {
        Some(name) => clouds.iter().find(|c| &c.name == name).ok_or_else(|| {
            let known: Vec<&str> = clouds.iter().map(|c| c.name.as_str()).collect();
            let shown: String = name.chars().take(70).collect();
            ApiError::invalid(format!("unknown cloud {shown:?}; this land has: {}", known.join(", ")))
        })?,
        None => clouds
            .first()
            .ok_or_else(|| ApiError::internal("choose cloud", "the land has no clouds"))?,
    };
    let region = match &req.region {
        Some(name) => cloud.regions.iter().find(|r| &r.name == name).ok_or_else(|| {
            let known: Vec<&str> = cloud.regions.iter().map(|r| r.name.as_str()).collect();
            let shown: String = name.chars().take(70).collect();
            ApiError::invalid(format!(
                "unknown region {shown:?} of cloud {}; it has: {}",
                cloud.name,
                known.join(", ")
            ))
        })?,
        None => cloud
            .regions
            .first()
            .ok_or_else(|| ApiError::internal("choose region", "the cloud has no regions"))?,
    };
    let plan = req.plan.clone().unwrap_or_else(|| "small".into());
    if highrise_planner::plan_slots(&plan).is_none() {
        return Err(ApiError::invalid("unknown plan: use small, medium or large"));
    }
    let pg_version = req.pg_version.unwrap_or(15);
    if pg_version != 15 {
        return Err(ApiError::not_supported(format!(
            "PostgreSQL {pg_version} is not supported yet; use 15"
        )));
    }
    let replicas = req.replicas.unwrap_or(0);
    if replicas > 3 {
        return Err(ApiError::invalid("replicas must be between 0 and 3"));
    }
    let spot = req.spot.unwrap_or(false);
    let durability = req.durability.clone().unwrap_or_else(|| "async".into());
    backups::validate_durability(&durability)?;
    check_spot_safety(spot, replicas, &durability)?;
    let policy = req.backup_policy.unwrap_or_default();
    backups::validate_policy(&policy)?;
    let (restore_json, db_name) = match &req.restore {
        Some(r) => {
            let (record, db) = backups::plan_restore(&state, &caller, &project, r).await?;
            let json = serde_json::to_string(&record).map_err(|e| ApiError::internal("restore record", e))?;
            (Some(json), db)
        }
        None => (None, req.name.replace('-', "_")),
    };
    let password = auth::random_name(24);
    let repl_password = auth::random_name(32);
    let (scram, repl_scram) = {
        let (p, r) = (password.clone(), repl_password.clone());
        tokio::task::spawn_blocking(move || {
            (
                highrise_pg::scram_sha256_verifier(&p),
                highrise_pg::scram_sha256_verifier(&r),
            )
        })
        .await
        .map_err(|e| ApiError::internal("compute password verifiers", e))?
    };
    let created = now();
    let c = ClusterRow {
        id: auth::new_id("cl"),
        org_id: caller.org_id.clone(),
        project_id: project.id.clone(),
        project_name: project.name.clone(),
        name: req.name.clone(),
        cloud: cloud.name.clone(),
        region: region.name.clone(),
        plan,
        pg_version: i64::from(pg_version),
        replicas: i64::from(replicas),
        spot,
        endpoint: format!("ep-{}", auth::random_name(12)),
        db_name,
        owner_name: "owner".into(),
        owner_scram: scram,
        repl_password,
        repl_scram,
        spread_clouds: req.spread_clouds.unwrap_or(false),
        term: 1,
        created_at: created,
        deleted_at: None,
        durability,
        backup_interval: policy.interval_seconds,
        backup_retain_count: i64::from(policy.retain_count),
        backup_retain_days: i64::from(policy.retain_days),
        restore_json,
    };
    let op = OperationRow {
        id: auth::new_id("op"),
        org_id: caller.org_id.clone(),
        cluster_id: Some(c.id.clone()),
        kind: "create_cluster".into(),
        status: "running".into(),
        error: None,
        created_at: created,
        updated_at: created,
    };
    state
        .store
        .create_cluster(&c, &op)
        .await
        .map_err(store_err("cluster"))?;
    state.notify();
    tracing::info!(cluster = %c.id, name = %c.name, org = %c.org_id, "cluster requested");
    let view = cluster_view(&state, &c).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CreatedCluster {
            connection_uri: connection_uri(&state, &c, Some(&password)),
            cluster: view,
            operation: operation_view(&op),
            password,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/clusters/{cluster}", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = Cluster), (status = 404, body = ErrorBody)))]
async fn get_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<Cluster>> {
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    Ok(Json(cluster_view(&state, &c).await?))
}

/// Change a cluster: today its number of standbys (members are added or removed).
#[utoipa::path(patch, path = "/v1/clusters/{cluster}", request_body = UpdateCluster,
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = Cluster), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
    ApiJson(req): ApiJson<UpdateCluster>,
) -> ApiResult<Json<Cluster>> {
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    if c.deleted_at.is_some() {
        return Err(ApiError::not_found("cluster"));
    }
    if let Some(replicas) = req.replicas {
        if replicas > 3 {
            return Err(ApiError::invalid("replicas must be between 0 and 3"));
        }
        check_spot_safety(c.spot, replicas, req.durability.as_deref().unwrap_or(&c.durability))?;
        state
            .store
            .set_replicas(&c.id, i64::from(replicas))
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
        tracing::info!(cluster = %c.id, replicas, "replica count changed");
    }
    if let Some(d) = &req.durability {
        backups::validate_durability(d)?;
        let replicas = req.replicas.map_or(c.replicas, i64::from);
        check_spot_safety(c.spot, u32::try_from(replicas).unwrap_or(0), d)?;
        state
            .store
            .set_durability(&c.id, d)
            .await
            .map_err(store_err("cluster"))?;
        state.notify();
        tracing::info!(cluster = %c.id, durability = %d, "durability changed");
    }
    if let Some(p) = &req.backup_policy {
        backups::validate_policy(p)?;
        state
            .store
            .set_backup_policy(
                &c.id,
                p.interval_seconds,
                i64::from(p.retain_count),
                i64::from(p.retain_days),
            )
            .await
            .map_err(store_err("cluster"))?;
    }
    let c = find_cluster(&state, &caller, q.project.as_deref(), &c.id).await?;
    Ok(Json(cluster_view(&state, &c).await?))
}

/// A spot host can be taken at any moment, its disk with it: a single-node spot cluster
/// keeps every acknowledged commit only if each is in object storage before it is
/// acknowledged.
fn check_spot_safety(spot: bool, replicas: u32, durability: &str) -> ApiResult<()> {
    if spot && replicas == 0 && durability != "sync" {
        return Err(ApiError::invalid(
            "a single-node spot cluster would lose acknowledged commits with its host: \
             use durability=sync (every commit in object storage first) or at least 1 replica",
        ));
    }
    Ok(())
}

/// Delete a cluster: its PostgreSQL instance is stopped and its data removed.
#[utoipa::path(delete, path = "/v1/clusters/{cluster}", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 202, body = Operation), (status = 404, body = ErrorBody)))]
async fn delete_cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let at = now();
    let op = OperationRow {
        id: auth::new_id("op"),
        org_id: caller.org_id.clone(),
        cluster_id: Some(c.id.clone()),
        kind: "delete_cluster".into(),
        status: "running".into(),
        error: None,
        created_at: at,
        updated_at: at,
    };
    let op = state
        .store
        .delete_cluster(&c, &op)
        .await
        .map_err(store_err("cluster"))?;
    state.notify();
    tracing::info!(cluster = %c.id, "cluster deletion requested");
    Ok((StatusCode::ACCEPTED, Json(operation_view(&op))))
}

/// Planned switchover: hold new connections, stop the primary once the target streams
/// (its WAL reaches every connected standby on the way out), promote the target in a new
/// term, release the held connections to it. Zero lost commits.
#[utoipa::path(post, path = "/v1/clusters/{cluster}/switchover", request_body = Switchover,
    params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn switchover(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
    ApiJson(req): ApiJson<Switchover>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    if c.deleted_at.is_some() {
        return Err(ApiError::not_found("cluster"));
    }
    let members = state
        .store
        .instances_of_cluster(&c.id)
        .await
        .map_err(store_err("cluster members"))?;
    let standbys: Vec<&store::InstanceRow> = members.iter().filter(|m| !m.deleting && m.role == "standby").collect();
    if standbys.is_empty() {
        return Err(ApiError::invalid("the cluster has no standby to switch over to"));
    }
    if let Some(to) = &req.to {
        if !standbys.iter().any(|m| &m.id == to) {
            let shown: String = to.chars().take(70).collect();
            return Err(ApiError::invalid(format!("{shown:?} is not a standby of this cluster")));
        }
    }
    if !state
        .store
        .open_operations_of(&c.id, "switchover")
        .await
        .map_err(store_err("operations"))?
        .is_empty()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "a switchover is already in progress",
        ));
    }
    let at = now();
    let op = OperationRow {
        id: auth::new_id("op"),
        org_id: caller.org_id.clone(),
        cluster_id: Some(c.id.clone()),
        kind: "switchover".into(),
        status: "running".into(),
        error: None,
        created_at: at,
        updated_at: at,
    };
    state
        .store
        .request_switchover(&c.id, req.to.as_deref().unwrap_or(""), &op)
        .await
        .map_err(store_err("switchover"))?;
    state.notify();
    tracing::info!(cluster = %c.id, to = ?req.to, "switchover requested");
    Ok((StatusCode::ACCEPTED, Json(operation_view(&op))))
}

/// The cluster's events, oldest first.
#[utoipa::path(get, path = "/v1/clusters/{cluster}/events", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = [ClusterEvent]), (status = 404, body = ErrorBody)))]
async fn cluster_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<Vec<ClusterEvent>>> {
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let events = state.store.events(&c.id).await.map_err(store_err("events"))?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| ClusterEvent {
                at: e.at,
                kind: e.kind,
                message: e.message,
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// Hosts and operations
// ---------------------------------------------------------------------------------------

/// The land's hosts (operator keys only).
#[utoipa::path(get, path = "/v1/hosts", responses((status = 200, body = [Host]), (status = 403, body = ErrorBody)))]
async fn list_hosts(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<Host>>> {
    if !caller.operator {
        return Err(ApiError::forbidden("only the operator may list hosts"));
    }
    let hosts = state.store.list_hosts().await.map_err(store_err("hosts"))?;
    let instances = state.store.list_instances().await.map_err(store_err("instances"))?;
    Ok(Json(
        hosts
            .into_iter()
            .map(|h| Host {
                instances: instances.iter().filter(|i| i.host_id == h.id).count() as u32,
                id: h.id,
                cloud: h.cloud,
                region: h.region,
                zone: h.zone,
                market: h.market,
                address: h.address,
                status: h.status,
                last_heartbeat: h.last_beat_ms.map(|t| t.div_euclid(1000)),
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/operations", responses((status = 200, body = [Operation])))]
async fn list_operations(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Vec<Operation>>> {
    let ops = state
        .store
        .list_operations(&caller.org_id)
        .await
        .map_err(store_err("operations"))?;
    Ok(Json(ops.iter().map(operation_view).collect()))
}

#[utoipa::path(get, path = "/v1/operations/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 404, body = ErrorBody)))]
async fn get_operation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Operation>> {
    let op = state
        .store
        .get_operation(&caller.org_id, &id)
        .await
        .map_err(store_err("operation"))?;
    Ok(Json(operation_view(&op)))
}

// ---------------------------------------------------------------------------------------
// Agents and proxies
// ---------------------------------------------------------------------------------------

/// Trade a host's bootstrap token for a host-scoped token.
#[utoipa::path(post, path = "/v1/agent/register", request_body = RegisterHost,
    responses((status = 200, body = Registered), (status = 401, body = ErrorBody)))]
async fn agent_register(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RegisterHost>,
) -> ApiResult<Json<Registered>> {
    let expected = auth::bootstrap_token(&state, &req.host_id);
    if !auth::ct_eq(&expected, &req.bootstrap_token) {
        return Err(ApiError::unauthorized());
    }
    let secret = auth::random_hex(32);
    match state
        .store
        .register_host(&req.host_id, &auth::hash_secret(&secret), &req.address, now_ms())
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::unauthorized()),
        Err(e) => return Err(ApiError::internal("register host", e)),
    }
    state.notify();
    tracing::info!(host = %req.host_id, address = %req.address, "host registered");
    Ok(Json(Registered {
        host_token: format!("{}.{secret}", req.host_id),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct LongPoll {
    /// The version the caller has; the call returns when the document differs from it.
    known: Option<String>,
    /// Seconds to wait for a change (0–60).
    wait: Option<u64>,
}

/// Waits until `fetch()`'s version differs from `known` or the wait runs out.
async fn long_poll<T, F, Fut>(state: &AppState, q: &LongPoll, fetch: F) -> ApiResult<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ApiResult<(String, T)>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(60));
    loop {
        let mut rx = state.changes.subscribe();
        rx.mark_unchanged();
        let (version, doc) = fetch().await?;
        if q.known.as_deref() != Some(version.as_str()) {
            return Ok(doc);
        }
        if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
            return Ok(doc);
        }
    }
}

/// The host's desired state (long-poll with `known` and `wait`).
#[utoipa::path(get, path = "/v1/agent/desired", params(LongPoll),
    responses((status = 200, body = DesiredState), (status = 401, body = ErrorBody)))]
async fn agent_desired(
    State(state): State<Arc<AppState>>,
    host: HostCaller,
    ApiQuery(q): ApiQuery<LongPoll>,
) -> ApiResult<Json<DesiredState>> {
    let doc = long_poll(&state, &q, || async {
        let rows = state
            .store
            .desired_for_host(&host.host_id)
            .await
            .map_err(store_err("desired state"))?;
        let instances = backups::fill_desired(&state, rows).await?;
        let version = content_version(&instances);
        Ok((version.clone(), DesiredState { version, instances }))
    })
    .await?;
    Ok(Json(doc))
}

#[utoipa::path(post, path = "/v1/agent/heartbeat", request_body = Heartbeat,
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn agent_heartbeat(
    State(state): State<Arc<AppState>>,
    host: HostCaller,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<StatusCode> {
    let mut changed = state
        .store
        .heartbeat(&host.host_id, now_ms(), &hb.instances)
        .await
        .map_err(store_err("heartbeat"))?;
    if let Some(notice) = &hb.notice {
        changed |= crate::spot::record_notice(&state, &host.host_id, notice)
            .await
            .map_err(store_err("spot notice"))?;
    }
    for b in &hb.backups {
        if state
            .store
            .record_backup(&host.host_id, b, now())
            .await
            .map_err(store_err("backup report"))?
        {
            tracing::info!(backup = %b.id, status = %b.status, error = ?b.error, "backup finished");
            changed = true;
        }
    }
    if changed {
        state.notify();
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The routing table of the proxies (long-poll with `known` and `wait`).
#[utoipa::path(get, path = "/v1/proxy/routes", params(LongPoll),
    responses((status = 200, body = RouteTable), (status = 401, body = ErrorBody)))]
async fn proxy_routes(
    State(state): State<Arc<AppState>>,
    _proxy: ProxyCaller,
    ApiQuery(q): ApiQuery<LongPoll>,
) -> ApiResult<Json<RouteTable>> {
    let doc = long_poll(&state, &q, || async {
        let routes = state.store.routes().await.map_err(store_err("routes"))?;
        let version = content_version(&routes);
        Ok((version.clone(), RouteTable { version, routes }))
    })
    .await?;
    Ok(Json(doc))
}
