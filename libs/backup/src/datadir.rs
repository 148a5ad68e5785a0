//! Base backups as files: a data directory read straight from disk (between
//! `pg_backup_start` and `pg_backup_stop`, as pgBackRest does, or a never-started
//! template), packed into independent parts, and restored from them in parallel.
//!
//! A part is a sequence of *chunks* — byte ranges of the backed-up files, each starting
//! at the next multiple of [`ALIGN`] in the part (zeros between, which LZ4 stores for
//! nearly nothing) — sealed on its own (LZ4 + AES-256-GCM). The manifest lists every file
//! and directory and, per part, which range of which file each chunk is. So any part can
//! be opened and written on its own, in any order: restore creates every file at its
//! final size first, then several parts at once are fetched, checked, decoded and
//! written with positioned writes — no single stream to decode, no tar to parse.
//!
//! Restore writes with direct I/O (`O_DIRECT`) where the file system takes it: the
//! chunks are aligned in memory and in their files, so whole blocks go from the decode
//! buffer to the disk. Filling the page cache with a restore's gigabytes costs more than
//! the disk does on the machines measured (`bench/README.md`); the unaligned tail of a
//! file goes through the page cache.
//!
//! Left out, as PostgreSQL documents for file-system-level backups: the contents of
//! `pg_wal` (the archive has the WAL) and of the directories the server rebuilds
//! (`pg_replslot`, `pg_stat_tmp`, …), `postmaster.pid`/`.opts`, `pg_internal.init`,
//! temporary files, and any old `backup_label` or signal file.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One backed-up file: its path relative to the data directory, mode and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub mode: u32,
    pub size: u64,
}

/// A directory to create (parents come before their children).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub path: String,
    pub mode: u32,
}

/// `len` bytes of file `file` (an index into the manifest's files) from `offset`, stored
/// next in its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub file: u32,
    pub offset: u64,
    pub len: u64,
}

/// Where chunks start in a part, and the granularity of direct I/O.
pub const ALIGN: usize = 4096;

fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Where each chunk's bytes start in its part, and the part's length.
pub fn layout(chunks: &[Chunk]) -> Result<(Vec<usize>, usize), String> {
    let mut pos = 0usize;
    let mut starts = Vec::with_capacity(chunks.len());
    for c in chunks {
        let len = usize::try_from(c.len).map_err(|_| "chunk too large".to_string())?;
        pos = align_up(pos);
        starts.push(pos);
        pos = pos.checked_add(len).ok_or_else(|| "chunk too large".to_string())?;
    }
    Ok((starts, pos))
}

/// Directories whose contents a backup leaves out (the directory itself is kept).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files a backup leaves out wherever they are.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "pg_internal.init",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
];

/// What a walk of a data directory found, in the order it is read.
#[derive(Debug, Default)]
pub struct Listing {
    pub dirs: Vec<DirEntry>,
    pub files: Vec<(String, u32)>,
}

/// Lists the files and directories of `root` a base backup takes, parents first, files in
/// name order. A symbolic link (a tablespace) is refused: Highrise creates none.
pub fn list(root: &Path) -> Result<Listing, Error> {
    let mut out = Listing::default();
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &str, out: &mut Listing) -> Result<(), Error> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let io = |e: std::io::Error| Error::Invalid(format!("read {}: {e}", dir.display()));
    let mut entries: Vec<(String, std::fs::Metadata)> = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        match e.path().symlink_metadata() {
            Ok(md) => entries.push((name, md)),
            // Removed while we looked (a dropped table): nothing to back up.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io(err)),
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, md) in entries {
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let mode = md.permissions().mode() & 0o777;
        if md.file_type().is_symlink() {
            return Err(Error::Invalid(format!(
                "{}: symbolic links (tablespaces) are not supported",
                root.join(&path).display()
            )));
        }
        if md.is_dir() {
            if name.starts_with("pgsql_tmp") {
                continue;
            }
            out.dirs.push(DirEntry {
                path: path.clone(),
                mode,
            });
            if rel.is_empty() && EMPTY_DIRS.contains(&name.as_str()) {
                if name == "pg_wal" {
                    out.dirs.push(DirEntry {
                        path: "pg_wal/archive_status".into(),
                        mode,
                    });
                }
                continue;
            }
            walk(root, &path, out)?;
        } else if md.is_file() {
            if SKIP_FILES.contains(&name.as_str()) || name.starts_with("pgsql_tmp") {
                continue;
            }
            out.files.push((path, mode));
        }
    }
    Ok(())
}

