//! The console (issue 16): the tenant's own front door, served by the control plane at
//! `/console`, same origin as the API, rendered on the server (`maud`) with `htmx` for the
//! parts that refresh themselves; every asset is embedded in the binary.
//!
//! Every page is built from the public API itself, called in-process with the signed-in
//! user's session key ([`Api`]). The console holds no rule of its own about who may do
//! what: it hides the controls a role cannot use, and a forged request is refused by the
//! API exactly as through the CLI — validated, limited and audited there, with the
//! browser's address as its source.
//!
//! Sessions: signing in calls `POST /v1/login`; the session key lives in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/console`. Every form carries a CSRF token: an HMAC
//! of a fixed label keyed by the session's secret (before signing in, by a random login
//! cookie's value), so the server keeps no token state and any control plane checks any
//! form.
//!
//! One module per page family: [`login`] (sign in and out), [`clusters`] (and their
//! [`charts`]), [`members`]
//! (and the audit log), [`billing`] (usage and invoices), [`keys`], [`settings`]; this
//! one holds what they share (the in-process API client, the session and form extractors,
//! the CSRF tokens); [`page`] the layout, [`assets`] the embedded files.

mod assets;
mod billing;
mod charts;
mod clusters;
mod keys;
mod login;
mod members;
mod page;
mod settings;

use crate::access::Action;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use highrise_api::{ErrorBody, Me, Role};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

/// The session cookie: the session key's secret.
const SESSION_COOKIE: &str = "hr_session";
/// Before signing in: a random value the login form's CSRF token is keyed by.
const LOGIN_COOKIE: &str = "hr_login";
/// The largest form the console takes.
const FORM_LIMIT: usize = 64 * 1024;
/// The largest API answer the console reads.
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;

/// The first section the user's role may see.
async fn home(signed: Signed) -> Response {
    let to = page::SECTIONS
        .iter()
        .find(|s| signed.may(s.needs))
        .map_or("/console/members", |s| s.path);
    Redirect::to(to).into_response()
}

/// What every console handler shares: the API it renders pages from.
pub(crate) struct Console {
    api: Router,
    state: Arc<AppState>,
}

/// The console's routes, calling `api` (the public API's router) in-process.
pub fn router(state: Arc<AppState>, api: Router) -> Router {
    let console = Arc::new(Console { api, state });
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/login", get(login::form).post(login::sign_in))
        .route("/console/logout", post(login::sign_out))
        .route("/console/clusters", get(clusters::list).post(clusters::create))
        .route("/console/estimate", get(clusters::estimate))
        .route("/console/clusters/{name}", get(clusters::show))
        .route("/console/clusters/{name}/live", get(clusters::live))
        .route("/console/clusters/{name}/charts", get(charts::charts))
        .route("/console/clusters/{name}/switchover", post(clusters::switchover))
        .route("/console/clusters/{name}/backups", post(clusters::backup))
        .route("/console/clusters/{name}/restore", post(clusters::restore))
        .route("/console/clusters/{name}/delete", post(clusters::delete))
        .route("/console/clusters/{name}/update", post(clusters::update))
        .route("/console/clusters/{name}/move", post(clusters::move_to))
        .route("/console/members", get(members::list).post(members::invite))
        .route("/console/members/{user}/role", post(members::change_role))
        .route("/console/members/{user}/remove", post(members::remove))
        .route("/console/audit", get(members::audit))
        .route("/console/billing", get(billing::show))
        .route("/console/invoices/{month}/{kind}", get(billing::document))
        .route("/console/settings", get(settings::show))
        .route("/console/settings/billing", post(settings::set_billing))
        .route("/console/api-keys", get(keys::list).post(keys::create))
        .route("/console/api-keys/{id}/revoke", post(keys::revoke))
        .route("/console/assets/{file}", get(assets::serve))
        .route("/console/{*rest}", get(|| async { page::not_found() }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// What every console answer carries: a content security policy that admits only the
/// console's own files (no inline script or style, no framing — no clickjacking), no
/// caching of pages (one may show a password or a secret once), no referrer off-site.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        if !h.contains_key(&name) {
            h.insert(name, header::HeaderValue::from_static(value));
        }
    }
    res
}

