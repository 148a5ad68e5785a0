//! Usage counters: how long each instance existed on this host and how much of its disk
//! it held meanwhile, kept on the host's disk.
//!
//! Every instance has a counter of milliseconds (`meters/<instance id>.json`), started at 0
//! when its supervisor first runs and advanced to "now" each time it is read; beside it a
//! counter of MiB-milliseconds of disk, advancing at the size of its data directory (data
//! and WAL) as last measured (from the first measurement on; whole MiB, rounded down). A heartbeat
//! reads every counter — persisting each before it is sent, so a reading the control plane
//! saw is never above what the disk holds — and the control plane turns the differences
//! into hourly usage (`highrise_billing::meter`). A deleted instance's counter is closed at
//! its deletion and sent until a heartbeat carrying it was answered with success, then
//! removed: the last milliseconds are not lost with the instance.
//!
//! Time the agent was not running counts only when PostgreSQL went on running meanwhile
//! (an agent restart); a host that was down served nobody.

use crate::write_atomic;
use anyhow::{Context, Result};
use highrise_api::{MeterKind, MeterReading};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A counter as kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counter {
    pub since_ms: i64,
    pub value: u64,
    pub at_ms: i64,
    pub closed: bool,
    /// MiB-milliseconds of disk, and the rate it advances at (MiB, as last measured). Kept
    /// files from before disk was metered read as zero.
    #[serde(default)]
    pub disk_value: u64,
    #[serde(default)]
    pub disk_mib: u64,
}

impl Counter {
    pub fn new(now_ms: i64) -> Self {
        Self {
            since_ms: now_ms,
            value: 0,
            at_ms: now_ms,
            closed: false,
            disk_value: 0,
            disk_mib: 0,
        }
    }

    /// Counts the time from the last reading to `now_ms` (a clock that went back counts
    /// nothing, and the reading time never goes back).
    pub fn advance(&mut self, now_ms: i64) {
        if self.closed || now_ms <= self.at_ms {
            return;
        }
        let elapsed = (now_ms - self.at_ms).unsigned_abs();
        self.value += elapsed;
        self.disk_value = self.disk_value.saturating_add(elapsed.saturating_mul(self.disk_mib));
        self.at_ms = now_ms;
    }

    /// Takes up counting again after the agent started: the time it was away counts when
    /// the instance went on running meanwhile, else it is skipped.
    pub fn resume(&mut self, now_ms: i64, ran_meanwhile: bool) {
        if ran_meanwhile {
            self.advance(now_ms);
        } else if now_ms > self.at_ms && !self.closed {
            self.at_ms = now_ms;
        }
    }
}

/// The counters of every instance the host has (or had, until acknowledged).
pub(crate) struct Meters {
    dir: PathBuf,
    counters: Mutex<BTreeMap<String, Counter>>,
}

