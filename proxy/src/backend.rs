//! The proxy's side of a session toward PostgreSQL. A route with a `server_name` is
//! reached over TLS (`SSLRequest`, then a handshake) and the server verified against the
//! land's CA with the cluster's name — what `sslmode=verify-full` does for a client — so
//! the proxy never sends a session to a server that is not that cluster's, and nobody on
//! the network between reads it. A route without one (a land without a CA) is plain TCP.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// `SSLRequest`: length 8, code 80877103 (1234 << 16 | 5679).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// The server could not be reached or hung up: another primary may be tried.
    #[error("{0}")]
    Unreachable(#[from] std::io::Error),
    /// The server is not the one the route names (or will not speak TLS): the session is
    /// refused rather than sent there.
    #[error("{0}")]
    Untrusted(String),
}

/// A connection to a server, in the clear or over TLS.
pub(crate) enum Backend {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A TLS client trusting exactly the CA in `pem`.
pub(crate) fn connector(pem: &str) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("read the servers' CA: {e}"))?;
        roots.add(cert).map_err(|e| format!("add the servers' CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the servers' CA holds no certificate".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("choose TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Connects to the server at `addr`; with `tls` (a connector and the name its
/// certificate must carry) negotiates TLS and verifies it.
pub(crate) async fn connect(addr: &str, tls: Option<(&TlsConnector, &str)>) -> Result<Backend, BackendError> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Some((connector, name)) = tls else {
        return Ok(Backend::Plain(tcp));
    };
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| BackendError::Untrusted(format!("{name:?} is not a server name: {e}")))?;
    tcp.write_all(&SSL_REQUEST).await?;
    match tcp.read_u8().await? {
        b'S' => {}
        b'N' => {
            return Err(BackendError::Untrusted(format!(
                "the server at {addr} does not offer TLS"
            )))
        }
        other => {
            return Err(BackendError::Untrusted(format!(
                "the server at {addr} answered the TLS request with {other:#04x}"
            )))
        }
    }
    match connector.connect(server_name, tcp).await {
        Ok(s) => Ok(Backend::Tls(Box::new(s))),
        // A failed verification is an `InvalidData` error carrying rustls's reason.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(BackendError::Untrusted(format!(
            "the server at {addr} is not {name}: {e}"
        ))),
        Err(e) => Err(BackendError::Unreachable(e)),
    }
}

impl AsyncRead for Backend {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Backend {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_flush(cx),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Backend::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Backend::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Backend::Plain(s) => s.is_write_vectored(),
            Backend::Tls(s) => s.is_write_vectored(),
        }
    }
}
