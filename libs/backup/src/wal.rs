//! WAL in object storage: chunks written by the archiver, segments reassembled for a
//! restore.
//!
//! A chunk is a run of WAL bytes `[start, end)` within one 16 MiB segment, stored at
//! `wal/<TLI>/<SEGNO>/<START>-<END>-<TERM>`. The archiver writes chunks in order, so the
//! highest `END` of a timeline is where archiving resumes. A restore reassembles whole
//! segment files from them (zero-filled after the last chunk, which PostgreSQL reads as
//! the end of WAL) and refuses a timeline with a hole in it.

use crate::{fmt_lsn, segment_name, Error, Repo, SEG_SIZE};
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    start: u64,
    end: u64,
    term: u64,
}

fn chunk_name(tli: u32, c: Chunk) -> String {
    format!(
        "wal/{tli:08X}/{:016X}/{:016X}-{:016X}-{:08X}",
        c.start / SEG_SIZE,
        c.start,
        c.end,
        c.term
    )
}

fn parse_chunk(file: &str) -> Option<Chunk> {
    let mut it = file.split('-');
    let start = u64::from_str_radix(it.next()?, 16).ok()?;
    let end = u64::from_str_radix(it.next()?, 16).ok()?;
    let term = u64::from_str_radix(it.next()?, 16).ok()?;
    (it.next().is_none() && end > start).then_some(Chunk { start, end, term })
}

/// What a restore found in the archive for one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineRange {
    pub timeline: u32,
    pub start: u64,
    pub end: u64,
}

impl Repo {
    /// Stores WAL bytes starting at `start` on `tli`, split at segment boundaries.
    /// Returns the stored size.
    pub async fn put_wal(&self, tli: u32, term: i64, start: u64, bytes: &[u8]) -> Result<u64, Error> {
        let mut stored = 0;
        let mut pos = start;
        let mut rest = bytes;
        while !rest.is_empty() {
            let seg_end = (pos / SEG_SIZE + 1) * SEG_SIZE;
            let n = rest.len().min((seg_end - pos) as usize);
            let c = Chunk {
                start: pos,
                end: pos + n as u64,
                term: term.max(0) as u64,
            };
            stored += self.put(&chunk_name(tli, c), &rest[..n], true).await?;
            pos += n as u64;
            rest = &rest[n..];
        }
        Ok(stored)
    }

