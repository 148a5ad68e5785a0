//! API keys and sessions (a session is a key bound to a user).

use super::*;

impl Store {
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
