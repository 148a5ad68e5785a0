//! Projects: groups of an org's clusters.

use super::*;

impl Store {
    pub async fn create_project(&self, p: &ProjectRow) -> Result<()> {
        let res = sqlx::query("INSERT INTO projects (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&p.id)
            .bind(&p.org_id)
            .bind(&p.name)
            .bind(p.created_at)
            .execute(&self.pool)
            .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("a project named {:?} exists", p.name)))
            }
            r => r.map(|_| ()).map_err(Into::into),
        }
    }

    pub async fn list_projects(&self, org_id: &str) -> Result<Vec<ProjectRow>> {
        let rows = sqlx::query("SELECT id, org_id, name, created_at FROM projects WHERE org_id = $1 ORDER BY name")
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(project).collect()
    }

    /// A project of the org by name (or by id).
    pub async fn project_by_name(&self, org_id: &str, name: &str) -> Result<ProjectRow> {
        let row = sqlx::query(
            "SELECT id, org_id, name, created_at FROM projects WHERE org_id = $1 AND (name = $2 OR id = $2)",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        project(&row)
    }

    pub async fn project(&self, org_id: &str, id: &str) -> Result<ProjectRow> {
        let row = sqlx::query("SELECT id, org_id, name, created_at FROM projects WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        project(&row)
    }

    /// Removes an empty project: one that holds no cluster (live or being deleted) and no
    /// backup of a deleted one, whose ledger would otherwise become unreachable.
    pub async fn delete_project(&self, p: &ProjectRow) -> Result<()> {
        let mut tx = self.begin().await?;
        let clusters: i64 = sqlx::query("SELECT COUNT(*) AS n FROM clusters WHERE project_id = $1")
            .bind(&p.id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if clusters > 0 {
            return Err(StoreError::Conflict(format!(
                "project {:?} still has {clusters} cluster(s); delete them first",
                p.name
            )));
        }
        let backups: i64 = sqlx::query("SELECT COUNT(*) AS n FROM backups WHERE project_id = $1")
            .bind(&p.id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if backups > 0 {
            return Err(StoreError::Conflict(format!(
                "project {:?} still holds {backups} backup(s) of deleted clusters; they go with their retention",
                p.name
            )));
        }
        sqlx::query("DELETE FROM projects WHERE id = $1 AND org_id = $2")
            .bind(&p.id)
            .bind(&p.org_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
