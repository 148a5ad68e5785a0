//! A host's own disk in the local land: an ext4 image of a set size, loop-mounted on the
//! host's directory, so that filling it is a real `ENOSPC` on that host alone (and the
//! reserved-for-root blocks are off: PostgreSQL sees the whole disk, as on a cloud volume).
//!
//! Mounting needs root. The image outlives a power-off (`detach` keeps it; the next boot
//! attaches it again); terminating the host deletes it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Mounts the image on `dir`, creating and formatting it first if it does not exist yet.
/// Nothing happens when something is mounted on `dir` already.
pub fn attach(image: &Path, dir: &Path, bytes: u64) -> Result<()> {
    if mounted(dir)? {
        return Ok(());
    }
    if !image.exists() {
        let parent = image.parent().context("disk image path has no directory")?;
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        let tmp = image.with_extension("img.tmp");
        std::fs::File::create(&tmp)
            .and_then(|f| f.set_len(bytes))
            .with_context(|| format!("create disk image {}", tmp.display()))?;
        run(Command::new(tool("mkfs.ext4")).args(["-q", "-F", "-m", "0"]).arg(&tmp))
            .context("format the disk image (mkfs.ext4, from e2fsprogs)")?;
        std::fs::rename(&tmp, image).with_context(|| format!("rename {}", tmp.display()))?;
    }
    run(Command::new("mount").args(["-o", "loop"]).arg(image).arg(dir))
        .context("mount the disk image (a loop mount needs root)")
}

/// Unmounts whatever is mounted on `dir` (nothing mounted is fine). Processes that still
/// hold files there (a server just killed) get a moment; then the mount is detached lazily.
pub async fn detach(dir: &Path) -> Result<()> {
    for _ in 0..20 {
        if !mounted(dir)? {
            return Ok(());
        }
        if run(Command::new("umount").arg(dir)).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run(Command::new("umount").arg("-l").arg(dir)).with_context(|| format!("unmount {}", dir.display()))
}

/// Whether a file system is mounted exactly on `dir`.
pub fn mounted(dir: &Path) -> Result<bool> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(false);
    };
    let table = std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let found = mount_points(&table).any(|p| p == dir);
    Ok(found)
}

/// The mount points of a `/proc/self/mountinfo` table (its fifth field, octal escapes
/// such as `\040` for a space decoded).
fn mount_points(table: &str) -> impl Iterator<Item = PathBuf> + '_ {
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
}

fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok().and_then(|d| u8::from_str_radix(d, 8).ok()));
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Debian keeps mkfs in /sbin, which a non-login PATH may lack.
pub(super) fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub(super) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_escapes() {
        let table = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                     97 29 7:0 / /tmp/land/hosts/h\\0401 rw,relatime - ext4 /dev/loop0 rw\n";
        let points: Vec<PathBuf> = mount_points(table).collect();
        assert_eq!(points, [PathBuf::from("/proc"), PathBuf::from("/tmp/land/hosts/h 1")]);
    }
}
