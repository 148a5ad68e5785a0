//! Spend against budgets: which alert thresholds a spend has reached, and whether a hard
//! limit refuses new clusters.

use rust_decimal::Decimal;

/// Spend alerts fire at these shares (percent) of a budget, once each.
pub const ALERT_THRESHOLDS: [u32; 3] = [50, 80, 100];

/// The thresholds (of [`ALERT_THRESHOLDS`]) that `spent` has reached of `budget`. A budget
/// of zero is reached by any spend above zero.
pub fn reached(spent: Decimal, budget: Decimal) -> Vec<u32> {
    ALERT_THRESHOLDS
        .into_iter()
        .filter(|t| {
            if budget <= Decimal::ZERO {
                return spent > Decimal::ZERO;
            }
            spent * Decimal::from(100) >= budget * Decimal::from(*t)
        })
        .collect()
}

/// Whether a month's spend so far leaves no room under its hard limit.
pub fn over_limit(spent: Decimal, limit: Decimal) -> bool {
    spent >= limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn thresholds_are_reached_at_their_share_exactly() {
        for (spent, budget, want) in [
            ("0", "100", vec![]),
            ("49.99", "100", vec![]),
            ("50", "100", vec![50]),
            ("79.99", "100", vec![50]),
            ("80", "100", vec![50, 80]),
            ("100", "100", vec![50, 80, 100]),
            ("250", "100", vec![50, 80, 100]),
            ("0", "0", vec![]),
            ("0.01", "0", vec![50, 80, 100]),
        ] {
            assert_eq!(reached(d(spent), d(budget)), want, "{spent} of {budget}");
        }
    }

    #[test]
    fn the_limit_refuses_at_and_over_it() {
        assert!(!over_limit(d("9.99"), d("10")));
        assert!(over_limit(d("10"), d("10")));
        assert!(over_limit(d("0"), d("0")));
    }
}
