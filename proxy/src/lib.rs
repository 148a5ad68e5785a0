//! The proxy: one listening port for every tenant's cluster.
//!
//! It speaks just enough of the PostgreSQL protocol to route: answers `SSLRequest`
//! (terminating TLS when it has a certificate, reading the SNI host name) and
//! `GSSENCRequest`, reads the startup packet, finds the endpoint — `options=endpoint=<id>`
//! or the first label of the SNI name `<id>.<domain>` — strips the routing option, connects
//! to the cluster's current primary, forwards the startup packet and then splices bytes
//! both ways. Authentication stays end to end between the client and PostgreSQL.
//!
//! Besides its public listener, it opens one inside each tenant network that holds a
//! private endpoint ([`listeners`]); which listener a connection came in on decides what
//! it may reach ([`access`]).
//!
//! Routes come from the control plane by long-poll and are cached in memory and on disk,
//! so the proxy keeps serving known clusters while the control plane is down. Anything it
//! cannot serve gets a PostgreSQL `ErrorResponse` with a clear message, never a hang.

mod access;
mod auth;
mod backend;
pub mod fuzzing;
mod listeners;
mod meters;
mod protocol;
mod routes;
mod scram;
mod splice;

pub use meters::MeterConfig;
pub use protocol::{Startup, StartupError};
pub use routes::RouteCache;

use access::Via;
use anyhow::{Context, Result};
use backend::{Backend, BackendError};
use protocol::{
    cancel_request, error_response, notice_response, read_packet, scan_server_messages, Packet, ServerEvent,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub control_url: String,
    /// A URL whose body names the control plane's current URL (the land's metadata), read
    /// whenever the control plane does not answer: a control plane that moved to a new
    /// address is found again without restarting the proxy.
    pub control_url_source: Option<String>,
    /// The CA certificate (PEM) the control plane's TLS certificate must chain to.
    pub control_ca: Option<String>,
    pub token: String,
    /// Where the last known routing table is kept across restarts.
    pub cache_file: PathBuf,
    /// PEM certificate chain and key; without them TLS is refused (`N`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Endpoints are `<id>.<domain>` under TLS.
    pub domain: String,
    /// How long a client may take to negotiate encryption and send its startup packet
    /// ([`STARTUP_TIMEOUT`] by default) before it is told so and closed.
    pub startup_timeout: Duration,
    /// Count the bytes relayed per endpoint and report them for billing ([`meters`]);
    /// `None`: nothing is counted.
    pub meter: Option<MeterConfig>,
    /// The cell whose orgs the proxy serves (it is given their routes only); `None`:
    /// every cell's.
    pub cell: Option<String>,
}

/// How long a new connection is held while its cluster has no reachable primary.
const HOLD: Duration = Duration::from_secs(30);

/// How long a client may take to send its startup packet, by default.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The listen queue of a proxy's socket. A burst of connections (an application's pool
/// starting, clients reconnecting after a failover) that overflows it has its SYNs
/// dropped, and each dropped client waits a whole second to retry; the kernel clamps it
/// to `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listening socket for clients on `addr`, with [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A client address kept while its proxy does not serve: bound, never listening, so a
/// client is refused there (and moves on to the next proxy its connection string names)
/// rather than reaching whatever else took the port meanwhile.
pub struct PortHold(#[allow(dead_code)] socket2::Socket);

/// Holds `addr` (see [`PortHold`]); dropping the hold frees it for [`listen`].
pub fn hold(addr: std::net::SocketAddr) -> std::io::Result<PortHold> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    // Past the proxy's connections still in TIME_WAIT; the kernel gives a port with any
    // socket bound to it to no `bind(0)` nor outgoing connection.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(PortHold(socket))
}

