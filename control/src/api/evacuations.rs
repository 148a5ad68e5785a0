//! Evacuations of a cloud (operators): every cluster moved off it, a few at a time, with a
//! view of the whole fleet's progress; paused and resumed at will.

use super::*;
use crate::store::{EvacuationClusterRow, EvacuationRow};
use highrise_api::{EvacuateCloud, Evacuation, EvacuationCluster, EvacuationCounts, EvacuationState, EvacuationStatus};

fn operator(caller: &Caller) -> ApiResult<()> {
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may evacuate a cloud"));
    }
    Ok(())
}

/// Begin moving every cluster off `cloud` (operator keys only): each by `cluster move`'s
/// replace-then-switchover, at most `concurrency` at once, oldest first.
#[utoipa::path(post, path = "/v1/clouds/{cloud}/evacuate", request_body = EvacuateCloud,
    params(("cloud" = String, Path, description = "The cloud to empty")),
    responses((status = 202, body = Evacuation), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn evacuate_cloud(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(cloud): ApiPath<String>,
    ApiJson(req): ApiJson<EvacuateCloud>,
) -> ApiResult<(StatusCode, Json<Evacuation>)> {
    operator(&caller)?;
    let clouds = state.provider.clouds();
    if !clouds.iter().any(|c| c.name == cloud) {
        let shown: String = cloud.chars().take(63).collect();
        return Err(ApiError::not_found(format!("cloud {shown:?}")));
    }
    if let Some(to) = &req.to {
        if !clouds.iter().any(|c| &c.name == to) {
            let shown: String = to.chars().take(63).collect();
            return Err(ApiError::not_found(format!("cloud {shown:?}")));
        }
        if to == &cloud {
            return Err(ApiError::invalid("to is the cloud being evacuated"));
        }
    }
    let concurrency = match req.concurrency.unwrap_or(2) {
        n @ 1..=16 => i64::from(n),
        _ => return Err(ApiError::invalid("concurrency is between 1 and 16")),
    };
    let at = now();
    let e = EvacuationRow {
        id: auth::new_id("ev"),
        cloud,
        to_cloud: req.to.clone(),
        concurrency,
        status: "running".into(),
        created_by: caller.actor.clone(),
        created_at: at,
        updated_at: at,
    };
    state
        .store
        .create_evacuation(&e)
        .await
        .map_err(store_err("evacuation"))?;
    state.notify();
    tracing::info!(evacuation = %e.id, cloud = %e.cloud, to = ?e.to_cloud, concurrency, "evacuation begun");
    Ok((StatusCode::ACCEPTED, Json(view(&state, &e.id).await?)))
}

/// An evacuation and where each of its clusters stands.
#[utoipa::path(get, path = "/v1/evacuations/{evacuation}",
    params(("evacuation" = String, Path, description = "Evacuation id")),
    responses((status = 200, body = Evacuation), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_evacuation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Evacuation>> {
    operator(&caller)?;
    Ok(Json(view(&state, &id).await?))
}

/// Pause an evacuation: no new move starts; running ones finish.
#[utoipa::path(post, path = "/v1/evacuations/{evacuation}/pause",
    params(("evacuation" = String, Path, description = "Evacuation id")),
    responses((status = 200, body = Evacuation), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn pause_evacuation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Evacuation>> {
    set_paused(&state, &caller, &id, true).await
}

/// Resume a paused evacuation.
#[utoipa::path(post, path = "/v1/evacuations/{evacuation}/resume",
    params(("evacuation" = String, Path, description = "Evacuation id")),
    responses((status = 200, body = Evacuation), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn resume_evacuation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Evacuation>> {
    set_paused(&state, &caller, &id, false).await
}

async fn set_paused(state: &Arc<AppState>, caller: &Caller, id: &str, paused: bool) -> ApiResult<Json<Evacuation>> {
    operator(caller)?;
    let e = state.store.get_evacuation(id).await.map_err(store_err("evacuation"))?;
    if e.status == "finished" {
        return Err(ApiError::conflict("the evacuation is finished"));
    }
    state
        .store
        .set_evacuation_paused(id, paused, now())
        .await
        .map_err(store_err("evacuation"))?;
    state.notify();
    tracing::info!(evacuation = %id, paused, "evacuation paused or resumed");
    Ok(Json(view(state, id).await?))
}

async fn view(state: &AppState, id: &str) -> ApiResult<Evacuation> {
    let e = state.store.get_evacuation(id).await.map_err(store_err("evacuation"))?;
    let rows = state
        .store
        .evacuation_clusters(id)
        .await
        .map_err(store_err("evacuation clusters"))?;
    let mut counts = EvacuationCounts::default();
    let clusters: Vec<EvacuationCluster> = rows
        .into_iter()
        .map(|r: EvacuationClusterRow| {
            let state = match r.state.as_str() {
                "waiting" => EvacuationState::Waiting,
                "moving" => EvacuationState::Moving,
                "moved" => EvacuationState::Moved,
                "failed" => EvacuationState::Failed,
                _ => EvacuationState::Staying,
            };
            *match state {
                EvacuationState::Waiting => &mut counts.waiting,
                EvacuationState::Moving => &mut counts.moving,
                EvacuationState::Moved => &mut counts.moved,
                EvacuationState::Failed => &mut counts.failed,
                EvacuationState::Staying => &mut counts.staying,
            } += 1;
            EvacuationCluster {
                cluster_id: r.cluster_id,
                name: r.name,
                org_id: r.org_id,
                state,
                why: r.why,
                operation_id: r.operation_id,
            }
        })
        .collect();
    Ok(Evacuation {
        status: match e.status.as_str() {
            "paused" => EvacuationStatus::Paused,
            "finished" => EvacuationStatus::Finished,
            _ => EvacuationStatus::Running,
        },
        id: e.id,
        cloud: e.cloud,
        to: e.to_cloud,
        concurrency: u32::try_from(e.concurrency).unwrap_or(1),
        created_at: e.created_at,
        updated_at: e.updated_at,
        counts,
        clusters,
    })
}
