//! The control plane: REST API (`/v1`, OpenAPI at `/v1/openapi.json`), the metadata store,
//! the agent and proxy endpoints, and the reconciler's executor.
//!
//! It owns all metadata and every decision's execution; the decisions themselves come from
//! `highrise-planner`. It reaches the land only through the `Provider` trait and never
//! dials into the data plane: agents and proxies call in (pull model).

mod access;
mod api;
mod audit;
mod auth;
mod billing;
pub mod ca;
mod console;
mod copies;
mod documents;
pub mod durability;
pub mod invoicing;
mod limits;
pub mod marketplace;
mod master_key;
mod member_tls;
mod metrics;
pub mod quota;
mod reconcile;
mod reseal;
mod spot;
pub mod store;
mod stored;
pub mod tls_listener;
pub mod webhook;

use anyhow::{Context, Result};
use highrise_provider::Provider;
use std::sync::Arc;
use tokio::sync::watch;

pub use auth::{cell_proxy_token, hash_secret, random_hex, KEY_PREFIX};

#[derive(Clone)]
pub struct ControlConfig {
    /// `sqlite://path` or `postgres://...`.
    pub database_url: String,
    /// The URL agents and proxies reach this control plane at: `https://` in `up`, served
    /// with a certificate from the CA below (which launches hand every agent).
    pub agent_url: String,
    /// Shared secret of the proxies, for the routes endpoint.
    pub proxy_token: String,
    /// `host:port` of every proxy clients connect to (one per cloud), listed in
    /// connection URIs so that a client survives losing one of them.
    pub proxy_public_addrs: Vec<String>,
    /// Proxies of their own per cell (`host:port` each, by cell): an org's clusters are
    /// reached through its cell's (see [`highrise_planner::cells::proxy_cell`]); a cell
    /// absent here is served by `proxy_public_addrs`.
    pub cell_proxy_addrs: std::collections::BTreeMap<String, Vec<String>>,
    /// Where clusters' WAL and backups go.
    pub storage: durability::StorageConfig,
    /// The key that wraps every tenant's data key (hex, 32 bytes); kept outside the
    /// metadata store.
    pub master_key: String,
    /// Master keys used before (hex): a store still sealed under one of them is re-sealed
    /// under `master_key` when the control plane opens it (a rotation).
    pub previous_master_keys: Vec<String>,
    /// The spot policy's knobs (short in tests).
    pub spot: highrise_planner::SpotPolicy,
    /// Failed authentications allowed per source address, key id or user a minute.
    pub auth_failures_per_minute: usize,
    /// The land's CA: it signs the proxies' certificates, the control plane's own for
    /// agents and every cluster's server certificate (`member_tls`); its certificate is
    /// served to clients at `GET /v1/tls/ca`. Its key is read from beside the store (like
    /// the master key) and held in memory only.
    pub ca: Option<Arc<ca::Ca>>,
    /// The proxies' TLS domain: a cluster's host name is `<endpoint>.<domain>`.
    pub tls_domain: String,
    /// The cells every cloud and region's hosts are split into (empty: one cell, `""`).
    pub cells: Vec<String>,
    /// What tenants pay: the list prices invoices are priced with, and the book's version.
    pub list_prices: Arc<(highrise_billing::prices::PriceBook, String)>,
    /// What the land charges us (its hosts by market), for the margin report.
    pub land_prices: Arc<highrise_provider::market::PriceBook>,
    /// The marketplaces usage is sent to (one exporter each); orgs linked to another have
    /// their records staged until one is configured.
    pub exporters: Vec<Arc<dyn marketplace::Exporter>>,
    /// Spend-alert webhooks may reach private and loopback addresses (`up`'s local land
    /// only; see `webhook`).
    pub webhooks_to_private: bool,
    /// How often every cluster's objects are measured in every store for billing (see
    /// `stored`).
    pub storage_meter_every: std::time::Duration,
}

/// The cell a new org is placed in (the planner's choice, from how many orgs each holds).
pub(crate) async fn cell_for_new_org(state: &AppState) -> Result<String> {
    let counts = state.store.orgs_per_cell().await.context("count orgs per cell")?;
    Ok(highrise_planner::cells::choose_cell(&state.cfg.cells, &counts)
        .unwrap_or_default()
        .to_string())
}

