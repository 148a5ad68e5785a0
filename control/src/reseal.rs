//! Retiring an org's older data key generations, in the background: every object sealed
//! under one of them is sealed again under the newest (in every store, for every cluster
//! the org has or had whose objects remain), then the older generations are destroyed —
//! what a leaked old key could open is gone.
//!
//! `POST /v1/data-keys/retire` checks that it may start and records a `retire_data_keys`
//! operation; [`run`], beside the reconciler, carries each such operation out and reports
//! its progress (a step per cluster, then the keys' destruction), so a large org's
//! retirement outlives the request, and one cut short by a restart is taken up again
//! (re-sealing an object already under the newest key does nothing).
//!
//! Only when nothing can still seal under an older generation: every primary of the org's
//! clusters must report that its archiver seals with the newest (a host that has not heard
//! of the rotation — cut off, or down — would go on writing objects only a destroyed key
//! opens), and no base backup may be running (it seals with the key it started with).

use crate::store::OperationRow;
use crate::AppState;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The operations' kind.
pub(crate) const KIND: &str = "retire_data_keys";

/// Tries a retirement whose work failed (a store that did not answer) this many times
/// before failing its operation.
const ATTEMPTS: u32 = 5;

/// How long a retirement waits for what must come first (a primary still to report the
/// newest key — after a restart, say — or a base backup to finish) before it fails with
/// the reason.
const WAIT_READY_SECS: i64 = 600;

/// Why a retirement cannot happen now.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RetireError {
    #[error("{0}")]
    NotYet(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The org's newest data key generation and the older ones, once nothing seals under an
/// older one any more.
pub(crate) async fn ready(state: &AppState, org_id: &str) -> Result<(u32, Vec<u32>), RetireError> {
    let keys = state.keys.data_keys(&state.store, org_id).await?;
    let current = keys.first().map(|(g, _)| *g).context("an org without a data key")?;
    let older: Vec<u32> = keys.iter().skip(1).map(|(g, _)| *g).collect();
    if older.is_empty() {
        return Ok((current, older));
    }
    primaries_seal_with(state, org_id, current).await?;
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
    Ok((current, older))
}

/// Whether every primary of the org's clusters reports sealing with `current`.
async fn primaries_seal_with(state: &AppState, org_id: &str, current: u32) -> Result<(), RetireError> {
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
    Ok(())
}

/// Carries out the org's pending retirements, one at a time, until `shutdown`.
pub(crate) async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = state.changes.subscribe();
    let mut failures: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match state.store.running_operations(KIND).await {
            Ok(ops) => {
                for op in ops {
                    tokio::select! {
                        // Cut short: the operation stays running and is taken up again at the
                        // next start.
                        _ = shutdown.changed() => return,
                        done = carry_out(&state, &op) => {
                            let tries = failures.entry(op.id.clone()).or_default();
                            if let Err(e) = finish(&state, &op, done, tries).await {
                                tracing::error!(operation = %op.id, "record a key retirement's end: {e:#}");
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::error!("read pending key retirements: {e:#}"),
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Records how a retirement went: done with what it did, failed with why, or left running
/// to be tried again (work that failed fewer than [`ATTEMPTS`] times; a wait shorter than
/// [`WAIT_READY_SECS`] for what must come first).
async fn finish(state: &AppState, op: &OperationRow, done: Result<String, RetireError>, tries: &mut u32) -> Result<()> {
    let at = crate::store::now();
    match done {
        Ok(outcome) => {
            state.store.set_operation_outcome(&op.id, &outcome).await?;
            state.store.complete_operation(&op.id, None, at).await?;
        }
        Err(RetireError::NotYet(why)) if at - op.created_at < WAIT_READY_SECS => {
            progress(state, op, 1, 1, format!("waiting: {why}")).await;
        }
        Err(RetireError::NotYet(why)) => {
            let why = format!("waited {WAIT_READY_SECS} s: {why}");
            state.store.complete_operation(&op.id, Some(&why), at).await?;
        }
        Err(RetireError::Other(e)) => {
            *tries += 1;
            if *tries >= ATTEMPTS {
                tracing::error!(operation = %op.id, org = %op.org_id, "key retirement failed: {e:#}");
                state
                    .store
                    .complete_operation(&op.id, Some(&format!("{e:#}")), at)
                    .await?;
            } else {
                tracing::warn!(operation = %op.id, org = %op.org_id, tries = *tries, "key retirement failed, tried again: {e:#}");
            }
        }
    }
    Ok(())
}

/// Re-seals every object of the org under its newest data key and destroys the older
/// generations; returns what it did, for a person.
async fn carry_out(state: &AppState, op: &OperationRow) -> Result<String, RetireError> {
    let org_id = op.org_id.as_str();
    let (current, older) = ready(state, org_id).await?;
    if older.is_empty() {
        return Ok("only one data key generation: nothing to retire".into());
    }
    let clusters = state
        .store
        .org_cluster_ids(org_id)
        .await
        .context("list the org's clusters")?;
    let steps = u32::try_from(clusters.len() + 1).unwrap_or(u32::MAX);
    let (mut objects, mut resealed) = (0u64, 0u64);
    for (i, cluster) in clusters.iter().enumerate() {
        progress(
            state,
            op,
            u32::try_from(i + 1).unwrap_or(u32::MAX),
            steps,
            format!("re-sealing cluster {cluster}'s objects ({resealed} of {objects} so far)"),
        )
        .await;
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
    progress(state, op, steps, steps, "destroying the older generations".into()).await;
    // Checked again at the end: a primary that fell behind while the objects were
    // re-sealed (a new cluster's, one restarted on an old desired state) would write under
    // a key about to go. Base backups begun meanwhile seal with the newest.
    primaries_seal_with(state, org_id, current).await?;
    let dropped = state
        .store
        .delete_org_data_keys_before(org_id, i64::from(current))
        .await
        .context("destroy the older data keys")?;
    state.keys.forget(org_id);
    // Hosts drop the older keys with their next desired state.
    state.notify();
    tracing::info!(org = %org_id, ?older, objects, resealed, dropped, "older data keys retired");
    let gens: Vec<String> = older.iter().map(u32::to_string).collect();
    Ok(format!(
        "generation(s) {} retired: {resealed} of {objects} objects sealed again under generation {current}",
        gens.join(", ")
    ))
}

/// Reports the step a retirement is at (a failure to is logged: the work goes on).
async fn progress(state: &AppState, op: &OperationRow, step: u32, steps: u32, doing: String) {
    let p = highrise_planner::moves::Progress { step, steps, doing };
    let json = match serde_json::to_string(&p) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(operation = %op.id, "encode a retirement's progress: {e}");
            return;
        }
    };
    if let Err(e) = state
        .store
        .set_operation_progress(&op.id, &json, crate::store::now())
        .await
    {
        tracing::warn!(operation = %op.id, "record a retirement's progress: {e:#}");
    }
}
