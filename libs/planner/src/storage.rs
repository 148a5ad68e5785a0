//! The storage guard: how full an instance's storage is, and what follows from it.
//!
//! Two limits bound an instance: the storage its plan includes (data plus WAL) and the
//! physical disk it sits on (shared with the host's other instances, minus the reserve the
//! agent keeps to release in an emergency and the [`WAL_HEADROOM_BYTES`] PostgreSQL
//! cannot run without). Whichever is fuller decides the level:
//!
//! | level       | from (of the limit) | what happens                                              |
//! |-------------|---------------------|-----------------------------------------------------------|
//! | `Normal`    |                     | nothing                                                   |
//! | `Warning`   | 80%                 | an event                                                  |
//! | `ReadOnly`  | 90%                 | new transactions default to read-only (an explicit read-write session, `VACUUM` and `TRUNCATE` still work) |
//! | `Critical`  | 95%                 | write transactions already running are cancelled too      |
//! | `Full`      | the disk, all of it | filled anyway (another process, a burst): the reserve is released so PostgreSQL can run; read-only |
//!
//! Levels go up as soon as a threshold is crossed and come down only once the fill is
//! below [`CLEAR_PERMILLE`] (so a database hovering at the mark does not flap), except
//! `Warning`, which follows the fill both ways around [`WARNING_PERMILLE`].
//!
//! The reserve is a file the agent keeps on every host disk ([`reserve_size`]): when the
//! disk's free room falls below one WAL segment despite the guard, the agent deletes it
//! ([`reserve`]), so PostgreSQL can still write WAL, start, and let the tenant free
//! space; it is taken again once the disk would be below the clear mark with it.
//!
//! The agent applies the level itself, every fraction of a second and with no control
//! plane in the loop (a disk fills faster than a round trip); the control plane turns the
//! levels agents report into events ([`announce`]). With storage autoscaling on, the
//! planner moves a cluster to hosts with twice the disk from [`AUTOSCALE_PERMILLE`] of its
//! primary's disk ([`autoscale`]), well before the read-only mark.

use serde::{Deserialize, Serialize};

/// Fill (per mille of the limit) from which the tenant is warned.
pub const WARNING_PERMILLE: u32 = 800;
/// Fill from which new transactions are read-only: the high-water mark.
pub const READ_ONLY_PERMILLE: u32 = 900;
/// Fill from which running write transactions are cancelled as well.
pub const CRITICAL_PERMILLE: u32 = 950;
/// A read-only instance turns read-write again once its fill is below this.
pub const CLEAR_PERMILLE: u32 = 850;
/// Room on the disk the percentages leave out: PostgreSQL creates WAL a 16 MB segment at
/// a time and cannot run when it cannot (it stops with a PANIC), so two segments stay
/// free beyond the marks even on a disk too small for 5% to hold one.
pub const WAL_HEADROOM_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Normal,
    Warning,
    ReadOnly,
    Critical,
    /// The disk filled despite the guard and the reserve was released.
    Full,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warning => "warning",
            Level::ReadOnly => "read_only",
            Level::Critical => "critical",
            Level::Full => "full",
        }
    }

    /// Whether new transactions default to read-only at this level.
    pub fn read_only(self) -> bool {
        self >= Level::ReadOnly
    }
}

/// What an instance's storage holds and where it lives, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// Data and WAL of the instance.
    pub used_bytes: u64,
    /// The storage the plan includes (`0`: no plan limit).
    pub plan_bytes: u64,
    /// The disk's size and free room as the file system reports them.
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
    /// Held back on the disk by the agent (a file it can delete): not room for data.
    pub reserve_bytes: u64,
}

/// What an agent reports of an instance: the numbers and the level it applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub reading: Reading,
    pub level: Level,
}

/// Which limit is the nearer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bound {
    Plan,
    Disk,
}

/// How full the fuller of the two limits is, per mille (may exceed 1000 for the plan).
pub fn fill(r: &Reading) -> (u32, Bound) {
    let plan = permille(r.used_bytes, r.plan_bytes);
    let (taken, usable) = disk_room(r);
    let disk = if usable == 0 && r.disk_total_bytes > 0 {
        1000
    } else {
        permille(taken, usable)
    };
    if plan > disk {
        (plan, Bound::Plan)
    } else {
        (disk, Bound::Disk)
    }
}

