//! Orgs: tenants (the operator's among them), created with their `default` project and
//! first key.

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
        let res = sqlx::query("INSERT INTO orgs (id, name, operator, created_at, cell) VALUES ($1, $2, $3, $4, $5)")
            .bind(&org_row.id)
            .bind(&org_row.name)
            .bind(i64::from(org_row.operator))
            .bind(org_row.created_at)
            .bind(&org_row.cell)
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
        let row =
            sqlx::query("SELECT id, name, operator, created_at, cell FROM orgs WHERE id = $1 AND deleted_at IS NULL")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound)?;
        org(&row)
    }

    /// An org by id or name.
    pub async fn find_org(&self, id_or_name: &str) -> Result<OrgRow> {
        let row = sqlx::query(
            "SELECT id, name, operator, created_at, cell FROM orgs WHERE (id = $1 OR name = $1) AND deleted_at IS NULL",
        )
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        org(&row)
    }

    /// How many live orgs each cell holds.
    pub async fn orgs_per_cell(&self) -> Result<std::collections::BTreeMap<String, usize>> {
        let rows = sqlx::query("SELECT cell, COUNT(*) AS n FROM orgs WHERE deleted_at IS NULL GROUP BY cell")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("cell")?,
                    usize::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                ))
            })
            .collect()
    }

    pub async fn list_operator_orgs(&self) -> Result<Vec<OrgRow>> {
        let rows = sqlx::query(
            "SELECT id, name, operator, created_at, cell FROM orgs WHERE operator = 1 ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(org).collect()
    }
}
