//! Convergence: one supervisor task per PostgreSQL instance of the desired state.
//!
//! A supervisor owns its instance's directory `<host>/i/<id>/` (data directory, socket
//! directory, log, `instance.json`) and nothing else. It creates the instance (copy of the
//! host's template, or initdb), configures and starts it, checks its health every second,
//! restarts it when it dies, and — when the instance leaves the desired state — stops it
//! and removes its directory. On agent shutdown it stops PostgreSQL and keeps the data.

use crate::disk;
use crate::durability::{self, Archiver};
use crate::{write_atomic, Shared};
use anyhow::{bail, Context, Result};
use highrise_api::{DesiredState, InstanceSpec, InstanceState, ObservedInstance, Seed, StorageLevel, StorageUsage};
use highrise_planner::storage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a running instance's health and replication state are checked. A standby
/// that lost its primary is reported at the next check (and at once in a heartbeat), which
/// bounds how quickly a failover can follow.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Run(Box<InstanceSpec>),
    Delete,
}

/// Follows the desired state: starts a supervisor per new instance, updates existing
/// ones, deletes what left. Returns after every supervisor has stopped on shutdown.
pub async fn converge(
    shared: Arc<Shared>,
    mut desired: watch::Receiver<Option<DesiredState>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks: BTreeMap<String, (watch::Sender<Command>, JoinHandle<()>)> = BTreeMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let current = desired.borrow_and_update().clone();
        tasks.retain(|_, (_, h)| !h.is_finished());
        if let Some(d) = current {
            for spec in &d.instances {
                let cmd = Command::Run(Box::new(spec.clone()));
                match tasks.get(&spec.id) {
                    Some((tx, _)) => {
                        tx.send_if_modified(|c| {
                            let changed = *c != cmd;
                            *c = cmd.clone();
                            changed
                        });
                    }
                    None => {
                        let (tx, rx) = watch::channel(cmd);
                        let h = tokio::spawn(supervise(Arc::clone(&shared), spec.id.clone(), rx, stop.clone()));
                        tasks.insert(spec.id.clone(), (tx, h));
                    }
                }
            }
            let wanted: Vec<&str> = d.instances.iter().map(|s| s.id.as_str()).collect();
            let backups: Vec<&str> = d.instances.iter().filter_map(|s| s.backup.as_deref()).collect();
            shared.retain_backups(&backups);
            for (id, (tx, _)) in tasks.iter() {
                if !wanted.contains(&id.as_str()) {
                    tx.send_if_modified(|c| {
                        let changed = *c != Command::Delete;
                        *c = Command::Delete;
                        changed
                    });
                }
            }
            // Directories of instances this host no longer runs (e.g. deleted while the
            // agent was down), and their counters still open.
            let mut gone = shared.meters.open_ids();
            if let Ok(entries) = std::fs::read_dir(shared.cfg.dir.join("i")) {
                gone.extend(entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()));
            }
            for id in gone {
                if !wanted.contains(&id.as_str()) && !tasks.contains_key(&id) {
                    let (tx, rx) = watch::channel(Command::Delete);
                    let h = tokio::spawn(supervise(Arc::clone(&shared), id.clone(), rx, stop.clone()));
                    tasks.insert(id, (tx, h));
                }
            }
        }
        tokio::select! {
            r = desired.changed() => if r.is_err() { break },
            _ = stop.changed() => {}
            // Notice supervisors that finished (deletions) and re-check.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    for (_, (_, h)) in tasks {
        let _ = h.await;
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LocalState {
    port: u16,
    /// The server was started with its spec applied once: from here on it is only ever
    /// restarted, never made again.
    initialized: bool,
    /// The data directory is whole and in place (see [`Instance::create`]). It is never
    /// made again for this instance: a standby that streamed keeps every commit it
    /// acknowledged, whatever happens to the attempt that made it.
    #[serde(default)]
    created: bool,
    /// A restore's archive recovery, until the server has been promoted.
    #[serde(default)]
    recovery: Option<highrise_pg::Recovery>,
    /// The standbys in the `synchronous_standby_names` the server last ran with. Reported
    /// while it is down too — a primary stopped for a switchover, or one that cannot
    /// start after the agent restarted: the planner needs the set to prove which standby
    /// holds every acknowledged commit.
    #[serde(default)]
    running_sync: Vec<String>,
    /// Copied from the host's template and not backed up yet: the first backup can be
    /// that template (see [`durability::Genesis`]).
    #[serde(default)]
    genesis: Option<durability::Genesis>,
    /// A standby: where its data directory came from.
    #[serde(default)]
    seed: Option<Seed>,
}

struct Instance {
    shared: Arc<Shared>,
    id: String,
    dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    state_file: PathBuf,
    local: LocalState,
    pid: Option<u32>,
    /// The spec whose role and database were last applied to the running server.
    applied: Option<InstanceSpec>,
    /// The cluster-dependent settings the running server was last configured with.
    applied_config: Option<ConfigKey>,
    /// The last health check's view of the server.
    status: Option<highrise_pg::Status>,
    admin: Option<sqlx::PgConnection>,
    /// A primary's WAL archiver.
    archiver: Option<Archiver>,
    /// The base backup being taken (its id).
    backup: Option<(String, JoinHandle<()>)>,
    /// The last measurement of the data directory and when it was taken, and one being
    /// taken (walking a big data directory takes a while: off the async threads).
    storage: Option<(Instant, StorageUsage)>,
    measuring: Option<JoinHandle<Result<highrise_pg::DiskUsage>>>,
    /// The storage guard's level, as applied to the running server.
    guard: storage::Level,
    /// When a primary's role and database settings were last checked against the
    /// parameter allow-list.
    parameters_checked: Option<Instant>,
}

/// How often a primary's role and database settings are checked against the allow-list.
const CHECK_PARAMETERS_EVERY: Duration = Duration::from_secs(2);

/// How often the data directory's size and its disk's room are measured.
const MEASURE_STORAGE_EVERY: Duration = Duration::from_secs(5);

impl Instance {
    fn new(shared: Arc<Shared>, id: String) -> Self {
        let dir = shared.cfg.dir.join("i").join(&id);
        let pgdata = dir.join("pgdata");
        // Unix socket paths are limited to 107 bytes; fall back to a short directory.
        let mut socket_dir = dir.join("s");
        if socket_dir.as_os_str().len() + 20 > 100 {
            socket_dir = PathBuf::from(format!("/tmp/highrise-{id}"));
        }
        let state_file = dir.join("instance.json");
        let local = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let pid = highrise_pg::running_pid(&pgdata);
        Self {
            log: dir.join("postgres.log"),
            shared,
            id,
            dir,
            pgdata,
            socket_dir,
            state_file,
            local,
            pid,
            applied: None,
            parameters_checked: None,
            applied_config: None,
            status: None,
            admin: None,
            archiver: None,
            backup: None,
            storage: None,
            measuring: None,
            guard: storage::Level::Normal,
        }
    }

    /// The guard's reading of this instance now: the last measurement of its data and WAL
    /// against the plan, and the disk's current room (`None` before the disk was read).
    fn storage_reading(&self, spec: &InstanceSpec) -> Option<storage::Reading> {
        let room = (*self.shared.disk.borrow())?;
        let used = self.storage.map_or(0, |(_, s)| s.data_bytes + s.wal_bytes);
        Some(disk::reading(&room, used, spec.storage_limit_bytes.unwrap_or(0)))
    }

    /// A server that cannot start for want of disk says so with the numbers (its log says
    /// "No space left on device" somewhere in a long tail), so the restart loop is not silent
    /// about its cause.
    fn explain_start_failure(&self, e: anyhow::Error) -> anyhow::Error {
        let tail = highrise_pg::log_tail(&self.log);
        if !tail.contains("No space left on device") {
            return e;
        }
        let room = *self.shared.disk.borrow();
        let numbers = match room {
            Some(r) if r.total_bytes > 0 => format!(
                "{} MiB free of {} MiB{}",
                r.free_bytes >> 20,
                r.total_bytes >> 20,
                if r.released {
                    "; the reserve is released already"
                } else {
                    ""
                }
            ),
            _ => "the disk's room unknown".to_string(),
        };
        e.context(format!(
            "PostgreSQL cannot start: its disk is full ({numbers}); free space on the host"
        ))
    }

    /// Moves the storage guard to the level the reading calls for. Entering `Critical`
    /// cancels the tenant's running write transactions (read-only only holds new ones
    /// back); read-only itself is applied by the configuration (`refresh_config`).
    async fn guard_storage(&mut self, spec: &InstanceSpec) {
        let Some(reading) = self.storage_reading(spec) else {
            return;
        };
        let (fill, bound) = storage::fill(&reading);
        let released = self.shared.disk.borrow().is_some_and(|r| r.released);
        let level = storage::guard_level(self.guard, fill, released);
        if level == self.guard {
            return;
        }
        tracing::warn!(
            instance = %self.id,
            from = self.guard.as_str(),
            to = level.as_str(),
            "storage {}.{}% full ({bound:?} limit)",
            fill / 10,
            fill % 10
        );
        let primary = spec.role == "primary";
        if primary && level >= storage::Level::Critical && self.guard < storage::Level::Critical {
            let owner = spec.owner.clone();
            let cancelled = match self.admin().await {
                Ok(conn) => highrise_pg::cancel_writers(conn, &owner).await,
                Err(e) => Err(e),
            };
            match cancelled {
                Ok(n) => tracing::warn!(instance = %self.id, "storage critical: cancelled {n} write transactions"),
                // Tried again at the next round: the level is not taken until it worked.
                Err(e) => return tracing::error!(instance = %self.id, "{e:#}"),
            }
        }
        self.guard = level;
    }

    /// Resets what the tenant keeps set on its role or database beyond the parameter
    /// allow-list (every few seconds; PostgreSQL tells nobody when it changes).
    async fn check_parameters(&mut self, spec: &InstanceSpec) {
        if self
            .parameters_checked
            .is_some_and(|at| at.elapsed() < CHECK_PARAMETERS_EVERY)
        {
            return;
        }
        self.parameters_checked = Some(Instant::now());
        let id = self.id.clone();
        let res = match self.admin().await {
            Ok(conn) => {
                let check = highrise_pg::wall::reset_parameters(conn, &spec.owner, &spec.database);
                match tokio::time::timeout(Duration::from_secs(3), check).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("timed out")),
                }
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(reset) => {
                for sql in reset {
                    tracing::warn!(instance = %id, "a setting the tenant may not keep was reset: {sql}");
                }
            }
            Err(e) => {
                // The session may be mid-statement: a fresh one next time.
                self.admin = None;
                tracing::warn!(instance = %id, "check role and database settings: {e:#}");
            }
        }
    }

    /// Takes in a finished measurement of the data directory and starts the next when the
    /// last is old.
    async fn measure_storage(&mut self) {
        if self.measuring.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = self.measuring.take() {
                // Finished: this does not wait.
                match h.await {
                    Ok(Ok(u)) => {
                        if let Err(e) =
                            self.shared
                                .meters
                                .set_disk(&self.id, crate::unix_now_ms(), u.data_bytes + u.wal_bytes)
                        {
                            tracing::warn!(instance = %self.id, "disk usage counter: {e:#}");
                        }
                        self.storage = Some((
                            Instant::now(),
                            StorageUsage {
                                data_bytes: u.data_bytes,
                                wal_bytes: u.wal_bytes,
                                disk_free_bytes: u.fs_free_bytes,
                                disk_total_bytes: u.fs_total_bytes,
                                disk_reserve_bytes: 0,
                                level: StorageLevel::Normal,
                            },
                        ))
                    }
                    Ok(Err(e)) => tracing::warn!(instance = %self.id, "{e:#}"),
                    Err(e) => tracing::warn!(instance = %self.id, "measure storage task: {e}"),
                }
            }
        }
        let due = self.storage.is_none_or(|(at, _)| at.elapsed() >= MEASURE_STORAGE_EVERY);
        if due && self.measuring.is_none() {
            let pgdata = self.pgdata.clone();
            self.measuring = Some(tokio::task::spawn_blocking(move || highrise_pg::disk_usage(&pgdata)));
        }
    }

    fn save(&self) -> Result<()> {
        write_atomic(
            &self.state_file,
            &serde_json::to_vec(&self.local).context("serialize instance state")?,
        )
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.shared.cfg.address, self.local.port)
    }

    fn observed(&self, state: InstanceState, error: Option<String>) -> ObservedInstance {
        let status = if state == InstanceState::Running {
            self.status.as_ref()
        } else {
            None
        };
        ObservedInstance {
            id: self.id.clone(),
            state,
            addr: (self.local.port != 0 && state != InstanceState::Creating).then(|| self.addr()),
            error,
            in_recovery: status.map(|s| s.in_recovery),
            max_connections: status.and_then(|s| s.max_connections),
            connections: status.and_then(|s| s.connections),
            xacts: status.and_then(|s| s.xacts),
            lsn: status.and_then(|s| s.lsn),
            streaming: status.map(|s| s.streaming),
            sync_standbys: self.local.running_sync.clone(),
            sync_streaming: status.map(|s| s.sync_streaming.clone()).unwrap_or_default(),
            term: self.applied.as_ref().map_or(0, |s| s.term),
            archived_lsn: self.archiver.as_ref().and_then(|a| a.status.borrow().archived),
            archive_error: self.archiver.as_ref().and_then(|a| a.status.borrow().error.clone()),
            sealing_generation: self.archiver.as_ref().map(|a| a.key.1.data_key_generation),
            storage: self.storage.map(|(_, s)| {
                // The disk's room as of now, not of the last walk of the directory.
                let room = (*self.shared.disk.borrow())
                    .filter(|_| !self.shared.cfg.shared_disk)
                    .unwrap_or(disk::Room {
                        total_bytes: s.disk_total_bytes,
                        free_bytes: s.disk_free_bytes,
                        reserve_bytes: s.disk_reserve_bytes,
                        released: false,
                    });
                StorageUsage {
                    disk_free_bytes: room.free_bytes,
                    disk_total_bytes: room.total_bytes,
                    disk_reserve_bytes: room.reserve_bytes,
                    level: match self.guard {
                        storage::Level::Normal => StorageLevel::Normal,
                        storage::Level::Warning => StorageLevel::Warning,
                        storage::Level::ReadOnly => StorageLevel::ReadOnly,
                        storage::Level::Critical => StorageLevel::Critical,
                        storage::Level::Full => StorageLevel::Full,
                    },
                    ..s
                }
            }),
            seed: self.local.seed.clone(),
        }
    }

    /// Makes the data directory: for a primary a copy of the host's template (or initdb)
    /// or a restore from object storage; for a standby a seed from object storage, else a
    /// base backup of its primary. Returns false while a standby still waits for its
    /// primary to run.
    ///
    /// It is built in a staging directory of this attempt's own and moved into place
    /// whole. An attempt given up on half-way (a new command arrived) cannot cancel its
    /// blocking work — file writes, a `pg_basebackup` — which goes on writing into that
    /// attempt's staging directory, never into the data directory or the next attempt's.
    async fn create(&mut self, spec: &InstanceSpec) -> Result<bool> {
        let shared = Arc::clone(&self.shared);
        highrise_pg::own_dir(&self.dir, None, 0o711)?;
        let (bin, run_as) = (shared.bin.clone(), shared.run_as);
        let (mut genesis, mut seed, mut recovery) = (None, None, None);
        let staging;
        if spec.role == "standby" {
            let (Some(primary), Some(password)) = (&spec.primary_addr, &spec.replication_password) else {
                return Ok(false);
            };
            let (host, port) = split_addr(primary)?;
            let tls = self.write_tls(spec)?;
            staging = self.staging();
            let seeded = match &spec.restore {
                Some(r) => match durability::seed_standby(&shared, r, &staging).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(instance = %self.id, "seed from backup {}: {e:#}; copying the primary instead", r.backup_id);
                        false
                    }
                },
                None => false,
            };
            seed = Some(if seeded {
                Seed {
                    from: "backup".into(),
                    backup_id: spec.restore.as_ref().map(|r| r.backup_id.clone()),
                    primary_bytes: 0,
                    stream_start_lsn: None,
                }
            } else {
                let (password, dest) = (password.clone(), staging.clone());
                let verify = spec.tls.as_ref().zip(tls.as_ref());
                let upstream = highrise_pg::conninfo(
                    &host,
                    port,
                    REPL_USER,
                    verify.map(|(t, files)| (t.server_name.as_str(), files.ca.as_path())),
                );
                let copied = tokio::task::spawn_blocking(move || {
                    highrise_pg::basebackup(&bin, &dest, &upstream, &password, run_as)?;
                    highrise_pg::disk_usage(&dest)
                })
                .await
                .context("base backup task")??;
                Seed {
                    from: "primary".into(),
                    backup_id: None,
                    primary_bytes: copied.data_bytes,
                    stream_start_lsn: None,
                }
            });
        } else if let Some(r) = &spec.restore {
            staging = self.staging();
            durability::restore(&shared, r, &staging).await?;
            highrise_pg::make_recovering(&staging, run_as)?;
            recovery = Some(highrise_pg::Recovery {
                target_time: r.target_time.clone(),
                target_lsn: r.target_lsn.clone(),
            });
        } else {
            staging = self.staging();
            let template = shared.template().await;
            let (sh, dest) = (Arc::clone(&shared), staging.clone());
            genesis = tokio::task::spawn_blocking(move || match template {
                Ok(t) => {
                    highrise_pg::copy_template(&t, &dest)?;
                    Ok(durability::Genesis::of_template(&sh, &t))
                }
                Err(e) => {
                    tracing::warn!("{e:#}; running initdb instead");
                    if dest.exists() {
                        std::fs::remove_dir_all(&dest).context("clear half-made data directory")?;
                    }
                    highrise_pg::initdb(&bin, &dest, run_as).map(|()| None)
                }
            })
            .await
            .context("create data directory task")??;
        }
        if self.pgdata.exists() {
            std::fs::remove_dir_all(&self.pgdata).with_context(|| format!("clear {}", self.pgdata.display()))?;
        }
        std::fs::rename(&staging, &self.pgdata).with_context(|| format!("move {} into place", staging.display()))?;
        self.local.genesis = genesis;
        self.local.seed = seed;
        self.local.recovery = recovery;
        self.local.created = true;
        if self.local.port == 0 {
            self.local.port = pick_port(&shared.cfg.address)?;
        }
        self.save()?;
        Ok(true)
    }

    /// A fresh path to build the data directory in, after removing those of earlier
    /// attempts (best effort: one an abandoned attempt still writes into goes at a later
    /// attempt, or with the instance).
    fn staging(&self) -> PathBuf {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                    if let Err(err) = std::fs::remove_dir_all(e.path()) {
                        tracing::warn!(instance = %self.id, "remove {}: {err}", e.path().display());
                    }
                }
            }
        }
        self.dir.join(format!("{STAGING_PREFIX}{:016x}", rand::random::<u64>()))
    }

    fn server_config(&self, spec: &InstanceSpec) -> highrise_pg::ServerConfig {
        let standby = spec.role == "standby";
        let quorum = !standby && spec.sync_quorum > 0 && !spec.sync_standbys.is_empty();
        let sync = if !standby && spec.durability == "sync" && spec.storage.is_some() {
            // The archiver first: with it connected, a commit waits for object storage
            // and for `sync_quorum` standbys; without it, for one standby more.
            let mut names = vec![highrise_backup::archiver::APPLICATION_NAME.to_string()];
            names.extend(spec.sync_standbys.iter().cloned());
            let k = 1 + if quorum { spec.sync_quorum } else { 0 };
            format!("FIRST {k} ({})", names.join(", "))
        } else if quorum {
            format!("ANY {} ({})", spec.sync_quorum, spec.sync_standbys.join(", "))
        } else {
            String::new()
        };
        let tls = spec.tls.as_ref().map(|t| (t.server_name.as_str(), self.tls_files()));
        let conninfo = match (&spec.primary_addr, &spec.replication_password) {
            (Some(addr), Some(pw)) if standby => split_addr(addr).ok().map(|(host, port)| {
                format!(
                    "{} password={} application_name={} connect_timeout=5",
                    highrise_pg::conninfo(&host, port, REPL_USER, tls.as_ref().map(|(n, f)| (*n, f.ca.as_path()))),
                    highrise_pg::conninfo_value(pw),
                    self.id
                )
            }),
            _ => None,
        };
        highrise_pg::ServerConfig {
            listen_addr: self.shared.cfg.address.clone(),
            port: self.local.port,
            socket_dir: self.socket_dir.clone(),
            memory_mb: spec.memory_mb,
            min_connections: spec.min_connections,
            tcp_logins: vec![(spec.owner.clone(), spec.database.clone())],
            replication_user: (!standby).then(|| REPL_USER.to_string()),
            synchronous_standby_names: sync,
            primary_conninfo: conninfo,
            recovery: None,
            // Only a primary takes writes to hold back: for its own storage, or a standby's.
            read_only: !standby && (self.guard.read_only() || spec.storage_read_only),
            disk_bytes: self.shared.disk.borrow().map(|r| r.total_bytes),
            tls: tls.map(|(_, f)| f),
        }
    }

    /// Where the cluster's certificate, key and CA are kept: beside the data directory,
    /// never in it (a base backup or a copy of the data directory does not carry the key).
    fn tls_files(&self) -> highrise_pg::TlsFiles {
        highrise_pg::TlsFiles::in_dir(&self.dir.join("tls"))
    }

    /// Writes the spec's certificate files (before the configuration that names them).
    fn write_tls(&self, spec: &InstanceSpec) -> Result<Option<highrise_pg::TlsFiles>> {
        let Some(t) = &spec.tls else { return Ok(None) };
        highrise_pg::write_tls_files(&self.dir.join("tls"), &t.cert, &t.key, &t.ca, self.shared.run_as)
            .map(Some)
            .context("write the cluster's certificate")
    }

    async fn start(&mut self, spec: &InstanceSpec) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        highrise_pg::own_dir(&self.socket_dir, shared.run_as, 0o700)?;
        let mut cfg = self.server_config(spec);
        // A restore's archive recovery, until it has ended: PostgreSQL removes
        // `recovery.signal` then (a restart after that must not recover again).
        if self.local.recovery.is_some() && !highrise_pg::recovery_pending(&self.pgdata) {
            self.local.recovery = None;
            self.save()?;
        }
        cfg.recovery = self.local.recovery.clone();
        let recovering = cfg.recovery.is_some();
        let timeout = Duration::from_secs(if recovering { 3600 } else { 60 });
        self.widen_running_sync(spec)?;
        self.write_tls(spec)?;
        highrise_pg::write_config(&self.pgdata, &cfg, shared.run_as)?;
        cfg.recovery = None;
        let pid = highrise_pg::start(&shared.bin, &self.pgdata, &self.log, shared.run_as)?;
        self.pid = Some(pid);
        highrise_pg::wait_ready(&self.pgdata, pid, &self.log, timeout).await?;
        if recovering {
            self.wait_recovered(pid).await?;
            self.local.recovery = None;
            self.save()?;
        }
        self.applied = None;
        self.applied_config = Some(config_key(&cfg, spec));
        self.set_running_sync(sync_members(spec))?;
        self.admin = None;
        Ok(())
    }

    /// Before the server takes a new synchronous set: until it runs with it, a commit may
    /// have been acknowledged under either, so both are recorded.
    fn widen_running_sync(&mut self, spec: &InstanceSpec) -> Result<()> {
        let mut both = self.local.running_sync.clone();
        for s in sync_members(spec) {
            if !both.contains(&s) {
                both.push(s);
            }
        }
        self.set_running_sync(both)
    }

    /// Records the synchronous set the server runs with (kept on disk).
    fn set_running_sync(&mut self, sync: Vec<String>) -> Result<()> {
        if self.local.running_sync != sync {
            self.local.running_sync = sync;
            self.save()?;
        }
        Ok(())
    }

    /// Waits until a restore's archive recovery has ended and the server was promoted (it
    /// takes read-only connections before that).
    async fn wait_recovered(&mut self, pid: u32) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        loop {
            if highrise_pg::running_pid(&self.pgdata) != Some(pid) {
                bail!("postgres exited during recovery: {}", highrise_pg::log_tail(&self.log));
            }
            if self.check_status().await.is_some_and(|s| !s.in_recovery) {
                tracing::info!(instance = %self.id, "recovery finished; promoted");
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "recovery still running after an hour: {}",
                    highrise_pg::log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Rewrites the configuration and reloads when the parts that follow the cluster
    /// (synchronous standbys, the primary's address) changed.
    fn refresh_config(&mut self, spec: &InstanceSpec) -> Result<()> {
        let cfg = self.server_config(spec);
        let key = config_key(&cfg, spec);
        if self.applied_config.as_ref() == Some(&key) {
            return Ok(());
        }
        self.widen_running_sync(spec)?;
        // A renewed certificate is read again on reload, as is `ssl` itself.
        self.write_tls(spec)?;
        highrise_pg::write_config(&self.pgdata, &cfg, self.shared.run_as)?;
        if let Some(pid) = self.pid {
            highrise_pg::reload(pid)?;
        }
        tracing::info!(
            instance = %self.id,
            sync = %cfg.synchronous_standby_names,
            read_only = cfg.read_only,
            "configuration reloaded"
        );
        self.applied_config = Some(key);
        self.set_running_sync(sync_members(spec))?;
        Ok(())
    }

    async fn admin(&mut self) -> Result<&mut sqlx::PgConnection> {
        if self.admin.is_none() {
            let conn = tokio::time::timeout(
                Duration::from_secs(5),
                highrise_pg::admin_connect(&self.socket_dir, self.local.port, "postgres"),
            )
            .await
            .context("connect as admin: timed out")??;
            self.admin = Some(conn);
        }
        self.admin.as_mut().context("admin connection")
    }

    /// Brings the instance to running with `spec` applied; returns its health.
    async fn converge(&mut self, spec: &InstanceSpec) -> Result<InstanceState> {
        // Drained for a switchover: stop (fast shutdown, so every connected standby gets
        // all of the WAL) and stay stopped.
        if spec.stopped {
            self.stop_archiver().await;
            if self.pid.is_some() || highrise_pg::running_pid(&self.pgdata).is_some() {
                tracing::info!(instance = %self.id, "stopping for a switchover");
                self.stop().await?;
            }
            self.status = None;
            return Ok(InstanceState::Stopped);
        }
        if !self.local.initialized {
            self.shared.report(self.observed(InstanceState::Creating, None));
            // A server an attempt given up on started (after its data directory was in
            // place, or on one made before `created` existed): started again under this spec.
            if let Some(pid) = self.pid.take().or_else(|| highrise_pg::running_pid(&self.pgdata)) {
                highrise_pg::stop(pid, Duration::from_secs(30)).await?;
            }
            // Recorded as made but not there (the move into place was lost with a crash
            // before it reached the disk): nothing in it was ever acknowledged; made again.
            if self.local.created && !self.pgdata.join("PG_VERSION").exists() {
                self.local.created = false;
            }
            if !self.local.created && !self.create(spec).await? {
                return Ok(InstanceState::Creating);
            }
            self.start(spec).await?;
            if self.local.genesis.is_some() && spec.storage.is_some() {
                self.reserve_wal_from_creation().await;
            }
            self.apply(spec).await?;
            self.local.initialized = true;
            self.save()?;
            // Report what the server is right away: the proxy routes to a primary only
            // once it is known to take writes.
            self.status = self.check_status().await;
            // Durability of the copied files, off the critical path.
            let (bin, pgdata, run_as) = (self.shared.bin.clone(), self.pgdata.clone(), self.shared.run_as);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = highrise_pg::sync_datadir(&bin, &pgdata, run_as) {
                    tracing::warn!("{e:#}");
                }
            });
            tracing::info!(instance = %self.id, role = %spec.role, addr = %self.addr(), "instance created");
            return Ok(InstanceState::Running);
        }
        // The server running on the data directory now, whoever started it: a start given
        // up on half-way (a new command arrived) may have left one running, and signals
        // (reloads) must reach that one, not the pid remembered.
        let running = highrise_pg::running_pid(&self.pgdata);
        if running.is_none() {
            if self.pid.is_some() {
                tracing::warn!(instance = %self.id, "postgres is gone; restarting: {}", highrise_pg::log_tail(&self.log));
            }
            self.pid = None;
            if let Err(e) = self.start(spec).await {
                return Err(self.explain_start_failure(e));
            }
            tracing::info!(instance = %self.id, addr = %self.addr(), "instance started");
        } else if running != self.pid {
            self.pid = running;
        }
        let Some(status) = self.check_status().await else {
            self.admin = None;
            self.status = None;
            return Ok(InstanceState::Unhealthy);
        };
        // This member was chosen as the new primary: promote it before anything else.
        if spec.role == "primary" && status.in_recovery {
            tracing::warn!(instance = %self.id, term = spec.term, "promoting to primary");
            let conn = self.admin().await?;
            highrise_pg::promote(conn).await?;
            tracing::info!(instance = %self.id, term = spec.term, "promoted");
        }
        self.guard_storage(spec).await;
        self.refresh_config(spec)?;
        if self.applied.as_ref().is_none_or(|a| !same_roles(a, spec)) {
            self.apply(spec).await?;
        } else {
            self.applied = Some(spec.clone());
        }
        let Some(status) = self.check_status().await else {
            self.admin = None;
            self.status = None;
            return Ok(InstanceState::Unhealthy);
        };
        let primary = !status.in_recovery;
        if let (Some(seed), Some(start)) = (&mut self.local.seed, status.receive_start_lsn) {
            if seed.stream_start_lsn.is_none() && status.streaming {
                seed.stream_start_lsn = Some(start);
                self.save()?;
            }
        }
        self.status = Some(status);
        self.measure_storage().await;
        if spec.role == "primary" && primary {
            self.ensure_archiver(spec).await;
            self.ensure_backup(spec);
            self.check_parameters(spec).await;
        } else {
            self.stop_archiver().await;
        }
        Ok(InstanceState::Running)
    }

    /// Creates the archiver's slot before anything else runs on a fresh copy of the
    /// template: a physical slot reserves WAL from the last checkpoint's redo point, here
    /// the template's own, so the archive holds the WAL the creation image needs even if a
    /// checkpoint (a standby's base backup) comes before the archiver starts.
    async fn reserve_wal_from_creation(&mut self) {
        let sql = format!(
            "SELECT 1 FROM pg_create_physical_replication_slot({}, true)",
            highrise_pg::quote_literal(highrise_backup::archiver::SLOT)
        );
        let res = match self.admin().await {
            Ok(conn) => sqlx::query(&sql)
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            // The archiver creates the slot itself; the first backup may then copy the server.
            tracing::warn!(instance = %self.id, "reserve WAL for the creation image: {e:#}");
        }
    }

    /// Keeps one archiver running with the spec's term, storage and durability.
    async fn ensure_archiver(&mut self, spec: &InstanceSpec) {
        let Some(storage) = &spec.storage else {
            return self.stop_archiver().await;
        };
        let key = (spec.term, storage.clone(), spec.durability.clone());
        if self.archiver.as_ref().is_some_and(|a| a.key == key) {
            return;
        }
        self.stop_archiver().await;
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.local.port));
        match Archiver::start(key, &socket) {
            Ok(a) => self.archiver = Some(a),
            Err(e) => tracing::error!(instance = %self.id, "start WAL archiving: {e:#}"),
        }
    }

    async fn stop_archiver(&mut self) {
        if let Some(a) = self.archiver.take() {
            a.shutdown().await;
        }
    }

    /// Starts the base backup the spec asks for, once.
    fn ensure_backup(&mut self, spec: &InstanceSpec) {
        let (Some(id), Some(storage), Some(archiver)) = (&spec.backup, &spec.storage, &self.archiver) else {
            return;
        };
        if self.backup.as_ref().is_some_and(|(b, h)| b == id && !h.is_finished()) || self.shared.backup_reported(id) {
            return;
        }
        tracing::info!(instance = %self.id, backup = %id, "taking a base backup");
        let shared = Arc::clone(&self.shared);
        let src = durability::BackupSource {
            socket_dir: self.socket_dir.clone(),
            port: self.local.port,
            pgdata: self.pgdata.clone(),
            // Only the first backup can be the creation image; a later one copies the server.
            genesis: self.local.genesis.take(),
        };
        if src.genesis.is_some() {
            if let Err(e) = self.save() {
                tracing::warn!(instance = %self.id, "{e:#}");
            }
        }
        let task = durability::take_backup(
            Arc::clone(&shared),
            id.clone(),
            storage.clone(),
            src,
            archiver.status.clone(),
        );
        self.backup = Some((
            id.clone(),
            tokio::spawn(async move {
                let report = task.await;
                shared.report_backup(report);
            }),
        ));
    }

    /// The server's view of itself, or `None` if it does not answer within 3 s (a hung
    /// or frozen server must never stall the supervisor).
    async fn check_status(&mut self) -> Option<highrise_pg::Status> {
        let conn = self.admin().await.ok()?;
        match tokio::time::timeout(Duration::from_secs(3), highrise_pg::status(conn)).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                self.admin = None;
                None
            }
        }
    }

    async fn apply(&mut self, spec: &InstanceSpec) -> Result<()> {
        // A standby is read-only: roles and databases arrive from its primary.
        if spec.role != "standby" {
            let conn = self.admin().await?;
            highrise_pg::ensure_owner(conn, &spec.owner, &spec.owner_scram, &spec.database).await?;
            highrise_pg::wall::limit_connections(conn, &spec.owner, spec.connection_limit).await?;
            highrise_pg::ensure_replicator(conn, REPL_USER, &spec.replication_scram).await?;
            // The extension allow-list lives in the tenant's database (replicated with it,
            // so a promoted standby has it already): never holds a primary back from
            // serving; tried again at the next apply when it fails.
            let fence = async {
                let mut db = highrise_pg::admin_connect(&self.socket_dir, self.local.port, &spec.database).await?;
                highrise_pg::wall::fence(&mut db).await
            };
            match tokio::time::timeout(Duration::from_secs(5), fence).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(instance = %self.id, "extension allow-list not installed yet: {e:#}");
                    self.applied = None;
                    return Ok(());
                }
                Err(_) => {
                    tracing::warn!(instance = %self.id, "extension allow-list not installed yet: timed out");
                    self.applied = None;
                    return Ok(());
                }
            }
        }
        self.applied = Some(spec.clone());
        Ok(())
    }

    async fn stop(&mut self) -> Result<()> {
        self.admin = None;
        self.stop_archiver().await;
        if let Some((_, h)) = self.backup.take() {
            h.abort();
        }
        let pid = self.pid.take().or_else(|| highrise_pg::running_pid(&self.pgdata));
        if let Some(pid) = pid {
            highrise_pg::stop(pid, Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    async fn delete(&mut self) -> Result<()> {
        self.stop().await?;
        for d in [&self.dir, &self.socket_dir] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("remove {}", d.display())),
            }
        }
        Ok(())
    }
}

