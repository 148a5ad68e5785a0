//! Cumulative counters to hourly usage.
//!
//! A source (an instance's agent, a proxy) reports, per dimension, a counter that only
//! grows — across the source's restarts too (it keeps the counter on its disk) — and when
//! it read it. The control plane keeps, per source and dimension, the last reading it took
//! ([`Last`]); a newer reading adds the difference, spread over the hours between the two
//! readings in proportion to the time in each ([`spread`]). So:
//!
//! * a reading sent twice, or an older one arriving late, adds nothing;
//! * a lost heartbeat loses nothing: the next reading carries the whole difference;
//! * the shares of one difference add up to exactly that difference (integer units, the
//!   rounding carried from hour to hour), so no unit is made or lost by the split;
//! * every share is keyed by its hour, so writing it into an hourly record keyed (subject,
//!   dimension, hour) together with the new [`Last`], in one transaction, makes a retry
//!   or a restart of the control plane harmless.
//!
//! A new source starts from a reading of 0 at the moment it started (its first heartbeat
//! then carries everything since), so nothing before its first report is lost either.

use serde::{Deserialize, Serialize};

/// Seconds in an hour: the granularity of usage records.
pub const HOUR: i64 = 3600;

/// One reading of a cumulative counter: its value and when it was read (Unix
/// milliseconds, the source's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    pub value: u64,
    pub at_ms: i64,
}

/// The last reading taken into usage for a source and dimension.
pub type Last = Reading;

/// Part of a difference that falls in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The hour's start, Unix seconds (a multiple of [`HOUR`]).
    pub hour: i64,
    pub quantity: u64,
}

/// What a reading adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spread {
    /// The difference since the last reading, by hour (empty when nothing grew); the
    /// reading becomes the new [`Last`].
    Added(Vec<Share>),
    /// Not newer than the last reading (a duplicate, or one that arrived late): nothing
    /// is added and the last reading stays.
    Stale,
    /// Newer, but the counter went down: the source lost its counter (a host replaced
    /// under the same id). Nothing is added; the reading becomes the new baseline, and the
    /// caller records the event.
    Regressed,
}

/// MiB-milliseconds in a GiB-hour: disk is priced, and sold on marketplaces, by the GiB-hour
/// or GiB-month.
pub const DISK_MIB_MS_PER_GIB_HOUR: u64 = 1024 * 3_600_000;

/// Bytes in a GiB: traffic is priced, and sold on marketplaces, by the GiB.
pub const BYTES_PER_GIB: u64 = 1 << 30;

/// Whether a dimension counts space over time in MiB-milliseconds: a host's disk, object
/// storage.
pub fn is_mib_ms(dimension: &str) -> bool {
    matches!(dimension, "disk_mib_ms" | "object_storage_mib_ms")
}

/// Whether a dimension counts a proxy's traffic (bytes).
pub fn is_traffic(dimension: &str) -> bool {
    matches!(dimension, "proxy_bytes_in" | "proxy_bytes_out")
}

/// A quantity of `dimension` as people read it: an instance's time as hours, minutes and
/// seconds; disk as GiB-hours and traffic as GiB, or MiB below one GiB (two decimals,
/// rounded down); else the number.
pub fn readable(dimension: &str, quantity: u64) -> String {
    if is_traffic(dimension) {
        let (unit, per) = if quantity < BYTES_PER_GIB {
            ("MiB", 1 << 20)
        } else {
            ("GiB", BYTES_PER_GIB)
        };
        let centi = u128::from(quantity) * 100 / u128::from(per);
        format!("{}.{:02} {unit}", centi / 100, centi % 100)
    } else if dimension.starts_with("instance_ms:") {
        let s = quantity / 1000;
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else if is_mib_ms(dimension) {
        let centi = u128::from(quantity) * 100 / u128::from(DISK_MIB_MS_PER_GIB_HOUR);
        format!("{}.{:02} GiB-h", centi / 100, centi % 100)
    } else {
        quantity.to_string()
    }
}

/// A unit price as people read it: `0.16 / h` for instance time, `0.125 / GiB-month` for
/// disk by the month of 730 hours, `0.10 / GiB` for traffic, else `price / per`.
pub fn readable_price(dimension: &str, price: &str, per: u64) -> String {
    if is_traffic(dimension) && per == BYTES_PER_GIB {
        format!("{price} / GiB")
    } else if dimension.starts_with("instance_ms:") && per == 3_600_000 {
        format!("{price} / h")
    } else if is_mib_ms(dimension) && per == 730 * DISK_MIB_MS_PER_GIB_HOUR {
        format!("{price} / GiB-month")
    } else {
        format!("{price} / {per}")
    }
}

/// The dimension an instance's counter is recorded (and priced) under: its time by its
/// plan and its host's market, e.g. `instance_ms:standard:spot`; its disk as is
/// (`disk_mib_ms`: a MiB costs the same whatever the plan or market).
pub fn dimension(kind: &str, plan: &str, market: &str) -> String {
    match kind {
        "instance_ms" => format!("{kind}:{plan}:{market}"),
        _ => kind.to_string(),
    }
}

/// The start (Unix seconds) of the hour holding `at_ms`.
pub fn hour_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR * 1000) * HOUR
}

