//! The audit log: one append-only chain of entries per org. The store numbers entries and
//! keeps their hashes; what a hash covers is the caller's (`crate::audit`).

use super::*;

/// What to list of an org's audit log.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Entries whose target starts with this.
    pub target: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Entries after this sequence number.
    pub after_seq: Option<i64>,
    pub limit: i64,
}

const AUDIT_COLS: &str = "org_id, seq, at_ms, actor, action, target, source, result, hash";

fn audit(r: &AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        org_id: r.try_get("org_id")?,
        seq: r.try_get("seq")?,
        at_ms: r.try_get("at_ms")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        source: r.try_get("source")?,
        result: r.try_get("result")?,
        hash: r.try_get("hash")?,
    })
}

impl Store {
    /// Appends `entry` to its org's chain: `seal(previous hash, entry with its seq)` gives
    /// its hash. Two writers racing for one seq: the loser seals again on the new end.
    pub async fn append_audit(&self, entry: &AuditRow, seal: impl Fn(&str, &AuditRow) -> String) -> Result<AuditRow> {
        for _ in 0..20 {
            let last = sqlx::query("SELECT seq, hash FROM audit_log WHERE org_id = $1 ORDER BY seq DESC LIMIT 1")
                .bind(&entry.org_id)
                .fetch_optional(&self.pool)
                .await?;
            let (seq, prev): (i64, String) = match last {
                Some(r) => (r.try_get::<i64, _>("seq")? + 1, r.try_get("hash")?),
                None => (1, String::new()),
            };
            let mut row = entry.clone();
            row.seq = seq;
            row.hash = seal(&prev, &row);
            let res = sqlx::query(&format!(
                "INSERT INTO audit_log ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&row.org_id)
            .bind(row.seq)
            .bind(row.at_ms)
            .bind(&row.actor)
            .bind(&row.action)
            .bind(&row.target)
            .bind(&row.source)
            .bind(&row.result)
            .bind(&row.hash)
            .execute(&self.pool)
            .await;
            match res {
                Err(e) if is_unique_violation(&e) => continue,
                r => {
                    r?;
                    return Ok(row);
                }
            }
        }
        Err(StoreError::Conflict("the audit log is too busy; retry".into()))
    }

    /// An org's entries in chain order, as `filter` says.
    pub async fn audit(&self, org_id: &str, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE org_id = $1 AND ($2 IS NULL OR actor = $2) \
             AND ($3 IS NULL OR substr(target, 1, length($3)) = $3) AND ($4 IS NULL OR at_ms >= $4) \
             AND ($5 IS NULL OR at_ms <= $5) AND seq > $6 ORDER BY seq LIMIT $7"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(&filter.actor)
            .bind(&filter.target)
            .bind(filter.since_ms)
            .bind(filter.until_ms)
            .bind(filter.after_seq.unwrap_or(0))
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit).collect()
    }
}