/// Reads the listed files into parts of `part_size` bytes (a multiple of [`ALIGN`]),
/// handing each full part (its bytes and chunks) to `emit`, and returns every file as
/// read. A file that vanished since the listing is left out; one that grew or shrank is
/// taken as it is now (WAL replay from the backup's start repairs what changed meanwhile).
pub fn pack(
    root: &Path,
    files: &[(String, u32)],
    part_size: usize,
    mut emit: impl FnMut(Vec<u8>, Vec<Chunk>) -> Result<(), Error>,
) -> Result<Vec<FileEntry>, Error> {
    if part_size == 0 || !part_size.is_multiple_of(ALIGN) {
        return Err(Error::Invalid(format!(
            "part size {part_size} is not a multiple of {ALIGN}"
        )));
    }
    let mut out: Vec<FileEntry> = Vec::with_capacity(files.len());
    let mut buf: Vec<u8> = vec![0; part_size];
    let mut filled = 0usize;
    let mut chunks: Vec<Chunk> = Vec::new();
    for (path, mode) in files {
        let full = root.join(path);
        let io = |e: std::io::Error| Error::Invalid(format!("read {}: {e}", full.display()));
        let mut f = match std::fs::File::open(&full) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        let idx = u32::try_from(out.len()).map_err(|_| Error::Invalid("too many files".into()))?;
        let mut offset = 0u64;
        loop {
            let continues = chunks
                .last()
                .is_some_and(|c| c.file == idx && c.offset + c.len == offset);
            if !continues {
                // A new chunk starts aligned (the padding is zeros), in the next part if
                // this one has no aligned room left.
                let start = align_up(filled);
                if start < part_size {
                    buf[filled..start].fill(0);
                    filled = start;
                } else if filled > 0 {
                    let mut full = std::mem::replace(&mut buf, vec![0; part_size]);
                    full.truncate(filled);
                    emit(full, std::mem::take(&mut chunks))?;
                    filled = 0;
                }
            }
            if filled == part_size {
                emit(
                    std::mem::replace(&mut buf, vec![0; part_size]),
                    std::mem::take(&mut chunks),
                )?;
                filled = 0;
            }
            let n = match f.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            match chunks.last_mut() {
                Some(c) if c.file == idx && c.offset + c.len == offset => c.len += n as u64,
                _ => chunks.push(Chunk {
                    file: idx,
                    offset,
                    len: n as u64,
                }),
            }
            filled += n;
            offset += n as u64;
        }
        out.push(FileEntry {
            path: path.clone(),
            mode: *mode,
            size: offset,
        });
    }
    if filled > 0 {
        buf.truncate(filled);
        emit(buf, chunks)?;
    }
    Ok(out)
}

/// Who restored files belong to (PostgreSQL's OS user, when the agent runs as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Checks that a manifest's paths stay inside the data directory and its chunks inside
/// their files: a damaged or forged manifest must not write anywhere else.
pub fn check_layout(dirs: &[DirEntry], files: &[FileEntry], parts: &[&[Chunk]]) -> Result<(), String> {
    let safe =
        |p: &str| !p.is_empty() && !p.starts_with('/') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if let Some(d) = dirs.iter().find(|d| !safe(&d.path)) {
        return Err(format!("directory path {:?} leaves the data directory", d.path));
    }
    if let Some(f) = files.iter().find(|f| !safe(&f.path)) {
        return Err(format!("file path {:?} leaves the data directory", f.path));
    }
    for c in parts.iter().flat_map(|p| p.iter()) {
        let f = files
            .get(c.file as usize)
            .ok_or_else(|| format!("a chunk names file #{} of {}", c.file, files.len()))?;
        if c.offset.checked_add(c.len).is_none_or(|end| end > f.size) {
            return Err(format!("a chunk of {} lies past its size {}", f.path, f.size));
        }
    }
    Ok(())
}

