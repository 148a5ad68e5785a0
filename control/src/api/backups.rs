//! Backup endpoints, the restore a create can start from, and the storage part of an
//! agent's desired state.

use super::*;
use crate::durability::{self, RestoreRecord};
use crate::store::{BackupRow, DesiredRow};
use highrise_api::{Backup, BackupPolicy, BackupVerification, CopyVerification, RestoreFrom, RestoreSpec};

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
        Ok(c) if caller.project_id.as_ref().is_none_or(|s| s == &c.project_id) => {
            state.store.backups_of(&c.id).await.map_err(store_err("backups"))
        }
        Ok(_) | Err(StoreError::NotFound) => {
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
            if validate_name("cluster", cluster).is_err() {
                // No cluster can have that name.
                return Err(ApiError::not_found("cluster"));
            }
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

/// The base backups of a live cluster, oldest first (those of a deleted cluster are
/// listed by `GET /v1/backups?cluster=`).
#[utoipa::path(get, path = "/v1/clusters/{cluster}/backups", params(("cluster" = String, Path, description = "Cluster id or name"), ClusterPageQuery),
    responses((status = 200, body = [Backup], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page")))))]
pub(super) async fn list_backups(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ClusterPageQuery>,
) -> ApiResult<Paged<Backup>> {
    require(&caller, Action::ReadClusters)?;
    let page = Page::new(q.limit, q.cursor.as_deref())?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let rows = state.store.backups_of(&c.id).await.map_err(store_err("backups"))?;
    Ok(page.apply(rows.iter().map(backup_view), backup_key))
}

/// The backup ledger of a cluster by id or name, live or deleted (a deleted cluster's
/// backups stay until their retention ends, and restores start from them).
#[utoipa::path(get, path = "/v1/backups", params(LedgerQuery),
    responses((status = 200, body = [Backup], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))),
        (status = 404, body = ErrorBody, description = "No cluster, live or deleted, of that id or name")))]
