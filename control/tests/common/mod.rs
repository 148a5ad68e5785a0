//! Rows the store tests build their world from, and instances' lives their agents meter.
#![allow(dead_code)] // each test file uses its own share

use highrise_api::{MeterKind, MeterReading};
use highrise_control::store::*;

/// An instance: its host, its cluster and when it lived on the host (Unix ms; `end`
/// `None` while it lives).
pub struct Life {
    pub id: String,
    pub host: &'static str,
    pub cluster: String,
    pub start: i64,
    pub end: Option<i64>,
}

impl Life {
    /// Its agent's counter read at `t` (`None` before the instance existed).
    pub fn reading(&self, t: i64) -> Option<MeterReading> {
        if t < self.start {
            return None;
        }
        let at = self.end.map_or(t, |e| e.min(t));
        Some(MeterReading {
            source: self.id.clone(),
            kind: MeterKind::InstanceMs,
            value: u64::try_from(at - self.start).unwrap(),
            at_ms: at,
            since_ms: self.start,
            closed: self.end.is_some_and(|e| t >= e),
        })
    }

    /// Its lifetime inside `[from, to)` (ms).
    pub fn overlap(&self, from: i64, to: i64) -> i64 {
        (self.end.unwrap_or(i64::MAX).min(to) - self.start.max(from)).max(0)
    }
}

pub fn org_row(id: &str, name: &str) -> OrgRow {
    OrgRow {
        id: id.into(),
        name: name.into(),
        operator: false,
        created_at: 1,
        cell: "c1".into(),
    }
}

pub fn key_row(id: &str, org: &str) -> ApiKeyRow {
    ApiKeyRow {
        id: id.into(),
        org_id: org.into(),
        name: "k".into(),
        secret_hash: "h".into(),
        role: highrise_api::Role::Owner,
        project_id: None,
        expires_at: None,
        user_id: None,
        created_by: None,
        created_at: 1,
        revoked_at: None,
    }
}

pub fn cluster_row(id: &str, org: &str, project: &str, name: &str, endpoint: &str) -> ClusterRow {
    ClusterRow {
        id: id.into(),
        org_id: org.into(),
        project_id: project.into(),
        project_name: "default".into(),
        name: name.into(),
        cloud: "local-a".into(),
        region: "region-1".into(),
        plan: "small".into(),
        pg_version: 15,
        replicas: 0,
        spot: false,
        endpoint: endpoint.into(),
        db_name: name.into(),
        owner_name: "owner".into(),
        owner_scram: "SCRAM".into(),
        repl_password: "rp".into(),
        repl_scram: "RSCRAM".into(),
        spread_clouds: false,
        term: 1,
        created_at: 5,
        deleted_at: None,
        durability: "async".into(),
        backup_interval: 86_400,
        backup_retain_count: 7,
        backup_retain_days: 7,
        restore_json: None,
        autoscale_max_bytes: 0,
        disk_bytes: 0,
        backup_copies: 1,
        copy_lag_bytes: None,
        copied_at: None,
        on_cloud_loss: "restore".into(),
        avoid_cloud: None,
        public_endpoint: true,
        allowed_cidrs: Vec::new(),
        connection_limit: 0,
        cell: String::new(),
    }
}

pub fn op_row(id: &str, org: &str, cluster: &str, kind: &str) -> OperationRow {
    OperationRow {
        id: id.into(),
        org_id: org.into(),
        cluster_id: Some(cluster.into()),
        kind: kind.into(),
        status: "running".into(),
        error: None,
        created_at: 5,
        updated_at: 5,
        progress_json: None,
        outcome: None,
    }
}

pub fn host_row(id: &str, market: &str) -> HostRow {
    HostRow {
        id: id.into(),
        cloud: "local-a".into(),
        region: "region-1".into(),
        zone: String::new(),
        market: market.into(),
        address: None,
        status: "launching".into(),
        token_hash: None,
        last_beat_ms: None,
        launched_at: 3,
        instance_type: String::new(),
        notice_deadline: None,
        disk_bytes: None,
        cell: "c1".into(),
    }
}

pub fn instance_row(id: &str, cluster: &str, host: &str) -> InstanceRow {
    InstanceRow {
        id: id.into(),
        cluster_id: cluster.into(),
        host_id: host.into(),
        slots: 1,
        role: "primary".into(),
        deleting: false,
        observed: "unknown".into(),
        addr: None,
        error: None,
        created_at: 6,
        in_recovery: None,
        lsn: None,
        streaming: None,
        sync_standbys: vec![],
        sync_streaming: vec![],
        observed_term: 0,
        draining: false,
        archived_lsn: None,
        archive_error: None,
        storage: None,
        seed: None,
        max_connections: None,
    }
}

/// Org `o1` (`alpha`, project `p1`) and two hosts of the local land: `h-od` on demand and
/// `h-spot` on spot — the metering tests' world before its clusters.
pub async fn metered_org(store: &Store) {
    store
        .create_org(&org_row("o1", "alpha"), "p1", &key_row("k1", "o1"))
        .await
        .unwrap();
    for (host, market) in [("h-od", "on_demand"), ("h-spot", "spot")] {
        store.insert_host(&host_row(host, market)).await.unwrap();
    }
}
