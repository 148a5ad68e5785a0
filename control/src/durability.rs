//! Durability in object storage, as the control plane sees it: tenant data keys (envelope
//! encryption under the master key), where each cluster's objects live, and the scheduler
//! that requests base backups, applies retention and watches archiving lag.
//!
//! The objects themselves are written by agents (WAL, base backups); the control plane
//! opens a cluster's corner of the store only to verify backups and to delete what
//! retention lets go.

use crate::store::{now, BackupRow, ClusterRow, Store};
use crate::AppState;
use anyhow::{Context, Result};
use highrise_api::StorageSpec;
use highrise_backup::{Key, Location, Repo};
use highrise_planner::backups::{backup_due, retention, BackupEntry};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// One object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStore {
    /// `file:///dir`, `s3://bucket`, `az://container`.
    pub url: String,
    /// Client options (`aws_endpoint`, `aws_access_key_id`, `azure_storage_use_emulator`, …).
    pub options: BTreeMap<String, String>,
}

/// Where clusters' objects go: a store per cloud of the land, in the land's order. A
/// cluster keeps its objects in its cloud's store and, with two copies, in the next cloud's
/// (see [`StorageConfig::stores_of`]); clouds may share one store (then there is no second
/// copy to keep).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// At least one.
    clouds: Vec<(String, ObjectStore)>,
}

impl StorageConfig {
    /// A store per cloud, in the land's order.
    pub fn new(clouds: Vec<(String, ObjectStore)>) -> Result<Self> {
        anyhow::ensure!(!clouds.is_empty(), "object storage: no cloud has a store");
        Ok(Self { clouds })
    }

    /// The store of `cloud` (the first cloud's for a cloud the land does not name).
    pub fn of(&self, cloud: &str) -> &ObjectStore {
        let (_, first) = &self.clouds[0];
        self.clouds.iter().find(|(c, _)| c == cloud).map_or(first, |(_, s)| s)
    }

    /// The cloud that keeps the second copy of a cluster in `cloud` with `copies`: the next
    /// cloud of the land with a store of its own.
    pub fn copy_cloud(&self, cloud: &str, copies: i64) -> Option<String> {
        if copies < 2 {
            return None;
        }
        let home = self.of(cloud);
        let at = self.clouds.iter().position(|(c, _)| c == cloud).unwrap_or(0);
        let n = self.clouds.len();
        (1..n)
            .map(|i| &self.clouds[(at + i) % n])
            .find(|(_, s)| s != home)
            .map(|(c, _)| c.clone())
    }

    /// The stores a cluster's objects belong in: its cloud's, then the copy's.
    pub fn stores_of(&self, c: &ClusterRow) -> Vec<(String, ObjectStore)> {
        let mut out = vec![(c.cloud.clone(), self.of(&c.cloud).clone())];
        if let Some(copy) = self.copy_cloud(&c.cloud, c.backup_copies) {
            out.push((copy.clone(), self.of(&copy).clone()));
        }
        out
    }

    /// Every distinct store, each with the first cloud that uses it.
    pub fn distinct(&self) -> Vec<(String, ObjectStore)> {
        let mut out: Vec<(String, ObjectStore)> = Vec::new();
        for (c, s) in &self.clouds {
            if !out.iter().any(|(_, o)| o == s) {
                out.push((c.clone(), s.clone()));
            }
        }
        out
    }
}

/// Archiving lag (bytes of WAL not yet in object storage) that raises an event.
pub const ARCHIVE_LAG_EVENT_BYTES: i64 = 16 * 1024 * 1024;

/// Tenant data keys, unwrapped on first use and cached: each org's generations, newest
/// first.
pub struct Keyring {
    master: Key,
    cache: Mutex<HashMap<String, Vec<(u32, Key)>>>,
}

