//! Usage sent to a cloud marketplace, as pure rules: which hours are due, what each hour's
//! records say, which records go in one call, when a failed call is tried again, and what
//! a marketplace's answer means for a record.
//!
//! The control plane keeps a durable outbox: an hour's records are *staged* (written, keyed
//! by org, dimension and hour) in one transaction with the org's cursor, then sent until
//! the marketplace has answered for each. Sending is at least once; the marketplaces make
//! it exactly once — AWS takes an identical record again as the same record, Azure
//! answers `Duplicate` for a resource, dimension and hour it already holds, GCP
//! deduplicates by the operation's id — so a record sent, then lost with the control plane
//! before its answer was written, is sent again and counted once.
//!
//! Quantities are cumulative: an hour's record is what the org has used since it was
//! linked, in the marketplace's unit, minus what its earlier records already carry. So
//! usage that reaches the control plane after its hour was staged (a late heartbeat), the
//! sub-unit remainders of every hour, and the records a marketplace refused as too late
//! all go out with the next hour — never twice, never lost.

use crate::marketplace::Marketplace;
use crate::meter::HOUR;
use std::collections::BTreeMap;

/// How long after an hour ends its usage is taken as complete (heartbeats run every few
/// seconds; a host that misses this has its usage carried into a later hour).
pub const SETTLE: i64 = 300;

/// The most records a marketplace takes in one call: AWS `BatchMeterUsage` and Azure
/// `batchUsageEvent` take 25; GCP Service Control takes many operations per report, of
/// which we send at most 100 (Google's advice).
pub fn batch_limit(m: Marketplace) -> usize {
    match m {
        Marketplace::Aws | Marketplace::Azure => 25,
        Marketplace::Gcp => 100,
    }
}

/// How long after its hour a marketplace still takes a record (the record's timestamp is
/// the hour's start): AWS 6 hours, Azure 24 hours. GCP sets no such limit on a report; it
/// wants each window to start where the last ended, so its hours are never skipped.
pub fn deadline(m: Marketplace) -> Option<i64> {
    match m {
        Marketplace::Aws => Some(6 * HOUR),
        Marketplace::Azure => Some(24 * HOUR),
        Marketplace::Gcp => None,
    }
}

/// Whether a record of hour `hour` can no longer be sent at `now` (a minute is kept in
/// hand for the call).
pub fn expired(m: Marketplace, hour: i64, now: i64) -> bool {
    deadline(m).is_some_and(|d| now - hour > d - 60)
}

/// The marketplace dimension a usage dimension is sold under, and how many of the usage's
/// units make one of the marketplace's: an instance's milliseconds of plan `small` on spot
/// (`instance_ms:small:spot`) are sold as `small_spot_seconds`, 1,000 to the unit; disk
/// (`disk_mib_ms`) as `disk_gib_hours`; traffic out to clients (`proxy_bytes_out`) as
/// `data_out_gib`; object storage (`object_storage_mib_ms`) as `object_storage_gib_hours`.
/// Traffic in is free and not sold.
pub fn dimension(usage_dimension: &str) -> Option<(String, u64)> {
    let mut parts = usage_dimension.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("instance_ms"), Some(plan), Some(market), None)
            if [plan, market]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) =>
        {
            Some((format!("{plan}_{market}_seconds"), 1000))
        }
        (Some("disk_mib_ms"), None, None, None) => {
            Some(("disk_gib_hours".into(), crate::meter::DISK_MIB_MS_PER_GIB_HOUR))
        }
        (Some("object_storage_mib_ms"), None, None, None) => Some((
            "object_storage_gib_hours".into(),
            crate::meter::DISK_MIB_MS_PER_GIB_HOUR,
        )),
        (Some("proxy_bytes_out"), None, None, None) => Some(("data_out_gib".into(), crate::meter::BYTES_PER_GIB)),
        _ => None,
    }
}

/// The hours due to be staged for an org whose records are staged up to `cursor` (the
/// end of the last staged hour), at `now`: every whole hour that has settled, oldest
/// first — except hours already past the marketplace's deadline, which are not staged on
/// their own (their usage goes out with the first hour still in time, or the last due).
pub fn due_hours(m: Marketplace, cursor: i64, now: i64) -> Vec<i64> {
    let first = cursor.div_euclid(HOUR) * HOUR;
    let last_end = (now - SETTLE).div_euclid(HOUR) * HOUR;
    (first..last_end)
        .step_by(HOUR as usize)
        .filter(|&h| !expired(m, h, now) || h + HOUR == last_end)
        .collect()
}

