//! A tenant network in the local land: a Linux network namespace of its own, where every
//! address of the network's range is local (an "AnyIP" route on its loopback), so private
//! endpoints can listen on any of them and the tenant's clients, run inside the namespace
//! (`ip netns exec <name> …`), reach them — and nothing outside the namespace can.
//!
//! Making and removing namespaces needs root (`CAP_SYS_ADMIN`).

use super::disk::{run, tool};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;

/// Creates the namespace with its range (idempotent: an existing one is set up again).
pub fn create(namespace: &str, cidr: &str) -> Result<()> {
    check_name(namespace)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("tenant networks in the local land are network namespaces, which only root can make");
    }
    if !exists(namespace) {
        run(Command::new(tool("ip")).args(["netns", "add", namespace]))?;
    }
    run(Command::new(tool("ip")).args(["-n", namespace, "link", "set", "lo", "up"]))?;
    run(Command::new(tool("ip")).args(["-n", namespace, "route", "replace", "local", cidr, "dev", "lo"]))
}

/// Removes the namespace (nothing to do when it is gone).
pub fn delete(namespace: &str) -> Result<()> {
    check_name(namespace)?;
    if !exists(namespace) {
        return Ok(());
    }
    run(Command::new(tool("ip")).args(["netns", "delete", namespace]))
}

/// Whether the namespace exists on this machine.
pub fn exists(namespace: &str) -> bool {
    Path::new("/run/netns").join(namespace).exists()
}

/// Names the control plane makes are `hr-` and an id; anything else (a path, an option)
/// is refused before it reaches `ip`.
fn check_name(namespace: &str) -> Result<()> {
    let ok = namespace.len() <= 64
        && namespace.starts_with("hr-")
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("not a tenant network's namespace name: {namespace:?}");
    }
    Ok(())
}
