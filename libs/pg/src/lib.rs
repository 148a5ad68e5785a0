//! PostgreSQL process control for one data directory: initdb (or a copy of a template),
//! configuration, start, readiness, stop, and SCRAM verifiers for roles.
//!
//! This crate owns how a PostgreSQL server is driven as an OS process. It knows nothing of
//! clusters, tenants or the control plane; the agent decides *what* to run and calls in
//! here to do it. When the caller is root, every PostgreSQL program runs as an
//! unprivileged OS user ([`RunAs`]), because PostgreSQL refuses to run as root and a
//! tenant's server must never hold root's rights.

mod scram;
#[cfg(feature = "scratch")]
pub mod scratch;
pub mod wall;

pub use scram::scram_sha256_verifier;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The name of the bootstrap superuser; reachable only on the local socket.
pub const ADMIN_USER: &str = "highrise_admin";

/// Where the PostgreSQL programs of one major version live.
#[derive(Debug, Clone)]
pub struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// Finds the binaries of `version`: `$HIGHRISE_PG_BIN` if set, else the Debian layout.
    pub fn find(version: u32) -> Result<Self> {
        let dir = match std::env::var_os("HIGHRISE_PG_BIN") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")),
        };
        if !dir.join("postgres").is_file() || !dir.join("initdb").is_file() {
            bail!(
                "PostgreSQL {version} server binaries not found in {} (install postgresql-{version} or set HIGHRISE_PG_BIN)",
                dir.display()
            );
        }
        Ok(Self { dir })
    }

    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }
}

/// The OS identity PostgreSQL runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `None` when not root (PostgreSQL runs as the caller); as root, the `postgres` user
    /// (or `$HIGHRISE_PG_USER`).
    pub fn detect() -> Result<Option<Self>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let name = std::env::var("HIGHRISE_PG_USER").unwrap_or_else(|_| "postgres".into());
        let user = nix::unistd::User::from_name(&name)
            .context("look up the PostgreSQL OS user")?
            .with_context(|| {
                format!("running as root needs an unprivileged OS user `{name}` to run PostgreSQL (create it or set HIGHRISE_PG_USER)")
            })?;
        Ok(Some(Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }))
    }

    fn apply(self, cmd: &mut std::process::Command) {
        cmd.uid(self.uid).gid(self.gid);
    }
}

/// Checks that the unprivileged PostgreSQL user can reach the existing directory `dir`
/// (every ancestor searchable by others), then opens `dir` itself to it (mode 0711).
/// Returns the canonical path.
pub fn open_to_postgres(dir: &Path) -> Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    for anc in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(anc)
            .with_context(|| format!("stat {}", anc.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "{} (mode {:o}) cannot be entered by the unprivileged PostgreSQL user, so it cannot reach {}; use a directory under /tmp or /var/lib, or chmod o+x it",
                anc.display(),
                mode & 0o777,
                dir.display()
            );
        }
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("chmod {}", dir.display()))?;
    Ok(dir)
}

