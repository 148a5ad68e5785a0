//! Backup endpoints, the restore a create can start from, and the storage part of an
//! agent's desired state.

use super::*;
use crate::durability::{self, RestoreRecord};
use crate::store::{BackupRow, DesiredRow};
use highrise_api::{Backup, BackupPolicy, BackupVerification, RestoreFrom, RestoreSpec};

fn fmt_lsn(l: Option<i64>) -> Option<String> {
    l.map(|l| highrise_backup::fmt_lsn(l as u64))
}

pub(super) fn backup_view(b: &BackupRow) -> Backup {
    Backup {
        id: b.id.clone(),
        cluster: b.cluster_name.clone(),
        kind: b.kind.clone(),
        status: b.status.clone(),
        created_at: b.created_at,
        finished_at: b.finished_at,
        timeline: b.timeline.and_then(|t| u32::try_from(t).ok()),
        start_lsn: fmt_lsn(b.start_lsn),
        end_lsn: fmt_lsn(b.end_lsn),
        size_bytes: b.size_bytes.map(|v| v as u64),
        stored_bytes: b.stored_bytes.map(|v| v as u64),
        error: b.error.clone(),
        from_creation: b.since.is_some(),
    }
}

pub(super) fn validate_durability(d: &str) -> ApiResult<()> {
    match d {
        "async" | "sync" => Ok(()),
        _ => Err(ApiError::invalid("durability must be async or sync")),
    }
}

pub(super) fn validate_policy(p: &BackupPolicy) -> ApiResult<()> {
    if !(60..=30 * 86_400).contains(&p.interval_seconds) {
        return Err(ApiError::invalid(
            "backup_policy.interval_seconds must be between 60 and 2592000",
        ));
    }
    if !(1..=100).contains(&p.retain_count) {
        return Err(ApiError::invalid(
            "backup_policy.retain_count must be between 1 and 100",
        ));
    }
    if p.retain_days > 3650 {
        return Err(ApiError::invalid("backup_policy.retain_days must be at most 3650"));
    }
    Ok(())
}

/// The backups of a cluster by id or name, also of a deleted one (whose row may be gone:
/// its ledger keeps both).
async fn ledger(state: &AppState, caller: &Caller, project: Option<&str>, cluster: &str) -> ApiResult<Vec<BackupRow>> {
    let p = resolve_project(state, caller, project).await?;
    match state.store.find_cluster(&caller.org_id, &p.id, cluster).await {
        Ok(c) => state.store.backups_of(&c.id).await.map_err(store_err("backups")),
        Err(StoreError::NotFound) => {
            let by_id: Vec<BackupRow> = state
                .store
                .backups_of(cluster)
                .await
                .map_err(store_err("backups"))?
                .into_iter()
                .filter(|b| b.org_id == caller.org_id && b.project_id == p.id)
                .collect();
            if !by_id.is_empty() {
                return Ok(by_id);
            }
            validate_name("cluster", cluster)?;
            let rows = state
                .store
                .backups_by_name(&caller.org_id, &p.id, cluster)
                .await
                .map_err(store_err("backups"))?;
            if rows.is_empty() {
                return Err(ApiError::not_found("cluster"));
            }
            Ok(rows)
        }
        Err(e) => Err(store_err("cluster")(e)),
    }
}

/// The base backups of a cluster, oldest first; also of a deleted cluster, by name.
#[utoipa::path(get, path = "/v1/clusters/{cluster}/backups", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 200, body = [Backup]), (status = 404, body = ErrorBody)))]
pub(super) async fn list_backups(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<Vec<Backup>>> {
    let rows = ledger(&state, &caller, q.project.as_deref(), &cluster).await?;
    Ok(Json(rows.iter().map(backup_view).collect()))
}

/// Take a base backup now. Answers at once; the backup is `pending` until the primary
/// has stored it (poll the list).
#[utoipa::path(post, path = "/v1/clusters/{cluster}/backups", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 202, body = Backup), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_backup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    if c.deleted_at.is_some() {
        return Err(ApiError::not_found("cluster"));
    }
    let b = durability::new_backup(&c, "manual");
    state.store.insert_backup(&b).await.map_err(store_err("backup"))?;
    state.notify();
    tracing::info!(cluster = %c.id, backup = %b.id, "backup requested");
    Ok((StatusCode::ACCEPTED, Json(backup_view(&b))))
}

/// Read a complete backup back — every part, and the WAL from its start on — and check
/// every checksum. A failure names the object.
#[utoipa::path(post, path = "/v1/clusters/{cluster}/backups/{id}/verify",
    params(("cluster" = String, Path, description = "Cluster id or name"), ("id" = String, Path, description = "Backup id"), ProjectQuery),
    responses((status = 200, body = BackupVerification), (status = 404, body = ErrorBody)))]