/// Serves `listener` until `shutdown` turns true.
pub async fn run(listener: TcpListener, cfg: ProxyConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let (acceptor, cert_hash) = match &cfg.tls {
        Some((cert, key)) => (Some(tls_acceptor(cert, key)?), Some(auth::cert_end_point_hash(cert)?)),
        None => (None, None),
    };
    let routes = RouteCache::load(&cfg.cache_file);
    let control = routes::ControlUrl::new(&cfg.control_url);
    let on_miss = routes::OnMiss::new(cfg.clone(), control.clone());
    // The current table first, when the control plane answers (within 2 s): the cache may
    // be from before an outage and name a primary that was replaced meanwhile — and that
    // may itself come back with its cloud, still a primary until its agent hears of it.
    // Clients that connect in between wait in the listen queue.
    if let Some(m) = &on_miss {
        m.refresh(&routes).await;
    }
    let refresher = tokio::spawn(routes::refresh(
        routes.clone(),
        cfg.clone(),
        control.clone(),
        shutdown.clone(),
    ));
    let traffic = Arc::new(match &cfg.meter {
        Some(m) => meters::Traffic::open(&m.file),
        None => meters::Traffic::off(),
    });
    let reporter = cfg.meter.clone().map(|m| {
        tokio::spawn(meters::report(
            Arc::clone(&traffic),
            m,
            cfg.clone(),
            control,
            routes.clone(),
            shutdown.clone(),
        ))
    });
    let ctx = Arc::new(Ctx {
        traffic,
        cancels: Mutex::new(HashMap::new()),
        on_miss,
        routes,
        acceptor,
        cert_hash,
        domain: cfg.domain.clone(),
        startup_timeout: cfg.startup_timeout,
    });
    let private = tokio::spawn(listeners::keep(Arc::clone(&ctx), shutdown.clone()));
    tokio::select! {
        _ = shutdown.changed() => {}
        () = accept(listener, Arc::new(Via::Public), Arc::clone(&ctx)) => {}
    }
    // The keeper closes the private listeners it opened once it sees the shutdown.
    let _ = private.await;
    // The reporter writes the counters to its file a last time once it sees the shutdown.
    if let Some(r) = reporter {
        let _ = r.await;
    }
    refresher.abort();
    Ok(())
}

