//! The part of the PostgreSQL v3 protocol the proxy speaks: the packets a client may send
//! before authentication, the startup parameters, and `ErrorResponse`.
//!
//! Pure parsing and encoding (plus one async read); every malformed input is a
//! [`StartupError`], never a panic.

use tokio::io::{AsyncRead, AsyncReadExt};

/// PostgreSQL's own limit on a startup packet.
pub const MAX_STARTUP_LEN: usize = 10_000;
const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
const PROTOCOL_3_0: u32 = 196608;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid startup packet: {0}")]
    Malformed(String),
    #[error("startup packet too large ({0} bytes; the limit is {MAX_STARTUP_LEN})")]
    TooLarge(usize),
    #[error("unsupported frontend protocol {0}.{1}: this proxy speaks 3.0")]
    Protocol(u32, u32),
    #[error("timed out waiting for the startup packet")]
    Timeout,
    #[error("no endpoint given: add options=endpoint%3D<endpoint-id> to the connection URI, or connect over TLS to <endpoint-id>.{0}")]
    NoEndpoint(String),
    #[error("endpoint \"{0}\" not found")]
    UnknownEndpoint(String),
    #[error("endpoint \"{0}\" is not reachable right now; try again shortly")]
    Unavailable(String),
    #[error("connection closed during startup")]
    Closed,
    #[error("endpoint \"{0}\" has no public endpoint: connect through one of its private endpoints")]
    NotPublic(String),
    #[error("connections from {from} are not allowed to endpoint \"{endpoint}\" (see its allow-list)")]
    NotAllowed { endpoint: String, from: std::net::IpAddr },
    #[error("endpoint \"{0}\" is private: connect from its tenant network, to its own address")]
    PrivateOnly(String),
    #[error("endpoint \"{0}\" is not served at this private endpoint's address")]
    NotServedHere(String),
    #[error(
        "the server of endpoint \"{0}\" could not be verified, so the session was not opened there; try again shortly"
    )]
    Untrusted(String),
    #[error("password authentication failed for user \"{0}\"")]
    BadPassword(String),
    #[error("authentication refused: {0}")]
    AuthRefused(String),
    #[error("role \"{user}\" cannot log in to endpoint \"{endpoint}\" (only the cluster's owner can)")]
    NotOwner { user: String, endpoint: String },
    #[error("the server of endpoint \"{0}\" did not take the proxy's log-in (was the owner's password changed inside the database?)")]
    ServerLogin(String),
}

impl StartupError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StartupError::Malformed(_)
            | StartupError::TooLarge(_)
            | StartupError::Protocol(..)
            | StartupError::Closed => "08P01",
            StartupError::Timeout => "08006",
            StartupError::NoEndpoint(_) | StartupError::UnknownEndpoint(_) => "08004",
            StartupError::Unavailable(_) | StartupError::Untrusted(_) => "08006",
            StartupError::BadPassword(_) | StartupError::ServerLogin(_) => "28P01",
            // What PostgreSQL answers when pg_hba.conf has no entry for the client.
            StartupError::NotPublic(_)
            | StartupError::NotAllowed { .. }
            | StartupError::PrivateOnly(_)
            | StartupError::NotServedHere(_)
            | StartupError::AuthRefused(_)
            | StartupError::NotOwner { .. } => "28000",
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Packet {
    SslRequest,
    GssEncRequest,
    /// The backend's process id and secret key, from `BackendKeyData`.
    CancelRequest {
        pid: u32,
        secret: u32,
    },
    Startup(Startup),
}

/// The parameters of a v3.0 startup packet, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Startup {
    pub params: Vec<(String, String)>,
}

/// Reads one pre-authentication packet: length, code, body.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<Packet, StartupError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..4]).await {
        Ok(_) => {}
        Err(_) => return Err(StartupError::Closed),
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len < 8 {
        return Err(StartupError::Malformed(format!("length {len} is too short")));
    }
    if len > MAX_STARTUP_LEN {
        return Err(StartupError::TooLarge(len));
    }
    r.read_exact(&mut head[4..]).await.map_err(|_| StartupError::Closed)?;
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    // The body grows as its bytes arrive, not by what the length claims: a client that
    // announces the largest packet and sends nothing holds no buffer of that size.
    let want = len - 8;
    let mut body = Vec::new();
    (&mut *r)
        .take(want as u64)
        .read_to_end(&mut body)
        .await
        .map_err(|_| StartupError::Closed)?;
    if body.len() != want {
        return Err(StartupError::Closed);
    }
    parse(code, &body)
}

pub fn parse(code: u32, body: &[u8]) -> Result<Packet, StartupError> {
    match code {
        SSL_REQUEST => Ok(Packet::SslRequest),
        GSSENC_REQUEST => Ok(Packet::GssEncRequest),
        CANCEL_REQUEST => match body {
            [a, b, c, d, e, f, g, h] => Ok(Packet::CancelRequest {
                pid: u32::from_be_bytes([*a, *b, *c, *d]),
                secret: u32::from_be_bytes([*e, *f, *g, *h]),
            }),
            _ => Err(StartupError::Malformed("cancel request of the wrong length".into())),
        },
        PROTOCOL_3_0 => Startup::parse(body).map(Packet::Startup),
        other => Err(StartupError::Protocol(other >> 16, other & 0xffff)),
    }
}

