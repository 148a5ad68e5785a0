//! The host agent: one per data-plane host.
//!
//! It dials out to the control plane (never the other way round): registers with its
//! bootstrap token for a host-scoped token, long-polls its desired state and keeps the last
//! copy on disk, and converges — one supervisor task per PostgreSQL instance creates
//! (from a pre-initialised template when it is ready), configures, starts, health-checks,
//! stops and deletes. It reports what it observes in heartbeats. With the control plane
//! down it keeps running what it last knew (static stability).

mod disk;
mod durability;
mod metadata;
mod meters;
mod supervisor;

use anyhow::{bail, Context, Result};
use highrise_api::{BackupReport, DesiredState, Heartbeat, ObservedInstance, RegisterHost, Registered};
use highrise_pg::{PgBin, RunAs};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub host_id: String,
    /// The host's disk: token, desired state, template, instances.
    pub dir: PathBuf,
    /// The host's own address; PostgreSQL listens here.
    pub address: String,
    pub control_url: String,
    /// The CA certificate (PEM) that the control plane's TLS certificate must chain to;
    /// with it the agent trusts no other root (`https` control URLs only verify against it).
    pub control_ca: Option<String>,
    pub metadata_url: Option<String>,
    pub bootstrap_token: Option<String>,
    /// Stop (and stop PostgreSQL) when this process is no longer the agent's parent.
    pub parent_pid: Option<u32>,
    /// `dir` is on a file system other hosts share: the storage guard ignores the disk
    /// (only plans' storage counts) and keeps no reserve there.
    pub shared_disk: bool,
    /// How often heartbeats carry the usage counters ([`METER_EVERY`] by default; a closed
    /// counter goes with the next beat whatever this says).
    pub meter_every: Duration,
}

/// How often heartbeats carry usage counters by default: once a minute keeps metering
/// within what one control plane takes from 10,000 hosts (bench/README.md, metering),
/// where every beat (500 ms) would not fit. The counters are on the host's disk, so a
/// longer interval delays usage, never loses it — except a host lost with its disk,
/// which loses at most its last interval (in the customer's favour).
pub const METER_EVERY: Duration = Duration::from_secs(60);

/// Whether a heartbeat carries the counters: none sent yet, the interval passed since the
/// last that was taken, or a closed counter to deliver.
fn meters_due(last_taken: Option<std::time::Instant>, every: Duration, closed: bool) -> bool {
    closed || last_taken.is_none_or(|t| t.elapsed() >= every)
}

/// What supervisors share with the heartbeat task.
pub(crate) struct Shared {
    pub cfg: AgentConfig,
    pub bin: PgBin,
    pub run_as: Option<RunAs>,
    pub observed: Mutex<BTreeMap<String, ObservedInstance>>,
    pub observed_changed: Notify,
    pub template: tokio::sync::OnceCell<Result<PathBuf, String>>,
    /// Finished base backups, reported until the desired state stops asking for them.
    pub backups: Mutex<BTreeMap<String, BackupReport>>,
    /// A spot notice the metadata endpoint gave, reported in every heartbeat.
    pub notice: Mutex<Option<highrise_api::SpotNotice>>,
    /// The host disk's room, kept current by [`disk::watch`].
    pub disk: watch::Sender<Option<disk::Room>>,
    /// Each instance's usage counter, on the host's disk.
    pub meters: meters::Meters,
}

pub(crate) fn unix_now() -> i64 {
    unix_now_ms().div_euclid(1000)
}

pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Shared {
    pub fn report(&self, o: ObservedInstance) {
        let mut map = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&o.id) != Some(&o) {
            map.insert(o.id.clone(), o);
            drop(map);
            self.observed_changed.notify_one();
        }
    }

    pub fn report_backup(&self, r: BackupReport) {
        self.backups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.id.clone(), r);
        self.observed_changed.notify_one();
    }

    /// Whether backup `id` was taken already (its report is waiting to be acknowledged).
    pub fn backup_reported(&self, id: &str) -> bool {
        self.backups.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id)
    }

    /// Drops reports of backups the desired state no longer asks for (acknowledged).
    pub fn retain_backups(&self, wanted: &[&str]) {
        self.backups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| wanted.contains(&id.as_str()));
    }

    pub fn forget(&self, id: &str) {
        let mut map = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(id).is_some() {
            drop(map);
            self.observed_changed.notify_one();
        }
    }

    /// The template data directory, initialised once per host (a never-started initdb).
    pub async fn template(&self) -> Result<PathBuf> {
        let res = self
            .template
            .get_or_init(|| async {
                let dir = self.cfg.dir.join("template");
                let ready = self.cfg.dir.join("template.ready");
                if ready.exists() {
                    return Ok(dir);
                }
                let bin = self.bin.clone();
                let run_as = self.run_as;
                let d = dir.clone();
                let res = tokio::task::spawn_blocking(move || -> Result<()> {
                    if d.exists() {
                        std::fs::remove_dir_all(&d).context("clear half-made template")?;
                    }
                    highrise_pg::initdb(&bin, &d, run_as)?;
                    highrise_pg::sync_datadir(&bin, &d, run_as)?;
                    std::fs::write(&ready, b"").context("mark template ready")?;
                    Ok(())
                })
                .await;
                match res {
                    Ok(Ok(())) => Ok(dir),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(e) => Err(format!("template task failed: {e}")),
                }
            })
            .await;
        res.clone().map_err(|e| anyhow::anyhow!("prepare template: {e}"))
    }
}

