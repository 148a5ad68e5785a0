//! Per-org quotas (the operator's settings) and the usage they are checked against; the
//! check itself runs inside the transaction of what it guards.

use super::*;
use crate::quota::{self, Ask, Quotas, Usage};

impl Store {
    /// The org's quotas (the defaults unless the operator set some).
    pub async fn quotas(&self, org_id: &str) -> Result<Quotas> {
        let mut tx = self.begin().await?;
        let q = quotas_in(&mut tx, org_id).await?;
        tx.commit().await?;
        Ok(q)
    }

    pub async fn set_quotas(&self, org_id: &str, q: &Quotas) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM quotas WHERE org_id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO quotas (org_id, max_clusters, max_members_per_cluster, max_storage_bytes, \
             max_concurrent_operations) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(org_id)
        .bind(q.clusters)
        .bind(q.members_per_cluster)
        .bind(q.storage_bytes)
        .bind(q.concurrent_operations)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What the org uses now.
    pub async fn usage(&self, org_id: &str) -> Result<Usage> {
        let mut tx = self.begin().await?;
        let u = usage_in(&mut tx, org_id).await?;
        tx.commit().await?;
        Ok(u)
    }
}

async fn quotas_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, org_id: &str) -> Result<Quotas> {
    let row = sqlx::query(
        "SELECT max_clusters, max_members_per_cluster, max_storage_bytes, max_concurrent_operations \
         FROM quotas WHERE org_id = $1",
    )
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match row {
        Some(r) => Quotas {
            clusters: r.try_get("max_clusters")?,
            members_per_cluster: r.try_get("max_members_per_cluster")?,
            storage_bytes: r.try_get("max_storage_bytes")?,
            concurrent_operations: r.try_get("max_concurrent_operations")?,
        },
        None => Quotas::default(),
    })
}

async fn usage_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, org_id: &str) -> Result<Usage> {
    let count = |sql: &'static str| sqlx::query(sql).bind(org_id);
    let clusters: i64 = count("SELECT COUNT(*) AS n FROM clusters WHERE org_id = $1 AND deleted_at IS NULL")
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
    let running_operations: i64 =
        count("SELECT COUNT(*) AS n FROM operations WHERE org_id = $1 AND status = 'running'")
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    // SUM is NULL over no rows (and an integer or numeric depending on the database).
    let storage_bytes: i64 = count(
        "SELECT CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT) AS n FROM backups \
         WHERE org_id = $1 AND status = 'complete'",
    )
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    Ok(Usage {
        clusters,
        running_operations,
        storage_bytes,
    })
}

/// Refuses `ask` when it would pass one of the org's quotas. It first takes the org's row
/// lock for the rest of the transaction, so checks and the writes they guard run one at a
/// time per org (two creates cannot both fit under the last free slot).
pub(super) async fn within_quota(tx: &mut sqlx::Transaction<'_, sqlx::Any>, org_id: &str, ask: Ask) -> Result<()> {
    sqlx::query("UPDATE orgs SET name = name WHERE id = $1")
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    let q = quotas_in(tx, org_id).await?;
    let used = usage_in(tx, org_id).await?;
    quota::check(&q, &used, ask)?;
    Ok(())
}
