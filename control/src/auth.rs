//! Authentication: API keys (secret shown once, stored as a SHA-256 hash), host tokens
//! and bootstrap tokens of agents, the proxies' shared token.
//!
//! Key secrets are 256-bit random values, so a fast hash is enough (no password
//! stretching needed); comparisons are constant-time.

use crate::store::{now, ApiKeyRow, OrgRow, StoreError};
use crate::AppState;
use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every API key secret starts with this, then the key id, a dot and the secret.
pub const KEY_PREFIX: &str = "hrk_";

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A random id `<prefix>_<16 lowercase base-32 chars>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_name(16))
}

/// Random lowercase letters and digits, starting with a letter.
pub fn random_name(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz23456789";
    let mut b = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter()
        .enumerate()
        .map(|(i, x)| {
            let set = if i == 0 { &ALPHABET[..25] } else { ALPHABET };
            set[*x as usize % set.len()] as char
        })
        .collect()
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A new key for `org_id`: the row to store and the secret to show once.
pub fn make_key(org_id: &str, name: &str) -> (ApiKeyRow, String) {
    let id = new_id("key");
    let secret = random_hex(32);
    let row = ApiKeyRow {
        id: id.clone(),
        org_id: org_id.to_string(),
        name: name.to_string(),
        secret_hash: hash_secret(&secret),
        created_at: now(),
        revoked_at: None,
    };
    (row, format!("{KEY_PREFIX}{id}.{secret}"))
}

/// Who is calling the public API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: String,
    pub operator: bool,
}

#[derive(Debug)]
pub struct Unauthorized;

/// A presented API key's id and secret (`hrk_<id>.<secret>`), if it is shaped like one.
fn parse_key(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.strip_prefix(KEY_PREFIX)?.split_once('.')?;
    (!id.is_empty() && id.len() <= 64 && secret.len() <= 128).then_some((id, secret))
}

/// The key id a presented API key names, if it is shaped like one.
pub fn key_id(presented: &str) -> Option<&str> {
    parse_key(presented).map(|(id, _)| id)
}

pub async fn authenticate(state: &AppState, presented: &str) -> Result<Caller, Unauthorized> {
    let (id, secret) = parse_key(presented).ok_or(Unauthorized)?;
    let key = match state.store.api_key(id).await {
        Ok(k) => k,
        Err(StoreError::NotFound) => return Err(Unauthorized),
        Err(e) => {
            tracing::error!("look up API key: {e:#}");
            return Err(Unauthorized);
        }
    };
    if key.revoked_at.is_some() || !ct_eq(&key.secret_hash, &hash_secret(secret)) {
        return Err(Unauthorized);
    }
    let org = state.store.get_org(&key.org_id).await.map_err(|_| Unauthorized)?;
    Ok(Caller {
        org_id: org.id,
        operator: org.operator,
    })
}

/// The bootstrap token of a host: HMAC(bootstrap key, host id). Derivable again after a
/// control-plane restart, so an interrupted launch can be re-driven with the same token.
pub fn bootstrap_token(state: &AppState, host_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&state.bootstrap_key).expect("HMAC takes any key length");
    mac.update(host_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub async fn bootstrap_admin(state: &AppState) -> Result<Option<String>> {
    if state.store.org_count().await.context("count orgs")? > 0 {
        return Ok(None);
    }
    let org = OrgRow {
        id: new_id("org"),
        name: "default".into(),
        operator: true,
        created_at: now(),
    };
    let (key, secret) = make_key(&org.id, "admin");
    state
        .store
        .create_org(&org, &new_id("prj"), &key)
        .await
        .context("create the operator org")?;
    Ok(Some(secret))
}

pub async fn new_operator_key(state: &AppState) -> Result<String> {
    let orgs = state
        .store
        .list_operator_orgs()
        .await
        .context("find the operator org")?;
    let org = orgs.first().context("no operator org exists")?;
    let (key, secret) = make_key(&org.id, "admin");
    state.store.create_api_key(&key).await.context("create API key")?;
    Ok(secret)
}
