//! Spend per day: what an org's metered hours cost, day by day (UTC), at the list prices
//! in force at each hour — the console's spend chart. Each day's usage of one dimension,
//! place and price is priced once and rounded to the cent, as invoice lines are; the days
//! of a month can therefore differ from its invoice's lines by a cent here and there.

use crate::prices::{cost_at, PriceBook};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// One hour's usage of a dimension in a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hour<'a> {
    /// The hour's start (Unix seconds).
    pub hour: i64,
    pub dimension: &'a str,
    pub cloud: &'a str,
    pub region: &'a str,
    pub quantity: u64,
}

/// Usage the price book has no price for at its hour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no list price for {dimension} in {cloud}/{region} at {hour}")]
pub struct Unpriced {
    pub dimension: String,
    pub cloud: String,
    pub region: String,
    pub hour: i64,
}

/// The cost of `hours` per day (each day's start, Unix seconds), oldest first; days with no
/// usage are left out.
pub fn daily(hours: &[Hour], book: &PriceBook) -> Result<Vec<(i64, Decimal)>, Unpriced> {
    // (day, dimension, cloud, region, amount, per) -> quantity
    let mut groups: BTreeMap<(i64, &str, &str, &str, Decimal, u64), u64> = BTreeMap::new();
    for h in hours {
        let price = book
            .price_at(h.dimension, h.cloud, h.region, h.hour)
            .ok_or_else(|| Unpriced {
                dimension: h.dimension.to_string(),
                cloud: h.cloud.to_string(),
                region: h.region.to_string(),
                hour: h.hour,
            })?;
        let day = h.hour.div_euclid(DAY) * DAY;
        *groups
            .entry((day, h.dimension, h.cloud, h.region, price.amount, price.per))
            .or_default() += h.quantity;
    }
    let mut days: BTreeMap<i64, Decimal> = BTreeMap::new();
    for ((day, _, _, _, amount, per), quantity) in groups {
        *days.entry(day).or_default() += cost_at(quantity, amount, per);
    }
    Ok(days.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::Price;
    use proptest::prelude::*;

    const H: u64 = 3_600_000;

    fn book() -> PriceBook {
        let p = |amount: &str, from: i64| Price {
            dimension: "instance_ms:small:on_demand".into(),
            cloud: None,
            region: None,
            amount: amount.parse().unwrap(),
            per: H,
            effective_from: from,
        };
        // $0.10 an hour, $0.20 from day 1's noon on.
        PriceBook::new(vec![p("0.10", 0), p("0.20", DAY + 12 * 3600)]).unwrap()
    }

    fn hour(at: i64, quantity: u64) -> Hour<'static> {
        Hour {
            hour: at,
            dimension: "instance_ms:small:on_demand",
            cloud: "c",
            region: "r",
            quantity,
        }
    }

    #[test]
    fn each_day_at_the_prices_of_its_hours() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        type Days = Vec<(i64, Decimal)>;
        let table: Vec<(Vec<Hour>, Days)> = vec![
            (vec![], vec![]),
            // Two instances' hours of day 0.
            (vec![hour(0, 2 * H), hour(3600, 2 * H)], vec![(0, d("0.40"))]),
            // Day 1: 12 h at $0.10, then 12 h at $0.20; day 3 alone (day 2 had nothing).
            (
                (0..24)
                    .map(|h| hour(DAY + h * 3600, H))
                    .chain([hour(3 * DAY, H)])
                    .collect(),
                vec![(DAY, d("3.60")), (3 * DAY, d("0.20"))],
            ),
            // A third of an hour a day, priced together, rounded once: 3 × 20 min = $0.10.
            ((0..3).map(|h| hour(h * 3600, H / 3)).collect(), vec![(0, d("0.10"))]),
        ];
        for (hours, want) in table {
            assert_eq!(daily(&hours, &book()).unwrap(), want, "{hours:?}");
        }
    }

    #[test]
    fn usage_without_a_price_is_named() {
        let mut h = hour(0, H);
        h.dimension = "instance_ms:large:spot";
        let err = daily(&[h], &book()).unwrap_err();
        assert_eq!(err.dimension, "instance_ms:large:spot");
        assert_eq!(err.hour, 0);
    }

    proptest! {
        /// Days hold every hour once: at one price, their sum is the whole range's cost to
        /// within half a cent a day.
        #[test]
        fn the_days_add_up_to_the_range(qs in proptest::collection::vec((0i64..24 * 10, 0u64..10 * H), 0..60)) {
            let one_price = PriceBook::new(vec![Price {
                dimension: "instance_ms:small:on_demand".into(),
                cloud: None,
                region: None,
                amount: "0.10".parse().unwrap(),
                per: H,
                effective_from: 0,
            }])
            .unwrap();
            let hours: Vec<Hour> = qs.iter().map(|(h, q)| hour(h * 3600, *q)).collect();
            let days = daily(&hours, &one_price).unwrap();
            let whole = cost_at(hours.iter().map(|h| h.quantity).sum(), "0.10".parse().unwrap(), H);
            let sum: Decimal = days.iter().map(|(_, a)| *a).sum();
            prop_assert!((sum - whole).abs() <= Decimal::new(5, 3) * Decimal::from(days.len().max(1)));
            prop_assert!(days.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