/// Bytes of the disk taken and usable. The reserve is neither free nor usable, and the WAL
/// headroom is free but not usable: the disk is as big as what is left besides them.
fn disk_room(r: &Reading) -> (u64, u64) {
    let usable = r
        .disk_total_bytes
        .saturating_sub(r.reserve_bytes)
        .saturating_sub(WAL_HEADROOM_BYTES);
    let taken = r
        .disk_total_bytes
        .saturating_sub(r.disk_free_bytes)
        .saturating_sub(r.reserve_bytes);
    (taken, usable)
}

fn permille(part: u64, whole: u64) -> u32 {
    if whole == 0 {
        return 0;
    }
    ((part as u128 * 1000) / whole as u128).min(u32::MAX as u128) as u32
}

/// Storage autoscaling moves a cluster to larger disks from this fill of its primary's disk:
/// well before the read-only mark, so a new member has time to copy the data and catch up.
pub const AUTOSCALE_PERMILLE: u32 = 700;

/// A decision to move a cluster's members to larger disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grow {
    pub to_bytes: u64,
    pub message: String,
}

/// Whether storage autoscaling (up to `max_bytes`; `0`: off) should move the cluster to
/// larger disks, given its primary's reading, the primary host's disk size (its launch
/// size, else what the file system says) and the disk size the cluster already asks for.
/// The next size doubles the disk, capped at the maximum; at the maximum the guard's
/// levels take over.
pub fn autoscale(r: &Reading, host_disk: Option<u64>, target_bytes: u64, max_bytes: u64) -> Option<Grow> {
    let current = host_disk.unwrap_or(r.disk_total_bytes);
    // Off, no disk of its own, or a move to a larger one under way already.
    if max_bytes == 0 || current == 0 || target_bytes > current {
        return None;
    }
    let (taken, usable) = disk_room(r);
    let fill = if usable == 0 { 1000 } else { permille(taken, usable) };
    let to = current.saturating_mul(2).min(max_bytes);
    if fill < AUTOSCALE_PERMILLE || to <= current {
        return None;
    }
    Some(Grow {
        to_bytes: to,
        message: format!(
            "storage autoscaling: the primary's disk is {}.{}% full ({} used of {}); moving the members to \
             hosts with {} disks (at most {})",
            fill / 10,
            fill % 10,
            mib(taken),
            mib(usable),
            mib(to),
            mib(max_bytes)
        ),
    })
}

/// The reserve's free room threshold: below one WAL segment, PostgreSQL is about to fail.
pub const RELEASE_BELOW_BYTES: u64 = 16 * 1024 * 1024;

/// How much a disk of `total_bytes` keeps in reserve: a sixteenth, between two WAL
/// segments and 1 GiB.
pub fn reserve_size(total_bytes: u64) -> u64 {
    (total_bytes / 16).clamp(32 * 1024 * 1024, 1024 * 1024 * 1024)
}

/// What to do with the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveStep {
    Keep,
    /// Delete it: the disk is full.
    Release,
    /// Take it (again): there is room for it below the clear mark.
    Take,
}

/// The reserve's next step for the disk in `r` (`r.reserve_bytes`: what is held now, 0
/// while released) and the reserve this disk should have.
pub fn reserve(r: &Reading, size: u64) -> ReserveStep {
    if r.reserve_bytes > 0 {
        if r.disk_free_bytes < RELEASE_BELOW_BYTES {
            return ReserveStep::Release;
        }
        return ReserveStep::Keep;
    }
    if size == 0 || r.disk_free_bytes < size {
        return ReserveStep::Keep;
    }
    let with = Reading {
        used_bytes: 0,
        plan_bytes: 0,
        disk_free_bytes: r.disk_free_bytes - size,
        reserve_bytes: size,
        ..*r
    };
    if fill(&with).0 < CLEAR_PERMILLE {
        ReserveStep::Take
    } else {
        ReserveStep::Keep
    }
}

