//! Strict test doubles of the token endpoints the marketplaces' APIs take tokens from:
//! Microsoft Entra ID's client credentials grant (v1, `POST /{tenant}/oauth2/token`, the
//! form the Marketplace metering docs give) and Google's OAuth token endpoint for a
//! service account's signed JWT (RFC 7523: RS256, `iss` the account, `aud` the endpoint,
//! `scope`, at most an hour between `iat` and `exp`). Each checks every field, answers
//! the service's error bodies, issues one token and counts what it issued.
#![allow(dead_code)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct TokenDouble {
    pub url: String,
    issued: Arc<AtomicUsize>,
    /// Why calls were refused, in order.
    refused: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenDouble {
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct Entra {
    tenant: String,
    client_id: String,
    secret: String,
    token: String,
    expires_in: String,
    issued: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
}

/// A listener on loopback and its URL.
async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

async fn serve(
    (listener, url): (tokio::net::TcpListener, String),
    router: Router,
    issued: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
) -> TokenDouble {
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    TokenDouble {
        url,
        issued,
        refused,
        task,
    }
}

/// Entra ID for `tenant`, where app `client_id` has `secret`; issues `token`, good for
/// `expires_in` seconds (a string, as the v1 endpoint sends it).
pub async fn entra_id(tenant: &str, client_id: &str, secret: &str, token: &str, expires_in: &str) -> TokenDouble {
    let s = Entra {
        tenant: tenant.into(),
        client_id: client_id.into(),
        secret: secret.into(),
        token: token.into(),
        expires_in: expires_in.into(),
        issued: Arc::default(),
        refused: Arc::default(),
    };
    let (issued, refused) = (s.issued.clone(), s.refused.clone());
    let router = Router::new()
        .route("/{tenant}/oauth2/token", post(entra_token))
        .with_state(s);
    serve(listen().await, router, issued, refused).await
}

async fn entra_token(
    State(s): State<Entra>,
    Path(tenant): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let refuse = |status: StatusCode, error: &str, why: String| {
        s.refused.lock().unwrap().push(why.clone());
        (status, Json(json!({ "error": error, "error_description": why }))).into_response()
    };
    if tenant != s.tenant {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {:?}", field("grant_type")),
        );
    }
    if field("client_id") != s.client_id {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!("AADSTS700016: Application '{}' not found", field("client_id")),
        );
    }
    if field("client_secret") != s.secret {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.".into(),
        );
    }
    if field("resource") != highrise_control::marketplace::tokens::AZURE_MARKETPLACE_RESOURCE {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            format!("AADSTS500011: resource {:?} not found", field("resource")),
        );
    }
    s.issued.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "token_type": "Bearer",
        "expires_in": s.expires_in,
        "ext_expires_in": s.expires_in,
        "resource": highrise_control::marketplace::tokens::AZURE_MARKETPLACE_RESOURCE,
        "access_token": s.token,
    }))
    .into_response()
}

#[derive(Clone)]
struct Google {
    url: String,
    email: String,
    public_pem: String,
    token: String,
    issued: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
}

/// Google's token endpoint (`{url}/token`) for service account `email`, whose public key
/// is `public_pem`; issues `token` for an hour.
pub async fn google_oauth(email: &str, public_pem: &str, token: &str) -> TokenDouble {
    let (listener, url) = listen().await;
    let s = Google {
        url: url.clone(),
        email: email.into(),
        public_pem: public_pem.into(),
        token: token.into(),
        issued: Arc::default(),
        refused: Arc::default(),
    };
    let (issued, refused) = (s.issued.clone(), s.refused.clone());
    let router = Router::new().route("/token", post(google_token)).with_state(s);
    serve((listener, url), router, issued, refused).await
}

async fn google_token(State(s): State<Google>, Form(f): Form<HashMap<String, String>>) -> Response {
    let refuse = |why: String| {
        s.refused.lock().unwrap().push(why.clone());
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": why })),
        )
            .into_response()
    };
    if f.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return refuse(format!("grant_type {:?}", f.get("grant_type")));
    }
    let Some(assertion) = f.get("assertion") else {
        return refuse("no assertion".into());
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(s.public_pem.as_bytes()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[format!("{}/token", s.url)]);
    v.set_issuer(&[s.email.as_str()]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &v) {
        Ok(d) => d.claims,
        Err(e) => return refuse(format!("Invalid JWT: {e}")),
    };
    if claims["scope"] != highrise_control::marketplace::tokens::GCP_SERVICE_CONTROL_SCOPE {
        return refuse(format!("scope {}", claims["scope"]));
    }
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if exp - iat > 3600 || exp <= iat {
        return refuse(format!("Invalid JWT: iat {iat}, exp {exp}: at most an hour"));
    }
    s.issued.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "access_token": s.token, "expires_in": 3599, "token_type": "Bearer" })).into_response()
}