impl Startup {
    fn parse(body: &[u8]) -> Result<Self, StartupError> {
        let mut params = Vec::new();
        let mut rest = body;
        loop {
            let Some(nul) = rest.iter().position(|b| *b == 0) else {
                return Err(StartupError::Malformed("parameters are not terminated".into()));
            };
            if nul == 0 {
                if rest.len() != 1 {
                    return Err(StartupError::Malformed("data after the final terminator".into()));
                }
                break;
            }
            let key = std::str::from_utf8(&rest[..nul])
                .map_err(|_| StartupError::Malformed("parameter name is not UTF-8".into()))?
                .to_string();
            if params.iter().any(|(k, _)| *k == key) {
                // Which one would PostgreSQL take? (A second `options` could route elsewhere
                // than the first one said.)
                return Err(StartupError::Malformed(format!("parameter {key:?} given twice")));
            }
            rest = &rest[nul + 1..];
            let Some(nul) = rest.iter().position(|b| *b == 0) else {
                return Err(StartupError::Malformed(format!("parameter {key:?} has no value")));
            };
            let value = std::str::from_utf8(&rest[..nul])
                .map_err(|_| StartupError::Malformed(format!("parameter {key:?} is not UTF-8")))?
                .to_string();
            rest = &rest[nul + 1..];
            params.push((key, value));
        }
        if !params.iter().any(|(k, _)| k == "user") {
            return Err(StartupError::Malformed("no user given".into()));
        }
        Ok(Self { params })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Finds the endpoint (the `endpoint=` option, else the SNI's first label when the SNI
    /// is under `domain`) and removes the routing option so PostgreSQL never sees it.
    pub fn take_endpoint(&mut self, sni: Option<&str>, domain: &str) -> Result<String, StartupError> {
        let mut found = None;
        if let Some(pos) = self.params.iter().position(|(k, _)| k == "options") {
            let opts = self.params[pos].1.clone();
            let mut kept = Vec::new();
            for word in split_options(&opts) {
                match word
                    .strip_prefix("endpoint=")
                    .or_else(|| word.strip_prefix("--endpoint="))
                {
                    Some(id) => found = Some(id.to_string()),
                    None => kept.push(word),
                }
            }
            if kept.is_empty() {
                self.params.remove(pos);
            } else {
                self.params[pos].1 = kept.iter().map(|w| escape_option(w)).collect::<Vec<_>>().join(" ");
            }
        }
        let found = found.or_else(|| {
            let sni = sni?;
            let (label, rest) = sni.split_once('.')?;
            (rest.eq_ignore_ascii_case(domain)).then(|| label.to_ascii_lowercase())
        });
        let id = found.ok_or_else(|| StartupError::NoEndpoint(domain.to_string()))?;
        if id.is_empty()
            || id.len() > 63
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            let shown: String = id.chars().take(70).collect();
            return Err(StartupError::UnknownEndpoint(shown));
        }
        Ok(id)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        for (k, v) in &self.params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }
}

/// Splits libpq's `options` on unescaped whitespace; `\` escapes the next character.
fn split_options(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn escape_option(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    for c in w.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Encodes a `CancelRequest` to send on to the backend.
pub fn cancel_request(pid: u32, secret: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&16u32.to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&secret.to_be_bytes());
    out
}

/// What the proxy needs to know of the server's messages before the session is ready.
#[derive(Debug, PartialEq)]
pub enum ServerEvent {
    /// `BackendKeyData`: what a later `CancelRequest` must carry.
    KeyData { pid: u32, secret: u32 },
    /// `ReadyForQuery`: start-up is over.
    Ready,
    /// `ErrorResponse` during start-up: the server will close the connection.
    Error,
}

/// Splits complete server messages off the front of `buf`; returns how many bytes they
/// span and the events among them. A partial message at the end is left for later.
pub fn scan_server_messages(buf: &[u8]) -> Result<(usize, Vec<ServerEvent>), StartupError> {
    let mut pos = 0;
    let mut events = Vec::new();
    while buf.len() - pos >= 5 {
        let tag = buf[pos];
        let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]]) as usize;
        if !(4..=1 << 24).contains(&len) {
            return Err(StartupError::Malformed(format!("server message of length {len}")));
        }
        if buf.len() - pos < 1 + len {
            break;
        }
        let body = &buf[pos + 5..pos + 1 + len];
        match (tag, body) {
            (b'K', [a, b, c, d, e, f, g, h]) => events.push(ServerEvent::KeyData {
                pid: u32::from_be_bytes([*a, *b, *c, *d]),
                secret: u32::from_be_bytes([*e, *f, *g, *h]),
            }),
            (b'Z', _) => events.push(ServerEvent::Ready),
            (b'E', _) => events.push(ServerEvent::Error),
            _ => {}
        }
        pos += 1 + len;
        if matches!(events.last(), Some(ServerEvent::Ready | ServerEvent::Error)) {
            break;
        }
    }
    Ok((pos, events))
}

