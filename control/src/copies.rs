//! Second copies: each cluster's WAL and base backups kept in a second cloud's object store
//! besides its own cloud's, so that losing a whole cloud loses no backup.
//!
//! Objects are immutable and uniquely named (WAL chunks by position and term, backups by
//! id), so keeping copies is a union: every round lists the cluster's corner of every
//! store and copies what a store it belongs in lacks, sealed bytes as they are (the control
//! plane never opens them). That also carries a cluster's history along when it moves to
//! another cloud. A backup's manifest is copied last, once every other object of that
//! backup is in the target, so a copy never shows a backup it cannot restore. Retention
//! deletes from every store (see `durability`). The copy lag — bytes the second copy
//! lacked at the round's start — is kept with the cluster and raises an event when it
//! grows. A store whose cloud's API does not answer is left out of the round (it may hang
//! or fail every call): copies into it wait, and what only it holds is not copied out — so
//! the copy a restore after losing that cloud reads is what it had when the cloud went
//! unreachable, and the lag is not measured meanwhile.

use crate::durability::{repo_in, ObjectStore};
use crate::store::{now, ClusterRow};
use crate::AppState;
use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use highrise_backup::Repo;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

/// Copy lag that raises an event (and a quarter of it that ends one).
pub const COPY_LAG_EVENT_BYTES: i64 = 64 * 1024 * 1024;

/// How often the copier starts a round.
const ROUND: Duration = Duration::from_secs(1);

/// Objects copied at once.
const PARALLEL: usize = 8;

/// Keeps the copies until `shutdown`: a round a second, each cluster in turn.
pub async fn run(state: std::sync::Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    if state.cfg.storage.distinct().len() < 2 {
        return;
    }
    let mut lagging = HashSet::new();
    loop {
        let started = tokio::time::Instant::now();
        match state.store.live_clusters().await {
            Ok(clusters) => {
                for c in clusters {
                    if *shutdown.borrow() {
                        return;
                    }
                    if let Err(e) = copy_cluster(&state, &c, &mut lagging).await {
                        tracing::warn!(cluster = %c.id, "keep the backup copies: {e:#}");
                    }
                }
            }
            Err(e) => tracing::error!("copier: list clusters: {e:#}"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep_until(started + ROUND) => {}
        }
    }
}

/// Every object of the cluster's corner of a store, with its stored size.
pub(crate) async fn listing(repo: &Repo) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for dir in ["wal", "base"] {
        out.extend(repo.list(dir).await?);
    }
    Ok(out)
}

async fn copy_cluster(state: &AppState, c: &ClusterRow, lagging: &mut HashSet<String>) -> Result<()> {
    let _objects = state.objects_lock.lock().await;
    let targets = state.cfg.storage.stores_of(c);
    let unreachable = state.unreachable_clouds();
    let mut stores: Vec<(String, ObjectStore, Repo, BTreeMap<String, u64>)> = Vec::new();
    let mut all_listed = true;
    for (cloud, store) in state.cfg.storage.distinct() {
        if unreachable.contains(&cloud) {
            all_listed = false;
            continue;
        }
        let repo = repo_in(state, &c.org_id, &c.id, &store).await?;
        let objects = listing(&repo).await.with_context(|| format!("list {cloud}'s store"))?;
        stores.push((cloud, store, repo, objects));
    }
    let mut lag = 0i64;
    for (i, (target_cloud, target)) in targets.iter().enumerate() {
        let Some(t) = stores.iter().position(|(_, s, _, _)| s == target) else {
            continue;
        };
        // What the target lacks, and a store that has it.
        let mut missing: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for (s, (_, _, _, objects)) in stores.iter().enumerate() {
            for (name, size) in objects {
                if !stores[t].3.contains_key(name) {
                    missing.entry(name.clone()).or_insert((s, *size));
                }
            }
        }
        if i == 1 {
            lag = missing.values().map(|(_, size)| *size as i64).sum();
        }
        if missing.is_empty() {
            continue;
        }
        let is_manifest = |n: &str| n.starts_with("base/") && n.ends_with("/manifest");
        let copy = |names: Vec<(String, usize)>| {
            let stores = &stores;
            futures::stream::iter(names.into_iter().map(move |(name, s)| async move {
                stores[s]
                    .2
                    .copy_to(&stores[t].2, &name)
                    .await
                    .map(|_| name)
                    .map_err(anyhow::Error::from)
            }))
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<String>>()
        };
        let (manifests, rest): (Vec<_>, Vec<_>) = missing
            .iter()
            .map(|(n, (s, _))| (n.clone(), *s))
            .partition(|(n, _)| is_manifest(n));
        let copied: HashSet<String> = copy(rest)
            .await
            .with_context(|| format!("copy into {target_cloud}'s store"))?
            .into_iter()
            .collect();
        // A manifest only once its backup's every other object is in the target.
        let whole = |m: &str| {
            let dir = m.trim_end_matches("manifest");
            stores
                .iter()
                .flat_map(|(_, _, _, o)| o.keys())
                .filter(|n| n.starts_with(dir) && !is_manifest(n))
                .all(|n| stores[t].3.contains_key(n) || copied.contains(n))
        };
        let ready: Vec<(String, usize)> = manifests.into_iter().filter(|(m, _)| whole(m)).collect();
        copy(ready)
            .await
            .with_context(|| format!("copy manifests into {target_cloud}'s store"))?;
        tracing::debug!(cluster = %c.id, to = %target_cloud, objects = missing.len(), "copied");
    }
    if !all_listed {
        return Ok(());
    }
    let at = now();
    state.store.record_copy_lag(&c.id, lag, at).await?;
    if lag > COPY_LAG_EVENT_BYTES && lagging.insert(c.id.clone()) {
        let msg = format!(
            "the second copy of the WAL and backups is {} behind: a restore from it alone would miss that",
            bytesize::ByteSize(lag as u64)
        );
        state.store.add_event(&c.id, at, "copy_lagging", &msg).await?;
    } else if lag < COPY_LAG_EVENT_BYTES / 4 && lagging.remove(&c.id) {
        state
            .store
            .add_event(&c.id, at, "copy_caught_up", "the second copy caught up")
            .await?;
    }
    Ok(())
}
