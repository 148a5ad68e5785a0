//! Base backups (the ledger of what object storage holds), and the
//! removal of deleted clusters once their objects are gone.

use super::*;

impl Store {
    /// Records a requested backup, unless the cluster has one pending already. A manual
    /// one must fit the org's storage quota (scheduled ones keep the cluster restorable
    /// whatever the quota, and retention bounds them).
    pub async fn insert_backup(&self, b: &BackupRow) -> Result<()> {
        let mut tx = self.begin().await?;
        if b.kind == "manual" {
            quotas::within_quota(&mut tx, &b.org_id, crate::quota::Ask::Backup).await?;
        }
        let open = sqlx::query("SELECT id FROM backups WHERE cluster_id = $1 AND status = 'pending'")
            .bind(&b.cluster_id)
            .fetch_optional(&mut *tx)
            .await?;
        if open.is_some() {
            return Err(StoreError::Conflict("a backup of this cluster is in progress".into()));
        }
        sqlx::query(
            "INSERT INTO backups (id, cluster_id, org_id, project_id, cluster_name, db_name, kind, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&b.id)
        .bind(&b.cluster_id)
        .bind(&b.org_id)
        .bind(&b.project_id)
        .bind(&b.cluster_name)
        .bind(&b.db_name)
        .bind(&b.kind)
        .bind(&b.status)
        .bind(b.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A backup of the org by id.
    pub async fn backup(&self, org_id: &str, id: &str) -> Result<BackupRow> {
        let row = sqlx::query("SELECT * FROM backups WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        backup(&row)
    }

    pub async fn backups_of(&self, cluster_id: &str) -> Result<Vec<BackupRow>> {
        let rows = sqlx::query("SELECT * FROM backups WHERE cluster_id = $1 ORDER BY created_at, id")
            .bind(cluster_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(backup).collect()
    }

    /// The backups of the most recent cluster (live or deleted) called `name` in a
    /// project: what a restore or a listing by name means.
    pub async fn backups_by_name(&self, org_id: &str, project_id: &str, name: &str) -> Result<Vec<BackupRow>> {
        let latest = sqlx::query(
            "SELECT cluster_id FROM backups WHERE org_id = $1 AND project_id = $2 AND cluster_name = $3 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(org_id)
        .bind(project_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        match latest {
            Some(r) => self.backups_of(&r.try_get::<String, _>("cluster_id")?).await,
            None => Ok(Vec::new()),
        }
    }

    /// Records what an agent reports of a backup it was asked for; returns whether the
    /// ledger changed.
    pub async fn record_backup(&self, host_id: &str, r: &highrise_api::BackupReport, at: i64) -> Result<bool> {
        let as_i64 = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        // Only the host that runs the cluster's primary may report on its backups.
        let res = sqlx::query(
            "UPDATE backups SET status = $1, finished_at = $2, timeline = $3, start_lsn = $4, end_lsn = $5, \
             size_bytes = $6, stored_bytes = $7, error = $8, \
             since = CASE WHEN $11 = 1 THEN (SELECT c.created_at FROM clusters c WHERE c.id = backups.cluster_id) END \
             WHERE id = $9 AND status = 'pending' AND cluster_id IN \
             (SELECT cluster_id FROM instances WHERE host_id = $10 AND role = 'primary')",
        )
        .bind(if r.status == "complete" { "complete" } else { "failed" })
        .bind(at)
        .bind(r.timeline.map(i64::from))
        .bind(as_i64(r.start_lsn))
        .bind(as_i64(r.end_lsn))
        .bind(as_i64(r.size_bytes))
        .bind(as_i64(r.stored_bytes))
        .bind(&r.error)
        .bind(&r.id)
        .bind(host_id)
        .bind(i64::from(r.status == "complete" && r.from_creation))
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn delete_backup_row(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM backups WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every live cluster (for the backup scheduler).
    pub async fn live_clusters(&self) -> Result<Vec<ClusterRow>> {
        let sql = format!(
            "SELECT {CLUSTER_COLS} FROM clusters c JOIN projects p ON p.id = c.project_id \
             WHERE c.deleted_at IS NULL ORDER BY c.created_at"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(cluster).collect()
    }

    pub async fn remove_cluster(&self, id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let removed = sqlx::query("DELETE FROM clusters WHERE id = $1 AND deleted_at IS NOT NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if removed.rows_affected() > 0 {
            sqlx::query("DELETE FROM cluster_certs WHERE cluster_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
