//! Spot pools' record (preemptions and refused launches) and hosts' spot notices.

use super::{Result, Store};
use sqlx::Row;

/// Kinds of pool events.
pub const PREEMPTED: &str = "preempted";
pub const NO_CAPACITY: &str = "no_capacity";

impl Store {
    pub async fn add_pool_event(&self, pool: &str, kind: &str, at: i64) -> Result<()> {
        sqlx::query("INSERT INTO pool_events (pool, kind, at) VALUES ($1, $2, $3)")
            .bind(pool)
            .bind(kind)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every pool event since `since`, oldest first: `(pool, kind, at)`.
    pub async fn pool_events_since(&self, since: i64) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT pool, kind, at FROM pool_events WHERE at >= $1 ORDER BY at")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("pool")?, r.try_get("kind")?, r.try_get("at")?)))
            .collect()
    }

    /// Records a spot notice on a host (the first one counts: a later report does not move
    /// the deadline). Returns whether it is new.
    pub async fn set_host_notice(&self, host_id: &str, deadline: i64) -> Result<bool> {
        let res = sqlx::query("UPDATE hosts SET notice_deadline = $1 WHERE id = $2 AND notice_deadline IS NULL")
            .bind(deadline)
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Clusters with a live member on the host.
    pub async fn clusters_on_host(&self, host_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT cluster_id FROM instances WHERE host_id = $1 AND deleting = 0")
            .bind(host_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("cluster_id")?)).collect()
    }
}
