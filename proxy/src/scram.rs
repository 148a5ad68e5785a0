//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on both sides of the proxy, as pure functions.
//!
//! When the route carries the cluster's verifier, the proxy authenticates the client
//! itself — with channel binding to its own certificate (`SCRAM-SHA-256-PLUS`,
//! `tls-server-end-point`) when the client came over TLS — and learns the client's
//! `ClientKey` from the proof. It then logs in to PostgreSQL as the client with that key
//! (a SCRAM exchange needs the key, not the password). End-to-end SCRAM through the proxy
//! cannot work once the proxy reaches the server over TLS: a TLS client would bind to the
//! proxy's certificate, the server to its own. A wrong password never reaches a server.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub(crate) const MECHANISM: &str = "SCRAM-SHA-256";
pub(crate) const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding does not match")]
    Binding,
    #[error("the client supports channel binding but did not use it although it was offered")]
    Downgrade,
    #[error("wrong password")]
    Proof,
    #[error("the server's SCRAM parameters differ from the cluster's verifier")]
    Mismatch,
    #[error("the server's signature is wrong")]
    ServerSignature,
}

/// A role's SCRAM secret as PostgreSQL stores it:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Verifier {
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored).ok()?.try_into().ok()?,
            server_key: STANDARD.decode(server).ok()?.try_into().ok()?,
        })
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// How the client handles channel binding (the GS2 header's first field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// `n`: the client does not support it.
    No,
    /// `y`: the client supports it but thinks the server does not.
    NotOffered,
    /// `p=tls-server-end-point`.
    TlsServerEndPoint,
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    pub gs2_header: String,
    pub binding: Binding,
    /// `client-first-message-bare`, part of what the proofs sign.
    pub bare: String,
    pub nonce: String,
}

/// Parses `client-first-message` for `mechanism` (the binding must agree with it).
pub(crate) fn parse_client_first(mechanism: &str, data: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (cbind, rest) = text.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
    let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
    if !authzid.is_empty() {
        return Err(ScramError::Malformed("an authorization identity is not supported"));
    }
    let binding = match cbind {
        "n" => Binding::No,
        "y" => Binding::NotOffered,
        "p=tls-server-end-point" => Binding::TlsServerEndPoint,
        _ => return Err(ScramError::Malformed("unsupported channel binding type")),
    };
    if (mechanism == MECHANISM_PLUS) != (binding == Binding::TlsServerEndPoint) {
        return Err(ScramError::Malformed(
            "channel binding does not agree with the mechanism",
        ));
    }
    let mut attrs = bare.split(',');
    match attrs.next() {
        Some(a) if a.starts_with("n=") => {}
        Some(a) if a.starts_with("m=") => return Err(ScramError::Malformed("mandatory extensions are not supported")),
        _ => return Err(ScramError::Malformed("no user name attribute")),
    }
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
        .ok_or(ScramError::Malformed("no client nonce"))?;
    Ok(ClientFirst {
        gs2_header: format!("{cbind},{authzid},"),
        binding,
        bare: bare.to_string(),
        nonce: nonce.to_string(),
    })
}

/// `server-first-message`: the combined nonce, the verifier's salt and iterations.
pub(crate) fn server_first(first: &ClientFirst, server_nonce: &str, v: &Verifier) -> String {
    format!(
        "r={}{server_nonce},s={},i={}",
        first.nonce,
        STANDARD.encode(&v.salt),
        v.iterations
    )
}

/// A fresh nonce: 18 random bytes, base64 (printable, no comma).
pub(crate) fn nonce() -> String {
    STANDARD.encode(rand::random::<[u8; 18]>())
}

/// What a verified client proof gives: the client's key (to log in to the server with)
/// and `server-final-message` for the client.
#[derive(Debug)]
pub(crate) struct Verified {
    pub client_key: [u8; 32],
    pub server_final: String,
}

