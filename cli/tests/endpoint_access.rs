//! Who may use a cluster's public endpoint (issue 14), on the real `highrise up`: an
//! allow-list of source networks refuses a client outside it (and admits one inside it,
//! from another loopback address), the public endpoint turned off refuses everyone, and
//! both turn back; a bad network is refused by the API and changes nothing.

mod common;

use common::ha::show;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// Opens a session from `source` on `endpoint` through the proxy at `proxy` and returns the
/// first message's type and text: `R` (the server asks for the password: admitted) or
/// `E` with the proxy's error.
fn first_answer(source: &str, proxy: &str, endpoint: &str) -> (u8, String) {
    let from: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    let to: std::net::SocketAddr = proxy.parse().unwrap();
    // A socket bound to `source` before it connects (std cannot choose the source).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(from)?;
            tokio::time::timeout(Duration::from_secs(5), sock.connect(to)).await?
        })
        .unwrap();
    let mut s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in [
        ("user", "owner"),
        ("database", "shop"),
        ("options", &format!("endpoint={endpoint}")),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut rest = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut rest).unwrap();
    (head[0], String::from_utf8_lossy(&rest).into_owned())
}

#[test]
fn allow_lists_and_a_closed_public_endpoint_refuse_and_reopen() {
    let up = Up::start();
    let out = up.cli_ok(&["cluster", "create", "shop", "--wait"]);
    let uri = out.lines().last().unwrap().trim().to_string();
    psql_ok(&uri, "select 1");
    let endpoint = show(&up, "shop")["endpoint"].as_str().unwrap().to_string();
    let psql_refusal = |what: &str, expect: &str| {
        wait_for(what, Duration::from_secs(20), || {
            let (ok, _, err) = psql(&uri, "select 1");
            !ok && err.contains(expect)
        });
    };
    let psql_admitted = |what: &str| wait_for(what, Duration::from_secs(20), || psql(&uri, "select 1").0);

    // Only 10.0.0.0/8 and 127.0.0.9: this client (127.0.0.1) is refused, one on
    // 127.0.0.9 reaches the server's password exchange.
    up.cli_ok(&[
        "cluster",
        "update",
        "shop",
        "--allow",
        "10.1.2.3/8",
        "--allow",
        "127.0.0.9",
    ]);
    let shown = show(&up, "shop");
    assert_eq!(
        shown["allowed_cidrs"],
        serde_json::json!(["10.0.0.0/8", "127.0.0.9/32"])
    );
    assert_eq!(shown["public"], true);
    psql_refusal(
        "the allow-list to refuse 127.0.0.1",
        "connections from 127.0.0.1 are not allowed to endpoint",
    );
    let (kind, text) = first_answer("127.0.0.9", &up.proxy_addr, &endpoint);
    assert_eq!(kind, b'R', "127.0.0.9 was not admitted: {text}");
    let (kind, text) = first_answer("127.0.0.10", &up.proxy_addr, &endpoint);
    assert_eq!(kind, b'E');
    assert!(text.contains("28000") && text.contains("127.0.0.10"), "{text}");
    let text_out = up.cli_ok(&["cluster", "show", "shop"]);
    assert!(
        text_out.contains("access:     public, from 10.0.0.0/8, 127.0.0.9/32 only"),
        "{text_out}"
    );

    // A bad network: refused with the reason, the list as it was.
    let bad = up.cli(&["cluster", "update", "shop", "--allow", "10.0.0.0/33"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("\"10.0.0.0/33\" is not a network"), "{err}");
    assert_eq!(show(&up, "shop")["allowed_cidrs"].as_array().unwrap().len(), 2);

    up.cli_ok(&["cluster", "update", "shop", "--allow-any"]);
    psql_admitted("any source admitted again");

    // The public endpoint off: nobody gets through it, whatever the list.
    up.cli_ok(&["cluster", "update", "shop", "--public", "false"]);
    psql_refusal("the public endpoint to close", "has no public endpoint");
    let (kind, text) = first_answer("127.0.0.9", &up.proxy_addr, &endpoint);
    assert_eq!(kind, b'E', "{text}");
    assert!(up.cli_ok(&["cluster", "show", "shop"]).contains("public endpoint off"));
    up.cli_ok(&["cluster", "update", "shop", "--public", "true"]);
    psql_admitted("the public endpoint open again");
}
