//! The local land: many clouds on one machine.
//!
//! A host is an agent process with its own directory (its ephemeral disk, wiped when the
//! host goes away) and its own loopback address `127.<base>.<cloud>.<n>`; `<base>` is
//! picked at random when a land is created, so several lands (parallel tests) do not
//! share addresses. The land persists its host table in `land.json`; when it is opened
//! again (after `highrise up` restarts) it boots the hosts that were running, as VMs come
//! back after a power cycle.
//!
//! Every zone of a cloud is a host pool of the region's host type, priced by the price
//! book; spot launches need capacity in their pool, which follows the land's
//! [`SpotMarket`] (fixed, replayed from traces at a chosen speed, or set by an operator).
//! When a pool's capacity falls below the spot hosts it holds, the newest get notices.
//!
//! Besides the [`Provider`] trait, the land serves an HTTP router with each host's
//! metadata endpoint, shaped like the clouds' instance metadata (AWS:
//! `/latest/meta-data/spot/instance-action`, 404 until a notice is posted, and the
//! rebalance recommendation, through IMDSv2 session tokens, required; GCP: `/computeMetadata/v1/instance/preempted`, `FALSE` until
//! then), and operator controls: list pools, set a pool's capacity, preempt a host (with
//! or without notice), kill one at once, take a zone or a whole cloud down — its hosts
//! killed, or frozen (`SIGSTOP`) so that they come back with their stale state when the
//! cloud does, as hosts cut off by an outage do. While a whole cloud is down its API
//! refuses every call (launch, terminate, probe).

pub mod disk;
pub mod network;

use crate::market::{host_pools, Pool, PoolId, PriceBook, SpotMarket, Trace};
use crate::{Cloud, HostInfo, HostState, LaunchRequest, Market, Provider, ProviderError, Region};
use anyhow::{Context, Result};
use async_trait::async_trait;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct LocalLandConfig {
    /// Where hosts' disks and `land.json` live.
    pub dir: PathBuf,
    pub clouds: Vec<Cloud>,
    /// The program started as a host's agent, and the arguments before the host's own.
    pub agent_program: PathBuf,
    pub agent_args: Vec<String>,
    /// Base URL under which this land's router is served (for hosts' metadata URLs).
    pub metadata_base_url: String,
    /// Seconds between a spot notice and the host's death, for every cloud; `None`: each
    /// cloud's own (the price book's).
    pub notice_secs: Option<u64>,
    pub prices: PriceBook,
    /// Spot hosts each pool holds while it has capacity.
    pub spot_capacity: u32,
    /// Spot availability to replay onto the pools (one trace per pool, in order).
    pub traces: Vec<Trace>,
    /// Trace seconds per real second.
    pub trace_speed: f64,
    /// Give each new host a disk of this many bytes of its own (an ext4 image,
    /// loop-mounted on the host's directory; needs root), so a full disk is a real
    /// `ENOSPC` on one host. `None`: hosts share the land's file system.
    pub host_disk_bytes: Option<u64>,
}

impl LocalLandConfig {
    /// A land of `clouds` priced by the repository's book, every pool with room for 64
    /// spot hosts and each cloud's own notice length.
    pub fn new(dir: PathBuf, clouds: Vec<Cloud>, agent_program: PathBuf, metadata_base_url: String) -> Result<Self> {
        Ok(LocalLandConfig {
            dir,
            clouds,
            agent_program,
            agent_args: Vec::new(),
            metadata_base_url,
            notice_secs: None,
            prices: PriceBook::repository()?,
            spot_capacity: 64,
            traces: Vec::new(),
            trace_speed: 1.0,
            host_disk_bytes: None,
        })
    }
}