pub(super) async fn list_ledger(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> ApiResult<Paged<Backup>> {
    require(&caller, Action::ReadClusters)?;
    let page = Page::new(q.limit, q.cursor.as_deref())?;
    let rows = ledger(&state, &caller, q.project.as_deref(), &q.cluster).await?;
    Ok(page.apply(rows.iter().map(backup_view), backup_key))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct LedgerQuery {
    /// The cluster (id or name; also a deleted one).
    cluster: String,
    /// Project name (`default` when omitted).
    project: Option<String>,
    /// Items per page, 1–1000 (100 when omitted).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the previous page ended (its `x-next-cursor` header).
    #[param(max_length = 300)]
    cursor: Option<String>,
}

fn backup_key(b: &Backup) -> String {
    format!("{:020}{}", b.created_at, b.id)
}

/// Take a base backup now. Answers at once; the backup is `pending` until the primary
/// has stored it (poll the list).
#[utoipa::path(post, path = "/v1/clusters/{cluster}/backups", params(("cluster" = String, Path, description = "Cluster id or name"), ProjectQuery),
    responses((status = 202, body = Backup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_backup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let b = durability::new_backup(&c, "manual");
    state.store.insert_backup(&b).await.map_err(store_err("backup"))?;
    state.notify();
    tracing::info!(cluster = %c.id, backup = %b.id, "backup requested");
    Ok((StatusCode::ACCEPTED, Json(backup_view(&b))))
}

/// Read a complete backup of a live cluster back — every part, and the WAL from its start
/// on — and check every checksum. A failure names the object.
#[utoipa::path(post, path = "/v1/clusters/{cluster}/backups/{id}/verify",
    params(("cluster" = String, Path, description = "Cluster id or name"), ("id" = String, Path, description = "Backup id"), ProjectQuery),
    responses((status = 200, body = BackupVerification)))]
pub(super) async fn verify_backup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((cluster, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<BackupVerification>> {
    // It reads the whole backup back: work a viewer may not start.
    require(&caller, Action::WriteClusters)?;
    let c = find_cluster(&state, &caller, q.project.as_deref(), &cluster).await?;
    let rows = state.store.backups_of(&c.id).await.map_err(store_err("backups"))?;
    let b = rows
        .into_iter()
        .find(|b| b.id == id && b.status == "complete")
        .ok_or_else(|| ApiError::not_found("complete backup"))?;
    verify(&state, &b).await
}

/// Read any complete backup of the org back (also of a deleted cluster) and check every
/// checksum.
#[utoipa::path(post, path = "/v1/backups/{id}/verify", params(("id" = String, Path, description = "Backup id")),
    responses((status = 200, body = BackupVerification)))]
pub(super) async fn verify_any_backup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<BackupVerification>> {
    require(&caller, Action::WriteClusters)?;
    let b = match state.store.backup(&caller.org_id, &id).await {
        Ok(b) if b.status == "complete" && caller.project_id.as_ref().is_none_or(|p| p == &b.project_id) => b,
        Ok(_) | Err(StoreError::NotFound) => return Err(ApiError::not_found("complete backup")),
        Err(e) => return Err(store_err("backup")(e)),
    };
    verify(&state, &b).await
}

/// Reads the backup back from every store that should hold it (the cluster's cloud's and
/// the copy's): ok when at least one copy is whole and no copy is damaged. A second copy
/// the copier has not made yet (no manifest there) is reported as pending, not as damage.
async fn verify(state: &AppState, b: &BackupRow) -> ApiResult<Json<BackupVerification>> {
    // A deleted cluster may be gone from the store: then every store is looked in, and
    // only the ones holding the backup count.
    let stores = match state.store.cluster_by_id(&b.cluster_id).await {
        Ok(c) => Some(state.cfg.storage.stores_of(&c)),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(store_err("cluster")(e)),
    };
    let known = stores.is_some();
    let stores = stores.unwrap_or_else(|| state.cfg.storage.distinct());
    let (mut checked, mut errors, mut copies) = (0, Vec::new(), Vec::new());
    let manifest = format!("base/{}/manifest", b.id);
    for (i, (cloud, store)) in stores.into_iter().enumerate() {
        let repo = durability::repo_in(state, &b.org_id, &b.cluster_id, &store)
            .await
            .map_err(|e| ApiError::internal("open object storage", format!("{e:#}")))?;
        let res = repo.verify_base(&b.id).await;
        let absent = matches!(&res, Err(highrise_backup::Error::Missing { object }) if object.ends_with(&manifest));
        let pending = absent && known && i > 0;
        if absent && !known {
            continue;
        }
        copies.push(CopyVerification {
            cloud: cloud.clone(),
            ok: res.is_ok(),
            pending,
            checked_bytes: *res.as_ref().unwrap_or(&0),
            error: res.as_ref().err().map(|e| e.to_string()),
        });
        match res {
            Ok(n) => checked += n,
            Err(_) if pending => {}
            Err(e) => errors.push(format!("{cloud}'s copy: {e}")),
        }
    }
    if !copies.iter().any(|c| c.ok) && errors.is_empty() {
        errors.push("no copy holds the backup".into());
    }
    Ok(Json(BackupVerification {
        backup: b.id.clone(),
        ok: errors.is_empty(),
        checked_bytes: checked,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        copies,
    }))
}

/// Parses a restore target time as people paste it: RFC 3339 / ISO 8601 with `Z` or any
/// UTC offset, `T` or a space between date and time (`2026-11-26T12:00:00.5Z`,
/// `2026-11-26 13:00:00+01:00`), PostgreSQL's own output (`2026-11-26 12:00:00.123+00`),
/// or Unix seconds (fractions allowed). A time without an offset is refused: it would be
/// a guess.
fn parse_time(t: &str) -> ApiResult<jiff::Timestamp> {
    let bad = || {
        ApiError::invalid(
            "restore.time: use a time with its UTC offset (2026-11-26T12:00:00Z, \
             2026-11-26 13:00:00.5+01, as psql prints it) or Unix seconds",
        )
    };
    let t = t.trim();
    // Unix seconds: 1–10 digits, a fraction of up to 6 (as the API's schema says).
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str, max: usize| s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    if !whole.is_empty() && digits(whole, 10) && digits(frac, 6) && (frac.is_empty() != t.contains('.')) {
        let secs: i64 = whole.parse().map_err(|_| bad())?;
        let micros: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
        return jiff::Timestamp::from_microsecond(secs * 1_000_000 + micros).map_err(|_| bad());
    }
    // Any year RFC 3339 allows (a target before the cluster existed is refused later).
    t.parse().map_err(|_| bad())
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
        // PostgreSQL's own timestamptz form (it rejects `T`…`Z` in this setting).
        let pg = at.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
        (RestoreTarget::Time(at.as_second()), Some(pg), None)
    } else if let Some(l) = &r.lsn {
        let lsn =
            highrise_backup::parse_lsn(l).ok_or_else(|| ApiError::invalid("restore.lsn: use X/Y, e.g. 0/3000060"))?;
        (RestoreTarget::Lsn(lsn), None, Some(highrise_backup::fmt_lsn(lsn)))
    } else {
        (RestoreTarget::Latest, None, None)
    };
    if rows.is_empty() {
        return Err(ApiError::not_found(format!(
            "cluster {:?} (the restore's source)",
            r.from
        )));
    }
    let ledger = durability::entries(&rows);
    let chosen_id = match restore_base(&ledger, target) {
        Ok(b) => b.id.clone(),
        Err(NoBase::NoBackup) => {
            return Err(ApiError::conflict(format!(
                "cluster {:?} has no complete backup to restore from",
                r.from
            )))
        }
        Err(NoBase::BeforeCreation(at)) => {
            return Err(ApiError::conflict(format!(
                "cluster {:?} was created at {}, after the restore target",
                r.from,
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at as u64))
            )))
        }
        Err(NoBase::NoneBefore) => {
            let what = r.time.as_deref().or(r.lsn.as_deref()).unwrap_or_default();
            return Err(ApiError::conflict(format!(
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

/// Fills in what only the control plane can: each primary's storage (its host's cloud's
/// store, with its tenant's data key), a restoring primary's source, and the backup a new standby is seeded from.
pub(super) async fn fill_desired(state: &AppState, rows: Vec<DesiredRow>) -> ApiResult<Vec<InstanceSpec>> {
    let mut out = Vec::with_capacity(rows.len());
    for DesiredRow {
        restore_json,
        new_standby,
        cloud,
        mut spec,
    } in rows
    {
        let record = match restore_json {
            Some(json) => Some(
                serde_json::from_str::<RestoreRecord>(&json)
                    .map_err(|e| ApiError::internal("read restore record", e))?,
            ),
            None if new_standby => seed_record(state, &spec.cluster_id)
                .await
                .map_err(|e| ApiError::internal("choose a standby's seed", format!("{e:#}")))?,
            None => None,
        };
        let keyed = |e: anyhow::Error| ApiError::internal("tenant storage", format!("{e:#}"));
        let cluster = |id: String| async move { state.store.cluster_by_id(&id).await.map_err(store_err("cluster")) };
        let c = cluster(spec.cluster_id.clone()).await?;
        spec.storage = Some(durability::storage_spec(state, &c, &cloud).await.map_err(keyed)?);
        spec.tls = crate::member_tls::member_tls(state, &c.id)
            .await
            .map_err(|e| ApiError::internal("cluster certificate", format!("{e:#}")))?;
        if let Some(r) = record {
            // The source may be deleted and gone from the store; its objects stay (in the
            // same org) until retention drops them.
            let source = match r.source_cluster_id == c.id {
                true => Some(c.clone()),
                false => match state.store.cluster_by_id(&r.source_cluster_id).await {
                    Ok(s) => Some(s),
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(store_err("source cluster")(e)),
                },
            };
            let (storage, alternates) =
                durability::restore_spec(state, &c.org_id, &r.source_cluster_id, source.as_ref(), &r.backup_id)
                    .await
                    .map_err(keyed)?;
            spec.restore = Some(RestoreSpec {
                storage,
                alternates,
                backup_id: r.backup_id,
                target_time: r.target_time,
                target_lsn: r.target_lsn,
            });
        }
        out.push(spec);
    }
    Ok(out)
}

/// The record of a new standby's seed — the cluster's own newest backup, when the
/// planner finds the archive holds what it needs (see [`seed_base`]) — or `None` for a copy
/// of the primary.
///
/// [`seed_base`]: highrise_planner::backups::seed_base
async fn seed_record(state: &AppState, cluster_id: &str) -> anyhow::Result<Option<RestoreRecord>> {
    use highrise_planner::backups::{seed_base, ArchiveFacts};
    let members = state.store.instances_of_cluster(cluster_id).await?;
    let Some(primary) = members
        .iter()
        .find(|m| !m.deleting && m.role == "primary" && m.observed == "running")
    else {
        return Ok(None);
    };
    let facts = ArchiveFacts {
        archived_lsn: primary.archived_lsn.and_then(|l| u64::try_from(l).ok()),
        failing: primary.archive_error.is_some(),
        data_bytes: primary.storage.map(|s| s.data_bytes),
    };
    let ledger = durability::entries(&state.store.backups_of(cluster_id).await?);
    let Some(base) = seed_base(&ledger, &facts) else {
        return Ok(None);
    };
    Ok(Some(RestoreRecord {
        source_cluster_id: cluster_id.to_string(),
        backup_id: base.id.clone(),
        target_time: None,
        target_lsn: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn restore_times_are_read_as_people_paste_them() {
        let at = |secs: i64, millis: i64| jiff::Timestamp::from_millisecond(secs * 1000 + millis).unwrap();
        // 2026-12-01 20:20:00 UTC
        let base = 1_796_156_400;
        let table = [
            ("2026-12-01T20:20:00Z", at(base, 0)),
            ("2026-12-01T20:20:00.123Z", at(base, 123)),
            ("2026-12-01 20:20:00.123+00", at(base, 123)),
            ("2026-12-01 21:20:00+01", at(base, 0)),
            ("2026-12-01 21:20:00+01:00", at(base, 0)),
            ("2026-12-01T15:50:00-04:30", at(base, 0)),
            (" 2026-12-01t20:20:00z ", at(base, 0)),
            ("1796156400", at(base, 0)),
            ("1796156400.5", at(base, 500)),
            ("0", at(0, 0)),
            // Before 1970 is a time too (and then before any cluster).
            ("0003-10-08T18:01:25-20:29", at(-62_048_194_175, 0)),
        ];
        for (text, want) in table {
            assert_eq!(parse_time(text).ok(), Some(want), "{text}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-12-01 20:20:00",
            "2026-13-01T00:00:00Z",
            "-5",
            "1e5",
            "12345678901",
            "1.",
            "1.1234567",
            "nan",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
