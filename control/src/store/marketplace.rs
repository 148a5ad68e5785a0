//! The marketplace outbox: per org linked to a cloud marketplace, the cursor up to which
//! its hours are staged, and every record staged for its marketplace with what the
//! marketplace answered (`highrise_billing::export` holds the rules).

use super::*;
use highrise_billing::export::State;
use std::collections::BTreeMap;

/// One record in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub org_id: String,
    /// The marketplace's dimension, e.g. `small_spot_seconds`.
    pub dimension: String,
    pub hour: i64,
    pub marketplace: String,
    pub account: String,
    pub licence: Option<String>,
    pub window_start: i64,
    pub window_end: i64,
    pub quantity: i64,
    pub operation_id: String,
    pub state: String,
    pub attempts: i64,
    /// Sent in a call whose answer was lost: the marketplace may hold it.
    pub in_doubt: bool,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub receipt: Option<String>,
    pub staged_at: i64,
    pub settled_at: Option<i64>,
}

/// An org linked to a marketplace, with its staging cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedOrg {
    pub org_id: String,
    pub link: MarketplaceRow,
    /// `(linked_at, staged_through)` of the link the cursor was kept for.
    pub cursor: Option<(i64, i64)>,
}

/// What a marketplace answered for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    pub state: State,
    pub receipt: Option<String>,
    pub error: Option<String>,
    /// The call may have been taken without its answer reaching us.
    pub in_doubt: bool,
    /// When a record left pending is tried again.
    pub next_attempt_at: i64,
}

const COLUMNS: &str = "org_id, dimension, hour, marketplace, account, licence, window_start, window_end, quantity, \
     operation_id, state, attempts, in_doubt, next_attempt_at, last_error, receipt, staged_at, settled_at";

fn outbox(r: &AnyRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        org_id: r.try_get("org_id")?,
        dimension: r.try_get("dimension")?,
        hour: r.try_get("hour")?,
        marketplace: r.try_get("marketplace")?,
        account: r.try_get("account")?,
        licence: r.try_get("licence")?,
        window_start: r.try_get("window_start")?,
        window_end: r.try_get("window_end")?,
        quantity: r.try_get("quantity")?,
        operation_id: r.try_get("operation_id")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        in_doubt: r.try_get::<i64, _>("in_doubt")? != 0,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        receipt: r.try_get("receipt")?,
        staged_at: r.try_get("staged_at")?,
        settled_at: r.try_get("settled_at")?,
    })
}

