//! The proxy under slow, half-open connections (issue 14): thousands of clients that
//! connect and then send nothing, half a packet header, or an `SSLRequest` and no startup
//! do not keep a valid client from its database (a real PostgreSQL behind the proxy), and
//! they are still held — not dropped to make room — while it is served.

use highrise_api::{Route, RouteTable};
use highrise_pg::scratch::ScratchServer;
use highrise_proxy::ProxyConfig;
use sqlx::Connection;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HALF_OPEN: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_half_open_connections_do_not_delay_a_valid_client() {
    let pg = ScratchServer::start(&[("owner", "postgres")]).await.unwrap();
    let mut admin = pg.admin().await.unwrap();
    highrise_pg::ensure_owner(
        &mut admin,
        "owner",
        &highrise_pg::scram_sha256_verifier("pw"),
        "postgres",
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("routes.json");
    let table = RouteTable {
        version: "1".into(),
        routes: vec![Route {
            endpoint: "ep-test".into(),
            cluster_id: "cl".into(),
            addr: Some(format!("127.0.0.1:{}", pg.port())),
            term: 1,
            notice: None,
            public: true,
            allowed_cidrs: Vec::new(),
            private: None,
            server_name: None,
            login: None,
        }],
        server_ca: None,
    };
    std::fs::write(&cache_file, serde_json::to_vec(&table).unwrap()).unwrap();
    // No control plane: the proxy serves from its cached routes.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let cfg = ProxyConfig {
        control_url,
        control_url_source: None,
        control_ca: None,
        token: "t".into(),
        cache_file,
        tls: None,
        domain: "db.example".into(),
        // Long enough that none of the slow clients is timed out during the test.
        startup_timeout: Duration::from_secs(300),
        meter: None,
        cell: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(highrise_proxy::run(listener, cfg, stop_rx));

    // The slow clients: a third say nothing, a third send half a length (one that claims
    // the largest startup packet), a third ask for TLS and then go quiet.
    let mut slow = Vec::with_capacity(HALF_OPEN);
    for n in 0..HALF_OPEN {
        let mut s = TcpStream::connect(addr).await.unwrap();
        match n % 3 {
            0 => {}
            1 => s.write_all(&[0, 0, 0x27]).await.unwrap(),
            _ => {
                s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
                let mut answer = [0u8; 1];
                s.read_exact(&mut answer).await.unwrap();
                assert_eq!(&answer, b"N", "no TLS configured");
            }
        }
        slow.push(s);
    }

    // A valid client gets its session and its answer while they all wait.
    let url = format!("postgres://owner:pw@{addr}/postgres?options=endpoint%3Dep-test");
    let mut conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url))
        .await
        .expect("the valid client waited behind the slow ones")
        .unwrap();
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();

    // Every slow connection is still open: the proxy served the valid client beside them,
    // it did not shed them.
    for s in &mut slow {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a slow connection was closed or answered: {other:?}"),
        }
    }
}
