//! Traffic counters: the bytes the proxy relayed each way for each endpoint, kept on its
//! disk and reported to the control plane, which turns them into hourly usage
//! (`POST /v1/proxy/usage`, `highrise_billing::meter`).
//!
//! Counted are the PostgreSQL protocol's bytes the proxy relayed for a session once it
//! was routed — `in` from the client to the server, `out` from the server to the client —
//! from its startup packet on; not TLS's own bytes, not what the client exchanged with the
//! proxy alone (encryption negotiation, a password check the proxy made itself, refusals).
//! A relay adds to its endpoint's counters as bytes pass, so long sessions are counted
//! while they last, not when they end.
//!
//! The counters are cumulative across the proxy's restarts: each report first writes the
//! values it is about to send to the file (synced), so a value the control plane saw is
//! never above what the file holds; a crash loses at most what was relayed since the last
//! report, never counts anything twice. An endpoint no longer in the routing table with no
//! session left is sent once more as closed and, once the control plane took that, is
//! forgotten.

use crate::routes::{write_private, ControlUrl, RouteCache};
use crate::ProxyConfig;
use highrise_api::{MeterKind, MeterReading, ProxyUsage, MAX_PROXY_READINGS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Who the proxy is and where its counters go (see [`ProxyConfig::meter`]).
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// The proxy's name, stable across restarts.
    pub name: String,
    /// Where it runs: its traffic is recorded and priced there.
    pub cloud: String,
    pub region: String,
    /// Where the counters are kept.
    pub file: PathBuf,
    /// How often they are reported.
    pub every: Duration,
}

/// One endpoint's counters.
#[derive(Debug)]
struct Counts {
    since_ms: i64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Sessions relaying for it now.
    live: AtomicUsize,
}

/// An endpoint's counters as kept in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    since_ms: i64,
    bytes_in: u64,
    bytes_out: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    endpoints: BTreeMap<String, Kept>,
}

/// A session's hold on its endpoint's counters (none when the proxy does not meter).
pub(crate) struct Tally(Option<Arc<Counts>>);

impl Tally {
    /// Counts nothing.
    #[cfg(test)]
    pub fn none() -> Self {
        Self(None)
    }

