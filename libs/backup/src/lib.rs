//! WAL and base-backup storage on `object_store`.
//!
//! A [`Repo`] is one cluster's corner of an object store: `<root>/<tenant prefix>/…`, every
//! object sealed with the tenant's data key ([`seal`]). It owns the object layout:
//!
//! ```text
//! wal/<TLI>.history                                  timeline history files
//! wal/<TLI>/<SEGNO>/<START>-<END>-<TERM>             WAL bytes [START, END) of one segment
//! base/<ID>/part-<N>                                 a base backup's files (or tar stream), in parts
//! base/<ID>/manifest                                 written last: parts, checksums, LSNs
//! ```
//!
//! (all numbers in upper-case hex, fixed width, so keys sort by position). Timeline and
//! term in every WAL key mean two primaries can never write into one history: a stale
//! primary's chunks carry its old term and a reader prefers the newer term's bytes.
//! [`wal`] writes and reassembles WAL, [`base`] stores, restores and verifies base backups,
//! [`archiver`] streams WAL out of a running primary with the replication protocol.

pub mod archiver;
pub mod base;
pub mod datadir;
mod pgwire;
pub mod seal;
#[cfg(test)]
mod tarscan;
pub mod wal;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use seal::{Key, Keyring};

/// WAL segment size (PostgreSQL's default; Highrise never changes it).
pub const SEG_SIZE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object {object} is missing")]
    Missing { object: String },
    #[error("object {object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("object storage failed on {object}: {message}")]
    Storage { object: String, message: String },
    #[error("{0}")]
    Crypto(String),
    #[error("{0}")]
    Invalid(String),
}

/// Where a cluster's objects live: a store URL (`file:///dir`, `s3://bucket`,
/// `az://container`), options for its client, and the tenant prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub url: String,
    pub options: BTreeMap<String, String>,
    pub prefix: String,
}

#[derive(Clone)]
pub struct Repo {
    store: Arc<dyn ObjectStore>,
    /// Path of the store's root inside the backend (the URL's path).
    root: Path,
    /// A local filesystem store's directory: written objects are fsynced there.
    local_dir: Option<std::path::PathBuf>,
    prefix: String,
    key: Keyring,
}

