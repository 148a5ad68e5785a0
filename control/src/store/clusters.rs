//! Clusters: their intent (plan, replicas, durability, spot) and lifecycle.

use super::*;
use crate::quota::Ask;

impl Store {
    /// Records a new cluster and its create operation in one transaction, within the org's
    /// quotas.
    pub async fn create_cluster(&self, c: &ClusterRow, op: &OperationRow) -> Result<()> {
        let mut tx = self.begin().await?;
        quotas::within_quota(
            &mut tx,
            &c.org_id,
            Ask::NewCluster {
                members: c.replicas + 1,
            },
        )
        .await?;
        let res = sqlx::query(
            "INSERT INTO clusters (id, org_id, project_id, name, cloud, region, plan, pg_version, replicas, spot, \
             endpoint, db_name, owner_name, owner_scram, term, created_at, repl_password, repl_scram, spread_clouds, \
             durability, backup_interval, backup_retain_count, backup_retain_days, restore_json, autoscale_max_bytes, \
             backup_copies, on_cloud_loss, public_endpoint, allowed_cidrs, connection_limit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
             $23, $24, $25, $26, $27, $28, $29, $30)",
        )
        .bind(&c.id)
        .bind(&c.org_id)
        .bind(&c.project_id)
        .bind(&c.name)
        .bind(&c.cloud)
        .bind(&c.region)
        .bind(&c.plan)
        .bind(c.pg_version)
        .bind(c.replicas)
        .bind(i64::from(c.spot))
        .bind(&c.endpoint)
        .bind(&c.db_name)
        .bind(&c.owner_name)
        .bind(&c.owner_scram)
        .bind(c.term)
        .bind(c.created_at)
        .bind(&c.repl_password)
        .bind(&c.repl_scram)
        .bind(i64::from(c.spread_clouds))
        .bind(&c.durability)
        .bind(c.backup_interval)
        .bind(c.backup_retain_count)
        .bind(c.backup_retain_days)
        .bind(&c.restore_json)
        .bind(c.autoscale_max_bytes)
        .bind(c.backup_copies)
        .bind(&c.on_cloud_loss)
        .bind(i64::from(c.public_endpoint))
        .bind(c.allowed_cidrs.join(","))
        .bind(c.connection_limit)
        .execute(&mut *tx)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a cluster named {:?} exists in this project",
                    c.name
                )))
            }
            r => r?,
        };
        insert_operation(&mut tx, op).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A page of the org's clusters in creation order (only one project's when
    /// `project_id` is given): at most `limit`, after the cluster `after` (its creation time
    /// and id) when given.
    pub async fn list_clusters(
        &self,
        org_id: &str,
        project_id: Option<&str>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<ClusterRow>> {
        let sql = format!(
            "SELECT {CLUSTER_COLS} FROM clusters c JOIN projects p ON p.id = c.project_id \
             WHERE c.org_id = $1 AND ($2 IS NULL OR c.project_id = $2) \
             AND (c.created_at > $3 OR (c.created_at = $3 AND c.id > $4)) \
             ORDER BY c.created_at, c.id LIMIT $5"
        );
        let (after_at, after_id) = after.unwrap_or((i64::MIN, ""));
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(project_id)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cluster).collect()
    }

    /// The project of a cluster (deleted ones too, while their row is kept).
    pub async fn cluster_project(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT project_id FROM clusters WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("project_id")?),
            None => None,
        })
    }

    /// Any cluster by id (deleted ones too, while their row is kept).
    pub async fn cluster_by_id(&self, id: &str) -> Result<ClusterRow> {
        let sql =
            format!("SELECT {CLUSTER_COLS} FROM clusters c JOIN projects p ON p.id = c.project_id WHERE c.id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        cluster(&row)
    }

    /// A live (not deleting) cluster by name, or any cluster of the org by id.
    pub async fn find_cluster(&self, org_id: &str, project_id: &str, id_or_name: &str) -> Result<ClusterRow> {
        let sql = format!(
            "SELECT {CLUSTER_COLS} FROM clusters c JOIN projects p ON p.id = c.project_id \
             WHERE c.org_id = $1 AND (c.id = $2 OR (c.project_id = $3 AND c.name = $2 AND c.deleted_at IS NULL))"
        );
        let row = sqlx::query(&sql)
            .bind(org_id)
            .bind(id_or_name)
            .bind(project_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        cluster(&row)
    }

    /// Marks a cluster deleted and records the delete operation, in one transaction.
    /// A second delete of a cluster already being deleted returns the open operation.
    pub async fn delete_cluster(&self, c: &ClusterRow, op: &OperationRow) -> Result<OperationRow> {
        let mut tx = self.begin().await?;
        let res = sqlx::query("UPDATE clusters SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(op.created_at)
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            let row = sqlx::query(
                "SELECT id, org_id, cluster_id, kind, status, error, created_at, updated_at, progress_json, outcome FROM operations \
                 WHERE cluster_id = $1 AND kind = 'delete_cluster' ORDER BY created_at DESC",
            )
            .bind(&c.id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
            return operation(&row);
        }
        // Its private endpoints go at once: their listeners close with the next routes.
        sqlx::query("DELETE FROM private_endpoints WHERE cluster_id = $1")
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
        insert_operation(&mut tx, op).await?;
        tx.commit().await?;
        Ok(op.clone())
    }

    /// Sets a cluster's number of standbys, within its org's quota of members.
    pub async fn set_replicas(&self, c: &ClusterRow, replicas: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        quotas::within_quota(&mut tx, &c.org_id, Ask::Members(replicas + 1)).await?;
        sqlx::query("UPDATE clusters SET replicas = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(replicas)
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves the cluster to another cloud and region and/or plan, with the operation that
    /// follows the move and an event that says so, in one transaction. The planner then
    /// replaces the misplaced members (see `planner::spot::Leaving`).
    pub async fn move_cluster(&self, c: &ClusterRow, to: &MoveTo<'_>, op: &OperationRow, why: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        move_in(&mut tx, c, to, op, why).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancels the cluster's running move or resize while its primary has not begun to
    /// switch over: the cluster goes back to the place and plan it had (the planner then
    /// retires the members built for the move) and the operation ends `cancelled`, with an
    /// event — in one transaction. Returns the operation's id; `NotFound` when no move
    /// runs, `Conflict` once the switchover has begun.
    pub async fn cancel_move(&self, cluster_id: &str, at: i64, who: &str) -> Result<String> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT id, undo_json FROM operations WHERE cluster_id = $1 AND kind = 'move_cluster' AND status = 'running'",
        )
        .bind(cluster_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let op_id: String = row.try_get("id")?;
        let undo: MoveUndo = row
            .try_get::<Option<String>, _>("undo_json")?
            .and_then(|j| serde_json::from_str(&j).ok())
            .ok_or_else(|| StoreError::Conflict("this move does not record where the cluster was".into()))?;
        let draining: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE cluster_id = $1 AND draining = 1 AND deleting = 0",
        )
        .bind(cluster_id)
        .fetch_one(&mut *tx)
        .await?;
        if draining > 0 {
            return Err(StoreError::Conflict(
                "the primary is switching over right now; once done, move the cluster back instead".into(),
            ));
        }
        let reverted = sqlx::query(
            "UPDATE clusters SET cloud = $1, region = $2, plan = $3, avoid_cloud = $4 \
             WHERE id = $5 AND term = $6 AND switchover_to IS NULL AND deleted_at IS NULL",
        )
        .bind(&undo.cloud)
        .bind(&undo.region)
        .bind(&undo.plan)
        .bind(&undo.avoid_cloud)
        .bind(cluster_id)
        .bind(undo.term)
        .execute(&mut *tx)
        .await?;
        if reverted.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the primary has switched over since the move began (or one is under way); move the cluster back instead"
                    .into(),
            ));
        }
        sqlx::query(
            "UPDATE operations SET status = 'cancelled', error = $1, updated_at = $2 WHERE id = $3 AND status = 'running'",
        )
        .bind(format!("cancelled by {who}"))
        .bind(at)
        .bind(&op_id)
        .execute(&mut *tx)
        .await?;
        let why = format!(
            "move cancelled by {who}: back to {}/{} on plan {}; the members built for it are retired",
            undo.cloud, undo.region, undo.plan
        );
        insert_event(&mut tx, cluster_id, at, "move_cancelled", &why).await?;
        tx.commit().await?;
        Ok(op_id)
    }

    /// What the copier found at its last round: bytes the second copy lacked.
    pub async fn record_copy_lag(&self, id: &str, lag_bytes: i64, at: i64) -> Result<()> {
        sqlx::query("UPDATE clusters SET copy_lag_bytes = $1, copied_at = $2 WHERE id = $3")
            .bind(lag_bytes)
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Storage autoscaling's maximum disk (`0`: off).
    pub async fn set_storage_autoscale(&self, id: &str, max_bytes: i64) -> Result<()> {
        sqlx::query("UPDATE clusters SET autoscale_max_bytes = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(max_bytes)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_durability(&self, id: &str, durability: &str) -> Result<()> {
        sqlx::query("UPDATE clusters SET durability = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(durability)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The most sessions the tenant's role may hold at once (`0`: none but the server's);
    /// the primary's agent sets it on the role.
    pub async fn set_connection_limit(&self, id: &str, limit: i64) -> Result<()> {
        sqlx::query("UPDATE clusters SET connection_limit = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(limit)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who may use the cluster's public endpoint: on or off, and the source networks it
    /// admits (canonical CIDRs; empty: any).
    pub async fn set_endpoint_access(&self, id: &str, public: bool, allowed_cidrs: &[String]) -> Result<()> {
        sqlx::query(
            "UPDATE clusters SET public_endpoint = $1, allowed_cidrs = $2 WHERE id = $3 AND deleted_at IS NULL",
        )
        .bind(i64::from(public))
        .bind(allowed_cidrs.join(","))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_on_cloud_loss(&self, id: &str, policy: &str) -> Result<()> {
        sqlx::query("UPDATE clusters SET on_cloud_loss = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(policy)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves a cluster's home to another cloud and region after its own went dark (nothing
    /// of it left there), with the event that explains it — only while nothing of it
    /// remains, so a member that came back first wins.
    pub async fn relocate(&self, id: &str, cloud: &str, region: &str, at: i64, why: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query(
            "UPDATE clusters SET cloud = $1, region = $2 WHERE id = $3 AND deleted_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.cluster_id = clusters.id AND i.deleting = 0)",
        )
        .bind(cloud)
        .bind(region)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if moved {
            insert_event(&mut tx, id, at, "relocated", why).await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    pub async fn set_backup_policy(&self, id: &str, interval: i64, count: i64, days: i64) -> Result<()> {
        sqlx::query(
            "UPDATE clusters SET backup_interval = $1, backup_retain_count = $2, backup_retain_days = $3 \
             WHERE id = $4 AND deleted_at IS NULL",
        )
        .bind(interval)
        .bind(count)
        .bind(days)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Where a move takes a cluster.
#[derive(Debug, Clone, Copy)]
pub struct MoveTo<'a> {
    pub cloud: &'a str,
    pub region: &'a str,
    pub plan: &'a str,
    /// The cloud the cluster leaves and then keeps out of (`None`: the one it avoided so
    /// far, if any).
    pub avoid: Option<&'a str>,
}

/// Where a cluster was before a move: what cancelling it restores.
#[derive(serde::Serialize, serde::Deserialize)]
struct MoveUndo {
    cloud: String,
    region: String,
    plan: String,
    /// Older records lack it: the cluster avoided no cloud.
    #[serde(default)]
    avoid_cloud: Option<String>,
    /// The term the move began in: a later term means the primary switched over.
    term: i64,
}

/// A move's records inside the caller's transaction: the cluster's new place and plan, its
/// operation (within the org's quota) with what undoing it restores, and the event.
pub(super) async fn move_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    c: &ClusterRow,
    to: &MoveTo<'_>,
    op: &OperationRow,
    why: &str,
) -> Result<()> {
    quotas::within_quota(tx, &op.org_id, Ask::Operation).await?;
    sqlx::query(
        "UPDATE clusters SET cloud = $1, region = $2, plan = $3, avoid_cloud = $4 WHERE id = $5 AND deleted_at IS NULL",
    )
    .bind(to.cloud)
    .bind(to.region)
    .bind(to.plan)
    .bind(to.avoid.map(str::to_string).or_else(|| c.avoid_cloud.clone()))
    .bind(&c.id)
    .execute(&mut **tx)
    .await?;
    insert_operation(tx, op).await?;
    let undo = MoveUndo {
        cloud: c.cloud.clone(),
        region: c.region.clone(),
        plan: c.plan.clone(),
        avoid_cloud: c.avoid_cloud.clone(),
        term: c.term,
    };
    sqlx::query("UPDATE operations SET undo_json = $1 WHERE id = $2")
        .bind(serde_json::to_string(&undo).unwrap_or_default())
        .bind(&op.id)
        .execute(&mut **tx)
        .await?;
    insert_event(tx, &c.id, op.created_at, "move_started", why).await?;
    Ok(())
}
