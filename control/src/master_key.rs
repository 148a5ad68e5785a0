//! The master key: what it seals in the store (the orgs' data keys, the clusters'
//! certificate keys, the audit chain's key), which key that is (a fingerprint in the
//! store, never the key), and its rotation.
//!
//! Rotating is a restart of the control plane with the new key as the master key and the
//! old one among `previous_master_keys`: at open, a store sealed under a previous key is
//! re-sealed under the new one in one transaction. Nothing the data plane holds changes
//! (the data keys themselves stay; only their wrapping does), so databases, agents and
//! proxies run on untouched. Afterwards the old key opens nothing in the store.

use crate::store::{MasterKeyRow, Sealed, Store};
use anyhow::{bail, Context, Result};
use highrise_backup::Key;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Names a master key without revealing it: 16 bytes of an HMAC keyed with it.
pub(crate) fn fingerprint(master_hex: &str) -> Result<String> {
    let raw = hex::decode(master_hex.trim()).context("read the master key as hex")?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&raw).context("key an HMAC with the master key")?;
    mac.update(b"highrise master key fingerprint");
    Ok(hex::encode(&mac.finalize().into_bytes()[..16]))
}

const AUDIT_KEY_NAME: &str = "audit-chain-key";

/// Opens the store's sealed secrets with `master_hex`: the audit chain's key. A store
/// sealed under one of `previous` is re-sealed under `master_hex` first; a store sealed
/// under another key is refused (nothing is changed).
pub(crate) async fn open(store: &Store, master_hex: &str, previous: &[String]) -> Result<Vec<u8>> {
    let master = Key::from_hex(master_hex.trim()).context("read the master key")?;
    let fp = fingerprint(master_hex)?;
    let row = match store.master_key_row().await? {
        Some(row) => row,
        None => {
            // The first start with a recorded master key: it must be the one the data
            // keys were wrapped with. The chain key is the one derived from it before, so
            // the chains already written verify.
            if let Some((org, wrapped)) = store.any_data_key().await? {
                master.unwrap_key(&wrapped, &org).context(
                    "the master key does not open the store's data keys (is it the key they were made with?)",
                )?;
            }
            let audit_key = crate::audit::chain_key(master_hex)?;
            let sealed = hex::encode(master.seal(AUDIT_KEY_NAME, &audit_key, false)?);
            store
                .init_master_key_row(&MasterKeyRow {
                    fingerprint: fp.clone(),
                    audit_key_sealed: sealed,
                })
                .await?
        }
    };
    let row = if row.fingerprint == fp {
        row
    } else {
        let Some(old_hex) = previous
            .iter()
            .find(|p| fingerprint(p).is_ok_and(|f| f == row.fingerprint))
        else {
            bail!(
                "the store is sealed under another master key (fingerprint {}); to rotate, give the key it is sealed under as a previous master key",
                row.fingerprint
            );
        };
        rotate(store, old_hex, master_hex).await?;
        store
            .master_key_row()
            .await?
            .context("the master key's record is gone")?
    };
    let sealed = hex::decode(&row.audit_key_sealed).context("the audit key's seal is not hex")?;
    master
        .open(AUDIT_KEY_NAME, &sealed)
        .context("open the audit chain's key with the master key")
}

/// Re-seals everything sealed under `old_hex` under `new_hex`, in one transaction.
async fn rotate(store: &Store, old_hex: &str, new_hex: &str) -> Result<()> {
    let (old, new) = (Key::from_hex(old_hex.trim())?, Key::from_hex(new_hex.trim())?);
    let was = store.sealed_under_master_key().await?;
    let mut now = Sealed::default();
    for (org, generation, wrapped) in &was.data_keys {
        let key = old
            .unwrap_key(wrapped, org)
            .with_context(|| format!("open data key {generation} of org {org} with the previous master key"))?;
        now.data_keys.push((org.clone(), *generation, new.wrap(&key, org)?));
    }
    for (cluster, sealed) in &was.cluster_keys {
        let name = crate::member_tls::seal_name(cluster);
        let plain = old
            .open(&name, &hex::decode(sealed).context("a sealed key is not hex")?)
            .with_context(|| format!("open the certificate key of cluster {cluster} with the previous master key"))?;
        now.cluster_keys
            .push((cluster.clone(), hex::encode(new.seal(&name, &plain, false)?)));
    }
    let audit = old
        .open(
            AUDIT_KEY_NAME,
            &hex::decode(&was.audit_key).context("the audit key's seal is not hex")?,
        )
        .context("open the audit chain's key with the previous master key")?;
    now.audit_key = hex::encode(new.seal(AUDIT_KEY_NAME, &audit, false)?);
    store
        .reseal_master_key(&fingerprint(old_hex)?, &fingerprint(new_hex)?, &was, &now)
        .await?;
    tracing::info!(
        data_keys = now.data_keys.len(),
        certificate_keys = now.cluster_keys.len(),
        "master key rotated: everything it seals is sealed under the new key"
    );
    Ok(())
}