    /// Where archived WAL of `tli` ends (exclusive), if any was archived.
    pub async fn wal_end(&self, tli: u32) -> Result<Option<u64>, Error> {
        let dir = format!("wal/{tli:08X}");
        let (segs, _) = self.list_dirs(&dir).await?;
        for seg in segs.iter().rev() {
            let (_, files) = self.list_dirs(&format!("{dir}/{seg}")).await?;
            if let Some(end) = files.iter().filter_map(|f| parse_chunk(f)).map(|c| c.end).max() {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// Stores a timeline history file (idempotent).
    pub async fn put_history(&self, tli: u32, content: &[u8]) -> Result<(), Error> {
        self.put(&format!("wal/{tli:08X}.history"), content, false)
            .await
            .map(|_| ())
    }

    /// Timelines that have WAL in the archive.
    pub async fn timelines(&self) -> Result<Vec<u32>, Error> {
        let (dirs, _) = self.list_dirs("wal").await?;
        Ok(dirs.iter().filter_map(|d| u32::from_str_radix(d, 16).ok()).collect())
    }

    /// Writes every WAL segment from `start` on timeline `tli` onwards — and of every later
    /// timeline, with the history files — into `pg_wal`, ready for PostgreSQL's archive
    /// recovery. Stops with an error naming the place when a timeline has a hole. Without
    /// `pg_wal`, only reads and checks every object (verify).
    pub async fn fetch_wal(&self, tli: u32, start: u64, pg_wal: Option<&Path>) -> Result<Vec<TimelineRange>, Error> {
        let (_, files) = self.list_dirs("wal").await?;
        for f in files.iter().filter(|f| f.ends_with(".history")) {
            let t = f.trim_end_matches(".history");
            if u32::from_str_radix(t, 16).is_ok_and(|t| t > tli) {
                let content = self.get(&format!("wal/{f}")).await?;
                if let Some(dir) = pg_wal {
                    write_file(&dir.join(f), &content).await?;
                }
            }
        }
        let mut ranges = Vec::new();
        for t in self.timelines().await?.into_iter().filter(|&t| t >= tli) {
            let from_seg = if t == tli { start / SEG_SIZE } else { 0 };
            if let Some(r) = self.fetch_timeline(t, from_seg, pg_wal).await? {
                ranges.push(r);
            }
        }
        match ranges.first() {
            Some(r) if r.timeline == tli && r.start <= start => Ok(ranges),
            _ => Err(Error::Missing {
                object: self.name(&format!("wal/{tli:08X}/ (WAL at {} on timeline {tli})", fmt_lsn(start))),
            }),
        }
    }

    async fn fetch_timeline(
        &self,
        tli: u32,
        from_seg: u64,
        pg_wal: Option<&Path>,
    ) -> Result<Option<TimelineRange>, Error> {
        let dir = format!("wal/{tli:08X}");
        let (segs, _) = self.list_dirs(&dir).await?;
        let mut range: Option<TimelineRange> = None;
        for seg in segs {
            let Ok(segno) = u64::from_str_radix(&seg, 16) else {
                continue;
            };
            if segno < from_seg {
                continue;
            }
            let (_, files) = self.list_dirs(&format!("{dir}/{seg}")).await?;
            let mut chunks: Vec<(String, Chunk)> = files
                .iter()
                .filter_map(|f| parse_chunk(f).map(|c| (format!("{dir}/{seg}/{f}"), c)))
                .collect();
            // Lower terms first: a newer term's bytes overwrite a stale primary's.
            chunks.sort_by_key(|(_, c)| (c.term, c.start));
            let seg_start = segno * SEG_SIZE;
            let fetched: Vec<(Chunk, Vec<u8>)> =
                futures::stream::iter(chunks.into_iter().map(|(name, c)| async move {
                    let data = self.get(&name).await?;
                    if data.len() as u64 != c.end - c.start {
                        return Err(Error::Corrupt {
                            object: self.name(&name),
                            reason: format!("holds {} bytes, its name says {}", data.len(), c.end - c.start),
                        });
                    }
                    Ok::<_, Error>((c, data))
                }))
                .buffered(8)
                .try_collect()
                .await?;
            let mut buf = vec![0u8; SEG_SIZE as usize];
            let mut covered: Vec<(u64, u64)> = Vec::new();
            for (c, data) in &fetched {
                let off = (c.start - seg_start) as usize;
                buf[off..off + data.len()].copy_from_slice(data);
                covered.push((c.start, c.end));
            }
            covered.sort();
            for (s, e) in covered {
                match &mut range {
                    None => {
                        range = Some(TimelineRange {
                            timeline: tli,
                            start: s,
                            end: e,
                        })
                    }
                    Some(r) if s <= r.end => r.end = r.end.max(e),
                    Some(r) => {
                        return Err(Error::Missing {
                            object: self.name(&format!(
                                "{dir}/ (WAL from {} to {} on timeline {tli})",
                                fmt_lsn(r.end),
                                fmt_lsn(s)
                            )),
                        })
                    }
                }
            }
            if let (false, Some(dir)) = (fetched.is_empty(), pg_wal) {
                write_file(&dir.join(segment_name(tli, segno)), &buf).await?;
            }
        }
        Ok(range)
    }

    /// Deletes WAL of timelines up to `tli` that ends before `before` (what no kept
    /// backup needs any more). Returns the number of objects deleted.
    pub async fn prune_wal(&self, tli: u32, before: u64) -> Result<usize, Error> {
        let mut n = 0;
        for t in self.timelines().await?.into_iter().filter(|&t| t <= tli) {
            let dir = format!("wal/{t:08X}");
            let (segs, _) = self.list_dirs(&dir).await?;
            for seg in segs {
                let Ok(segno) = u64::from_str_radix(&seg, 16) else {
                    continue;
                };
                if (segno + 1) * SEG_SIZE > before {
                    break;
                }
                let objects = self.list(&format!("{dir}/{seg}")).await?;
                for (rel, _) in objects {
                    self.delete(&rel).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Archived WAL ranges per timeline, checking that each is contiguous (no objects are
    /// read, only listed).
    pub async fn wal_ranges(&self) -> Result<BTreeMap<u32, (u64, u64)>, Error> {
        let mut out = BTreeMap::new();
        for t in self.timelines().await? {
            let mut chunks: Vec<Chunk> = self
                .list(&format!("wal/{t:08X}"))
                .await?
                .iter()
                .filter_map(|(rel, _)| rel.rsplit('/').next().and_then(parse_chunk))
                .collect();
            chunks.sort_by_key(|c| c.start);
            let mut range: Option<(u64, u64)> = None;
            for c in chunks {
                range = match range {
                    None => Some((c.start, c.end)),
                    Some((s, e)) if c.start <= e => Some((s, e.max(c.end))),
                    Some((_, e)) => {
                        return Err(Error::Missing {
                            object: self.name(&format!(
                                "wal/{t:08X}/ (WAL from {} to {} on timeline {t})",
                                fmt_lsn(e),
                                fmt_lsn(c.start)
                            )),
                        })
                    }
                };
            }
            if let Some(r) = range {
                out.insert(t, r);
            }
        }
        Ok(out)
    }
}

async fn write_file(path: &Path, data: &[u8]) -> Result<(), Error> {
    tokio::fs::write(path, data)
        .await
        .map_err(|e| Error::Invalid(format!("write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Key, Location};

    fn repo(dir: &Path) -> Repo {
        let loc = Location {
            url: url::Url::from_directory_path(dir).unwrap().to_string(),
            options: Default::default(),
            prefix: "org1/c1".into(),
        };
        Repo::open(&loc, Key::generate().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn chunks_reassemble_into_segments_and_holes_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let r = repo(&tmp.path().join("store"));
        assert_eq!(r.wal_end(1).await.unwrap(), None);
        let start = 2 * SEG_SIZE + 40;
        let a = vec![7u8; 1000];
        // A chunk crossing a segment boundary is split in two.
        let b = vec![9u8; SEG_SIZE as usize];
        r.put_wal(1, 1, start, &a).await.unwrap();
        r.put_wal(1, 1, start + 1000, &b).await.unwrap();
        let end = start + 1000 + SEG_SIZE;
        assert_eq!(r.wal_end(1).await.unwrap(), Some(end));
        assert_eq!(r.wal_ranges().await.unwrap()[&1], (start, end));

        let pg_wal = tmp.path().join("pg_wal");
        std::fs::create_dir_all(&pg_wal).unwrap();
        let ranges = r.fetch_wal(1, start + 10, Some(&pg_wal)).await.unwrap();
        assert_eq!(
            ranges,
            vec![TimelineRange {
                timeline: 1,
                start,
                end
            }]
        );
        let s2 = std::fs::read(pg_wal.join(segment_name(1, 2))).unwrap();
        assert_eq!(s2.len() as u64, SEG_SIZE);
        assert_eq!(&s2[40..1040], &a[..]);
        assert_eq!(s2[39], 0);
        let s3 = std::fs::read(pg_wal.join(segment_name(1, 3))).unwrap();
        assert_eq!(s3[1039], 9);
        assert_eq!(s3[1040], 0, "zero-filled after the end of WAL");

        // Asking for WAL before what was archived names the missing place.
        let e = r.fetch_wal(1, SEG_SIZE, Some(&pg_wal)).await.unwrap_err();
        assert!(e.to_string().contains("0/1000000"), "{e}");

        // A hole in the middle of a timeline is refused.
        r.put_wal(1, 1, end + 100, &[1, 2, 3]).await.unwrap();
        let e = r.fetch_wal(1, start, None).await.unwrap_err();
        assert!(matches!(e, Error::Missing { .. }), "{e}");
        assert!(r.wal_ranges().await.is_err());
    }

    #[tokio::test]
    async fn newer_terms_win_and_damaged_chunks_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let r = repo(&tmp.path().join("store"));
        r.put_wal(2, 3, 100, &[1u8; 50]).await.unwrap();
        r.put_wal(2, 4, 120, &[2u8; 10]).await.unwrap();
        r.put_history(2, b"1\t0/64\tno recovery target specified\n")
            .await
            .unwrap();
        let pg_wal = tmp.path().join("pg_wal");
        std::fs::create_dir_all(&pg_wal).unwrap();
        r.fetch_wal(2, 100, Some(&pg_wal)).await.unwrap();
        let seg = std::fs::read(pg_wal.join(segment_name(2, 0))).unwrap();
        assert_eq!(&seg[118..132], &[1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]);

        // Flip a byte of a stored object: the restore stops and names it.
        let obj = walk(&tmp.path().join("store"))
            .into_iter()
            .find(|p| p.to_string_lossy().contains("-00000003"))
            .unwrap();
        let mut bytes = std::fs::read(&obj).unwrap();
        let n = bytes.len() - 1;
        bytes[n] ^= 0xff;
        std::fs::write(&obj, bytes).unwrap();
        let e = r.fetch_wal(2, 100, None).await.unwrap_err().to_string();
        assert!(e.contains("org1/c1/wal/00000002/") && e.contains("corrupt"), "{e}");
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }
}