/// The level after `prev` given the current fill (per mille) and whether the reserve is
/// released because the disk filled (that is `Full` until the reserve is taken again).
pub fn guard_level(prev: Level, fill_permille: u32, released: bool) -> Level {
    if released {
        Level::Full
    } else {
        level(prev, fill_permille)
    }
}

/// The level after `prev` given the current fill (per mille).
pub fn level(prev: Level, fill_permille: u32) -> Level {
    // `Full` ends with the reserve taken again, which happens below the clear mark.
    let prev = prev.min(Level::Critical);
    let by_fill = if fill_permille >= CRITICAL_PERMILLE {
        Level::Critical
    } else if fill_permille >= READ_ONLY_PERMILLE {
        Level::ReadOnly
    } else if fill_permille >= WARNING_PERMILLE {
        Level::Warning
    } else {
        Level::Normal
    };
    if by_fill >= prev || !prev.read_only() {
        return by_fill;
    }
    // Read-only stays until the fill is well below the mark (Critical steps down to it).
    if fill_permille >= CLEAR_PERMILLE {
        Level::ReadOnly
    } else {
        by_fill
    }
}

/// What the control plane tells the tenant when a cluster's primary reports `now` after
/// `announced` (`None` when there is nothing new to say). `reading` gives the numbers.
pub fn announce(announced: Level, now: Level, reading: &Reading) -> Option<(&'static str, String)> {
    if now == announced {
        return None;
    }
    // Critical is read-only with running writes cancelled: told as read-only, once.
    if now.read_only() && announced.read_only() && now != Level::Full {
        return None;
    }
    let (fill, bound) = fill(reading);
    let (used, limit, what) = match bound {
        Bound::Plan => (reading.used_bytes, reading.plan_bytes, "the plan's storage"),
        Bound::Disk => {
            let (taken, usable) = disk_room(reading);
            (taken, usable, "its disk")
        }
    };
    let amount = format!(
        "{} used of {} ({}.{}% of {what})",
        mib(used),
        mib(limit),
        fill / 10,
        fill % 10
    );
    Some(match now {
        Level::Normal | Level::Warning if announced.read_only() => (
            "storage_read_write",
            format!(
                "storage back below {}%: writes are allowed again; {amount}",
                CLEAR_PERMILLE / 10
            ),
        ),
        Level::Normal => (
            "storage_ok",
            format!("storage use is back below {}%: {amount}", WARNING_PERMILLE / 10),
        ),
        Level::Warning => (
            "storage_warning",
            format!(
                "storage is filling up: {amount}; at {}% the database turns read-only",
                READ_ONLY_PERMILLE / 10
            ),
        ),
        Level::Full => (
            "storage_full",
            format!(
                "the disk filled up despite the read-only mark ({} of it is this database's data and WAL; \
                 the rest is other data on the host): the agent released its reserve so PostgreSQL keeps \
                 running, read-only; {amount}. Free space in a read-write session (SET SESSION \
                 CHARACTERISTICS AS TRANSACTION READ WRITE; then DELETE, TRUNCATE or DROP)",
                mib(reading.used_bytes)
            ),
        ),
        Level::ReadOnly | Level::Critical => (
            "storage_read_only",
            format!(
                "storage nearly full: {amount}, so the database is read-only; free space in a read-write \
                 session (SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; then DELETE, TRUNCATE or DROP) \
                 and writes resume below {}%",
                CLEAR_PERMILLE / 10
            ),
        ),
    })
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    fn disk(total_mib: u64, free_mib: u64, reserve_mib: u64) -> Reading {
        Reading {
            used_bytes: 0,
            plan_bytes: 10 * 1024 * MIB,
            disk_total_bytes: total_mib * MIB + WAL_HEADROOM_BYTES,
            disk_free_bytes: free_mib * MIB + WAL_HEADROOM_BYTES,
            reserve_bytes: reserve_mib * MIB,
        }
    }

    #[test]
    fn the_fuller_limit_decides() {
        // In MiB; every disk is 32 MiB (the WAL headroom) bigger than the room it offers.
        let cases = [
            // (used, plan, total, free, reserve) -> (permille, bound)
            ((0, 1000, 1032, 1032, 0), (0, Bound::Disk)),
            ((500, 1000, 1032, 932, 0), (500, Bound::Plan)),
            ((100, 1000, 1032, 132, 0), (900, Bound::Disk)),
            // The reserve is not usable room: 400 of 900 usable are taken.
            ((0, 0, 1032, 532, 100), (444, Bound::Disk)),
            // Over the plan shows as over 100%.
            ((1500, 1000, 10_032, 9_032, 0), (1500, Bound::Plan)),
            // Into the headroom shows as over 100% too.
            ((0, 0, 1032, 16, 0), (1016, Bound::Disk)),
            // A disk smaller than the headroom is full from the start.
            ((0, 0, 16, 8, 0), (1000, Bound::Disk)),
            // Nothing measured yet.
            ((0, 0, 0, 0, 0), (0, Bound::Disk)),
        ];
        for ((used, plan, total, free, reserve), want) in cases {
            let r = Reading {
                used_bytes: used * MIB,
                plan_bytes: plan * MIB,
                disk_total_bytes: total * MIB,
                disk_free_bytes: free * MIB,
                reserve_bytes: reserve * MIB,
            };
            assert_eq!(fill(&r), want, "{r:?}");
        }
    }

    #[test]
    fn levels_rise_at_once_and_fall_below_the_clear_mark() {
        use Level::*;
        let cases = [
            (Normal, 799, Normal),
            (Normal, 800, Warning),
            (Warning, 799, Normal),
            (Normal, 900, ReadOnly),
            (Warning, 949, ReadOnly),
            (Normal, 950, Critical),
            (ReadOnly, 960, Critical),
            // Down: read-only holds until below 85%.
            (ReadOnly, 899, ReadOnly),
            (ReadOnly, 850, ReadOnly),
            (ReadOnly, 849, Warning),
            (ReadOnly, 100, Normal),
            (Critical, 940, ReadOnly),
            (Critical, 860, ReadOnly),
            (Critical, 700, Normal),
            (Warning, 2000, Critical),
        ];
        for (prev, fill, want) in cases {
            assert_eq!(level(prev, fill), want, "{prev:?} at {fill}");
        }
    }

    #[test]
    fn announcements_name_the_numbers_and_say_what_to_do() {
        let r = disk(1000, 80, 0);
        let (kind, msg) = announce(Level::Normal, Level::ReadOnly, &r).unwrap();
        assert_eq!(kind, "storage_read_only");
        assert!(msg.contains("920 MiB used of 1000 MiB (92.0% of its disk)"), "{msg}");
        assert!(msg.contains("READ WRITE"), "{msg}");
        let (kind, msg) = announce(Level::Normal, Level::Warning, &disk(1000, 150, 0)).unwrap();
        assert_eq!(kind, "storage_warning");
        assert!(msg.contains("850 MiB used of 1000 MiB (85.0% of its disk)"), "{msg}");
        let (kind, _) = announce(Level::ReadOnly, Level::Warning, &disk(1000, 200, 0)).unwrap();
        assert_eq!(kind, "storage_read_write");
        let (kind, _) = announce(Level::Warning, Level::Normal, &disk(1000, 500, 0)).unwrap();
        assert_eq!(kind, "storage_ok");
        // Nothing new: the same level, or read-only turning critical.
        assert_eq!(announce(Level::Warning, Level::Warning, &r), None);
        assert_eq!(announce(Level::ReadOnly, Level::Critical, &r), None);
        let plan = Reading {
            used_bytes: 9 * 1024 * MIB + 300 * MIB,
            ..disk(100_000, 90_000, 0)
        };
        let (_, msg) = announce(Level::Warning, Level::ReadOnly, &plan).unwrap();
        assert!(
            msg.contains("9516 MiB used of 10240 MiB (92.9% of the plan's storage)"),
            "{msg}"
        );
    }

    #[test]
    fn the_reserve_goes_when_the_disk_is_full_and_comes_back_with_room() {
        use ReserveStep::*;
        let size = reserve_size(400 * MIB);
        assert_eq!(size, 32 * MIB, "a small disk keeps two WAL segments");
        assert_eq!(reserve_size(100 * 1024 * MIB), 1024 * MIB);
        assert_eq!(reserve_size(8 * 1024 * MIB), 512 * MIB);
        // (free MiB, held MiB) on a 400 MiB disk -> step
        let cases = [
            ((200, 32), Keep),
            ((17, 32), Keep),
            ((15, 32), Release),
            ((0, 32), Release),
            // Released: taken again only once it fits below the clear mark.
            ((47, 0), Keep),
            ((90, 0), Keep),
            ((120, 0), Take),
            // Never made yet (a new host): the same rule.
            ((300, 0), Take),
            // Not even room for the file.
            ((20, 0), Keep),
        ];
        for ((free, held), want) in cases {
            let r = Reading {
                disk_total_bytes: 400 * MIB,
                disk_free_bytes: free * MIB,
                reserve_bytes: held * MIB,
                ..Reading::default()
            };
            assert_eq!(reserve(&r, size), want, "free {free} MiB, held {held} MiB");
        }
    }

    #[test]
    fn a_full_disk_is_its_own_level_until_the_reserve_is_back() {
        assert_eq!(guard_level(Level::Critical, 1100, true), Level::Full);
        assert_eq!(guard_level(Level::Normal, 100, true), Level::Full);
        assert!(Level::Full.read_only());
        // Taken again (below the clear mark): the fill decides.
        assert_eq!(guard_level(Level::Full, 700, false), Level::Normal);
        assert_eq!(guard_level(Level::Full, 820, false), Level::Warning);
        let r = disk(1000, 5, 0);
        let (kind, msg) = announce(Level::ReadOnly, Level::Full, &r).unwrap();
        assert_eq!(kind, "storage_full");
        assert!(
            msg.contains("released its reserve") && msg.contains("READ WRITE"),
            "{msg}"
        );
        assert_eq!(announce(Level::Full, Level::Full, &r), None);
        let (kind, _) = announce(Level::Full, Level::Normal, &disk(1000, 500, 32)).unwrap();
        assert_eq!(kind, "storage_read_write");
    }

    #[test]
    fn autoscaling_doubles_the_disk_before_the_read_only_mark_up_to_its_maximum() {
        let gib = 1024 * MIB;
        // (used MiB of 1000 usable, host disk, target, max) -> new size
        let cases = [
            // Off.
            ((800, Some(1032 * MIB), 0, 0), None),
            // Below 70%.
            ((690, Some(1032 * MIB), 0, 10 * gib), None),
            // From 70%: double.
            ((700, Some(1032 * MIB), 0, 10 * gib), Some(2064 * MIB)),
            ((950, None, 0, 10 * gib), Some(2064 * MIB)),
            // Capped at the maximum; none at it.
            ((800, Some(1032 * MIB), 0, 1500 * MIB), Some(1500 * MIB)),
            ((800, Some(1500 * MIB), 1500 * MIB, 1500 * MIB), None),
            // A move under way (the cluster asks for more than the primary's host has).
            ((900, Some(1032 * MIB), 2064 * MIB, 10 * gib), None),
            // Moved: the new disk fills in turn.
            ((900, Some(1032 * MIB), 1032 * MIB, 10 * gib), Some(2064 * MIB)),
        ];
        for ((used, host, target, max), want) in cases {
            let r = disk(1000, 1000 - used, 0);
            let got = autoscale(&r, host, target, max).map(|g| g.to_bytes);
            assert_eq!(got, want, "{used} MiB used, host {host:?}, target {target}, max {max}");
        }
        let g = autoscale(&disk(1000, 200, 0), Some(1032 * MIB), 0, 10 * gib).unwrap();
        assert!(
            g.message.contains("80.0% full") && g.message.contains("2064 MiB disks"),
            "{}",
            g.message
        );
    }

    proptest! {
        /// Whatever the history, the level is never below what the fill alone says, and a
        /// fill below the clear mark always leaves read-only.
        #[test]
        fn level_is_safe_and_never_sticks(fills in proptest::collection::vec(0u32..1200, 1..50)) {
            let mut l = Level::Normal;
            for f in fills {
                l = level(l, f);
                if f >= READ_ONLY_PERMILLE {
                    prop_assert!(l.read_only());
                }
                if f >= CRITICAL_PERMILLE {
                    prop_assert_eq!(l, Level::Critical);
                }
                if f < CLEAR_PERMILLE {
                    prop_assert!(!l.read_only());
                }
            }
        }
    }
}
