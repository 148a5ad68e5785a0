//! The org's metered usage: hourly records per cluster, dimension and place (what the
//! agents' counters added, see `store::usage`), per hour or summed over a range.

use super::*;
use highrise_billing::meter::HOUR;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// One cluster: its name (a live one, in `project`) or its id (deleted ones too).
    cluster: Option<String>,
    project: Option<String>,
    /// From this Unix second on (the hour holding it; default: the start of this month,
    /// UTC).
    #[param(minimum = 0, maximum = 9_999_999_999_i64)]
    from: Option<i64>,
    /// Up to this Unix second (the end of the hour holding it; default: now). A range that
    /// ends before it starts holds nothing.
    #[param(minimum = 0, maximum = 9_999_999_999_i64)]
    to: Option<i64>,
    /// Per hour instead of summed over the range.
    hourly: Option<bool>,
}

/// The org's usage over a range of hours.
#[utoipa::path(get, path = "/v1/usage", params(UsageQuery),
    responses((status = 200, body = Usage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_usage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<Usage>> {
    require(&caller, Action::ReadUsage)?;
    for (name, t) in [("from", q.from), ("to", q.to)] {
        if t.is_some_and(|t| !(0..=MAX_SECONDS).contains(&t)) {
            return Err(ApiError::invalid(format!("{name}: Unix seconds, 0 to {MAX_SECONDS}")));
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let from = match q.from {
        Some(t) => t,
        None => {
            crate::billing::month_of(now)
                .map_err(|e| ApiError::internal("this month", format!("{e:#}")))?
                .0
        }
    };
    let (from, to) = (
        from.div_euclid(HOUR) * HOUR,
        q.to.unwrap_or(now).div_euclid(HOUR) * HOUR + HOUR,
    );
    let cluster_id = match &q.cluster {
        None => None,
        Some(c) => Some(cluster_id(&state, &caller, q.project.as_deref(), c).await?),
    };
    let rows = state
        .store
        .metered_usage(
            &caller.org_id,
            cluster_id.as_deref(),
            from,
            to,
            q.hourly.unwrap_or(false),
        )
        .await
        .map_err(store_err("usage"))?;
    let records = rows
        .into_iter()
        .map(|r| UsageRecord {
            cluster_id: r.cluster_id,
            cluster: r.cluster_name,
            dimension: r.dimension,
            cloud: r.cloud,
            region: r.region,
            hour: r.hour,
            quantity: u64::try_from(r.quantity).unwrap_or(0),
        })
        .collect();
    Ok(Json(Usage { from, to, records }))
}

/// The latest time a range may name (the API's schema says so too).
const MAX_SECONDS: i64 = 9_999_999_999;

/// A live cluster of the caller's org by name or id, or a deleted one by id (its usage
/// stays).
async fn cluster_id(state: &AppState, caller: &Caller, project: Option<&str>, cluster: &str) -> ApiResult<String> {
    match find_cluster(state, caller, project, cluster).await {
        Ok(c) => Ok(c.id),
        Err(e) if e.status == StatusCode::NOT_FOUND && caller.project_id.is_none() => {
            match state.store.has_usage(&caller.org_id, cluster).await {
                Ok(true) => Ok(cluster.to_string()),
                Ok(false) => Err(e),
                Err(e) => Err(store_err("usage")(e)),
            }
        }
        Err(e) => Err(e),
    }
}
