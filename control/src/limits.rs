//! Abuse limits on authentication: failed attempts are counted per source address and per
//! API key id over a sliding window; past the limit the caller is refused with `429` and a
//! `Retry-After` until the oldest failure in the window ages out. Others are unaffected.
//!
//! The rule is pure over an injected clock (`Instant`s passed in), so it is table-tested;
//! the map is bounded (least recently failing subjects are dropped first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications allowed per subject within [`WINDOW`], unless the operator
/// sets another number.
pub const MAX_FAILURES: usize = 20;

/// The sliding window over which failures count.
pub const WINDOW: Duration = Duration::from_secs(60);

/// At most this many subjects are tracked (an attacker rotating addresses cannot grow the
/// map without bound).
const MAX_SUBJECTS: usize = 100_000;

/// Who failed: a source address or a key id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Address(std::net::IpAddr),
    Key(String),
}

pub struct AuthLimiter {
    /// Failures allowed per subject within the window.
    max: usize,
    failures: Mutex<HashMap<Subject, VecDeque<Instant>>>,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        Self::new(MAX_FAILURES)
    }
}

impl AuthLimiter {
    /// A limiter allowing `max` failures (at least 1) per subject a minute.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            failures: Mutex::default(),
        }
    }

    /// Failures allowed per subject a minute.
    pub fn max(&self) -> usize {
        self.max
    }

    /// `Err(retry_after)` when any of `subjects` has used up its failures at `now`.
    pub fn check(&self, subjects: &[Subject], now: Instant) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for s in subjects {
            if let Some(q) = map.get_mut(s) {
                prune(q, now);
                if q.len() >= self.max {
                    let oldest = q.front().copied().unwrap_or(now);
                    wait = wait.max((oldest + WINDOW).saturating_duration_since(now));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            // A whole second at least: `Retry-After` counts in seconds.
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    /// Records a failed authentication of each of `subjects` at `now`.
    pub fn failed(&self, subjects: &[Subject], now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SUBJECTS {
            map.retain(|_, q| {
                prune(q, now);
                !q.is_empty()
            });
            if map.len() >= MAX_SUBJECTS {
                // Still full of live failures: forget those that failed longest ago.
                let mut last: Vec<(Instant, Subject)> = map
                    .iter()
                    .map(|(s, q)| (q.back().copied().unwrap_or(now), s.clone()))
                    .collect();
                last.sort_by_key(|(t, _)| *t);
                for (_, s) in last.into_iter().take(MAX_SUBJECTS / 10) {
                    map.remove(&s);
                }
            }
        }
        for s in subjects {
            let q = map.entry(s.clone()).or_default();
            prune(q, now);
            q.push_back(now);
            // Only the last `max` matter to the rule.
            while q.len() > self.max {
                q.pop_front();
            }
        }
    }
}

fn prune(q: &mut VecDeque<Instant>, now: Instant) {
    while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Subject {
        Subject::Address(s.parse().unwrap())
    }

    #[test]
    fn a_subject_is_refused_after_its_failures_until_the_oldest_ages_out() {
        let l = AuthLimiter::default();
        let t0 = Instant::now();
        let a = [ip("10.0.0.1")];
        for n in 0..MAX_FAILURES {
            assert_eq!(l.check(&a, t0), Ok(()), "after {n} failures");
            l.failed(&a, t0 + Duration::from_secs(n as u64));
        }
        let now = t0 + Duration::from_secs(MAX_FAILURES as u64);
        // The oldest failure (at t0) ages out at t0 + WINDOW.
        assert_eq!(l.check(&a, now), Err(WINDOW - Duration::from_secs(MAX_FAILURES as u64)));
        // Another address, and a key id nobody failed with, are untouched.
        assert_eq!(l.check(&[ip("10.0.0.2")], now), Ok(()));
        assert_eq!(l.check(&[Subject::Key("k1".into())], now), Ok(()));
        // Either subject of a request being limited is enough.
        assert!(l.check(&[ip("10.0.0.2"), ip("10.0.0.1")], now).is_err());
        // Once the oldest has aged out, one more attempt is allowed.
        assert_eq!(l.check(&a, t0 + WINDOW), Ok(()));
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        let l = AuthLimiter::default();
        let t0 = Instant::now();
        let k = [Subject::Key("k".into())];
        for _ in 0..MAX_FAILURES {
            l.failed(&k, t0);
        }
        let almost = t0 + WINDOW - Duration::from_millis(10);
        assert_eq!(l.check(&k, almost), Err(Duration::from_secs(1)));
    }

    #[test]
    fn the_map_stays_bounded() {
        let l = AuthLimiter::default();
        let t0 = Instant::now();
        for n in 0..(MAX_SUBJECTS + 10) {
            l.failed(&[Subject::Key(format!("k{n}"))], t0 + Duration::from_micros(n as u64));
        }
        assert!(l.failures.lock().unwrap().len() <= MAX_SUBJECTS);
    }
}
