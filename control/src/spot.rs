//! Spot on the control plane's side: notices reported by agents, and the pools' view the
//! planner decides on (the land's pools and prices, with the record kept in the store).
//! The policy itself is `highrise_planner::spot`.

use crate::store::{self, StoreError};
use crate::AppState;
use highrise_api::SpotNotice;
use highrise_planner::{PoolView, SpotPolicy};
use highrise_provider::market::Pool;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// A notice an agent reported: recorded once per host (the first deadline counts), with
/// a preemption in the pool's record and an event on every cluster with a member there.
/// Returns whether it was new.
pub async fn record_notice(state: &AppState, host_id: &str, notice: &SpotNotice) -> Result<bool, StoreError> {
    let now = store::now();
    let host = state.store.get_host(host_id).await?;
    let pool = host.pool();
    let notice_secs = state
        .provider
        .pools()
        .into_iter()
        .find(|p| p.id.to_string() == pool)
        .map_or(30, |p| p.notice_secs);
    let deadline = notice.deadline.unwrap_or(now + notice_secs as i64);
    if !state.store.set_host_notice(host_id, deadline).await? {
        return Ok(false);
    }
    if !pool.is_empty() {
        state.store.add_pool_event(&pool, store::pools::PREEMPTED, now).await?;
    }
    let left = (deadline - now).max(0);
    tracing::warn!(host = %host_id, %pool, deadline, source = %notice.source, "spot notice");
    for cluster in state.store.clusters_on_host(host_id).await? {
        let message = format!(
            "host {host_id} ({pool}) has a spot notice ({}): it goes in {left} s",
            notice.source
        );
        state.store.add_event(&cluster, now, "spot_notice", &message).await?;
    }
    Ok(true)
}

/// Micro-dollars per hour, for the planner's integer comparisons.
pub fn micro_dollars(d: Decimal) -> u64 {
    (d * Decimal::from(1_000_000)).trunc().to_u64().unwrap_or(u64::MAX)
}

/// The planner's view of the land's pools: prices from the land, each pool's recent
/// preemptions and refused launches from the store.
pub async fn pools_view(
    pools: Vec<Pool>,
    store: &store::Store,
    now: i64,
    policy: &SpotPolicy,
) -> Result<Vec<PoolView>, StoreError> {
    let horizon = policy
        .volatile_window_secs
        .max(policy.stable_secs)
        .max(policy.no_capacity_backoff_secs);
    let events = store.pool_events_since(now - horizon).await?;
    Ok(pools
        .into_iter()
        .map(|p| {
            let id = p.id.to_string();
            let mine = events.iter().filter(|(pool, _, _)| *pool == id);
            PoolView {
                preemptions: mine
                    .clone()
                    .filter(|(_, k, _)| k == store::pools::PREEMPTED)
                    .map(|(_, _, at)| *at)
                    .collect(),
                last_no_capacity: mine
                    .filter(|(_, k, _)| k == store::pools::NO_CAPACITY)
                    .map(|(_, _, at)| *at)
                    .max(),
                cloud: p.id.cloud.clone(),
                region: p.id.region.clone(),
                zone: p.id.zone.clone(),
                spot_price: micro_dollars(p.spot_hour),
                id,
            }
        })
        .collect())
}
