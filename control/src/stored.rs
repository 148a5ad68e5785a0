//! Object storage metering: what each cluster keeps in each cloud's object store — its WAL
//! and base backups, the second copy too — measured by listing the cluster's corner of
//! every store every [`ControlConfig::storage_meter_every`](crate::ControlConfig), and
//! taken into usage as MiB-milliseconds (`object_storage_mib_ms`), the size measured
//! holding until the next measurement (`Store::record_stored`).
//!
//! Every cluster with a row is measured, deleted ones too: their backups are kept for their
//! retention, and the org pays for them until they go. A store whose cloud's API does not
//! answer is skipped: its clusters' last sizes count on until it is measured again (the
//! next measurement takes the whole gap at the size before it).

use crate::durability::repo_in;
use crate::store::Stored;
use crate::AppState;
use anyhow::{Context, Result};
use std::sync::Arc;
use tokio::sync::watch;

/// Measures every cluster's objects until `shutdown`.
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let started = tokio::time::Instant::now();
        if let Err(e) = round(&state).await {
            tracing::error!("measure object storage: {e:#}");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep_until(started + state.cfg.storage_meter_every) => {}
        }
    }
}

/// One measurement of every cluster in every store it can reach.
async fn round(state: &AppState) -> Result<()> {
    let clusters = state.store.metered_clusters().await.context("list clusters")?;
    let clouds = state.provider.clouds();
    let unreachable = state.unreachable_clouds();
    for (cloud, store) in state.cfg.storage.distinct() {
        if unreachable.contains(&cloud) {
            continue;
        }
        for c in &clusters {
            // The store's region: the cluster's own in its cloud, else the cloud's first.
            let region = if c.cloud == cloud {
                c.region.clone()
            } else {
                clouds
                    .iter()
                    .find(|k| k.name == cloud)
                    .and_then(|k| k.regions.first())
                    .map(|r| r.name.clone())
                    .unwrap_or_else(|| c.region.clone())
            };
            let measured = async {
                let repo = repo_in(state, &c.org_id, &c.cluster_id, &store).await?;
                let objects = crate::copies::listing(&repo).await?;
                anyhow::Ok(objects.values().sum::<u64>())
            };
            let bytes = match measured.await {
                Ok(b) => b,
                Err(e) => {
                    // One cluster's failure (its org's keys gone, a listing cut off) does
                    // not hold up the others'; its last size counts on meanwhile.
                    tracing::warn!(cluster = %c.cluster_id, store = %cloud, "measure the cluster's objects: {e:#}");
                    continue;
                }
            };
            let s = Stored {
                org_id: &c.org_id,
                cluster_id: &c.cluster_id,
                cluster_name: &c.name,
                cloud: &cloud,
                region: &region,
                bytes,
                at_ms: crate::store::now_ms(),
            };
            state
                .store
                .record_stored(&s)
                .await
                .with_context(|| format!("record the objects of {}", c.cluster_id))?;
        }
    }
    Ok(())
}