// ---------------------------------------------------------------------------------------
// The API, in-process
// ---------------------------------------------------------------------------------------

/// The public API called in-process, as one caller: the session's key (or none, for
/// signing in) and the browser's address.
#[derive(Clone)]
pub(crate) struct Api {
    router: Router,
    bearer: Option<String>,
    peer: Option<SocketAddr>,
}

/// An API call that did not succeed: its status and the API's own message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!("console: {what}: {e}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("could not {what}; try again"),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            return to_login();
        }
        page::error(self.status, &self.message)
    }
}

impl Api {
    fn new(console: &Console, bearer: Option<String>, parts: &Parts) -> Self {
        Self {
            router: console.api.clone(),
            bearer,
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| *a),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, Failure> {
        self.call_with_headers(method, path, body).await.map(|(_, bytes)| bytes)
    }

    /// A call's answer and its headers (a list's `x-next-cursor`).
    async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(axum::http::HeaderMap, Bytes), Failure> {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(b) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {b}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let mut req = req
            .body(body.map_or_else(Body::empty, Body::from))
            .map_err(|e| Failure::internal("build an API request", e))?;
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let answer = match self.router.clone().oneshot(req).await {
            Ok(a) => a,
            Err(never) => match never {},
        };
        let status = answer.status();
        let (parts, body) = answer.into_parts();
        let bytes = axum::body::to_bytes(body, ANSWER_LIMIT)
            .await
            .map_err(|e| Failure::internal("read an API answer", e))?;
        if status.is_success() {
            return Ok((parts.headers, bytes));
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| status.canonical_reason().unwrap_or("failed").to_string());
        Err(Failure { status, message })
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<T, Failure> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::internal("read an API answer", e))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.json(Method::GET, path, None).await
    }

