//! The master key's record (its fingerprint and the audit chain key sealed under it), and
//! re-sealing everything the master key seals in one transaction (a rotation).

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeyRow {
    pub fingerprint: String,
    pub audit_key_sealed: String,
}

/// Everything sealed under the master key, as stored: what a rotation re-seals.
#[derive(Debug, Clone, Default)]
pub struct Sealed {
    /// `(org_id, generation, wrapped)`.
    pub data_keys: Vec<(String, i64, String)>,
    /// `(cluster_id, key_sealed)`.
    pub cluster_keys: Vec<(String, String)>,
    pub audit_key: String,
}

impl Store {
    pub async fn master_key_row(&self) -> Result<Option<MasterKeyRow>> {
        let row = sqlx::query("SELECT fingerprint, audit_key_sealed FROM master_key WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(MasterKeyRow {
                fingerprint: r.try_get("fingerprint")?,
                audit_key_sealed: r.try_get("audit_key_sealed")?,
            })
        })
        .transpose()
    }

    /// Records the master key in use the first time (a second caller keeps the first's).
    pub async fn init_master_key_row(&self, row: &MasterKeyRow) -> Result<MasterKeyRow> {
        sqlx::query(
            "INSERT INTO master_key (id, fingerprint, audit_key_sealed, sealed_at) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&row.fingerprint)
        .bind(&row.audit_key_sealed)
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.master_key_row().await?.ok_or(StoreError::NotFound)
    }

    /// One org data key wrapped under the master key (to check a key against the store
    /// before recording it), if there is any.
    pub async fn any_data_key(&self) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT org_id, wrapped FROM org_data_keys ORDER BY org_id, generation LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("org_id")?, r.try_get("wrapped")?)))
            .transpose()
    }

    /// Everything the master key seals.
    pub async fn sealed_under_master_key(&self) -> Result<Sealed> {
        let data_keys =
            sqlx::query("SELECT org_id, generation, wrapped FROM org_data_keys ORDER BY org_id, generation")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("org_id")?, r.try_get("generation")?, r.try_get("wrapped")?)))
                .collect::<Result<Vec<_>>>()?;
        let cluster_keys = sqlx::query("SELECT cluster_id, key_sealed FROM cluster_certs ORDER BY cluster_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("cluster_id")?, r.try_get("key_sealed")?)))
            .collect::<Result<Vec<_>>>()?;
        let audit_key = self
            .master_key_row()
            .await?
            .ok_or(StoreError::NotFound)?
            .audit_key_sealed;
        Ok(Sealed {
            data_keys,
            cluster_keys,
            audit_key,
        })
    }

    /// Replaces what was sealed under the key `from` (its fingerprint) with `new`, sealed
    /// under the key `to`, in one transaction: each value only if it is still what was
    /// read (`old`), else nothing changes ([`StoreError::Conflict`]).
    pub async fn reseal_master_key(&self, from: &str, to: &str, old: &Sealed, new: &Sealed) -> Result<()> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE master_key SET fingerprint = $1, audit_key_sealed = $2, sealed_at = $3 \
             WHERE id = 1 AND fingerprint = $4 AND audit_key_sealed = $5",
        )
        .bind(to)
        .bind(&new.audit_key)
        .bind(now())
        .bind(from)
        .bind(&old.audit_key)
        .execute(&mut *tx)
        .await?;
        let mut missed = changed.rows_affected() != 1;
        for ((org, generation, was), (_, _, now_wrapped)) in old.data_keys.iter().zip(&new.data_keys) {
            let r = sqlx::query(
                "UPDATE org_data_keys SET wrapped = $1 WHERE org_id = $2 AND generation = $3 AND wrapped = $4",
            )
            .bind(now_wrapped)
            .bind(org)
            .bind(generation)
            .bind(was)
            .execute(&mut *tx)
            .await?;
            missed |= r.rows_affected() != 1;
        }
        for ((cluster, was), (_, now_sealed)) in old.cluster_keys.iter().zip(&new.cluster_keys) {
            let r = sqlx::query("UPDATE cluster_certs SET key_sealed = $1 WHERE cluster_id = $2 AND key_sealed = $3")
                .bind(now_sealed)
                .bind(cluster)
                .bind(was)
                .execute(&mut *tx)
                .await?;
            missed |= r.rows_affected() != 1;
        }
        if missed || old.data_keys.len() != new.data_keys.len() || old.cluster_keys.len() != new.cluster_keys.len() {
            return Err(StoreError::Conflict(
                "what the master key seals changed during its rotation".into(),
            ));
        }
        tx.commit().await?;
        Ok(())
    }
}
