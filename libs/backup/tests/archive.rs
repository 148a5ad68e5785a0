//! The archiver and restore against a real PostgreSQL: WAL streamed to a filesystem
//! object store, a base backup, and a restore to an LSN between two commits.

use highrise_backup::{archiver, Key, Location, Repo};
use highrise_pg::{PgBin, Recovery, RunAs, ServerConfig};
use std::path::Path;
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, port: u16, recovery: Option<Recovery>) -> ServerConfig {
    ServerConfig {
        listen_addr: "127.0.0.1".into(),
        port,
        socket_dir: dir.to_path_buf(),
        memory_mb: 256,
        min_connections: None,
        tcp_logins: vec![],
        replication_user: None,
        synchronous_standby_names: String::new(),
        primary_conninfo: None,
        recovery,
        read_only: false,
        disk_bytes: None,
        tls: None,
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in 30 s");
}

/// A running server with an archiver streaming its WAL into a filesystem store.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    bin: PgBin,
    run_as: Option<RunAs>,
    sock: std::path::PathBuf,
    pid: u32,
    conn: sqlx::PgConnection,
    repo: Repo,
    status: tokio::sync::watch::Receiver<archiver::Status>,
    stop: tokio::sync::watch::Sender<bool>,
    arch: tokio::task::JoinHandle<()>,
    /// The never-started initdb the server was copied from.
    template: std::path::PathBuf,
    pgdata: std::path::PathBuf,
}

