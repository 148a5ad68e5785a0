//! The control plane's TLS listener: what agents and proxies reach it on. It serves the
//! same router as the API, over TLS with a certificate from the land's CA, which every
//! launch hands the host's agent as the one root it trusts — so an agent's bootstrap
//! token, host token and desired state (data keys included) never cross the network in
//! the clear, and nothing but the control plane can answer an agent.
//!
//! Handshakes run in tasks of their own (a slow or silent client holds up no other), at
//! most [`HANDSHAKE_TIMEOUT`] each; `axum::serve` takes finished TLS streams.

use crate::ca::Issued;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsListenerError {
    #[error("read the listener's certificate: {0}")]
    Certificate(rustls::pki_types::pem::Error),
    #[error("load the listener's certificate and key: {0}")]
    Config(rustls::Error),
    #[error("read the listener's address: {0}")]
    Address(std::io::Error),
}

/// A TCP listener whose connections come out TLS-terminated; an `axum::serve` listener.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS on `tcp` with `cert` (a certificate chain and its key, PEM).
    pub fn new(tcp: TcpListener, cert: &Issued) -> Result<Self, TlsListenerError> {
        let acceptor = acceptor(cert)?;
        let local = tcp.local_addr().map_err(TlsListenerError::Address)?;
        let (tx, accepted) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(Self {
            accepted,
            local,
            accepting,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

fn acceptor(cert: &Issued) -> Result<TlsAcceptor, TlsListenerError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(TlsListenerError::Certificate)?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(TlsListenerError::Certificate)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsListenerError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsListenerError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>) {
    loop {
        let (sock, peer) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: the connection waiting is not
                    // taken, so give the machine a moment rather than spin.
                    tracing::warn!("accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tx.closed() => return,
        };
        let _ = sock.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accepting task ended (only when this listener is dropped): nothing comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