/// Creates the directories and the empty files; the others are created by the first of
/// their parts to arrive (creating a file costs about as much as writing a megabyte of it
/// here, so it is better spread over the parallel writers), in any order.
pub fn prepare(dest: &Path, dirs: &[DirEntry], files: &[FileEntry], owner: Option<Owner>) -> Result<(), Error> {
    let io = |p: &Path, e: std::io::Error| Error::Invalid(format!("create {}: {e}", p.display()));
    std::fs::create_dir_all(dest).map_err(|e| io(dest, e))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)).map_err(|e| io(dest, e))?;
    chown(dest, owner)?;
    for d in dirs {
        let p = dest.join(&d.path);
        match std::fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&p, e)),
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(d.mode & 0o777)).map_err(|e| io(&p, e))?;
        chown(&p, owner)?;
    }
    for f in files.iter().filter(|f| f.size == 0) {
        let p = dest.join(&f.path);
        open(&p, f.mode, false, owner).map_err(|e| Error::Invalid(format!("create {}: {e}", p.display())))?;
    }
    Ok(())
}

/// Opens (creating if needed, with its mode and owner) a file of the copy for writing.
fn open(p: &Path, mode: u32, direct: bool, owner: Option<Owner>) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    // Permission bits only: a manifest never makes a set-id file.
    o.write(true).create(true).mode(mode & 0o777);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o.open(p)?;
    if let Some(o) = owner {
        std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid))?;
    }
    Ok(f)
}