/// Makes `path` (a directory) owned by the PostgreSQL user with mode `mode`.
pub fn own_dir(path: &Path, run_as: Option<RunAs>, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    if let Some(r) = run_as {
        nix::unistd::chown(path, Some(r.uid.into()), Some(r.gid.into()))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

fn run(mut cmd: std::process::Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Runs `initdb` into `datadir` (which must not exist or be empty). Local connections of
/// the admin superuser use trust on a socket directory only the PostgreSQL user can
/// enter; every TCP connection uses scram-sha-256.
pub fn initdb(bin: &PgBin, datadir: &Path, run_as: Option<RunAs>) -> Result<()> {
    own_dir(datadir, run_as, 0o700)?;
    let mut cmd = std::process::Command::new(bin.path("initdb"));
    cmd.arg("-D")
        .arg(datadir)
        .args(["-U", ADMIN_USER, "-E", "UTF8", "--locale=C"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-N"])
        .env("LC_ALL", "C");
    if let Some(r) = run_as {
        r.apply(&mut cmd);
    }
    run(cmd, "initdb")
}

/// Copies a never-started template data directory to `datadir` (ownership preserved).
pub fn copy_template(template: &Path, datadir: &Path) -> Result<()> {
    if datadir.exists() {
        std::fs::remove_dir_all(datadir).with_context(|| format!("clear {}", datadir.display()))?;
    }
    let mut cmd = std::process::Command::new("cp");
    cmd.args(["-a", "--reflink=auto"]).arg(template).arg(datadir);
    run(cmd, "copy template data directory")
}

/// Flushes every file of a data directory to disk (initdb and the template copy skip it).
pub fn sync_datadir(bin: &PgBin, datadir: &Path, run_as: Option<RunAs>) -> Result<()> {
    let mut cmd = std::process::Command::new(bin.path("initdb"));
    cmd.arg("--sync-only").arg("-D").arg(datadir);
    if let Some(r) = run_as {
        r.apply(&mut cmd);
    }
    run(cmd, "sync data directory")
}

/// The server settings the agent owns. Written to `highrise.conf`, which the main
/// configuration file includes; tenants cannot change these (they are not superuser).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen_addr: String,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub memory_mb: u32,
    /// Allow at least this many connections: a standby must allow as many as its primary
    /// does (PostgreSQL pauses its recovery otherwise), so during a resize down the new,
    /// smaller members allow what the primary they follow allows.
    pub min_connections: Option<u32>,
    /// Roles that may log in over TCP (scram-sha-256), to the given database.
    pub tcp_logins: Vec<(String, String)>,
    /// The role standbys stream as (a `replication` line in pg_hba), on a primary.
    pub replication_user: Option<String>,
    /// `synchronous_standby_names` of a primary (empty: asynchronous).
    pub synchronous_standby_names: String,
    /// A standby's `primary_conninfo`.
    pub primary_conninfo: Option<String>,
    /// Archive recovery from WAL already placed in `pg_wal` (a restore), up to a target.
    pub recovery: Option<Recovery>,
    /// New transactions default to read-only (`default_transaction_read_only`): the
    /// storage guard's high-water mark. A session may still ask for read-write.
    pub read_only: bool,
    /// The disk's size in bytes, when known: the WAL PostgreSQL keeps between checkpoints
    /// is bounded to a share of it (the default 1 GB would fill a small disk by itself).
    pub disk_bytes: Option<u64>,
    /// Serve TCP over TLS only, with this certificate ([`write_tls_files`]); `None`: TCP
    /// in the clear.
    pub tls: Option<TlsFiles>,
}

/// A server's certificate, key and the CA that signed it, as files PostgreSQL reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files' places in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            ca: dir.join("ca.crt"),
        }
    }
}

/// Writes a server's certificate, key (mode 0600, as PostgreSQL demands) and CA into
/// `dir` (mode 0700), owned by the PostgreSQL user; unchanged files are left alone.
pub fn write_tls_files(
    dir: &Path,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    run_as: Option<RunAs>,
) -> Result<TlsFiles> {
    own_dir(dir, run_as, 0o700)?;
    let files = TlsFiles::in_dir(dir);
    for (path, text, mode) in [
        (&files.cert, cert_pem, 0o644),
        (&files.key, key_pem, 0o600),
        (&files.ca, ca_pem, 0o644),
    ] {
        if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
            write_owned_mode(path, text, run_as, mode)?;
        }
    }
    Ok(files)
}

/// A libpq connection string to a server at `ip:port` as `user`. With `tls` (the name its
/// certificate carries and the CA file), the connection is encrypted and the server
/// verified (`sslmode=verify-full`: `host` is the name checked, `hostaddr` where to go).
pub fn conninfo(ip: &str, port: u16, user: &str, tls: Option<(&str, &Path)>) -> String {
    let q = conninfo_value;
    match tls {
        Some((name, ca)) => format!(
            "host={} hostaddr={} port={port} user={} sslmode=verify-full sslrootcert={}",
            q(name),
            q(ip),
            q(user),
            q(&ca.display().to_string())
        ),
        None => format!("host={} port={port} user={}", q(ip), q(user)),
    }
}

/// A value for a libpq connection string: bare when it can be, else single-quoted with
/// `\` and `'` escaped.
pub fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c == '\\' || c == '\'') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `max_wal_size` and `min_wal_size` in MB for a disk of `disk_bytes`: an eighth of the
/// disk, between 64 MB and PostgreSQL's default of 1 GB.
pub fn wal_size_mb(disk_bytes: Option<u64>) -> (u64, u64) {
    let max = disk_bytes.map_or(1024, |b| (b / 8 / (1024 * 1024)).clamp(64, 1024));
    (max, (max / 2).min(80))
}

