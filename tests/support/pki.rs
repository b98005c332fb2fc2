//! A PKI made with rcgen: roots, intermediates and leaves a test signs.

use super::*;

pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn pin(&self) -> Pin {
        Pin::of_certificate(self.cert.der()).unwrap()
    }

    pub fn key_copy(&self) -> KeyPair {
        KeyPair::from_pem(&self.key.serialize_pem()).unwrap()
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pinproxy tests");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365);
    p
}

pub fn root(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(cn).self_signed(&key).unwrap();
    Ca { cert, key }
}

/// An intermediate CA named `cn` with its own (or the given) key.
pub fn intermediate(cn: &str, issuer: &Ca, key: Option<KeyPair>) -> Ca {
    let key = key.unwrap_or_else(|| KeyPair::generate().unwrap());
    let cert = ca_params(cn)
        .signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap();
    Ca { cert, key }
}

pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub key: KeyPair,
}

impl Leaf {
    pub fn pin(&self) -> Pin {
        Pin::of_certificate(&self.cert).unwrap()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

pub struct LeafOpts {
    pub expired: bool,
}

pub fn leaf(names: &[&str], issuer: &Ca) -> Leaf {
    leaf_with(names, issuer, LeafOpts { expired: false }, None)
}

pub fn leaf_with(names: &[&str], issuer: &Ca, opts: LeafOpts, key: Option<KeyPair>) -> Leaf {
    let key = key.unwrap_or_else(|| KeyPair::generate().unwrap());
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(names[0]);
    p.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).to_string().try_into().unwrap()),
        })
        .collect();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    if opts.expired {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(90);
    }
    let cert = p.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
    Leaf {
        cert: cert.der().clone(),
        key,
    }
}

/// A normal PKI: root → intermediate → leaf for `names`.
pub struct Pki {
    pub root: Ca,
    pub int: Ca,
    pub leaf: Leaf,
}

impl Pki {
    pub fn new(names: &[&str]) -> Self {
        let root = root("Test Root");
        let int = intermediate("Test Intermediate", &root, None);
        let leaf = leaf(names, &int);
        Self { root, int, leaf }
    }

    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.leaf.cert.clone(), self.int.der()]
    }
}
