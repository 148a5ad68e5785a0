//! The routing table: endpoint → current primary. Long-polled from the control plane,
//! kept in memory and in a cache file, so the proxy serves known clusters while the
//! control plane is away (static stability).

use crate::ProxyConfig;
use highrise_api::{PrivateListener, Route, RouteTable};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

/// The servers' CA as the table names it (PEM), and a TLS client trusting it alone (or
/// why there is none).
type ServerTls = (String, Result<TlsConnector, String>);

#[derive(Clone)]
pub struct RouteCache {
    inner: Arc<RwLock<(String, HashMap<String, Route>)>>,
    server_tls: Arc<RwLock<Option<ServerTls>>>,
    /// Bumped on every table change; held connections wait on it.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for RouteCache {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            server_tls: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

impl RouteCache {
    /// Starts from the cache file when there is a readable one.
    pub fn load(path: &Path) -> Self {
        let cache = Self::default();
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<RouteTable>(&bytes) {
                Ok(t) => cache.replace(t),
                Err(e) => tracing::warn!("ignore unreadable route cache {}: {e}", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("read route cache {}: {e}", path.display()),
        }
        cache
    }

    pub fn get(&self, endpoint: &str) -> Option<Route> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .get(endpoint)
            .cloned()
    }

    /// Whether the table routes `endpoint` (without copying its route).
    pub fn contains(&self, endpoint: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .contains_key(endpoint)
    }