/// Where a restore's archive recovery stops; the end of the WAL when both are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recovery {
    /// `recovery_target_time`, e.g. `2026-11-26 12:00:00+00`.
    pub target_time: Option<String>,
    /// `recovery_target_lsn`, e.g. `0/3000060`.
    pub target_lsn: Option<String>,
}

/// `max_connections` for a memory budget: 100 per 256 MiB, between 100 and 1000.
pub fn default_max_connections(memory_mb: u32) -> u32 {
    (memory_mb / 256 * 100).clamp(100, 1000)
}

pub fn write_config(datadir: &Path, cfg: &ServerConfig, run_as: Option<RunAs>) -> Result<()> {
    let shared_buffers = (cfg.memory_mb / 4).max(16);
    let (max_wal_mb, min_wal_mb) = wal_size_mb(cfg.disk_bytes);
    // A standby pings a quiet primary after half of `wal_receiver_timeout` and gives it up
    // after all of it: a silent (frozen, cut off) primary is noticed within 1 s, which
    // bounds how soon a failover can follow. A primary too slow to answer a ping in 0.5 s
    // only costs a reconnect (`wal_retrieve_retry_interval`), never a failover: that also
    // needs the primary's host to have gone quiet.
    //
    // `wal_keep_size` (as much as `min_wal_size`, recycled anyway) keeps the WAL a standby
    // seeded from object storage asks for first: the archive's end when it was fetched,
    // which a checkpoint in the seconds before it starts streaming would otherwise remove.
    let conf = format!(
        "# Written by the highrise agent; changes are overwritten.\n\
         listen_addresses = '{listen}'\n\
         port = {port}\n\
         unix_socket_directories = '{sock}'\n\
         unix_socket_permissions = 0700\n\
         password_encryption = 'scram-sha-256'\n\
         shared_buffers = '{shared_buffers}MB'\n\
         max_connections = {max_connections}\n\
         logging_collector = off\n\
         log_line_prefix = '%m [%p] '\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         dynamic_shared_memory_type = posix\n\
         hot_standby = on\n\
         wal_retrieve_retry_interval = '200ms'\n\
         wal_receiver_timeout = '1s'\n\
         wal_sender_timeout = '5s'\n\
         synchronous_standby_names = {sync}\n\
         primary_conninfo = {conninfo}\n\
         max_wal_size = '{max_wal}MB'\n\
         min_wal_size = '{min_wal}MB'\n\
         wal_keep_size = '{min_wal}MB'\n\
         default_transaction_read_only = {read_only}\n",
        listen = cfg.listen_addr,
        port = cfg.port,
        sock = cfg.socket_dir.display(),
        max_connections = default_max_connections(cfg.memory_mb).max(cfg.min_connections.unwrap_or(0)),
        sync = quote_literal(&cfg.synchronous_standby_names),
        conninfo = quote_literal(cfg.primary_conninfo.as_deref().unwrap_or("")),
        max_wal = max_wal_mb,
        min_wal = min_wal_mb,
        read_only = if cfg.read_only { "on" } else { "off" },
    );
    let mut conf = conf;
    // With a certificate, TCP takes TLS only (every `host` line below is `hostssl`).
    let host = match &cfg.tls {
        Some(t) => {
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\nssl_min_protocol_version = 'TLSv1.2'\n",
                quote_literal(&t.cert.display().to_string()),
                quote_literal(&t.key.display().to_string()),
            ));
            "hostssl"
        }
        None => "host   ",
    };
    let mut hba = String::from(
        "# Written by the highrise agent; changes are overwritten.\n\
         # TYPE  DATABASE  USER  ADDRESS  METHOD\n",
    );
    hba.push_str(&format!("local   all       {ADMIN_USER}  trust\n"));
    // The agent's WAL archiver streams over the local socket.
    hba.push_str(&format!("local   replication  {ADMIN_USER}  trust\n"));
    if let Some(user) = &cfg.replication_user {
        hba.push_str(&format!("{host} replication  {user}  0.0.0.0/0  scram-sha-256\n"));
    }
    for (user, db) in &cfg.tcp_logins {
        hba.push_str(&format!("{host} {db}  {user}  0.0.0.0/0  scram-sha-256\n"));
        hba.push_str(&format!("{host} {db}  {user}  ::/0  scram-sha-256\n"));
    }
    if let Some(r) = &cfg.recovery {
        // The restore placed every segment in pg_wal already; the archive has nothing more.
        conf.push_str(
            "restore_command = 'false'\nrecovery_target_timeline = 'latest'\nrecovery_target_action = 'promote'\n",
        );
        if let Some(t) = &r.target_time {
            conf.push_str(&format!("recovery_target_time = {}\n", quote_literal(t)));
        }
        if let Some(l) = &r.target_lsn {
            conf.push_str(&format!("recovery_target_lsn = {}\n", quote_literal(l)));
        }
        write_owned(&datadir.join("recovery.signal"), "", run_as)?;
    }
    write_owned(&datadir.join("highrise.conf"), &conf, run_as)?;
    write_owned(&datadir.join("pg_hba.conf"), &hba, run_as)?;
    let main = datadir.join("postgresql.conf");
    let text = std::fs::read_to_string(&main).with_context(|| format!("read {}", main.display()))?;
    if !text.contains("include 'highrise.conf'") {
        write_owned(&main, &format!("{text}\ninclude 'highrise.conf'\n"), run_as)?;
    }
    Ok(())
}

