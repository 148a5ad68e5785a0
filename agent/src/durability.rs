//! The agent's side of durability: the WAL archiver of a primary, base backups on
//! request, and restoring a data directory from object storage.

use crate::Shared;
use anyhow::{bail, Context, Result};
use highrise_api::{BackupReport, RestoreSpec, StorageSpec};
use highrise_backup::{archiver, Key, Location, Repo};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Base backups are cut into parts of this size (sealed and uploaded in parallel).
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Least time between WAL uploads when commits do not wait for them.
const ASYNC_UPLOAD_INTERVAL: Duration = Duration::from_millis(200);

pub fn open_repo(s: &StorageSpec) -> Result<Repo> {
    let key = Key::from_hex(&s.data_key).context("read the tenant's data key")?;
    let loc = Location {
        url: s.url.clone(),
        options: s.options.clone(),
        prefix: s.prefix.clone(),
    };
    Repo::open(&loc, key).context("open object storage")
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

/// Takes base backup `id` of the server on `socket_dir`/`port` and waits until the WAL
/// it needs is archived too.
pub async fn take_backup(
    shared: Arc<Shared>,
    id: String,
    storage: StorageSpec,
    socket_dir: std::path::PathBuf,
    port: u16,
    mut archived: watch::Receiver<archiver::Status>,
) -> BackupReport {
    let res: Result<highrise_backup::base::Manifest> = async {
        let repo = open_repo(&storage)?;
        let started = crate::unix_now();
        let mut conn = highrise_pg::admin_connect(&socket_dir, port, "postgres").await?;
        // The server compresses (LZ4) and no manifest comes along, so the WAL range is
        // taken around the backup: before it, at or before its start; after it, at or
        // past its end.
        let (timeline, start_lsn) = highrise_pg::wal_position(&mut conn).await?;
        let mut child = highrise_pg::basebackup_stream(&shared.bin, &socket_dir, port, shared.run_as)?;
        let stdout = child.stdout.take().context("pg_basebackup output")?;
        let stderr = child.stderr.take();
        let kind = highrise_backup::base::StreamKind::Lz4Tar { timeline, start_lsn };
        let uploaded = repo.upload_base(&id, stdout, PART_SIZE, started, kind).await;
        let status = child.wait().await.context("wait for pg_basebackup")?;
        if !status.success() {
            let mut msg = String::new();
            if let Some(mut e) = stderr {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut msg).await;
            }
            bail!("pg_basebackup failed ({status}): {}", msg.trim());
        }
        let mut m = uploaded.context("store the base backup")?;
        m.end_lsn = highrise_pg::wal_position(&mut conn).await?.1;
        // Complete only once the WAL that makes the copy consistent is stored as well.
        let end = m.end_lsn;
        tokio::time::timeout(
            Duration::from_secs(300),
            archived.wait_for(|s| s.archived.is_some_and(|a| a >= end)),
        )
        .await
        .context("WAL up to the backup's end was not archived within 5 minutes")?
        .context("the archiver stopped")?;
        repo.put_manifest(&m).await.context("store the backup's manifest")?;
        Ok(m)
    }
    .await;
    match res {
        Ok(m) => {
            tracing::info!(backup = %id, size = m.size, stored = m.stored, "base backup stored");
            BackupReport {
                id,
                status: "complete".into(),
                timeline: Some(m.timeline),
                start_lsn: Some(m.start_lsn),
                end_lsn: Some(m.end_lsn),
                size_bytes: Some(m.size),
                stored_bytes: Some(m.stored),
                error: None,
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
            }
        }
    }
}

/// Makes `pgdata` the restore's base backup plus every archived WAL segment from its
/// start, owned by the PostgreSQL user. Archive recovery then runs on start.
pub async fn restore(shared: &Shared, r: &RestoreSpec, pgdata: &Path) -> Result<()> {
    let repo = open_repo(&r.storage)?;
    tracing::info!(backup = %r.backup_id, "restoring from object storage");
    if pgdata.exists() {
        std::fs::remove_dir_all(pgdata).with_context(|| format!("clear {}", pgdata.display()))?;
    }
    let m = repo
        .restore_base(&r.backup_id, pgdata, false)
        .await
        .with_context(|| format!("restore base backup {}", r.backup_id))?;
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
    tracing::info!(backup = %r.backup_id, wal_end = %highrise_backup::fmt_lsn(end), "restored from object storage; recovering");
    Ok(())
}