/// A `NoticeResponse` with severity WARNING (SQLSTATE 01000), as psql prints
/// `WARNING:  <message>`.
pub fn notice_response(message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (tag, value) in [(b'S', "WARNING"), (b'V', "WARNING"), (b'C', "01000"), (b'M', message)] {
        body.push(tag);
        body.extend_from_slice(value.replace('\0', " ").as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'N'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A FATAL `ErrorResponse` message.
pub fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (tag, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', sqlstate), (b'M', message)] {
        body.push(tag);
        body.extend_from_slice(value.replace('\0', " ").as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Startup {
        Startup {
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[tokio::test]
    async fn startup_round_trips() {
        let s = startup(&[
            ("user", "owner"),
            ("database", "shop"),
            ("options", "endpoint=ep-abc -c x=1"),
        ]);
        let bytes = s.encode();
        let p = read_packet(&mut &bytes[..]).await.unwrap();
        assert_eq!(p, Packet::Startup(s));
    }

    #[test]
    fn endpoint_option_is_taken_and_stripped() {
        let mut s = startup(&[
            ("user", "u"),
            ("options", "-c search_path=a\\ b endpoint=ep-x1 -c work_mem=64MB"),
        ]);
        assert_eq!(s.take_endpoint(None, "db.test").unwrap(), "ep-x1");
        assert_eq!(s.get("options"), Some("-c search_path=a\\ b -c work_mem=64MB"));
        let mut s = startup(&[("user", "u"), ("options", "--endpoint=ep-y")]);
        assert_eq!(s.take_endpoint(None, "db.test").unwrap(), "ep-y");
        assert_eq!(s.get("options"), None);
    }

    #[test]
    fn endpoint_from_sni_under_domain_only() {
        let mut s = startup(&[("user", "u")]);
        assert_eq!(s.take_endpoint(Some("ep-z.db.test"), "db.test").unwrap(), "ep-z");
        assert!(matches!(
            s.take_endpoint(Some("ep-z.other.test"), "db.test"),
            Err(StartupError::NoEndpoint(_))
        ));
        assert!(matches!(
            s.take_endpoint(None, "db.test"),
            Err(StartupError::NoEndpoint(_))
        ));
    }

    #[test]
    fn hostile_endpoint_ids_are_refused() {
        for bad in ["../x", "EP\"", "a b", &"x".repeat(300)] {
            let mut s = startup(&[
                ("user", "u"),
                ("options", &format!("endpoint={}", bad.replace(' ', "\\ "))),
            ]);
            assert!(
                matches!(s.take_endpoint(None, "d"), Err(StartupError::UnknownEndpoint(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_packets_are_errors() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 4],                                      // too short
            vec![0, 0x10, 0, 0],                                   // too large
            vec![0, 0, 0, 8, 0, 2, 0, 0],                          // protocol 2.0
            vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'], // unterminated
            vec![0, 0, 0, 10, 0, 3, 0, 0, 0, 0],                   // data after terminator
            vec![0, 0, 0, 9, 0, 3, 0, 0, 0],                       // no user
            vec![0, 0, 0, 20],                                     // truncated
        ];
        for c in cases {
            assert!(read_packet(&mut &c[..]).await.is_err(), "{c:?}");
        }
    }

    #[test]
    fn server_messages_are_scanned_across_partial_reads() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]); // AuthenticationOk
        stream.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 9]);
        stream.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        stream.extend_from_slice(&[b'T', 0, 0]); // the start of a later message
        let (used, events) = scan_server_messages(&stream[..10]).unwrap();
        assert_eq!((used, events), (9, vec![]));
        let (used, events) = scan_server_messages(&stream).unwrap();
        assert_eq!(used, 9 + 13 + 6, "stops after ReadyForQuery");
        assert_eq!(
            events,
            vec![ServerEvent::KeyData { pid: 7, secret: 9 }, ServerEvent::Ready]
        );
        assert!(scan_server_messages(&[b'X', 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn cancel_requests_round_trip() {
        let bytes = cancel_request(42, 0xdead_beef);
        let code = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        assert_eq!(
            parse(code, &bytes[8..]).unwrap(),
            Packet::CancelRequest {
                pid: 42,
                secret: 0xdead_beef
            }
        );
        assert!(parse(code, &bytes[8..12]).is_err());
    }

    #[test]
    fn notice_response_is_a_warning() {
        let n = notice_response("read\0only");
        assert_eq!(n[0], b'N');
        assert_eq!(u32::from_be_bytes([n[1], n[2], n[3], n[4]]) as usize, n.len() - 1);
        let body = String::from_utf8_lossy(&n[5..]);
        assert!(
            body.contains("SWARNING\0") && body.contains("C01000\0") && body.contains("Mread only\0"),
            "{body}"
        );
    }

    #[test]
    fn error_response_is_well_formed() {
        let e = error_response("08004", "endpoint \"x\" not found");
        assert_eq!(e[0], b'E');
        let len = u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
        assert_eq!(len + 1, e.len());
        assert_eq!(*e.last().unwrap(), 0);
    }
}
