//! The host's disk: its room, read twenty times a second and published to the
//! supervisors, which apply the storage guard (`highrise_planner::storage`) to their
//! instances; and the reserve, a file of real blocks (`<host>/reserve`) released when the
//! disk fills despite the guard, so PostgreSQL can still write WAL and start, and taken
//! again once there is room. A disk fills faster than the 5-second walk of a data
//! directory notices, so the file system's own count is what the guard's disk limit follows.
//!
//! A host whose directory is on a shared file system (`AgentConfig::shared_disk`) reports
//! no disk to the guard and keeps no reserve: that disk's fullness is not this host's.

use crate::Shared;
use anyhow::{Context, Result};
use highrise_planner::storage::{self, ReserveStep};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the disk's room is read (one `statvfs`).
const READ_EVERY: Duration = Duration::from_millis(50);

/// The host disk's size and room, in bytes, as the guard sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Held back in the reserve file (not free, not usable).
    pub reserve_bytes: u64,
    /// The reserve was released because the disk filled, and is not back yet.
    pub released: bool,
}

struct Reserve {
    file: PathBuf,
    /// Marks a release across agent restarts (until the reserve is taken again).
    marker: PathBuf,
    held: u64,
    released: bool,
}

impl Reserve {
    fn open(dir: &Path) -> Self {
        let file = dir.join("reserve");
        let marker = dir.join("reserve.released");
        Reserve {
            held: std::fs::metadata(&file).map_or(0, |m| m.len()),
            released: marker.exists(),
            file,
            marker,
        }
    }

    fn release(&mut self) -> Result<()> {
        std::fs::remove_file(&self.file).with_context(|| format!("delete {}", self.file.display()))?;
        self.held = 0;
        self.released = true;
        // Best effort: with the reserve gone there is room for an empty file.
        let _ = std::fs::write(&self.marker, b"");
        Ok(())
    }

    fn take(&mut self, size: u64) -> Result<()> {
        let tmp = self.file.with_extension("tmp");
        let made = (|| -> Result<()> {
            let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
            let len = i64::try_from(size).context("reserve size")?;
            // Real blocks, not a sparse file: the room must be there to give back.
            nix::fcntl::posix_fallocate(f.as_raw_fd(), 0, len)
                .with_context(|| format!("allocate {}", tmp.display()))?;
            std::fs::rename(&tmp, &self.file).with_context(|| format!("rename {}", tmp.display()))
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made?;
        self.held = size;
        self.released = false;
        let _ = std::fs::remove_file(&self.marker);
        Ok(())
    }
}

/// Reads the disk under the host directory until `stop`, releasing and taking the reserve
/// as `storage::reserve` says. Supervisors are woken when the disk crosses one of the
/// guard's marks or the reserve is released or back; the numbers are always current.
pub async fn watch(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    if shared.cfg.shared_disk {
        // Not this host's disk to guard: no disk (and no reserve) as far as the guard knows.
        shared.disk.send_replace(Some(Room::default()));
        let _ = stop.wait_for(|s| *s).await;
        return;
    }
    let mut reserve = Reserve::open(&shared.cfg.dir);
    let mut band = None;
    loop {
        match highrise_pg::disk_room(&shared.cfg.dir) {
            Ok((total_bytes, free_bytes)) => {
                let mut room = Room {
                    total_bytes,
                    free_bytes,
                    reserve_bytes: reserve.held,
                    released: reserve.released,
                };
                let step = storage::reserve(&reading(&room, 0, 0), storage::reserve_size(total_bytes));
                let done = match step {
                    ReserveStep::Keep => Ok(()),
                    ReserveStep::Release => reserve.release().inspect(|()| {
                        tracing::error!(
                            free_mib = free_bytes >> 20,
                            total_mib = total_bytes >> 20,
                            "the disk is full: released the {} MiB reserve so PostgreSQL can run",
                            room.reserve_bytes >> 20
                        )
                    }),
                    ReserveStep::Take => {
                        let size = storage::reserve_size(total_bytes);
                        reserve.take(size).inspect(|()| {
                            tracing::info!(
                                free_mib = free_bytes >> 20,
                                "holding {} MiB of the disk in reserve",
                                size >> 20
                            )
                        })
                    }
                };
                if let Err(e) = done {
                    tracing::warn!("{e:#}");
                }
                if step != ReserveStep::Keep {
                    // Read again so the numbers include the change.
                    if let Ok((t, f)) = highrise_pg::disk_room(&shared.cfg.dir) {
                        (room.total_bytes, room.free_bytes) = (t, f);
                    }
                    room.reserve_bytes = reserve.held;
                    room.released = reserve.released;
                }
                let now = Some((mark(&room), room.released));
                let crossed = now != band;
                band = now;
                shared.disk.send_if_modified(|r| {
                    *r = Some(room);
                    crossed
                });
            }
            Err(e) => tracing::warn!("read the disk's room: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(READ_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Which of the guard's marks the disk alone is past (a change wakes the supervisors).
fn mark(room: &Room) -> u8 {
    let (fill, _) = storage::fill(&reading(room, 0, 0));
    [
        storage::WARNING_PERMILLE,
        storage::CLEAR_PERMILLE,
        storage::READ_ONLY_PERMILLE,
        storage::CRITICAL_PERMILLE,
    ]
    .iter()
    .filter(|m| fill >= **m)
    .count() as u8
}

/// The guard's reading of an instance using `used_bytes` of a plan of `plan_bytes` on
/// this disk.
pub fn reading(room: &Room, used_bytes: u64, plan_bytes: u64) -> storage::Reading {
    storage::Reading {
        used_bytes,
        plan_bytes,
        disk_total_bytes: room.total_bytes,
        disk_free_bytes: room.free_bytes,
        reserve_bytes: room.reserve_bytes,
    }
}
