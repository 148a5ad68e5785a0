//! The control plane's certificate authority: a small CA whose certificate every client
//! may trust (`GET /v1/tls/ca`, `highrise ca-cert`) and whose key signs the proxies'
//! server certificates, so that `sslmode=verify-full` works against any proxy of the land.
//!
//! The key lives beside the metadata store, never in it (like the master key): whoever
//! reads the store cannot mint a certificate. This module holds no files; `up` keeps the
//! PEM text where it keeps its other secrets.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::time::Duration;
use time::OffsetDateTime;

/// How long the CA's certificate is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a server certificate is valid: at most what browsers and most TLS stacks
/// accept (398 days); `up` issues a fresh one at every start.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA key is not a PEM private key: {0}")]
    BadKey(rcgen::Error),
    #[error("the CA certificate is not a PEM certificate")]
    BadCertificate,
    #[error("{0:?} is not a DNS name a certificate can carry")]
    BadName(String),
    #[error("sign a certificate: {0}")]
    Sign(rcgen::Error),
}

/// The certificate authority: its certificate (PEM, what clients trust) and key.
pub struct Ca {
    cert_pem: String,
    /// The certificate as an issuer: the subject and key identifier leaf certificates name.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The CA's subject and extensions: the same every time, so a CA read back from its PEM
/// key signs as the certificate clients hold names it.
fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Highrise");
    dn.push(DnType::CommonName, "Highrise CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + CA_VALIDITY;
    params
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and never shorter than 16 bytes when encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// A new CA with a fresh key (ECDSA P-256).
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let mut params = ca_params(OffsetDateTime::now_utc());
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: cert,
            key,
        })
    }

    /// The CA kept earlier: its certificate as clients have it, and its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(CaError::BadKey)?;
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(CaError::BadCertificate);
        }
        let issuer = ca_params(OffsetDateTime::now_utc())
            .self_signed(&key)
            .map_err(CaError::Sign)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            issuer,
            key,
        })
    }

    /// The CA's certificate (PEM): what a client names as `sslrootcert`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM), for its owner to keep.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server certificate for `names` (DNS names, `*.` wildcards allowed, or IP
    /// addresses), with a new key, valid for [`SERVER_VALIDITY`].
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, CaError> {
        let mut params = CertificateParams::default();
        let mut sans = Vec::with_capacity(names.len());
        for n in names {
            if let Ok(ip) = n.parse::<std::net::IpAddr>() {
                sans.push(SanType::IpAddress(ip));
                continue;
            }
            let name = n.clone().try_into().map_err(|_| CaError::BadName(n.clone()))?;
            sans.push(SanType::DnsName(name));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Highrise");
        dn.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + SERVER_VALIDITY;
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let cert = params.signed_by(&key, &self.issuer, &self.key).map_err(CaError::Sign)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_read_back_signs_like_the_one_made() {
        let ca = Ca::generate().unwrap();
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        // The same subject and key: what a verifier matches a leaf's issuer against.
        assert_eq!(
            again.issuer.params().distinguished_name,
            ca.issuer.params().distinguished_name
        );
        assert_eq!(again.key.public_key_der(), ca.key.public_key_der());
        let leaf = again.issue_server(&["*.localhost".into(), "localhost".into()]).unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let ca = Ca::generate().unwrap();
        assert!(matches!(
            Ca::from_pem(ca.cert_pem(), "not a key"),
            Err(CaError::BadKey(_))
        ));
        assert!(matches!(
            Ca::from_pem("nothing", &ca.key_pem()),
            Err(CaError::BadCertificate)
        ));
        assert!(matches!(
            ca.issue_server(&["bäd.localhost".into()]),
            Err(CaError::BadName(_))
        ));
    }
}