/// Writes a file atomically (temp file + rename) owned by the PostgreSQL user.
fn write_owned(path: &Path, contents: &str, run_as: Option<RunAs>) -> Result<()> {
    write_owned_mode(path, contents, run_as, 0o644)
}

/// [`write_owned`] with the file's mode (set before any byte is written).
fn write_owned_mode(path: &Path, contents: &str, run_as: Option<RunAs>, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("write {}", tmp.display()))?;
    if let Some(r) = run_as {
        nix::unistd::chown(&tmp, Some(r.uid.into()), Some(r.gid.into()))
            .with_context(|| format!("chown {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

/// Starts the postmaster in its own session (so a terminal's Ctrl-C reaches only its
/// supervisor, which then stops it in order). Returns its PID.
pub fn start(bin: &PgBin, datadir: &Path, log: &Path, run_as: Option<RunAs>) -> Result<u32> {
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let errfile = logfile.try_clone().context("duplicate log file handle")?;
    let mut cmd = std::process::Command::new(bin.path("postgres"));
    cmd.arg("-D")
        .arg(datadir)
        .stdin(Stdio::null())
        .stdout(logfile)
        .stderr(errfile)
        .env("LC_ALL", "C")
        // A standby's libpq looks for a client certificate under `~/.postgresql`: not in
        // the agent's home (root's, unreadable to the server's user) but in the data
        // directory, where there is none.
        .env("HOME", datadir)
        .process_group(0);
    if let Some(r) = run_as {
        r.apply(&mut cmd);
    }
    let child = cmd.spawn().context("spawn postgres")?;
    // The postmaster is watched through postmaster.pid, not through this handle; reap it
    // in the background so it never lingers as a zombie.
    let pid = child.id();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(pid)
}

/// What a data directory holds and how much room its file system has left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of files in the data directory outside `pg_wal`.
    pub data_bytes: u64,
    /// Bytes of files in `pg_wal`.
    pub wal_bytes: u64,
    /// Free bytes of the file system the data directory is on (for unprivileged users).
    pub fs_free_bytes: u64,
    pub fs_total_bytes: u64,
}

/// Measures `datadir`: the sizes of its files (data and WAL apart) and its file system's
/// room. Files that vanish while it walks (PostgreSQL removes and renames files all the
/// time) are skipped; links are not followed.
pub fn disk_usage(datadir: &Path) -> Result<DiskUsage> {
    fn walk(dir: &Path, total: &mut u64) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                // A directory removed meanwhile is no error.
                let _ = walk(&entry.path(), total);
            } else if meta.is_file() {
                *total += meta.len();
            }
        }
        Ok(())
    }
    let mut all = 0;
    walk(datadir, &mut all).with_context(|| format!("measure {}", datadir.display()))?;
    let mut wal = 0;
    let _ = walk(&datadir.join("pg_wal"), &mut wal);
    let (fs_total_bytes, fs_free_bytes) = disk_room(datadir)?;
    Ok(DiskUsage {
        data_bytes: all.saturating_sub(wal),
        wal_bytes: wal,
        fs_free_bytes,
        fs_total_bytes,
    })
}

/// The size of the file system `path` is on and the bytes free to an unprivileged user
/// (PostgreSQL's), as `(total, free)`: one `statvfs`.
pub fn disk_room(path: &Path) -> Result<(u64, u64)> {
    let fs = nix::sys::statvfs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let (block, blocks, available) = (
        fs.fragment_size() as u64,
        fs.blocks() as u64,
        fs.blocks_available() as u64,
    );
    Ok((blocks * block, available * block))
}

