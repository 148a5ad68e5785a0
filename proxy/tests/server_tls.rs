//! The proxy verifies the server (issue 14): a route with a server name is reached over
//! TLS and the server's certificate checked against the routing table's CA and that name,
//! as `sslmode=verify-full` does. A real PostgreSQL serving TLS only with a certificate
//! for cluster A: a route naming A opens sessions there (encrypted, as `pg_stat_ssl`
//! shows); a route naming cluster B at the same address, or one trusting another CA, is
//! refused with a clear error and nothing is sent to the server. The proxy authenticates
//! the client itself (SCRAM with the route's verifier) and logs in to the server with the
//! key the client proved.

use highrise_api::{Route, RouteLogin, RouteTable};
use highrise_pg::scratch::ScratchServer;
use highrise_proxy::ProxyConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sqlx::{Connection, Row};
use std::time::Duration;
use tokio::net::TcpListener;

/// A CA: its certificate (PEM), and what signs with it.
struct Ca {
    pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        cert,
        key,
    }
}

/// A server certificate and key (PEM) for `name`, signed by `ca`.
fn leaf(ca: &Ca, name: &str) -> (String, String) {
    let params = CertificateParams::new(vec![name.to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn route(endpoint: &str, port: u16, server_name: &str, scram: &str) -> Route {
    Route {
        endpoint: endpoint.into(),
        cluster_id: endpoint.into(),
        addr: Some(format!("127.0.0.1:{port}")),
        term: 1,
        notice: None,
        public: true,
        allowed_cidrs: Vec::new(),
        private: None,
        server_name: Some(server_name.into()),
        login: Some(RouteLogin {
            user: "owner".into(),
            scram: scram.into(),
        }),
    }
}

/// Starts a proxy that serves `table` alone (no control plane); its address, and what
/// keeps it running (dropped: it stops).
async fn proxy(dir: &std::path::Path, table: &RouteTable) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let cache_file = dir.join(format!("routes-{}.json", table.version));
    std::fs::write(&cache_file, serde_json::to_vec(table).unwrap()).unwrap();
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
        startup_timeout: highrise_proxy::STARTUP_TIMEOUT,
        meter: None,
        cell: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(highrise_proxy::run(listener, cfg, stop_rx));
    (addr, stop)
}

async fn session(proxy: std::net::SocketAddr, endpoint: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    session_as(proxy, endpoint, "owner", "pw").await
}

async fn session_as(
    proxy: std::net::SocketAddr,
    endpoint: &str,
    user: &str,
    password: &str,
) -> Result<sqlx::PgConnection, sqlx::Error> {
    let url = format!("postgres://{user}:{password}@{proxy}/postgres?sslmode=disable&options=endpoint%3D{endpoint}");
    tokio::time::timeout(Duration::from_secs(20), sqlx::PgConnection::connect(&url))
        .await
        .expect("the proxy answers within the timeout")
}

#[tokio::test]
async fn the_proxy_opens_sessions_only_on_a_server_with_the_clusters_certificate() {
    let land = ca("Highrise CA");
    let (cert, key) = leaf(&land, "cl-a.db.example");
    let pg = ScratchServer::start_tls(&[("owner", "postgres")], (&cert, &key, &land.pem))
        .await
        .unwrap();
    let mut admin = pg.admin().await.unwrap();
    let scram = highrise_pg::scram_sha256_verifier("pw");
    highrise_pg::ensure_owner(&mut admin, "owner", &scram, "postgres")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let table = RouteTable {
        version: "land".into(),
        routes: vec![
            route("ep-a", pg.port(), "cl-a.db.example", &scram),
            // Another cluster's route pointing at A's server (a stale address, say).
            route("ep-b", pg.port(), "cl-b.db.example", &scram),
        ],
        server_ca: Some(land.pem.clone()),
    };
    let (addr, _running) = proxy(dir.path(), &table).await;

    // The cluster's own route: the session is opened, and it is encrypted to the server.
    let mut conn = session(addr, "ep-a").await.expect("a session on A's server");
    let row = sqlx::query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(row.get::<bool, _>("ssl"), "the proxy's connection to the server is TLS");
    assert!(row.get::<String, _>("version").starts_with("TLSv1."));

    // The proxy authenticated the client and logged in as it: a wrong password is
    // refused by the proxy, another role is not let through at all.
    let err = session_as(addr, "ep-a", "owner", "nope").await.unwrap_err().to_string();
    assert!(
        err.contains("password authentication failed for user \"owner\""),
        "{err}"
    );
    let err = session_as(addr, "ep-a", "postgres", "pw")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot log in"), "{err}");

    // Another cluster's name at that address: refused, by name.
    let err = session(addr, "ep-b").await.unwrap_err().to_string();
    assert!(err.contains("could not be verified"), "{err}");

    // The right name, but the table trusts another CA: refused as well.
    let other = ca("Highrise CA");
    let table = RouteTable {
        version: "other".into(),
        routes: vec![route("ep-a", pg.port(), "cl-a.db.example", &scram)],
        server_ca: Some(other.pem.clone()),
    };
    let (addr, _running) = proxy(dir.path(), &table).await;
    let err = session(addr, "ep-a").await.unwrap_err().to_string();
    assert!(err.contains("could not be verified"), "{err}");

    // The server takes no TCP login in the clear at all.
    let plain = format!("postgres://owner:pw@127.0.0.1:{}/postgres?sslmode=disable", pg.port());
    let err = sqlx::PgConnection::connect(&plain).await.unwrap_err().to_string();
    assert!(err.contains("no encryption"), "{err}");
}
