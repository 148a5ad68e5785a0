//! Clusters' server certificates. Every member of a cluster serves TCP over TLS only,
//! with one certificate for the cluster, issued by the land's CA for a name that names
//! the cluster (`<cluster id>.db.<domain>`); the proxies and the cluster's standbys verify
//! that name (`verify-full`), so a server of another cluster — a stale route, a reused
//! address — cannot pass for this one, and nobody on the network between reads a session.
//!
//! The certificate is made the first time a member needs it and kept in the store with
//! its key sealed under the master key; it is renewed [`RENEW_BEFORE_SECS`] before it
//! expires (the agents take the new one with their desired state and reload).

use crate::ca::SERVER_VALIDITY;
use crate::store::{now, ClusterCertRow};
use crate::AppState;
use anyhow::{Context, Result};
use highrise_api::MemberTls;

/// How long before its end a certificate is replaced.
pub(crate) const RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;

/// The name a cluster's certificate carries (a DNS label: `_` becomes `-`).
pub(crate) fn server_name(cluster_id: &str, domain: &str) -> String {
    format!("{}.db.{domain}", cluster_id.replace('_', "-").to_ascii_lowercase())
}

/// Whether a stored certificate must be replaced: it carries another name (the land's
/// domain changed) or ends within [`RENEW_BEFORE_SECS`].
fn renewal_due(row: &ClusterCertRow, name: &str, now: i64) -> bool {
    row.server_name != name || row.not_after - now < RENEW_BEFORE_SECS
}

/// What a sealed key is bound to: the key of one cluster opens as no other's.
pub(crate) fn seal_name(cluster_id: &str) -> String {
    format!("cluster-tls-key/{cluster_id}")
}

/// The cluster's TLS identity for its members; `None` on a land without a CA.
pub(crate) async fn member_tls(state: &AppState, cluster_id: &str) -> Result<Option<MemberTls>> {
    let Some(ca) = &state.cfg.ca else {
        return Ok(None);
    };
    let name = server_name(cluster_id, &state.cfg.tls_domain);
    let now = now();
    let stored = state
        .store
        .cluster_cert(cluster_id)
        .await
        .context("read the cluster's certificate")?;
    let row = match stored {
        Some(row) if !renewal_due(&row, &name, now) => row,
        old => {
            let issued = ca
                .issue_server(std::slice::from_ref(&name))
                .context("issue the cluster's certificate")?;
            let new = ClusterCertRow {
                server_name: name.clone(),
                cert_pem: issued.cert_pem,
                key_sealed: state
                    .keys
                    .seal_secret(&seal_name(cluster_id), issued.key_pem.as_bytes())?,
                not_after: now + i64::try_from(SERVER_VALIDITY.as_secs()).unwrap_or(i64::MAX),
            };
            if old.is_some() {
                tracing::info!(cluster = %cluster_id, "renewing the cluster's certificate");
            }
            state
                .store
                .replace_cluster_cert(cluster_id, old.as_ref(), &new, now)
                .await
                .context("store the cluster's certificate")?
        }
    };
    let key = state.keys.open_secret(&seal_name(cluster_id), &row.key_sealed)?;
    Ok(Some(MemberTls {
        server_name: row.server_name,
        cert: row.cert_pem,
        key: String::from_utf8(key).context("the cluster's key is not PEM text")?,
        ca: ca.cert_pem().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, not_after: i64) -> ClusterCertRow {
        ClusterCertRow {
            server_name: name.into(),
            cert_pem: String::new(),
            key_sealed: String::new(),
            not_after,
        }
    }

    #[test]
    fn a_name_names_its_cluster_as_a_dns_label() {
        assert_eq!(server_name("cl_ab12", "localhost"), "cl-ab12.db.localhost");
        assert_ne!(server_name("cl_ab12", "x"), server_name("cl_ab13", "x"));
    }

    #[test]
    fn renewal_is_due_near_the_end_or_for_another_name() {
        let now = 1_000_000_000;
        let name = "cl-a.db.localhost";
        for (r, due) in [
            (row(name, now + 365 * 86_400), false),
            (row(name, now + RENEW_BEFORE_SECS), false),
            (row(name, now + RENEW_BEFORE_SECS - 1), true),
            (row(name, now - 1), true),
            (row("cl-a.db.example.com", now + 365 * 86_400), true),
        ] {
            assert_eq!(renewal_due(&r, name, now), due, "{r:?}");
        }
    }
}