/// PID of the postmaster running on `datadir`, if any (from `postmaster.pid`).
pub fn running_pid(datadir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 0 || !alive(pid as u32) {
        return None;
    }
    // Guard against PID reuse: the process must be a postgres server on this directory.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains("postgres").then_some(pid as u32)
}

fn alive(pid: u32) -> bool {
    match kill(Pid::from_raw(pid as i32), None) {
        Ok(()) => !is_zombie(pid),
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Waits until the postmaster reports `ready` in `postmaster.pid` (as `pg_ctl -w` does,
/// but polling every few milliseconds instead of every 100 ms).
pub async fn wait_ready(datadir: &Path, pid: u32, log: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(datadir.join("postmaster.pid")) {
            let lines: Vec<&str> = text.lines().collect();
            if lines.first().map(|l| l.trim()) == Some(&pid.to_string())
                && lines.get(7).map(|l| l.trim()) == Some("ready")
            {
                return Ok(());
            }
        }
        if !alive(pid) {
            bail!("postgres exited during start-up: {}", log_tail(log));
        }
        if Instant::now() > deadline {
            bail!("postgres not ready after {timeout:?}: {}", log_tail(log));
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Copies a running primary into `datadir` with `pg_basebackup` (WAL streamed along),
/// ready to start as its standby; `primary` is a [`conninfo`] (the password aside).
pub fn basebackup(bin: &PgBin, datadir: &Path, primary: &str, password: &str, run_as: Option<RunAs>) -> Result<()> {
    if datadir.exists() {
        std::fs::remove_dir_all(datadir).with_context(|| format!("clear {}", datadir.display()))?;
    }
    own_dir(datadir, run_as, 0o700)?;
    let mut cmd = std::process::Command::new(bin.path("pg_basebackup"));
    cmd.arg("-D")
        .arg(datadir)
        .arg("-d")
        .arg(primary)
        .args(["-X", "stream", "-c", "fast", "--no-password", "--no-sync"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        // No client certificate from anyone's `~/.postgresql` (see `start`).
        .env("HOME", datadir);
    if let Some(r) = run_as {
        r.apply(&mut cmd);
    }
    run(cmd, "pg_basebackup")?;
    make_standby(datadir, run_as)
}

/// Marks a data directory for archive recovery on its next start (`recovery.signal`).
/// PostgreSQL removes the file when recovery has ended, so its presence says whether a
/// restore still has to recover.
pub fn make_recovering(datadir: &Path, run_as: Option<RunAs>) -> Result<()> {
    write_owned(&datadir.join("recovery.signal"), "", run_as)
}

/// Whether the data directory is still marked for archive recovery.
pub fn recovery_pending(datadir: &Path) -> bool {
    datadir.join("recovery.signal").exists()
}

/// Marks a data directory to start as a standby (`standby.signal`).
pub fn make_standby(datadir: &Path, run_as: Option<RunAs>) -> Result<()> {
    write_owned(&datadir.join("standby.signal"), "", run_as)
}

/// Hands a restored data directory to the PostgreSQL user (every file, mode 0700 on the
/// top directory, as PostgreSQL demands).
pub fn chown_tree(dir: &Path, run_as: Option<RunAs>) -> Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))?;
    let Some(r) = run_as else { return Ok(()) };
    fn walk(p: &Path, r: RunAs) -> Result<()> {
        nix::unistd::chown(p, Some(r.uid.into()), Some(r.gid.into()))
            .with_context(|| format!("chown {}", p.display()))?;
        if p.symlink_metadata()
            .with_context(|| format!("stat {}", p.display()))?
            .is_dir()
        {
            for e in std::fs::read_dir(p).with_context(|| format!("read {}", p.display()))? {
                walk(&e.with_context(|| format!("read {}", p.display()))?.path(), r)?;
            }
        }
        Ok(())
    }
    walk(dir, r)
}

/// Starts a non-exclusive base backup on `conn` (a fast checkpoint first); the files may
/// then be copied until [`backup_stop`] on the same connection. Returns the timeline and
/// the LSN the copy's WAL starts at.
pub async fn backup_start(conn: &mut sqlx::PgConnection, label: &str) -> Result<(u32, u64)> {
    let (lsn,): (String,) = sqlx::query_as("SELECT pg_backup_start($1, true)::text")
        .bind(label)
        .fetch_one(&mut *conn)
        .await
        .context("start the base backup (pg_backup_start)")?;
    let lsn = parse_lsn(&lsn).with_context(|| format!("bad LSN {lsn:?}"))?;
    let (timeline, _) = wal_position(conn).await?;
    Ok((timeline, lsn))
}

/// Ends the base backup [`backup_start`] began on `conn`: the LSN the copy is consistent
/// at, and the `backup_label` to restore with it. (The archive is Highrise's own, so it
/// does not wait for `archive_command`.)
pub async fn backup_stop(conn: &mut sqlx::PgConnection) -> Result<(u64, String)> {
    let (lsn, label, spcmap): (String, String, Option<String>) =
        sqlx::query_as("SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)")
            .fetch_one(conn)
            .await
            .context("end the base backup (pg_backup_stop)")?;
    if spcmap.is_some_and(|m| !m.trim().is_empty()) {
        bail!("the server has tablespaces, which Highrise does not back up");
    }
    let lsn = parse_lsn(&lsn).with_context(|| format!("bad LSN {lsn:?}"))?;
    Ok((lsn, label))
}

/// What `pg_controldata` says of a data directory that is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlData {
    pub system_identifier: u64,
    /// `shut down`: the directory is consistent at its last checkpoint.
    pub shut_down: bool,
    pub timeline: u32,
    /// Where recovery from this directory starts (the last checkpoint's redo point).
    pub redo_lsn: u64,
}

pub fn control_data(bin: &PgBin, datadir: &Path) -> Result<ControlData> {
    let out = std::process::Command::new(bin.path("pg_controldata"))
        .arg("-D")
        .arg(datadir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .context("spawn pg_controldata")?;
    if !out.status.success() {
        bail!(
            "pg_controldata failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_control_data(&String::from_utf8_lossy(&out.stdout))
}

fn parse_control_data(text: &str) -> Result<ControlData> {
    let field = |name: &str| -> Result<&str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
            .with_context(|| format!("pg_controldata printed no {name:?}"))
    };
    Ok(ControlData {
        system_identifier: field("Database system identifier")?.parse()?,
        shut_down: field("Database cluster state")? == "shut down",
        timeline: field("Latest checkpoint's TimeLineID")?.parse()?,
        redo_lsn: parse_lsn(field("Latest checkpoint's REDO location")?).context("bad REDO location")?,
    })
}

/// What a running server says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub in_recovery: bool,
    /// Primary: flushed WAL; standby: received and flushed WAL (replayed, if none yet).
    pub lsn: Option<u64>,
    /// A standby's WAL receiver is streaming.
    pub streaming: bool,
    /// A standby: where its running WAL receiver began streaming.
    pub receive_start_lsn: Option<u64>,
    /// A primary: the standbys (by `application_name`) that count toward its synchronous
    /// commits right now — caught up and streaming, not merely named.
    pub sync_streaming: Vec<String>,
    /// The running server's `max_connections`.
    pub max_connections: Option<u32>,
    /// Client sessions connected now.
    pub connections: Option<u32>,
    /// Transactions committed and rolled back in every database since the statistics were
    /// last reset (cumulative).
    pub xacts: Option<u64>,
}

/// Parses PostgreSQL's `X/Y` notation of a WAL position (each half 1–8 hex digits) into
/// 64 bits; the one parser of LSNs in Highrise.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let half = |h: &str| {
        (!h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(h, 16).ok())
            .flatten()
    };
    Some((half(hi)? << 32) | half(lo)?)
}

/// `X/Y` notation of an LSN, as PostgreSQL prints it.
pub fn fmt_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// A primary's timeline and current WAL write position. Taken before a base backup it
/// is at or before where the backup's WAL starts; taken after, at or past where it ends.
pub async fn wal_position(conn: &mut sqlx::PgConnection) -> Result<(u32, u64)> {
    let (tli, lsn): (i32, String) =
        sqlx::query_as("SELECT timeline_id, pg_current_wal_lsn()::text FROM pg_control_checkpoint()")
            .fetch_one(conn)
            .await
            .context("read the WAL position")?;
    let lsn = parse_lsn(&lsn).with_context(|| format!("bad LSN {lsn:?}"))?;
    Ok((u32::try_from(tli).unwrap_or(1), lsn))
}

pub async fn status(conn: &mut sqlx::PgConnection) -> Result<Status> {
    use sqlx::Row;
    let row = sqlx::query(
        "select pg_is_in_recovery() as rec, \
         (case when pg_is_in_recovery() then coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
          else pg_current_wal_flush_lsn() end)::text as lsn, \
         coalesce((select status = 'streaming' from pg_stat_wal_receiver limit 1), false) as streaming, \
         (select receive_start_lsn::text from pg_stat_wal_receiver limit 1) as receive_start_lsn, \
         coalesce((select array_agg(application_name::text order by application_name) from pg_stat_replication \
          where state = 'streaming' and sync_state in ('sync', 'quorum')), '{}') as sync_streaming, \
         current_setting('max_connections')::int as max_connections, \
         (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as connections, \
         (select sum(xact_commit + xact_rollback) from pg_stat_database)::bigint as xacts",
    )
    .fetch_one(&mut *conn)
    .await
    .context("query server status")?;
    Ok(Status {
        in_recovery: row.try_get("rec").context("read status")?,
        lsn: row
            .try_get::<Option<String>, _>("lsn")
            .context("read status")?
            .and_then(|l| parse_lsn(&l)),
        streaming: row.try_get("streaming").context("read status")?,
        receive_start_lsn: row
            .try_get::<Option<String>, _>("receive_start_lsn")
            .context("read status")?
            .and_then(|l| parse_lsn(&l)),
        sync_streaming: row.try_get("sync_streaming").context("read status")?,
        max_connections: row
            .try_get::<Option<i32>, _>("max_connections")
            .context("read status")?
            .and_then(|n| u32::try_from(n).ok()),
        connections: row
            .try_get::<Option<i32>, _>("connections")
            .context("read status")?
            .and_then(|n| u32::try_from(n).ok()),
        xacts: row
            .try_get::<Option<i64>, _>("xacts")
            .context("read status")?
            .and_then(|n| u64::try_from(n).ok()),
    })
}

/// Cancels the running statement of every session of `role` whose transaction has written
/// (holds a transaction id): the storage guard's last step before the disk is full.
/// Returns how many were cancelled.
///
/// A session waiting for its synchronous standbys is left alone: its commit is on the
/// local disk already, and a cancel would tell the client it committed although no
/// standby has it (PostgreSQL answers a cancelled wait with a warning and success).
pub async fn cancel_writers(conn: &mut sqlx::PgConnection, role: &str) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity \
         WHERE usename = $1 AND backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
         AND wait_event IS DISTINCT FROM 'SyncRep'",
    )
    .bind(role)
    .fetch_one(conn)
    .await
    .context("cancel write transactions")
}

