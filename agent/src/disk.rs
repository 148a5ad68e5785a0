//! The host's disk: its room, read twenty times a second and published to the supervisors,
//! which apply the storage guard (`highrise_planner::storage`) to their instances. A disk
//! fills faster than the 5-second walk of a data directory notices, so the file system's
//! own count is what the guard's disk limit follows.

use crate::Shared;
use highrise_planner::storage;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the disk's room is read (one `statvfs`).
const READ_EVERY: Duration = Duration::from_millis(50);

/// The host disk's size and room, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Held back by the agent (not free, not usable).
    pub reserve_bytes: u64,
}

/// Reads the disk under the host directory until `stop`. Supervisors are woken when the
/// disk crosses one of the guard's marks; the numbers themselves are always current.
pub async fn watch(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut band = None;
    loop {
        match highrise_pg::disk_room(&shared.cfg.dir) {
            Ok((total_bytes, free_bytes)) => {
                let room = Room {
                    total_bytes,
                    free_bytes,
                    reserve_bytes: 0,
                };
                let now = Some(mark(&room));
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