impl Repo {
    /// A repository under `loc`, sealing with the newest of `keys` (a [`Keyring`], or one
    /// [`Key`]: generation 1).
    pub fn open(loc: &Location, keys: impl Into<Keyring>) -> Result<Self, Error> {
        let key = keys.into();
        let invalid = |m: String| Error::Invalid(format!("object store {}: {m}", loc.url));
        if loc.prefix.is_empty() || loc.prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(invalid(format!("bad prefix {:?}", loc.prefix)));
        }
        let url = url::Url::parse(&loc.url).map_err(|e| invalid(e.to_string()))?;
        let (store, root, local_dir): (Arc<dyn ObjectStore>, Path, _) = if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|_| invalid("not a local path".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| invalid(format!("create {}: {e}", dir.display())))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| invalid(e.to_string()))?
                .with_automatic_cleanup(true);
            (Arc::new(fs), Path::default(), Some(dir))
        } else {
            let (s, p) = object_store::parse_url_opts(&url, loc.options.iter()).map_err(|e| invalid(e.to_string()))?;
            (Arc::from(s), p, None)
        };
        Ok(Self {
            store,
            root,
            local_dir,
            prefix: loc.prefix.clone(),
            key,
        })
    }

    /// The object's name as sealed (tenant prefix + relative key); the store path adds
    /// the URL's root so a bucket can be moved without invalidating any object.
    fn name(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in self.prefix.split('/').chain(rel.split('/')) {
            p = p.child(part);
        }
        p
    }

    /// Seals and stores an object, retrying transient failures a few times. Returns the
    /// stored size.
    pub async fn put(&self, rel: &str, plain: &[u8], compress: bool) -> Result<u64, Error> {
        let sealed = self.key.seal(&self.name(rel), plain, compress)?;
        self.put_sealed(rel, sealed).await
    }

    async fn put_sealed(&self, rel: &str, sealed: Vec<u8>) -> Result<u64, Error> {
        let len = sealed.len() as u64;
        let payload = PutPayload::from(bytes::Bytes::from(sealed));
        let path = self.path(rel);
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.put(&path, payload.clone()).await {
                Ok(_) => break,
                Err(e) if attempt < 4 => {
                    tracing::debug!(object = %self.name(rel), "put failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(self.storage_error(rel, e)),
            }
        }
        if let Some(dir) = &self.local_dir {
            // object_store's local backend renames into place without fsync: make the
            // object and its directory durable before anyone is told it is stored.
            let file = dir.join(path.as_ref());
            let sync = move || -> std::io::Result<()> {
                std::fs::File::open(&file)?.sync_all()?;
                if let Some(parent) = file.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(())
            };
            tokio::task::spawn_blocking(sync)
                .await
                .map_err(|e| Error::Invalid(format!("fsync task: {e}")))?
                .map_err(|e| Error::Storage {
                    object: self.name(rel),
                    message: format!("fsync: {e}"),
                })?;
        }
        Ok(len)
    }

    /// Seals an object again under the newest key when an older generation sealed it;
    /// returns that generation (`None`: the newest sealed it already). Its name and
    /// content stay; the store replaces it whole.
    pub async fn reseal(&self, rel: &str) -> Result<Option<u32>, Error> {
        Ok(self.reseal_raw(rel).await?.1)
    }

    /// [`Repo::reseal`], also giving the object as stored afterwards.
    async fn reseal_raw(&self, rel: &str) -> Result<(Vec<u8>, Option<u32>), Error> {
        let sealed = self.get_raw(rel).await?;
        let generation = Keyring::generation_of(&sealed)
            .ok_or_else(|| Error::Crypto(format!("{} is not a sealed object", self.name(rel))))?;
        if generation >= self.key.current() {
            return Ok((sealed, None));
        }
        let name = self.name(rel);
        let plain = self.key.open(&name, &sealed)?;
        let sealed = self.key.seal(&name, &plain, true)?;
        self.put_sealed(rel, sealed.clone()).await?;
        Ok((sealed, Some(generation)))
    }

    /// Reads and opens an object.
    pub async fn get(&self, rel: &str) -> Result<Vec<u8>, Error> {
        let sealed = self.get_raw(rel).await?;
        self.key.open(&self.name(rel), &sealed)
    }

    async fn get_raw(&self, rel: &str) -> Result<Vec<u8>, Error> {
        let r = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(|e| self.storage_error(rel, e))?;
        let b = r.bytes().await.map_err(|e| self.storage_error(rel, e))?;
        Ok(Vec::from(b))
    }

    /// Copies an object to the same cluster's corner of another store as it is stored
    /// (sealed: the seal binds the tenant prefix and key, not the store). Returns its size.
    pub async fn copy_to(&self, other: &Repo, rel: &str) -> Result<u64, Error> {
        if other.prefix != self.prefix {
            return Err(Error::Invalid(format!(
                "copy {rel}: {} is not {}",
                other.prefix, self.prefix
            )));
        }
        let sealed = self.get_raw(rel).await?;
        other.put_sealed(rel, sealed).await
    }

    fn storage_error(&self, rel: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::Missing { object: self.name(rel) },
            e => Error::Storage {
                object: self.name(rel),
                message: e.to_string(),
            },
        }
    }

    /// Every object under `rel_prefix` (a directory, without trailing `/`), as relative
    /// keys with their stored sizes, sorted.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<(String, u64)>, Error> {
        let base = self.path(rel_prefix);
        let strip = format!("{}/", self.path("").as_ref().trim_end_matches('/'));
        let mut out: Vec<(String, u64)> = self
            .store
            .list(Some(&base))
            .map_ok(|m| {
                let full = m.location.as_ref().to_string();
                (full.strip_prefix(&strip).unwrap_or(&full).to_string(), m.size)
            })
            .try_collect()
            .await
            .map_err(|e| self.storage_error(rel_prefix, e))?;
        out.sort();
        Ok(out)
    }

    /// The immediate "sub-directories" of `rel_prefix`, by name, sorted.
    pub async fn list_dirs(&self, rel_prefix: &str) -> Result<(Vec<String>, Vec<String>), Error> {
        let r = self
            .store
            .list_with_delimiter(Some(&self.path(rel_prefix)))
            .await
            .map_err(|e| self.storage_error(rel_prefix, e))?;
        let last = |p: &Path| p.filename().unwrap_or_default().to_string();
        let mut dirs: Vec<String> = r.common_prefixes.iter().map(last).collect();
        let mut files: Vec<String> = r.objects.iter().map(|m| last(&m.location)).collect();
        dirs.sort();
        files.sort();
        Ok((dirs, files))
    }

    pub async fn delete(&self, rel: &str) -> Result<(), Error> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.storage_error(rel, e)),
        }
    }
}

pub use highrise_pg::{fmt_lsn, parse_lsn};

/// PostgreSQL's file name of the WAL segment `segno` on timeline `tli`.
pub fn segment_name(tli: u32, segno: u64) -> String {
    let per_id = 0x1_0000_0000 / SEG_SIZE;
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_and_segment_names() {
        assert_eq!(parse_lsn("0/2000028"), Some(0x2000028));
        assert_eq!(parse_lsn("1A/0"), Some(0x1a_0000_0000));
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(fmt_lsn(0x1_0200_0028), "1/2000028");
        assert_eq!(segment_name(1, 2), "000000010000000000000002");
        assert_eq!(segment_name(3, 0x100 + 5), "000000030000000100000005");
    }
}