/// What `next` adds after `last`.
pub fn spread(last: Last, next: Reading) -> Spread {
    if next.at_ms <= last.at_ms {
        return Spread::Stale;
    }
    if next.value < last.value {
        return Spread::Regressed;
    }
    let delta = next.value - last.value;
    if delta == 0 {
        return Spread::Added(Vec::new());
    }
    let (start, end) = (last.at_ms, next.at_ms);
    let span = u128::from((end - start).unsigned_abs());
    let mut shares = Vec::new();
    let mut given: u64 = 0;
    let mut hour = hour_of(start);
    loop {
        let hour_end_ms = (hour + HOUR) * 1000;
        let upto = hour_end_ms.min(end);
        // Units up to `upto` in proportion to time, rounded down; the last hour takes what
        // is left, so the shares add up to `delta` exactly.
        let cumulative = if upto >= end {
            delta
        } else {
            let elapsed = u128::from((upto - start).unsigned_abs());
            u64::try_from(u128::from(delta) * elapsed / span).unwrap_or(delta)
        };
        let quantity = cumulative - given;
        if quantity > 0 {
            shares.push(Share { hour, quantity });
        }
        given = cumulative;
        if upto >= end {
            break;
        }
        hour += HOUR;
    }
    Spread::Added(shares)
}

