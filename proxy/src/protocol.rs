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
            StartupError::Unavailable(_) => "08006",
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Packet {
    SslRequest,
    GssEncRequest,
    CancelRequest,
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
    let mut body = vec![0u8; len - 8];
    r.read_exact(&mut body).await.map_err(|_| StartupError::Closed)?;
    parse(code, &body)
}

pub fn parse(code: u32, body: &[u8]) -> Result<Packet, StartupError> {
    match code {
        SSL_REQUEST => Ok(Packet::SslRequest),
        GSSENC_REQUEST => Ok(Packet::GssEncRequest),
        CANCEL_REQUEST => Ok(Packet::CancelRequest),
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
    fn error_response_is_well_formed() {
        let e = error_response("08004", "endpoint \"x\" not found");
        assert_eq!(e[0], b'E');
        let len = u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
        assert_eq!(len + 1, e.len());
        assert_eq!(*e.last().unwrap(), 0);
    }
}
