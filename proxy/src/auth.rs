//! The SCRAM exchanges on the wire (the arithmetic is in `scram`): the proxy
//! authenticating a client with the cluster's verifier, and logging in to the server as
//! that client with the key the client proved.

use crate::scram::{self, ScramError, Verified, Verifier};
use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest authentication message accepted from either side.
const MAX_MESSAGE: usize = 16 * 1024;

/// `Authentication*` codes.
const AUTH_OK: u32 = 0;
const AUTH_SASL: u32 = 10;
const AUTH_SASL_CONTINUE: u32 = 11;
const AUTH_SASL_FINAL: u32 = 12;

/// Why a client was not let in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientAuthError {
    #[error("{0}")]
    Scram(#[from] ScramError),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one typed message (`type`, length, body) of at most [`MAX_MESSAGE`] bytes.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(u8, Vec<u8>)> {
    let kind = s.read_u8().await?;
    let len = s.read_u32().await? as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message of {len} bytes during authentication"),
        ));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    Ok((kind, body))
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn authentication(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    message(b'R', &body)
}

/// `AuthenticationSASLFinal` with the server signature, then `AuthenticationOk`: what a
/// client hears once the server took the proxy's log-in.
pub(crate) fn client_accepted(v: &Verified) -> Vec<u8> {
    let mut out = authentication(AUTH_SASL_FINAL, v.server_final.as_bytes());
    out.extend_from_slice(&authentication(AUTH_OK, &[]));
    out
}

/// Authenticates a client with the cluster's verifier. `cert_hash` is the
/// `tls-server-end-point` data of the proxy's certificate when the client came over TLS:
/// then `SCRAM-SHA-256-PLUS` is offered, and a client that binds its proof to another
/// certificate (a man in the middle's) is refused.
pub(crate) async fn authenticate_client<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    v: &Verifier,
    cert_hash: Option<&[u8]>,
) -> Result<Verified, ClientAuthError> {
    let mut mechanisms = Vec::new();
    if cert_hash.is_some() {
        mechanisms.extend_from_slice(scram::MECHANISM_PLUS.as_bytes());
        mechanisms.push(0);
    }
    mechanisms.extend_from_slice(scram::MECHANISM.as_bytes());
    mechanisms.extend_from_slice(&[0, 0]);
    client.write_all(&authentication(AUTH_SASL, &mechanisms)).await?;

    let body = expect_password_message(client).await?;
    let nul = body
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| ClientAuthError::Protocol("SASLInitialResponse without a mechanism".into()))?;
    let mechanism = std::str::from_utf8(&body[..nul]).unwrap_or_default();
    if mechanism != scram::MECHANISM && !(mechanism == scram::MECHANISM_PLUS && cert_hash.is_some()) {
        return Err(ClientAuthError::Protocol(format!(
            "SASL mechanism {mechanism:?} was not offered"
        )));
    }
    let data = body
        .get(nul + 5..)
        .ok_or_else(|| ClientAuthError::Protocol("SASLInitialResponse is cut short".into()))?;
    let first = scram::parse_client_first(mechanism, data)?;
    let server_first = scram::server_first(&first, &scram::nonce(), v);
    client
        .write_all(&authentication(AUTH_SASL_CONTINUE, server_first.as_bytes()))
        .await?;
    let body = expect_password_message(client).await?;
    Ok(scram::verify_client_final(&first, &server_first, &body, v, cert_hash)?)
}

async fn expect_password_message<S: AsyncRead + Unpin>(client: &mut S) -> Result<Vec<u8>, ClientAuthError> {
    match read_message(client).await? {
        (b'p', body) => Ok(body),
        (kind, _) => Err(ClientAuthError::Protocol(format!(
            "expected a SASL response, got message {:?}",
            kind as char
        ))),
    }
}

/// How the proxy's log-in to the server went wrong.
#[derive(Debug)]
pub(crate) enum LoginError {
    /// The server refused with this `ErrorResponse` (forwarded to the client as it is).
    Refused(Vec<u8>),
    Other(anyhow::Error),
}

/// Logs in to the server (its startup packet already sent) with the client's key; returns
/// once the server has said `AuthenticationOk`.
pub(crate) async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
    v: &Verifier,
    client_key: &[u8; 32],
) -> Result<(), LoginError> {
    let other = LoginError::Other;
    let (code, data) = server_authentication(server).await?;
    if code != AUTH_SASL {
        return Err(other(anyhow::anyhow!(
            "the server asked for authentication {code}, not SASL"
        )));
    }
    let offered = data.split(|b| *b == 0).any(|m| m == scram::MECHANISM.as_bytes());
    if !offered {
        return Err(other(anyhow::anyhow!("the server does not offer {}", scram::MECHANISM)));
    }
    let nonce = scram::nonce();
    let first = scram::login_first(&nonce);
    let mut body = scram::MECHANISM.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(first.len() as u32).to_be_bytes());
    body.extend_from_slice(first.as_bytes());
    server
        .write_all(&message(b'p', &body))
        .await
        .map_err(|e| other(e.into()))?;
    let (code, data) = server_authentication(server).await?;
    if code != AUTH_SASL_CONTINUE {
        return Err(other(anyhow::anyhow!("expected SASLContinue, got {code}")));
    }
    let server_first = String::from_utf8(data).map_err(|_| other(anyhow::anyhow!("SASLContinue is not UTF-8")))?;
    let (final_msg, signature) =
        scram::login_final(&nonce, &server_first, client_key, v).map_err(|e| other(e.into()))?;
    server
        .write_all(&message(b'p', final_msg.as_bytes()))
        .await
        .map_err(|e| other(e.into()))?;
    let (code, data) = server_authentication(server).await?;
    if code != AUTH_SASL_FINAL {
        return Err(other(anyhow::anyhow!("expected SASLFinal, got {code}")));
    }
    scram::check_server_final(&data, &signature).map_err(|e| other(e.into()))?;
    match server_authentication(server).await? {
        (AUTH_OK, _) => Ok(()),
        (code, _) => Err(other(anyhow::anyhow!("expected AuthenticationOk, got {code}"))),
    }
}

/// The server's next `Authentication*` message (code, data); notices are skipped, an
/// error is returned whole for the client.
async fn server_authentication<S: AsyncRead + Unpin>(server: &mut S) -> Result<(u32, Vec<u8>), LoginError> {
    loop {
        let (kind, body) = read_message(server)
            .await
            .map_err(|e| LoginError::Other(anyhow::Error::from(e).context("read from server")))?;
        match kind {
            b'R' if body.len() >= 4 => {
                let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                return Ok((code, body[4..].to_vec()));
            }
            b'E' => return Err(LoginError::Refused(message(b'E', &body))),
            b'N' => continue,
            other => {
                return Err(LoginError::Other(anyhow::anyhow!(
                    "unexpected message {:?} from the server during authentication",
                    other as char
                )))
            }
        }
    }
}

/// Reads the first certificate of a PEM chain's file as DER, for its end-point hash.
pub(crate) fn cert_end_point_hash(cert_file: &std::path::Path) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let first = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("read {}", cert_file.display()))?
        .next();
    match first {
        Some(cert) => Ok(scram::end_point_hash(
            &cert.with_context(|| format!("parse {}", cert_file.display()))?,
        )),
        None => bail!("{} holds no certificate", cert_file.display()),
    }
}
