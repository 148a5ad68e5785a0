//! Hosts: launches, registration, heartbeats and liveness.

use super::*;

impl Store {
    pub async fn insert_host(&self, h: &HostRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO hosts (id, cloud, region, zone, market, status, launched_at, instance_type, disk_bytes, cell) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&h.id)
        .bind(&h.cloud)
        .bind(&h.region)
        .bind(&h.zone)
        .bind(&h.market)
        .bind(&h.status)
        .bind(h.launched_at)
        .bind(&h.instance_type)
        .bind(h.disk_bytes)
        .bind(&h.cell)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn host_launched(
        &self,
        id: &str,
        zone: &str,
        address: &str,
        instance_type: &str,
        disk_bytes: Option<u64>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE hosts SET zone = $1, address = $2, instance_type = $3, \
             disk_bytes = COALESCE($4, disk_bytes) WHERE id = $5",
        )
        .bind(zone)
        .bind(address)
        .bind(instance_type)
        .bind(disk_bytes.and_then(|b| i64::try_from(b).ok()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_host_status(&self, id: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE hosts SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a registration: the new token's hash, and the host as running.
    /// `at_ms` in unix milliseconds.
    pub async fn register_host(&self, id: &str, token_hash: &str, address: &str, at_ms: i64) -> Result<()> {
        let res = sqlx::query(
            "UPDATE hosts SET token_hash = $1, address = $2, last_beat_ms = $3, \
             status = CASE WHEN status = 'launching' THEN 'running' ELSE status END WHERE id = $4 AND status <> 'failed'",
        )
        .bind(token_hash)
        .bind(address)
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The hosts with these ids, in one query.
    pub async fn hosts_by_ids(&self, ids: &[String]) -> Result<Vec<HostRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT * FROM hosts WHERE id IN ({})", placeholders(ids.len()));
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(host).collect()
    }

    pub async fn get_host(&self, id: &str) -> Result<HostRow> {
        let row = sqlx::query("SELECT * FROM hosts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        host(&row)
    }

    pub async fn list_hosts(&self) -> Result<Vec<HostRow>> {
        let rows = sqlx::query("SELECT * FROM hosts ORDER BY launched_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(host).collect()
    }

    /// Applies a heartbeat: the host's liveness and what it reports of each of its
    /// instances. An instance being deleted that the agent no longer reports is absent.
    /// Returns whether anything the planner or the routes depend on changed. `at_ms` in
    /// unix milliseconds.
    pub async fn heartbeat(&self, host_id: &str, at_ms: i64, observed: &[ObservedInstance]) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE hosts SET last_beat_ms = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query("SELECT * FROM instances WHERE host_id = $1")
            .bind(host_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut changed = false;
        for r in rows.iter().map(instance) {
            let r = r?;
            let Some(o) = observed.iter().find(|o| o.id == r.id) else {
                if r.deleting && r.observed != "absent" {
                    changed = true;
                    sqlx::query("UPDATE instances SET observed = 'absent', addr = NULL, error = NULL WHERE id = $1")
                        .bind(&r.id)
                        .execute(&mut *tx)
                        .await?;
                }
                continue;
            };
            let state = observed_name(o.state).to_string();
            let sync = o.sync_standbys.join(",");
            let sync_streaming = o.sync_streaming.join(",");
            // Positions move with every write: stored, but not a change worth waking
            // the planner and the long-polls for.
            if state != r.observed
                || o.addr != r.addr
                || o.error != r.error
                || o.in_recovery != r.in_recovery
                || o.streaming != r.streaming
                || o.sync_standbys != r.sync_standbys
                || o.sync_streaming != r.sync_streaming
                || o.term != r.observed_term
                || o.archive_error != r.archive_error
                || o.storage
                    .is_some_and(|s| s.level != r.storage.map_or(StorageLevel::Normal, |was| was.level))
            {
                changed = true;
            }
            let bytes = |v: Option<u64>| v.and_then(|b| i64::try_from(b).ok());
            let storage = o.storage;
            sqlx::query(
                "UPDATE instances SET observed = $1, addr = $2, error = $3, in_recovery = $4, lsn = $5, \
                 streaming = $6, sync_standbys = $7, observed_term = $8, archived_lsn = $9, archive_error = $10, \
                 sync_streaming = $11, data_bytes = COALESCE($12, data_bytes), wal_bytes = COALESCE($13, wal_bytes), \
                 disk_free_bytes = COALESCE($14, disk_free_bytes), disk_total_bytes = COALESCE($15, disk_total_bytes), \
                 disk_reserve_bytes = COALESCE($16, disk_reserve_bytes), storage_level = COALESCE($17, storage_level), \
                 seed_json = COALESCE($18, seed_json), max_connections = COALESCE($19, max_connections), \
                 sealing_generation = $20 WHERE id = $21",
            )
            .bind(&state)
            .bind(&o.addr)
            .bind(&o.error)
            .bind(o.in_recovery.map(i64::from))
            .bind(o.lsn.and_then(|l| i64::try_from(l).ok()))
            .bind(o.streaming.map(i64::from))
            .bind(&sync)
            .bind(o.term)
            .bind(o.archived_lsn.and_then(|l| i64::try_from(l).ok()))
            .bind(&o.archive_error)
            .bind(&sync_streaming)
            .bind(bytes(storage.map(|s| s.data_bytes)))
            .bind(bytes(storage.map(|s| s.wal_bytes)))
            .bind(bytes(storage.map(|s| s.disk_free_bytes)))
            .bind(bytes(storage.map(|s| s.disk_total_bytes)))
            .bind(bytes(storage.map(|s| s.disk_reserve_bytes)))
            .bind(storage.map(|s| s.level.as_str()))
            // A plain struct of strings and numbers: serializing it cannot fail.
            .bind(o.seed.as_ref().and_then(|s| serde_json::to_string(s).ok()))
            .bind(o.max_connections.map(i64::from))
            .bind(o.sealing_generation.map(i64::from))
            .bind(&r.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Keeps what a host's agent last read of its own disk.
    pub async fn record_host_disk(&self, host_id: &str, disk: &HostDisk) -> Result<()> {
        let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE hosts SET disk_total_bytes = $1, disk_free_bytes = $2, disk_reserve_bytes = $3, \
             disk_reserve_released = $4 WHERE id = $5",
        )
        .bind(bytes(disk.total_bytes))
        .bind(bytes(disk.free_bytes))
        .bind(bytes(disk.reserve_bytes))
        .bind(i64::from(disk.reserve_released))
        .bind(host_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The disks hosts reported, by host id (hosts on a shared file system report none).
    pub async fn host_disks(&self) -> Result<std::collections::BTreeMap<String, HostDisk>> {
        let rows = sqlx::query(
            "SELECT id, disk_total_bytes, disk_free_bytes, disk_reserve_bytes, disk_reserve_released FROM hosts \
             WHERE disk_total_bytes IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let bytes = |v: i64| v.max(0) as u64;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("id")?,
                    HostDisk {
                        total_bytes: bytes(r.try_get("disk_total_bytes")?),
                        free_bytes: bytes(r.try_get("disk_free_bytes")?),
                        reserve_bytes: bytes(r.try_get("disk_reserve_bytes")?),
                        reserve_released: r.try_get::<i64, _>("disk_reserve_released")? != 0,
                    },
                ))
            })
            .collect()
    }
}
