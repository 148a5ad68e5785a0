//! Continuous WAL archiving: a physical replication client that streams a primary's WAL
//! into object storage in small chunks.
//!
//! The archiver holds a replication slot, so the primary keeps every byte that is not yet
//! in object storage on its own disk (an outage of the store costs disk, never WAL). It
//! confirms as *flushed* only what is stored: listed in `synchronous_standby_names`
//! (durability `sync`), a commit returns only once its WAL is in object storage. One upload
//! is in flight at a time and WAL keeps arriving meanwhile, so uploads batch themselves
//! under load; `min_interval` spaces them further when commits need not wait (`async`).

use crate::pgwire::{Conn, Incoming, WireError};
use crate::{fmt_lsn, parse_lsn, Repo, SEG_SIZE};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The `application_name` the archiver streams as (what `synchronous_standby_names`
/// lists for durability `sync`).
pub const APPLICATION_NAME: &str = "highrise_archiver";
/// The replication slot the archiver streams from.
pub const SLOT: &str = "highrise_archiver";
/// Pending WAL beyond which the archiver stops reading until an upload completes.
const MAX_PENDING: usize = 32 * 1024 * 1024;
/// An upload starts at the latest when this much WAL is pending.
const UPLOAD_AT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// The server's socket file (`<dir>/.s.PGSQL.<port>`).
    pub socket: PathBuf,
    pub user: String,
    /// The cluster's term: every chunk is keyed by it.
    pub term: i64,
    /// Least time between uploads (zero: upload as soon as WAL arrives).
    pub min_interval: Duration,
}

/// What the archiver reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub timeline: u32,
    /// Everything before this LSN is in object storage.
    pub archived: Option<u64>,
    /// The last failure, cleared by the next successful upload.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum ArchiveError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Store(#[from] crate::Error),
    #[error("{0}")]
    Other(String),
}

