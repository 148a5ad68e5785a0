//! Test harness: starts the real `highrise up` in its own temporary directory on ports the
//! kernel picks, runs the real CLI and `psql` against it, and stops it by its PID.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod ha;

pub const BIN: &str = env!("CARGO_BIN_EXE_highrise");

pub struct Up {
    pub child: Option<Child>,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub api_url: String,
    /// Where agents and proxies reach the control plane (TLS, the land's CA).
    pub agent_url: String,
    /// The first cloud's proxy.
    pub proxy_addr: String,
    /// Every cloud's proxy, in the land's order (as connection URIs list them).
    pub proxy_addrs: Vec<String>,
    pub land_url: String,
    pub api_key: String,
    _tmp: Option<tempfile::TempDir>,
}

/// A temporary directory the unprivileged PostgreSQL user can traverse.
pub fn temp_root() -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("hr-test-")
        .tempdir()
        .expect("create temp dir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod temp dir");
    tmp
}

impl Up {
    pub fn start() -> Self {
        let tmp = temp_root();
        let root = tmp.path().to_path_buf();
        let mut up = Self::start_in(&root);
        up._tmp = Some(tmp);
        up
    }

    /// Starts `up` on `root/data` (again, when it ran there before).
    pub fn start_in(root: &Path) -> Self {
        Self::start_with(root, &[])
    }

    /// Starts `up` on `root/data` with extra arguments.
    pub fn start_with(root: &Path, extra: &[&str]) -> Self {
        Self::start_command(root, "up", "127.0.0.1:0", extra)
    }

    /// Starts `highrise <command>` (`up` or `control`) on `root/data`.
    pub fn start_command(root: &Path, command: &str, proxy_listen: &str, extra: &[&str]) -> Self {
        let data_dir = root.join("data");
        let mut child = Command::new(BIN)
            .args([
                command,
                "--api-listen",
                "127.0.0.1:0",
                "--proxy-listen",
                proxy_listen,
                "--data-dir",
            ])
            .arg(&data_dir)
            .args(extra)
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env_remove("HIGHRISE_CONFIG")
            .env("HIGHRISE_LOG", "info,highrise=debug,sqlx=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(root.join(format!("up-{}.log", now_ms()))).expect("create log"))
            .spawn()
            .expect("spawn highrise up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut api = None;
            let mut agents = None;
            let mut proxy: Option<Vec<String>> = None;
            let mut land = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(v) = line.trim().strip_prefix("API:") {
                    api = Some(v.trim().to_string());
                }
                if let Some(v) = line.trim().strip_prefix("agents:") {
                    agents = v.split_whitespace().next().map(str::to_string);
                }
                if let Some(v) = line.trim().strip_prefix("land:") {
                    land = v.split_whitespace().next().map(str::to_string);
                }
                if let Some(v) = line.trim().strip_prefix("proxy:") {
                    proxy
                        .get_or_insert_with(Vec::new)
                        .extend(v.split_whitespace().next().map(str::to_string));
                }
                if let Some(v) = line.trim().split("clients are sent to ").nth(1) {
                    proxy = Some(v.trim_end_matches(')').split(',').map(str::to_string).collect());
                }
                if line.starts_with("Try:") {
                    let _ = tx.send((api.clone(), agents.clone(), proxy.clone(), land.clone()));
                }
            }
        });
        let (api, agents, proxy, land) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((Some(a), Some(g), Some(p), Some(l))) if !p.is_empty() => (a, g, p, l),
            other => {
                let _ = child.kill();
                panic!("highrise up did not start ({other:?}); log in {}", root.display());
            }
        };
        let cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("config/highrise/config.json")).expect("read client config"),
        )
        .expect("parse client config");
        Self {
            child: Some(child),
            root: root.to_path_buf(),
            data_dir,
            api_url: api,
            agent_url: agents,
            proxy_addr: proxy[0].clone(),
            proxy_addrs: proxy,
            land_url: land,
            api_key: cfg["api_key"].as_str().expect("api_key").to_string(),
            _tmp: None,
        }
    }

    /// The proxies as a connection URI lists them (`host:port,host:port`).
    pub fn proxies(&self) -> String {
        self.proxy_addrs.join(",")
    }

    /// Runs a client command of the real CLI with this `up`'s client config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env_remove("HIGHRISE_API_URL")
            .env_remove("HIGHRISE_API_KEY")
            .env_remove("HIGHRISE_CONFIG")
            .output()
            .expect("run highrise")
    }

    /// Like [`cli`], asserting success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "highrise {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Creates a cluster with `--wait`; returns its connection URI (the last line).
    pub fn create_cluster(&self, name: &str) -> String {
        let out = self.cli_ok(&["cluster", "create", name, "--wait"]);
        out.lines().last().expect("a URI line").trim().to_string()
    }

    /// Kills `up` with SIGKILL, as a crash would, and reaps it.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops `up` with SIGINT (as Ctrl-C would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        assert!(status.success(), "highrise up exited with {status}");
                        return;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("highrise up did not stop within 60 s");
                    }
                }
            }
        }
    }
}