/// Whether two specs ask for the same roles and database (what `apply` creates).
fn same_roles(a: &InstanceSpec, b: &InstanceSpec) -> bool {
    a.role == b.role
        && a.owner == b.owner
        && a.owner_scram == b.owner_scram
        && a.database == b.database
        && a.replication_scram == b.replication_scram
        && a.connection_limit == b.connection_limit
}

/// The role standbys stream as; created on every primary with the cluster's verifier.
const REPL_USER: &str = "replicator";

/// Names of the directories data directories are built in, next to `pgdata`.
const STAGING_PREFIX: &str = "pgdata.new-";

fn sync_members(spec: &InstanceSpec) -> Vec<String> {
    if spec.role == "standby" || spec.sync_quorum == 0 {
        Vec::new()
    } else {
        spec.sync_standbys.clone()
    }
}

/// The settings that follow the cluster's shape and its certificate (the rest never
/// changes after start).
fn config_key(cfg: &highrise_pg::ServerConfig, spec: &InstanceSpec) -> ConfigKey {
    (
        cfg.synchronous_standby_names.clone(),
        cfg.primary_conninfo.clone(),
        cfg.replication_user.clone(),
        cfg.read_only,
        spec.tls.as_ref().map(|t| t.cert.clone()),
    )
}

type ConfigKey = (String, Option<String>, Option<String>, bool, Option<String>);