    pub fn add_in(&self, n: usize) {
        if let Some(c) = &self.0 {
            c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub fn add_out(&self, n: usize) {
        if let Some(c) = &self.0 {
            c.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A client's stream that adds to its tally what is read from it (`in`) and written to it
/// (`out`).
pub(crate) struct Counted<'a, S> {
    inner: S,
    tally: &'a Tally,
}

impl<'a, S> Counted<'a, S> {
    pub fn new(inner: S, tally: &'a Tally) -> Self {
        Self { inner, tally }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.tally.add_in(buf.filled().len() - before);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.tally.add_out(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Every endpoint's counters.
pub(crate) struct Traffic {
    file: Option<PathBuf>,
    counters: Mutex<BTreeMap<String, Arc<Counts>>>,
}

/// What a report sent of one endpoint: the endpoint, its values, whether it was closing.
type Sent = (String, Kept, bool);

impl Traffic {
    /// Counters kept in memory only (a proxy that does not meter hands out empty tallies).
    pub fn off() -> Self {
        Self {
            file: None,
            counters: Mutex::default(),
        }
    }

    /// The counters kept in `file`, if any. A file that cannot be read is set aside
    /// (renamed `.bad`) and said so: counting starts again from zero with new counters,
    /// which the control plane counts whole from their start (what the lost file held
    /// since its last report is lost).
    pub fn open(file: &Path) -> Self {
        let kept = match std::fs::read(file) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) => f.endpoints,
                Err(e) => {
                    tracing::error!("traffic counters {} unreadable, set aside: {e}", file.display());
                    let _ = std::fs::rename(file, file.with_extension("bad"));
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::error!("read traffic counters {}: {e}", file.display());
                BTreeMap::new()
            }
        };
        let counters = kept
            .into_iter()
            .map(|(endpoint, k)| {
                let c = Counts {
                    since_ms: k.since_ms,
                    bytes_in: AtomicU64::new(k.bytes_in),
                    bytes_out: AtomicU64::new(k.bytes_out),
                    live: AtomicUsize::new(0),
                };
                (endpoint, Arc::new(c))
            })
            .collect();
        Self {
            file: Some(file.to_path_buf()),
            counters: Mutex::new(counters),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Counts>>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `endpoint` starts relaying: its tally (a new counter from `now_ms`
    /// for an endpoint not counted yet).
    pub fn tally(&self, endpoint: &str, now_ms: i64) -> Tally {
        if self.file.is_none() {
            return Tally(None);
        }
        let mut map = self.lock();
        let c = map.entry(endpoint.to_string()).or_insert_with(|| {
            Arc::new(Counts {
                since_ms: now_ms,
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                live: AtomicUsize::new(0),
            })
        });
        c.live.fetch_add(1, Ordering::Relaxed);
        Tally(Some(Arc::clone(c)))
    }

    /// Reads every counter and writes the values to the file before they may be sent; an
    /// endpoint `routed` no longer and with no session is closing.
    fn read(&self, routed: impl Fn(&str) -> bool) -> std::io::Result<Vec<Sent>> {
        let Some(file) = &self.file else {
            return Ok(Vec::new());
        };
        let snapshot: Vec<Sent> = self
            .lock()
            .iter()
            .map(|(endpoint, c)| {
                let kept = Kept {
                    since_ms: c.since_ms,
                    bytes_in: c.bytes_in.load(Ordering::Relaxed),
                    bytes_out: c.bytes_out.load(Ordering::Relaxed),
                };
                let closing = c.live.load(Ordering::Relaxed) == 0 && !routed(endpoint);
                (endpoint.clone(), kept, closing)
            })
            .collect();
        let f = File {
            endpoints: snapshot.iter().map(|(e, k, _)| (e.clone(), *k)).collect(),
        };
        write_private(file, &serde_json::to_vec(&f).map_err(std::io::Error::other)?)?;
        Ok(snapshot)
    }

    /// The control plane took the closing readings in `sent`: forgets those endpoints,
    /// unless a session took them up again meanwhile. The file drops them at the next
    /// report.
    fn forget(&self, sent: &[Sent]) {
        let mut map = self.lock();
        for (endpoint, kept, closing) in sent {
            if !closing {
                continue;
            }
            let idle = map.get(endpoint).is_some_and(|c| {
                c.live.load(Ordering::Relaxed) == 0
                    && c.bytes_in.load(Ordering::Relaxed) == kept.bytes_in
                    && c.bytes_out.load(Ordering::Relaxed) == kept.bytes_out
            });
            if idle {
                map.remove(endpoint);
            }
        }
    }
}

/// The readings of a report taken at `at_ms`: two per endpoint.
fn readings(sent: &[Sent], at_ms: i64) -> Vec<MeterReading> {
    sent.iter()
        .flat_map(|(endpoint, k, closing)| {
            [
                (MeterKind::ProxyBytesIn, k.bytes_in),
                (MeterKind::ProxyBytesOut, k.bytes_out),
            ]
            .map(|(kind, value)| MeterReading {
                source: endpoint.clone(),
                kind,
                value,
                at_ms,
                since_ms: k.since_ms,
                closed: *closing,
            })
        })
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reports the counters every `meter.every` until `stop`, then writes them to the file a
/// last time (the next start sends them).
pub(crate) async fn report(
    traffic: Arc<Traffic>,
    meter: MeterConfig,
    cfg: ProxyConfig,
    control: ControlUrl,
    routes: RouteCache,
    mut stop: watch::Receiver<bool>,
) {
    let client = match crate::routes::control_client(&cfg, Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("build HTTP client: {e}");
            return;
        }
    };
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(meter.every) => {}
            _ = stop.changed() => {
                if let Err(e) = traffic.read(|e| routes.contains(e)) {
                    tracing::error!("write traffic counters {}: {e}", meter.file.display());
                }
                return;
            }
        }
        let at_ms = now_ms();
        let sent = match traffic.read(|e| routes.contains(e)) {
            Ok(s) => s,
            Err(e) => {
                // Nothing is sent that the file does not hold.
                tracing::error!("write traffic counters {}: {e}", meter.file.display());
                continue;
            }
        };
        if sent.is_empty() {
            continue;
        }
        let all = readings(&sent, at_ms);
        let mut result = Ok(());
        for chunk in all.chunks(MAX_PROXY_READINGS) {
            let body = ProxyUsage {
                proxy: meter.name.clone(),
                cloud: meter.cloud.clone(),
                region: meter.region.clone(),
                readings: chunk.to_vec(),
            };
            result = async {
                client
                    .post(format!("{}/v1/proxy/usage", control.get()))
                    .bearer_auth(&cfg.token)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()
                    .map(drop)
            }
            .await;
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => {
                failures = 0;
                traffic.forget(&sent);
            }
            Err(e) => {
                // The counters stay: the next report carries the whole difference.
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!("report traffic to the control plane: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(t: &Traffic, e: &str) -> Option<(u64, u64)> {
        t.lock()
            .get(e)
            .map(|c| (c.bytes_in.load(Ordering::Relaxed), c.bytes_out.load(Ordering::Relaxed)))
    }

    #[test]
    fn counters_survive_a_restart_and_closed_endpoints_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traffic.json");
        let t = Traffic::open(&file);
        let a = t.tally("ep-a", 1_000);
        a.add_in(10);
        a.add_out(1_000);
        let b = t.tally("ep-b", 2_000);
        b.add_out(7);
        drop(b);
        let sent = t.read(|e| e == "ep-a").unwrap();
        assert_eq!(
            sent,
            vec![
                (
                    "ep-a".to_string(),
                    Kept {
                        since_ms: 1_000,
                        bytes_in: 10,
                        bytes_out: 1_000
                    },
                    false
                ),
                (
                    "ep-b".to_string(),
                    Kept {
                        since_ms: 2_000,
                        bytes_in: 0,
                        bytes_out: 7
                    },
                    true
                ),
            ]
        );
        let r = readings(&sent, 5_000);
        assert_eq!(r.len(), 4);
        assert!(r.iter().all(|r| r.at_ms == 5_000));
        assert!(r
            .iter()
            .any(|r| r.source == "ep-b" && r.closed && r.kind == MeterKind::ProxyBytesOut && r.value == 7));

        // Counted after the report: kept in memory only until the next one.
        a.add_in(5);
        drop(a);
        let again = Traffic::open(&file);
        assert_eq!(kept(&again, "ep-a"), Some((10, 1_000)));
        assert_eq!(kept(&again, "ep-b"), Some((0, 7)));
        // A restarted proxy counts on from what it sent, never below.
        let a = again.tally("ep-a", 9_000);
        a.add_in(1);
        assert_eq!(kept(&again, "ep-a"), Some((11, 1_000)));

        // The closing endpoint is forgotten once taken; the open one stays.
        t.forget(&sent);
        assert_eq!(kept(&t, "ep-b"), None);
        assert_eq!(kept(&t, "ep-a"), Some((15, 1_000)));
    }

    #[test]
    fn a_closing_endpoint_used_again_is_not_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let t = Traffic::open(&dir.path().join("traffic.json"));
        drop(t.tally("ep", 1));
        let sent = t.read(|_| false).unwrap();
        assert!(sent[0].2);
        // A session started meanwhile (the endpoint came back).
        let s = t.tally("ep", 2);
        t.forget(&sent);
        assert!(kept(&t, "ep").is_some());
        s.add_in(3);
        drop(s);
        // Bytes counted meanwhile, session gone: still not the values sent.
        t.forget(&sent);
        assert_eq!(kept(&t, "ep"), Some((3, 0)));
    }

    #[test]
    fn an_unreadable_file_is_set_aside_and_counting_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traffic.json");
        std::fs::write(&file, b"{ not json").unwrap();
        let t = Traffic::open(&file);
        assert!(t.lock().is_empty());
        assert!(file.with_extension("bad").exists());
        t.tally("ep", 1).add_out(2);
        t.read(|_| true).unwrap();
        assert_eq!(kept(&Traffic::open(&file), "ep"), Some((0, 2)));
    }

    #[test]
    fn a_proxy_that_does_not_meter_counts_nothing() {
        let t = Traffic::off();
        t.tally("ep", 1).add_in(5);
        assert!(t.lock().is_empty());
        assert!(t.read(|_| true).unwrap().is_empty());
    }
}