/// Checks `client-final-message` against the verifier: the nonce, the channel binding
/// (`cbind_data`: the hash of the certificate the client saw, when it came over TLS) and
/// the proof.
pub(crate) fn verify_client_final(
    first: &ClientFirst,
    server_first: &str,
    data: &[u8],
    v: &Verifier,
    cbind_data: Option<&[u8]>,
) -> Result<Verified, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
    let mut attrs = without_proof.split(',');
    let channel = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(ScramError::Malformed("no channel binding attribute"))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("no nonce"))?;
    let combined = server_first
        .strip_prefix("r=")
        .and_then(|r| r.split(',').next())
        .unwrap_or_default();
    if nonce != combined {
        return Err(ScramError::Malformed("the nonce is not the one given"));
    }
    // What `c=` must carry: the GS2 header, then the certificate's hash under `p=`.
    let mut expected = first.gs2_header.as_bytes().to_vec();
    match (&first.binding, cbind_data) {
        (Binding::TlsServerEndPoint, Some(hash)) => expected.extend_from_slice(hash),
        (Binding::TlsServerEndPoint, None) => return Err(ScramError::Binding),
        // `y` over TLS: PLUS was offered, so a client that says it was not is being
        // downgraded by someone between.
        (Binding::NotOffered, Some(_)) => return Err(ScramError::Downgrade),
        _ => {}
    }
    let channel = STANDARD
        .decode(channel)
        .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
    if !bool::from(channel.ct_eq(&expected)) {
        return Err(ScramError::Binding);
    }
    let proof: [u8; 32] = STANDARD
        .decode(proof)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or(ScramError::Malformed("the proof is not 32 bytes of base64"))?;
    let auth_message = format!("{},{server_first},{without_proof}", first.bare);
    let client_key = xor(&proof, &hmac(&v.stored_key, auth_message.as_bytes()));
    let stored: [u8; 32] = Sha256::digest(client_key).into();
    if !bool::from(stored.ct_eq(&v.stored_key)) {
        return Err(ScramError::Proof);
    }
    Ok(Verified {
        client_key,
        server_final: format!("v={}", STANDARD.encode(hmac(&v.server_key, auth_message.as_bytes()))),
    })
}

/// The proxy's own log-in to a server: `client-first-message` (no channel binding: the
/// proxy verified the server's certificate by name already).
pub(crate) fn login_first(nonce: &str) -> String {
    format!("n,,n=,r={nonce}")
}

/// The proxy's `client-final-message` for the server's `server-first-message`, proving
/// `client_key`; and the server signature to expect.
pub(crate) fn login_final(
    nonce: &str,
    server_first: &str,
    client_key: &[u8; 32],
    v: &Verifier,
) -> Result<(String, String), ScramError> {
    let mut attrs = server_first.split(',');
    let combined = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|r| r.starts_with(nonce) && r.len() > nonce.len())
        .ok_or(ScramError::Malformed("the server's nonce does not extend ours"))?;
    let salt = attrs
        .next()
        .and_then(|a| a.strip_prefix("s="))
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or(ScramError::Malformed("no salt"))?;
    let iterations: u32 = attrs
        .next()
        .and_then(|a| a.strip_prefix("i="))
        .and_then(|i| i.parse().ok())
        .ok_or(ScramError::Malformed("no iteration count"))?;
    // The key is only good for the verifier it was checked against.
    if salt != v.salt || iterations != v.iterations {
        return Err(ScramError::Mismatch);
    }
    let without_proof = format!("c=biws,r={combined}");
    let auth_message = format!("n=,r={nonce},{server_first},{without_proof}");
    let proof = xor(client_key, &hmac(&v.stored_key, auth_message.as_bytes()));
    let signature = STANDARD.encode(hmac(&v.server_key, auth_message.as_bytes()));
    Ok((format!("{without_proof},p={}", STANDARD.encode(proof)), signature))
}

/// Checks the server's `server-final-message` against the expected signature.
pub(crate) fn check_server_final(data: &[u8], expected: &str) -> Result<(), ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let sig = text
        .strip_prefix("v=")
        .ok_or(ScramError::Malformed("no server signature"))?;
    match bool::from(sig.as_bytes().ct_eq(expected.as_bytes())) {
        true => Ok(()),
        false => Err(ScramError::ServerSignature),
    }
}