/// What an org has used and reported in one usage dimension since it was linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Total {
    pub usage_dimension: String,
    /// Metered, in the usage's units, in the hours from the link to the end of the hour
    /// being staged.
    pub metered: u64,
}

/// One hour's record for one marketplace dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub dimension: String,
    /// The hour's start (Unix seconds).
    pub hour: i64,
    /// The window the record covers (GCP reports windows): the hour.
    pub window_start: i64,
    pub window_end: i64,
    /// In the marketplace's units.
    pub quantity: u64,
}

/// The records of hour `hour` for an org: per marketplace dimension, the whole units it
/// has used since the link (`totals`) less what its earlier records carry (`reported`,
/// per marketplace dimension). AWS and Azure records with nothing to carry are left out;
/// GCP gets one for every dimension the org has used (zeros too), so that from its first
/// usage on, each hour's window starts where the last one ended.
pub fn stage(m: Marketplace, hour: i64, totals: &[Total], reported: &BTreeMap<String, u64>) -> Vec<Staged> {
    let mut units: BTreeMap<String, u64> = BTreeMap::new();
    for t in totals {
        if let Some((d, per_unit)) = dimension(&t.usage_dimension) {
            // Milliseconds of different usage dimensions never share a marketplace
            // dimension, so whole units are taken per usage dimension.
            *units.entry(d).or_default() += t.metered / per_unit;
        }
    }
    units
        .into_iter()
        .map(|(d, total)| {
            let quantity = total.saturating_sub(reported.get(&d).copied().unwrap_or(0));
            Staged {
                dimension: d,
                hour,
                window_start: hour,
                window_end: hour + HOUR,
                quantity,
            }
        })
        .filter(|s| m == Marketplace::Gcp || s.quantity > 0)
        .collect()
}

/// The GCP operation id of an org's window: stable, so a report sent again is the same
/// operation (a name-based UUID of the org and the window's start).
pub fn operation_id(org_id: &str, window_start: i64) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("highrise/{org_id}/{window_start}").as_bytes(),
    )
    .to_string()
}

/// Splits records into calls of at most `limit`, never splitting a group (GCP: an org's
/// window is one operation). Records arrive ordered by group.
pub fn batches<T, K: PartialEq>(records: Vec<T>, limit: usize, group: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let limit = limit.max(1);
    let mut groups: Vec<Vec<T>> = Vec::new();
    for r in records {
        match groups.last_mut() {
            Some(g) if g.last().is_some_and(|l| group(l) == group(&r)) => g.push(r),
            _ => groups.push(vec![r]),
        }
    }
    let mut out: Vec<Vec<T>> = Vec::new();
    for mut g in groups {
        match out.last_mut() {
            Some(b) if b.len() + g.len() <= limit => b.append(&mut g),
            _ => {
                // A group larger than a call goes in calls of its own.
                while g.len() > limit {
                    let rest = g.split_off(limit);
                    out.push(std::mem::replace(&mut g, rest));
                }
                out.push(g);
            }
        }
    }
    out
}

/// What a marketplace's answer means for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken; with the marketplace's receipt when it gives one.
    Accepted(Option<String>),
    /// The marketplace already holds this record (sent before; its answer lost).
    Duplicate,
    /// The marketplace holds a different record under the same key (AWS
    /// `DuplicateRecord`): an operator must look.
    Conflict(String),
    /// Refused for good (customer not subscribed, dimension unknown): an operator must
    /// look; the usage goes out again with a later hour.
    Rejected(String),
    /// Too late for the marketplace: the usage goes out with a later hour.
    Expired(String),
    /// Not processed this time (AWS `UnprocessedRecords`, a call refused before it was
    /// looked at): send again.
    Retry(String),
    /// The call may have been processed, but its answer was lost (a timeout, a broken
    /// connection, an error after the service took it): send the same record again —
    /// the marketplace tells a record it holds — and never, past the deadline, let
    /// another hour carry its usage.
    InDoubt(String),
}

/// A record's state in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Accepted,
    Conflict,
    Rejected,
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Accepted,
            Self::Conflict,
            Self::Rejected,
            Self::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether a record in this state carries its quantity (it is, or will be, the
    /// marketplace's): a conflict is counted too, so the customer is never charged twice
    /// while an operator looks. Rejected and expired records' usage goes out again.
    pub fn counts(self) -> bool {
        matches!(self, Self::Pending | Self::Accepted | Self::Conflict)
    }
}