/// Accepts connections on `listener` for ever, each served on a task of its own.
async fn accept(listener: TcpListener, via: Arc<Via>, ctx: Arc<Ctx>) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        let via = Arc::clone(&via);
        tokio::spawn(async move {
            if let Err(e) = serve(sock, peer.ip(), &via, &ctx).await {
                tracing::debug!(%peer, "connection ended: {e:#}");
            }
        });
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("read {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("load TLS certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Live sessions by the key a `CancelRequest` carries: where to send it.
type CancelMap = Mutex<HashMap<(u32, u32), String>>;

struct Ctx {
    cancels: CancelMap,
    traffic: Arc<meters::Traffic>,
    routes: RouteCache,
    on_miss: Option<routes::OnMiss>,
    acceptor: Option<TlsAcceptor>,
    /// `tls-server-end-point` data of the proxy's certificate (SCRAM channel binding).
    cert_hash: Option<Vec<u8>>,
    domain: String,
    startup_timeout: Duration,
}

/// Serves one client connection. Until the startup packet is read, its task holds little
/// more than the socket: the session's larger state (routing, the relay) is boxed and
/// allocated only for a client that gets that far, so thousands of half-open connections
/// cost little memory each (`bench/run halfopen`).
async fn serve(mut sock: TcpStream, peer: std::net::IpAddr, via: &Via, ctx: &Ctx) -> Result<()> {
    sock.set_nodelay(true).context("set TCP_NODELAY")?;
    // Negotiate encryption, then read the startup packet, all within the timeout.
    let deadline = tokio::time::Instant::now() + ctx.startup_timeout;
    loop {
        let packet = match tokio::time::timeout_at(deadline, read_packet(&mut sock)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return reject(&mut sock, &e).await,
            Err(_) => return reject(&mut sock, &StartupError::Timeout).await,
        };
        match packet {
            Packet::SslRequest => match &ctx.acceptor {
                Some(acceptor) => {
                    sock.write_all(b"S").await.context("answer SSLRequest")?;
                    let mut tls = tokio::time::timeout_at(deadline, acceptor.accept(sock))
                        .await
                        .context("TLS handshake timed out")?
                        .context("TLS handshake")?;
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    let packet = match tokio::time::timeout_at(deadline, read_packet(&mut tls)).await {
                        Ok(Ok(p)) => p,
                        Ok(Err(e)) => return reject(&mut tls, &e).await,
                        Err(_) => return reject(&mut tls, &StartupError::Timeout).await,
                    };
                    return Box::pin(route(tls, packet, sni, peer, via, ctx)).await;
                }
                None => sock.write_all(b"N").await.context("answer SSLRequest")?,
            },
            Packet::GssEncRequest => sock.write_all(b"N").await.context("answer GSSENCRequest")?,
            other => return Box::pin(route(sock, other, None, peer, via, ctx)).await,
        }
    }
}

async fn reject<S: AsyncWrite + Unpin>(client: &mut S, e: &StartupError) -> Result<()> {
    let _ = client.write_all(&error_response(e.sqlstate(), &e.to_string())).await;
    let _ = client.shutdown().await;
    Err(anyhow::anyhow!("rejected: {e}"))
}

async fn route<S: AsyncRead + AsyncWrite + Unpin + IntoTcp>(
    mut client: S,
    packet: Packet,
    sni: Option<String>,
    peer: std::net::IpAddr,
    via: &Via,
    ctx: &Ctx,
) -> Result<()> {
    let mut startup = match packet {
        Packet::Startup(s) => s,
        Packet::CancelRequest { pid, secret } => return forward_cancel(ctx, pid, secret).await,
        Packet::SslRequest | Packet::GssEncRequest => {
            return reject(
                &mut client,
                &StartupError::Malformed("encryption requested twice".into()),
            )
            .await
        }
    };
    let endpoint = match (startup.take_endpoint(sni.as_deref(), &ctx.domain), via) {
        (Ok(e), _) => e,
        // A private listener serves one endpoint: naming it is optional there.
        (Err(StartupError::NoEndpoint(_)), Via::Private(l)) => match ctx.routes.private_endpoint(l) {
            Some(e) => e,
            None => return reject(&mut client, &StartupError::UnknownEndpoint(l.listen.clone())).await,
        },
        (Err(e), _) => return reject(&mut client, &e).await,
    };
    let mut route = ctx.routes.get(&endpoint);
    if route.is_none() {
        if let Some(on_miss) = &ctx.on_miss {
            on_miss.refresh(&ctx.routes).await;
            route = ctx.routes.get(&endpoint);
        }
    }
    let Some(route) = route else {
        return reject(&mut client, &StartupError::UnknownEndpoint(endpoint)).await;
    };
    if let Err(e) = access::admit(&route, peer, via) {
        return reject(&mut client, &e).await;
    }
    // The cluster's servers speak TLS with its certificate: verified with the table's CA.
    let connector = match &route.server_name {
        Some(_) => match ctx.routes.server_tls() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(%endpoint, "{e}");
                return reject(&mut client, &StartupError::Untrusted(endpoint)).await;
            }
        },
        None => None,
    };
    let tls = connector.as_ref().zip(route.server_name.as_deref());
    // With the owner's verifier the proxy authenticates the client before any server
    // hears of it (a wrong password costs the database nothing).
    let login = match &route.login {
        Some(l) => match Box::pin(authenticate(&mut client, &startup, l, &endpoint, ctx)).await {
            Ok(v) => Some(v),
            Err(e) => return reject(&mut client, &e).await,
        },
        None => None,
    };
    // During a switch the route has no primary, or the old one refuses connections:
    // hold the client (up to HOLD) and release it to the new primary.
    let deadline = tokio::time::Instant::now() + HOLD;
    let mut refused: Option<String> = None;
    let (mut backend, addr) = loop {
        let Some(addr) = ctx
            .routes
            .wait_for_primary(&endpoint, refused.as_deref(), deadline)
            .await
        else {
            return reject(&mut client, &StartupError::Unavailable(endpoint)).await;
        };
        match tokio::time::timeout(Duration::from_secs(2), backend::connect(&addr, tls)).await {
            Ok(Ok(b)) => break (b, addr),
            Ok(Err(BackendError::Untrusted(e))) => {
                tracing::warn!(%endpoint, "{e}");
                return reject(&mut client, &StartupError::Untrusted(endpoint)).await;
            }
            Ok(Err(e)) => tracing::debug!(%endpoint, %addr, "connect to primary: {e}"),
            Err(_) => tracing::debug!(%endpoint, %addr, "connect to primary: timed out"),
        }
        if tokio::time::Instant::now() >= deadline {
            return reject(&mut client, &StartupError::Unavailable(endpoint)).await;
        }
        refused = Some(addr);
    };
    let tally = ctx.traffic.tally(&endpoint, meters::now_ms());
    let packet = startup.encode();
    backend.write_all(&packet).await.context("forward startup packet")?;
    tally.add_in(packet.len());
    if let Some((verifier, verified)) = &login {
        match tokio::time::timeout(HOLD, auth::login(&mut backend, verifier, &verified.client_key)).await {
            Ok(Ok(())) => client
                .write_all(&auth::client_accepted(verified))
                .await
                .context("write to client")?,
            Ok(Err(auth::LoginError::Refused(error))) => {
                client.write_all(&error).await.context("write to client")?;
                return Ok(());
            }
            Ok(Err(auth::LoginError::Other(e))) => {
                tracing::warn!(%endpoint, %addr, "log in to the server: {e:#}");
                return reject(&mut client, &StartupError::ServerLogin(endpoint)).await;
            }
            Err(_) => return reject(&mut client, &StartupError::Unavailable(endpoint)).await,
        }
    }
    // A session belongs to the primary it was opened on: once the endpoint's primary is
    // elsewhere, it ends (both sockets closed), so its client reconnects to the new one
    // instead of waiting on an old primary that may be frozen and never answer.
    let moved = ctx.routes.moved_from(&endpoint, &addr);
    tokio::pin!(moved);
    let notice = ctx.routes.get(&endpoint).and_then(|r| r.notice);
    let started = tokio::select! {
        r = relay_startup(&mut client, &mut backend, notice.as_deref(), &tally) => r?,
        () = &mut moved => {
            tracing::debug!(%endpoint, %addr, "primary moved during the session's startup: closing it");
            return Ok(());
        }
    };
    let key = match started {
        Session::Ready(key) => key,
        Session::Ended => return Ok(()),
    };
    if let Some(k) = key {
        ctx.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, addr.clone());
    }
    let res = tokio::select! {
        r = relay(client, backend, &tally) => r,
        () = moved => {
            tracing::debug!(%endpoint, %addr, "primary moved: closing the session");
            Ok(())
        }
    };
    if let Some(k) = key {
        ctx.cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
    }
    res
}

