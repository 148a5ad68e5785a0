//! The proxy's pre-authentication parsing under arbitrary bytes: the one harness that the
//! bounded `bolero` run in the tests (`proxy/tests/fuzz.rs`) and the long `cargo fuzz`
//! runs (`proxy/fuzz`, `bench/run fuzz`) both drive.
//!
//! [`conversation`] plays what a client sends before authentication through the same
//! parser the proxy uses — encryption requests, then a startup or cancel packet — and
//! checks what must hold whatever the bytes: no panic, nothing read past the input, a
//! parsed startup re-encodes to the same parameters, the routing option never reaches the
//! server, a cancel key round-trips. [`server_messages`] checks that the scan of the
//! server's start-up messages finds the same events however the bytes are split.

use crate::protocol::{self, Packet, ServerEvent, StartupError};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future over in-memory input, which never waits.
fn at_once<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a read of in-memory bytes waited"),
    }
}

/// What the client's bytes came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// A startup packet naming this endpoint.
    Routed(String),
    /// A cancel request.
    Cancel,
    /// Refused with this error (what the client is told).
    Refused(String),
}

/// The pre-authentication conversation over `data` (`tls`: the proxy offers TLS, after
/// which the rest of `data` is the first packet inside it; `domain`: the SNI domain).
pub fn conversation(data: &[u8], tls: bool, sni: Option<&str>) -> Outcome {
    let mut rest = data;
    let mut encrypted = false;
    loop {
        let before = rest.len();
        let packet = at_once(protocol::read_packet(&mut rest));
        assert!(rest.len() <= before, "read past the input");
        let packet = match packet {
            Ok(p) => p,
            Err(e) => return Outcome::Refused(refusal(&e)),
        };
        match packet {
            Packet::SslRequest | Packet::GssEncRequest if encrypted => {
                return Outcome::Refused("encryption requested twice".into())
            }
            Packet::SslRequest if tls => encrypted = true,
            Packet::SslRequest | Packet::GssEncRequest => {}
            Packet::CancelRequest { pid, secret } => {
                let again = protocol::cancel_request(pid, secret);
                let parsed = at_once(protocol::read_packet(&mut again.as_slice())).expect("own cancel request");
                assert_eq!(parsed, Packet::CancelRequest { pid, secret });
                return Outcome::Cancel;
            }
            Packet::Startup(mut s) => {
                // What the server would be sent parses back to the same parameters.
                let encoded = s.encode();
                let back = at_once(protocol::read_packet(&mut encoded.as_slice())).expect("own startup packet");
                assert_eq!(back, Packet::Startup(s.clone()));
                let endpoint = match s.take_endpoint(sni.filter(|_| encrypted), "db.example") {
                    Ok(e) => e,
                    Err(e) => return Outcome::Refused(refusal(&e)),
                };
                assert!(
                    !endpoint.is_empty()
                        && endpoint.len() <= 63
                        && endpoint
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "endpoint {endpoint:?}"
                );
                // The routing option is gone from what reaches the server.
                let sent = s.encode();
                let Ok(Packet::Startup(mut seen)) = at_once(protocol::read_packet(&mut sent.as_slice())) else {
                    panic!("the stripped startup packet does not parse");
                };
                assert!(
                    matches!(seen.take_endpoint(None, "db.example"), Err(StartupError::NoEndpoint(_))),
                    "the endpoint option reaches the server: {seen:?}"
                );
                return Outcome::Routed(endpoint);
            }
        }
    }
}

/// Every error tells the client something, with a protocol-error SQLSTATE.
fn refusal(e: &StartupError) -> String {
    let msg = e.to_string();
    assert!(!msg.is_empty());
    assert_eq!(e.sqlstate().len(), 5);
    let frame = protocol::error_response(e.sqlstate(), &msg);
    assert_eq!(
        frame.len(),
        1 + u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize
    );
    msg
}

/// The server's start-up messages scanned whole and split at `cut`: the same events,
/// never past the input.
pub fn server_messages(data: &[u8], cut: usize) {
    let whole = protocol::scan_server_messages(data);
    let cut = cut.min(data.len());
    let mut events = Vec::new();
    let mut buf = data[..cut].to_vec();
    let mut fed = cut;
    let split = loop {
        match protocol::scan_server_messages(&buf) {
            Err(e) => break Err(e),
            Ok((used, evs)) => {
                assert!(used <= buf.len());
                let done = matches!(evs.last(), Some(ServerEvent::Ready | ServerEvent::Error));
                events.extend(evs);
                buf.drain(..used);
                if done || fed == data.len() {
                    break Ok(());
                }
                buf.extend_from_slice(&data[fed..]);
                fed = data.len();
            }
        }
    };
    match (whole, split) {
        (Ok((_, evs)), Ok(())) => assert_eq!(evs, events),
        (Err(_), Err(_)) => {}
        (w, s) => panic!("whole {w:?} vs split {s:?}"),
    }
}