pub(crate) struct AppState {
    pub cfg: ControlConfig,
    pub store: store::Store,
    pub provider: Arc<dyn Provider>,
    /// Bumped on every change an agent's desired state or the routes may depend on;
    /// long-polls wait on it.
    pub changes: watch::Sender<u64>,
    /// Turns true when this control plane is being stopped: long-polls answer at once, so
    /// agents and proxies ask again — and find the control plane wherever it went.
    pub closing: watch::Sender<bool>,
    /// Key for host bootstrap tokens (HMAC of the host id), kept in the store.
    pub bootstrap_key: Vec<u8>,
    pub keys: durability::Keyring,
    /// Failed authentications per source address and key id.
    pub auth_limits: limits::AuthLimiter,
    /// Seals the audit log's chains (kept in the store sealed under the master key).
    pub audit_key: Vec<u8>,
    /// Held by a copy round ([`copies`]) and by retention's deletes ([`durability`]), so a
    /// copy never brings back an object retention is deleting from every store.
    pub objects_lock: tokio::sync::Mutex<()>,
    /// Clouds whose API probe fails, and since when (the reconciler probes them; the
    /// planner judges dark clouds from this and the hosts' silence).
    pub unreachable: std::sync::Mutex<std::collections::BTreeMap<String, highrise_planner::clouds::Unreachable>>,
    /// Recent metrics of every instance, from heartbeats (in memory; the charts' data).
    pub metrics: metrics::Metrics,
}

impl AppState {
    pub fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The clouds whose API does not answer now.
    pub fn unreachable_clouds(&self) -> Vec<String> {
        self.unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

pub struct Control {
    state: Arc<AppState>,
}

impl Control {
    /// Opens the metadata store (applying migrations) and prepares the service.
    pub async fn open(cfg: ControlConfig, provider: Arc<dyn Provider>) -> Result<Self> {
        let store = store::Store::open(&cfg.database_url)
            .await
            .with_context(|| format!("open metadata store {}", redact(&cfg.database_url)))?;
        let key_hex = store
            .setting_or_init("bootstrap_key", || auth::random_hex(32))
            .await
            .context("load bootstrap key")?;
        let bootstrap_key = key_hex.into_bytes();
        let (changes, _) = watch::channel(0);
        let keys = durability::Keyring::new(&cfg.master_key)?;
        let audit_key = master_key::open(&store, &cfg.master_key, &cfg.previous_master_keys)
            .await
            .context("open what the master key seals")?;
        let auth_limits = limits::AuthLimiter::new(cfg.auth_failures_per_minute);
        Ok(Self {
            state: Arc::new(AppState {
                cfg,
                store,
                provider,
                changes,
                closing: watch::channel(false).0,
                bootstrap_key,
                keys,
                auth_limits,
                audit_key,
                objects_lock: tokio::sync::Mutex::new(()),
                unreachable: Default::default(),
                metrics: Default::default(),
            }),
        })
    }

    /// Ends every long-poll now and any that begins later: this control plane is being
    /// stopped (its API server then finishes its requests at once).
    pub fn close(&self) {
        self.state.closing.send_replace(true);
    }

    /// The HTTP service: public API, agent and proxy endpoints, OpenAPI document.
    pub fn router(&self) -> axum::Router {
        api::router(Arc::clone(&self.state))
    }

    /// Creates the operator org `default` with an admin key if the store has no org yet.
    /// Returns the key's secret, shown only this once.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>> {
        auth::bootstrap_admin(&self.state).await
    }

    /// Creates a fresh API key for the operator org (when the saved one was lost).
    pub async fn new_admin_key(&self) -> Result<String> {
        auth::new_operator_key(&self.state).await
    }

    /// Whether a key secret is a working owner key of the operator org (not a session, not
    /// revoked or expired): the key `up` keeps in the client config.
    pub async fn is_operator_key(&self, secret: &str) -> bool {
        auth::authenticate(&self.state, secret)
            .await
            .is_ok_and(|c| c.operator && c.role == highrise_api::Role::Owner && c.actor.starts_with("key:"))
    }

    /// Runs the reconciler until `shutdown` turns true.
    pub async fn run_reconciler(&self, shutdown: watch::Receiver<bool>) {
        reconcile::run(Arc::clone(&self.state), shutdown).await
    }
}

/// Hides the password of a database URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
