//! Outbound webhooks (spend alerts): a client that reaches public addresses only, so a
//! tenant cannot aim the control plane at a network behind it (server-side request
//! forgery: loopback, private ranges, the link-local cloud metadata address). Host names
//! are resolved by the client's own resolver, which keeps only public addresses, so the
//! address checked is the address connected to; a URL naming an address is checked before
//! the call; redirects are not followed. `up`'s local land, all on loopback, allows
//! private addresses when asked (`--webhooks-to-private-addresses`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Whether `ip` is an address on the public internet: not loopback, private, shared
/// (carrier-grade NAT), link-local, unspecified, broadcast, multicast, documentation,
/// benchmarking or reserved; an IPv4-mapped IPv6 address as its IPv4 address.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    // 2001:db8::/32, documentation; 64:ff9b::/96 (NAT64) leads anywhere.
                    || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                    || first == 0x0064)
            }
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

/// Resolves names to their public addresses only; a name with none is an error.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = all.iter().copied().filter(|a| public(a.ip())).collect();
            if kept.is_empty() {
                return Err(format!("{host} has no public address (webhooks go to the internet only)").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The webhook client: public addresses only unless `private` (see the module).
pub fn client(private: bool) -> reqwest::Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if private {
        b
    } else {
        b.dns_resolver(Arc::new(PublicOnly))
    }
    .build()
}

/// Why `url` may not be called, if it names an address that is not public (names are
/// left to the client's resolver).
pub fn refused(url: &str, private: bool) -> Option<String> {
    if private {
        return None;
    }
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let ip: IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    (!public(ip)).then(|| format!("{ip} is not a public address (webhooks go to the internet only)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for (ip, want) in [
            ("8.8.8.8", true),
            ("93.184.216.34", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("100.128.0.1", true),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("192.0.0.8", false),
            ("198.18.0.1", false),
            ("203.0.113.5", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("2606:4700::1111", true),
            ("::1", false),
            ("::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::a00:1", false),
        ] {
            assert_eq!(public(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn addresses_in_urls_are_checked_names_are_left_to_the_resolver() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "http://10.0.0.7",
        ] {
            assert!(refused(url, false).is_some(), "{url}");
            assert_eq!(refused(url, true), None, "{url}");
        }
        assert_eq!(refused("https://8.8.8.8/x", false), None);
        assert_eq!(refused("https://hooks.example.com/x", false), None);
    }

    /// Neither a loopback address nor a name resolving to one is reached (the listener
    /// sees no connection); allowed, it is.
    #[tokio::test]
    async fn private_targets_are_not_reached_unless_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let public_only = client(false).unwrap();
        let err = public_only
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("no public address"));
        assert!(refused(&format!("http://127.0.0.1:{port}/hook"), false).is_some());
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection reached the listener");

        let allowed = client(true).unwrap();
        let call = tokio::spawn(async move { allowed.post(format!("http://127.0.0.1:{port}/hook")).send().await });
        let (conn, _) = listener.accept().await.unwrap();
        drop(conn);
        let _ = call.await;
    }
}