/// `tls-server-end-point` data (RFC 5929) for a certificate signed with a SHA-256
/// algorithm (what the land's CA issues): the SHA-256 of its DER.
pub(crate) fn end_point_hash(cert_der: &[u8]) -> Vec<u8> {
    Sha256::digest(cert_der).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
        out
    }

    /// RFC 7677's example: user "user", password "pencil".
    fn rfc_verifier() -> Verifier {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password("pencil", &salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations: 4096,
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    #[test]
    fn the_rfc_7677_exchange_verifies_and_signs_as_the_rfc_says() {
        let v = rfc_verifier();
        let first = parse_client_first(MECHANISM, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let sf = server_first(&first, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", &v);
        assert_eq!(
            sf,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let final_msg =
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let ok = verify_client_final(&first, &sf, final_msg, &v, None).unwrap();
        assert_eq!(ok.server_final, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // The key learnt is the password's: logging in with it proves the same.
        let salted = salted_password("pencil", &v.salt, 4096);
        assert_eq!(ok.client_key, hmac(&salted, b"Client Key"));

        // A proof made with another password is refused.
        let mut bad = final_msg.to_vec();
        let at = bad.len() - 5;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify_client_final(&first, &sf, &bad, &v, None).unwrap_err(),
            ScramError::Proof
        );
    }

    #[test]
    fn the_proxys_own_login_proves_the_key_it_learnt() {
        let v = rfc_verifier();
        let salted = salted_password("pencil", &v.salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let ours = "fyko+d2lbbFgONRv9qkxdawL";
        assert_eq!(login_first(ours), "n,,n=,r=fyko+d2lbbFgONRv9qkxdawL");
        // The server side of this very module checks it, as PostgreSQL would.
        let first = parse_client_first(MECHANISM, login_first(ours).as_bytes()).unwrap();
        let sf = server_first(&first, "3rfcNHYJY1ZVvWVs7j", &v);
        let (final_msg, expected) = login_final(ours, &sf, &client_key, &v).unwrap();
        let ok = verify_client_final(&first, &sf, final_msg.as_bytes(), &v, None).unwrap();
        check_server_final(ok.server_final.as_bytes(), &expected).unwrap();
        assert_eq!(
            check_server_final(b"v=AAAA", &expected).unwrap_err(),
            ScramError::ServerSignature
        );
        // A server with another salt (the password was changed inside it) is told apart.
        let other = sf.replace("s=W22Z", "s=X22Z");
        assert_eq!(
            login_final(ours, &other, &client_key, &v).unwrap_err(),
            ScramError::Mismatch
        );
        // A server nonce that does not extend ours is refused.
        assert!(login_final(ours, "r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", &client_key, &v).is_err());
    }

    #[test]
    fn channel_binding_must_match_the_certificate_the_client_saw() {
        let v = rfc_verifier();
        let salted = salted_password("pencil", &v.salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let hash = end_point_hash(b"the proxy's certificate");
        let header = "p=tls-server-end-point,,";
        let first = parse_client_first(MECHANISM_PLUS, format!("{header}n=,r=abc").as_bytes()).unwrap();
        let sf = server_first(&first, "def", &v);
        // A client's final message over `c`, with a correct proof for it.
        let final_for = |c: &[u8]| {
            let without = format!("c={},r=abcdef", STANDARD.encode(c));
            let auth = format!("{},{sf},{without}", first.bare);
            let proof = xor(&client_key, &hmac(&v.stored_key, auth.as_bytes()));
            format!("{without},p={}", STANDARD.encode(proof))
        };
        let mut good = header.as_bytes().to_vec();
        good.extend_from_slice(&hash);
        assert!(verify_client_final(&first, &sf, final_for(&good).as_bytes(), &v, Some(&hash)).is_ok());
        // Bound to another certificate (a man in the middle's): refused even with the
        // right password.
        let mut other = header.as_bytes().to_vec();
        other.extend_from_slice(&end_point_hash(b"someone else's"));
        assert_eq!(
            verify_client_final(&first, &sf, final_for(&other).as_bytes(), &v, Some(&hash)).unwrap_err(),
            ScramError::Binding
        );
        // `y` over TLS, where PLUS was offered: a downgrade.
        let y = parse_client_first(MECHANISM, b"y,,n=,r=abc").unwrap();
        let sf = server_first(&y, "def", &v);
        assert_eq!(
            verify_client_final(&y, &sf, b"c=eSws,r=abcdef,p=AAAA", &v, Some(&hash)).unwrap_err(),
            ScramError::Downgrade
        );
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        for (mech, msg) in [
            (MECHANISM, &b"n,,r=abc"[..]),
            (MECHANISM, b"n,a=admin,n=,r=abc"),
            (MECHANISM, b"x,,n=,r=abc"),
            (MECHANISM, b"n,,m=ext,n=,r=abc"),
            (MECHANISM, b"n,,n=,r="),
            (MECHANISM, b"p=tls-server-end-point,,n=,r=abc"),
            (MECHANISM_PLUS, b"n,,n=,r=abc"),
            (MECHANISM, b"\xff,,n=,r=abc"),
            (MECHANISM, b""),
        ] {
            assert!(
                matches!(parse_client_first(mech, msg), Err(ScramError::Malformed(_))),
                "{mech} {:?}",
                String::from_utf8_lossy(msg)
            );
        }
        assert!(Verifier::parse("md5abc").is_none());
        assert!(Verifier::parse("SCRAM-SHA-256$0:AAAA$AAAA:AAAA").is_none());
        let v = rfc_verifier();
        let text = format!(
            "SCRAM-SHA-256$4096:{}${}:{}",
            STANDARD.encode(&v.salt),
            STANDARD.encode(v.stored_key),
            STANDARD.encode(v.server_key)
        );
        assert_eq!(Verifier::parse(&text), Some(v));
    }
}
