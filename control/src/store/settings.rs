//! Settings: values the control plane creates once and keeps (e.g. secrets).

use super::*;

impl Store {
    /// Returns the setting, creating it with `init()` if absent (first writer wins).
    pub async fn setting_or_init(&self, key: &str, init: impl FnOnce() -> String) -> Result<String> {
        let candidate = init();
        let res = sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(&candidate)
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(candidate),
            Err(e) if is_unique_violation(&e) => {
                let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("value")?)
            }
            Err(e) => Err(e.into()),
        }
    }
}
