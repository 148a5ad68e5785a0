//! Evacuations of a cloud: the clusters each one moves off it, their state and their move
//! operations.

use super::clusters::{move_in, MoveTo};
use super::*;

/// One evacuation as stored.
#[derive(Debug, Clone)]
pub struct EvacuationRow {
    pub id: String,
    pub cloud: String,
    pub to_cloud: Option<String>,
    pub concurrency: i64,
    /// `running`, `paused` or `finished`.
    pub status: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One cluster of an evacuation.
#[derive(Debug, Clone)]
pub struct EvacuationClusterRow {
    pub cluster_id: String,
    /// Its name and org, while the cluster exists.
    pub name: Option<String>,
    pub org_id: Option<String>,
    pub state: String,
    pub why: Option<String>,
    pub operation_id: Option<String>,
    /// The move operation's status and error, while its record exists.
    pub operation_status: Option<String>,
    pub operation_error: Option<String>,
}

fn evacuation(r: &AnyRow) -> Result<EvacuationRow> {
    Ok(EvacuationRow {
        id: r.try_get("id")?,
        cloud: r.try_get("cloud")?,
        to_cloud: r.try_get("to_cloud")?,
        concurrency: r.try_get("concurrency")?,
        status: r.try_get("status")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Begins an evacuation of `e.cloud`: every live cluster there (its home, or a member
    /// of a spread cluster), oldest first, waits to move. Refused (`Conflict`) while another evacuation of the cloud is not finished.
    pub async fn create_evacuation(&self, e: &EvacuationRow) -> Result<()> {
        let mut tx = self.begin().await?;
        let busy = sqlx::query("SELECT id FROM evacuations WHERE cloud = $1 AND status <> 'finished'")
            .bind(&e.cloud)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = busy {
            let id: String = r.try_get("id")?;
            return Err(StoreError::Conflict(format!(
                "evacuation {id} of {} is not finished yet",
                e.cloud
            )));
        }
        sqlx::query(
            "INSERT INTO evacuations (id, cloud, to_cloud, concurrency, status, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&e.id)
        .bind(&e.cloud)
        .bind(&e.to_cloud)
        .bind(e.concurrency)
        .bind(&e.status)
        .bind(&e.created_by)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&mut *tx)
        .await?;
        let clusters = sqlx::query(
            "SELECT id FROM clusters c WHERE deleted_at IS NULL AND (cloud = $1 OR EXISTS (SELECT 1 FROM instances i \
             JOIN hosts h ON h.id = i.host_id WHERE i.cluster_id = c.id AND i.deleting = 0 AND h.cloud = $1)) \
             ORDER BY created_at, id",
        )
        .bind(&e.cloud)
        .fetch_all(&mut *tx)
        .await?;
        for (n, r) in clusters.iter().enumerate() {
            sqlx::query(
                "INSERT INTO evacuation_clusters (evacuation_id, cluster_id, position, state) VALUES ($1, $2, $3, 'waiting')",
            )
            .bind(&e.id)
            .bind(r.try_get::<String, _>("id")?)
            .bind(n as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_evacuation(&self, id: &str) -> Result<EvacuationRow> {
        let r = sqlx::query("SELECT * FROM evacuations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        evacuation(&r)
    }

    /// Evacuations that are not finished, oldest first.
    pub async fn open_evacuations(&self) -> Result<Vec<EvacuationRow>> {
        let rows = sqlx::query("SELECT * FROM evacuations WHERE status <> 'finished' ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(evacuation).collect()
    }

    /// The evacuation's clusters in order, with what is known of each now.
    pub async fn evacuation_clusters(&self, id: &str) -> Result<Vec<EvacuationClusterRow>> {
        let rows = sqlx::query(
            "SELECT e.cluster_id, c.name, c.org_id, e.state, e.why, e.operation_id, o.status AS op_status, \
             o.error AS op_error FROM evacuation_clusters e LEFT JOIN clusters c ON c.id = e.cluster_id \
             LEFT JOIN operations o ON o.id = e.operation_id WHERE e.evacuation_id = $1 ORDER BY e.position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EvacuationClusterRow {
                    cluster_id: r.try_get("cluster_id")?,
                    name: r.try_get("name")?,
                    org_id: r.try_get("org_id")?,
                    state: r.try_get("state")?,
                    why: r.try_get("why")?,
                    operation_id: r.try_get("operation_id")?,
                    operation_status: r.try_get("op_status")?,
                    operation_error: r.try_get("op_error")?,
                })
            })
            .collect()
    }

    /// Pauses (`running` → `paused`) or resumes an unfinished evacuation; `NotFound` when it
    /// is finished or unknown.
    pub async fn set_evacuation_paused(&self, id: &str, paused: bool, at: i64) -> Result<()> {
        let status = if paused { "paused" } else { "running" };
        let done =
            sqlx::query("UPDATE evacuations SET status = $1, updated_at = $2 WHERE id = $3 AND status <> 'finished'")
                .bind(status)
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Starts one cluster's move for an evacuation: the move (as `move_cluster` records it)
    /// and the cluster's state `moving` with its operation, in one transaction — only while
    /// the cluster still waits and no other move of it runs. Returns whether it started.
    pub async fn start_evacuation_move(
        &self,
        evacuation_id: &str,
        c: &ClusterRow,
        to: &MoveTo<'_>,
        op: &OperationRow,
        why: &str,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let waiting = sqlx::query(
            "SELECT 1 FROM evacuation_clusters WHERE evacuation_id = $1 AND cluster_id = $2 AND state = 'waiting'",
        )
        .bind(evacuation_id)
        .bind(&c.id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        let moving = sqlx::query(
            "SELECT 1 FROM operations WHERE cluster_id = $1 AND kind = 'move_cluster' AND status = 'running'",
        )
        .bind(&c.id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !waiting || moving {
            return Ok(false);
        }
        move_in(&mut tx, c, to, op, why).await?;
        sqlx::query(
            "UPDATE evacuation_clusters SET state = 'moving', operation_id = $1 WHERE evacuation_id = $2 AND cluster_id = $3",
        )
        .bind(&op.id)
        .bind(evacuation_id)
        .bind(&c.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE evacuations SET updated_at = $1 WHERE id = $2")
            .bind(op.created_at)
            .bind(evacuation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a cluster's new state in an evacuation (and why).
    pub async fn set_evacuation_cluster(
        &self,
        evacuation_id: &str,
        cluster_id: &str,
        state: &str,
        why: Option<&str>,
        at: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE evacuation_clusters SET state = $1, why = $2 WHERE evacuation_id = $3 AND cluster_id = $4")
            .bind(state)
            .bind(why)
            .bind(evacuation_id)
            .bind(cluster_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE evacuations SET updated_at = $1 WHERE id = $2")
            .bind(at)
            .bind(evacuation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn finish_evacuation(&self, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE evacuations SET status = 'finished', updated_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
