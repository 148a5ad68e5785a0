//! Authentication: API keys and sessions (secret shown once, stored as a SHA-256 hash),
//! users' passwords (Argon2id), host tokens and bootstrap tokens of agents, the proxies'
//! shared token.
//!
//! Key secrets are 256-bit random values, so a fast hash is enough (no password
//! stretching needed); comparisons are constant-time. Passwords are people's, so they are
//! stretched. A session is a key bound to a user: its role is the user's membership at
//! each call, so a role change or a removal applies at once.

use crate::access::{self, Action};
use crate::store::{now, ApiKeyRow, OrgRow, StoreError};
use crate::AppState;
use anyhow::{Context, Result};
use highrise_api::Role;
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

/// What a new key may do.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub role: Role,
    pub project_id: Option<String>,
    pub expires_at: Option<i64>,
    /// A session: the user it signs in.
    pub user_id: Option<String>,
    pub created_by: Option<String>,
}

impl KeyGrant {
    /// An org-wide owner key that does not expire (an org's first key).
    pub fn owner() -> Self {
        Self {
            role: Role::Owner,
            project_id: None,
            expires_at: None,
            user_id: None,
            created_by: None,
        }
    }
}

/// A new key for `org_id`: the row to store and the secret to show once.
pub fn make_key(org_id: &str, name: &str, grant: KeyGrant) -> (ApiKeyRow, String) {
    let id = new_id("key");
    let secret = random_hex(32);
    let row = ApiKeyRow {
        id: id.clone(),
        org_id: org_id.to_string(),
        name: name.to_string(),
        secret_hash: hash_secret(&secret),
        role: grant.role,
        project_id: grant.project_id,
        expires_at: grant.expires_at,
        user_id: grant.user_id,
        created_by: grant.created_by,
        created_at: now(),
        revoked_at: None,
    };
    (row, format!("{KEY_PREFIX}{id}.{secret}"))
}

/// Who is calling the public API, and what they may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: String,
    pub operator: bool,
    pub role: Role,
    /// A key limited to one project.
    pub project_id: Option<String>,
    /// `user:<id>` for a session, `key:<id>` for an API key.
    pub actor: String,
    /// The key (or session) presented.
    pub key_id: String,
    /// Where a mutating call's audit entry is gathered.
    pub audit: Option<crate::audit::AuditSlot>,
}

impl Caller {
    /// Names what this (mutating) call acts on, for its audit entry.
    pub fn audit_target(&self, target: impl Into<String>) {
        if let Some(slot) = &self.audit {
            let t = target.into();
            slot.note(|n| n.target = Some(t));
        }
    }

    /// Whether the caller may do `action` (operator actions also need the operator org).
    pub fn may(&self, action: Action) -> bool {
        access::allows(self.role, self.project_id.is_some(), action) && (action != Action::Operate || self.operator)
    }
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
    if key.revoked_at.is_some()
        || key.expires_at.is_some_and(|t| t <= now())
        || !ct_eq(&key.secret_hash, &hash_secret(secret))
    {
        return Err(Unauthorized);
    }
    let org = state.store.get_org(&key.org_id).await.map_err(|_| Unauthorized)?;
    let (role, actor) = match &key.user_id {
        // A session acts with its user's role in the org, as it is now.
        Some(user) => match state.store.member(&org.id, user).await {
            Ok(m) if m.joined_at.is_some() => (m.role, format!("user:{user}")),
            _ => return Err(Unauthorized),
        },
        None => (key.role, format!("key:{}", key.id)),
    };
    Ok(Caller {
        org_id: org.id,
        operator: org.operator,
        role,
        project_id: key.project_id,
        actor,
        key_id: key.id,
        audit: None,
    })
}

/// The Argon2id hash of a password, in PHC string form (salted; slow on purpose, so call
/// it off the async threads).
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hash a password: {e}"))
}

/// Whether `password` matches `phc` (an Argon2id hash); `None` spends the same time and
/// fails, so an unknown email takes as long as a wrong password.
pub fn check_password(phc: Option<&str>, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default());
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (dummy.as_str(), false),
    };
    let ok = PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

/// The token of one cell's proxies: `hrpc_<cell>_<HMAC(the land's proxy token, cell)>`.
/// A proxy holding it is given its cell's routes alone — and with them only its cell's
/// owners' verifiers — so a proxy host broken into gives away one cell's, not the land's.
/// Derivable again from the land's proxy token, which only the operator keeps.
pub fn cell_proxy_token(proxy_token: &str, cell: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(proxy_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"cell:");
    mac.update(cell.as_bytes());
    format!("{CELL_PROXY_PREFIX}{cell}_{}", hex::encode(mac.finalize().into_bytes()))
}

/// How a cell's proxy token begins.
const CELL_PROXY_PREFIX: &str = "hrpc_";

/// The cell a cell proxy token is good for, when it is one of `cells`' and genuine.
pub fn cell_of_proxy_token<'a>(proxy_token: &str, cells: &'a [String], token: &str) -> Option<&'a str> {
    let (cell, _) = token.strip_prefix(CELL_PROXY_PREFIX)?.rsplit_once('_')?;
    let cell = cells.iter().find(|c| c.as_str() == cell)?;
    ct_eq(token, &cell_proxy_token(proxy_token, cell)).then_some(cell.as_str())
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
        cell: crate::cell_for_new_org(state).await?,
    };
    let (key, secret) = make_key(&org.id, "admin", KeyGrant::owner());
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
    let (key, secret) = make_key(&org.id, "admin", KeyGrant::owner());
    state.store.create_api_key(&key).await.context("create API key")?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_proxy_token_is_good_for_its_cell_of_its_land_only() {
        let cells: Vec<String> = ["c1", "c2"].iter().map(|c| c.to_string()).collect();
        let c1 = cell_proxy_token("land-token", "c1");
        assert!(c1.starts_with("hrpc_c1_"), "{c1}");
        assert_eq!(cell_of_proxy_token("land-token", &cells, &c1), Some("c1"));
        let c2 = cell_proxy_token("land-token", "c2");
        assert_eq!(cell_of_proxy_token("land-token", &cells, &c2), Some("c2"));
        // Another land's, a cell the land lacks, a cell name swapped in, bits changed,
        // the land's own token, junk.
        let other_land = cell_proxy_token("other-land", "c1");
        let c9 = cell_proxy_token("land-token", "c9");
        let swapped = c1.replacen("hrpc_c1_", "hrpc_c2_", 1);
        let mut flipped = c1.clone();
        flipped.pop();
        flipped.push(if c1.ends_with('0') { '1' } else { '0' });
        for bad in [
            other_land.as_str(),
            &c9,
            &swapped,
            &flipped,
            "land-token",
            "hrpc_",
            "hrpc_c1",
            "",
        ] {
            assert_eq!(cell_of_proxy_token("land-token", &cells, bad), None, "{bad:?}");
        }
    }
}