/// Promotes a standby and waits (up to 60 s) until it accepts writes.
pub async fn promote(conn: &mut sqlx::PgConnection) -> Result<()> {
    use sqlx::Row;
    let row = sqlx::query("select pg_promote(true, 60) as ok")
        .fetch_one(&mut *conn)
        .await
        .context("promote")?;
    if !row.try_get::<bool, _>("ok").context("read promote result")? {
        bail!("promotion did not finish within 60 s");
    }
    Ok(())
}

/// Asks the postmaster to re-read its configuration.
pub fn reload(pid: u32) -> Result<()> {
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).context("signal postgres to reload")
}

/// Creates (or updates) the cluster's replication role, with the password's verifier.
pub async fn ensure_replicator(conn: &mut sqlx::PgConnection, user: &str, scram: &str) -> Result<()> {
    use sqlx::Executor;
    let exists = sqlx::query("select 1 from pg_roles where rolname = $1")
        .bind(user)
        .fetch_optional(&mut *conn)
        .await
        .context("look up replication role")?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let sql = format!(
        "{verb} ROLE {} LOGIN REPLICATION NOSUPERUSER PASSWORD {}",
        quote_ident(user),
        quote_literal(scram)
    );
    conn.execute(sql.as_str()).await.context("create replication role")?;
    Ok(())
}

