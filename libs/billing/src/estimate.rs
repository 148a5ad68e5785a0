//! What a cluster will cost a month before it is created: its members' instance time at
//! the plan's list price (spot or on-demand) and the disk its plan includes, for a month
//! of 730 hours — the figure the console shows under the create form. An estimate, not an
//! invoice: invoices bill what was metered, and a cluster's disk is billed as used.

use crate::meter::{self, DISK_MIB_MS_PER_GIB_HOUR};
use crate::prices::{cost, PriceBook};
use rust_decimal::Decimal;

/// Hours in the month an estimate is for (365 × 24 / 12).
pub const HOURS_PER_MONTH: u64 = 730;

/// The cluster an estimate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape<'a> {
    pub cloud: &'a str,
    pub region: &'a str,
    pub plan: &'a str,
    pub spot: bool,
    /// Primary and standbys.
    pub members: u32,
    /// The disk each member's plan includes, in GiB.
    pub disk_gib: u64,
}

/// A month of a cluster at list prices, in USD, each part rounded to the cent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub instances: Decimal,
    pub disk: Decimal,
    pub total: Decimal,
}

/// A dimension the price book has no price for at that place and time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no list price for {0} in that place")]
pub struct Unpriced(pub String);

/// The monthly estimate of `shape` at the list prices in force at Unix second `at`.
pub fn monthly(book: &PriceBook, shape: &Shape, at: i64) -> Result<Estimate, Unpriced> {
    let market = if shape.spot { "spot" } else { "on_demand" };
    let price = |dimension: String| {
        book.price_at(&dimension, shape.cloud, shape.region, at)
            .ok_or(Unpriced(dimension))
    };
    let members = u64::from(shape.members);
    let instance_ms = members * HOURS_PER_MONTH * 3_600_000;
    let instances = cost(instance_ms, price(meter::dimension("instance_ms", shape.plan, market))?);
    let disk_mib_ms = members * shape.disk_gib * HOURS_PER_MONTH * DISK_MIB_MS_PER_GIB_HOUR;
    let disk = cost(disk_mib_ms, price(meter::dimension("disk_mib_ms", shape.plan, market))?);
    Ok(Estimate {
        instances,
        disk,
        total: instances + disk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::Price;

    fn book() -> PriceBook {
        let p = |dimension: &str, cloud: Option<&str>, amount: &str, per: u64| Price {
            dimension: dimension.into(),
            cloud: cloud.map(Into::into),
            region: None,
            amount: amount.parse().unwrap(),
            per,
            effective_from: 0,
        };
        PriceBook::new(vec![
            p("instance_ms:small:on_demand", None, "0.10", 3_600_000),
            p("instance_ms:small:spot", None, "0.04", 3_600_000),
            p("instance_ms:small:spot", Some("pricey"), "0.05", 3_600_000),
            // $0.125 a GiB-month of 730 hours.
            p("disk_mib_ms", None, "0.125", HOURS_PER_MONTH * DISK_MIB_MS_PER_GIB_HOUR),
        ])
        .unwrap()
    }

    fn shape<'a>(cloud: &'a str, plan: &'a str, spot: bool, members: u32) -> Shape<'a> {
        Shape {
            cloud,
            region: "r1",
            plan,
            spot,
            members,
            disk_gib: 10,
        }
    }

    #[test]
    fn a_month_is_members_times_hours_at_the_place_price() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let table = [
            // One on-demand member: 730 h × $0.10, 10 GiB × $0.125.
            (shape("any", "small", false, 1), d("73.00"), d("1.25")),
            (shape("any", "small", false, 3), d("219.00"), d("3.75")),
            (shape("any", "small", true, 2), d("58.40"), d("2.50")),
            // A cloud's own price wins over the price everywhere.
            (shape("pricey", "small", true, 2), d("73.00"), d("2.50")),
        ];
        for (s, instances, disk) in table {
            let e = monthly(&book(), &s, 1).unwrap();
            assert_eq!(
                (e.instances, e.disk, e.total),
                (instances, disk, instances + disk),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_plan_without_a_price_says_which_dimension() {
        let err = monthly(&book(), &shape("any", "large", false, 1), 1).unwrap_err();
        assert_eq!(err, Unpriced("instance_ms:large:on_demand".into()));
    }

    #[test]
    fn the_repository_book_prices_every_plan_both_ways() {
        let book = PriceBook::repository().unwrap();
        for plan in ["small", "medium", "large"] {
            for spot in [false, true] {
                let e = monthly(&book, &shape("local-a", plan, spot, 2), 1_900_000_000).unwrap();
                assert!(e.total > Decimal::ZERO, "{plan} spot={spot}");
            }
        }
    }
}
