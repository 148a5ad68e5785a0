//! Base backup decisions: when the next one is due, which ones retention lets go, which
//! one a restore starts from, and whether a new standby is seeded from one.
//!
//! Pure functions over the backup ledger, like the rest of the planner. Retention keeps the
//! newest `retain_count` complete backups and every complete backup younger than
//! `retain_days`; WAL older than the oldest kept backup's start may go, and nothing it
//! still needs.

/// One row of a cluster's backup ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    pub id: String,
    /// `pending`, `running`, `complete` or `failed`.
    pub status: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub timeline: u32,
    pub start_lsn: u64,
    /// Where the copy is consistent (complete backups).
    pub end_lsn: Option<u64>,
    /// A creation image: consistent before the cluster's first commit, so restores from it
    /// can stop at any moment from this time (the cluster's creation) on.
    pub since: Option<i64>,
}

/// A failed backup is retried after this long.
pub const BACKUP_RETRY_SECS: i64 = 60;

/// Whether a scheduled backup should be requested now.
pub fn backup_due(entries: &[BackupEntry], interval_secs: i64, now: i64) -> bool {
    if entries.iter().any(|b| b.status == "pending" || b.status == "running") {
        return false;
    }
    if entries
        .iter()
        .any(|b| b.status == "failed" && now - b.created_at < BACKUP_RETRY_SECS)
    {
        return false;
    }
    match entries
        .iter()
        .filter(|b| b.status == "complete")
        .map(|b| b.created_at)
        .max()
    {
        None => true,
        Some(last) => now - last >= interval_secs,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention {
    /// Backups to delete (objects and ledger rows).
    pub delete: Vec<String>,
    /// WAL of timelines up to `.0` before LSN `.1` is no longer needed.
    pub wal_before: Option<(u32, u64)>,
}

pub fn retention(entries: &[BackupEntry], retain_count: u32, retain_days: u32, now: i64) -> Retention {
    let mut complete: Vec<&BackupEntry> = entries.iter().filter(|b| b.status == "complete").collect();
    complete.sort_by_key(|b| std::cmp::Reverse((b.finished_at.unwrap_or(b.created_at), b.start_lsn)));
    let young = now - i64::from(retain_days) * 86_400;
    let (mut keep, mut delete) = (Vec::new(), Vec::new());
    for (i, b) in complete.into_iter().enumerate() {
        if i < retain_count.max(1) as usize || b.finished_at.unwrap_or(b.created_at) >= young {
            keep.push(b);
        } else {
            delete.push(b.id.clone());
        }
    }
    // Failed attempts are kept a day for the record, then their leftovers go.
    delete.extend(
        entries
            .iter()
            .filter(|b| b.status == "failed" && now - b.created_at > 86_400)
            .map(|b| b.id.clone()),
    );
    let wal_before = keep
        .iter()
        .map(|b| (b.timeline, b.start_lsn))
        .min_by_key(|&(t, l)| (l, t));
    Retention { delete, wal_before }
}

/// Where a restore stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The end of the archived WAL.
    Latest,
    /// A moment, in whole Unix seconds (rounded down).
    Time(i64),
    Lsn(u64),
}

/// Why no backup can start a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoBase {
    /// No complete backup at all.
    NoBackup,
    /// The target is before the cluster was created (the time it was).
    BeforeCreation(i64),
    /// No backup is consistent before the target.
    NoneBefore,
}