fn split_addr(addr: &str) -> Result<(String, u16)> {
    let (host, port) = addr.rsplit_once(':').with_context(|| format!("bad address {addr:?}"))?;
    Ok((
        host.to_string(),
        port.parse().with_context(|| format!("bad port in {addr:?}"))?,
    ))
}

/// A free TCP port below the ephemeral range on this host's address.
fn pick_port(address: &str) -> Result<u16> {
    use rand::Rng;
    for _ in 0..200 {
        let port = rand::thread_rng().gen_range(20000..32000);
        if std::net::TcpListener::bind((address, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on {address}")
}

async fn supervise(
    shared: Arc<Shared>,
    id: String,
    mut cmd: watch::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let mut inst = Instance::new(Arc::clone(&shared), id.clone());
    // Instance time counts from here (and across an agent restart that PostgreSQL ran
    // through).
    if let Err(e) = shared.meters.start(&id, crate::unix_now_ms(), inst.pid.is_some()) {
        tracing::error!(instance = %id, "start usage counter: {e:#}");
    }
    let mut disk_marks = shared.disk.subscribe();
    let mut backoff = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            if let Err(e) = inst.stop().await {
                tracing::error!(instance = %id, "stop: {e:#}");
            }
            return;
        }
        let current = cmd.borrow_and_update().clone();
        let mut wait = HEALTH_CHECK_EVERY;
        match current {
            Command::Delete => match inst.delete().await {
                Ok(()) => {
                    tracing::info!(instance = %id, "instance deleted");
                    if let Err(e) = shared.meters.close(&id, crate::unix_now_ms()) {
                        tracing::error!(instance = %id, "close usage counter: {e:#}");
                    }
                    shared.forget(&id);
                    return;
                }
                Err(e) => {
                    tracing::error!(instance = %id, "delete: {e:#}");
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
            Command::Run(spec) => match tokio::select! {
                r = inst.converge(&spec) => Some(r),
                // A stop or a new command (a delete, a new spec) in the middle of a long
                // step: give up on it; the next round starts from what is on disk.
                _ = stop.changed() => None,
                _ = cmd.changed() => None,
            } {
                None => continue,
                Some(Ok(state)) => {
                    backoff = Duration::from_secs(1);
                    shared.report(inst.observed(state, None));
                }
                Some(Err(e)) => {
                    let msg = format!("{e:#}");
                    tracing::error!(instance = %id, "{msg}");
                    let state = if inst.local.initialized {
                        InstanceState::Unhealthy
                    } else {
                        InstanceState::Failed
                    };
                    shared.report(inst.observed(state, Some(msg)));
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
        }
        tokio::select! {
            _ = cmd.changed() => {}
            _ = stop.changed() => {}
            // The disk crossed one of the storage guard's marks: act now, not next round.
            _ = disk_marks.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