/// The last lines of a log, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Stops the postmaster: fast shutdown, then immediate, then SIGKILL if it will not go.
pub async fn stop(pid: u32, timeout: Duration) -> Result<()> {
    let target = Pid::from_raw(pid as i32);
    for (signal, wait) in [
        (Signal::SIGINT, timeout),
        (Signal::SIGQUIT, Duration::from_secs(5)),
        (Signal::SIGKILL, Duration::from_secs(5)),
    ] {
        if !alive(pid) {
            return Ok(());
        }
        let _ = kill(target, signal);
        let deadline = Instant::now() + wait;
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if alive(pid) {
        bail!("postgres (pid {pid}) did not exit");
    }
    Ok(())
}

/// Connects as the admin superuser over the local socket. Its commits do not wait for
/// synchronous standbys (`synchronous_commit = local`): the agent's own catalog changes
/// are idempotent and re-applied, and must never hang on a standby that is gone.
pub async fn admin_connect(socket_dir: &Path, port: u16, database: &str) -> Result<sqlx::PgConnection> {
    use sqlx::ConnectOptions;
    let opts = sqlx::postgres::PgConnectOptions::new()
        .socket(socket_dir)
        .port(port)
        .username(ADMIN_USER)
        .database(database)
        // The agent's own work goes on when the storage guard made the server read-only.
        .options([
            ("synchronous_commit", "local"),
            ("default_transaction_read_only", "off"),
        ])
        .log_statements(tracing::log::LevelFilter::Trace);
    opts.connect().await.context("connect as admin over the local socket")
}

/// Quotes an identifier for SQL (`"..."` with doubled quotes).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Creates (or updates) the tenant's owner role and database. The role is not superuser
/// and gets no role that reaches the host: no `pg_execute_server_program`, no server
/// file access, no CREATEROLE (which in PostgreSQL 15 could grant those).
pub async fn ensure_owner(conn: &mut sqlx::PgConnection, owner: &str, scram: &str, database: &str) -> Result<()> {
    use sqlx::{Executor, Row};
    let exists = sqlx::query("select 1 from pg_roles where rolname = $1")
        .bind(owner)
        .fetch_optional(&mut *conn)
        .await
        .context("look up owner role")?
        .is_some();
    let attrs = "LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS";
    let sql = if exists {
        format!(
            "ALTER ROLE {} {attrs} PASSWORD {}",
            quote_ident(owner),
            quote_literal(scram)
        )
    } else {
        format!(
            "CREATE ROLE {} {attrs} PASSWORD {}",
            quote_ident(owner),
            quote_literal(scram)
        )
    };
    conn.execute(sql.as_str()).await.context("create owner role")?;
    let db_exists = sqlx::query("select datname from pg_database where datname = $1")
        .bind(database)
        .fetch_optional(&mut *conn)
        .await
        .context("look up database")?
        .map(|r| r.get::<String, _>(0))
        .is_some();
    if !db_exists {
        let sql = format!("CREATE DATABASE {} OWNER {}", quote_ident(database), quote_ident(owner));
        conn.execute(sql.as_str()).await.context("create database")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_in_order() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert!(parse_lsn("1/0").unwrap() > parse_lsn("0/FFFFFFFF").unwrap());
        assert_eq!(parse_lsn("nope"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pg_wal/archive_status")).unwrap();
        std::fs::create_dir_all(dir.path().join("base/1")).unwrap();
        std::fs::write(dir.path().join("base/1/1259"), vec![0u8; 8192 * 3]).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), b"15\n").unwrap();
        std::fs::write(dir.path().join("pg_wal/000000010000000000000001"), vec![0u8; 4096]).unwrap();
        let u = disk_usage(dir.path()).unwrap();
        assert_eq!((u.data_bytes, u.wal_bytes), (8192 * 3 + 3, 4096));
        assert!(u.fs_total_bytes >= u.fs_free_bytes && u.fs_total_bytes > 0);
        assert_eq!(parse_lsn(" 1A/0\n"), Some(0x1a_0000_0000));
        for bad in ["", "/", "0/", "/0", "+1/0", "0/-1", "123456789/0", "0/123456789", "g/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
        for lsn in [0, 0x16B3748, u64::MAX, 0x1_0000_0000] {
            assert_eq!(parse_lsn(&fmt_lsn(lsn)), Some(lsn));
        }
    }

    #[test]
    fn control_data_is_read() {
        let text = "pg_control version number:            1300\n\
                    Database system identifier:           7442329712345678901\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/14F4F90\n\
                    Latest checkpoint's REDO location:    0/14F4F58\n\
                    Latest checkpoint's TimeLineID:       1\n\
                    Time of latest checkpoint:            Tue Dec  1 21:36:14 2026\n";
        let c = parse_control_data(text).unwrap();
        assert_eq!(
            c,
            ControlData {
                system_identifier: 7442329712345678901,
                shut_down: true,
                timeline: 1,
                redo_lsn: 0x14F4F58,
            }
        );
        assert!(parse_control_data("Database cluster state: shut down\n").is_err());
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
