//! An invoice from hourly usage and the price book.
//!
//! One line per cluster, dimension, place and price in force: the hours of a month that
//! one price covers are summed and priced once, rounded once to the cent ([`cost`]); a
//! price change within the month splits the line. The total is the sum of the lines, so
//! an invoice always adds up. Credits, then a prepaid commitment, are drawn down from the
//! total ([`settle`]).
//!
//! A closed month's invoice is issued (frozen) [`ISSUE_AFTER`] its end. Usage recorded
//! later for an issued month is not lost and not re-priced on the issued invoice: it rides
//! on the next invoice issued ([`carried`]), the way late marketplace records ride on the
//! next hour.

use crate::prices::{cost_at, PriceBook};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Usage of one hour, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourUsage {
    pub cluster_id: String,
    pub cluster: String,
    pub dimension: String,
    pub cloud: String,
    pub region: String,
    /// The hour's start, Unix seconds.
    pub hour: i64,
    pub quantity: u64,
}

/// A line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Usage of an earlier month carried to this invoice.
    pub carried: bool,
    pub cluster_id: String,
    pub cluster: String,
    pub dimension: String,
    pub cloud: String,
    pub region: String,
    /// The first and the last hour (starts, Unix seconds) of the usage priced here.
    pub first_hour: i64,
    pub last_hour: i64,
    pub quantity: u64,
    /// The list price: `unit_price` per `per` units, in force from `price_from`.
    pub unit_price: Decimal,
    pub per: u64,
    pub price_from: i64,
    /// `quantity × unit_price / per`, rounded to the cent.
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no list price for {dimension} in {cloud}/{region} at {hour} (Unix seconds): add one to the price book")]
pub struct Unpriced {
    pub dimension: String,
    pub cloud: String,
    pub region: String,
    pub hour: i64,
}

/// The priced lines of `usage`, ordered by cluster, dimension, place and price, and their
/// total. Usage of hours before `since` (the period's start) is carried from earlier
/// months: its lines are kept apart from the period's own. Usage with no price in force
/// is an error, never a line left out.
pub fn lines(usage: &[HourUsage], book: &PriceBook, since: i64) -> Result<(Vec<Line>, Decimal), Unpriced> {
    type Key = (bool, String, String, String, String, i64, String);
    let mut acc: BTreeMap<Key, Line> = BTreeMap::new();
    for u in usage {
        let price = book
            .price_at(&u.dimension, &u.cloud, &u.region, u.hour)
            .ok_or_else(|| Unpriced {
                dimension: u.dimension.clone(),
                cloud: u.cloud.clone(),
                region: u.region.clone(),
                hour: u.hour,
            })?;
        // The price's place, too: two entries may start at the same second in different
        // places (region, cloud, everywhere).
        let place = format!("{:?}/{:?}", price.cloud, price.region);
        let key = (
            u.hour < since,
            u.cluster_id.clone(),
            u.dimension.clone(),
            format!("{}/{}", u.cloud, u.region),
            place,
            price.effective_from,
            price.amount.to_string(),
        );
        let line = acc.entry(key).or_insert_with(|| Line {
            carried: u.hour < since,
            cluster_id: u.cluster_id.clone(),
            cluster: u.cluster.clone(),
            dimension: u.dimension.clone(),
            cloud: u.cloud.clone(),
            region: u.region.clone(),
            first_hour: u.hour,
            last_hour: u.hour,
            quantity: 0,
            unit_price: price.amount,
            per: price.per,
            price_from: price.effective_from,
            amount: Decimal::ZERO,
        });
        line.quantity += u.quantity;
        line.first_hour = line.first_hour.min(u.hour);
        line.last_hour = line.last_hour.max(u.hour);
        if line.cluster.is_empty() {
            line.cluster = u.cluster.clone();
        }
    }
    let mut lines: Vec<Line> = acc.into_values().collect();
    let mut total = Decimal::ZERO;
    for l in &mut lines {
        l.amount = cost_at(l.quantity, l.unit_price, l.per);
        total += l.amount;
    }
    lines.sort_by(|a, b| {
        (
            &a.cluster,
            &a.cluster_id,
            &a.dimension,
            &a.cloud,
            &a.region,
            a.first_hour,
        )
            .cmp(&(
                &b.cluster,
                &b.cluster_id,
                &b.dimension,
                &b.cloud,
                &b.region,
                b.first_hour,
            ))
    });
    Ok((lines, total))
}

/// A month's invoice is issued this long after the month ends (seconds): readings late by
/// less land on it; later ones are carried to the next invoice.
pub const ISSUE_AFTER: i64 = 6 * 3600;

/// Whether the invoice of the month ending at `month_end` (Unix seconds) is due to be
/// issued at `now`.
pub fn due(month_end: i64, now: i64) -> bool {
    now >= month_end.saturating_add(ISSUE_AFTER)
}