/// The backup a restore to `target` starts from: the newest complete one consistent at
/// or before the target (the least WAL to replay). A creation image is consistent before
/// every commit, so it serves any moment since the cluster's creation. `finished_at` has
/// whole seconds: a backup surely done before the target's second wins over one done
/// within it (PostgreSQL refuses, clearly, a target before a backup's consistent point).
pub fn restore_base(entries: &[BackupEntry], target: RestoreTarget) -> Result<&BackupEntry, NoBase> {
    let mut complete: Vec<&BackupEntry> = entries.iter().filter(|b| b.status == "complete").collect();
    complete.sort_by_key(|b| (b.finished_at, b.end_lsn));
    if complete.is_empty() {
        return Err(NoBase::NoBackup);
    }
    let pick = |ok: &dyn Fn(&BackupEntry) -> bool| complete.iter().rev().find(|b| ok(b)).copied();
    match target {
        RestoreTarget::Latest => Ok(complete[complete.len() - 1]),
        RestoreTarget::Lsn(lsn) => pick(&|b| b.end_lsn.is_some_and(|e| e <= lsn)).ok_or(NoBase::NoneBefore),
        RestoreTarget::Time(t) => {
            let from_creation = |b: &BackupEntry| b.since.is_some_and(|s| s <= t);
            if let Some(b) = pick(&|b| b.finished_at.is_some_and(|f| f < t) || from_creation(b)) {
                return Ok(b);
            }
            if let Some(b) = pick(&|b| b.finished_at.is_some_and(|f| f <= t)) {
                return Ok(b);
            }
            match complete.iter().filter_map(|b| b.since).min() {
                Some(created) if t < created => Err(NoBase::BeforeCreation(created)),
                _ => Err(NoBase::NoneBefore),
            }
        }
    }
}

/// What the control plane knows of a cluster's archive when a new standby is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveFacts {
    /// Everything before this WAL position is in object storage (the primary says so).
    pub archived_lsn: Option<u64>,
    /// The primary's archiver reports an error right now.
    pub failing: bool,
    /// The primary's data files, in bytes, when measured.
    pub data_bytes: Option<u64>,
}

/// WAL a seed may fetch and replay besides twice the data: beyond, a copy of the primary
/// is quicker than the replay and takes less of the standby's disk.
pub const SEED_WAL_ALLOWANCE: u64 = 256 * 1024 * 1024;