/// Authenticates the client as the route's owner (SCRAM with the cluster's verifier, bound
/// to the proxy's certificate over TLS); the verifier and what the client proved.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin + IntoTcp>(
    client: &mut S,
    startup: &Startup,
    login: &highrise_api::RouteLogin,
    endpoint: &str,
    ctx: &Ctx,
) -> Result<(scram::Verifier, scram::Verified), StartupError> {
    let user = startup.get("user").unwrap_or_default();
    if user != login.user {
        return Err(StartupError::NotOwner {
            user: user.to_string(),
            endpoint: endpoint.to_string(),
        });
    }
    let Some(verifier) = scram::Verifier::parse(&login.scram) else {
        tracing::error!(%endpoint, "the route's verifier is not a SCRAM-SHA-256 secret");
        return Err(StartupError::ServerLogin(endpoint.to_string()));
    };
    let hash = if client.encrypted() {
        ctx.cert_hash.as_deref()
    } else {
        None
    };
    match tokio::time::timeout(ctx.startup_timeout, auth::authenticate_client(client, &verifier, hash)).await {
        Ok(Ok(verified)) => Ok((verifier, verified)),
        Ok(Err(auth::ClientAuthError::Scram(scram::ScramError::Proof))) => {
            Err(StartupError::BadPassword(user.to_string()))
        }
        Ok(Err(auth::ClientAuthError::Scram(e))) => Err(StartupError::AuthRefused(e.to_string())),
        Ok(Err(e)) => Err(StartupError::Malformed(e.to_string())),
        Err(_) => Err(StartupError::Timeout),
    }
}

enum Session {
    /// The session is ready; the cancel key, if the server sent one.
    Ready(Option<(u32, u32)>),
    /// The server refused the session (its error went to the client) or a side hung up.
    Ended,
}