impl Store {
    /// Every org linked to a marketplace, with its cursor.
    pub async fn marketplace_orgs(&self) -> Result<Vec<LinkedOrg>> {
        let rows = sqlx::query(
            "SELECT l.org_id, l.marketplace, l.account, l.licence, l.linked_at, \
             c.linked_at AS cursor_linked_at, c.staged_through \
             FROM marketplace_links l LEFT JOIN marketplace_cursors c ON c.org_id = l.org_id ORDER BY l.org_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let cursor_linked: Option<i64> = r.try_get("cursor_linked_at")?;
                let through: Option<i64> = r.try_get("staged_through")?;
                Ok(LinkedOrg {
                    org_id: r.try_get("org_id")?,
                    link: MarketplaceRow {
                        marketplace: r.try_get("marketplace")?,
                        account: r.try_get("account")?,
                        licence: r.try_get("licence")?,
                        linked_at: r.try_get("linked_at")?,
                    },
                    cursor: cursor_linked.zip(through),
                })
            })
            .collect()
    }

    /// The org's usage per usage dimension in hours `[from, to)`.
    pub async fn usage_totals(&self, org_id: &str, from: i64, to: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT dimension, CAST(SUM(quantity) AS BIGINT) AS quantity FROM usage_hourly \
             WHERE org_id = $1 AND hour >= $2 AND hour < $3 GROUP BY dimension ORDER BY dimension",
        )
        .bind(org_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("dimension")?, r.try_get("quantity")?)))
            .collect()
    }

    /// What the org's records from hour `from` on carry, per marketplace dimension
    /// (records whose state counts: pending, accepted, conflict).
    pub async fn reported_units(&self, org_id: &str, from: i64) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT dimension, CAST(SUM(quantity) AS BIGINT) AS quantity FROM marketplace_records \
             WHERE org_id = $1 AND hour >= $2 AND state IN ($3, $4, $5) GROUP BY dimension",
        )
        .bind(org_id)
        .bind(from)
        .bind(State::Pending.as_str())
        .bind(State::Accepted.as_str())
        .bind(State::Conflict.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let q: i64 = r.try_get("quantity")?;
                Ok((r.try_get("dimension")?, u64::try_from(q).unwrap_or(0)))
            })
            .collect()
    }

    /// Stages an org's records and moves its cursor to `through`, in one transaction —
    /// only if the cursor is still `expected` (`None`: none yet). `false` when it moved
    /// meanwhile (another control plane staged): nothing is written.
    pub async fn stage_marketplace_records(
        &self,
        org_id: &str,
        linked_at: i64,
        expected: Option<i64>,
        through: i64,
        rows: &[OutboxRow],
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = match expected {
            None => sqlx::query(
                "INSERT INTO marketplace_cursors (org_id, linked_at, staged_through) VALUES ($1, $2, $3) \
                 ON CONFLICT (org_id) DO NOTHING",
            )
            .bind(org_id)
            .bind(linked_at)
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(old) => sqlx::query(
                "UPDATE marketplace_cursors SET linked_at = $2, staged_through = $3 \
                 WHERE org_id = $1 AND staged_through = $4",
            )
            .bind(org_id)
            .bind(linked_at)
            .bind(through)
            .bind(old)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if moved != 1 {
            return Ok(false);
        }
        for r in rows {
            sqlx::query(&format!(
                "INSERT INTO marketplace_records ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                 ON CONFLICT (org_id, dimension, hour) DO NOTHING"
            ))
            .bind(&r.org_id)
            .bind(&r.dimension)
            .bind(r.hour)
            .bind(&r.marketplace)
            .bind(&r.account)
            .bind(&r.licence)
            .bind(r.window_start)
            .bind(r.window_end)
            .bind(r.quantity)
            .bind(&r.operation_id)
            .bind(&r.state)
            .bind(r.attempts)
            .bind(i64::from(r.in_doubt))
            .bind(r.next_attempt_at)
            .bind(&r.last_error)
            .bind(&r.receipt)
            .bind(r.staged_at)
            .bind(r.settled_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A marketplace's pending records, oldest hour first, an org's hour together.
    pub async fn pending_marketplace_records(&self, marketplace: &str, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM marketplace_records WHERE marketplace = $1 AND state = $2 \
             ORDER BY hour, org_id, dimension LIMIT $3"
        ))
        .bind(marketplace)
        .bind(State::Pending.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox).collect()
    }

    /// Writes what the marketplace answered for a pending record (a record already
    /// settled stays as it is). Returns whether it was still pending.
    pub async fn settle_marketplace_record(&self, r: &OutboxRow, s: &Settle, at: i64) -> Result<bool> {
        let pending = s.state == State::Pending;
        let done = sqlx::query(
            "UPDATE marketplace_records SET state = $4, receipt = COALESCE($5, receipt), last_error = $6, \
             attempts = attempts + 1, next_attempt_at = $7, settled_at = $8, \
             in_doubt = CASE WHEN $10 = 1 THEN 1 ELSE in_doubt END \
             WHERE org_id = $1 AND dimension = $2 AND hour = $3 AND state = $9",
        )
        .bind(&r.org_id)
        .bind(&r.dimension)
        .bind(r.hour)
        .bind(s.state.as_str())
        .bind(&s.receipt)
        .bind(&s.error)
        .bind(s.next_attempt_at)
        .bind(if pending { None } else { Some(at) })
        .bind(State::Pending.as_str())
        .bind(i64::from(s.in_doubt))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The org's records, oldest hour first.
    pub async fn marketplace_records(&self, org_id: &str) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM marketplace_records WHERE org_id = $1 ORDER BY hour, dimension"
        ))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox).collect()
    }
}