/// Two clouds with one region and three zones each: the default land of `highrise up`.
pub fn default_clouds() -> Vec<Cloud> {
    ["local-a", "local-b"]
        .iter()
        .map(|c| Cloud {
            name: c.to_string(),
            regions: vec![Region {
                name: "region-1".into(),
                zones: vec!["zone-1".into(), "zone-2".into(), "zone-3".into()],
            }],
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostRecord {
    info: HostInfo,
    bootstrap_token: String,
    control_url: String,
    /// The CA the control plane's certificate chains to (PEM), written to the host's
    /// disk for its agent.
    #[serde(default)]
    control_ca: Option<String>,
    /// Unix seconds at which a posted spot notice expires.
    notice_deadline: Option<u64>,
    /// Unix seconds of the launch (the cloud reclaims the newest spot hosts first).
    #[serde(default)]
    launched_at: u64,
    /// The size of the host's own disk (see [`LocalLandConfig::host_disk_bytes`]).
    #[serde(default)]
    disk_bytes: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    octet_base: u8,
    hosts: BTreeMap<String, HostRecord>,
    /// Where the control plane is now, as the land tells its hosts and proxies (their
    /// user data and metadata); `None` before the first boot.
    #[serde(default)]
    control_url: Option<String>,
    /// Clouds or `cloud/zone`s that are down.
    down: Vec<String>,
}

struct Inner {
    persisted: Persisted,
    agents: BTreeMap<String, tokio::process::Child>,
    market: SpotMarket,
    /// Hosts frozen with their cloud (or zone), thawed when it comes back.
    frozen: std::collections::BTreeSet<String>,
    /// IMDSv2 session tokens handed out: token -> (host, unix seconds it expires).
    imds_tokens: BTreeMap<String, (String, u64)>,
}

/// How a cloud (or zone) goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Its hosts die at once, disks wiped.
    Kill,
    /// Its hosts are frozen (agent and PostgreSQL stopped with `SIGSTOP`) and resume,
    /// with whatever state they had, when it comes back.
    Freeze,
}

pub struct LocalLand {
    cfg: LocalLandConfig,
    inner: Mutex<Inner>,
    /// When the market's replay began (its `t = 0`).
    epoch: Instant,
    /// The clouds (and `cloud/zone`s) that are down, for what runs beside the land in a
    /// cloud (its proxy).
    down: tokio::sync::watch::Sender<Vec<String>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LocalLand {
    /// Opens (or creates) the land in `cfg.dir`. Does not start any host yet: see [`boot`].
    ///
    /// [`boot`]: LocalLand::boot
    pub fn open(cfg: LocalLandConfig) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&cfg.dir).with_context(|| format!("create {}", cfg.dir.display()))?;
        let state_file = cfg.dir.join("land.json");
        let persisted = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parse {}", state_file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted {
                octet_base: rand::Rng::gen_range(&mut rand::thread_rng(), 20..=250),
                ..Default::default()
            },
            Err(e) => return Err(e).with_context(|| format!("read {}", state_file.display())),
        };
        let mut market = SpotMarket::new(pools_of(&cfg), cfg.spot_capacity);
        market.assign_traces(&cfg.traces);
        let (down, _) = tokio::sync::watch::channel(persisted.down.clone());
        let land = Arc::new(Self {
            down,
            cfg,
            inner: Mutex::new(Inner {
                persisted,
                agents: BTreeMap::new(),
                market,
                frozen: Default::default(),
                imds_tokens: BTreeMap::new(),
            }),
            epoch: Instant::now(),
        });
        land.save()?;
        Ok(land)
    }

    /// Follows which clouds (and `cloud/zone`s) are down.
    pub fn watch_down(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.down.subscribe()
    }

    /// The market's clock: trace seconds since the land opened.
    fn market_time(&self) -> u64 {
        (self.epoch.elapsed().as_secs_f64() * self.cfg.trace_speed) as u64
    }

    fn notice_secs_for(&self, cloud: &str, region: &str) -> u64 {
        self.cfg
            .notice_secs
            .unwrap_or_else(|| self.cfg.prices.region(cloud, region).map_or(30, |r| r.notice_secs))
    }

    /// Replays the market: whenever a pool holds more spot hosts than its capacity, the
    /// newest get notices. Runs until the land is dropped.
    pub fn spawn_market(self: &Arc<Self>) {
        let land = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(land) = land.upgrade() else {
                    return;
                };
                land.reclaim();
            }
        });
    }

    /// Posts notices to the spot hosts beyond each pool's capacity (newest first).
    fn reclaim(self: &Arc<Self>) {
        let t = self.market_time();
        let victims: Vec<String> = {
            let inner = self.lock();
            let mut by_pool: BTreeMap<PoolId, Vec<&HostRecord>> = BTreeMap::new();
            for h in inner.persisted.hosts.values() {
                if h.info.market == Market::Spot && h.info.state != HostState::Terminated {
                    by_pool.entry(h.info.pool()).or_default().push(h);
                }
            }
            let mut out = Vec::new();
            for (pool, mut hosts) in by_pool {
                hosts.sort_by_key(|h| (h.launched_at, h.info.host_id.clone()));
                for h in inner.market.reclaimed(&pool, t, &hosts) {
                    if h.info.state == HostState::Running {
                        out.push(h.info.host_id.clone());
                    }
                }
            }
            out
        };
        for id in victims {
            tracing::info!(host = %id, "spot capacity reclaimed: notice posted");
            if let Err(e) = self.preempt(&id, None) {
                tracing::error!(host = %id, "post spot notice: {e:#}");
            }
        }
    }

    /// Pins the spot capacity of every pool `selector` names (`None`: back to their
    /// model) and reclaims at once. `selector` is a pool id, or a `cloud/region` (or
    /// `cloud`) whose pools all change together, as when a region runs out.
    pub fn set_capacity(self: &Arc<Self>, selector: &str, n: Option<u32>) -> Result<Vec<PoolId>, ProviderError> {
        let chosen: Vec<PoolId> = {
            let mut inner = self.lock();
            let chosen: Vec<PoolId> = inner
                .market
                .pools()
                .map(|p| p.id.clone())
                .filter(|id| {
                    let s = id.to_string();
                    s == selector || s.starts_with(&format!("{selector}/"))
                })
                .collect();
            if chosen.is_empty() {
                return Err(ProviderError::UnknownLocation(format!("no pool matches {selector}")));
            }
            for id in &chosen {
                inner
                    .market
                    .set_capacity(id, n)
                    .map_err(|e| ProviderError::UnknownLocation(e.to_string()))?;
            }
            chosen
        };
        self.reclaim();
        Ok(chosen)
    }

    /// Every pool with its prices, current spot capacity and spot hosts.
    pub fn pool_status(&self) -> Vec<PoolStatus> {
        let t = self.market_time();
        let inner = self.lock();
        inner
            .market
            .pools()
            .map(|p| PoolStatus {
                id: p.id.to_string(),
                on_demand_hour: p.on_demand_hour.to_string(),
                spot_hour: inner.market.spot_price(&p.id, t).unwrap_or(p.spot_hour).to_string(),
                spot_capacity: inner.market.capacity(&p.id, t),
                spot_hosts: inner
                    .persisted
                    .hosts
                    .values()
                    .filter(|h| h.info.market == Market::Spot && h.info.state != HostState::Terminated)
                    .filter(|h| h.info.pool() == p.id)
                    .count() as u32,
                notice_secs: self.notice_secs_for(&p.id.cloud, &p.id.region),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than stopping the land; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self) -> Result<()> {
        let inner = self.lock();
        save_state(&self.cfg.dir, &inner.persisted)
    }

    fn host_dir(&self, host_id: &str) -> PathBuf {
        self.cfg.dir.join("hosts").join(host_id)
    }

    /// The image file behind a host's own disk.
    fn disk_image(&self, host_id: &str) -> PathBuf {
        self.cfg.dir.join("disks").join(format!("{host_id}.img"))
    }

    /// Starts the agents of every host that was running when the land last stopped,
    /// pointing them at `control_url` (the control plane may have moved since), whose
    /// certificate chains to `control_ca`.
    pub fn boot(&self, control_url: &str, control_ca: Option<&str>) -> Result<()> {
        let hosts: Vec<HostRecord> = {
            let mut inner = self.lock();
            for h in inner.persisted.hosts.values_mut() {
                h.control_url = control_url.to_string();
                h.control_ca = control_ca.map(str::to_string);
            }
            inner.persisted.control_url = Some(control_url.to_string());
            save_state(&self.cfg.dir, &inner.persisted)?;
            inner
                .persisted
                .hosts
                .values()
                .filter(|h| h.info.state != HostState::Terminated)
                .cloned()
                .collect()
        };
        for h in hosts {
            self.start_agent(&h)
                .with_context(|| format!("boot host {}", h.info.host_id))?;
        }
        Ok(())
    }

    /// Tells every host and proxy that the control plane is now at `control_url` (the
    /// metadata endpoints below serve it; running agents and proxies read it there and
    /// reconnect — nothing restarts).
    pub fn set_control_url(&self, control_url: &str) -> Result<()> {
        let mut inner = self.lock();
        for h in inner.persisted.hosts.values_mut() {
            h.control_url = control_url.to_string();
        }
        inner.persisted.control_url = Some(control_url.to_string());
        save_state(&self.cfg.dir, &inner.persisted)
    }

    /// Starts the host's agent unless one is already running (one agent per host, ever).
    fn start_agent(&self, h: &HostRecord) -> Result<()> {
        if let Some(child) = self.lock().agents.get_mut(&h.info.host_id) {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let dir = self.host_dir(&h.info.host_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        if let Some(bytes) = h.disk_bytes {
            disk::attach(&self.disk_image(&h.info.host_id), &dir, bytes)
                .with_context(|| format!("attach the disk of host {}", h.info.host_id))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .context("open agent log")?;
        let log2 = log.try_clone().context("duplicate agent log handle")?;
        let ca_file = dir.join("control-ca.pem");
        if let Some(pem) = &h.control_ca {
            std::fs::write(&ca_file, pem).with_context(|| format!("write {}", ca_file.display()))?;
        }
        let mut cmd = tokio::process::Command::new(&self.cfg.agent_program);
        cmd.args(&self.cfg.agent_args)
            .arg("--host-id")
            .arg(&h.info.host_id)
            .arg("--dir")
            .arg(&dir)
            .arg("--address")
            .arg(&h.info.address)
            .arg("--control-url")
            .arg(&h.control_url)
            .args(h.control_ca.as_ref().map(|_| "--control-ca"))
            .args(h.control_ca.as_ref().map(|_| &ca_file))
            .arg("--metadata-url")
            .arg(format!("{}/hosts/{}", self.cfg.metadata_base_url, h.info.host_id))
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .args(h.disk_bytes.is_none().then_some("--shared-disk"))
            // Usage shows within a second here (tests, `highrise usage` while trying it);
            // hosts of real clouds keep the agent's once a minute.
            .args(["--meter-every", "1s"])
            .env("HIGHRISE_BOOTSTRAP_TOKEN", &h.bootstrap_token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Own process group: a terminal's Ctrl-C reaches `up`, which stops hosts in order.
            .process_group(0);
        let child = cmd.spawn().context("spawn agent")?;
        self.lock().agents.insert(h.info.host_id.clone(), child);
        Ok(())
    }

    /// Stops every agent (which stops its PostgreSQL instances) without wiping disks:
    /// the machine is powered off, not the hosts terminated.
    pub async fn shutdown(&self) {
        // Frozen hosts could not stop: they resume first.
        let frozen: Vec<String> = self.lock().frozen.iter().cloned().collect();
        for id in &frozen {
            self.freeze_host(id, false);
        }
        let agents: Vec<(String, tokio::process::Child)> =
            std::mem::take(&mut self.lock().agents).into_iter().collect();
        let mut waits = Vec::new();
        for (id, mut child) in agents {
            waits.push(async move {
                stop_child(&mut child, Duration::from_secs(30)).await;
                id
            });
        }
        for w in waits {
            let id = w.await;
            kill_postgres_under(&self.host_dir(&id), Signal::SIGQUIT);
        }
        // Powered off: disks are detached, their images kept for the next boot.
        let with_disks: Vec<String> = self
            .lock()
            .persisted
            .hosts
            .values()
            .filter(|h| h.disk_bytes.is_some())
            .map(|h| h.info.host_id.clone())
            .collect();
        for id in with_disks {
            let dir = self.host_dir(&id);
            if let Err(e) = disk::detach(&dir).await {
                tracing::warn!(host = %id, "{e:#}");
            }
        }
    }

    /// Kills a host the hard way, as a dying VM: agent and PostgreSQL get SIGKILL, the disk
    /// is wiped, the state is `Terminated`.
    async fn kill_host(&self, host_id: &str) {
        let child = {
            let mut inner = self.lock();
            inner.frozen.remove(host_id);
            inner.agents.remove(host_id)
        };
        if let Some(mut child) = child {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let dir = self.host_dir(host_id);
        kill_postgres_under(&dir, Signal::SIGKILL);
        if let Err(e) = disk::detach(&dir).await {
            tracing::warn!(host = %host_id, "{e:#}");
        }
        let _ = std::fs::remove_file(self.disk_image(host_id));
        let _ = std::fs::remove_dir_all(&dir);
        let mut inner = self.lock();
        if let Some(h) = inner.persisted.hosts.get_mut(host_id) {
            h.info.state = HostState::Terminated;
            h.notice_deadline = None;
        }
        if let Err(e) = save_state(&self.cfg.dir, &inner.persisted) {
            tracing::error!("save land state: {e:#}");
        }
    }

    /// Posts a spot notice on the host's metadata endpoint; the host dies when it expires.
    /// `notice_secs`: the notice's length (`None`: the cloud's; `0`: no notice, the host
    /// dies at once). Returns the unix second the host dies at.
    pub fn preempt(self: &Arc<Self>, host_id: &str, notice_secs: Option<u64>) -> Result<u64, ProviderError> {
        let secs = {
            let mut inner = self.lock();
            let h = inner
                .persisted
                .hosts
                .get_mut(host_id)
                .filter(|h| h.info.state != HostState::Terminated)
                .ok_or_else(|| ProviderError::UnknownHost(host_id.into()))?;
            let secs = notice_secs.unwrap_or_else(|| self.notice_secs_for(&h.info.cloud, &h.info.region));
            if h.info.state == HostState::Preempting {
                // One notice per host: a second one does not move the deadline.
                return Ok(h.notice_deadline.unwrap_or_else(unix_now));
            }
            if secs > 0 {
                h.info.state = HostState::Preempting;
                h.notice_deadline = Some(unix_now() + secs);
                save_state(&self.cfg.dir, &inner.persisted)?;
            }
            secs
        };
        let land = Arc::clone(self);
        let id = host_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            land.kill_host(&id).await;
        });
        Ok(unix_now() + secs)
    }

    /// Takes a whole cloud (or one `zone` of it) down: its hosts die at once (or freeze,
    /// see [`Outage`]), and launches there fail until it is brought back.
    pub async fn take_down(
        &self,
        cloud: &str,
        zone: Option<&str>,
        outage: Outage,
    ) -> Result<Vec<String>, ProviderError> {
        if !self.cfg.clouds.iter().any(|c| c.name == cloud) {
            return Err(ProviderError::UnknownLocation(cloud.into()));
        }
        let victims: Vec<String> = {
            let mut inner = self.lock();
            let key = zone.map_or_else(|| cloud.to_string(), |z| format!("{cloud}/{z}"));
            if !inner.persisted.down.contains(&key) {
                inner.persisted.down.push(key);
            }
            self.down.send_replace(inner.persisted.down.clone());
            inner
                .persisted
                .hosts
                .values()
                .filter(|h| h.info.cloud == cloud && zone.is_none_or(|z| h.info.zone == z))
                .filter(|h| h.info.state != HostState::Terminated)
                .map(|h| h.info.host_id.clone())
                .collect()
        };
        for id in &victims {
            match outage {
                Outage::Kill => self.kill_host(id).await,
                Outage::Freeze => self.freeze_host(id, true),
            }
        }
        Ok(victims)
    }

    /// Brings a cloud (or zone) back: launches succeed again; dead hosts stay dead, frozen
    /// ones resume where they stopped.
    pub fn bring_up(&self, cloud: &str, zone: Option<&str>) -> Result<(), ProviderError> {
        let key = zone.map_or_else(|| cloud.to_string(), |z| format!("{cloud}/{z}"));
        let thaw: Vec<String> = {
            let mut inner = self.lock();
            inner.persisted.down.retain(|d| d != &key);
            self.down.send_replace(inner.persisted.down.clone());
            save_state(&self.cfg.dir, &inner.persisted)?;
            let inner = &*inner;
            inner
                .frozen
                .iter()
                .filter(|id| {
                    inner
                        .persisted
                        .hosts
                        .get(*id)
                        .is_some_and(|h| h.info.cloud == cloud && zone.is_none_or(|z| h.info.zone == z))
                })
                .cloned()
                .collect()
        };
        for id in &thaw {
            self.freeze_host(id, false);
        }
        Ok(())
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) a host's agent and its PostgreSQL: the
    /// agent first on the way down, last on the way up, so it never sees its servers
    /// stopped.
    fn freeze_host(&self, host_id: &str, freeze: bool) {
        let agent = {
            let mut inner = self.lock();
            if freeze {
                inner.frozen.insert(host_id.to_string());
            } else {
                inner.frozen.remove(host_id);
            }
            inner
                .agents
                .get(host_id)
                .and_then(|c| c.id())
                .map(|pid| Pid::from_raw(pid as i32))
        };
        let dir = self.host_dir(host_id);
        let signal_agent = |s: Signal| {
            // The agent leads its own process group (see `start_agent`).
            if let Some(pid) = agent {
                let _ = nix::sys::signal::killpg(pid, s);
            }
        };
        let mut servers = postgres_under(&dir);
        if freeze {
            signal_agent(Signal::SIGSTOP);
            // Until a scan finds nothing new: a backend the postmaster forked while the
            // last scan ran would otherwise serve on. Each round waits until what it
            // signalled has really stopped — a postmaster inside fork() stops only once
            // the child exists — so the next scan sees every child.
            let mut stopped = std::collections::BTreeSet::new();
            for _ in 0..20 {
                let fresh: Vec<Pid> = servers.iter().copied().filter(|p| !stopped.contains(p)).collect();
                if fresh.is_empty() {
                    break;
                }
                for p in &fresh {
                    let _ = kill(*p, Signal::SIGSTOP);
                    stopped.insert(*p);
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while !fresh.iter().all(|p| is_stopped(*p)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                servers = postgres_under(&dir);
            }
        } else {
            for p in &servers {
                let _ = kill(*p, Signal::SIGCONT);
            }
            signal_agent(Signal::SIGCONT);
        }
        tracing::info!(host = %host_id, freeze, servers = servers.len(), "host frozen or thawed");
    }

    /// Whether the whole cloud is down (its API refuses calls).
    fn cloud_down(&self, cloud: &str) -> bool {
        self.lock().persisted.down.iter().any(|d| d == cloud)
    }

    /// Metadata endpoints and test controls.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/hosts/{id}/latest/api/token", put(meta_imds_token))
            .route("/hosts/{id}/latest/meta-data/instance-id", get(meta_instance_id))
            .route(
                "/hosts/{id}/latest/meta-data/spot/instance-action",
                get(meta_spot_action),
            )
            .route(
                "/hosts/{id}/latest/meta-data/events/recommendations/rebalance",
                get(meta_rebalance),
            )
            .route(
                "/hosts/{id}/computeMetadata/v1/instance/preempted",
                get(meta_gcp_preempted),
            )
            .route("/hosts/{id}/highrise/control-url", get(meta_control_url))
            .route("/land/control-url", get(land_control_url))
            .route("/land/hosts", get(list_hosts_http))
            .route("/land/pools", get(pools_http))
            .route("/land/capacity", post(capacity_http))
            .route("/land/hosts/{id}/preempt", post(preempt_http))
            .route("/land/hosts/{id}/kill", post(kill_http))
            .route("/land/clouds/{cloud}/down", post(cloud_down_http))
            .route("/land/clouds/{cloud}/up", post(cloud_up_http))
            .with_state(self)
    }
}

/// A pool as `highrise land pools` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub id: String,
    pub on_demand_hour: String,
    pub spot_hour: String,
    pub spot_capacity: u32,
    pub spot_hosts: u32,
    pub notice_secs: u64,
}

/// One pool per zone of each cloud's region, of the host type the book gives the region.
fn pools_of(cfg: &LocalLandConfig) -> Vec<Pool> {
    let locations: Vec<(String, String, Vec<String>)> = cfg
        .clouds
        .iter()
        .flat_map(|c| {
            c.regions
                .iter()
                .map(move |r| (c.name.clone(), r.name.clone(), r.zones.clone()))
        })
        .collect();
    host_pools(&cfg.prices, &locations)
}

fn save_state(dir: &Path, p: &Persisted) -> Result<()> {
    let path = dir.join("land.json");
    let tmp = dir.join("land.json.tmp");
    let bytes = serde_json::to_vec_pretty(p).context("serialize land state")?;
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Signals every PostgreSQL process working under `dir` (a host's disk) and waits up to
/// 10 s for them to go. They are found by their working directory, which PostgreSQL sets to
/// its data directory, so a server whose `postmaster.pid` a full disk left empty is found
/// as well as any other.
fn kill_postgres_under(dir: &Path, signal: Signal) {
    let pids = postgres_under(dir);
    for pid in &pids {
        let _ = kill(*pid, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| kill(*p, None).is_ok()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether the process is stopped (state `T` or `t` in `/proc/<pid>/stat`) or gone.
fn is_stopped(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| matches!(state, "T" | "t" | "Z" | "X")),
        Err(_) => true,
    }
}

/// The PostgreSQL processes working under `dir` (by their working directory).
fn postgres_under(dir: &Path) -> Vec<Pid> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "postgres"
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .map(Pid::from_raw)
        .collect()
}

#[async_trait]
impl Provider for LocalLand {
    fn clouds(&self) -> Vec<Cloud> {
        self.cfg.clouds.clone()
    }

    async fn launch_host(&self, req: LaunchRequest) -> Result<HostInfo, ProviderError> {
        let record = {
            let mut inner = self.lock();
            if let Some(h) = inner.persisted.hosts.get(&req.host_id) {
                return Ok(h.info.clone());
            }
            let (cloud_idx, cloud) = self
                .cfg
                .clouds
                .iter()
                .enumerate()
                .find(|(_, c)| c.name == req.cloud)
                .ok_or_else(|| ProviderError::UnknownLocation(req.cloud.clone()))?;
            let region = cloud
                .regions
                .iter()
                .find(|r| r.name == req.region)
                .ok_or_else(|| ProviderError::UnknownLocation(format!("{}/{}", req.cloud, req.region)))?;
            if inner.persisted.down.contains(&req.cloud) {
                return Err(ProviderError::Unreachable(format!("cloud {} is down", req.cloud)));
            }
            let in_cloud: Vec<&HostRecord> = inner
                .persisted
                .hosts
                .values()
                .filter(|h| h.info.cloud == req.cloud && h.info.state != HostState::Terminated)
                .collect();
            if let Some(z) = &req.zone {
                if !region.zones.contains(z) {
                    return Err(ProviderError::UnknownLocation(format!(
                        "{}/{}/{z}",
                        req.cloud, req.region
                    )));
                }
            }
            let host_type = self
                .cfg
                .prices
                .region(&req.cloud, &req.region)
                .map_or_else(|| "local".to_string(), |r| r.host_type().name.clone());
            let t = self.market_time();
            let pool_of = |zone: &str| PoolId {
                cloud: req.cloud.clone(),
                region: req.region.clone(),
                zone: zone.to_string(),
                instance_type: host_type.clone(),
            };
            // A spot launch needs room in its pool: fewer live spot hosts than capacity.
            let spot_room = |zone: &str| {
                let pool = pool_of(zone);
                let held = in_cloud
                    .iter()
                    .filter(|h| h.info.market == Market::Spot && h.info.pool() == pool)
                    .count();
                (held as u32) < inner.market.capacity(&pool, t)
            };
            let zones: Vec<&String> = region
                .zones
                .iter()
                .filter(|z| req.zone.as_ref().is_none_or(|want| want == *z))
                .filter(|z| !inner.persisted.down.contains(&format!("{}/{z}", req.cloud)))
                .collect();
            if zones.is_empty() {
                let what = req
                    .zone
                    .as_deref()
                    .map_or("every zone".to_string(), |z| format!("zone {z}"));
                return Err(ProviderError::NoCapacity(format!("{what} of {} is down", req.cloud)));
            }
            let zones: Vec<&String> = if req.market == Market::Spot {
                let open: Vec<&String> = zones.into_iter().filter(|z| spot_room(z)).collect();
                if open.is_empty() {
                    let what = req
                        .zone
                        .as_deref()
                        .map_or_else(|| format!("{}/{}", req.cloud, req.region), |z| pool_of(z).to_string());
                    return Err(ProviderError::NoCapacity(format!("no spot capacity in {what}")));
                }
                open
            } else {
                zones
            };
            // Spread over zones: the zone with the fewest live hosts.
            let zone = zones
                .iter()
                .min_by_key(|z| in_cloud.iter().filter(|h| &&h.info.zone == *z).count())
                .map(|z| z.to_string())
                .unwrap_or_default();
            let base = inner.persisted.octet_base;
            let taken: Vec<&str> = in_cloud.iter().map(|h| h.info.address.as_str()).collect();
            let address = (1..=254u16)
                .map(|n| format!("127.{base}.{}.{n}", cloud_idx + 1))
                .find(|a| !taken.contains(&a.as_str()))
                .ok_or_else(|| ProviderError::NoCapacity(format!("cloud {} is full", req.cloud)))?;
            let record = HostRecord {
                info: HostInfo {
                    host_id: req.host_id.clone(),
                    cloud: req.cloud.clone(),
                    region: req.region.clone(),
                    zone,
                    market: req.market,
                    instance_type: host_type,
                    address,
                    state: HostState::Running,
                    disk_bytes: req.disk_bytes.or(self.cfg.host_disk_bytes),
                },
                bootstrap_token: req.bootstrap_token.clone(),
                control_url: req.control_url.clone(),
                control_ca: req.control_ca.clone(),
                notice_deadline: None,
                launched_at: unix_now(),
                disk_bytes: req.disk_bytes.or(self.cfg.host_disk_bytes),
            };
            inner.persisted.hosts.insert(req.host_id.clone(), record.clone());
            save_state(&self.cfg.dir, &inner.persisted)?;
            record
        };
        if req.market == Market::Spot {
            tracing::info!(host = %req.host_id, "launched on the spot market");
        }
        self.start_agent(&record)?;
        Ok(record.info)
    }

    async fn terminate_host(&self, host_id: &str) -> Result<(), ProviderError> {
        let cloud = self.lock().persisted.hosts.get(host_id).map(|h| h.info.cloud.clone());
        if let Some(cloud) = cloud.filter(|c| self.cloud_down(c)) {
            return Err(ProviderError::Unreachable(format!("cloud {cloud} is down")));
        }
        let child = self.lock().agents.remove(host_id);
        if let Some(mut child) = child {
            stop_child(&mut child, Duration::from_secs(30)).await;
        }
        self.kill_host(host_id).await;
        Ok(())
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>, ProviderError> {
        Ok(self.lock().persisted.hosts.values().map(|h| h.info.clone()).collect())
    }

    async fn create_network(&self, namespace: &str, cidr: &str) -> Result<(), ProviderError> {
        // Said to the tenant as what this land cannot do, not as a server error.
        if !nix::unistd::geteuid().is_root() {
            return Err(ProviderError::Unsupported(
                "tenant networks in this land are network namespaces, which only root can make: run `highrise up` as root".into(),
            ));
        }
        let (namespace, cidr) = (namespace.to_string(), cidr.to_string());
        tokio::task::spawn_blocking(move || network::create(&namespace, &cidr))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(ProviderError::Other)
    }

    async fn delete_network(&self, namespace: &str) -> Result<(), ProviderError> {
        let namespace = namespace.to_string();
        tokio::task::spawn_blocking(move || network::delete(&namespace))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(ProviderError::Other)
    }

    async fn probe(&self, cloud: &str) -> Result<(), ProviderError> {
        if !self.cfg.clouds.iter().any(|c| c.name == cloud) {
            return Err(ProviderError::UnknownLocation(cloud.into()));
        }
        if self.cloud_down(cloud) {
            return Err(ProviderError::Unreachable(format!("cloud {cloud} is down")));
        }
        Ok(())
    }

    fn pools(&self) -> Vec<Pool> {
        let t = self.market_time();
        let inner = self.lock();
        inner
            .market
            .pools()
            .map(|p| Pool {
                spot_hour: inner.market.spot_price(&p.id, t).unwrap_or(p.spot_hour),
                notice_secs: self.notice_secs_for(&p.id.cloud, &p.id.region),
                ..p.clone()
            })
            .collect()
    }
}

fn http_error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": "land", "message": message } })),
    )
        .into_response()
}

fn provider_error(e: ProviderError) -> Response {
    let status = match e {
        ProviderError::UnknownHost(_) | ProviderError::UnknownLocation(_) => StatusCode::NOT_FOUND,
        ProviderError::NoCapacity(_) => StatusCode::CONFLICT,
        ProviderError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ProviderError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        ProviderError::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    http_error(status, format!("{e:#}"))
}

/// The control plane's URL as the host's metadata tells it (the host's user data).
async fn meta_control_url(State(land): State<Arc<LocalLand>>, UrlPath(id): UrlPath<String>) -> Response {
    match land.lock().persisted.hosts.get(&id) {
        Some(h) if h.info.state != HostState::Terminated => h.control_url.clone().into_response(),
        _ => http_error(StatusCode::NOT_FOUND, format!("unknown host {id}")),
    }
}

/// The control plane's URL as the land tells its proxies.
async fn land_control_url(State(land): State<Arc<LocalLand>>) -> Response {
    match land.lock().persisted.control_url.clone() {
        Some(url) => url.into_response(),
        None => http_error(StatusCode::NOT_FOUND, "the land has not booted yet".to_string()),
    }
}

/// IMDSv2, as EC2 documents it: `PUT /latest/api/token` with
/// `X-aws-ec2-metadata-token-ttl-seconds` (1–21600) answers a session token; every read of
/// the AWS-shaped metadata must carry it in `X-aws-ec2-metadata-token` — the land's hosts
/// run with tokens required (`HttpTokens=required`, as the EC2 land launches them): a read
/// without a valid token of that host is `401`.
async fn meta_imds_token(
    State(land): State<Arc<LocalLand>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let ttl = headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|t| (1..=21_600).contains(t));
    let Some(ttl) = ttl else {
        return http_error(
            StatusCode::BAD_REQUEST,
            "X-aws-ec2-metadata-token-ttl-seconds must be 1-21600".into(),
        );
    };
    let mut inner = land.lock();
    match inner.persisted.hosts.get(&id) {
        Some(h) if h.info.state != HostState::Terminated && !speaks_gcp(&land, h) => {}
        _ => return StatusCode::NOT_FOUND.into_response(),
    }
    let now = unix_now();
    inner.imds_tokens.retain(|_, (_, expires)| *expires > now);
    let token: String = {
        use rand::Rng;
        let bytes: [u8; 24] = rand::thread_rng().gen();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    inner.imds_tokens.insert(token.clone(), (id, now + ttl));
    token.into_response()
}

/// `None` when the request carries a live IMDSv2 token of host `id`; else the `401`.
fn imds_refused(land: &LocalLand, id: &str, headers: &HeaderMap) -> Option<Response> {
    let token = headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok());
    let inner = land.lock();
    let valid = token
        .and_then(|t| inner.imds_tokens.get(t))
        .is_some_and(|(host, expires)| host == id && *expires > unix_now());
    (!valid).then(|| StatusCode::UNAUTHORIZED.into_response())
}

async fn meta_instance_id(
    State(land): State<Arc<LocalLand>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = imds_refused(&land, &id, &headers) {
        return refused;
    }
    match land.lock().persisted.hosts.get(&id) {
        Some(h) if h.info.state != HostState::Terminated => id.into_response(),
        _ => http_error(StatusCode::NOT_FOUND, format!("unknown host {id}")),
    }
}

/// The cloud whose metadata shape a host's land cloud speaks (the book's cloud it is priced as).
fn speaks_gcp(land: &LocalLand, h: &HostRecord) -> bool {
    land.cfg
        .prices
        .region(&h.info.cloud, &h.info.region)
        .is_some_and(|r| r.cloud == "gcp")
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// AWS shape: 404 until a notice is posted, then
/// `{"action": "terminate", "time": "2026-12-02T10:00:00Z"}`.
async fn meta_spot_action(
    State(land): State<Arc<LocalLand>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = imds_refused(&land, &id, &headers) {
        return refused;
    }
    let inner = land.lock();
    match inner.persisted.hosts.get(&id) {
        Some(h) if !speaks_gcp(&land, h) => match h.notice_deadline {
            Some(t) => Json(serde_json::json!({ "action": "terminate", "time": rfc3339(t) })).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// AWS shape: the rebalance recommendation, which the land posts with the notice.
async fn meta_rebalance(
    State(land): State<Arc<LocalLand>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = imds_refused(&land, &id, &headers) {
        return refused;
    }
    let inner = land.lock();
    match inner.persisted.hosts.get(&id) {
        Some(h) if !speaks_gcp(&land, h) => match h.notice_deadline {
            Some(t) => {
                let posted = t.saturating_sub(land.notice_secs_for(&h.info.cloud, &h.info.region));
                Json(serde_json::json!({ "noticeTime": rfc3339(posted) })).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// GCP shape: `TRUE` once the host is being preempted, `FALSE` before.
async fn meta_gcp_preempted(State(land): State<Arc<LocalLand>>, UrlPath(id): UrlPath<String>) -> Response {
    let inner = land.lock();
    match inner.persisted.hosts.get(&id) {
        Some(h) if speaks_gcp(&land, h) && h.info.state != HostState::Terminated => {
            if h.notice_deadline.is_some() { "TRUE" } else { "FALSE" }.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn pools_http(State(land): State<Arc<LocalLand>>) -> Response {
    Json(land.pool_status()).into_response()
}

#[derive(Debug, Deserialize)]
struct CapacityBody {
    /// A pool id, or the `cloud/region` (or `cloud`) whose pools all change.
    pool: String,
    /// Spot hosts the pool holds; `null` hands it back to its model.
    capacity: Option<u32>,
}

async fn capacity_http(State(land): State<Arc<LocalLand>>, Json(body): Json<CapacityBody>) -> Response {
    match land.set_capacity(&body.pool, body.capacity) {
        Ok(pools) => Json(serde_json::json!({
            "pools": pools.iter().map(ToString::to_string).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => provider_error(e),
    }
}

async fn list_hosts_http(State(land): State<Arc<LocalLand>>) -> Response {
    match land.list_hosts().await {
        Ok(hosts) => Json(hosts).into_response(),
        Err(e) => provider_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct PreemptQuery {
    /// Seconds of notice (0: none, the host dies at once); the cloud's when omitted.
    notice: Option<u64>,
}

async fn preempt_http(
    State(land): State<Arc<LocalLand>>,
    UrlPath(id): UrlPath<String>,
    axum::extract::Query(q): axum::extract::Query<PreemptQuery>,
) -> Response {
    match land.preempt(&id, q.notice) {
        Ok(t) => Json(serde_json::json!({ "host_id": id, "terminates_at": t })).into_response(),
        Err(e) => provider_error(e),
    }
}

/// Kills a host at once, as a dying VM: no notice, disk wiped.
async fn kill_http(State(land): State<Arc<LocalLand>>, UrlPath(id): UrlPath<String>) -> Response {
    let known = land
        .lock()
        .persisted
        .hosts
        .get(&id)
        .is_some_and(|h| h.info.state != HostState::Terminated);
    if !known {
        return provider_error(ProviderError::UnknownHost(id));
    }
    land.kill_host(&id).await;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct ZoneQuery {
    zone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DownQuery {
    zone: Option<String>,
    /// Freeze the hosts instead of killing them (they come back with the cloud).
    #[serde(default)]
    freeze: bool,
}

async fn cloud_down_http(
    State(land): State<Arc<LocalLand>>,
    UrlPath(cloud): UrlPath<String>,
    axum::extract::Query(q): axum::extract::Query<DownQuery>,
) -> Response {
    let outage = if q.freeze { Outage::Freeze } else { Outage::Kill };
    match land.take_down(&cloud, q.zone.as_deref(), outage).await {
        Ok(hosts) if q.freeze => Json(serde_json::json!({ "frozen": hosts })).into_response(),
        Ok(hosts) => Json(serde_json::json!({ "terminated": hosts })).into_response(),
        Err(e) => provider_error(e),
    }
}

async fn cloud_up_http(
    State(land): State<Arc<LocalLand>>,
    UrlPath(cloud): UrlPath<String>,
    axum::extract::Query(q): axum::extract::Query<ZoneQuery>,
) -> Response {
    match land.bring_up(&cloud, q.zone.as_deref()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => provider_error(e),
    }
}
