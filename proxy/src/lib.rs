//! The proxy: one listening port for every tenant's cluster.
//!
//! It speaks just enough of the PostgreSQL protocol to route: answers `SSLRequest`
//! (terminating TLS when it has a certificate, reading the SNI host name) and
//! `GSSENCRequest`, reads the startup packet, finds the endpoint — `options=endpoint=<id>`
//! or the first label of the SNI name `<id>.<domain>` — strips the routing option, connects
//! to the cluster's current primary, forwards the startup packet and then splices bytes
//! both ways. Authentication stays end to end between the client and PostgreSQL.
//!
//! Routes come from the control plane by long-poll and are cached in memory and on disk,
//! so the proxy keeps serving known clusters while the control plane is down. Anything it
//! cannot serve gets a PostgreSQL `ErrorResponse` with a clear message, never a hang.

mod protocol;
mod routes;
mod splice;

pub use protocol::{Startup, StartupError};
pub use routes::RouteCache;

use anyhow::{Context, Result};
use highrise_api::Route;
use protocol::{error_response, read_packet, Packet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub control_url: String,
    pub token: String,
    /// Where the last known routing table is kept across restarts.
    pub cache_file: PathBuf,
    /// PEM certificate chain and key; without them TLS is refused (`N`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Endpoints are `<id>.<domain>` under TLS.
    pub domain: String,
}

/// How long a client may take to send its startup packet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` turns true.
pub async fn run(listener: TcpListener, cfg: ProxyConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let acceptor = match &cfg.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let routes = RouteCache::load(&cfg.cache_file);
    let refresher = tokio::spawn(routes::refresh(routes.clone(), cfg.clone(), shutdown.clone()));
    let ctx = Arc::new(Ctx {
        on_miss: routes::OnMiss::new(cfg.clone()),
        routes,
        acceptor,
        domain: cfg.domain.clone(),
    });
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (sock, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    if let Err(e) = serve(sock, &ctx).await {
                        tracing::debug!(%peer, "connection ended: {e:#}");
                    }
                });
            }
        }
    }
    refresher.abort();
    Ok(())
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

struct Ctx {
    routes: RouteCache,
    on_miss: Option<routes::OnMiss>,
    acceptor: Option<TlsAcceptor>,
    domain: String,
}

async fn serve(mut sock: TcpStream, ctx: &Ctx) -> Result<()> {
    sock.set_nodelay(true).context("set TCP_NODELAY")?;
    // Negotiate encryption, then read the startup packet, all within the timeout.
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
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
                    return route(tls, packet, sni, ctx).await;
                }
                None => sock.write_all(b"N").await.context("answer SSLRequest")?,
            },
            Packet::GssEncRequest => sock.write_all(b"N").await.context("answer GSSENCRequest")?,
            other => return route(sock, other, None, ctx).await,
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
    ctx: &Ctx,
) -> Result<()> {
    let mut startup = match packet {
        Packet::Startup(s) => s,
        Packet::CancelRequest => return Ok(()), // Cancellation is not routed yet.
        Packet::SslRequest | Packet::GssEncRequest => {
            return reject(
                &mut client,
                &StartupError::Malformed("encryption requested twice".into()),
            )
            .await
        }
    };
    let endpoint = match startup.take_endpoint(sni.as_deref(), &ctx.domain) {
        Ok(e) => e,
        Err(e) => return reject(&mut client, &e).await,
    };
    let mut route = ctx.routes.get(&endpoint);
    if route.is_none() {
        if let Some(on_miss) = &ctx.on_miss {
            on_miss.refresh(&ctx.routes).await;
            route = ctx.routes.get(&endpoint);
        }
    }
    let Some(Route { addr, .. }) = route else {
        return reject(&mut client, &StartupError::UnknownEndpoint(endpoint)).await;
    };
    let mut backend = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(%endpoint, %addr, "connect to primary: {e}");
            return reject(&mut client, &StartupError::Unavailable(endpoint)).await;
        }
        Err(_) => return reject(&mut client, &StartupError::Unavailable(endpoint)).await,
    };
    backend.set_nodelay(true).context("set TCP_NODELAY")?;
    backend
        .write_all(&startup.encode())
        .await
        .context("forward startup packet")?;
    // Plain TCP on both sides takes the leaner relay; TLS goes through the generic copy.
    match client.into_tcp() {
        Ok(tcp) => splice::relay(tcp, backend).await.context("relay")?,
        Err(mut client) => {
            tokio::io::copy_bidirectional(&mut client, &mut backend)
                .await
                .context("relay")?;
        }
    }
    Ok(())
}

/// A client connection: plain TCP can be relayed with the lean path.
trait IntoTcp: Sized {
    fn into_tcp(self) -> Result<TcpStream, Self>;
}

impl IntoTcp for TcpStream {
    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
    }
}

impl IntoTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_tcp(self) -> Result<TcpStream, Self> {
        Err(self)
    }
}