impl Keyring {
    pub fn new(master_hex: &str) -> Result<Self> {
        Ok(Self {
            master: Key::from_hex(master_hex).context("read the master key")?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The org's data keys, newest first: generation 1 is made (and stored wrapped) the
    /// first time one is needed. A deleted org has none (its keys were destroyed).
    pub async fn data_keys(&self, store: &Store, org_id: &str) -> Result<Vec<(u32, Key)>> {
        if let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(org_id) {
            return Ok(k.clone());
        }
        let fresh = Key::generate().context("generate a data key")?;
        let wrapped_fresh = self.master.wrap(&fresh, org_id).context("wrap a data key")?;
        let rows = store
            .org_data_keys_or_init(org_id, || wrapped_fresh)
            .await
            .with_context(|| format!("load the data keys of org {org_id} (a deleted org has none)"))?;
        let mut keys = Vec::with_capacity(rows.len());
        for r in rows {
            let generation = u32::try_from(r.generation).context("a data key generation out of range")?;
            let key = self
                .master
                .unwrap_key(&r.wrapped, org_id)
                .context("unwrap the org's data key (is this the master key it was made with?)")?;
            keys.push((generation, key));
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(org_id.to_string(), keys.clone());
        Ok(keys)
    }

    /// The org's keys as a [`highrise_backup::Keyring`] (the newest seals).
    pub async fn keyring(&self, store: &Store, org_id: &str) -> Result<highrise_backup::Keyring> {
        Ok(highrise_backup::Keyring::new(self.data_keys(store, org_id).await?)?)
    }

    /// Adds a new generation of the org's data key, which seals from now on; returns it.
    pub async fn rotate(&self, store: &Store, org_id: &str) -> Result<u32> {
        let newest = self.data_keys(store, org_id).await?.first().map_or(0, |(g, _)| *g);
        let generation = newest.checked_add(1).context("no data key generation left")?;
        let fresh = Key::generate().context("generate a data key")?;
        let wrapped = self.master.wrap(&fresh, org_id).context("wrap a data key")?;
        self.forget(org_id);
        store.add_org_data_key(org_id, i64::from(generation), &wrapped).await?;
        self.forget(org_id);
        Ok(generation)
    }

    /// Seals a secret of the control plane's own (a cluster's TLS key) under the master
    /// key, bound to `name`; hex.
    pub fn seal_secret(&self, name: &str, plain: &[u8]) -> Result<String> {
        Ok(hex::encode(
            self.master.seal(name, plain, false).context("seal a secret")?,
        ))
    }

    /// Opens what [`Keyring::seal_secret`] sealed under `name`.
    pub fn open_secret(&self, name: &str, sealed_hex: &str) -> Result<Vec<u8>> {
        let sealed = hex::decode(sealed_hex).context("a sealed secret is not hex")?;
        self.master
            .open(name, &sealed)
            .context("open a sealed secret (is this the master key it was sealed with?)")
    }

    /// Drops the org's cached keys (after a rotation or the org's deletion).
    pub fn forget(&self, org_id: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(org_id);
    }
}

/// A storage spec's keys as a keyring.
pub fn spec_keyring(s: &StorageSpec) -> Result<highrise_backup::Keyring> {
    let mut keys = vec![(s.data_key_generation, Key::from_hex(&s.data_key)?)];
    for k in &s.older_data_keys {
        keys.push((k.generation, Key::from_hex(&k.key)?));
    }
    Ok(highrise_backup::Keyring::new(keys)?)
}

pub fn prefix(org_id: &str, cluster_id: &str) -> String {
    format!("{org_id}/{cluster_id}")
}

/// The store a cluster's member in `cloud` archives to when it is the primary: its own
/// cloud's. During a move the old primary keeps archiving where it is until the switchover
/// (the copier carries its objects to the cluster's new cloud); from then the new primary
/// archives in the new cloud.
pub(crate) async fn storage_spec(state: &AppState, c: &ClusterRow, cloud: &str) -> Result<StorageSpec> {
    spec_in(state, &c.org_id, &c.id, state.cfg.storage.of(cloud)).await
}

async fn spec_in(state: &AppState, org_id: &str, cluster_id: &str, store: &ObjectStore) -> Result<StorageSpec> {
    let keys = state.keys.data_keys(&state.store, org_id).await?;
    let ((generation, newest), older) = keys.split_first().context("an org without a data key")?;
    Ok(StorageSpec {
        url: store.url.clone(),
        options: store.options.clone(),
        prefix: prefix(org_id, cluster_id),
        data_key: newest.to_hex(),
        data_key_generation: *generation,
        older_data_keys: older
            .iter()
            .map(|(generation, key)| highrise_api::DataKey {
                generation: *generation,
                key: key.to_hex(),
            })
            .collect(),
    })
}

/// The stores to restore backup `backup_id` of cluster `cluster_id` (`source`, unless it
/// is deleted and gone) from: the first of its stores (its cloud's, the copy's, then any
/// other) that holds the backup's manifest — so a restore works from the copy when the
/// cluster's own cloud is gone — and the stores after it, which the agent reads when
/// that one fails half-way (a damaged object).
pub(crate) async fn restore_spec(
    state: &AppState,
    org_id: &str,
    cluster_id: &str,
    source: Option<&ClusterRow>,
    backup_id: &str,
) -> Result<(StorageSpec, Vec<StorageSpec>)> {
    let mut candidates = source.map(|c| state.cfg.storage.stores_of(c)).unwrap_or_default();
    for d in state.cfg.storage.distinct() {
        if !candidates.iter().any(|(_, s)| s == &d.1) {
            candidates.push(d);
        }
    }
    // A store whose cloud's API does not answer is tried last (it may not answer either).
    {
        let unreachable = state.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        candidates.sort_by_key(|(cloud, _)| unreachable.contains_key(cloud));
    }
    let mut why = Vec::new();
    for (n, (cloud, store)) in candidates.iter().enumerate() {
        let spec = spec_in(state, org_id, cluster_id, store).await?;
        let repo = highrise_backup::Repo::open(&location(&spec), spec_keyring(&spec)?)?;
        match repo.manifest(backup_id).await {
            Ok(_) => {
                let mut alternates = Vec::new();
                for (_, other) in &candidates[n + 1..] {
                    alternates.push(spec_in(state, org_id, cluster_id, other).await?);
                }
                return Ok((spec, alternates));
            }
            Err(e) => why.push(format!("{cloud}: {e}")),
        }
    }
    anyhow::bail!("no object store holds backup {backup_id} ({})", why.join("; "))
}

fn location(s: &StorageSpec) -> Location {
    Location {
        url: s.url.clone(),
        options: s.options.clone(),
        prefix: s.prefix.clone(),
    }
}

/// A cluster's corner of one store.
pub(crate) async fn repo_in(state: &AppState, org_id: &str, cluster_id: &str, store: &ObjectStore) -> Result<Repo> {
    let key = state.keys.keyring(&state.store, org_id).await?;
    let loc = Location {
        url: store.url.clone(),
        options: store.options.clone(),
        prefix: prefix(org_id, cluster_id),
    };
    Ok(Repo::open(&loc, key)?)
}

/// What a restored cluster's first primary starts from (kept with the cluster until it
/// runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub source_cluster_id: String,
    pub backup_id: String,
    pub target_time: Option<String>,
    pub target_lsn: Option<String>,
}

pub(crate) fn entries(rows: &[BackupRow]) -> Vec<BackupEntry> {
    rows.iter()
        .map(|b| BackupEntry {
            id: b.id.clone(),
            status: b.status.clone(),
            created_at: b.created_at,
            finished_at: b.finished_at,
            timeline: b.timeline.and_then(|t| u32::try_from(t).ok()).unwrap_or(1),
            start_lsn: b.start_lsn.map_or(0, |l| l as u64),
            end_lsn: b.end_lsn.map(|l| l as u64),
            since: b.since,
        })
        .collect()
}

pub fn new_backup(c: &ClusterRow, kind: &str) -> BackupRow {
    BackupRow {
        id: format!("bk-{}-{}", now(), crate::auth::random_name(6)),
        cluster_id: c.id.clone(),
        org_id: c.org_id.clone(),
        project_id: c.project_id.clone(),
        cluster_name: c.name.clone(),
        db_name: c.db_name.clone(),
        kind: kind.into(),
        status: "pending".into(),
        created_at: now(),
        finished_at: None,
        timeline: None,
        start_lsn: None,
        end_lsn: None,
        size_bytes: None,
        stored_bytes: None,
        error: None,
        since: None,
    }
}

/// One round of the scheduler: requests due backups, applies retention, raises archive
/// lag events. `lagging` remembers which clusters were flagged.
pub(crate) async fn tick(state: &AppState, lagging: &mut HashSet<String>) -> Result<bool> {
    let mut changed = false;
    let t = now();
    for c in state.store.live_clusters().await.context("list clusters")? {
        let members = state.store.instances_of_cluster(&c.id).await?;
        let Some(primary) = members
            .iter()
            .find(|m| !m.deleting && m.role == "primary" && m.observed == "running" && m.in_recovery == Some(false))
        else {
            continue;
        };
        let rows = state.store.backups_of(&c.id).await?;
        let ledger = entries(&rows);
        // Backups need the archiver working: a backup is complete only with its WAL.
        if primary.archived_lsn.is_some() && backup_due(&ledger, c.backup_interval, t) {
            let kind = if rows.is_empty() { "initial" } else { "scheduled" };
            match state.store.insert_backup(&new_backup(&c, kind)).await {
                Ok(()) => changed = true,
                Err(crate::store::StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let keep = retention(
            &ledger,
            u32::try_from(c.backup_retain_count).unwrap_or(1),
            u32::try_from(c.backup_retain_days).unwrap_or(0),
            t,
        );
        if !keep.delete.is_empty() {
            // Objects first (in every store: a copy must not bring them back), ledger rows
            // last: a round cut short is simply done again.
            let _objects = state.objects_lock.lock().await;
            for (cloud, store) in state.cfg.storage.distinct() {
                let repo = repo_in(state, &c.org_id, &c.id, &store).await?;
                for id in &keep.delete {
                    repo.delete_base(id)
                        .await
                        .with_context(|| format!("delete backup {id} in {cloud}'s store"))?;
                }
                if let Some((tli, lsn)) = keep.wal_before {
                    let n = repo.prune_wal(tli, lsn).await.context("prune WAL")?;
                    tracing::info!(cluster = %c.id, %cloud, objects = n, "WAL no backup needs was deleted");
                }
            }
            for id in &keep.delete {
                state.store.delete_backup_row(id).await?;
                tracing::info!(cluster = %c.id, backup = %id, "backup expired by retention");
            }
        }
        // Archiving lag: raise an event when it grows, another when it is back.
        let lag = match (primary.lsn, primary.archived_lsn) {
            (Some(l), Some(a)) => l - a,
            _ => 0,
        };
        let behind = lag > ARCHIVE_LAG_EVENT_BYTES || primary.archive_error.is_some();
        if behind && lagging.insert(c.id.clone()) {
            let why = primary
                .archive_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            // Unarchived WAL stays on the primary's disk: it is storage the tenant pays with.
            let msg = format!(
                "WAL archiving is {} behind{why}; the WAL not archived yet stays on the primary's disk and counts \
                 toward its storage until it is",
                bytesize::ByteSize(lag.max(0) as u64)
            );
            state.store.add_event(&c.id, t, "archive_lagging", &msg).await?;
            tracing::warn!(cluster = %c.id, "{msg}");
        } else if !behind && lag < ARCHIVE_LAG_EVENT_BYTES / 4 && lagging.remove(&c.id) {
            state
                .store
                .add_event(&c.id, t, "archive_caught_up", "WAL archiving caught up")
                .await?;
        }
    }
    Ok(changed)
}

/// A primary lost with its host and no standby to take over, in a cluster whose every
/// acknowledged commit is in object storage: a new term begins whose primary restores
/// from the cluster's own latest base backup and all of its archived WAL. Returns whether
/// it began (the term may have moved on).
///
/// After its whole cloud went dark (`cloud_lost`) the cluster may be `async`: the restore
/// then reads the copy in a surviving cloud and loses what had not reached it; the event
/// says how far behind the copy last was.
pub(crate) async fn restore_primary(
    state: &AppState,
    cluster_id: &str,
    term: i64,
    from: &str,
    cloud_lost: Option<&str>,
) -> Result<bool> {
    use highrise_planner::backups::{restore_base, RestoreTarget};
    let rows = state
        .store
        .backups_of(cluster_id)
        .await
        .context("list the cluster's backups")?;
    let ledger = entries(&rows);
    let base = restore_base(&ledger, RestoreTarget::Latest)
        .map_err(|e| anyhow::anyhow!("no backup to restore the lost primary from: {e:?}"))?;
    let record = RestoreRecord {
        source_cluster_id: cluster_id.to_string(),
        backup_id: base.id.clone(),
        target_time: None,
        target_lsn: None,
    };
    let org_id = rows.first().map(|b| b.org_id.clone()).unwrap_or_default();
    let at = now();
    let op = crate::store::OperationRow {
        id: crate::auth::new_id("op"),
        org_id,
        cluster_id: Some(cluster_id.to_string()),
        kind: "restore_primary".into(),
        status: "running".into(),
        error: None,
        created_at: at,
        updated_at: at,
        progress_json: None,
        outcome: None,
    };
    let why = match cloud_lost {
        None => format!(
            "primary {from} was lost with its host and no standby can take over: a new primary restores from backup {} and all archived WAL (durability sync: every acknowledged commit is there)",
            base.id
        ),
        Some(cloud) => {
            let c = state.store.cluster_by_id(cluster_id).await.context("read the cluster")?;
            let lag = match c.copy_lag_bytes {
                Some(b) => format!("{} behind", bytesize::ByteSize(b.max(0) as u64)),
                None => "of unknown lag".to_string(),
            };
            let loss = if c.durability == "sync" {
                "commits the copy had not received yet are lost".to_string()
            } else {
                "commits not yet archived, or not yet copied, are lost".to_string()
            };
            format!(
                "primary {from} was lost with cloud {cloud}, which is dark: a new primary restores in a surviving cloud \
                 from backup {} and the archived WAL in the copy there (last seen {lag}); {loss}",
                base.id
            )
        }
    };
    let json = serde_json::to_string(&record).context("encode the restore record")?;
    let begun = state
        .store
        .restore_primary(cluster_id, term, from, &json, &op, &why)
        .await
        .context("record the restore")?;
    if begun {
        tracing::warn!(cluster = %cluster_id, from = %from, backup = %base.id, "restoring a lost primary from object storage");
    }
    Ok(begun)
}