/// Archives until `stop` turns true; reconnects with backoff after any failure.
pub async fn run(repo: Repo, cfg: Config, status: watch::Sender<Status>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    let mut last_error = String::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let r = tokio::select! {
            r = session(&repo, &cfg, &status, &mut backoff) => r,
            _ = stop.changed() => return,
        };
        if let Err(e) = r {
            let msg = e.to_string();
            if msg != last_error {
                tracing::warn!("WAL archiving: {msg}");
                last_error = msg.clone();
            }
            status.send_modify(|s| s.error = Some(msg));
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(
    repo: &Repo,
    cfg: &Config,
    status: &watch::Sender<Status>,
    backoff: &mut Duration,
) -> Result<(), ArchiveError> {
    let mut c = Conn::connect(&cfg.socket, &cfg.user, APPLICATION_NAME).await?;
    let sys = c.query("IDENTIFY_SYSTEM").await?;
    let tli: u32 = sys
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ArchiveError::Other("IDENTIFY_SYSTEM: no timeline".into()))?;
    // Where this timeline began: the server has its WAL only from that segment on.
    let mut switch_point = 0;
    if tli > 1 {
        let h = c.query(&format!("TIMELINE_HISTORY {tli}")).await?;
        let content = h
            .first()
            .and_then(|r| r.get(1).cloned().flatten())
            .ok_or_else(|| ArchiveError::Other("TIMELINE_HISTORY: no content".into()))?;
        repo.put_history(tli, content.as_bytes()).await?;
        switch_point = content
            .lines()
            .filter_map(|l| l.split('\t').nth(1).and_then(parse_lsn))
            .max()
            .unwrap_or(0);
    }
    match c
        .query(&format!("CREATE_REPLICATION_SLOT {SLOT} PHYSICAL RESERVE_WAL"))
        .await
    {
        Ok(_) => {}
        Err(WireError::Server { code, .. }) if code == "42710" => {}
        Err(e) => return Err(e.into()),
    }
    let slot = c.query(&format!("READ_REPLICATION_SLOT {SLOT}")).await?;
    let restart = slot
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .and_then(|l| parse_lsn(&l))
        .unwrap_or(0);
    let known = status.borrow().clone();
    let archived = match known.archived.filter(|_| known.timeline == tli) {
        Some(a) => Some(a),
        None => repo.wal_end(tli).await?,
    };
    let start = match archived {
        Some(a) if a >= restart => a,
        Some(a) => {
            // The slot was lost (recreated): WAL between is gone for good.
            tracing::error!(
                "WAL archive gap on timeline {tli}: archived up to {}, the server keeps WAL from {}",
                fmt_lsn(a),
                fmt_lsn(restart)
            );
            restart - restart % SEG_SIZE
        }
        None => {
            let from = restart.max(switch_point);
            from - from % SEG_SIZE
        }
    };
    status.send_modify(|s| {
        s.timeline = tli;
        s.archived = Some(start);
    });
    let (mut rx, mut feedback) = c.start_replication(SLOT, start, tli).await?;
    tracing::info!(timeline = tli, from = %fmt_lsn(start), "WAL archiving streams");
    let mut received = start;
    let mut archived = start;
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_start = start;
    let mut pending_since: Option<Instant> = None;
    let mut upload: Option<tokio::task::JoinHandle<Result<u64, crate::Error>>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ended: Option<ArchiveError> = None;
    while ended.is_none() {
        let due = pending_since.map(|t| t + cfg.min_interval);
        tokio::select! {
            msg = rx.recv(), if pending.len() < MAX_PENDING => match msg {
                Some(Ok(Incoming::XLog { start, data })) => {
                    if start != received {
                        return Err(ArchiveError::Other(format!(
                            "stream jumped from {} to {}", fmt_lsn(received), fmt_lsn(start))));
                    }
                    if pending.is_empty() {
                        pending_start = start;
                        pending_since = Some(Instant::now());
                    }
                    pending.extend_from_slice(&data);
                    received = start + data.len() as u64;
                }
                Some(Ok(Incoming::Keepalive { reply })) => if reply {
                    feedback.send(received, archived).await?;
                },
                // The server went away (a shutdown sends all WAL first): store what
                // arrived before reconnecting.
                Some(Ok(Incoming::Done)) => ended = Some(ArchiveError::Other("the server ended the stream".into())),
                Some(Err(e)) => ended = Some(e.into()),
                None => ended = Some(ArchiveError::Other("replication stream closed".into())),
            },
            r = async { upload.as_mut().expect("guarded").await }, if upload.is_some() => {
                upload = None;
                match r {
                    Ok(Ok(end)) => {
                        archived = end;
                        *backoff = Duration::from_millis(200);
                        status.send_modify(|s| { s.archived = Some(end); s.error = None; });
                        feedback.send(received, archived).await?;
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(e) => return Err(ArchiveError::Other(format!("upload task: {e}"))),
                }
            },
            _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() && upload.is_none() => {}
            _ = tick.tick() => feedback.send(received, archived).await?,
        }
        let ready = pending_since.is_some_and(|t| t.elapsed() >= cfg.min_interval) || pending.len() >= UPLOAD_AT;
        if upload.is_none() && !pending.is_empty() && ready {
            let bytes = std::mem::take(&mut pending);
            let (repo, term, from) = (repo.clone(), cfg.term, pending_start);
            pending_since = None;
            upload = Some(tokio::spawn(async move {
                repo.put_wal(tli, term, from, &bytes).await?;
                Ok(from + bytes.len() as u64)
            }));
        }
    }
    if let Some(u) = upload.take() {
        if let Ok(Ok(end)) = u.await {
            status.send_modify(|s| s.archived = Some(end));
        }
    }
    if !pending.is_empty() {
        repo.put_wal(tli, cfg.term, pending_start, &pending).await?;
        let end = pending_start + pending.len() as u64;
        status.send_modify(|s| s.archived = Some(end));
    }
    Err(ended.expect("loop ends with a reason"))
}