/// Usage of issued months that no issued invoice holds yet: per cluster, dimension and
/// place, what is `recorded` (summed over every issued month) less what the issued
/// invoices hold (`invoiced`, summed likewise), as usage of `hour` (the last hour before
/// the invoice it rides on). Cumulative, so a late reading is carried exactly once
/// however many invoices later it arrives. Hours are ignored in both inputs.
pub fn carried(recorded: &[HourUsage], invoiced: &[HourUsage], hour: i64) -> Vec<HourUsage> {
    type Key = (String, String, String, String);
    let key = |u: &HourUsage| {
        (
            u.cluster_id.clone(),
            u.dimension.clone(),
            u.cloud.clone(),
            u.region.clone(),
        )
    };
    let mut held: BTreeMap<Key, u64> = BTreeMap::new();
    for u in invoiced {
        *held.entry(key(u)).or_default() += u.quantity;
    }
    let mut acc: BTreeMap<Key, HourUsage> = BTreeMap::new();
    for u in recorded {
        let row = acc.entry(key(u)).or_insert_with(|| HourUsage {
            hour,
            quantity: 0,
            ..u.clone()
        });
        row.quantity += u.quantity;
        if row.cluster.is_empty() {
            row.cluster = u.cluster.clone();
        }
    }
    acc.into_iter()
        .filter_map(|(k, mut u)| {
            // Usage is only ever added; an invoice never holds more than was recorded.
            u.quantity = u.quantity.saturating_sub(held.get(&k).copied().unwrap_or(0));
            (u.quantity > 0).then_some(u)
        })
        .collect()
}

/// What is drawn down from an invoice's total and what is left to pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub credits_applied: Decimal,
    pub commitment_applied: Decimal,
    pub due: Decimal,
}

