//! Instances: placement and removal, each host's desired state and the proxy's routes;
//! changes of term (failover, restore, switchover, drain).

use super::*;

impl Store {
    pub async fn insert_instance(&self, i: &InstanceRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO instances (id, cluster_id, host_id, slots, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&i.id)
        .bind(&i.cluster_id)
        .bind(&i.host_id)
        .bind(i.slots)
        .bind(&i.role)
        .bind(i.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_instance_deleting(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE instances SET deleting = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn forget_instance(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_instances(&self) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance).collect()
    }

    /// The instances of several clusters, in one query.
    pub async fn instances_of_clusters(&self, cluster_ids: &[String]) -> Result<Vec<InstanceRow>> {
        if cluster_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT * FROM instances WHERE cluster_id IN ({}) ORDER BY created_at, id",
            placeholders(cluster_ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in cluster_ids {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(instance).collect()
    }

    pub async fn instances_of_cluster(&self, cluster_id: &str) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query("SELECT * FROM instances WHERE cluster_id = $1 ORDER BY created_at, id")
            .bind(cluster_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance).collect()
    }

    /// The desired state of one host: its instances that are not being deleted, each with
    /// what its role needs (a standby: where its primary is and the replication password;
    /// a primary: which standbys must confirm commits).
    ///
    /// Storage and restore are left for the caller, who holds the keys: each spec comes
    /// with its org and the cluster's restore record.
    pub async fn desired_for_host(&self, host_id: &str) -> Result<Vec<DesiredRow>> {
        let rows = sqlx::query(
            "SELECT i.id, i.cluster_id, i.slots, i.role, i.draining, i.addr, c.plan, c.pg_version, c.db_name, c.owner_name, c.owner_scram, \
             c.repl_password, c.repl_scram, c.term, c.durability, c.restore_json, c.connection_limit, h.cloud AS host_cloud, \
             (SELECT b.id FROM backups b WHERE b.cluster_id = c.id AND b.status = 'pending' ORDER BY b.created_at LIMIT 1) \
             AS backup_id \
             FROM instances i JOIN clusters c ON c.id = i.cluster_id JOIN hosts h ON h.id = i.host_id \
             WHERE i.host_id = $1 AND i.deleting = 0 ORDER BY i.id",
        )
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?;
        let mut specs = Vec::with_capacity(rows.len());
        for r in &rows {
            let slots: i64 = r.try_get("slots")?;
            let role: String = r.try_get("role")?;
            let cluster_id: String = r.try_get("cluster_id")?;
            let members = self.instances_of_cluster(&cluster_id).await?;
            let live = members.iter().filter(|m| !m.deleting);
            let primary_addr = live
                .clone()
                .find(|m| m.role == "primary" && m.observed == "running")
                .and_then(|m| m.addr.clone());
            // Only standbys that have come up count toward the quorum: naming one that
            // never connected would stop every commit.
            let sync_standbys: Vec<String> = live
                .filter(|m| m.role == "standby" && m.addr.is_some())
                .map(|m| m.id.clone())
                .collect();
            let standby = role == "standby";
            let primary = role == "primary";
            // A standby must allow as many connections as its primary: every member allows
            // what the biggest one does — by its plan, or by what its server runs with (a
            // primary started under a bigger plan keeps its setting until it restarts).
            let min_connections = members
                .iter()
                .filter(|m| !m.deleting)
                .map(|m| {
                    let by_plan = highrise_pg::default_max_connections(planner::plan_memory_mb(
                        u32::try_from(m.slots).unwrap_or(1),
                    ));
                    by_plan.max(m.max_connections.unwrap_or(0))
                })
                .max();
            // A standby's disk filling up holds the primary's writes back before the standby
            // stops for want of room (and, in a synchronous quorum, every commit with it).
            let standby_nearly_full = members.iter().any(|m| {
                !m.deleting
                    && m.role == "standby"
                    && m.storage.is_some_and(|s| {
                        matches!(
                            s.level,
                            StorageLevel::ReadOnly | StorageLevel::Critical | StorageLevel::Full
                        )
                    })
            });
            let spec = InstanceSpec {
                id: r.try_get("id")?,
                cluster_id,
                pg_version: u32::try_from(r.try_get::<i64, _>("pg_version")?).unwrap_or(15),
                database: r.try_get("db_name")?,
                owner: r.try_get("owner_name")?,
                owner_scram: r.try_get("owner_scram")?,
                term: r.try_get("term")?,
                memory_mb: planner::plan_memory_mb(u32::try_from(slots).unwrap_or(1)),
                min_connections,
                primary_addr: if standby { primary_addr } else { None },
                replication_password: standby.then(|| r.try_get("repl_password")).transpose()?,
                replication_scram: r.try_get("repl_scram")?,
                sync_quorum: u32::from(!sync_standbys.is_empty() && !standby),
                sync_standbys: if standby { vec![] } else { sync_standbys },
                stopped: r.try_get::<i64, _>("draining")? != 0,
                role,
                storage: None,
                durability: r.try_get("durability")?,
                backup: if primary { r.try_get("backup_id")? } else { None },
                restore: None,
                storage_limit_bytes: planner::plan_storage_bytes(&r.try_get::<String, _>("plan")?),
                storage_read_only: primary && standby_nearly_full,
                tls: None,
                connection_limit: u32::try_from(r.try_get::<i64, _>("connection_limit")?)
                    .ok()
                    .filter(|&l| l > 0),
            };
            specs.push(DesiredRow {
                restore_json: if primary { r.try_get("restore_json")? } else { None },
                new_standby: standby && r.try_get::<Option<String>, _>("addr")?.is_none(),
                cloud: r.try_get("host_cloud")?,
                spec,
            });
        }
        Ok(specs)
    }

    /// Where each live cluster's primary is: the proxy's routing table. A cluster whose
    /// current-term primary has not (yet) reported itself promoted has no address. Each
    /// route names the owner and its verifier (the caller decides whether proxies get it).
    pub async fn routes(&self) -> Result<Vec<Route>> {
        Ok(self.routes_with_cells().await?.into_iter().map(|(_, r)| r).collect())
    }

    /// [`Store::routes`], each with the cell of the cluster's org (whose proxies serve it).
    pub async fn routes_with_cells(&self) -> Result<Vec<(String, Route)>> {
        let rows = sqlx::query(
            "SELECT (SELECT o.cell FROM orgs o WHERE o.id = c.org_id) AS cell, c.endpoint, c.id, c.term, c.storage_level, c.public_endpoint, c.allowed_cidrs, c.owner_name, c.owner_scram, \
             (SELECT i.addr FROM instances i WHERE i.cluster_id = c.id AND i.deleting = 0 AND i.draining = 0 AND i.role = 'primary' \
              AND i.in_recovery = 0 AND i.observed_term = c.term AND i.observed IN ('running', 'unhealthy') \
              AND i.addr IS NOT NULL ORDER BY i.id LIMIT 1) AS addr \
             FROM clusters c WHERE c.deleted_at IS NULL ORDER BY c.endpoint",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut routes = rows
            .iter()
            .map(|r| {
                let cell = r.try_get::<Option<String>, _>("cell")?.unwrap_or_default();
                let route = Route {
                    endpoint: r.try_get("endpoint")?,
                    cluster_id: r.try_get("id")?,
                    addr: r.try_get("addr")?,
                    term: r.try_get("term")?,
                    notice: storage_notice(super::storage_level(r.try_get("storage_level")?)),
                    public: r.try_get::<i64, _>("public_endpoint")? != 0,
                    allowed_cidrs: super::id_list(&r.try_get::<String, _>("allowed_cidrs")?),
                    private: None,
                    server_name: None,
                    login: Some(highrise_api::RouteLogin {
                        user: r.try_get("owner_name")?,
                        scram: r.try_get("owner_scram")?,
                    }),
                };
                Ok((cell, route))
            })
            .collect::<Result<Vec<_>>>()?;
        // A private endpoint routes where its cluster's public one does, through its own
        // listener only.
        let by_cluster: std::collections::HashMap<String, (String, Route)> = routes
            .iter()
            .map(|(c, r)| (r.cluster_id.clone(), (c.clone(), r.clone())))
            .collect();
        for (e, namespace) in self.private_listeners().await? {
            let Some((cell, public)) = by_cluster.get(&e.cluster_id) else {
                continue;
            };
            routes.push((
                cell.clone(),
                Route {
                    endpoint: e.id,
                    public: false,
                    allowed_cidrs: Vec::new(),
                    private: Some(highrise_api::PrivateListener {
                        network_id: e.network_id,
                        namespace,
                        listen: e.address,
                    }),
                    ..public.clone()
                },
            ));
        }
        Ok(routes)
    }

    /// Makes `to` the primary of `cluster_id` in a new term and takes `from` out of the
    /// cluster, in one transaction; only if the term is still `term` (a compare-and-set,
    /// so two deciders can never both promote).
    pub async fn failover(
        &self,
        cluster_id: &str,
        term: i64,
        from: Option<&str>,
        to: &str,
        at: i64,
        why: &str,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !next_term(&mut tx, cluster_id, term, from, None).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE instances SET role = 'primary' WHERE id = $1 AND cluster_id = $2")
            .bind(to)
            .bind(cluster_id)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, cluster_id, at, "failover_started", why).await?;
        insert_event(
            &mut tx,
            cluster_id,
            at,
            "promoted",
            &format!("{to} is the primary of term {}", term + 1),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Starts a new term whose primary restores from object storage (`record`), takes
    /// the lost primary `from` out, and opens the operation that follows it — in one
    /// transaction, only if the term is still `term`.
    pub async fn restore_primary(
        &self,
        cluster_id: &str,
        term: i64,
        from: &str,
        record: &str,
        op: &OperationRow,
        why: &str,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !next_term(&mut tx, cluster_id, term, Some(from), Some(record)).await? {
            return Ok(false);
        }
        insert_operation(&mut tx, op).await?;
        insert_event(&mut tx, cluster_id, op.created_at, "restoring", why).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a requested switchover (the target, or `""` for "the most advanced").
    pub async fn request_switchover(&self, cluster_id: &str, to: &str, op: &OperationRow) -> Result<()> {
        let mut tx = self.begin().await?;
        quotas::within_quota(&mut tx, &op.org_id, crate::quota::Ask::Operation).await?;
        sqlx::query("UPDATE clusters SET switchover_to = $1 WHERE id = $2")
            .bind(to)
            .bind(cluster_id)
            .execute(&mut *tx)
            .await?;
        insert_operation(&mut tx, op).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn cancel_switchover(&self, cluster_id: &str) -> Result<()> {
        sqlx::query("UPDATE clusters SET switchover_to = NULL WHERE id = $1")
            .bind(cluster_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stops routing to the primary and tells its agent to stop it: the first step of a
    /// switchover (its walsenders hand every WAL byte to the standbys on the way out).
    pub async fn drain(&self, instance_id: &str) -> Result<()> {
        sqlx::query("UPDATE instances SET draining = 1 WHERE id = $1")
            .bind(instance_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// What the proxy tells each new session of a cluster at this storage level.
fn storage_notice(level: StorageLevel) -> Option<String> {
    let why = match level {
        StorageLevel::Normal | StorageLevel::Warning => return None,
        StorageLevel::ReadOnly | StorageLevel::Critical => "its storage is nearly full",
        StorageLevel::Full => "its disk filled up",
    };
    Some(format!(
        "this database is read-only because {why}: writes work again once usage is below 85%. To free \
         space, run SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE in this session, then DELETE, \
         TRUNCATE or DROP what you can spare (see `highrise cluster events` for the numbers)"
    ))
}