impl Fixture {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = highrise_pg::open_to_postgres(tmp.path()).unwrap();
        let bin = PgBin::find(15).unwrap();
        let run_as = RunAs::detect().unwrap();
        let (template, src, sock) = (root.join("template"), root.join("src"), root.join("s"));
        highrise_pg::own_dir(&sock, run_as, 0o700).unwrap();
        highrise_pg::initdb(&bin, &template, run_as).unwrap();
        highrise_pg::copy_template(&template, &src).unwrap();
        let port = free_port();
        highrise_pg::write_config(&src, &config(&sock, port, None), run_as).unwrap();
        let log = root.join("src.log");
        let pid = highrise_pg::start(&bin, &src, &log, run_as).unwrap();
        highrise_pg::wait_ready(&src, pid, &log, Duration::from_secs(30))
            .await
            .unwrap();
        let loc = Location {
            url: url::Url::from_directory_path(root.join("store")).unwrap().to_string(),
            options: Default::default(),
            prefix: "org/cluster".into(),
        };
        let repo = Repo::open(&loc, Key::generate().unwrap()).unwrap();
        let (status_tx, status) = tokio::sync::watch::channel(archiver::Status::default());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let cfg = archiver::Config {
            socket: sock.join(format!(".s.PGSQL.{port}")),
            user: highrise_pg::ADMIN_USER.into(),
            term: 1,
            min_interval: Duration::ZERO,
        };
        let arch = tokio::spawn(archiver::run(repo.clone(), cfg, status_tx, stop_rx));
        let conn = highrise_pg::admin_connect(&sock, port, "postgres").await.unwrap();
        Self {
            _tmp: tmp,
            root,
            bin,
            run_as,
            sock,
            pid,
            conn,
            repo,
            status,
            stop,
            arch,
            template,
            pgdata: src,
        }
    }

    async fn exec(&mut self, sql: &str) {
        sqlx::query(sql).execute(&mut self.conn).await.unwrap();
    }

    async fn lsn(&mut self) -> String {
        let (l,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut self.conn)
            .await
            .unwrap();
        l
    }

    async fn wait_archived(&mut self) {
        let end = highrise_backup::parse_lsn(&self.lsn().await).unwrap();
        let status = self.status.clone();
        wait_until(|| {
            let s = status.borrow().clone();
            async move { s.archived.is_some_and(|a| a >= end) }
        })
        .await;
        assert_eq!(self.status.borrow().error, None);
    }

    /// Restores backup `id` and its WAL into a new directory, recovers to `lsn` and
    /// returns the ids in table `t`.
    async fn restore_to(&self, id: &str, lsn: String) -> Vec<i32> {
        let dst = self.root.join(format!("dst-{id}"));
        let owner = self
            .run_as
            .map(|r| highrise_backup::datadir::Owner { uid: r.uid, gid: r.gid });
        let m = self.repo.restore_base(id, &dst, owner).await.unwrap();
        self.repo
            .fetch_wal(m.timeline, m.start_lsn, Some(&dst.join("pg_wal")))
            .await
            .unwrap();
        highrise_pg::chown_tree(&dst, self.run_as).unwrap();
        let port = free_port();
        let rec = Recovery {
            target_time: None,
            target_lsn: Some(lsn),
        };
        highrise_pg::write_config(&dst, &config(&self.sock, port, Some(rec)), self.run_as).unwrap();
        let log = self.root.join(format!("dst-{id}.log"));
        let pid = highrise_pg::start(&self.bin, &dst, &log, self.run_as).unwrap();
        highrise_pg::wait_ready(&dst, pid, &log, Duration::from_secs(60))
            .await
            .unwrap();
        let mut c = highrise_pg::admin_connect(&self.sock, port, "postgres").await.unwrap();
        // Read-only connections come at the consistent point; the rows, once promoted.
        let mut promoted = false;
        for _ in 0..1200 {
            let (rec,): (bool,) = sqlx::query_as("SELECT pg_is_in_recovery()")
                .fetch_one(&mut c)
                .await
                .unwrap();
            if !rec {
                promoted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(promoted, "the restored server was not promoted within 60 s");
        let rows: Vec<(i32,)> = sqlx::query_as("SELECT id FROM t ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
        drop(c);
        highrise_pg::stop(pid, Duration::from_secs(30)).await.unwrap();
        rows.into_iter().map(|(i,)| i).collect()
    }

    async fn finish(self) {
        self.stop.send(true).unwrap();
        self.arch.await.unwrap();
        drop(self.conn);
        highrise_pg::stop(self.pid, Duration::from_secs(30)).await.unwrap();
    }
}

#[tokio::test]
async fn a_files_backup_of_the_running_server_restores_to_an_lsn() {
    let mut f = Fixture::start().await;
    f.exec("CREATE TABLE t (id int)").await;
    f.exec("INSERT INTO t SELECT g FROM generate_series(1000, 200000) g")
        .await;
    // The files read straight from the data directory between pg_backup_start and
    // pg_backup_stop, in small parts, while another session writes.
    let (timeline, start) = highrise_pg::backup_start(&mut f.conn, "test").await.unwrap();
    let mut m = f
        .repo
        .upload_files("b1", &f.pgdata, 256 * 1024, 0, timeline, start)
        .await
        .unwrap();
    let (end, label) = highrise_pg::backup_stop(&mut f.conn).await.unwrap();
    assert!(end > start && label.contains("START WAL LOCATION"), "{label}");
    assert!(m.parts.len() > 10 && m.files.iter().any(|x| x.path == "global/pg_control"));
    assert!(!m
        .files
        .iter()
        .any(|x| x.path.starts_with("pg_wal/") || x.path == "postmaster.pid"));
    m.end_lsn = end;
    m.label = Some(label);
    f.repo.put_manifest(&m).await.unwrap();

    f.exec("DELETE FROM t").await;
    f.exec("INSERT INTO t VALUES (1)").await;
    let target = f.lsn().await;
    f.exec("INSERT INTO t VALUES (2)").await;
    f.wait_archived().await;
    f.repo.verify_base("b1").await.unwrap();
    assert_eq!(f.restore_to("b1", target).await, vec![1]);
    f.finish().await;
}

#[tokio::test]
async fn the_template_plus_all_wal_restores_to_the_first_commit() {
    let mut f = Fixture::start().await;
    // The first commits of the server's life, before any copy of it was taken.
    f.exec("CREATE TABLE t (id int)").await;
    f.exec("INSERT INTO t VALUES (1)").await;
    let target = f.lsn().await;
    f.exec("INSERT INTO t VALUES (2)").await;
    f.wait_archived().await;
    // The creation image: the template the server was copied from, consistent at its own
    // checkpoint, where the archive's WAL starts.
    let c = highrise_pg::control_data(&f.bin, &f.template).unwrap();
    assert!(c.shut_down && c.timeline == 1);
    let ranges = f.repo.wal_ranges().await.unwrap();
    assert!(ranges[&1].0 <= c.redo_lsn, "{ranges:?} vs {:X}", c.redo_lsn);
    let m = f
        .repo
        .upload_files("genesis", &f.template, 1 << 20, 0, 1, c.redo_lsn)
        .await
        .unwrap();
    assert_eq!(m.label, None);
    f.repo.put_manifest(&m).await.unwrap();
    f.repo.verify_base("genesis").await.unwrap();
    assert_eq!(f.restore_to("genesis", target).await, vec![1]);
    f.finish().await;
}
