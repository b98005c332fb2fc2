//! Pins from files, for `pinproxy pin FILE...`: certificates, and also
//! public keys, private keys and certificate requests (PEM or DER) — a
//! backup pin is usually a key held in reserve with no certificate yet.
//!
//! Every pin is the SHA-256 of the key's DER `SubjectPublicKeyInfo`, as
//! `openssl pkey -pubout -outform der | openssl dgst -sha256` computes it:
//! public keys are hashed as they are (PKCS#1 `RSA PUBLIC KEY` wrapped into
//! an SPKI first), private keys through the public key rustls' crypto
//! provider derives from them (RSA PKCS#1/PKCS#8, EC SEC1/PKCS#8, Ed25519),
//! CSRs through the key they carry.

use std::path::Path;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::FromDer;

use super::cert::CertInfo;
use crate::policy::pemfile;
use crate::policy::pin::Pin;

/// One pinnable thing found in a file: its pin and the line `pin` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pin: Pin,
    pub line: String,
}

/// Why a file yielded no pin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
}

/// What a PEM block or a DER file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Certificate,
    PublicKey,
    RsaPublicKey,
    PrivateKey,
    Csr,
}

impl Kind {
    fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "CERTIFICATE" | "TRUSTED CERTIFICATE" => Kind::Certificate,
            "PUBLIC KEY" => Kind::PublicKey,
            "RSA PUBLIC KEY" => Kind::RsaPublicKey,
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => Kind::PrivateKey,
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Kind::Csr,
            _ => return None,
        })
    }
}

/// Reads every certificate, key and CSR in a PEM file, or the one thing a
/// DER file holds.
pub fn read(path: &Path, provider: &CryptoProvider) -> Result<Vec<Found>, Error> {
    let shown = path.display().to_string();
    let parse_err = |detail: String| Error::Parse {
        path: shown.clone(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return der(&bytes, provider).map(|f| vec![f]).map_err(parse_err);
    }
    let blocks = pem::parse_many(&bytes).map_err(|e| parse_err(pemfile::describe_pem_crate(&e)))?;
    let mut found = Vec::new();
    for block in &blocks {
        let Some(kind) = Kind::from_label(block.tag()) else {
            continue;
        };
        let item = one(kind, block.tag(), block.contents(), provider)
            .map_err(|e| parse_err(format!("{}: {e}", block.tag())))?;
        found.push(item);
    }
    if found.is_empty() {
        return Err(parse_err(
            "no CERTIFICATE, PUBLIC KEY, PRIVATE KEY or CERTIFICATE REQUEST block".into(),
        ));
    }
    Ok(found)
}

/// A DER file: a certificate, a CSR, an SPKI, a PKCS#1 RSA public key or a
/// private key, whichever it parses as.
fn der(bytes: &[u8], provider: &CryptoProvider) -> Result<Found, String> {
    if x509_parser::parse_x509_certificate(bytes).is_ok() {
        return one(Kind::Certificate, "DER certificate", bytes, provider);
    }
    if x509_parser::certification_request::X509CertificationRequest::from_der(bytes).is_ok() {
        return one(Kind::Csr, "DER certificate request", bytes, provider);
    }
    if x509_parser::x509::SubjectPublicKeyInfo::from_der(bytes).is_ok() {
        return one(Kind::PublicKey, "DER public key", bytes, provider);
    }
    if PrivateKeyDer::try_from(bytes).is_ok() {
        return one(Kind::PrivateKey, "DER private key", bytes, provider);
    }
    if rsa_public_key(bytes).is_some() {
        return one(Kind::RsaPublicKey, "DER RSA public key", bytes, provider);
    }
    Err("not a certificate, public key, private key or certificate request (DER)".into())
}

fn one(kind: Kind, label: &str, der: &[u8], provider: &CryptoProvider) -> Result<Found, String> {
    let (spki, what) = match kind {
        Kind::Certificate => {
            let info = CertInfo::from_der(der).map_err(|e| e.to_string())?;
            let pin = Pin::of_certificate(&CertificateDer::from(der.to_vec()))
                .map_err(|e| e.to_string())?;
            return Ok(Found {
                pin,
                line: info.line(),
            });
        }
        Kind::Csr => {
            let (_, csr) =
                x509_parser::certification_request::X509CertificationRequest::from_der(der)
                    .map_err(|e| format!("not a certificate request: {e}"))?;
            let info = &csr.certification_request_info;
            (
                info.subject_pki.raw.to_vec(),
                format!("certificate request subject={:?}", info.subject.to_string()),
            )
        }
        Kind::PublicKey => (der.to_vec(), format!("public key ({label})")),
        Kind::RsaPublicKey => (
            rsa_public_key(der).ok_or("not a PKCS#1 RSAPublicKey")?,
            format!("public key ({label})"),
        ),
        Kind::PrivateKey => {
            let key = PrivateKeyDer::try_from(der.to_vec())
                .map_err(|e| format!("not a private key: {e}"))?;
            let signing = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| format!("unsupported private key: {e}"))?;
            let spki = signing
                .public_key()
                .ok_or("cannot derive the public key of this private key")?;
            (
                spki.as_ref().to_vec(),
                format!("public key of the private key ({label}); a key held in reserve pins before it has a certificate"),
            )
        }
    };
    let algorithm = algorithm(&spki);
    Ok(Found {
        pin: Pin::of_spki_der(&spki),
        line: format!("{}  {what}, {algorithm}", Pin::of_spki_der(&spki)),
    })
}

/// The key algorithm an SPKI names, for people.
fn algorithm(spki: &[u8]) -> String {
    let Ok((_, info)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki) else {
        return "unknown algorithm".into();
    };
    let oid = info.algorithm.algorithm.to_id_string();
    let curve = info
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match (oid.as_str(), curve.as_deref()) {
        ("1.2.840.113549.1.1.1", _) => "RSA".into(),
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => "EC P-256".into(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => "EC P-384".into(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => "EC P-521".into(),
        ("1.3.101.112", _) => "Ed25519".into(),
        (other, _) => format!("algorithm {other}"),
    }
}

/// A PKCS#1 `RSAPublicKey` wrapped into the SPKI openssl hashes:
/// SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { key } }.
fn rsa_public_key(der: &[u8]) -> Option<Vec<u8>> {
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    use x509_parser::der_parser::ber::BerObjectContent;
    let (rest, seq) = x509_parser::der_parser::der::parse_der_sequence(der).ok()?;
    let items = seq.as_sequence().ok()?;
    let integers = items
        .iter()
        .all(|i| matches!(i.content, BerObjectContent::Integer(_)));
    if !rest.is_empty() || items.len() != 2 || !integers {
        return None;
    }
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(der);
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend(tlv(0x03, &bits));
    Some(tlv(0x30, &body))
}

/// A DER tag-length-value.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}