/// The agent's HTTP client: with a CA, the control plane's certificate must chain to it
/// and to nothing else (no public roots: a certificate some public CA issued for the
/// control plane's name is not the control plane).
fn http(control_ca: Option<&str>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .tls_built_in_root_certs(false);
    if let Some(pem) = control_ca {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes()).context("read the control plane's CA certificate")?;
        b = b.add_root_certificate(ca);
    }
    b.build().context("build HTTP client")
}

/// Runs the agent until SIGTERM/SIGINT (or the parent's exit, if asked).
pub async fn run(cfg: AgentConfig) -> Result<()> {
    let run_as = RunAs::detect()?;
    let bin = PgBin::find(15)?;
    std::fs::create_dir_all(cfg.dir.join("i")).with_context(|| format!("create {}", cfg.dir.display()))?;
    if run_as.is_some() {
        check_traversable(&cfg.dir)?;
    }
    let client = http(cfg.control_ca.as_deref())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Where the control plane is: the command line's URL, then what the host's metadata
    // says (the control plane may move; the agent follows without a restart).
    let control = metadata::ControlUrl::new(&cfg.control_url);
    let follower = cfg.metadata_url.clone().map(|base| {
        tokio::spawn(metadata::follow_control_url(
            client.clone(),
            base,
            control.clone(),
            stop_rx.clone(),
        ))
    });
    // Registration retries while the control plane is away; a stop request (or the
    // parent's exit) must still end the agent.
    let token = tokio::select! {
        t = host_token(&cfg, &client, &control) => t?,
        _ = wait_for_stop(&cfg) => {
            tracing::info!("stopping before registration finished");
            return Ok(());
        }
    };
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        bin,
        run_as,
        observed: Mutex::new(BTreeMap::new()),
        observed_changed: Notify::new(),
        template: tokio::sync::OnceCell::new(),
        backups: Mutex::new(BTreeMap::new()),
        notice: Mutex::new(None),
        disk: watch::channel(None).0,
        meters: meters::Meters::open(&cfg.dir.join("meters"))?,
    });
    // Prepare the template before anyone asks for it.
    {
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(e) = s.template().await {
                tracing::error!("{e:#}");
            }
        });
    }

    let desired_file = cfg.dir.join("desired.json");
    let initial: Option<DesiredState> = match std::fs::read(&desired_file) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!("ignore unreadable {}: {e}", desired_file.display());
                None
            }
        },
        Err(_) => None,
    };
    let (desired_tx, desired_rx) = watch::channel(initial);

    let poller = tokio::spawn(poll_desired(
        client.clone(),
        control.clone(),
        token.clone(),
        desired_file,
        desired_tx,
        stop_rx.clone(),
    ));
    let notices = cfg.metadata_url.clone().map(|base| {
        tokio::spawn(metadata::watch_notice(
            client.clone(),
            base,
            Arc::clone(&shared),
            stop_rx.clone(),
        ))
    });
    let beats = tokio::spawn(heartbeats(client, control, token, Arc::clone(&shared), stop_rx.clone()));
    let disk_watch = tokio::spawn(disk::watch(Arc::clone(&shared), stop_rx.clone()));
    let converge = tokio::spawn(supervisor::converge(Arc::clone(&shared), desired_rx, stop_rx));

    wait_for_stop(&cfg).await;
    tracing::info!("stopping: PostgreSQL instances are shut down, their data stays");
    let _ = stop_tx.send(true);
    if let Err(e) = converge.await {
        tracing::error!("converge task: {e}");
    }
    poller.abort();
    beats.abort();
    if let Some(f) = follower {
        f.abort();
    }
    disk_watch.abort();
    if let Some(n) = notices {
        n.abort();
    }
    Ok(())
}

/// PostgreSQL runs as another OS user and must be able to reach the host directory.
fn check_traversable(dir: &Path) -> Result<()> {
    let dir = highrise_pg::open_to_postgres(dir)?;
    highrise_pg::open_to_postgres(&dir.join("i"))?;
    Ok(())
}

