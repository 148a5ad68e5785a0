//! Cluster events: what happened to a cluster (promotions, replaced members, fallbacks),
//! oldest first.

use super::*;

impl Store {
    pub async fn add_event(&self, cluster_id: &str, at: i64, kind: &str, message: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_event(&mut tx, cluster_id, at, kind, message).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the storage level told to the tenant and the event that tells it, together.
    pub async fn announce_storage_level(
        &self,
        cluster_id: &str,
        level: &str,
        at: i64,
        kind: &str,
        message: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE clusters SET storage_level = $1 WHERE id = $2")
            .bind(level)
            .bind(cluster_id)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, cluster_id, at, kind, message).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Storage autoscaling: the cluster's members need disks of `disk_bytes` from now on;
    /// the event that says so goes with it.
    pub async fn grow_disk(&self, cluster_id: &str, disk_bytes: u64, at: i64, message: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE clusters SET disk_bytes = $1 WHERE id = $2")
            .bind(i64::try_from(disk_bytes).unwrap_or(i64::MAX))
            .bind(cluster_id)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, cluster_id, at, "storage_autoscale", message).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn events(&self, cluster_id: &str) -> Result<Vec<EventRow>> {
        let rows =
            sqlx::query("SELECT id, cluster_id, at, kind, message FROM events WHERE cluster_id = $1 ORDER BY at, id")
                .bind(cluster_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event).collect()
    }

    /// The most recent event of a cluster (the executor does not repeat one).
    pub async fn last_event(&self, cluster_id: &str) -> Result<Option<EventRow>> {
        let row = sqlx::query(
            "SELECT id, cluster_id, at, kind, message FROM events WHERE cluster_id = $1 ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(cluster_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event).transpose()
    }
}
