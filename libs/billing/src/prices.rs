//! List prices and what usage costs.
//!
//! A [`PriceBook`] holds every price Highrise has ever listed: per dimension, for one
//! region of one cloud, for a whole cloud, or everywhere, each from a date on (a new price
//! is a new entry; nothing is edited, so an old invoice can always be explained). The price
//! of an hour's usage is the most specific entry in force at that hour's start. Amounts are
//! decimals; an invoice line is its quantity times its unit price, rounded once to the
//! cent — so an invoice's total is exactly the sum of its lines.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// One listed price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// What is metered, e.g. `instance_seconds:standard:on_demand`, `storage_gb_seconds`.
    pub dimension: String,
    /// `None`: every cloud.
    pub cloud: Option<String>,
    /// `None`: every region of the cloud (or everywhere).
    pub region: Option<String>,
    /// The price of `per` units (e.g. 3600 instance-seconds: an hour).
    pub amount: Decimal,
    pub per: u64,
    /// In force from this Unix second on, until a later entry for the same place.
    pub effective_from: i64,
}

/// The list prices that ship with the repository (`prices/list.toml`).
pub const REPOSITORY_LIST_PRICES: &str = include_str!("../../../prices/list.toml");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("price book: {0}")]
    Parse(String),
    #[error("price of {0} is negative")]
    Negative(String),
    #[error("price of {0} is per 0 units")]
    PerZero(String),
    #[error("a region is priced without its cloud ({0})")]
    RegionWithoutCloud(String),
    #[error("two prices of {0} for the same place start at the same second")]
    Duplicate(String),
}

/// Every listed price, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook {
    prices: Vec<Price>,
}

/// The price book's file (TOML): a version and its entries, each in force from an RFC 3339
/// time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookFile {
    version: String,
    #[serde(rename = "price", default)]
    prices: Vec<EntryFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    dimension: String,
    cloud: Option<String>,
    region: Option<String>,
    amount: Decimal,
    per: u64,
    effective_from: String,
}

impl PriceBook {
    /// Reads and checks a price book file (see `prices/list.toml`); returns it and its
    /// version.
    pub fn parse(text: &str) -> Result<(Self, String), PriceError> {
        let file: BookFile = toml::from_str(text).map_err(|e| PriceError::Parse(e.to_string()))?;
        let prices = file
            .prices
            .into_iter()
            .map(|e| {
                let from: jiff::Timestamp = e.effective_from.parse().map_err(|err| {
                    PriceError::Parse(format!(
                        "{}: effective_from {:?} is not an RFC 3339 time with its offset ({err})",
                        e.dimension, e.effective_from
                    ))
                })?;
                Ok(Price {
                    dimension: e.dimension,
                    cloud: e.cloud,
                    region: e.region,
                    amount: e.amount,
                    per: e.per,
                    effective_from: from.as_second(),
                })
            })
            .collect::<Result<Vec<_>, PriceError>>()?;
        Ok((Self::new(prices)?, file.version))
    }

    /// The repository's list prices.
    pub fn repository() -> Result<Self, PriceError> {
        Self::parse(REPOSITORY_LIST_PRICES).map(|(book, _)| book)
    }

    pub fn new(prices: Vec<Price>) -> Result<Self, PriceError> {
        let mut seen = std::collections::HashSet::new();
        for p in &prices {
            if p.amount.is_sign_negative() {
                return Err(PriceError::Negative(p.dimension.clone()));
            }
            if p.per == 0 {
                return Err(PriceError::PerZero(p.dimension.clone()));
            }
            if p.region.is_some() && p.cloud.is_none() {
                return Err(PriceError::RegionWithoutCloud(p.dimension.clone()));
            }
            if !seen.insert((&p.dimension, &p.cloud, &p.region, p.effective_from)) {
                return Err(PriceError::Duplicate(p.dimension.clone()));
            }
        }
        Ok(Self { prices })
    }

    /// Of `dimensions`, those the book has no entry for at all (usage of them could never
    /// be invoiced).
    pub fn unpriced<'a>(&self, dimensions: &'a [String]) -> Vec<&'a str> {
        dimensions
            .iter()
            .filter(|d| !self.prices.iter().any(|p| &p.dimension == *d))
            .map(String::as_str)
            .collect()
    }

    /// The price of `dimension` in `cloud`/`region` at Unix second `at`: the most specific
    /// place that has one in force (region, then cloud, then everywhere), its latest entry
    /// from before `at`.
    pub fn price_at(&self, dimension: &str, cloud: &str, region: &str, at: i64) -> Option<&Price> {
        let specificity = |p: &Price| match (&p.cloud, &p.region) {
            (Some(c), Some(r)) if c == cloud && r == region => Some(2),
            (Some(c), None) if c == cloud => Some(1),
            (None, None) => Some(0),
            _ => None,
        };
        self.prices
            .iter()
            .filter(|p| p.dimension == dimension && p.effective_from <= at)
            .filter_map(|p| specificity(p).map(|s| (s, p.effective_from, p)))
            .max_by_key(|(s, from, _)| (*s, *from))
            .map(|(_, _, p)| p)
    }
}

/// What `quantity` units cost at `price`, rounded to the cent (half away from zero).
pub fn cost(quantity: u64, price: &Price) -> Decimal {
    cost_at(quantity, price.amount, price.per)
}

