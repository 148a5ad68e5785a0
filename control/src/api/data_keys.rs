//! The org's data keys: their generations, rotation (a new generation seals from now on;
//! the older ones still open what they sealed) and retirement of the older ones.

use super::*;

fn views(keys: &[crate::store::DataKeyRow]) -> ApiResult<Vec<DataKeyInfo>> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            Ok(DataKeyInfo {
                generation: u32::try_from(k.generation)
                    .map_err(|e| ApiError::internal("read a data key generation", e))?,
                current: i == 0,
                created_at: k.created_at,
            })
        })
        .collect()
}

/// The generations of the org's data key, newest first.
#[utoipa::path(get, path = "/v1/data-keys",
    responses((status = 200, body = [DataKeyInfo]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_data_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<DataKeyInfo>>> {
    require(&caller, Action::ReadKeys)?;
    let keys = state
        .store
        .org_data_keys(&caller.org_id)
        .await
        .map_err(store_err("data keys"))?;
    Ok(Json(views(&keys)?))
}

/// Rotate the org's data key: a new generation seals every object written from now on
/// (the hosts take it up within seconds); objects sealed before still open with theirs.
#[utoipa::path(post, path = "/v1/data-keys/rotate",
    responses((status = 201, body = DataKeyInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn rotate_data_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<DataKeyInfo>)> {
    caller.audit_target("data-keys".to_string());
    require(&caller, Action::WriteKeys)?;
    let generation =
        state
            .keys
            .rotate(&state.store, &caller.org_id)
            .await
            .map_err(|e| match e.downcast::<StoreError>() {
                Ok(e) => store_err("data key")(e),
                Err(e) => ApiError::internal("rotate a data key", format!("{e:#}")),
            })?;
    tracing::info!(org = %caller.org_id, generation, "data key rotated");
    // Hosts take the new key with their desired state.
    state.notify();
    Ok((
        StatusCode::CREATED,
        Json(DataKeyInfo {
            generation,
            current: true,
            created_at: now(),
        }),
    ))
}

/// Retire the org's older data key generations, in the background: a `retire_data_keys`
/// operation seals every object sealed under one of them again under the newest, then
/// destroys them; its progress is a step per cluster, its outcome says what it did.
/// Refused (409) while a primary of the org's clusters does not yet report sealing with
/// the newest, a base backup is running, or a retirement runs already.
#[utoipa::path(post, path = "/v1/data-keys/retire",
    responses((status = 202, body = Operation), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn retire_data_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    caller.audit_target("data-keys".to_string());
    require(&caller, Action::WriteKeys)?;
    match crate::reseal::ready(&state, &caller.org_id).await {
        Ok(_) => {}
        Err(crate::reseal::RetireError::NotYet(why)) => return Err(ApiError::conflict(why)),
        Err(crate::reseal::RetireError::Other(e)) => {
            return Err(ApiError::internal("check the data keys", format!("{e:#}")))
        }
    }
    let created = now();
    let op = OperationRow {
        id: auth::new_id("op"),
        org_id: caller.org_id.clone(),
        cluster_id: None,
        kind: crate::reseal::KIND.into(),
        status: "running".into(),
        error: None,
        created_at: created,
        updated_at: created,
        progress_json: None,
        outcome: None,
    };
    if let Some(running) = state
        .store
        .begin_org_operation(&op)
        .await
        .map_err(store_err("operation"))?
    {
        return Err(ApiError::conflict(format!(
            "a retirement of the org's older data keys is running ({running})"
        )));
    }
    tracing::info!(org = %caller.org_id, operation = %op.id, "older data keys to be retired");
    // The retirer (beside the reconciler) takes it up now.
    state.notify();
    Ok((StatusCode::ACCEPTED, Json(operation_view(&op))))
}
