//! The agent's side of durability: the WAL archiver of a primary, base backups on
//! request, and restoring a data directory from object storage.

use crate::Shared;
use anyhow::{bail, Context, Result};
use highrise_api::{BackupReport, RestoreSpec, StorageSpec};
use highrise_backup::{archiver, Key, Keyring, Location, Repo};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Base backups are cut into parts of this size (sealed and uploaded in parallel).
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Least time between WAL uploads when commits do not wait for them.
const ASYNC_UPLOAD_INTERVAL: Duration = Duration::from_millis(200);

pub fn open_repo(s: &StorageSpec) -> Result<Repo> {
    // The newest key seals; every older one kept opens what it sealed.
    let mut keys = vec![(
        s.data_key_generation,
        Key::from_hex(&s.data_key).context("read the tenant's data key")?,
    )];
    for k in &s.older_data_keys {
        keys.push((k.generation, Key::from_hex(&k.key).context("read an older data key")?));
    }
    let loc = Location {
        url: s.url.clone(),
        options: s.options.clone(),
        prefix: s.prefix.clone(),
    };
    Repo::open(&loc, Keyring::new(keys)?).context("open object storage")
}

/// What an archiver was started with; a change restarts it.
pub type ArchiverKey = (i64, StorageSpec, String);

pub struct Archiver {
    pub key: ArchiverKey,
    pub status: watch::Receiver<archiver::Status>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Archiver {
    pub fn start(key: ArchiverKey, socket: &Path) -> Result<Self> {
        let repo = open_repo(&key.1)?;
        let cfg = archiver::Config {
            socket: socket.to_path_buf(),
            user: highrise_pg::ADMIN_USER.into(),
            term: key.0,
            min_interval: if key.2 == "sync" {
                Duration::ZERO
            } else {
                ASYNC_UPLOAD_INTERVAL
            },
        };
        let (status_tx, status) = watch::channel(archiver::Status::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(archiver::run(repo, cfg, status_tx, stop_rx));
        Ok(Self {
            key,
            status,
            stop,
            task,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Where a primary made from the host's template can be restored from: the template
/// itself (never started, shut down at its checkpoint) plus all of the WAL since, which
/// the archiver streams from that checkpoint's segment on. Recorded when the instance is
/// copied; used by its first backup, so restores reach back to the cluster's creation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Genesis {
    pub template: std::path::PathBuf,
    pub system_identifier: u64,
    pub redo_lsn: u64,
}

impl Genesis {
    /// The genesis of an instance just copied from `template`, if the template is fit.
    pub fn of_template(shared: &Shared, template: &Path) -> Option<Self> {
        match highrise_pg::control_data(&shared.bin, template) {
            Ok(c) if c.shut_down && c.timeline == 1 => Some(Self {
                template: template.to_path_buf(),
                system_identifier: c.system_identifier,
                redo_lsn: c.redo_lsn,
            }),
            Ok(c) => {
                tracing::warn!("template {} is not a clean timeline-1 copy ({c:?})", template.display());
                None
            }
            Err(e) => {
                tracing::warn!("read the template's control data: {e:#}");
                None
            }
        }
    }
}

/// What a backup is taken of: the server on `socket_dir`/`port` (data directory
/// `pgdata`), or, for its first backup, where it came from.
pub struct BackupSource {
    pub socket_dir: std::path::PathBuf,
    pub port: u16,
    pub pgdata: std::path::PathBuf,
    pub genesis: Option<Genesis>,
}

/// Takes base backup `id` and waits until the WAL it needs is archived too. The first
/// backup of a primary copied from the template is that template (consistent before the
/// cluster's first commit), if the archive holds every byte of WAL since; any other is a
/// copy of the running server's files between `pg_backup_start` and `pg_backup_stop`.
pub async fn take_backup(
    shared: Arc<Shared>,
    id: String,
    storage: StorageSpec,
    src: BackupSource,
    mut archived: watch::Receiver<archiver::Status>,
) -> BackupReport {
    let res: Result<(highrise_backup::base::Manifest, bool)> = async {
        let repo = open_repo(&storage)?;
        let mut conn = highrise_pg::admin_connect(&src.socket_dir, src.port, "postgres").await?;
        if let Some(g) = &src.genesis {
            match genesis_backup(&shared, &repo, &id, g, &mut conn, &mut archived).await {
                Ok(m) => return Ok((m, true)),
                Err(e) => tracing::warn!(backup = %id, "cannot back up from the cluster's creation ({e:#}); copying the server instead"),
            }
        }
        let started = crate::unix_now();
        let (timeline, start_lsn) = highrise_pg::backup_start(&mut conn, &format!("highrise {id}")).await?;
        let uploaded = repo
            .upload_files(&id, &src.pgdata, PART_SIZE, started, timeline, start_lsn)
            .await;
        // Ends the backup even when the upload failed (the session ending would, too).
        let stopped = highrise_pg::backup_stop(&mut conn).await;
        let mut m = uploaded.context("store the base backup")?;
        let (end_lsn, label) = stopped?;
        m.end_lsn = end_lsn;
        m.label = Some(label);
        wait_archived(&mut archived, end_lsn).await?;
        repo.put_manifest(&m).await.context("store the backup's manifest")?;
        Ok((m, false))
    }
    .await;
    match res {
        Ok((m, from_creation)) => {
            tracing::info!(backup = %id, size = m.size, stored = m.stored, from_creation, "base backup stored");
            BackupReport {
                id,
                status: "complete".into(),
                timeline: Some(m.timeline),
                start_lsn: Some(m.start_lsn),
                end_lsn: Some(m.end_lsn),
                size_bytes: Some(m.size),
                stored_bytes: Some(m.stored),
                error: None,
                from_creation,
            }
        }
        Err(e) => {
            tracing::error!(backup = %id, "base backup: {e:#}");
            BackupReport {
                id,
                status: "failed".into(),
                timeline: None,
                start_lsn: None,
                end_lsn: None,
                size_bytes: None,
                stored_bytes: None,
                error: Some(format!("{e:#}")),
                from_creation: false,
            }
        }
    }
}

/// Waits until the archive holds the WAL up to `end`: a backup is complete only then.
async fn wait_archived(archived: &mut watch::Receiver<archiver::Status>, end: u64) -> Result<()> {
    tokio::time::timeout(
        Duration::from_secs(300),
        archived.wait_for(|s| s.archived.is_some_and(|a| a >= end)),
    )
    .await
    .context("WAL up to the backup's end was not archived within 5 minutes")?
    .context("the archiver stopped")?;
    Ok(())
}

/// Stores the template the server was copied from as backup `id`, once it is sure that
/// the server is that copy, still on its first timeline, and that the archive holds its
/// WAL from the template's checkpoint on without a hole.
async fn genesis_backup(
    shared: &Shared,
    repo: &Repo,
    id: &str,
    g: &Genesis,
    conn: &mut sqlx::PgConnection,
    archived: &mut watch::Receiver<archiver::Status>,
) -> Result<highrise_backup::base::Manifest> {
    let (bin, template) = (shared.bin.clone(), g.template.clone());
    let now = tokio::task::spawn_blocking(move || highrise_pg::control_data(&bin, &template))
        .await
        .context("control data task")??;
    if now.system_identifier != g.system_identifier || now.redo_lsn != g.redo_lsn || !now.shut_down {
        bail!("the template changed since the server was copied from it");
    }
    let (sysid,): (i64,) = sqlx::query_as("SELECT system_identifier FROM pg_control_system()")
        .fetch_one(&mut *conn)
        .await
        .context("read the server's system identifier")?;
    let (timeline, _) = highrise_pg::wal_position(conn).await?;
    if sysid as u64 != g.system_identifier || timeline != 1 {
        bail!("the server is no longer the template's first timeline");
    }
    wait_archived(archived, g.redo_lsn).await?;
    let ranges = repo.wal_ranges().await.context("list the archived WAL")?;
    match ranges.get(&1) {
        Some(&(start, _)) if start <= g.redo_lsn => {}
        other => bail!(
            "the archive's WAL on timeline 1 ({other:?}) does not reach back to the template's checkpoint {}",
            highrise_backup::fmt_lsn(g.redo_lsn)
        ),
    }
    let started = crate::unix_now();
    let mut m = repo
        .upload_files(id, &g.template, PART_SIZE, started, 1, g.redo_lsn)
        .await
        .context("store the template")?;
    m.end_lsn = g.redo_lsn;
    repo.put_manifest(&m).await.context("store the backup's manifest")?;
    Ok(m)
}

/// Makes `pgdata` a standby of its cluster from object storage: the cluster's base backup
/// and the archived WAL since, so its primary streams only what came after.
pub async fn seed_standby(shared: &Shared, r: &RestoreSpec, pgdata: &Path) -> Result<()> {
    restore(shared, r, pgdata).await?;
    highrise_pg::make_standby(pgdata, shared.run_as)
}

/// Makes `pgdata` the restore's base backup plus every archived WAL segment from its
/// start, owned by the PostgreSQL user; archive recovery then runs on start. Reads the
/// first of the restore's stores that serves it whole: one that fails half-way — a
/// damaged or missing object, no answer — is left for the next (the backups' copy).
pub async fn restore(shared: &Shared, r: &RestoreSpec, pgdata: &Path) -> Result<()> {
    let mut failed = Vec::new();
    for storage in std::iter::once(&r.storage).chain(&r.alternates) {
        match restore_from(shared, storage, r, pgdata).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                let e = format!("{e:#}");
                if storage != r.alternates.last().unwrap_or(&r.storage) {
                    tracing::warn!(backup = %r.backup_id, store = %storage.url, "{e}; reading the next copy");
                }
                failed.push(format!("from {}: {e}", storage.url));
            }
        }
    }
    bail!("restore backup {}: {}", r.backup_id, failed.join("; "))
}

async fn restore_from(shared: &Shared, storage: &StorageSpec, r: &RestoreSpec, pgdata: &Path) -> Result<()> {
    let repo = open_repo(storage)?;
    tracing::info!(backup = %r.backup_id, "restoring from object storage");
    let t0 = std::time::Instant::now();
    if pgdata.exists() {
        std::fs::remove_dir_all(pgdata).with_context(|| format!("clear {}", pgdata.display()))?;
    }
    let owner = shared
        .run_as
        .map(|r| highrise_backup::datadir::Owner { uid: r.uid, gid: r.gid });
    let m = repo
        .restore_base(&r.backup_id, pgdata, owner)
        .await
        .with_context(|| format!("restore base backup {}", r.backup_id))?;
    let base_secs = t0.elapsed().as_secs_f64();
    let pg_wal = pgdata.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).with_context(|| format!("create {}", pg_wal.display()))?;
    let ranges = repo
        .fetch_wal(m.timeline, m.start_lsn, Some(&pg_wal))
        .await
        .context("fetch archived WAL")?;
    let end = ranges.iter().map(|t| t.end).max().unwrap_or(0);
    if end < m.end_lsn {
        bail!(
            "archived WAL ends at {}, before backup {} is consistent ({})",
            highrise_backup::fmt_lsn(end),
            r.backup_id,
            highrise_backup::fmt_lsn(m.end_lsn)
        );
    }
    let (pgdata, run_as) = (pgdata.to_path_buf(), shared.run_as);
    tokio::task::spawn_blocking(move || highrise_pg::chown_tree(&pgdata, run_as))
        .await
        .context("chown task")??;
    tracing::info!(
        backup = %r.backup_id,
        bytes = m.size,
        base_secs,
        total_secs = t0.elapsed().as_secs_f64(),
        wal_end = %highrise_backup::fmt_lsn(end),
        "restored from object storage; recovering"
    );
    Ok(())
}
