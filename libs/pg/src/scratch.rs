//! A throwaway PostgreSQL server for tests and benchmarks (cargo feature `scratch`): its
//! own temporary directory, a free loopback port, the tenant-style logins asked for, and
//! stopped when dropped.

use crate::{PgBin, RunAs, ServerConfig};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

pub struct ScratchServer {
    _dir: tempfile::TempDir,
    pid: u32,
    port: u16,
    socket_dir: PathBuf,
}

impl ScratchServer {
    /// Initialises and starts a server on `127.0.0.1`; `tcp_logins` are the `(user,
    /// database)` pairs that may log in over TCP with a SCRAM password.
    pub async fn start(tcp_logins: &[(&str, &str)]) -> Result<Self> {
        Self::start_with(tcp_logins, None).await
    }

    /// [`ScratchServer::start`] serving TCP over TLS only, with `tls` (certificate, key and
    /// CA, PEM).
    pub async fn start_tls(tcp_logins: &[(&str, &str)], tls: (&str, &str, &str)) -> Result<Self> {
        Self::start_with(tcp_logins, Some(tls)).await
    }

    async fn start_with(tcp_logins: &[(&str, &str)], tls: Option<(&str, &str, &str)>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hr-pg-")
            .tempdir()
            .context("make a temporary directory")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .context("open the temporary directory to postgres")?;
        let run_as = RunAs::detect()?;
        let bin = PgBin::find(15)?;
        let data = dir.path().join("data");
        crate::initdb(&bin, &data, run_as)?;
        let socket_dir = dir.path().join("s");
        crate::own_dir(&socket_dir, run_as, 0o700)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free port")?
            .port();
        let cfg = ServerConfig {
            listen_addr: "127.0.0.1".into(),
            port,
            socket_dir: socket_dir.clone(),
            memory_mb: 128,
            min_connections: None,
            tcp_logins: tcp_logins.iter().map(|(u, d)| (u.to_string(), d.to_string())).collect(),
            replication_user: None,
            synchronous_standby_names: String::new(),
            primary_conninfo: None,
            recovery: None,
            read_only: false,
            disk_bytes: None,
            tls: match tls {
                Some((cert, key, ca)) => Some(crate::write_tls_files(&dir.path().join("tls"), cert, key, ca, run_as)?),
                None => None,
            },
        };
        crate::write_config(&data, &cfg, run_as)?;
        let log = dir.path().join("pg.log");
        let pid = crate::start(&bin, &data, &log, run_as)?;
        let server = Self {
            _dir: dir,
            pid,
            port,
            socket_dir,
        };
        crate::wait_ready(&data, pid, &log, Duration::from_secs(60)).await?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of its local socket.
    pub fn socket_dir(&self) -> &std::path::Path {
        &self.socket_dir
    }

    /// A URL for the admin superuser over the local socket.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://{}@localhost:{}/postgres?host={}",
            crate::ADMIN_USER,
            self.port,
            self.socket_dir.display()
        )
    }

    /// A connection as the admin superuser over the local socket.
    pub async fn admin(&self) -> Result<sqlx::PgConnection> {
        crate::admin_connect(&self.socket_dir, self.port, "postgres").await
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        // Immediate shutdown: nothing of a throwaway server needs to be kept.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
    }
}