/// Writes one opened part's chunks into their files under `dest` (prepared by
/// [`prepare`]). `plain` is the part, starting at an [`ALIGN`]-aligned address (see
/// [`crate::Key::open_aligned`]). The chunks of a file cover it whole, so once every part
/// is written each file has its size.
pub fn write_part(
    dest: &Path,
    files: &[FileEntry],
    chunks: &[Chunk],
    plain: &[u8],
    owner: Option<Owner>,
) -> Result<(), String> {
    let (starts, end) = layout(chunks)?;
    if end != plain.len() {
        return Err(format!("the part holds {} bytes, its chunks {end}", plain.len()));
    }
    let aligned_buf = (plain.as_ptr() as usize).is_multiple_of(ALIGN);
    for (c, &pos) in chunks.iter().zip(&starts) {
        let f = &files[c.file as usize];
        let p: PathBuf = dest.join(&f.path);
        let data = &plain[pos..pos + c.len as usize];
        // Whole blocks at an aligned file offset go straight to the disk; the rest (a
        // file's last partial block) through the page cache.
        let direct_len = if aligned_buf && c.offset.is_multiple_of(ALIGN as u64) {
            data.len() / ALIGN * ALIGN
        } else {
            0
        };
        let mut done = 0;
        if direct_len > 0 {
            // EINVAL: the file system does not take direct I/O (tmpfs, …) or not at this
            // alignment; the page cache then takes it all.
            match open(&p, f.mode, true, owner) {
                Ok(file) => match file.write_all_at(&data[..direct_len], c.offset) {
                    Ok(()) => done = direct_len,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(format!("write {}: {e}", p.display())),
                },
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(format!("open {}: {e}", p.display())),
            }
        }
        if done < data.len() {
            let file = open(&p, f.mode, false, owner).map_err(|e| format!("open {}: {e}", p.display()))?;
            file.write_all_at(&data[done..], c.offset + done as u64)
                .map_err(|e| format!("write {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

fn chown(p: &Path, owner: Option<Owner>) -> Result<(), Error> {
    if let Some(o) = owner {
        std::os::unix::fs::chown(p, Some(o.uid), Some(o.gid))
            .map_err(|e| Error::Invalid(format!("chown {}: {e}", p.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    fn tree(root: &Path) {
        for d in [
            "base/1",
            "global",
            "pg_wal/archive_status",
            "pg_stat_tmp",
            "pg_replslot/s",
            "base/1/pgsql_tmp",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(root.join("base/1/1259"), pattern(20_000)).unwrap();
        std::fs::write(root.join("base/1/empty"), b"").unwrap();
        std::fs::write(root.join("global/pg_control"), vec![3u8; 8192]).unwrap();
        std::fs::write(root.join("global/pg_internal.init"), b"x").unwrap();
        std::fs::write(root.join("pg_wal/000000010000000000000001"), vec![1u8; 100]).unwrap();
        std::fs::write(root.join("pg_stat_tmp/x"), b"x").unwrap();
        std::fs::write(root.join("postmaster.pid"), b"1").unwrap();
        std::fs::write(root.join("base/1/pgsql_tmp/t"), b"x").unwrap();
    }

    #[test]
    fn the_listing_leaves_out_what_the_server_rebuilds() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        let l = list(tmp.path()).unwrap();
        let files: Vec<&str> = l.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            files,
            ["PG_VERSION", "base/1/1259", "base/1/empty", "global/pg_control"]
        );
        let dirs: Vec<&str> = l.dirs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "base",
                "base/1",
                "global",
                "pg_replslot",
                "pg_stat_tmp",
                "pg_wal",
                "pg_wal/archive_status"
            ]
        );
    }

    #[test]
    fn parts_restore_in_any_order() {
        round_trip(tempfile::tempdir().unwrap());
    }

    #[test]
    fn parts_restore_where_direct_io_is_refused() {
        // tmpfs refuses O_DIRECT: the page cache takes every write.
        round_trip(tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap()));
    }

    fn round_trip(tmp: tempfile::TempDir) {
        let src = tmp.path().join("src");
        tree(&src);
        let l = list(&src).unwrap();
        let mut parts = Vec::new();
        let files = pack(&src, &l.files, 4096, |b, c| {
            parts.push((b, c));
            Ok(())
        })
        .unwrap();
        assert!(parts.len() > 5, "files are split across parts");
        assert!(parts
            .iter()
            .all(|(b, c)| c.iter().map(|c| c.len).sum::<u64>() == b.len() as u64));
        let chunks: Vec<&[Chunk]> = parts.iter().map(|(_, c)| c.as_slice()).collect();
        check_layout(&l.dirs, &files, &chunks).unwrap();
        let dest = tmp.path().join("dest");
        prepare(&dest, &l.dirs, &files, None).unwrap();
        for (b, c) in parts.iter().rev() {
            // As restore hands them over: at an aligned address.
            let mut out = vec![0u8; b.len() + ALIGN];
            let off = out.as_ptr().align_offset(ALIGN);
            out[off..off + b.len()].copy_from_slice(b);
            write_part(&dest, &files, c, &out[off..off + b.len()], None).unwrap();
        }
        let bad = &parts[0];
        assert!(write_part(&dest, &files, &bad.1, &bad.0[..bad.0.len() - 1], None).is_err());
        assert_eq!(std::fs::read(dest.join("base/1/1259")).unwrap(), pattern(20_000));
        assert_eq!(std::fs::read(dest.join("global/pg_control")).unwrap(), vec![3u8; 8192]);
        assert_eq!(std::fs::read(dest.join("base/1/empty")).unwrap(), b"");
        assert!(dest.join("pg_wal/archive_status").is_dir());
        assert!(!dest.join("pg_wal/000000010000000000000001").exists());
        assert!(!dest.join("postmaster.pid").exists());
    }

    #[test]
    fn a_forged_layout_is_refused() {
        let f = |path: &str, size| FileEntry {
            path: path.into(),
            mode: 0o600,
            size,
        };
        let ok = [f("base/1/1", 10)];
        let c = [Chunk {
            file: 0,
            offset: 5,
            len: 5,
        }];
        assert!(check_layout(&[], &ok, &[&c]).is_ok());
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(check_layout(&[], &[f(bad, 1)], &[]).is_err(), "{bad}");
        }
        let past = [Chunk {
            file: 0,
            offset: 6,
            len: 5,
        }];
        assert!(check_layout(&[], &ok, &[&past]).is_err());
        let other = [Chunk {
            file: 1,
            offset: 0,
            len: 1,
        }];
        assert!(check_layout(&[], &ok, &[&other]).is_err());
    }
}
