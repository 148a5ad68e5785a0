//! The margin report: per cluster, what its usage is billed at list prices and what the
//! land charges us for the same usage, side by side.
//!
//! Both sides are exact decimals (no rounding: a few seconds of usage still show their
//! margin); the invoice rounds its own lines.

use crate::invoice::Line;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One cluster's revenue, cost and margin over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMargin {
    pub cluster_id: String,
    pub cluster: String,
    /// The dimensions it used (e.g. `instance_ms:small:spot`).
    pub dimensions: Vec<String>,
    /// What its usage is billed, exact.
    pub price: Decimal,
    /// What the same usage costs us, exact.
    pub cost: Decimal,
    /// `price - cost`.
    pub margin: Decimal,
    /// `margin / price` in percent, to two decimals (`None` for a price of zero).
    pub margin_pct: Option<Decimal>,
}

/// Usage whose cost the land's prices do not give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no cost for {dimension} in {cloud}/{region}: the land's price book does not price it")]
pub struct Uncosted {
    pub dimension: String,
    pub cloud: String,
    pub region: String,
}

/// Per cluster of `lines` (an invoice's), its price and — through `cost_of(dimension,
/// cloud, region)`, what one unit of the dimension costs us — its cost.
pub fn margins(
    lines: &[Line],
    cost_of: impl Fn(&str, &str, &str) -> Option<Decimal>,
) -> Result<Vec<ClusterMargin>, Uncosted> {
    let mut by_cluster: BTreeMap<(String, String), ClusterMargin> = BTreeMap::new();
    for l in lines {
        let unit_cost = cost_of(&l.dimension, &l.cloud, &l.region).ok_or_else(|| Uncosted {
            dimension: l.dimension.clone(),
            cloud: l.cloud.clone(),
            region: l.region.clone(),
        })?;
        let m = by_cluster
            .entry((l.cluster.clone(), l.cluster_id.clone()))
            .or_insert_with(|| ClusterMargin {
                cluster_id: l.cluster_id.clone(),
                cluster: l.cluster.clone(),
                dimensions: Vec::new(),
                price: Decimal::ZERO,
                cost: Decimal::ZERO,
                margin: Decimal::ZERO,
                margin_pct: None,
            });
        if !m.dimensions.contains(&l.dimension) {
            m.dimensions.push(l.dimension.clone());
        }
        m.price += Decimal::from(l.quantity) * l.unit_price / Decimal::from(l.per.max(1));
        m.cost += Decimal::from(l.quantity) * unit_cost;
    }
    Ok(by_cluster
        .into_values()
        .map(|mut m| {
            m.margin = m.price - m.cost;
            m.margin_pct = (!m.price.is_zero()).then(|| (m.margin * Decimal::from(100) / m.price).round_dp(2));
            m
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn line(cluster: &str, dimension: &str, quantity: u64, unit_price: &str) -> Line {
        Line {
            carried: false,
            cluster_id: format!("id-{cluster}"),
            cluster: cluster.into(),
            dimension: dimension.into(),
            cloud: "aws".into(),
            region: "us-east-1".into(),
            first_hour: 0,
            last_hour: 0,
            quantity,
            unit_price: d(unit_price),
            per: 3_600_000,
            price_from: 0,
            amount: Decimal::ZERO,
        }
    }

    /// A month of two HA pairs of `small`: on spot at $0.08 an instance-hour on hosts that
    /// cost $0.3612 an hour for 8 slots, on demand at $0.16 on hosts at $0.9492.
    #[test]
    fn a_spot_ha_pair_earns_a_wider_margin_than_an_on_demand_one() {
        let month = 2 * 720 * 3_600_000;
        let lines = [
            line("spot-ha", "instance_ms:small:spot", month, "0.08"),
            line("od-ha", "instance_ms:small:on_demand", month, "0.16"),
        ];
        let cost = |dim: &str, _: &str, _: &str| {
            let host = if dim.ends_with(":spot") {
                d("0.3612")
            } else {
                d("0.9492")
            };
            Some(host / Decimal::from(8) / Decimal::from(3_600_000))
        };
        let m = margins(&lines, cost).unwrap();
        let row = |name: &str| m.iter().find(|r| r.cluster == name).unwrap().clone();
        let (spot, od) = (row("spot-ha"), row("od-ha"));
        assert_eq!(
            (spot.price, spot.cost.round_dp(6), spot.margin_pct),
            (d("115.2"), d("65.016"), Some(d("43.56")))
        );
        assert_eq!(
            (od.price, od.cost.round_dp(6), od.margin_pct),
            (d("230.4"), d("170.856"), Some(d("25.84")))
        );
        assert_eq!(spot.dimensions, ["instance_ms:small:spot"]);
    }

    #[test]
    fn usage_the_land_does_not_price_is_an_error() {
        let err = margins(&[line("a", "instance_ms:huge:spot", 1, "1")], |_, _, _| None).unwrap_err();
        assert_eq!(err.dimension, "instance_ms:huge:spot");
        let none = margins(&[line("a", "instance_ms:small:spot", 0, "0")], |_, _, _| {
            Some(Decimal::ONE)
        })
        .unwrap();
        assert_eq!(none[0].margin_pct, None, "no price, no percentage");
    }
}