/// What a reading of a counter begun at `since_ms` adds after `last`. A counter begun
/// after the last reading taken is another counter — its source lost the old one (a proxy
/// that forgot an endpoint, a counter file set aside) and started again — so all of it is
/// new, counted from 0 at its start; else as [`spread`] says.
pub fn spread_since(last: Last, next: Reading, since_ms: i64) -> Spread {
    if since_ms > last.at_ms {
        spread(
            Reading {
                value: 0,
                at_ms: since_ms,
            },
            next,
        )
    } else {
        spread(last, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = HOUR * 1000;

    #[test]
    fn quantities_and_prices_read_as_people_write_them() {
        assert_eq!(readable("instance_ms:small:spot", 8_999), "0:00:08");
        assert_eq!(
            readable("instance_ms:small:spot", 745 * 3_600_000 + 61_000),
            "745:01:01"
        );
        assert_eq!(
            readable("disk_mib_ms", 3 * DISK_MIB_MS_PER_GIB_HOUR / 2 - 1),
            "1.49 GiB-h"
        );
        assert_eq!(readable("disk_mib_ms", 40 * 3_600_000), "0.03 GiB-h");
        assert_eq!(
            readable("object_storage_mib_ms", 2 * DISK_MIB_MS_PER_GIB_HOUR),
            "2.00 GiB-h"
        );
        assert_eq!(readable("bytes", 12), "12");
        assert_eq!(readable("proxy_bytes_out", 0), "0.00 MiB");
        assert_eq!(readable("proxy_bytes_out", 3 << 19), "1.50 MiB");
        assert_eq!(readable("proxy_bytes_in", BYTES_PER_GIB - 1), "1023.99 MiB");
        assert_eq!(readable("proxy_bytes_in", 5 * BYTES_PER_GIB + (1 << 29)), "5.50 GiB");
        assert_eq!(readable_price("proxy_bytes_out", "0.10", BYTES_PER_GIB), "0.10 / GiB");
        assert_eq!(readable_price("instance_ms:small:spot", "0.16", 3_600_000), "0.16 / h");
        assert_eq!(
            readable_price("disk_mib_ms", "0.125", 730 * DISK_MIB_MS_PER_GIB_HOUR),
            "0.125 / GiB-month"
        );
        assert_eq!(readable_price("bytes", "1", 1000), "1 / 1000");
    }

    fn r(value: u64, at_ms: i64) -> Reading {
        Reading { value, at_ms }
    }

    #[test]
    fn a_difference_is_split_over_the_hours_it_spans() {
        // 10:30 to 12:15, 105 minutes of instance-seconds.
        let start = 10 * H + H / 2;
        let end = 12 * H + H / 4;
        assert_eq!(
            spread(r(1_000, start), r(1_000 + 6_300, end)),
            Spread::Added(vec![
                Share {
                    hour: 10 * HOUR,
                    quantity: 1_800
                },
                Share {
                    hour: 11 * HOUR,
                    quantity: 3_600
                },
                Share {
                    hour: 12 * HOUR,
                    quantity: 900
                },
            ])
        );
        // Within one hour: all of it there.
        assert_eq!(
            spread(r(0, 10 * H + 1), r(5, 10 * H + 2)),
            Spread::Added(vec![Share {
                hour: 10 * HOUR,
                quantity: 5
            }])
        );
        // A reading exactly at an hour's start belongs to that hour's end, not the next.
        assert_eq!(
            spread(r(0, 9 * H), r(3_600, 10 * H)),
            Spread::Added(vec![Share {
                hour: 9 * HOUR,
                quantity: 3_600
            }])
        );
    }

    #[test]
    fn repeated_late_and_regressed_readings_add_nothing() {
        let last = r(500, 10 * H);
        assert_eq!(spread(last, last), Spread::Stale);
        assert_eq!(spread(last, r(400, 10 * H - 1)), Spread::Stale);
        assert_eq!(spread(last, r(900, 10 * H)), Spread::Stale, "same instant: a duplicate");
        assert_eq!(spread(last, r(10, 11 * H)), Spread::Regressed);
        assert_eq!(spread(last, r(500, 11 * H)), Spread::Added(vec![]));
    }

    #[test]
    fn a_counter_begun_after_the_last_reading_is_new_usage_from_its_start() {
        let last = r(5_000, 10 * H);
        let share = |hour, quantity| Share {
            hour: hour * HOUR,
            quantity,
        };
        // The same counter (begun before the last reading): its difference, or nothing.
        assert_eq!(
            spread_since(last, r(5_600, 11 * H), 2 * H),
            spread(last, r(5_600, 11 * H))
        );
        assert_eq!(spread_since(last, r(10, 11 * H), 2 * H), Spread::Regressed);
        // Begun at the last reading's moment: still the same one (a meter's first `last`
        // is its counter's start).
        assert_eq!(spread_since(last, r(10, 11 * H), 10 * H), Spread::Regressed);
        // Begun after it: all of it, from its start, whether above the old value or not.
        assert_eq!(
            spread_since(last, r(30, 12 * H + H / 2), 11 * H + H / 2),
            Spread::Added(vec![share(11, 15), share(12, 15)])
        );
        assert_eq!(
            spread_since(last, r(9_000, 11 * H), 10 * H + H / 2),
            Spread::Added(vec![share(10, 9_000)])
        );
        // Read at its very start: nothing yet.
        assert_eq!(spread_since(last, r(0, 11 * H), 11 * H), Spread::Stale);
    }

    proptest! {
        /// Whatever the readings, the shares add up to the difference exactly, fall in the
        /// hours between the readings, in order, and are never empty.
        #[test]
        fn shares_conserve_the_difference(
            start in -10 * H..100 * H,
            len in 1i64..30 * H,
            v0 in 0u64..u64::MAX / 2,
            delta in 0u64..u64::MAX / 2,
        ) {
            let end = start + len;
            let Spread::Added(shares) = spread(r(v0, start), r(v0 + delta, end)) else {
                panic!("a newer, larger reading adds");
            };
            prop_assert_eq!(shares.iter().map(|s| u128::from(s.quantity)).sum::<u128>(), u128::from(delta));
            for w in shares.windows(2) {
                prop_assert!(w[0].hour < w[1].hour);
            }
            for s in &shares {
                prop_assert!(s.quantity > 0);
                prop_assert!(s.hour >= hour_of(start) && s.hour <= hour_of(end));
            }
        }

        /// Taking a run of readings one by one — with duplicates and late ones mixed in, and
        /// some lost — gives the same hourly totals as taking only the first and the last.
        #[test]
        fn repeats_and_losses_change_no_total(
            steps in proptest::collection::vec((1i64..2 * H, 0u64..5_000, any::<bool>(), any::<bool>()), 1..60),
        ) {
            let first = r(0, 7 * H + 123);
            let mut readings = vec![first];
            for (dt, dv, _, _) in &steps {
                let prev = *readings.last().unwrap();
                readings.push(r(prev.value + dv, prev.at_ms + dt));
            }
            let mut delivered = Vec::new();
            for (i, reading) in readings.iter().enumerate().skip(1) {
                let (_, _, lost, repeated) = steps[i - 1];
                if !lost || i == readings.len() - 1 {
                    delivered.push(*reading);
                    if repeated {
                        delivered.push(*reading);
                        delivered.push(readings[i - 1]);
                    }
                }
            }
            let mut totals = std::collections::BTreeMap::new();
            let mut last = first;
            for reading in delivered {
                if let Spread::Added(shares) = spread(last, reading) {
                    last = reading;
                    for s in shares {
                        *totals.entry(s.hour).or_insert(0u64) += s.quantity;
                    }
                }
            }
            let total: u64 = totals.values().sum();
            prop_assert_eq!(total, readings.last().unwrap().value);
            prop_assert_eq!(last, *readings.last().unwrap());
        }
    }
}
