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
        tcp_logins: vec![],
        replication_user: None,
        synchronous_standby_names: String::new(),
        primary_conninfo: None,
        recovery,
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

#[tokio::test]
async fn archived_wal_and_a_base_backup_restore_to_an_lsn() {
    let tmp = tempfile::tempdir().unwrap();
    let root = highrise_pg::open_to_postgres(tmp.path()).unwrap();
    let bin = PgBin::find(15).unwrap();
    let run_as = RunAs::detect().unwrap();
    let (src, sock) = (root.join("src"), root.join("s"));
    highrise_pg::own_dir(&sock, run_as, 0o700).unwrap();
    highrise_pg::initdb(&bin, &src, run_as).unwrap();
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
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = archiver::Config {
        socket: sock.join(format!(".s.PGSQL.{port}")),
        user: highrise_pg::ADMIN_USER.into(),
        term: 1,
        min_interval: Duration::ZERO,
    };
    let arch = tokio::spawn(archiver::run(repo.clone(), cfg, status_tx, stop));

    let mut conn = highrise_pg::admin_connect(&sock, port, "postgres").await.unwrap();
    sqlx::query("CREATE TABLE t (id int)").execute(&mut conn).await.unwrap();
    // Base backup through pg_basebackup's tar stream.
    let (timeline, start) = highrise_pg::wal_position(&mut conn).await.unwrap();
    let mut child = highrise_pg::basebackup_stream(&bin, &sock, port, run_as).unwrap();
    let out = child.stdout.take().unwrap();
    let kind = highrise_backup::base::StreamKind::Lz4Tar {
        timeline,
        start_lsn: start,
    };
    let mut m = repo.upload_base("b1", out, 1 << 20, 0, kind).await.unwrap();
    assert!(child.wait().await.unwrap().success());
    m.end_lsn = highrise_pg::wal_position(&mut conn).await.unwrap().1;
    repo.put_manifest(&m).await.unwrap();
    assert!(m.end_lsn > m.start_lsn);

    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    let (target,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut conn)
        .await
        .unwrap();
    let (end,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let end = highrise_backup::parse_lsn(&end).unwrap();
    wait_until(|| {
        let s = status.borrow().clone();
        async move { s.archived.is_some_and(|a| a >= end) }
    })
    .await;
    assert_eq!(status.borrow().error, None);
    repo.verify_base("b1").await.unwrap();

    // Restore to the LSN between the two inserts.
    let dst = root.join("dst");
    repo.restore_base("b1", &dst, false).await.unwrap();
    repo.fetch_wal(m.timeline, m.start_lsn, Some(&dst.join("pg_wal")))
        .await
        .unwrap();
    highrise_pg::chown_tree(&dst, run_as).unwrap();
    let port2 = free_port();
    let rec = Recovery {
        target_time: None,
        target_lsn: Some(target),
    };
    highrise_pg::write_config(&dst, &config(&sock, port2, Some(rec)), run_as).unwrap();
    let log2 = root.join("dst.log");
    let pid2 = highrise_pg::start(&bin, &dst, &log2, run_as).unwrap();
    highrise_pg::wait_ready(&dst, pid2, &log2, Duration::from_secs(60))
        .await
        .unwrap();
    let mut c2 = highrise_pg::admin_connect(&sock, port2, "postgres").await.unwrap();
    let rows: Vec<(i32,)> = sqlx::query_as("SELECT id FROM t ORDER BY id")
        .fetch_all(&mut c2)
        .await
        .unwrap();
    assert_eq!(rows, vec![(1,)]);

    stop_tx.send(true).unwrap();
    arch.await.unwrap();
    drop((conn, c2));
    highrise_pg::stop(pid2, Duration::from_secs(30)).await.unwrap();
    highrise_pg::stop(pid, Duration::from_secs(30)).await.unwrap();
}
