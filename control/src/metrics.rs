//! Recent metrics of each instance, as its agent reports them in heartbeats — client
//! connections, transactions (cumulative), WAL position, WAL archived, storage used — one
//! sample per instance every [`SAMPLE_EVERY_MS`], the last [`WINDOW_MS`] of them, in
//! memory: what a cluster's charts draw (`GET /v1/clusters/{c}/metrics`, the console).
//!
//! In memory on purpose: the series are a live view, not a record (usage, backups and the
//! audit log are the durable ones), so a control plane that restarts — or another one
//! answering — starts its charts afresh. Bounded: at most [`MAX_SERIES`] instances
//! (the least recently heard from is dropped first) and a window's samples each.

use highrise_api::{MetricSample, ObservedInstance};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// At most one sample per instance this often.
pub const SAMPLE_EVERY_MS: i64 = 5_000;
/// How far back the series go.
pub const WINDOW_MS: i64 = 30 * 60 * 1000;
/// The instances whose series are kept at most (~100 MB at 360 samples each).
pub const MAX_SERIES: usize = 50_000;

#[derive(Default)]
pub struct Metrics {
    /// By host and instance: a host's report is read back only for an instance the store
    /// places on that host, so no host can draw another's instances.
    series: Mutex<HashMap<(String, String), VecDeque<MetricSample>>>,
    /// When the series were last swept of silent instances.
    swept_ms: std::sync::atomic::AtomicI64,
}

impl Metrics {
    /// Records what a heartbeat at `at_ms` says of `instance`, unless its last sample is
    /// more recent than [`SAMPLE_EVERY_MS`]; now and then sweeps silent instances away.
    pub fn record(&self, at_ms: i64, host: &str, instance: &ObservedInstance) {
        use std::sync::atomic::Ordering;
        let swept = self.swept_ms.load(Ordering::Relaxed);
        if at_ms - swept > WINDOW_MS / 6
            && self
                .swept_ms
                .compare_exchange(swept, at_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(at_ms);
        }
        let sample = MetricSample {
            at_ms,
            connections: instance.connections,
            xacts: instance.xacts,
            lsn: instance.lsn,
            archived_lsn: instance.archived_lsn,
            storage_bytes: instance.storage.map(|s| s.data_bytes + s.wal_bytes),
        };
        let mut all = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (host.to_string(), instance.id.clone());
        if !all.contains_key(&key) && all.len() >= MAX_SERIES {
            let stalest = all
                .iter()
                .min_by_key(|(_, s)| s.back().map_or(i64::MIN, |x| x.at_ms))
                .map(|(id, _)| id.clone());
            if let Some(id) = stalest {
                all.remove(&id);
            }
        }
        let series = all.entry(key).or_default();
        if series.back().is_some_and(|last| at_ms < last.at_ms + SAMPLE_EVERY_MS) {
            return;
        }
        series.push_back(sample);
        while series.front().is_some_and(|first| first.at_ms < at_ms - WINDOW_MS) {
            series.pop_front();
        }
    }

    /// The samples `host` reported of `instance` within the window before `now_ms`, oldest
    /// first.
    pub fn series(&self, host: &str, instance: &str, now_ms: i64) -> Vec<MetricSample> {
        let all = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.get(&(host.to_string(), instance.to_string()))
            .map(|s| s.iter().filter(|x| x.at_ms >= now_ms - WINDOW_MS).cloned().collect())
            .unwrap_or_default()
    }

    /// Drops the series of instances not heard from within the window.
    pub fn sweep(&self, now_ms: i64) {
        let mut all = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|_, s| s.back().is_some_and(|x| x.at_ms >= now_ms - WINDOW_MS));
    }
}

/// Per-second rate of a cumulative counter between consecutive points (`(at_ms, value)`,
/// oldest first), at the later point of each pair; a step where the counter went down (a
/// restarted server) gives no point.
pub fn rate(points: &[(i64, u64)]) -> Vec<(i64, f64)> {
    points
        .windows(2)
        .filter(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1)
        .map(|w| {
            let secs = (w[1].0 - w[0].0) as f64 / 1000.0;
            (w[1].0, (w[1].1 - w[0].1) as f64 / secs)
        })
        .collect()
}

/// How far `behind` trails `ahead` (both `(at_ms, position)`, oldest first): at each of
/// `behind`'s points, `ahead`'s latest position at or before it less `behind`'s, never
/// below zero; none before `ahead`'s first point.
pub fn lag(ahead: &[(i64, u64)], behind: &[(i64, u64)]) -> Vec<(i64, u64)> {
    behind
        .iter()
        .filter_map(|(at, pos)| {
            let i = ahead.partition_point(|(t, _)| t <= at);
            (i > 0).then(|| (*at, ahead[i - 1].1.saturating_sub(*pos)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use highrise_api::InstanceState;

    fn observed(id: &str, xacts: u64) -> ObservedInstance {
        serde_json::from_value(serde_json::json!({
            "id": id, "state": "running", "addr": null, "error": null, "xacts": xacts, "connections": 3
        }))
        .unwrap()
    }

    #[test]
    fn one_sample_per_interval_within_the_window() {
        let m = Metrics::default();
        for at in (0..WINDOW_MS * 2).step_by(1000) {
            m.record(at, "h", &observed("a", at as u64));
        }
        let now = WINDOW_MS * 2;
        let s = m.series("h", "a", now);
        assert!(
            m.series("other-host", "a", now).is_empty(),
            "read back for its host only"
        );
        assert!(s.windows(2).all(|w| w[1].at_ms - w[0].at_ms == SAMPLE_EVERY_MS));
        assert!(s.first().unwrap().at_ms >= now - WINDOW_MS);
        assert_eq!(s.len() as i64, WINDOW_MS / SAMPLE_EVERY_MS);
        assert_eq!(s[0].connections, Some(3));
        assert_eq!(observed("a", 1).state, InstanceState::Running);
        assert!(m.series("h", "unknown", now).is_empty());
        m.sweep(now + WINDOW_MS + 1);
        assert!(m.series("h", "a", now).is_empty(), "swept once silent for a window");
    }

    #[test]
    fn rates_skip_counter_resets_and_lags_never_go_negative() {
        assert_eq!(
            rate(&[(0, 0), (1000, 50), (3000, 150), (4000, 10), (5000, 30)]),
            vec![(1000, 50.0), (3000, 50.0), (5000, 20.0)]
        );
        assert!(rate(&[(0, 5)]).is_empty());
        let primary = [(1000, 100), (2000, 300), (3000, 400)];
        let standby = [(500, 0), (1500, 80), (2500, 310), (3500, 400)];
        assert_eq!(lag(&primary, &standby), vec![(1500, 20), (2500, 0), (3500, 0)]);
    }
}
