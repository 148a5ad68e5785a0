//! Operations: long-running requests (create, delete, switchover, restore, move), the step
//! they are at, and their outcome.

use super::*;

impl Store {
    pub async fn get_operation(&self, org_id: &str, id: &str) -> Result<OperationRow> {
        let row = sqlx::query(
            "SELECT id, org_id, cluster_id, kind, status, error, created_at, updated_at, progress_json, outcome FROM operations WHERE id = $1 AND org_id = $2",
        )
        .bind(id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        operation(&row)
    }

    /// A page of the org's operations, newest first (only those on one project's clusters
    /// when `project_id` is given), after the operation `after` (its creation time and id).
    pub async fn list_operations(
        &self,
        org_id: &str,
        project_id: Option<&str>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<OperationRow>> {
        let (after_at, after_id) = after.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(
            "SELECT o.id, o.org_id, o.cluster_id, o.kind, o.status, o.error, o.created_at, o.updated_at, o.progress_json, o.outcome \
             FROM operations o LEFT JOIN clusters c ON c.id = o.cluster_id \
             WHERE o.org_id = $1 AND ($2 IS NULL OR c.project_id = $2) \
             AND (o.created_at < $3 OR (o.created_at = $3 AND o.id > $4)) \
             ORDER BY o.created_at DESC, o.id LIMIT $5",
        )
        .bind(org_id)
        .bind(project_id)
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(operation).collect()
    }

    /// Running operations of one kind, oldest first.
    pub async fn running_operations(&self, kind: &str) -> Result<Vec<OperationRow>> {
        let rows = sqlx::query(
            "SELECT id, org_id, cluster_id, kind, status, error, created_at, updated_at, progress_json, outcome \
             FROM operations WHERE kind = $1 AND status = 'running' ORDER BY created_at, id",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(operation).collect()
    }

    /// Records a new operation of an org (no cluster's) unless one of its kind runs for the
    /// org already: then nothing is recorded and that one's id is returned.
    pub async fn begin_org_operation(&self, op: &OperationRow) -> Result<Option<String>> {
        let mut tx = self.begin().await?;
        let running: Option<String> = sqlx::query(
            "SELECT id FROM operations WHERE org_id = $1 AND kind = $2 AND status = 'running' ORDER BY id LIMIT 1",
        )
        .bind(&op.org_id)
        .bind(&op.kind)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("id"))
        .transpose()?;
        if running.is_some() {
            return Ok(running);
        }
        insert_operation(&mut tx, op).await?;
        tx.commit().await?;
        Ok(None)
    }

    /// What a running operation did, recorded before it is completed.
    pub async fn set_operation_outcome(&self, id: &str, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE operations SET outcome = $1 WHERE id = $2 AND status = 'running'")
            .bind(outcome)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn open_operations_of(&self, cluster_id: &str, kind: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM operations WHERE cluster_id = $1 AND kind = $2 AND status = 'running'")
            .bind(cluster_id)
            .bind(kind)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// The step a running operation is at (JSON of `planner::moves::Progress`).
    pub async fn set_operation_progress(&self, id: &str, progress_json: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE operations SET progress_json = $1, updated_at = $2 WHERE id = $3 AND status = 'running'")
            .bind(progress_json)
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn complete_operation(&self, id: &str, error: Option<&str>, at: i64) -> Result<()> {
        if error.is_none() {
            // A restored cluster that runs is on its own: its primary never restores again.
            sqlx::query(
                "UPDATE clusters SET restore_json = NULL WHERE id = \
                 (SELECT cluster_id FROM operations WHERE id = $1 AND kind IN ('create_cluster', 'restore_primary'))",
            )
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query(
            "UPDATE operations SET status = $1, error = $2, updated_at = $3 WHERE id = $4 AND status = 'running'",
        )
        .bind(if error.is_some() { "failed" } else { "succeeded" })
        .bind(error)
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
