//! Retiring an org's older data key generations: every object sealed under one of them is
//! sealed again under the newest (in every store, for every cluster the org has or had
//! whose objects remain), then the older generations are destroyed — what a leaked old key
//! could open is gone.
//!
//! Only when nothing can still seal under an older generation: every primary of the org's
//! clusters must report that its archiver seals with the newest (a host that has not heard
//! of the rotation — cut off, or down — would go on writing objects only a destroyed key
//! opens), and no base backup may be running (it seals with the key it started with).

use crate::AppState;
use anyhow::{Context, Result};
use highrise_api::RetiredKeys;

/// Why a retirement cannot happen now.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RetireError {
    #[error("{0}")]
    NotYet(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Re-seals every object of the org under its newest data key and destroys the older
/// generations.
pub(crate) async fn retire_older_keys(state: &AppState, org_id: &str) -> Result<RetiredKeys, RetireError> {
    let keys = state.keys.data_keys(&state.store, org_id).await?;
    let current = keys.first().map(|(g, _)| *g).context("an org without a data key")?;
    let older: Vec<u32> = keys.iter().skip(1).map(|(g, _)| *g).collect();
    if older.is_empty() {
        return Ok(RetiredKeys {
            retired: Vec::new(),
            objects: 0,
            resealed: 0,
        });
    }
    let sealing = state
        .store
        .org_primaries_sealing(org_id)
        .await
        .context("read what the org's primaries seal with")?;
    for p in &sealing {
        if p.generation != Some(i64::from(current)) {
            return Err(RetireError::NotYet(format!(
                "the primary of cluster {} (host {}) does not yet report sealing with generation {current}{}; retry once it does",
                p.cluster_id,
                p.host_id,
                if p.running { "" } else { " (it is not running)" }
            )));
        }
    }
    if let Some(b) = state
        .store
        .org_backup_running(org_id)
        .await
        .context("look for running base backups")?
    {
        return Err(RetireError::NotYet(format!(
            "base backup {b} is running (it seals with the key it started with); retry when it has finished"
        )));
    }
    let clusters = state
        .store
        .org_cluster_ids(org_id)
        .await
        .context("list the org's clusters")?;
    let (mut objects, mut resealed) = (0u64, 0u64);
    for cluster in &clusters {
        // Not while a copy or retention's deletes run: a re-sealed object must not bring
        // back one retention is deleting.
        let _objects = state.objects_lock.lock().await;
        for (cloud, store) in state.cfg.storage.distinct() {
            let repo = crate::durability::repo_in(state, org_id, cluster, &store).await?;
            let listed = repo
                .list("")
                .await
                .with_context(|| format!("list cluster {cluster}'s objects in {cloud}'s store"))?;
            // A backup's parts go with its manifest, which records their checksums.
            let mut with_manifest = Vec::new();
            for (rel, _) in &listed {
                if let Some(id) = rel.strip_prefix("base/").and_then(|r| r.strip_suffix("/manifest")) {
                    resealed += repo
                        .reseal_backup(id)
                        .await
                        .with_context(|| format!("re-seal backup {id} of {cluster} in {cloud}'s store"))?;
                    with_manifest.push(format!("base/{id}/"));
                }
            }
            for (rel, _) in listed {
                objects += 1;
                if with_manifest.iter().any(|b| rel.starts_with(b.as_str())) {
                    continue;
                }
                if repo
                    .reseal(&rel)
                    .await
                    .with_context(|| format!("re-seal {cluster}/{rel} in {cloud}'s store"))?
                    .is_some()
                {
                    resealed += 1;
                }
            }
        }
    }
    let dropped = state
        .store
        .delete_org_data_keys_before(org_id, i64::from(current))
        .await
        .context("destroy the older data keys")?;
    state.keys.forget(org_id);
    // Hosts drop the older keys with their next desired state.
    state.notify();
    tracing::info!(org = %org_id, ?older, objects, resealed, dropped, "older data keys retired");
    Ok(RetiredKeys {
        retired: older,
        objects,
        resealed,
    })
}