/// The last lines of every log under `root` (up's and each agent's), for a failing test.
/// With `HIGHRISE_TEST_LOGS=DIR` set, whole logs are also copied under `DIR`.
pub fn dump_logs(root: &Path) {
    let keep = std::env::var_os("HIGHRISE_TEST_LOGS").map(std::path::PathBuf::from);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with("pgdata") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if let (Some(keep), Ok(rel)) = (&keep, p.strip_prefix(root)) {
                    let to = keep.join(root.file_name().unwrap_or_default()).join(rel);
                    if let Some(dir) = to.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = std::fs::write(&to, &text);
                }
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("==== {} (last 40 lines)", p.display());
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(&self.root);
        }
        self.stop_child();
        // Hosts' own disks (`--host-disk`) that a crashed `up` left mounted.
        unmount_under(&self.root);
    }
}

/// Lazily unmounts every file system mounted below `root` (loop mounts detach with it).
pub fn unmount_under(root: &Path) {
    let Ok(root) = root.canonicalize() else { return };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for point in table.lines().filter_map(|l| l.split(' ').nth(4)) {
        if Path::new(point).starts_with(&root) {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
    }
}

impl Up {
    fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Runs `psql` with `sql`; returns (success, stdout, stderr).
/// One URI per host of a multi-host URI (`postgresql://u@h1:p1,h2:p2/db?…`), in order:
/// how libpq tries them, for clients (sqlx) that take one host.
pub fn each_host(uri: &str) -> Vec<String> {
    let Some((scheme_user, rest)) = uri.split_once('@') else {
        return vec![uri.to_string()];
    };
    let (hosts, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    hosts.split(',').map(|h| format!("{scheme_user}@{h}{path}")).collect()
}

/// Connects like libpq to a multi-host URI: the first host that answers.
pub async fn connect_any(uri: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let mut last = None;
    for one in each_host(uri) {
        match sqlx::PgConnection::connect(&one).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(sqlx::Error::PoolClosed))
}

pub fn psql(uri: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", uri, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

pub fn psql_ok(uri: &str, sql: &str) -> String {
    let (ok, out, err) = psql(uri, sql);
    assert!(ok, "psql {sql:?} failed: {err}");
    out
}

/// PIDs of processes whose command line mentions `needle` (e.g. a test's temp dir).
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
            .unwrap_or(false);
        if cmd.contains(needle) && !zombie {
            found.push((pid, cmd));
        }
    }
    found
}

/// Waits for `cond` up to `timeout`, polling.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pids` and every process descended from them (PostgreSQL's backends do not name the
/// data directory in their command line; their postmaster does).
pub fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?.parse::<u32>().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut all: Vec<u32> = pids.to_vec();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !all.contains(pid) {
                all.push(*pid);
            }
        }
        i += 1;
    }
    all
}

/// Stops `roots` and every process descended from them with SIGSTOP, as a host that went
/// silent: listed at the moment of the freeze, and again until no new one appears (a
/// stopped parent forks no more), so a backend or walsender started since the test began
/// is frozen too. Returns every stopped PID, for [`thaw`].
pub fn freeze(roots: &[u32]) -> Vec<u32> {
    let mut frozen: Vec<u32> = Vec::new();
    loop {
        let fresh: Vec<u32> = with_descendants(roots)
            .into_iter()
            .filter(|p| !frozen.contains(p))
            .collect();
        if fresh.is_empty() {
            return frozen;
        }
        for pid in fresh {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGSTOP,
            );
            frozen.push(pid);
        }
    }
}

/// Resumes what [`freeze`] stopped.
pub fn thaw(pids: &[u32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// A child process killed and reaped when dropped, also when the test panics (a stray
/// process would outlive the test run).
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