async fn wait_for_stop(cfg: &AgentConfig) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    let parent = cfg.parent_pid;
    let orphaned = async move {
        loop {
            if let Some(p) = parent {
                if nix::unistd::getppid().as_raw() as u32 != p {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = orphaned => tracing::warn!("parent process exited"),
    }
}

/// The host token from disk, or a fresh one from registering with the bootstrap token.
async fn host_token(cfg: &AgentConfig, client: &reqwest::Client, control: &metadata::ControlUrl) -> Result<String> {
    let path = cfg.dir.join("host-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let bootstrap = cfg
        .bootstrap_token
        .clone()
        .context("no host token on disk and no bootstrap token (HIGHRISE_BOOTSTRAP_TOKEN) given")?;
    let body = RegisterHost {
        host_id: cfg.host_id.clone(),
        bootstrap_token: bootstrap,
        address: cfg.address.clone(),
    };
    let mut delay = Duration::from_millis(50);
    loop {
        let res = client
            .post(format!("{}/v1/agent/register", control.get()))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                let reg: Registered = r.json().await.context("parse registration answer")?;
                write_atomic(&path, reg.host_token.as_bytes())?;
                tracing::info!("registered with the control plane");
                return Ok(reg.host_token);
            }
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                bail!("the control plane refused the bootstrap token")
            }
            Ok(r) => tracing::warn!("register: control plane answered {}", r.status()),
            // The whole chain: why a TLS handshake failed is in the sources.
            Err(e) => tracing::warn!("register: {:#}", anyhow::Error::from(e)),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

async fn poll_desired(
    client: reqwest::Client,
    control: metadata::ControlUrl,
    token: String,
    file: PathBuf,
    tx: watch::Sender<Option<DesiredState>>,
    stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let known = tx.borrow().as_ref().map(|d| d.version.clone()).unwrap_or_default();
        let res = client
            .get(format!("{}/v1/agent/desired", control.get()))
            .query(&[("known", known.as_str()), ("wait", "25")])
            .bearer_auth(&token)
            .timeout(Duration::from_secs(35))
            .send()
            .await;
        let res = match res {
            Ok(r) if r.status().is_success() => r.json::<DesiredState>().await.map_err(anyhow::Error::from),
            // The control plane gave this host up (it was silent, or cut off with its
            // cloud) and replaced what it ran: whatever this host still runs is stale — a
            // primary of an old term among them — so it wants nothing any more.
            Ok(r) if r.status() == reqwest::StatusCode::GONE => {
                if tx.borrow().as_ref().is_some_and(|d| !d.instances.is_empty()) {
                    tracing::warn!("the control plane gave this host up: stopping every instance");
                }
                Ok(DesiredState {
                    version: GIVEN_UP.into(),
                    instances: Vec::new(),
                })
            }
            Ok(r) => Err(anyhow::anyhow!("control plane answered {}", r.status())),
            Err(e) => Err(e.into()),
        };
        match res {
            Ok(d) => {
                if d.version == GIVEN_UP && tx.borrow().as_ref() == Some(&d) {
                    // Nothing more will come: ask again now and then, quietly.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                failures = 0;
                if tx.borrow().as_ref() != Some(&d) {
                    match serde_json::to_vec(&d)
                        .map_err(anyhow::Error::from)
                        .and_then(|b| write_atomic(&file, &b))
                    {
                        Ok(()) => {}
                        Err(e) => tracing::error!("persist desired state: {e:#}"),
                    }
                    tx.send_replace(Some(d));
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!("fetch desired state (keeping the last one): {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The desired state's version once the control plane has given the host up.
const GIVEN_UP: &str = "given-up";

/// How often the agent beats when nothing changed (a change is reported at once). The
/// control plane takes two missed beats for a silent host (`planner::HOST_DEAD_MS`).
const BEAT_EVERY: Duration = Duration::from_millis(500);

async fn heartbeats(
    client: reqwest::Client,
    control: metadata::ControlUrl,
    token: String,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut meters_taken: Option<std::time::Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let instances: Vec<ObservedInstance> = shared
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let backups: Vec<BackupReport> = shared
            .backups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let notice = shared.notice.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let room = *shared.disk.borrow();
        let disk = room
            .filter(|_| !shared.cfg.shared_disk)
            .map(|r| highrise_api::HostDisk {
                total_bytes: r.total_bytes,
                free_bytes: r.free_bytes,
                reserve_bytes: r.reserve_bytes,
                reserve_released: r.released,
            });
        let meters = if meters_due(meters_taken, shared.cfg.meter_every, shared.meters.any_closed()) {
            shared.meters.read(unix_now_ms())
        } else {
            Vec::new()
        };
        let beat = Heartbeat {
            instances,
            backups,
            notice,
            disk,
            meters,
        };
        let res = client
            .post(format!("{}/v1/agent/heartbeat", control.get()))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(5))
            .json(&beat)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                failures = 0;
                if !beat.meters.is_empty() {
                    meters_taken = Some(std::time::Instant::now());
                    shared.meters.acknowledged(&beat.meters);
                }
            }
            Ok(r) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!("heartbeat: control plane answered {}", r.status());
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!("heartbeat: {e}");
                }
            }
        }
        tokio::select! {
            _ = shared.observed_changed.notified() => {}
            _ = tokio::time::sleep(BEAT_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod cadence_tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn counters_go_once_an_interval_or_at_once_when_one_closed() {
        let every = Duration::from_secs(60);
        assert!(meters_due(None, every, false), "the first beat carries them");
        let just = Instant::now();
        assert!(!meters_due(Some(just), every, false));
        assert!(meters_due(Some(just), every, true), "a closed counter goes at once");
        let long_ago = just.checked_sub(Duration::from_secs(61)).unwrap();
        assert!(meters_due(Some(long_ago), every, false));
    }
}
