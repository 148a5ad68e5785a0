//! Base backup decisions: when the next one is due, and which ones retention lets go.
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
        }
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
}
