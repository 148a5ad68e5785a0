//! Who may use an endpoint, checked before anything is forwarded: a cluster can turn its
//! public endpoint off, and give it an allow-list of source networks (CIDRs); a private
//! endpoint is served at its own listener inside its tenant network and nowhere else. The
//! proxy knows the listener a connection came in on and the address it came from (the
//! TCP peer; it terminates TLS itself), so the check needs nothing from the client.

use crate::protocol::StartupError;
use highrise_api::{PrivateListener, Route};
use std::net::IpAddr;

/// The listener a connection came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The proxy's public address.
    Public,
    /// A private endpoint's listener inside a tenant network.
    Private(PrivateListener),
}

/// Whether a connection from `peer` that came in `via` a listener may open a session on
/// `route`'s endpoint. On the public listener, a private endpoint is refused, and so is a
/// cluster whose public endpoint is off or whose allow-list lacks the peer (an entry that
/// does not parse admits nobody: the control plane validates them, and a bad one must
/// never open the endpoint to everyone). A private listener serves its own endpoint only;
/// its network is the boundary, so the allow-list does not apply there.
pub fn admit(route: &Route, peer: IpAddr, via: &Via) -> Result<(), StartupError> {
    match (via, &route.private) {
        (Via::Private(l), Some(p)) if l == p => return Ok(()),
        (Via::Private(_), _) => return Err(StartupError::NotServedHere(route.endpoint.clone())),
        (Via::Public, Some(_)) => return Err(StartupError::PrivateOnly(route.endpoint.clone())),
        (Via::Public, None) => {}
    }
    if !route.public {
        return Err(StartupError::NotPublic(route.endpoint.clone()));
    }
    if route.allowed_cidrs.is_empty() {
        return Ok(());
    }
    let peer = peer.to_canonical();
    let allowed = route
        .allowed_cidrs
        .iter()
        .filter_map(|c| c.parse::<ipnet::IpNet>().ok())
        .any(|net| net.contains(&peer));
    if allowed {
        Ok(())
    } else {
        Err(StartupError::NotAllowed {
            endpoint: route.endpoint.clone(),
            from: peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(public: bool, cidrs: &[&str]) -> Route {
        Route {
            endpoint: "ep-1".into(),
            cluster_id: "cl_1".into(),
            addr: Some("127.0.0.1:5432".into()),
            term: 1,
            notice: None,
            public,
            allowed_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            private: None,
            server_name: None,
            login: None,
        }
    }

    fn listener(network: &str, listen: &str) -> PrivateListener {
        PrivateListener {
            network_id: network.into(),
            namespace: format!("hr-{network}"),
            listen: listen.into(),
        }
    }

    #[test]
    fn the_allow_list_decides_by_source_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(bool, &[&str], &str, bool)] = &[
            (true, &[], "203.0.113.9", true),
            (true, &["10.0.0.0/8"], "10.1.2.3", true),
            (true, &["10.0.0.0/8"], "11.1.2.3", false),
            (true, &["10.0.0.0/8", "127.0.0.9/32"], "127.0.0.9", true),
            (true, &["127.0.0.9/32"], "127.0.0.10", false),
            // An IPv4 client on a dual-stack listener shows as ::ffff:a.b.c.d.
            (true, &["192.0.2.0/24"], "::ffff:192.0.2.7", true),
            (true, &["2001:db8::/32"], "2001:db8::1", true),
            (true, &["2001:db8::/32"], "192.0.2.7", false),
            // Fails closed on an entry that does not parse.
            (true, &["not a network"], "10.1.2.3", false),
            // Private only: nobody through a public listener.
            (false, &[], "10.1.2.3", false),
            (false, &["10.0.0.0/8"], "10.1.2.3", false),
        ];
        for (public, cidrs, peer, ok) in cases {
            let got = admit(&route(*public, cidrs), ip(peer), &Via::Public);
            assert_eq!(got.is_ok(), *ok, "public={public} {cidrs:?} from {peer}: {got:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let e = admit(
            &route(true, &["10.0.0.0/8"]),
            "192.0.2.7".parse().unwrap(),
            &Via::Public,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "connections from 192.0.2.7 are not allowed to endpoint \"ep-1\" (see its allow-list)"
        );
        assert_eq!(e.sqlstate(), "28000");
        let e = admit(&route(false, &[]), "192.0.2.7".parse().unwrap(), &Via::Public).unwrap_err();
        assert!(e.to_string().contains("has no public endpoint"), "{e}");
    }

    #[test]
    fn a_private_endpoint_is_served_at_its_own_listener_only() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let a = listener("net_a", "10.0.0.10:5432");
        let b = listener("net_b", "10.0.0.10:5432");
        let mut private = route(false, &[]);
        private.private = Some(a.clone());
        assert!(admit(&private, peer, &Via::Private(a.clone())).is_ok());
        // The same address in another tenant's network is another listener.
        let e = admit(&private, peer, &Via::Private(b.clone())).unwrap_err();
        assert!(e.to_string().contains("not served at this private endpoint"), "{e}");
        let e = admit(&private, peer, &Via::Public).unwrap_err();
        assert!(e.to_string().contains("is private"), "{e}");
        assert_eq!(e.sqlstate(), "28000");
        // A public endpoint is not served at a private listener, whatever its allow-list.
        let public = route(true, &[]);
        assert!(admit(&public, peer, &Via::Private(a)).is_err());
        assert!(admit(&public, peer, &Via::Public).is_ok());
    }
}
