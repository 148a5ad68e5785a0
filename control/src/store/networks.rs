//! Tenant networks and the private endpoints placed in them.

use super::*;

const NETWORK_COLS: &str = "id, org_id, name, cidr, namespace, created_at";
const ENDPOINT_COLS: &str = "id, cluster_id, network_id, address, created_at";

fn network(r: &AnyRow) -> Result<NetworkRow> {
    Ok(NetworkRow {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        cidr: r.try_get("cidr")?,
        namespace: r.try_get("namespace")?,
        created_at: r.try_get("created_at")?,
    })
}

fn private_endpoint(r: &AnyRow) -> Result<PrivateEndpointRow> {
    Ok(PrivateEndpointRow {
        id: r.try_get("id")?,
        cluster_id: r.try_get("cluster_id")?,
        network_id: r.try_get("network_id")?,
        address: r.try_get("address")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    pub async fn create_network(&self, n: &NetworkRow) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO networks (id, org_id, name, cidr, namespace, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&n.id)
        .bind(&n.org_id)
        .bind(&n.name)
        .bind(&n.cidr)
        .bind(&n.namespace)
        .bind(n.created_at)
        .execute(&self.pool)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("a network named {:?} exists", n.name)))
            }
            r => r.map(|_| ()).map_err(Into::into),
        }
    }

    pub async fn list_networks(&self, org_id: &str) -> Result<Vec<NetworkRow>> {
        let sql = format!("SELECT {NETWORK_COLS} FROM networks WHERE org_id = $1 ORDER BY name");
        let rows = sqlx::query(&sql).bind(org_id).fetch_all(&self.pool).await?;
        rows.iter().map(network).collect()
    }

    /// Every org's networks.
    pub async fn all_networks(&self) -> Result<Vec<NetworkRow>> {
        let sql = format!("SELECT {NETWORK_COLS} FROM networks ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(network).collect()
    }

    /// A network of the org by name or id.
    pub async fn network_by_name(&self, org_id: &str, name: &str) -> Result<NetworkRow> {
        let sql = format!("SELECT {NETWORK_COLS} FROM networks WHERE org_id = $1 AND (name = $2 OR id = $2)");
        let row = sqlx::query(&sql)
            .bind(org_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        network(&row)
    }

    /// Removes a network no private endpoint uses.
    pub async fn delete_network(&self, n: &NetworkRow) -> Result<()> {
        let mut tx = self.begin().await?;
        let used: i64 = sqlx::query("SELECT COUNT(*) AS n FROM private_endpoints WHERE network_id = $1")
            .bind(&n.id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if used > 0 {
            return Err(StoreError::Conflict(format!(
                "network {:?} still has {used} private endpoint(s); delete them first",
                n.name
            )));
        }
        sqlx::query("DELETE FROM networks WHERE id = $1 AND org_id = $2")
            .bind(&n.id)
            .bind(&n.org_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a private endpoint; its address must be free in its network.
    pub async fn create_private_endpoint(&self, e: &PrivateEndpointRow) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO private_endpoints (id, cluster_id, network_id, address, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&e.id)
        .bind(&e.cluster_id)
        .bind(&e.network_id)
        .bind(&e.address)
        .bind(e.created_at)
        .execute(&self.pool)
        .await;
        match res {
            Err(e2) if is_unique_violation(&e2) => Err(StoreError::Conflict(format!(
                "address {} of the network is taken by another endpoint",
                e.address
            ))),
            r => r.map(|_| ()).map_err(Into::into),
        }
    }

    /// The addresses taken in a network.
    pub async fn network_addresses(&self, network_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT address FROM private_endpoints WHERE network_id = $1")
            .bind(network_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("address")?)).collect()
    }

    pub async fn private_endpoints_of(&self, cluster_id: &str) -> Result<Vec<PrivateEndpointRow>> {
        let sql =
            format!("SELECT {ENDPOINT_COLS} FROM private_endpoints WHERE cluster_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql).bind(cluster_id).fetch_all(&self.pool).await?;
        rows.iter().map(private_endpoint).collect()
    }

    pub async fn delete_private_endpoint(&self, cluster_id: &str, id: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM private_endpoints WHERE id = $1 AND cluster_id = $2")
            .bind(id)
            .bind(cluster_id)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Every private endpoint of a live cluster with its network's namespace (for the
    /// routing table).
    pub async fn private_listeners(&self) -> Result<Vec<(PrivateEndpointRow, String)>> {
        let rows = sqlx::query(
            "SELECT e.id, e.cluster_id, e.network_id, e.address, e.created_at, n.namespace \
             FROM private_endpoints e JOIN networks n ON n.id = e.network_id \
             JOIN clusters c ON c.id = e.cluster_id WHERE c.deleted_at IS NULL ORDER BY e.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((private_endpoint(r)?, r.try_get("namespace")?)))
            .collect()
    }
}