/// Draws `total` down from the org's `credits`, then from its prepaid `commitment` balance
/// (neither below zero), and leaves the rest due.
pub fn settle(total: Decimal, credits: Decimal, commitment: Decimal) -> Settlement {
    let credits_applied = total.min(credits.max(Decimal::ZERO));
    let commitment_applied = (total - credits_applied).min(commitment.max(Decimal::ZERO));
    Settlement {
        credits_applied,
        commitment_applied,
        due: total - credits_applied - commitment_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::Price;
    use proptest::prelude::*;
    use std::str::FromStr;

    const H: i64 = 3600;

    fn book() -> PriceBook {
        let p = |d: &str, cloud: Option<&str>, amount: &str, from: i64| Price {
            dimension: d.into(),
            cloud: cloud.map(str::to_string),
            region: None,
            amount: Decimal::from_str(amount).unwrap(),
            per: 3_600_000,
            effective_from: from,
        };
        PriceBook::new(vec![
            p("instance_ms:small:spot", None, "0.08", 0),
            p("instance_ms:small:spot", None, "0.10", 100 * H),
            p("instance_ms:small:on_demand", None, "0.16", 0),
            p("instance_ms:small:on_demand", Some("aws"), "0.17", 0),
        ])
        .unwrap()
    }

    fn usage(cluster: &str, dimension: &str, cloud: &str, hour: i64, quantity: u64) -> HourUsage {
        HourUsage {
            cluster_id: format!("id-{cluster}"),
            cluster: cluster.into(),
            dimension: dimension.into(),
            cloud: cloud.into(),
            region: "r".into(),
            hour,
            quantity,
        }
    }

    #[test]
    fn hours_under_one_price_make_one_line_and_a_price_change_splits_it() {
        let spot = "instance_ms:small:spot";
        let od = "instance_ms:small:on_demand";
        let mut u: Vec<HourUsage> = (90..110).map(|h| usage("a", spot, "gcp", h * H, 3_600_000)).collect();
        u.push(usage("b", od, "aws", 5 * H, 1_800_000));
        u.push(usage("b", od, "gcp", 5 * H, 1_800_000));
        let (lines, total) = lines(&u, &book(), 0).unwrap();
        let shown: Vec<(&str, &str, u64, String, String)> = lines
            .iter()
            .map(|l| {
                (
                    l.cluster.as_str(),
                    l.cloud.as_str(),
                    l.quantity,
                    l.unit_price.to_string(),
                    l.amount.to_string(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("a", "gcp", 10 * 3_600_000, "0.08".into(), "0.80".into()),
                ("a", "gcp", 10 * 3_600_000, "0.10".into(), "1.00".into()),
                ("b", "aws", 1_800_000, "0.17".into(), "0.09".into()),
                ("b", "gcp", 1_800_000, "0.16".into(), "0.08".into()),
            ]
        );
        assert_eq!((lines[0].first_hour, lines[0].last_hour), (90 * H, 99 * H));
        assert_eq!(total.to_string(), "1.97");
    }

    #[test]
    fn carried_usage_makes_lines_of_its_own() {
        let spot = "instance_ms:small:spot";
        let u = [
            usage("a", spot, "aws", 9 * H, 100),
            usage("a", spot, "aws", 10 * H, 200),
        ];
        let (lines, _) = lines(&u, &book(), 10 * H).unwrap();
        let shown: Vec<(bool, u64)> = lines.iter().map(|l| (l.carried, l.quantity)).collect();
        assert_eq!(shown, [(true, 100), (false, 200)]);
    }

    #[test]
    fn usage_without_a_price_is_an_error_not_a_missing_line() {
        let err = lines(&[usage("a", "instance_ms:huge:spot", "aws", 0, 1)], &book(), 0).unwrap_err();
        assert_eq!(err.dimension, "instance_ms:huge:spot");
        assert!(err.to_string().contains("add one to the price book"));
    }

    #[test]
    fn credits_then_the_commitment_are_drawn_down() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        for (total, credits, commitment, want) in [
            ("100", "30", "50", ("30", "50", "20")),
            ("100", "0", "500", ("0", "100", "0")),
            ("100", "150", "500", ("100", "0", "0")),
            ("0", "10", "10", ("0", "0", "0")),
            ("10", "-5", "-5", ("0", "0", "10")),
        ] {
            let s = settle(d(total), d(credits), d(commitment));
            assert_eq!(
                (s.credits_applied, s.commitment_applied, s.due),
                (d(want.0), d(want.1), d(want.2)),
                "{total} {credits} {commitment}"
            );
        }
    }

    #[test]
    fn an_invoice_is_issued_six_hours_after_its_month() {
        assert!(!due(1000 * H, 1000 * H));
        assert!(!due(1000 * H, 1006 * H - 1));
        assert!(due(1000 * H, 1006 * H));
        assert!(!due(i64::MAX, i64::MAX - 1));
    }

    #[test]
    fn only_what_no_issued_invoice_holds_is_carried() {
        let spot = "instance_ms:small:spot";
        let recorded = [
            usage("a", spot, "aws", 0, 100),
            usage("a", spot, "aws", H, 50),
            usage("a", spot, "gcp", H, 7),
            usage("b", spot, "aws", 0, 10),
        ];
        let invoiced = [usage("a", spot, "aws", 5 * H, 120), usage("b", spot, "aws", 0, 10)];
        let c = carried(&recorded, &invoiced, 9 * H);
        let shown: Vec<(&str, &str, i64, u64)> = c
            .iter()
            .map(|u| (u.cluster.as_str(), u.cloud.as_str(), u.hour, u.quantity))
            .collect();
        assert_eq!(shown, [("a", "aws", 9 * H, 30), ("a", "gcp", 9 * H, 7)]);
        assert!(carried(&recorded, &recorded, 0).is_empty());
    }

    proptest! {
        /// However usage arrives between issuings — some before a month's invoice, some
        /// after it, some several invoices late — every unit is invoiced exactly once.
        #[test]
        fn late_usage_is_invoiced_exactly_once(arrivals in proptest::collection::vec((0usize..2, 0usize..5, 1u64..1000), 0..60)) {
            // (cluster, the invoice issued after it arrived, quantity)
            let clusters = ["a", "b"];
            let spot = "instance_ms:small:spot";
            let mut recorded: Vec<HourUsage> = Vec::new();
            let mut invoiced: Vec<HourUsage> = Vec::new();
            for issue in 0..5 {
                for &(c, at, q) in &arrivals {
                    if at == issue {
                        recorded.push(usage(clusters[c], spot, "aws", 0, q));
                    }
                }
                let c = carried(&recorded, &invoiced, issue as i64 * H);
                invoiced.extend(c);
            }
            for name in clusters {
                let sum = |v: &[HourUsage]| v.iter().filter(|u| u.cluster == name).map(|u| u.quantity).sum::<u64>();
                prop_assert_eq!(sum(&invoiced), sum(&recorded));
            }
        }

        /// Whatever the usage, the total is the sum of the lines, every line is its
        /// quantity at its price rounded once, and the total is within half a cent a line
        /// of the exact product of usage and price; the quantities add up to the usage.
        #[test]
        fn an_invoice_adds_up(hours in proptest::collection::vec((0usize..3, 0usize..2, 0i64..200, 0u64..3_600_000), 0..200)) {
            let clusters = ["a", "b", "c"];
            let dims = ["instance_ms:small:spot", "instance_ms:small:on_demand"];
            let u: Vec<HourUsage> = hours
                .iter()
                .map(|&(c, d, h, q)| usage(clusters[c], dims[d], "aws", h * H, q))
                .collect();
            let book = book();
            let (lines, total) = lines(&u, &book, 0).unwrap();
            prop_assert_eq!(total, lines.iter().map(|l| l.amount).sum::<Decimal>());
            prop_assert_eq!(lines.iter().map(|l| l.quantity).sum::<u64>(), u.iter().map(|x| x.quantity).sum::<u64>());
            let mut exact = Decimal::ZERO;
            for x in &u {
                let p = book.price_at(&x.dimension, &x.cloud, &x.region, x.hour).unwrap();
                exact += Decimal::from(x.quantity) * p.amount / Decimal::from(p.per);
            }
            for l in &lines {
                prop_assert_eq!(l.amount, cost_at(l.quantity, l.unit_price, l.per));
            }
            prop_assert!((total - exact).abs() <= Decimal::new(5, 3) * Decimal::from(lines.len().max(1)));
        }
    }
}