    pub fn version(&self) -> String {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub fn replace(&self, t: RouteTable) {
        {
            let mut tls = self.server_tls.write().unwrap_or_else(|p| p.into_inner());
            if tls.as_ref().map(|(pem, _)| pem) != t.server_ca.as_ref() {
                *tls = t.server_ca.map(|pem| {
                    let connector = crate::backend::connector(&pem);
                    if let Err(e) = &connector {
                        tracing::error!("{e}: servers that need it cannot be reached");
                    }
                    (pem, connector)
                });
            }
        }
        let map = t.routes.into_iter().map(|r| (r.endpoint.clone(), r)).collect();
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = (t.version, map);
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A TLS client for the servers, trusting the table's CA alone; why there is none.
    pub fn server_tls(&self) -> Result<TlsConnector, String> {
        match &*self.server_tls.read().unwrap_or_else(|p| p.into_inner()) {
            Some((_, c)) => c.clone(),
            None => Err("the routing table names no CA for the servers".into()),
        }
    }

    /// Wakes on every table change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The private listeners the table asks for.
    pub fn private_listeners(&self) -> HashSet<PrivateListener> {
        let table = self.inner.read().unwrap_or_else(|p| p.into_inner());
        table.1.values().filter_map(|r| r.private.clone()).collect()
    }

    /// The endpoint a private listener serves.
    pub fn private_endpoint(&self, listener: &PrivateListener) -> Option<String> {
        let table = self.inner.read().unwrap_or_else(|p| p.into_inner());
        table
            .1
            .values()
            .find(|r| r.private.as_ref() == Some(listener))
            .map(|r| r.endpoint.clone())
    }

    /// Waits until the endpoint's primary address is known and differs from `not`
    /// (a primary that just refused a connection), or `deadline` passes.
    pub async fn wait_for_primary(
        &self,
        endpoint: &str,
        not: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Option<String> {
        let mut rx = self.changes.subscribe();
        loop {
            rx.mark_unchanged();
            match self.get(endpoint) {
                None => return None,
                Some(Route { addr: Some(a), .. }) if Some(a.as_str()) != not => return Some(a),
                _ => {}
            }
            // Wake on a table change, and every so often to retry the same address (a
            // restarting primary comes back where it was).
            let tick = tokio::time::Instant::now() + Duration::from_millis(250);
            match tokio::time::timeout_at(deadline.min(tick), rx.changed()).await {
                Ok(_) => {}
                Err(_) if tokio::time::Instant::now() >= deadline => return None,
                Err(_) => {
                    if let Some(Route { addr: Some(a), .. }) = self.get(endpoint) {
                        return Some(a);
                    }
                }
            }
        }
    }

    /// Resolves once `endpoint`'s primary is known to be another address than `addr` (a
    /// failover or switchover moved it), or the endpoint is gone. A table without a primary
    /// for the moment (a switch in progress) is not a move.
    pub async fn moved_from(&self, endpoint: &str, addr: &str) {
        let mut rx = self.changes.subscribe();
        loop {
            rx.mark_unchanged();
            match self.get(endpoint) {
                None => return,
                Some(Route { addr: Some(a), .. }) if a != addr => return,
                _ => {}
            }
            if rx.changed().await.is_err() {
                // The table can no longer change: the session stays where it is.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Fetches the table once, now, when a client names an endpoint the cache does not know
/// (it may be seconds old); at most one such fetch per 50 ms, so unknown names cannot
/// turn into a flood on the control plane.
pub(crate) struct OnMiss {
    client: reqwest::Client,
    cfg: ProxyConfig,
    control: ControlUrl,
    last: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl OnMiss {
    pub fn new(cfg: ProxyConfig, control: ControlUrl) -> Option<Self> {
        let client = control_client(&cfg, Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        Some(Self {
            client,
            cfg,
            control,
            last: tokio::sync::Mutex::new(None),
        })
    }

    pub async fn refresh(&self, cache: &RouteCache) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(50)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        // A failed fetch leaves the cached table in place; the long-poll keeps trying.
        let fetched = async {
            self.client
                .get(format!("{}/v1/proxy/routes", self.control.get()))
                .query(&cell_query(&self.cfg))
                .bearer_auth(&self.cfg.token)
                .send()
                .await?
                .error_for_status()?
                .json::<RouteTable>()
                .await
        };
        match fetched.await {
            Ok(t) => install(cache, &self.cfg, t),
            Err(e) => {
                tracing::debug!("fetch routes on a miss: {e}");
                // The control plane may have moved: ask where, for the next miss and the
                // long-poll.
                if let Some(source) = &self.cfg.control_url_source {
                    self.control.rediscover(&self.client, source).await;
                }
            }
        }
    }
}

/// The routing table's query for the proxy's cell: its cell's routes only.
fn cell_query(cfg: &ProxyConfig) -> Vec<(&'static str, &str)> {
    cfg.cell.as_deref().map(|c| ("cell", c)).into_iter().collect()
}

/// Where the control plane is now: the configured URL, then what
/// [`ProxyConfig::control_url_source`] says once the control plane stops answering.
#[derive(Clone)]
pub(crate) struct ControlUrl(std::sync::Arc<std::sync::RwLock<String>>);

impl ControlUrl {
    pub fn new(url: &str) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(
            url.trim_end_matches('/').to_string(),
        )))
    }

    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks `source` where the control plane is and takes a new, usable answer into use.
    async fn rediscover(&self, client: &reqwest::Client, source: &str) {
        let said = async {
            client
                .get(source)
                .timeout(Duration::from_secs(2))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        };
        let Ok(url) = said.await.map(|t| t.trim().trim_end_matches('/').to_string()) else {
            return;
        };
        if !reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            tracing::warn!(url = %url, "ignore an unusable control plane URL");
            return;
        }
        let mut cur = self.0.write().unwrap_or_else(|p| p.into_inner());
        if *cur != url {
            tracing::warn!(from = %cur, to = %url, "the control plane moved: following it");
            *cur = url;
        }
    }
}

/// A client for the control plane: with a CA configured, the control plane's certificate
/// must chain to it and to no other root. A CA that cannot be read is logged and leaves
/// the client trusting nothing, so an `https` control plane is refused rather than
/// reached unverified.
pub(crate) fn control_client(cfg: &ProxyConfig, connect: Duration) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect)
        .tls_built_in_root_certs(false);
    if let Some(pem) = &cfg.control_ca {
        match reqwest::Certificate::from_pem(pem.as_bytes()) {
            Ok(ca) => b = b.add_root_certificate(ca),
            Err(e) => tracing::error!("read the control plane's CA certificate: {e}"),
        }
    }
    b
}

pub(crate) async fn refresh(cache: RouteCache, cfg: ProxyConfig, control: ControlUrl, stop: watch::Receiver<bool>) {
    let client = match control_client(&cfg, Duration::from_secs(3)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("build HTTP client: {e}");
            return;
        }
    };
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let known = cache.version();
        let res = client
            .get(format!("{}/v1/proxy/routes", control.get()))
            .query(&[("known", known.as_str()), ("wait", "25")])
            .query(&cell_query(&cfg))
            .bearer_auth(&cfg.token)
            .timeout(Duration::from_secs(35))
            .send()
            .await;
        let res = match res {
            Ok(r) if r.status().is_success() => r.json::<RouteTable>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("control plane answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(t) => {
                failures = 0;
                install(&cache, &cfg, t);
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!("fetch routes (serving the cached table): {e}");
                }
                if let Some(source) = &cfg.control_url_source {
                    control.rediscover(&client, source).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Takes a fetched table into use (and into the cache file) if it is new.
fn install(cache: &RouteCache, cfg: &ProxyConfig, t: RouteTable) {
    if t.version == cache.version() {
        return;
    }
    tracing::debug!(routes = t.routes.len(), "routing table updated");
    if let Err(e) = persist(&cfg.cache_file, &t) {
        tracing::warn!("write route cache: {e}");
    }
    cache.replace(t);
}

/// Writes the table for the next start: readable by the proxy's user alone (it holds the
/// owners' SCRAM verifiers).
fn persist(path: &Path, t: &RouteTable) -> std::io::Result<()> {
    write_private(path, &serde_json::to_vec(t).map_err(std::io::Error::other)?)
}

/// Replaces `path` with `bytes` whole (a new file, synced, renamed over the old one),
/// readable by the proxy's user alone.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(addr: Option<&str>, term: i64) -> RouteTable {
        RouteTable {
            version: format!("v{term}"),
            routes: vec![Route {
                endpoint: "ep".into(),
                cluster_id: "c".into(),
                addr: addr.map(str::to_string),
                term,
                notice: None,
                public: true,
                allowed_cidrs: Vec::new(),
                private: None,
                server_name: None,
                login: None,
            }],
            server_ca: None,
        }
    }

    /// Polls once: a table change is seen in that one poll (the watch is marked changed
    /// before `replace` returns), so no waiting is needed to tell "pending" from "moved".
    async fn pending<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        tokio::time::timeout(Duration::ZERO, f).await.is_err()
    }

    #[tokio::test]
    async fn a_session_is_told_when_its_primary_moves_and_not_before() {
        let cache = RouteCache::default();
        cache.replace(table(Some("10.0.0.1:5432"), 1));
        let moved = cache.moved_from("ep", "10.0.0.1:5432");
        tokio::pin!(moved);
        assert!(pending(moved.as_mut()).await);
        // Same primary (a new term after a restart in place), then no primary for a moment
        // (a switch in progress): the session stays.
        cache.replace(table(Some("10.0.0.1:5432"), 2));
        assert!(pending(moved.as_mut()).await);
        cache.replace(table(None, 3));
        assert!(pending(moved.as_mut()).await);
        // Another primary: the session ends.
        cache.replace(table(Some("10.0.0.2:5432"), 4));
        assert!(!pending(moved.as_mut()).await, "told of the move");
        // An endpoint that is gone counts as moved too.
        cache.replace(RouteTable {
            version: "v5".into(),
            routes: vec![],
            server_ca: None,
        });
        let gone = cache.moved_from("ep", "10.0.0.2:5432");
        tokio::pin!(gone);
        assert!(!pending(gone.as_mut()).await, "gone endpoint");
    }
}
