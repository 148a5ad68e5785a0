//! Base backups: parts, each sealed and checksummed and uploaded in parallel, and a
//! manifest written last (a backup without one is not a backup). Verify reads every part
//! and every WAL chunk the backup needs and checks each checksum.
//!
//! Two formats. `files` (what the agent takes): the data directory's files packed into
//! independent parts ([`crate::datadir`]), restored several parts at a time. `tar` (what
//! backups taken before it are): a `pg_basebackup` tar stream cut into parts, restored in
//! order through one tar extractor; still restored and verified, no longer written by
//! the agent.

use crate::datadir::{self, Chunk, DirEntry, FileEntry, Owner};
use crate::{Error, Repo};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// How many parts are sealed and uploaded (or fetched and opened) at once.
const PARALLEL: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub timeline: u32,
    /// WAL from here on is needed to make the copy consistent…
    pub start_lsn: u64,
    /// …up to here (the earliest point a restore can stop at).
    pub end_lsn: u64,
    pub started_at: i64,
    pub finished_at: i64,
    /// Bytes of the tar stream, and as stored (compressed, sealed).
    pub size: u64,
    pub stored: u64,
    pub compression: String,
    pub parts: Vec<Part>,
    /// `files` or `tar` (manifests from before the `files` format have no field).
    #[serde(default = "tar_format")]
    pub format: String,
    /// `files`: every directory and file of the copy…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    /// …and the `backup_label` `pg_backup_stop` returned (none for a never-started
    /// template: its own checkpoint is where recovery starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn tar_format() -> String {
    "tar".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub stored: u64,
    /// SHA-256 of the part as stored (sealed); the seal's authentication tag covers the
    /// plain bytes in turn.
    pub sha256: String,
    /// `files`: which file ranges the part's bytes are, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Repo {
    /// Seals (compressing where it pays) and stores one part in the background.
    fn spawn_part(
        &self,
        name: String,
        buf: Vec<u8>,
        compress: bool,
        chunks: Vec<Chunk>,
    ) -> tokio::task::JoinHandle<Result<Part, Error>> {
        let repo = self.clone();
        tokio::spawn(async move {
            let sealed_name = repo.name(&name);
            let key = repo.key.clone();
            let size = buf.len() as u64;
            let (sealed, sha) = tokio::task::spawn_blocking(move || {
                key.seal(&sealed_name, &buf, compress).map(|s| {
                    let sha = sha256_hex(&s);
                    (s, sha)
                })
            })
            .await
            .map_err(|e| Error::Invalid(format!("seal task: {e}")))??;
            let stored = repo.put_sealed(&name, sealed).await?;
            Ok(Part {
                name,
                size,
                stored,
                sha256: sha,
                chunks,
            })
        })
    }

    /// Stores the files of the data directory `root` (read as they are: between
    /// `pg_backup_start` and `pg_backup_stop`, or a server that does not run) as the
    /// parts of backup `id`, and returns its manifest; the caller sets `end_lsn` and
    /// `label` before [`Repo::put_manifest`].
    pub async fn upload_files(
        &self,
        id: &str,
        root: &Path,
        part_size: usize,
        started_at: i64,
        timeline: u32,
        start_lsn: u64,
    ) -> Result<Manifest, Error> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, Vec<Chunk>)>(1);
        let dir = root.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || -> Result<(Vec<DirEntry>, Vec<FileEntry>), Error> {
            let listing = datadir::list(&dir)?;
            let files = datadir::pack(&dir, &listing.files, part_size, |buf, chunks| {
                tx.blocking_send((buf, chunks))
                    .map_err(|_| Error::Invalid("the uploader stopped early".into()))
            })?;
            Ok((listing.dirs, files))
        });
        let mut inflight: VecDeque<tokio::task::JoinHandle<Result<Part, Error>>> = VecDeque::new();
        let mut parts = Vec::new();
        while let Some((buf, chunks)) = rx.recv().await {
            if inflight.len() >= PARALLEL {
                parts.push(join(inflight.pop_front()).await?);
            }
            let name = format!("base/{id}/part-{:06}", parts.len() + inflight.len());
            inflight.push_back(self.spawn_part(name, buf, true, chunks));
        }
        while let Some(h) = inflight.pop_front() {
            parts.push(join(Some(h)).await?);
        }
        let (dirs, files) = reader.await.map_err(|e| Error::Invalid(format!("read task: {e}")))??;
        Ok(Manifest {
            id: id.to_string(),
            timeline,
            start_lsn,
            end_lsn: start_lsn,
            started_at,
            finished_at: now(),
            size: parts.iter().map(|p| p.size).sum(),
            stored: parts.iter().map(|p| p.stored).sum(),
            compression: "lz4".into(),
            parts,
            format: "files".into(),
            dirs,
            files,
            label: None,
        })
    }

    /// Writes the manifest of a stored backup: the backup exists from now on.
    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), Error> {
        let json = serde_json::to_vec(m).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
        self.put(&format!("base/{}/manifest", m.id), &json, true)
            .await
            .map(|_| ())
    }

    pub async fn manifest(&self, id: &str) -> Result<Manifest, Error> {
        let name = format!("base/{id}/manifest");
        let json = self.get(&name).await?;
        serde_json::from_slice(&json).map_err(|e| Error::Corrupt {
            object: self.name(&name),
            reason: format!("not a manifest: {e}"),
        })
    }

    /// Seals backup `id` again under the newest key — each part sealed under an older
    /// generation, then the manifest with the parts' new sizes and checksums. Returns how
    /// many objects were sealed again. A part whose checksum no longer matches but which
    /// opens (a retirement stopped between a part and its manifest) is taken as it is
    /// now: running this again finishes what was interrupted.
    pub async fn reseal_backup(&self, id: &str) -> Result<u64, Error> {
        let manifest = format!("base/{id}/manifest");
        let manifest_generation = crate::seal::Keyring::generation_of(&self.get_raw(&manifest).await?);
        let mut m = self.manifest(id).await?;
        let (mut resealed, mut changed) = (0, false);
        for p in &mut m.parts {
            let (sealed, was) = self.reseal_raw(&p.name).await?;
            resealed += u64::from(was.is_some());
            let sha = sha256_hex(&sealed);
            if sealed.len() as u64 != p.stored || sha != p.sha256 {
                // Only an object that opens (its tag binds its name) is taken.
                self.key.open(&self.name(&p.name), &sealed)?;
                p.stored = sealed.len() as u64;
                p.sha256 = sha;
                changed = true;
            }
        }
        if changed || manifest_generation.is_none_or(|g| g < self.key.current()) {
            m.stored = m.parts.iter().map(|p| p.stored).sum();
            self.put_manifest(&m).await?;
            resealed += 1;
        }
        Ok(resealed)
    }

    /// Complete backups (those with a manifest), oldest first.
    pub async fn backups(&self) -> Result<Vec<Manifest>, Error> {
        let (ids, _) = self.list_dirs("base").await?;
        let mut out = Vec::new();
        for id in ids {
            match self.manifest(&id).await {
                Ok(m) => out.push(m),
                Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|m| (m.finished_at, m.end_lsn));
        Ok(out)
    }

    fn corrupt_part(&self, p: &Part, reason: &str) -> Error {
        Error::Corrupt {
            object: self.name(&p.name),
            reason: reason.into(),
        }
    }

    /// A fetched part must be what the manifest says was stored.
    fn check_stored(&self, p: &Part, sealed: &[u8]) -> Result<(), Error> {
        if sealed.len() as u64 != p.stored || sha256_hex(sealed) != p.sha256 {
            return Err(self.corrupt_part(p, "checksum does not match the manifest"));
        }
        Ok(())
    }

    /// Checks a fetched part against the manifest and opens it.
    fn open_part(&self, p: &Part, sealed: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.check_stored(p, &sealed)?;
        let plain = self.key.open_vec(&self.name(&p.name), sealed)?;
        if plain.len() as u64 != p.size {
            return Err(self.corrupt_part(p, "size does not match the manifest"));
        }
        Ok(plain)
    }

    /// [`Repo::open_part`] into `buf`, aligned for direct I/O; returns where the plain
    /// bytes are.
    fn open_part_aligned(&self, p: &Part, sealed: Vec<u8>, buf: &mut Vec<u8>) -> Result<std::ops::Range<usize>, Error> {
        self.check_stored(p, &sealed)?;
        let size = usize::try_from(p.size).map_err(|_| self.corrupt_part(p, "part too large"))?;
        let plain = self
            .key
            .open_aligned(&self.name(&p.name), sealed, buf, datadir::ALIGN, size)?;
        if plain.len() != size {
            return Err(self.corrupt_part(p, "size does not match the manifest"));
        }
        Ok(plain)
    }

    /// Fetches, opens and checks every part of backup `id`, in order, into `sink`.
    async fn stream_parts(&self, m: &Manifest, sink: Option<tokio::sync::mpsc::Sender<Vec<u8>>>) -> Result<u64, Error> {
        let mut stream = futures::stream::iter(m.parts.iter().cloned().map(|p| {
            let repo = self.clone();
            async move {
                let sealed = repo.get_raw(&p.name).await?;
                tokio::task::spawn_blocking(move || repo.open_part(&p, sealed))
                    .await
                    .map_err(|e| Error::Invalid(format!("open task: {e}")))?
            }
        }))
        .buffered(PARALLEL);
        let mut total = 0;
        while let Some(part) = stream.next().await {
            let part = part?;
            total += part.len() as u64;
            if let Some(tx) = &sink {
                if tx.send(part).await.is_err() {
                    return Err(Error::Invalid("the extractor stopped early".into()));
                }
            }
        }
        Ok(total)
    }

    /// Restores backup `id` into the (empty or absent) directory `dest`; its files
    /// belong to `owner` (else to the caller).
    pub async fn restore_base(&self, id: &str, dest: &Path, owner: Option<Owner>) -> Result<Manifest, Error> {
        let m = self.manifest(id).await?;
        match m.format.as_str() {
            "files" => self.restore_files(&m, dest, owner).await?,
            "tar" => self.restore_tar(&m, dest).await?,
            other => {
                return Err(Error::Corrupt {
                    object: self.name(&format!("base/{id}/manifest")),
                    reason: format!("unknown format {other:?}"),
                })
            }
        }
        Ok(m)
    }

    /// `files`: the directories (and empty files) made, then the parts fetched, checked,
    /// decoded and written `PARALLEL` at a time, in whatever order they arrive, each
    /// creating the files it is the first to reach.
    async fn restore_files(&self, m: &Manifest, dest: &Path, owner: Option<Owner>) -> Result<(), Error> {
        let chunks: Vec<&[Chunk]> = m.parts.iter().map(|p| p.chunks.as_slice()).collect();
        datadir::check_layout(&m.dirs, &m.files, &chunks).map_err(|reason| Error::Corrupt {
            object: self.name(&format!("base/{}/manifest", m.id)),
            reason,
        })?;
        let files = Arc::new(m.files.clone());
        let (dir, dirs, all) = (dest.to_path_buf(), m.dirs.clone(), Arc::clone(&files));
        tokio::task::spawn_blocking(move || datadir::prepare(&dir, &dirs, &all, owner))
            .await
            .map_err(|e| Error::Invalid(format!("prepare task: {e}")))??;
        // Decode buffers are reused: fresh memory for every part costs more than the copy.
        let pool: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
        futures::stream::iter(m.parts.iter().cloned().map(|p| {
            let (repo, files, dir, pool) = (self.clone(), Arc::clone(&files), dest.to_path_buf(), Arc::clone(&pool));
            async move {
                let sealed = repo.get_raw(&p.name).await?;
                tokio::task::spawn_blocking(move || {
                    let mut buf = pool.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
                    let res = repo.open_part_aligned(&p, sealed, &mut buf).and_then(|plain| {
                        datadir::write_part(&dir, &files, &p.chunks, &buf[plain], owner).map_err(|reason| {
                            Error::Corrupt {
                                object: repo.name(&p.name),
                                reason,
                            }
                        })
                    });
                    pool.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
                    res
                })
                .await
                .map_err(|e| Error::Invalid(format!("write task: {e}")))?
            }
        }))
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
        if let Some(label) = &m.label {
            let path = dest.join("backup_label");
            std::fs::write(&path, label).map_err(|e| Error::Invalid(format!("write {}: {e}", path.display())))?;
            if let Some(o) = owner {
                std::os::unix::fs::chown(&path, Some(o.uid), Some(o.gid))
                    .map_err(|e| Error::Invalid(format!("chown {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// `tar`: the parts in order through one LZ4 frame decoder (its own thread) into one
    /// tar extractor.
    async fn restore_tar(&self, m: &Manifest, dest: &Path) -> Result<(), Error> {
        let id = &m.id;
        std::fs::create_dir_all(dest).map_err(|e| Error::Invalid(format!("create {}: {e}", dest.display())))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let dir = dest.to_path_buf();
        let lz4_frame = match m.compression.as_str() {
            "lz4" => false,
            "lz4-frame" => true,
            other => {
                return Err(Error::Corrupt {
                    object: self.name(&format!("base/{id}/manifest")),
                    reason: format!("unknown compression {other:?}"),
                })
            }
        };
        let parts = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let (tar_in, decoded) = if lz4_frame {
            let (dtx, drx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            let decoder = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut d = lz4_flex::frame::FrameDecoder::new(parts);
                loop {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut filled = 0;
                    while filled < buf.len() {
                        match d.read(&mut buf[filled..])? {
                            0 => break,
                            n => filled += n,
                        }
                    }
                    if filled == 0 {
                        return Ok(());
                    }
                    buf.truncate(filled);
                    if dtx.blocking_send(buf).is_err() {
                        return Ok(()); // the extractor stopped; it reports why
                    }
                }
            });
            let reader = ChannelReader {
                rx: drx,
                cur: Vec::new(),
                pos: 0,
            };
            (reader, Some(decoder))
        } else {
            (parts, None)
        };
        let unpack = tokio::task::spawn_blocking(move || {
            let mut a = tar::Archive::new(tar_in);
            a.set_preserve_permissions(true);
            a.set_overwrite(true);
            a.unpack(&dir)
        });
        let streamed = self.stream_parts(m, Some(tx)).await;
        let unpacked = unpack.await.map_err(|e| Error::Invalid(format!("unpack task: {e}")))?;
        streamed?;
        if let Some(d) = decoded {
            d.await
                .map_err(|e| Error::Invalid(format!("decode task: {e}")))?
                .map_err(|e| Error::Corrupt {
                    object: self.name(&format!("base/{id}/")),
                    reason: format!("LZ4 stream: {e}"),
                })?;
        }
        unpacked.map_err(|e| Error::Invalid(format!("unpack into {}: {e}", dest.display())))?;
        Ok(())
    }

    /// Reads back every part of backup `id` and every WAL chunk from its start on, and
    /// checks every checksum. Returns the bytes checked.
    pub async fn verify_base(&self, id: &str) -> Result<u64, Error> {
        let m = self.manifest(id).await?;
        let bytes = self.stream_parts(&m, None).await?;
        let ranges = self.fetch_wal(m.timeline, m.start_lsn, None).await?;
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        if end < m.end_lsn {
            return Err(Error::Missing {
                object: self.name(&format!(
                    "wal/{:08X}/ (WAL up to {}, the end of backup {id})",
                    m.timeline,
                    crate::fmt_lsn(m.end_lsn)
                )),
            });
        }
        Ok(bytes)
    }

    /// Deletes backup `id`: the manifest first, so a half-deleted backup is never taken
    /// for a complete one.
    pub async fn delete_base(&self, id: &str) -> Result<(), Error> {
        self.delete(&format!("base/{id}/manifest")).await?;
        for (rel, _) in self.list(&format!("base/{id}")).await? {
            self.delete(&rel).await?;
        }
        Ok(())
    }
}

async fn join(h: Option<tokio::task::JoinHandle<Result<Part, Error>>>) -> Result<Part, Error> {
    match h {
        Some(h) => h.await.map_err(|e| Error::Invalid(format!("upload task: {e}")))?,
        None => Err(Error::Invalid("no upload in flight".into())),
    }
}

/// The writing side of the `tar` format, which the agent no longer takes: kept to make
/// `tar` backups for the tests of their restore and verify.
#[cfg(test)]
mod tar_writer {
    use super::*;
    use crate::parse_lsn;
    use crate::tarscan::TarScan;
    use tokio::io::{AsyncRead, AsyncReadExt};

    /// What a base backup stream is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum StreamKind {
        /// A plain tar (`pg_basebackup -Ft -D - -X none`): parts are compressed here, and the
        /// WAL range is read from `backup_label` and the appended `backup_manifest`.
        Tar,
        /// An LZ4-frame-compressed tar (`--compress=server-lz4 --no-manifest`): parts are
        /// stored as they come (sealed, not compressed again); the caller knows where the WAL
        /// starts and sets `end_lsn` before [`Repo::put_manifest`].
        Lz4Tar { timeline: u32, start_lsn: u64 },
    }

    impl Repo {
        /// Stores a base backup stream as the parts of backup `id` and returns its manifest,
        /// which [`Repo::put_manifest`] then writes (a backup exists from that moment on).
        pub async fn upload_base<R: AsyncRead + Unpin>(
            &self,
            id: &str,
            mut reader: R,
            part_size: usize,
            started_at: i64,
            kind: StreamKind,
        ) -> Result<Manifest, Error> {
            let compress = kind == StreamKind::Tar;
            let mut scan = TarScan::default();
            let mut inflight: VecDeque<tokio::task::JoinHandle<Result<Part, Error>>> = VecDeque::new();
            let mut parts = Vec::new();
            let mut n = 0usize;
            loop {
                let mut buf = vec![0u8; part_size];
                let mut filled = 0;
                while filled < part_size {
                    let k = reader
                        .read(&mut buf[filled..])
                        .await
                        .map_err(|e| Error::Invalid(format!("read the base backup stream: {e}")))?;
                    if k == 0 {
                        break;
                    }
                    filled += k;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                if compress {
                    scan.feed(&buf);
                }
                if inflight.len() >= PARALLEL {
                    parts.push(join(inflight.pop_front()).await?);
                }
                inflight.push_back(self.spawn_part(format!("base/{id}/part-{n:06}"), buf, compress, Vec::new()));
                n += 1;
                if filled < part_size {
                    break;
                }
            }
            while let Some(h) = inflight.pop_front() {
                parts.push(join(Some(h)).await?);
            }
            let (timeline, start_lsn, end_lsn, compression) = match kind {
                StreamKind::Lz4Tar { timeline, start_lsn } => (timeline, start_lsn, start_lsn, "lz4-frame"),
                StreamKind::Tar => {
                    if let Some(bad) = scan.bad {
                        return Err(Error::Invalid(format!("base backup stream: {bad}")));
                    }
                    let (timeline, start_lsn) = scan
                        .get("backup_label")
                        .and_then(parse_label)
                        .ok_or_else(|| Error::Invalid("base backup stream has no readable backup_label".into()))?;
                    let end_lsn = scan
                        .get("backup_manifest")
                        .and_then(parse_manifest_end)
                        .ok_or_else(|| Error::Invalid("base backup stream has no readable backup_manifest".into()))?;
                    (timeline, start_lsn, end_lsn, "lz4")
                }
            };
            Ok(Manifest {
                id: id.to_string(),
                timeline,
                start_lsn,
                end_lsn,
                started_at,
                finished_at: now(),
                size: parts.iter().map(|p| p.size).sum(),
                stored: parts.iter().map(|p| p.stored).sum(),
                compression: compression.into(),
                parts,
                format: tar_format(),
                dirs: Vec::new(),
                files: Vec::new(),
                label: None,
            })
        }
    }

    /// `START WAL LOCATION: 0/2000028 (file …)` and `START TIMELINE: 1` of a backup_label.
    fn parse_label(label: &[u8]) -> Option<(u32, u64)> {
        let text = std::str::from_utf8(label).ok()?;
        let mut lsn = None;
        let mut tli = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("START WAL LOCATION: ") {
                lsn = parse_lsn(v.split_whitespace().next()?);
            } else if let Some(v) = line.strip_prefix("START TIMELINE: ") {
                tli = v.trim().parse().ok();
            }
        }
        Some((tli?, lsn?))
    }

    /// The last `End-LSN` of the manifest's `WAL-Ranges`.
    fn parse_manifest_end(manifest: &[u8]) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
        let ranges = v.get("WAL-Ranges")?.as_array()?;
        ranges
            .iter()
            .filter_map(|r| r.get("End-LSN")?.as_str().and_then(parse_lsn))
            .max()
    }
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::tar_writer::StreamKind;
    use super::*;
    use crate::{Key, Location};

    fn tarball() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let files: Vec<(&str, Vec<u8>)> = vec![
            (
                "backup_label",
                b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n".to_vec(),
            ),
            ("base/1/1259", (0..200_000u32).map(|i| (i % 251) as u8).collect()),
            ("global/pg_control", vec![3u8; 8192]),
            (
                "backup_manifest",
                br#"{"WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#.to_vec(),
            ),
        ];
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn repo(dir: &Path, key: Key) -> Repo {
        let loc = Location {
            url: url::Url::from_directory_path(dir).unwrap().to_string(),
            options: Default::default(),
            prefix: "org1/c1".into(),
        };
        Repo::open(&loc, key).unwrap()
    }

    #[tokio::test]
    async fn backup_restore_verify_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let key = Key::generate().unwrap();
        let r = repo(&tmp.path().join("store"), key.clone());
        let tar = tarball();
        let m = r.upload_base("b1", &tar[..], 4096, 1, StreamKind::Tar).await.unwrap();
        assert!(r.backups().await.unwrap().is_empty(), "no backup before its manifest");
        r.put_manifest(&m).await.unwrap();
        assert_eq!((m.timeline, m.start_lsn, m.end_lsn), (1, 0x2000028, 0x2000100));
        assert_eq!(m.size, tar.len() as u64);
        assert!(m.parts.len() > 10);
        assert_eq!(r.backups().await.unwrap(), vec![m.clone()]);

        let dest = tmp.path().join("restored");
        r.restore_base("b1", &dest, None).await.unwrap();
        assert_eq!(std::fs::read(dest.join("global/pg_control")).unwrap(), vec![3u8; 8192]);
        assert_eq!(std::fs::read(dest.join("base/1/1259")).unwrap().len(), 200_000);

        // Verify wants the WAL up to the backup's end.
        let e = r.verify_base("b1").await.unwrap_err();
        assert!(matches!(e, Error::Missing { .. }), "{e}");
        r.put_wal(1, 1, 0x2000000, &[0u8; 0x200]).await.unwrap();
        assert_eq!(r.verify_base("b1").await.unwrap(), tar.len() as u64);

        // Another tenant's key opens nothing.
        let other = repo(&tmp.path().join("store"), Key::generate().unwrap());
        let e = other.manifest("b1").await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");

        // A missing part is named.
        std::fs::remove_file(tmp.path().join("store/org1/c1/base/b1/part-000003")).unwrap();
        let e = r.verify_base("b1").await.unwrap_err().to_string();
        assert!(
            e.contains("org1/c1/base/b1/part-000003") && e.contains("missing"),
            "{e}"
        );
        let e = r
            .restore_base("b1", &tmp.path().join("r2"), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("part-000003"), "{e}");

        r.delete_base("b1").await.unwrap();
        assert!(r.backups().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_server_compressed_stream_is_stored_as_is_and_restored() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let r = repo(&tmp.path().join("store"), Key::generate().unwrap());
        let tar = tarball();
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(&tar).unwrap();
        let lz4 = enc.finish().unwrap();
        let kind = StreamKind::Lz4Tar {
            timeline: 3,
            start_lsn: 0x5000000,
        };
        let mut m = r.upload_base("b2", &lz4[..], 1000, 1, kind).await.unwrap();
        assert_eq!(
            (m.timeline, m.start_lsn, m.compression.as_str()),
            (3, 0x5000000, "lz4-frame")
        );
        assert_eq!(m.size, lz4.len() as u64);
        m.end_lsn = 0x5000100;
        r.put_manifest(&m).await.unwrap();
        let dest = tmp.path().join("restored");
        r.restore_base("b2", &dest, None).await.unwrap();
        assert_eq!(std::fs::read(dest.join("global/pg_control")).unwrap(), vec![3u8; 8192]);
        assert_eq!(std::fs::read(dest.join("base/1/1259")).unwrap().len(), 200_000);
    }
}
