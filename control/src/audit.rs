//! The audit log: every mutating API call and every sign-in, who made it (a user or a key),
//! from where, on what, and how it ended, appended to the org's chain in the store.
//!
//! Each entry's hash is an HMAC over its fields and the previous entry's hash, keyed by the
//! chain key — kept in the store sealed under the master key, which lives outside it (its
//! first value was derived from the master key of the day, [`chain_key`]) — so someone
//! who can write the store can neither edit or remove an entry nor forge a new chain
//! without [`verify`] noticing (removing the newest entries is the one change a chain
//! alone cannot show). Rotating the master key re-seals the chain key, not the chains.

use crate::store::AuditRow;
use crate::AppState;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The chain key a store gets when it first records its master key: derived from that key
/// (what every chain was sealed with before the chain key was kept in the store).
pub fn chain_key(master_key_hex: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let master = hex::decode(master_key_hex.trim()).context("read the master key as hex")?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&master).context("key an HMAC with the master key")?;
    mac.update(b"highrise audit chain v1");
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The hash of `row` (its `hash` field aside) following `prev` (empty for the first).
pub fn seal(key: &[u8], prev: &str, row: &AuditRow) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    let seq = row.seq.to_string();
    let at = row.at_ms.to_string();
    for field in [
        prev,
        &row.org_id,
        &seq,
        &at,
        &row.actor,
        &row.action,
        &row.target,
        &row.source,
        &row.result,
    ] {
        // Length-prefixed, so no two different entries hash the same bytes.
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// What [`verify`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    Intact,
    /// The first entry out of place, and why.
    Broken {
        seq: i64,
        problem: String,
    },
}

/// Checks a chain given in order from its first entry (continuing from `prev` at
/// `expected_seq`, so it can be checked a page at a time). Returns the finding and the
/// hash to continue from.
pub fn verify<'a>(
    key: &[u8],
    rows: impl IntoIterator<Item = &'a AuditRow>,
    mut expected_seq: i64,
    prev: &str,
) -> (Finding, String) {
    let mut prev = prev.to_string();
    for row in rows {
        if row.seq != expected_seq {
            let problem = if row.seq > expected_seq {
                format!("entries {expected_seq}..{} are missing", row.seq - 1)
            } else {
                format!("entry {} appears out of order", row.seq)
            };
            return (
                Finding::Broken {
                    seq: expected_seq,
                    problem,
                },
                prev,
            );
        }
        if seal(key, &prev, row) != row.hash {
            return (
                Finding::Broken {
                    seq: row.seq,
                    problem: format!("entry {} was changed (its hash does not match)", row.seq),
                },
                prev,
            );
        }
        prev = row.hash.clone();
        expected_seq += 1;
    }
    (Finding::Intact, prev)
}

/// Appends an entry to `org_id`'s chain. A failure is logged here and not passed on: the
/// call it records has already happened.
pub async fn record(
    state: &AppState,
    org_id: &str,
    actor: &str,
    action: &str,
    target: &str,
    source: &str,
    result: &str,
) {
    let entry = AuditRow {
        org_id: org_id.to_string(),
        seq: 0,
        at_ms: crate::store::now_ms(),
        actor: clip(actor),
        action: clip(action),
        target: clip(target),
        source: clip(source),
        result: clip(result),
        hash: String::new(),
    };
    if let Err(e) = state
        .store
        .append_audit(&entry, |prev, row| seal(&state.audit_key, prev, row))
        .await
    {
        tracing::error!(org = %org_id, action = %entry.action, "append to the audit log: {e:#}");
    }
}

/// What the handler learned about a mutating call, for its audit entry: filled by the API's
/// caller extractor (and a handler that names its target), read once the call is answered.
#[derive(Clone, Default, Debug)]
pub struct AuditSlot(std::sync::Arc<std::sync::Mutex<AuditNote>>);

#[derive(Default, Debug)]
pub struct AuditNote {
    pub org_id: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
}

impl AuditSlot {
    pub fn note(&self, f: impl FnOnce(&mut AuditNote)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
    pub fn take(&self) -> AuditNote {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// At most 200 characters of what a caller sent.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &[u8], n: i64) -> Vec<AuditRow> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRow {
                    org_id: "org_a".into(),
                    seq,
                    at_ms: 1_000 + seq,
                    actor: format!("user:u{}", seq % 2),
                    action: "POST /v1/clusters".into(),
                    target: format!("cluster c{seq}"),
                    source: "127.0.0.1".into(),
                    result: "202".into(),
                    hash: String::new(),
                };
                r.hash = seal(key, &prev, &r);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies_also_page_by_page() {
        let key = chain_key(&"11".repeat(32)).unwrap();
        let rows = chain(&key, 10);
        assert_eq!(verify(&key, &rows, 1, "").0, Finding::Intact);
        let (f, prev) = verify(&key, &rows[..4], 1, "");
        assert_eq!(f, Finding::Intact);
        assert_eq!(verify(&key, &rows[4..], 5, &prev).0, Finding::Intact);
        assert_eq!(verify(&key, [].iter(), 1, "").0, Finding::Intact);
    }

    #[test]
    fn edits_removals_reorders_and_forgeries_are_found() {
        let key = chain_key(&"11".repeat(32)).unwrap();
        let rows = chain(&key, 6);
        let broken = |rows: &[AuditRow]| match verify(&key, rows, 1, "").0 {
            Finding::Broken { seq, problem } => (seq, problem),
            Finding::Intact => panic!("not detected"),
        };
        type Change = fn(&mut Vec<AuditRow>);
        let cases: &[(&str, Change, i64)] = &[
            ("result edited", |r| r[2].result = "403".into(), 3),
            ("actor edited", |r| r[0].actor = "user:someone-else".into(), 1),
            ("time edited", |r| r[4].at_ms += 1, 5),
            ("entry removed", |r| drop(r.remove(3)), 4),
            ("first removed", |r| drop(r.remove(0)), 1),
            ("two swapped", |r| r.swap(1, 2), 2),
            (
                "renumbered after removal",
                |r| {
                    r.remove(2);
                    for (i, x) in r.iter_mut().enumerate() {
                        x.seq = i as i64 + 1;
                    }
                },
                3,
            ),
        ];
        for (what, change, at) in cases {
            let mut r = rows.clone();
            change(&mut r);
            assert_eq!(broken(&r).0, *at, "{what}");
        }
        // Rehashing an edited chain without the key does not help.
        let other = chain_key(&"22".repeat(32)).unwrap();
        let mut forged = chain(&other, 6);
        forged[2].result = "200".into();
        assert_eq!(broken(&forged).0, 1);
    }
}