impl Meters {
    /// Loads the counters kept in `dir` (made if missing). A file that cannot be read is
    /// set aside (renamed `.bad`) and said so: its instance starts a new counter, and
    /// the control plane keeps what it took from the old one.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut counters = BTreeMap::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<Counter>(&b).map_err(anyhow::Error::from))
            {
                Ok(c) => {
                    counters.insert(id.to_string(), c);
                }
                Err(e) => {
                    tracing::error!("usage counter {} unreadable, set aside: {e:#}", path.display());
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            counters: Mutex::new(counters),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn save(&self, id: &str, c: &Counter) -> Result<()> {
        write_atomic(
            &self.path(id),
            &serde_json::to_vec(c).context("serialize usage counter")?,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Counter>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance's supervisor starts: a new counter, or the kept one taken up again
    /// (see [`Counter::resume`]).
    pub fn start(&self, id: &str, now_ms: i64, ran_meanwhile: bool) -> Result<()> {
        let mut map = self.lock();
        let c = map
            .entry(id.to_string())
            .and_modify(|c| c.resume(now_ms, ran_meanwhile))
            .or_insert_with(|| Counter::new(now_ms));
        let c = *c;
        self.save(id, &c)
    }

    /// Whether a counter is closed (its last reading is still to be delivered).
    pub fn any_closed(&self) -> bool {
        self.lock().values().any(|c| c.closed)
    }

    /// The instances whose counters are still open.
    pub fn open_ids(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, c)| !c.closed)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The instance's data directory measured `bytes` at `now_ms`: disk counts at that size
    /// from here (what went before at the size measured before).
    pub fn set_disk(&self, id: &str, now_ms: i64, bytes: u64) -> Result<()> {
        let mut map = self.lock();
        let Some(c) = map.get_mut(id) else {
            return Ok(());
        };
        let mib = bytes >> 20;
        if c.closed || c.disk_mib == mib {
            return Ok(());
        }
        let mut next = *c;
        next.advance(now_ms);
        next.disk_mib = mib;
        self.save(id, &next)?;
        *c = next;
        Ok(())
    }

    /// The instance is deleted: its counter stops here.
    pub fn close(&self, id: &str, now_ms: i64) -> Result<()> {
        let mut map = self.lock();
        let Some(c) = map.get_mut(id) else {
            return Ok(());
        };
        c.advance(now_ms);
        c.closed = true;
        let c = *c;
        self.save(id, &c)
    }

    /// Every counter read at `now_ms`, each persisted before it is returned. A counter
    /// that cannot be persisted is left out (sent with the next heartbeat that can).
    pub fn read(&self, now_ms: i64) -> Vec<MeterReading> {
        let mut map = self.lock();
        let mut out = Vec::with_capacity(map.len());
        for (id, c) in map.iter_mut() {
            let mut next = *c;
            next.advance(now_ms);
            if next != *c {
                if let Err(e) = self.save(id, &next) {
                    tracing::warn!("usage counter of {id}: {e:#}");
                    continue;
                }
                *c = next;
            }
            for (kind, value) in [(MeterKind::InstanceMs, c.value), (MeterKind::DiskMibMs, c.disk_value)] {
                out.push(MeterReading {
                    source: id.clone(),
                    kind,
                    value,
                    at_ms: c.at_ms,
                    since_ms: c.since_ms,
                    closed: c.closed,
                });
            }
        }
        out
    }

    /// A heartbeat carrying `sent` was answered with success: closed counters in it are
    /// done with (both of an instance's counters go in the same heartbeat).
    pub fn acknowledged(&self, sent: &[MeterReading]) {
        let mut map = self.lock();
        for r in sent.iter().filter(|r| r.closed && r.kind == MeterKind::InstanceMs) {
            if map.get(&r.source).is_some_and(|c| c.closed && c.value == r.value) {
                match std::fs::remove_file(self.path(&r.source)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!("remove usage counter of {}: {e}", r.source);
                        continue;
                    }
                }
                map.remove(&r.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_counts_time_once_and_never_goes_back() {
        let mut c = Counter::new(1_000);
        c.advance(1_500);
        c.advance(1_500);
        c.advance(1_200);
        assert_eq!((c.value, c.at_ms), (500, 1_500));
        // The agent was away 10 s with PostgreSQL running: counted.
        c.resume(11_500, true);
        assert_eq!(c.value, 10_500);
        // Away 5 s with the host down: skipped.
        c.resume(16_500, false);
        assert_eq!((c.value, c.at_ms), (10_500, 16_500));
        c.advance(17_000);
        assert_eq!(c.value, 11_000);
        c.closed = true;
        c.advance(20_000);
        c.resume(30_000, false);
        assert_eq!((c.value, c.at_ms), (11_000, 17_000));
    }

    #[test]
    fn disk_counts_at_the_size_last_measured_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let meters = Meters::open(dir.path()).unwrap();
        meters.start("a", 0, false).unwrap();
        let disk = |m: &Meters, t: i64| {
            m.read(t)
                .iter()
                .find(|r| r.kind == MeterKind::DiskMibMs)
                .map(|r| r.value)
                .unwrap()
        };
        meters.set_disk("a", 1_000, 40 << 20).unwrap();
        assert_eq!(disk(&meters, 3_000), 2_000 * 40);
        // Grown to 100 MiB (and a part of a MiB, not counted) at 5 s.
        meters.set_disk("a", 5_000, (100 << 20) + 12_345).unwrap();
        assert_eq!(disk(&meters, 6_000), 4_000 * 40 + 1_000 * 100);
        drop(meters);
        // The agent restarts, PostgreSQL ran meanwhile: the size last measured goes on.
        let meters = Meters::open(dir.path()).unwrap();
        meters.start("a", 8_000, true).unwrap();
        assert_eq!(disk(&meters, 8_000), 4_000 * 40 + 3_000 * 100);
        meters.close("a", 9_000).unwrap();
        meters.set_disk("a", 10_000, 1 << 30).unwrap();
        assert_eq!(disk(&meters, 20_000), 4_000 * 40 + 4_000 * 100, "closed: no more");
        // A counter kept before disk was metered reads as none.
        let old: Counter = serde_json::from_str(r#"{"since_ms":1,"value":2,"at_ms":3,"closed":false}"#).unwrap();
        assert_eq!((old.disk_value, old.disk_mib), (0, 0));
    }

    #[test]
    fn counters_survive_a_restart_and_closed_ones_leave_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let meters = Meters::open(dir.path()).unwrap();
        meters.start("a", 1_000, false).unwrap();
        meters.start("b", 1_000, false).unwrap();
        let read = meters.read(4_000);
        assert_eq!(
            read.iter().map(|r| r.value).collect::<Vec<_>>(),
            [3_000, 0, 3_000, 0],
            "time, and no disk before it was measured"
        );
        meters.close("b", 5_000).unwrap();
        drop(meters);

        // The agent restarts: what a heartbeat saw is on disk.
        std::fs::write(dir.path().join("junk.json"), b"{not json").unwrap();
        let meters = Meters::open(dir.path()).unwrap();
        assert!(dir.path().join("junk.bad").exists());
        meters.start("a", 9_000, false).unwrap();
        let read = meters.read(10_000);
        assert_eq!(
            read.iter()
                .filter(|r| r.kind == MeterKind::InstanceMs)
                .map(|r| (r.source.as_str(), r.value, r.closed))
                .collect::<Vec<_>>(),
            [("a", 4_000, false), ("b", 4_000, true)]
        );
        // A reading older than the closing one acknowledges nothing.
        let mut stale = read.clone();
        stale[2].value = 3_000;
        meters.acknowledged(&stale);
        assert_eq!(meters.read(10_000).len(), 4);
        meters.acknowledged(&read);
        assert_eq!(meters.read(10_000).len(), 2);
        assert!(!dir.path().join("b.json").exists());
        assert!(dir.path().join("a.json").exists());
    }
}