/// Relays the authentication exchange both ways, watching the server's messages for
/// `BackendKeyData` until `ReadyForQuery`. Reads are single `read` calls on either side,
/// so whichever side is not ready loses nothing. A `notice` (the route's) goes to the
/// client as a warning just before the session is ready. What passes is added to `tally`.
async fn relay_startup<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    backend: &mut Backend,
    notice: Option<&str>,
    tally: &meters::Tally,
) -> Result<Session> {
    let mut from_client = vec![0u8; 8192];
    let mut from_server: Vec<u8> = Vec::with_capacity(8192);
    let mut key = None;
    loop {
        tokio::select! {
            n = client.read(&mut from_client) => {
                let n = n.context("read from client")?;
                if n == 0 {
                    return Ok(Session::Ended);
                }
                backend.write_all(&from_client[..n]).await.context("write to server")?;
                tally.add_in(n);
            }
            n = backend.read_buf(&mut from_server) => {
                if n.context("read from server")? == 0 {
                    return Ok(Session::Ended);
                }
                let (used, events) = scan_server_messages(&from_server).map_err(|e| anyhow::anyhow!("{e}"))?;
                // `ReadyForQuery` (6 bytes) ends the scanned span when it came.
                let ready = events.contains(&ServerEvent::Ready) && used >= 6;
                match notice {
                    Some(n) if ready => {
                        let mut out = Vec::with_capacity(used + n.len() + 32);
                        out.extend_from_slice(&from_server[..used - 6]);
                        out.extend_from_slice(&notice_response(n));
                        out.extend_from_slice(&from_server[used - 6..used]);
                        client.write_all(&out).await.context("write to client")?;
                        tally.add_out(out.len());
                    }
                    _ => {
                        client.write_all(&from_server[..used]).await.context("write to client")?;
                        tally.add_out(used);
                    }
                }
                from_server.drain(..used);
                for ev in events {
                    match ev {
                        ServerEvent::KeyData { pid, secret } => key = Some((pid, secret)),
                        ServerEvent::Error => {
                            client.write_all(&from_server).await.context("write to client")?;
                            tally.add_out(from_server.len());
                            return Ok(Session::Ended);
                        }
                        ServerEvent::Ready => {
                            client.write_all(&from_server).await.context("write to client")?;
                            tally.add_out(from_server.len());
                            return Ok(Session::Ready(key));
                        }
                    }
                }
            }
        }
    }
}

/// Sends a client's `CancelRequest` to the server of the session it names. Unknown keys
/// are dropped silently, as PostgreSQL does.
async fn forward_cancel(ctx: &Ctx, pid: u32, secret: u32) -> Result<()> {
    let addr = ctx
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(pid, secret))
        .cloned();
    let Some(addr) = addr else {
        return Ok(());
    };
    let mut backend = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
        .await
        .context("connect to server for cancel: timed out")?
        .context("connect to server for cancel")?;
    backend
        .write_all(&cancel_request(pid, secret))
        .await
        .context("forward cancel request")?;
    Ok(())
}

/// Relays the session both ways until it ends, adding what passes to `tally`.
async fn relay<S: AsyncRead + AsyncWrite + Unpin + IntoTcp>(
    client: S,
    backend: Backend,
    tally: &meters::Tally,
) -> Result<()> {
    // Plain TCP on both sides takes the leaner relay; TLS on either goes through the
    // generic copy.
    match backend {
        Backend::Plain(mut server) => match client.into_tcp() {
            Ok(tcp) => splice::relay(tcp, server, tally).await.context("relay")?,
            Err(client) => {
                tokio::io::copy_bidirectional(&mut meters::Counted::new(client, tally), &mut server)
                    .await
                    .context("relay")?;
            }
        },
        mut backend => {
            tokio::io::copy_bidirectional(&mut meters::Counted::new(client, tally), &mut backend)
                .await
                .context("relay")?;
        }
    }
    Ok(())
}

/// A client connection: plain TCP can be relayed with the lean path.
trait IntoTcp: Sized {
    fn into_tcp(self) -> Result<TcpStream, Self>;
    /// Whether the client came over TLS (to the proxy).
    fn encrypted(&self) -> bool;
}

impl IntoTcp for TcpStream {
    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
    }

    fn encrypted(&self) -> bool {
        false
    }
}

impl IntoTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_tcp(self) -> Result<TcpStream, Self> {
        Err(self)
    }

    fn encrypted(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::net::TcpStream;

    #[test]
    fn a_held_address_refuses_clients_until_listened_on_again() {
        let l = super::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(false).unwrap();
        // A connection the proxy closed first: its side waits in TIME_WAIT on the address.
        let client = TcpStream::connect(addr).unwrap();
        let (served, _) = l.accept().unwrap();
        drop(served);
        drop(l);
        drop(client);
        let hold = super::hold(addr).unwrap();
        assert_eq!(
            TcpStream::connect(addr).unwrap_err().kind(),
            ErrorKind::ConnectionRefused
        );
        drop(hold);
        let again = super::listen(addr).unwrap();
        TcpStream::connect(addr).unwrap();
        drop(again);
    }
}
