//! Orgs' data keys by generation (wrapped under the master key), and the end of an org:
//! its keys destroyed with it.

use super::*;

#[derive(Debug, Clone)]
pub struct DataKeyRow {
    pub generation: i64,
    /// Sealed under the master key, bound to the org.
    pub wrapped: String,
    pub created_at: i64,
}

fn data_key(r: &AnyRow) -> Result<DataKeyRow> {
    Ok(DataKeyRow {
        generation: r.try_get("generation")?,
        wrapped: r.try_get("wrapped")?,
        created_at: r.try_get("created_at")?,
    })
}

/// What one primary of an org's clusters seals with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealing {
    pub cluster_id: String,
    pub host_id: String,
    /// Observed running.
    pub running: bool,
    /// The generation its archiver reports.
    pub generation: Option<i64>,
}

impl Store {
    /// The primaries of the org's live clusters and the generation each seals with.
    pub async fn org_primaries_sealing(&self, org_id: &str) -> Result<Vec<Sealing>> {
        let rows = sqlx::query(
            "SELECT i.cluster_id, i.host_id, i.observed, i.sealing_generation FROM instances i \
             JOIN clusters c ON c.id = i.cluster_id JOIN projects p ON p.id = c.project_id \
             WHERE p.org_id = $1 AND c.deleted_at IS NULL AND i.deleting = 0 AND i.role = 'primary' \
             ORDER BY i.cluster_id, i.id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Sealing {
                    cluster_id: r.try_get("cluster_id")?,
                    host_id: r.try_get("host_id")?,
                    running: r.try_get::<String, _>("observed")? == "running",
                    generation: r.try_get("sealing_generation")?,
                })
            })
            .collect()
    }

    /// A base backup of one of the org's clusters that is still being taken.
    pub async fn org_backup_running(&self, org_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT b.id FROM backups b JOIN clusters c ON c.id = b.cluster_id JOIN projects p ON p.id = c.project_id \
             WHERE p.org_id = $1 AND b.status = 'pending' ORDER BY b.id LIMIT 1",
        )
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("id")).transpose().map_err(Into::into)
    }

    /// Every cluster the org has, and those deleted whose record (and objects) remain.
    pub async fn org_cluster_ids(&self, org_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT c.id FROM clusters c JOIN projects p ON p.id = c.project_id WHERE p.org_id = $1 ORDER BY c.id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("id").map_err(Into::into)).collect()
    }

    /// Destroys the org's generations older than `generation` (never the newest);
    /// returns how many.
    pub async fn delete_org_data_keys_before(&self, org_id: &str, generation: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM org_data_keys WHERE org_id = $1 AND generation < $2 \
             AND generation < (SELECT MAX(generation) FROM org_data_keys WHERE org_id = $1)",
        )
        .bind(org_id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The org's data keys, newest first.
    pub async fn org_data_keys(&self, org_id: &str) -> Result<Vec<DataKeyRow>> {
        let rows = sqlx::query(
            "SELECT generation, wrapped, created_at FROM org_data_keys WHERE org_id = $1 ORDER BY generation DESC",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(data_key).collect()
    }

    /// The org's data keys, newest first; an org without one gets generation 1 from
    /// `init()` (first writer wins). A deleted org gets none: its keys are destroyed.
    pub async fn org_data_keys_or_init(&self, org_id: &str, init: impl FnOnce() -> String) -> Result<Vec<DataKeyRow>> {
        let keys = self.org_data_keys(org_id).await?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        let res = sqlx::query(
            "INSERT INTO org_data_keys (org_id, generation, wrapped, created_at) \
             SELECT id, 1, $2, $3 FROM orgs WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(org_id)
        .bind(init())
        .bind(now())
        .execute(&self.pool)
        .await;
        match res {
            Err(e) if !is_unique_violation(&e) => return Err(e.into()),
            _ => {}
        }
        let keys = self.org_data_keys(org_id).await?;
        if keys.is_empty() {
            return Err(StoreError::NotFound);
        }
        Ok(keys)
    }

    /// Adds the org's data key generation `generation`; a conflict when another rotation
    /// took that number first.
    pub async fn add_org_data_key(&self, org_id: &str, generation: i64, wrapped: &str) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO org_data_keys (org_id, generation, wrapped, created_at) \
             SELECT id, $2, $3, $4 FROM orgs WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(org_id)
        .bind(generation)
        .bind(wrapped)
        .bind(now())
        .execute(&self.pool)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
                "the data key was rotated meanwhile; try again".into(),
            )),
            Err(e) => Err(e.into()),
            Ok(r) if r.rows_affected() == 0 => Err(StoreError::NotFound),
            Ok(_) => Ok(()),
        }
    }

    /// Ends an org: refused while it has clusters; otherwise its data keys are destroyed
    /// (every object it left in object storage stays sealed for good), its keys and
    /// sessions revoked and its name freed, in one transaction.
    pub async fn delete_org(&self, org_id: &str, at: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let live: i64 = sqlx::query("SELECT COUNT(*) AS n FROM clusters WHERE org_id = $1 AND deleted_at IS NULL")
            .bind(org_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if live > 0 {
            return Err(StoreError::Conflict(format!(
                "the org still has {live} cluster(s); delete them first"
            )));
        }
        sqlx::query("DELETE FROM org_data_keys WHERE org_id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE org_id = $1 AND revoked_at IS NULL")
            .bind(org_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        let res = sqlx::query(
            "UPDATE orgs SET deleted_at = $2, name = 'deleted-' || id WHERE id = $1 AND deleted_at IS NULL AND operator = 0",
        )
        .bind(org_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}