    /// One page of a list and where the next one starts (none after the last).
    pub async fn page<T: DeserializeOwned>(&self, path: &str) -> Result<(Vec<T>, Option<String>), Failure> {
        let (headers, bytes) = self.call_with_headers(Method::GET, path, None).await?;
        let items = serde_json::from_slice(&bytes).map_err(|e| Failure::internal("read an API answer", e))?;
        let next = headers
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((items, next))
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, Failure> {
        let body = serde_json::to_vec(body).map_err(|e| Failure::internal("write an API request", e))?;
        self.json(Method::POST, path, Some(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, Failure> {
        let body = serde_json::to_vec(body).map_err(|e| Failure::internal("write an API request", e))?;
        self.json(Method::PUT, path, Some(body)).await
    }

    /// A `PATCH` whose answer the console does not read.
    pub async fn patch(&self, path: &str, body: &impl Serialize) -> Result<(), Failure> {
        let body = serde_json::to_vec(body).map_err(|e| Failure::internal("write an API request", e))?;
        self.call(Method::PATCH, path, Some(body)).await.map(|_| ())
    }

    pub async fn delete(&self, path: &str) -> Result<(), Failure> {
        self.call(Method::DELETE, path, None).await.map(|_| ())
    }
}

/// `s` as one path segment of an API URL (whatever a browser put in a console URL).
pub(crate) fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// ---------------------------------------------------------------------------------------
// Sessions, forms and CSRF
// ---------------------------------------------------------------------------------------

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A `Set-Cookie` value for the console's cookies: `HttpOnly`, `SameSite=Strict`, on
/// `/console` only; `max_age` seconds (0 removes it).
fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    cookie::Cookie::build((name, value))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/console")
        .max_age(time::Duration::seconds(max_age.max(0)))
        .build()
        .to_string()
}

/// The CSRF token of forms keyed by `secret` (the session's, or the login cookie's).
fn csrf_token(secret: &str, label: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"highrise console csrf:");
    mac.update(label.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a posted form (`application/x-www-form-urlencoded`) carries `expected` as its
/// `csrf` field.
fn csrf_ok(form: &[u8], expected: &str) -> bool {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(form).unwrap_or_default();
    fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .is_some_and(|(_, v)| crate::auth::ct_eq(v, expected))
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// To the sign-in page, dropping the session cookie (a session the API no longer takes
/// is not sent again).
fn to_login() -> Response {
    (
        [(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0))],
        Redirect::to("/console/login"),
    )
        .into_response()
}

/// A signed-in user: their session's API, who they are, and their forms' CSRF token.
pub(crate) struct Signed {
    pub api: Api,
    pub me: Me,
    pub csrf: String,
}

impl Signed {
    /// Whether the user's role allows `action` (to show its controls; the API decides).
    pub fn may(&self, action: Action) -> bool {
        crate::access::allows(self.me.role, self.me.project.is_some(), action)
    }
}

impl FromRequestParts<Arc<Console>> for Signed {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Response> {
        let secret = cookie(parts, SESSION_COOKIE)
            .filter(|s| !s.is_empty())
            .ok_or_else(to_login)?;
        let api = Api::new(console, Some(secret.clone()), parts);
        let me: Me = api.get("/v1/me").await.map_err(IntoResponse::into_response)?;
        Ok(Self {
            csrf: csrf_token(&secret, "session"),
            api,
            me,
        })
    }
}

/// A form with no fields but its CSRF token.
#[derive(serde::Deserialize)]
pub(crate) struct NoFields {}

/// A form posted by a signed-in user, its CSRF token checked.
pub(crate) struct Posted<T> {
    pub signed: Signed,
    pub form: T,
}

/// Reads a form body up to [`FORM_LIMIT`] and checks its CSRF token.
async fn checked_form(body: Body, expected: &str) -> Result<Bytes, Failure> {
    let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| Failure {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: "The form is too large.".into(),
    })?;
    if !csrf_ok(&bytes, expected) {
        return Err(Failure {
            status: StatusCode::FORBIDDEN,
            message:
                "This form did not come from this console page, or the page is too old. Reload the page and try again."
                    .into(),
        });
    }
    Ok(bytes)
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_urlencoded::from_bytes(bytes).map_err(|e| Failure {
        status: StatusCode::BAD_REQUEST,
        message: format!("The form is not valid: {e}."),
    })
}

impl<T: DeserializeOwned> FromRequest<Arc<Console>> for Posted<T> {
    type Rejection = Response;
    async fn from_request(req: Request, console: &Arc<Console>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, console).await?;
        let bytes = checked_form(body, &signed.csrf)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            form: parse_form(&bytes).map_err(IntoResponse::into_response)?,
            signed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_passes_with_its_own_token_only() {
        let token = csrf_token("secret-a", "session");
        assert_eq!(token, csrf_token("secret-a", "session"), "stable for one session");
        assert_ne!(token, csrf_token("secret-b", "session"), "another session's differs");
        assert_ne!(token, csrf_token("secret-a", "login"));
        assert!(csrf_ok(format!("name=x&csrf={token}").as_bytes(), &token));
        assert!(!csrf_ok(b"name=x", &token), "missing");
        assert!(!csrf_ok(b"name=x&csrf=", &token), "empty");
        assert!(!csrf_ok(
            format!("csrf={}", csrf_token("secret-b", "session")).as_bytes(),
            &token
        ));
        assert!(!csrf_ok(b"%%%", &token), "not a form");
    }

    #[test]
    fn cookies_are_http_only_strict_and_scoped() {
        let c = set_cookie(SESSION_COOKIE, "v", 60);
        for part in [
            "hr_session=v",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/console",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(set_cookie(SESSION_COOKIE, "", -5).contains("Max-Age=0"));
    }

    #[test]
    fn a_console_url_cannot_reach_another_api_route() {
        assert_eq!(segment("shop"), "shop");
        assert_eq!(segment("../../v1/orgs?x=1"), "%2E%2E%2F%2E%2E%2Fv1%2Forgs%3Fx%3D1");
    }
}