/// The backup a new standby is seeded from — its files and the archived WAL since, all
/// from object storage, so the primary streams only what came after — or `None` for a
/// copy of the running primary. The newest complete backup serves when the archive works
/// and holds its WAL, and the WAL to replay since it is at most twice the data plus
/// [`SEED_WAL_ALLOWANCE`].
pub fn seed_base<'a>(entries: &'a [BackupEntry], archive: &ArchiveFacts) -> Option<&'a BackupEntry> {
    let archived = archive.archived_lsn.filter(|_| !archive.failing)?;
    let newest = restore_base(entries, RestoreTarget::Latest).ok()?;
    let end = newest.end_lsn?;
    let to_replay = archived.checked_sub(newest.start_lsn)?;
    let allowed = archive
        .data_bytes
        .unwrap_or(0)
        .saturating_mul(2)
        .saturating_add(SEED_WAL_ALLOWANCE);
    (end <= archived && to_replay <= allowed).then_some(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, status: &str, created: i64, lsn: u64) -> BackupEntry {
        BackupEntry {
            id: id.into(),
            status: status.into(),
            created_at: created,
            finished_at: (status == "complete").then_some(created + 10),
            timeline: 1,
            start_lsn: lsn,
            end_lsn: (status == "complete").then_some(lsn + 5),
            since: None,
        }
    }

    #[test]
    fn a_restore_starts_from_the_newest_backup_consistent_before_its_target() {
        let mut genesis = b("genesis", "complete", 100, 10);
        genesis.since = Some(98);
        let entries = vec![
            genesis,
            b("b1", "complete", 200, 100),
            b("b2", "complete", 300, 200),
            b("run", "running", 400, 300),
        ];
        let id = |t| restore_base(&entries, t).map(|b| b.id.as_str());
        use RestoreTarget::*;
        let cases = [
            (Latest, Ok("b2")),
            // From the creation on, before any backup finished: the creation image.
            (Time(98), Ok("genesis")),
            (Time(105), Ok("genesis")),
            // b1 finished within second 210, perhaps after the target: the creation image
            // is surely consistent before it.
            (Time(210), Ok("genesis")),
            (Time(211), Ok("b1")),
            (Time(9999), Ok("b2")),
            (Time(97), Err(NoBase::BeforeCreation(98))),
            (Lsn(15), Ok("genesis")),
            (Lsn(105), Ok("b1")),
            (Lsn(14), Err(NoBase::NoneBefore)),
        ];
        for (target, want) in cases {
            assert_eq!(id(target), want, "{target:?}");
        }
        // Without a creation image the window opens at the first backup's end.
        let plain = &entries[1..];
        assert_eq!(restore_base(plain, Time(150)).unwrap_err(), NoBase::NoneBefore);
        assert_eq!(restore_base(plain, Time(210)).unwrap().id, "b1");
        assert_eq!(restore_base(&entries[3..], Latest).unwrap_err(), NoBase::NoBackup);
    }

    #[test]
    fn due_when_none_or_old_and_not_while_one_runs_or_just_failed() {
        assert!(backup_due(&[], 3600, 0));
        assert!(!backup_due(&[b("a", "complete", 0, 1)], 3600, 3599));
        assert!(backup_due(&[b("a", "complete", 0, 1)], 3600, 3600));
        assert!(!backup_due(
            &[b("a", "complete", 0, 1), b("b", "running", 3600, 2)],
            3600,
            9999
        ));
        assert!(!backup_due(&[b("a", "failed", 100, 1)], 3600, 120));
        assert!(backup_due(&[b("a", "failed", 100, 1)], 3600, 100 + BACKUP_RETRY_SECS));
    }

    #[test]
    fn retention_keeps_count_and_age_and_the_wal_they_need() {
        let day = 86_400;
        let entries = vec![
            b("old1", "complete", 0, 100),
            b("old2", "complete", day, 200),
            b("new1", "complete", 10 * day, 300),
            b("new2", "complete", 11 * day, 400),
            b("run", "running", 12 * day, 500),
        ];
        // Keep 2 by count, 7 days by age: only the two new ones survive.
        let r = retention(&entries, 2, 7, 12 * day);
        assert_eq!(r.delete, vec!["old2".to_string(), "old1".to_string()]);
        assert_eq!(r.wal_before, Some((1, 300)));
        // Age keeps what count would drop.
        let r = retention(&entries, 1, 30, 12 * day);
        assert!(r.delete.is_empty());
        assert_eq!(r.wal_before, Some((1, 100)));
        // Never zero backups, whatever the policy says.
        let r = retention(&entries, 0, 0, 100 * day);
        assert_eq!(r.delete.len(), 3);
        assert_eq!(r.wal_before, Some((1, 400)));
        // Nothing complete: nothing may be pruned.
        assert_eq!(retention(&[b("x", "running", 0, 1)], 1, 1, day).wal_before, None);
    }

    #[test]
    fn a_standby_is_seeded_from_the_newest_backup_when_the_archive_holds_its_wal() {
        let mib = 1024 * 1024;
        let entries = vec![
            b("old", "complete", 100, 10 * mib),
            b("new", "complete", 200, 100 * mib),
            b("running", "running", 300, 150 * mib),
        ];
        let facts = |archived: Option<u64>, failing: bool, data: Option<u64>| ArchiveFacts {
            archived_lsn: archived,
            failing,
            data_bytes: data,
        };
        let seed = |f: ArchiveFacts| seed_base(&entries, &f).map(|b| b.id.as_str());
        // The archive holds the newest backup's WAL: seed from it (not from the older one).
        assert_eq!(seed(facts(Some(200 * mib), false, Some(mib))), Some("new"));
        // An archiver that fails, or reports nothing, may leave a hole: copy the primary.
        assert_eq!(seed(facts(Some(200 * mib), true, Some(mib))), None);
        assert_eq!(seed(facts(None, false, Some(mib))), None);
        // The archive has not reached the backup's end (the WAL to make it consistent).
        assert_eq!(seed(facts(Some(100 * mib + 2), false, Some(mib))), None);
        // Too much WAL to replay for the data it makes: copying the primary is quicker.
        let far = 100 * mib + SEED_WAL_ALLOWANCE + 2 * 64 * mib + 1;
        assert_eq!(seed(facts(Some(far), false, Some(64 * mib))), None);
        assert_eq!(seed(facts(Some(far - 1), false, Some(64 * mib))), Some("new"));
        // No complete backup.
        assert_eq!(seed_base(&entries[2..], &facts(Some(200 * mib), false, None)), None);
    }
}