impl Outcome {
    /// The record's new state.
    pub fn state(&self) -> State {
        match self {
            Self::Accepted(_) | Self::Duplicate => State::Accepted,
            Self::Conflict(_) => State::Conflict,
            Self::Rejected(_) => State::Rejected,
            Self::Expired(_) => State::Expired,
            Self::Retry(_) | Self::InDoubt(_) => State::Pending,
        }
    }
}

/// What becomes of a pending record past its marketplace's deadline at `now` (`None`:
/// still in time). Never sent, or surely refused: it expires, and its usage goes out with
/// a later hour. Sent with its answer lost (`in_doubt`): the marketplace may hold it, so
/// its usage is not sent again — it stays counted, as a conflict for an operator to
/// settle with the marketplace's own records, rather than risk charging twice.
pub fn past_deadline(m: Marketplace, hour: i64, in_doubt: bool, now: i64) -> Option<Outcome> {
    if !expired(m, hour, now) {
        return None;
    }
    let limit = deadline(m).unwrap_or(0) / HOUR;
    Some(if in_doubt {
        Outcome::Conflict(format!(
            "in doubt: sent, its answer lost, and now past {}'s {limit} hours",
            m.title()
        ))
    } else {
        Outcome::Expired(format!(
            "{} takes records up to {limit} hours after their hour",
            m.title()
        ))
    })
}

