//! Access tokens for the marketplaces' APIs. The control plane fetches them itself and
//! keeps each until five minutes before it expires:
//!
//! * **Azure**: Microsoft Entra ID's client credentials grant for the publisher's app
//!   registration (`POST {authority}/{tenant}/oauth2/token`, `resource` the Marketplace
//!   metering API's application id), its secret read from a file at each fetch (so a
//!   rotated secret is taken up without a restart);
//! * **GCP**: a service account's key (the JSON file Google issues): a JWT signed with its
//!   RSA key (RS256, RFC 7523) traded at the key's `token_uri` for a token of the Service
//!   Control scope.
//!
//! Or an operator hands a file that something else keeps fresh (read at every call). A
//! failed fetch refuses the call before anything is sent to the marketplace, so the
//! records stay in the outbox for the next round.

use super::SendError;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Marketplace metering API's application id in Entra ID (the `resource` a token is
/// asked for).
pub const AZURE_MARKETPLACE_RESOURCE: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";

/// The OAuth scope of Google Service Control.
pub const GCP_SERVICE_CONTROL_SCOPE: &str = "https://www.googleapis.com/auth/servicecontrol";

/// A token is fetched again this long before it expires.
const EARLY: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub enum Token {
    /// As given (tests).
    Given(String),
    /// Read from a file at every call.
    File(PathBuf),
    /// Fetched by the control plane and kept until shortly before it expires.
    Fetched(Arc<Fetcher>),
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given(_) => f.write_str("Token::Given(..)"),
            Self::File(p) => write!(f, "Token::File({})", p.display()),
            Self::Fetched(x) => write!(f, "Token::Fetched({})", x.url),
        }
    }
}

impl Token {
    /// The token to call with now.
    pub async fn get(&self) -> Result<String, SendError> {
        match self {
            Self::Given(t) => Ok(t.clone()),
            Self::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .map_err(|e| SendError::refused(format!("read the access token {}: {e}", p.display()))),
            Self::Fetched(f) => f.get().await,
        }
    }
}

/// How a token is asked for.
enum Grant {
    /// Entra ID client credentials; the secret's file.
    ClientCredentials { client_id: String, secret_file: PathBuf },
    /// A service account's signed assertion.
    ServiceAccount {
        email: String,
        key: jsonwebtoken::EncodingKey,
        key_id: Option<String>,
    },
}

pub struct Fetcher {
    url: String,
    grant: Grant,
    http: reqwest::Client,
    kept: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// A Google service account key file's fields the control plane needs.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Seconds; Entra ID's v1 endpoint sends it as a string.
    expires_in: Seconds,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

impl Fetcher {
    /// Entra ID's client credentials grant against `authority` (e.g.
    /// `https://login.microsoftonline.com`) for `tenant`.
    pub fn entra_id(
        authority: &str,
        tenant: &str,
        client_id: &str,
        secret_file: PathBuf,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::new(
            format!("{}/{tenant}/oauth2/token", authority.trim_end_matches('/')),
            Grant::ClientCredentials {
                client_id: client_id.to_string(),
                secret_file,
            },
            timeout,
        )
    }

    /// A service account's key file (its `token_uri` is where tokens come from).
    pub fn service_account(key_file: &std::path::Path, timeout: Duration) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(key_file).with_context(|| format!("read {}", key_file.display()))?;
        let k: ServiceAccountKey = serde_json::from_str(&text)
            .with_context(|| format!("parse the service account key {}", key_file.display()))?;
        anyhow::ensure!(
            k.kind == "service_account",
            "{} is not a service account key (type {:?})",
            key_file.display(),
            k.kind
        );
        anyhow::ensure!(
            reqwest::Url::parse(&k.token_uri).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
            "{}: token_uri is not an http(s) URL",
            key_file.display()
        );
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(k.private_key.as_bytes())
            .with_context(|| format!("{}: private_key is not an RSA key", key_file.display()))?;
        Self::new(
            k.token_uri,
            Grant::ServiceAccount {
                email: k.client_email,
                key,
                key_id: k.private_key_id,
            },
            timeout,
        )
    }

    fn new(url: String, grant: Grant, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Self {
            url,
            grant,
            http,
            kept: tokio::sync::Mutex::new(None),
        })
    }

    /// The kept token while it is good for five more minutes, else a new one.
    async fn get(&self) -> Result<String, SendError> {
        let mut kept = self.kept.lock().await;
        if let Some((token, until)) = &*kept {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lasts) = self.fetch().await?;
        *kept = Some((token.clone(), Instant::now() + lasts.saturating_sub(EARLY)));
        Ok(token)
    }

    async fn fetch(&self) -> Result<(String, Duration), SendError> {
        let form: Vec<(&str, String)> = match &self.grant {
            Grant::ClientCredentials { client_id, secret_file } => {
                let secret = std::fs::read_to_string(secret_file).map_err(|e| {
                    SendError::refused(format!("read the client secret {}: {e}", secret_file.display()))
                })?;
                vec![
                    ("grant_type", "client_credentials".into()),
                    ("client_id", client_id.clone()),
                    ("client_secret", secret.trim().to_string()),
                    ("resource", AZURE_MARKETPLACE_RESOURCE.into()),
                ]
            }
            Grant::ServiceAccount { email, key, key_id } => {
                let now = jiff::Timestamp::now().as_second();
                let claims = serde_json::json!({
                    "iss": email,
                    "scope": GCP_SERVICE_CONTROL_SCOPE,
                    "aud": self.url,
                    "iat": now,
                    "exp": now + 3600,
                });
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                header.kid = key_id.clone();
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| SendError::refused(format!("sign the service account's assertion: {e}")))?;
                vec![
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()),
                    ("assertion", assertion),
                ]
            }
        };
        let what = format!("fetch an access token from {}", self.url);
        // Nothing reached the marketplace yet: every failure here is a refusal.
        let answer = self
            .http
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| SendError::refused(format!("{what}: {e}")))?;
        let status = answer.status();
        let body = answer
            .text()
            .await
            .map_err(|e| SendError::refused(format!("{what}: {e}")))?;
        if !status.is_success() {
            let shown: String = body.chars().take(300).collect();
            return Err(SendError::refused(format!("{what}: {status}: {shown}")));
        }
        let t: TokenAnswer =
            serde_json::from_str(&body).map_err(|e| SendError::refused(format!("{what}: unreadable answer: {e}")))?;
        let secs = match t.expires_in {
            Seconds::Number(n) => n,
            Seconds::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| SendError::refused(format!("{what}: expires_in {s:?} is not a number")))?,
        };
        if t.access_token.is_empty() {
            return Err(SendError::refused(format!("{what}: an empty token")));
        }
        Ok((t.access_token, Duration::from_secs(secs)))
    }
}
