//! Clusters' server certificates (their keys sealed under the master key).

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCertRow {
    /// The name the certificate carries.
    pub server_name: String,
    pub cert_pem: String,
    /// Hex of the key's PEM sealed under the master key, bound to the cluster.
    pub key_sealed: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl Store {
    pub async fn cluster_cert(&self, cluster_id: &str) -> Result<Option<ClusterCertRow>> {
        let row =
            sqlx::query("SELECT server_name, cert_pem, key_sealed, not_after FROM cluster_certs WHERE cluster_id = $1")
                .bind(cluster_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(ClusterCertRow {
                server_name: r.try_get("server_name")?,
                cert_pem: r.try_get("cert_pem")?,
                key_sealed: r.try_get("key_sealed")?,
                not_after: r.try_get("not_after")?,
            })
        })
        .transpose()
    }

    /// Stores `new` as the cluster's certificate if the one there is still `old` (`None`:
    /// none yet), so two control-plane requests issuing at once keep one. Returns the
    /// certificate the cluster has afterwards.
    pub async fn replace_cluster_cert(
        &self,
        cluster_id: &str,
        old: Option<&ClusterCertRow>,
        new: &ClusterCertRow,
        now: i64,
    ) -> Result<ClusterCertRow> {
        match old {
            None => {
                sqlx::query(
                    "INSERT INTO cluster_certs (cluster_id, server_name, cert_pem, key_sealed, not_after, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (cluster_id) DO NOTHING",
                )
                .bind(cluster_id)
                .bind(&new.server_name)
                .bind(&new.cert_pem)
                .bind(&new.key_sealed)
                .bind(new.not_after)
                .bind(now)
                .execute(&self.pool)
                .await?;
            }
            Some(old) => {
                sqlx::query(
                    "UPDATE cluster_certs SET server_name = $1, cert_pem = $2, key_sealed = $3, not_after = $4, \
                     created_at = $5 WHERE cluster_id = $6 AND cert_pem = $7",
                )
                .bind(&new.server_name)
                .bind(&new.cert_pem)
                .bind(&new.key_sealed)
                .bind(new.not_after)
                .bind(now)
                .bind(cluster_id)
                .bind(&old.cert_pem)
                .execute(&self.pool)
                .await?;
            }
        }
        self.cluster_cert(cluster_id).await?.ok_or(StoreError::NotFound)
    }
}
