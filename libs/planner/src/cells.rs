//! Cells: a land's hosts are split into cells within every cloud and region, and an org
//! lives in one cell — its clusters' members run on that cell's hosts only — so losing
//! every host of a cell (a bad deploy, a poisoned host image, a noisy tenant's neighbour)
//! touches the orgs of that cell and no other. Placement keeps members in their cell
//! ([`crate::plan`]); this module picks an org's cell.

use std::collections::BTreeMap;

/// The cell a new org goes to: the one with the fewest orgs, the land's order breaking
/// ties; `None` when the land has no cells (it is then one cell, `""`).
pub fn choose_cell<'a>(cells: &'a [String], orgs_in: &BTreeMap<String, usize>) -> Option<&'a str> {
    cells
        .iter()
        .enumerate()
        .min_by_key(|(i, c)| (orgs_in.get(c.as_str()).copied().unwrap_or(0), *i))
        .map(|(_, c)| c.as_str())
}

/// The cell whose proxies serve an org of `org_cell`: its own, or — for an org of a cell
/// the land does not have (made before the land had cells, `""`) — the land's first, so
/// every org has proxies. `None` when the land has no cells (its proxies serve everyone).
pub fn proxy_cell<'a>(cells: &'a [String], org_cell: &str) -> Option<&'a str> {
    cells
        .iter()
        .find(|c| c.as_str() == org_cell)
        .or_else(|| cells.first())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_is_served_by_its_cells_proxies_or_else_the_first_cells() {
        let cells: Vec<String> = ["c1", "c2"].iter().map(|c| c.to_string()).collect();
        for (org, want) in [("c1", "c1"), ("c2", "c2"), ("", "c1"), ("c9", "c1")] {
            assert_eq!(proxy_cell(&cells, org), Some(want), "{org:?}");
        }
        assert_eq!(proxy_cell(&[], ""), None);
        assert_eq!(proxy_cell(&[], "c1"), None);
    }

    #[test]
    fn new_orgs_fill_the_emptiest_cell_in_the_lands_order() {
        let cells: Vec<String> = ["c1", "c2", "c3"].iter().map(|c| c.to_string()).collect();
        let counts = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|(c, n)| (c.to_string(), *n)).collect()
        };
        let cases: &[(&[(&str, usize)], &str)] = &[
            (&[], "c1"),
            (&[("c1", 1)], "c2"),
            (&[("c1", 1), ("c2", 1)], "c3"),
            (&[("c1", 2), ("c2", 1), ("c3", 1)], "c2"),
            // Orgs of a cell the land no longer has count for nothing.
            (&[("gone", 9), ("c1", 1), ("c2", 1), ("c3", 1)], "c1"),
        ];
        for (have, want) in cases {
            assert_eq!(choose_cell(&cells, &counts(have)), Some(*want), "{have:?}");
        }
        assert_eq!(choose_cell(&[], &counts(&[])), None);
    }
}
