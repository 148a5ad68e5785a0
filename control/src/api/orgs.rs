//! Orgs: a tenant's account and its quotas. Only the operator creates orgs and sets quotas.

use super::*;

#[utoipa::path(post, path = "/v1/orgs", request_body = CreateOrg,
    responses((status = 201, body = CreatedOrg), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_org(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateOrg>,
) -> ApiResult<(StatusCode, Json<CreatedOrg>)> {
    caller.audit_target(format!("orgs/{}", req.name));
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may create orgs"));
    }
    validate_name("org", &req.name)?;
    let org = store::OrgRow {
        id: auth::new_id("org"),
        name: req.name,
        operator: false,
        created_at: now(),
        cell: crate::cell_for_new_org(&state)
            .await
            .map_err(|e| ApiError::internal("choose a cell", format!("{e:#}")))?,
    };
    let (key, secret) = auth::make_key(&org.id, "admin", auth::KeyGrant::owner());
    state
        .store
        .create_org(&org, &auth::new_id("prj"), &key)
        .await
        .map_err(store_err("org"))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedOrg {
            org: Org {
                id: org.id,
                name: org.name,
                cell: org.cell,
                created_at: org.created_at,
            },
            api_key: CreatedApiKey {
                key: keys::key_view(&key, None),
                secret,
            },
        }),
    ))
}

/// Delete an org (operator only; not the operator's own): refused while it has clusters.
/// Its data keys are destroyed, so every object it left in object storage (backups of
/// deleted clusters kept for their retention) can no longer be opened by anyone; its keys
/// and sessions stop working.
#[utoipa::path(delete, path = "/v1/orgs/{org}", params(("org" = String, Path, description = "Org id or name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_org(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.audit_target(format!("orgs/{org}"));
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may delete orgs"));
    }
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    if o.operator {
        return Err(ApiError::conflict("the operator's org stays"));
    }
    state.store.delete_org(&o.id, now()).await.map_err(store_err("org"))?;
    state.keys.forget(&o.id);
    tracing::info!(org = %o.id, "org deleted: its data keys are destroyed");
    Ok(StatusCode::NO_CONTENT)
}

fn quotas_view(q: &crate::quota::Quotas) -> OrgQuotas {
    OrgQuotas {
        max_clusters: q.clusters,
        max_members_per_cluster: q.members_per_cluster,
        max_storage_bytes: q.storage_bytes,
        max_concurrent_operations: q.concurrent_operations,
    }
}

/// The caller's org's quotas and what it uses of them.
#[utoipa::path(get, path = "/v1/quotas",
    responses((status = 200, body = QuotaUsage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_quotas(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<QuotaUsage>> {
    require(&caller, Action::ReadProjects)?;
    let q = state.store.quotas(&caller.org_id).await.map_err(store_err("quotas"))?;
    let u = state.store.usage(&caller.org_id).await.map_err(store_err("usage"))?;
    Ok(Json(QuotaUsage {
        quotas: quotas_view(&q),
        clusters: u.clusters,
        running_operations: u.running_operations,
        storage_bytes: u.storage_bytes,
    }))
}

/// An org's quotas (operator only).
#[utoipa::path(get, path = "/v1/orgs/{org}/quotas", params(("org" = String, Path, description = "Org id or name")),
    responses((status = 200, body = OrgQuotas), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn org_quotas(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Json<OrgQuotas>> {
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may read another org's quotas"));
    }
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    let q = state.store.quotas(&o.id).await.map_err(store_err("quotas"))?;
    Ok(Json(quotas_view(&q)))
}

/// Set an org's quotas (operator only). What already exists stays; new requests must fit.
#[utoipa::path(put, path = "/v1/orgs/{org}/quotas", request_body = OrgQuotas,
    params(("org" = String, Path, description = "Org id or name")),
    responses((status = 200, body = OrgQuotas), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn set_quotas(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiJson(req): ApiJson<OrgQuotas>,
) -> ApiResult<Json<OrgQuotas>> {
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may set quotas"));
    }
    let q = crate::quota::Quotas {
        clusters: req.max_clusters,
        members_per_cluster: req.max_members_per_cluster,
        storage_bytes: req.max_storage_bytes,
        concurrent_operations: req.max_concurrent_operations,
    };
    if q.clusters < 0 || q.members_per_cluster < 1 || q.storage_bytes < 0 || q.concurrent_operations < 1 {
        return Err(ApiError::invalid(
            "quotas: clusters and storage at least 0, members per cluster and concurrent operations at least 1",
        ));
    }
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    state.store.set_quotas(&o.id, &q).await.map_err(store_err("quotas"))?;
    Ok(Json(quotas_view(&q)))
}