/// What `quantity` units cost at `amount` per `per` units, rounded to the cent (half away
/// from zero).
pub fn cost_at(quantity: u64, amount: Decimal, per: u64) -> Decimal {
    (Decimal::from(quantity) * amount / Decimal::from(per.max(1)))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn price(dimension: &str, cloud: Option<&str>, region: Option<&str>, amount: &str, from: i64) -> Price {
        Price {
            dimension: dimension.into(),
            cloud: cloud.map(str::to_string),
            region: region.map(str::to_string),
            amount: Decimal::from_str(amount).unwrap(),
            per: 3600,
            effective_from: from,
        }
    }

    #[test]
    fn the_most_specific_price_in_force_applies() {
        let d = "instance_seconds:standard:on_demand";
        let book = PriceBook::new(vec![
            price(d, None, None, "0.10", 0),
            price(d, Some("aws"), None, "0.12", 0),
            price(d, Some("aws"), Some("us-east-1"), "0.11", 0),
            price(d, Some("aws"), Some("us-east-1"), "0.09", 1_000),
        ])
        .unwrap();
        let at = |cloud, region, t| book.price_at(d, cloud, region, t).map(|p| p.amount.to_string());
        for (cloud, region, t, want) in [
            ("aws", "us-east-1", 10, Some("0.11")),
            ("aws", "us-east-1", 1_000, Some("0.09")),
            ("aws", "eu-west-1", 10, Some("0.12")),
            ("gcp", "us-central1", 10, Some("0.10")),
        ] {
            assert_eq!(at(cloud, region, t).as_deref(), want, "{cloud}/{region} at {t}");
        }
        assert!(book.price_at(d, "aws", "us-east-1", -1).is_none(), "before any price");
        assert!(book.price_at("other", "aws", "us-east-1", 10).is_none());
    }

    #[test]
    fn bad_books_are_refused() {
        let d = "x";
        for (prices, err) in [
            (vec![price(d, None, None, "-1", 0)], PriceError::Negative(d.into())),
            (
                vec![price(d, None, Some("r"), "1", 0)],
                PriceError::RegionWithoutCloud(d.into()),
            ),
            (
                vec![price(d, Some("a"), None, "1", 5), price(d, Some("a"), None, "2", 5)],
                PriceError::Duplicate(d.into()),
            ),
            (
                vec![Price {
                    per: 0,
                    ..price(d, None, None, "1", 0)
                }],
                PriceError::PerZero(d.into()),
            ),
        ] {
            assert_eq!(PriceBook::new(prices).unwrap_err(), err);
        }
    }

    #[test]
    fn the_repository_list_prices_parse_and_price_every_plan_and_market() {
        let book = PriceBook::repository().unwrap();
        for plan in ["small", "medium", "large"] {
            for market in ["on_demand", "spot"] {
                let d = crate::meter::dimension("instance_ms", plan, market);
                let p = book.price_at(&d, "local-a", "region-1", 1_796_083_200).unwrap();
                assert!(p.amount > Decimal::ZERO, "{d}");
            }
        }
        assert_eq!(
            book.unpriced(&["disk_mib_ms".to_string(), "bytes".to_string()]),
            ["bytes"]
        );
        let disk = book.price_at("disk_mib_ms", "aws", "us-east-1", 1_796_083_200).unwrap();
        // $0.125 a GiB-month of 730 hours.
        assert_eq!(
            (disk.amount.to_string().as_str(), disk.per),
            ("0.125", 730 * crate::meter::DISK_MIB_MS_PER_GIB_HOUR)
        );
    }

    #[test]
    fn price_files_with_mistakes_are_refused_with_the_reason() {
        let entry = |from: &str| {
            format!(
                "version = \"v\"\n[[price]]\ndimension = \"d\"\namount = \"1\"\nper = 1\neffective_from = \"{from}\"\n"
            )
        };
        let (book, version) = PriceBook::parse(&entry("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(version, "v");
        assert_eq!(
            book.price_at("d", "c", "r", 1_767_225_600).unwrap().effective_from,
            1_767_225_600
        );
        let err = PriceBook::parse(&entry("2026-01-01")).unwrap_err().to_string();
        assert!(err.contains("not an RFC 3339 time"), "{err}");
        let err = PriceBook::parse("version = \"v\"\n[[price]]\ndimension = \"d\"\n").unwrap_err();
        assert!(matches!(err, PriceError::Parse(_)), "{err}");
        let twice = format!(
            "{}[[price]]\ndimension = \"d\"\namount = \"2\"\nper = 1\neffective_from = \"2026-01-01T00:00:00Z\"\n",
            entry("2026-01-01T00:00:00Z")
        );
        assert_eq!(PriceBook::parse(&twice).unwrap_err(), PriceError::Duplicate("d".into()));
    }

    #[test]
    fn costs_are_rounded_once_to_the_cent() {
        let p = price("x", None, None, "0.125", 0);
        // An hour at 0.125: 0.13 (half away from zero); half an hour: 0.0625 -> 0.06.
        assert_eq!(cost(3600, &p).to_string(), "0.13");
        assert_eq!(cost(1800, &p).to_string(), "0.06");
        assert_eq!(cost(0, &p), Decimal::ZERO);
        // A month of seconds at 0.0416 an hour, exactly.
        let p = price("x", None, None, "0.0416", 0);
        assert_eq!(cost(30 * 24 * 3600, &p).to_string(), "29.95");
    }

    proptest! {
        /// A cost is never negative, never off by more than half a cent from the exact
        /// product, and grows with the quantity.
        #[test]
        fn costs_are_close_and_monotonic(q in 0u64..10_000_000_000, cents in 0u64..100_000, extra in 0u64..1000) {
            let p = Price {
                amount: Decimal::new(cents as i64, 4),
                ..price("x", None, None, "0", 0)
            };
            let exact = Decimal::from(q) * p.amount / Decimal::from(p.per);
            let c = cost(q, &p);
            prop_assert!(c >= Decimal::ZERO);
            prop_assert!((c - exact).abs() <= Decimal::new(5, 3));
            prop_assert!(cost(q + extra, &p) >= c);
        }
    }
}