/// When a record whose call failed `attempts` times in a row is tried again: 5 s, doubled
/// each time, at most 5 minutes.
pub fn retry_at(now: i64, attempts: u32) -> i64 {
    now + (5i64 << attempts.min(6)).min(300)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H0: i64 = 1_793_491_200; // 2026-11-01T00:00:00Z

    fn total(d: &str, metered: u64) -> Total {
        Total {
            usage_dimension: d.into(),
            metered,
        }
    }

    #[test]
    fn usage_dimensions_map_to_marketplace_dimensions_in_seconds() {
        assert_eq!(
            dimension("instance_ms:small:spot"),
            Some(("small_spot_seconds".into(), 1000))
        );
        assert_eq!(
            dimension("instance_ms:large:on_demand"),
            Some(("large_on_demand_seconds".into(), 1000))
        );
        assert_eq!(
            dimension("disk_mib_ms"),
            Some(("disk_gib_hours".to_string(), 3_686_400_000))
        );
        assert_eq!(
            dimension("object_storage_mib_ms"),
            Some(("object_storage_gib_hours".to_string(), 3_686_400_000))
        );
        assert_eq!(
            dimension("proxy_bytes_out"),
            Some(("data_out_gib".to_string(), 1 << 30))
        );
        for no in [
            "bytes",
            "proxy_bytes_in",
            "disk_mib_ms:x",
            "instance_ms:small",
            "instance_ms:a b:spot",
            "instance_ms::spot",
            "instance_ms:s:spot:x",
        ] {
            assert_eq!(dimension(no), None, "{no}");
        }
    }

    #[test]
    fn hours_are_due_once_settled_and_late_ones_fold_into_the_first_in_time() {
        // Staged up to H0; at H0 + 1h + SETTLE the first hour is due, not before.
        assert!(due_hours(Marketplace::Aws, H0, H0 + HOUR + SETTLE - 1).is_empty());
        assert_eq!(due_hours(Marketplace::Aws, H0, H0 + HOUR + SETTLE), vec![H0]);
        // Back after ten hours: AWS takes 6 hours back, so the oldest hours are not staged
        // on their own (their usage rides on the first one still in time).
        let due = due_hours(Marketplace::Aws, H0, H0 + 10 * HOUR + SETTLE);
        assert_eq!(due.first(), Some(&(H0 + 5 * HOUR)));
        assert_eq!(due.last(), Some(&(H0 + 9 * HOUR)));
        assert_eq!(due_hours(Marketplace::Azure, H0, H0 + 10 * HOUR + SETTLE).len(), 10);
        // GCP: every hour, so that the windows join.
        assert_eq!(due_hours(Marketplace::Gcp, H0, H0 + 10 * HOUR + SETTLE).len(), 10);
    }

    #[test]
    fn an_hour_carries_whole_units_not_yet_reported_and_late_usage_rides_on_it() {
        let totals = [
            total("instance_ms:small:spot", 5_400_500),
            total("instance_ms:large:on_demand", 999),
        ];
        let reported = BTreeMap::from([("small_spot_seconds".to_string(), 1800)]);
        let s = stage(Marketplace::Aws, H0 + HOUR, &totals, &reported);
        assert_eq!(
            s,
            vec![Staged {
                dimension: "small_spot_seconds".into(),
                hour: H0 + HOUR,
                window_start: H0 + HOUR,
                window_end: H0 + 2 * HOUR,
                quantity: 3600,
            }],
            "the 0.5 s and the 999 ms wait for a later hour"
        );
        // GCP: the hour's window, zeros kept.
        let g = stage(Marketplace::Gcp, H0 + 3 * HOUR, &totals, &reported);
        assert_eq!(g.len(), 2);
        assert!(g
            .iter()
            .all(|s| s.window_start == H0 + 3 * HOUR && s.window_end == H0 + 4 * HOUR));
        assert_eq!(g[0].quantity, 0, "{g:?}");
    }

    #[test]
    fn operation_ids_are_stable_and_distinct() {
        assert_eq!(operation_id("o1", H0), operation_id("o1", H0));
        assert_ne!(operation_id("o1", H0), operation_id("o1", H0 + HOUR));
        assert_ne!(operation_id("o1", H0), operation_id("o2", H0));
        assert_eq!(operation_id("o1", H0).len(), 36);
    }

    #[test]
    fn outcomes_settle_records() {
        assert_eq!(Outcome::Duplicate.state(), State::Accepted);
        assert_eq!(Outcome::Retry("x".into()).state(), State::Pending);
        assert_eq!(Outcome::InDoubt("x".into()).state(), State::Pending);
        assert_eq!(past_deadline(Marketplace::Aws, H0, false, H0 + 5 * HOUR), None);
        assert!(matches!(
            past_deadline(Marketplace::Aws, H0, false, H0 + 6 * HOUR),
            Some(Outcome::Expired(_))
        ));
        assert!(matches!(
            past_deadline(Marketplace::Aws, H0, true, H0 + 6 * HOUR),
            Some(Outcome::Conflict(_))
        ));
        assert_eq!(past_deadline(Marketplace::Gcp, H0, false, H0 + 600 * HOUR), None);
        assert!(State::Conflict.counts() && !State::Expired.counts() && !State::Rejected.counts());
        for s in ["pending", "accepted", "conflict", "rejected", "expired"] {
            assert_eq!(State::parse(s).map(State::as_str), Some(s));
        }
        assert_eq!(retry_at(0, 0), 5);
        assert_eq!(retry_at(0, 3), 40);
        assert_eq!(retry_at(0, 30), 300);
    }

    proptest! {
        /// Batches keep the order, respect the limit, and never split a group smaller
        /// than the limit.
        #[test]
        fn batches_keep_order_limits_and_groups(groups in proptest::collection::vec(1usize..8, 0..40), limit in 1usize..12) {
            let records: Vec<(usize, usize)> = groups
                .iter()
                .enumerate()
                .flat_map(|(g, &n)| (0..n).map(move |i| (g, i)))
                .collect();
            let out = batches(records.clone(), limit, |r| r.0);
            prop_assert_eq!(out.iter().flatten().cloned().collect::<Vec<_>>(), records);
            for b in &out {
                prop_assert!(!b.is_empty() && b.len() <= limit);
            }
            for (g, &n) in groups.iter().enumerate() {
                if n <= limit {
                    let holding = out.iter().filter(|b| b.iter().any(|r| r.0 == g)).count();
                    prop_assert_eq!(holding, 1, "group {} of {} split", g, n);
                }
            }
        }

        /// However usage arrives and hours are staged, what the records carry never
        /// exceeds what was used and trails it by less than a unit per dimension.
        #[test]
        fn records_carry_all_usage_exactly_once(adds in proptest::collection::vec(0u64..10_000_000, 1..50)) {
            let mut metered = 0u64;
            let mut reported: BTreeMap<String, u64> = BTreeMap::new();
            for (i, add) in adds.iter().enumerate() {
                metered += add;
                let hour = H0 + i as i64 * HOUR;
                for s in stage(Marketplace::Azure, hour, &[total("instance_ms:small:spot", metered)], &reported) {
                    *reported.entry(s.dimension).or_default() += s.quantity;
                }
                let sent = reported.get("small_spot_seconds").copied().unwrap_or(0);
                prop_assert!(sent * 1000 <= metered && metered - sent * 1000 < 1000);
            }
        }
    }
}
