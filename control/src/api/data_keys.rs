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

/// Retire the org's older data key generations: every object sealed under one is sealed
/// again under the newest, then the older generations are destroyed. Refused (409) while
/// a primary of the org's clusters does not yet report sealing with the newest, or a base
/// backup is running.
#[utoipa::path(post, path = "/v1/data-keys/retire",
    responses((status = 200, body = RetiredKeys), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn retire_data_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<RetiredKeys>> {
    caller.audit_target("data-keys".to_string());
    require(&caller, Action::WriteKeys)?;
    match crate::reseal::retire_older_keys(&state, &caller.org_id).await {
        Ok(r) => Ok(Json(r)),
        Err(crate::reseal::RetireError::NotYet(why)) => Err(ApiError::conflict(why)),
        Err(crate::reseal::RetireError::Other(e)) => Err(ApiError::internal("retire data keys", format!("{e:#}"))),
    }
}
