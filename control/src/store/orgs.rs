//! Orgs, projects and API keys (sessions included).

use super::*;

impl Store {
    pub async fn org_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM orgs")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates an org with its `default` project and first API key, in one transaction.
    pub async fn create_org(&self, org_row: &OrgRow, project_id: &str, key: &ApiKeyRow) -> Result<()> {
        let mut tx = self.begin().await?;
        let res = sqlx::query("INSERT INTO orgs (id, name, operator, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&org_row.id)
            .bind(&org_row.name)
            .bind(i64::from(org_row.operator))
            .bind(org_row.created_at)
            .execute(&mut *tx)
            .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("an org named {:?} exists", org_row.name)))
            }
            r => r?,
        };
        sqlx::query("INSERT INTO projects (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(project_id)
            .bind(&org_row.id)
            .bind("default")
            .bind(org_row.created_at)
            .execute(&mut *tx)
            .await?;
        insert_key(&mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_org(&self, id: &str) -> Result<OrgRow> {
        let row = sqlx::query("SELECT id, name, operator, created_at FROM orgs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        org(&row)
    }

    /// An org by id or name.
    pub async fn find_org(&self, id_or_name: &str) -> Result<OrgRow> {
        let row = sqlx::query("SELECT id, name, operator, created_at FROM orgs WHERE id = $1 OR name = $1")
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        org(&row)
    }

    pub async fn list_operator_orgs(&self) -> Result<Vec<OrgRow>> {
        let rows =
            sqlx::query("SELECT id, name, operator, created_at FROM orgs WHERE operator = 1 ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(org).collect()
    }

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

    pub async fn create_api_key(&self, key: &ApiKeyRow) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_key(&mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn api_key(&self, id: &str) -> Result<ApiKeyRow> {
        let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        api_key(&row)
    }

    /// The org's API keys (sessions are not listed).
    pub async fn list_api_keys(&self, org_id: &str) -> Result<Vec<ApiKeyRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE org_id = $1 AND user_id IS NULL ORDER BY created_at, id"
        ))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key).collect()
    }

    pub async fn revoke_api_key(&self, org_id: &str, id: &str, at: i64) -> Result<()> {
        let res =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .bind(org_id)
                .execute(&self.pool)
                .await?;
        if res.rows_affected() == 0 {
            // Either unknown (404) or already revoked (idempotent success).
            let key = self.api_key(id).await?;
            if key.org_id != org_id {
                return Err(StoreError::NotFound);
            }
        }
        Ok(())
    }
}