pub(super) async fn verify_backup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((cluster, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<BackupVerification>> {
    let rows = ledger(&state, &caller, q.project.as_deref(), &cluster).await?;
    let b = rows
        .iter()
        .find(|b| b.id == id && b.status == "complete")
        .ok_or_else(|| ApiError::not_found("complete backup"))?;
    let repo = durability::repo(&state, &b.org_id, &b.cluster_id)
        .await
        .map_err(|e| ApiError::internal("open object storage", format!("{e:#}")))?;
    let res = repo.verify_base(&b.id).await;
    Ok(Json(BackupVerification {
        backup: b.id.clone(),
        ok: res.is_ok(),
        checked_bytes: *res.as_ref().unwrap_or(&0),
        error: res.err().map(|e| e.to_string()),
    }))
}

/// Parses a restore target time: RFC 3339 in UTC or Unix seconds (fractions allowed).
fn parse_time(t: &str) -> ApiResult<std::time::SystemTime> {
    let bad = || ApiError::invalid("restore.time: use RFC 3339 in UTC (2026-11-26T12:00:00.5Z) or Unix seconds");
    if let Ok(secs) = t.parse::<f64>() {
        if !(0.0..1e11).contains(&secs) {
            return Err(bad());
        }
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs));
    }
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).map_err(|_| bad())
}

/// Chooses the backup a restore starts from: the newest complete one that is consistent
/// before the target. Returns the record for the new cluster and the database name.
pub(super) async fn plan_restore(
    state: &AppState,
    caller: &Caller,
    project: &ProjectRow,
    r: &RestoreFrom,
) -> ApiResult<(RestoreRecord, String)> {
    validate_name("restore.from cluster", &r.from)?;
    if r.time.is_some() && r.lsn.is_some() {
        return Err(ApiError::invalid("restore: give time or lsn, not both"));
    }
    let rows = state
        .store
        .backups_by_name(&caller.org_id, &project.id, &r.from)
        .await
        .map_err(store_err("backups"))?;
    use highrise_planner::backups::{restore_base, NoBase, RestoreTarget};
    let (target, target_time, target_lsn) = if let Some(t) = &r.time {
        let at = parse_time(t)?;
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        // PostgreSQL's own timestamptz form (it rejects `T`…`Z` in this setting).
        let pg = humantime::format_rfc3339_micros(at)
            .to_string()
            .replace('T', " ")
            .replace('Z', "+00");
        (RestoreTarget::Time(secs), Some(pg), None)
    } else if let Some(l) = &r.lsn {
        let lsn =
            highrise_backup::parse_lsn(l).ok_or_else(|| ApiError::invalid("restore.lsn: use X/Y, e.g. 0/3000060"))?;
        (RestoreTarget::Lsn(lsn), None, Some(highrise_backup::fmt_lsn(lsn)))
    } else {
        (RestoreTarget::Latest, None, None)
    };
    let ledger = durability::entries(&rows);
    let chosen_id = match restore_base(&ledger, target) {
        Ok(b) => b.id.clone(),
        Err(NoBase::NoBackup) => {
            return Err(ApiError::invalid(format!(
                "cluster {:?} has no complete backup to restore from",
                r.from
            )))
        }
        Err(NoBase::BeforeCreation(at)) => {
            return Err(ApiError::invalid(format!(
                "cluster {:?} was created at {}, after the restore target",
                r.from,
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at as u64))
            )))
        }
        Err(NoBase::NoneBefore) => {
            let what = r.time.as_deref().or(r.lsn.as_deref()).unwrap_or_default();
            return Err(ApiError::invalid(format!(
                "no backup of {:?} is consistent before {what}",
                r.from
            )));
        }
    };
    let chosen = rows
        .iter()
        .find(|b| b.id == chosen_id)
        .ok_or_else(|| ApiError::internal("choose a backup", "chosen backup vanished"))?;
    Ok((
        RestoreRecord {
            source_cluster_id: chosen.cluster_id.clone(),
            backup_id: chosen.id.clone(),
            target_time,
            target_lsn,
        },
        chosen.db_name.clone(),
    ))
}

/// Fills in what only the control plane can: each primary's storage (with its tenant's
/// data key) and a restoring primary's source.
pub(super) async fn fill_desired(state: &AppState, rows: Vec<DesiredRow>) -> ApiResult<Vec<InstanceSpec>> {
    let mut out = Vec::with_capacity(rows.len());
    for DesiredRow {
        org_id,
        restore_json,
        mut spec,
    } in rows
    {
        let keyed = |e: anyhow::Error| ApiError::internal("tenant storage", format!("{e:#}"));
        spec.storage = Some(
            durability::storage_spec(state, &org_id, &spec.cluster_id)
                .await
                .map_err(keyed)?,
        );
        if let Some(json) = restore_json {
            let r: RestoreRecord =
                serde_json::from_str(&json).map_err(|e| ApiError::internal("read restore record", e))?;
            spec.restore = Some(RestoreSpec {
                storage: durability::storage_spec(state, &org_id, &r.source_cluster_id)
                    .await
                    .map_err(keyed)?,
                backup_id: r.backup_id,
                target_time: r.target_time,
                target_lsn: r.target_lsn,
            });
        }
        out.push(spec);
    }
    Ok(out)
}
