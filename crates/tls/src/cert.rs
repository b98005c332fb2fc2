//! Human-readable certificate summaries, shared by `pinproxy pin`,
//! `check --live` and the admin `/pins` drift view.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Serialize;

use pinproxy_policy::comment;
use pinproxy_policy::pin::Pin;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    pub pin: String,
    pub subject: String,
    pub issuer: String,
    /// RFC 3339.
    pub not_after: String,
    pub not_after_unix: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("not an X.509 certificate: {0}")]
    X509(String),
}

// === impl CertInfo ===

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| Error::X509(e.to_string()))?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        let not_after = cert.validity().not_after;
        Ok(Self {
            pin: Pin::of_spki_der(spki).to_string(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: not_after
                .to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| not_after.to_string()),
            not_after_unix: not_after.timestamp(),
        })
    }

    /// `sha256/… subject=… issuer=… notAfter=…`: the `pin` command's line.
    pub fn line(&self) -> String {
        format!(
            "{}  subject={:?} issuer={:?} notAfter={}",
            self.pin, self.subject, self.issuer, self.not_after
        )
    }
}

/// The subject of a trust anchor, for people. webpki keeps only the
/// Name's contents; the SEQUENCE header is rebuilt to parse it.
pub fn anchor_subject(anchor: &rustls_pki_types::TrustAnchor<'_>) -> String {
    use x509_parser::prelude::FromDer;
    let der = der_sequence(anchor.subject.as_ref());
    match x509_parser::x509::X509Name::from_der(&der) {
        Ok((_, name)) => name.to_string(),
        Err(_) => "<unparseable trust anchor name>".into(),
    }
}

/// `contents` inside a DER SEQUENCE: webpki's trust anchors keep their
/// subject and SubjectPublicKeyInfo without the outer SEQUENCE, which a
/// DER parser, a pin or an SCT's issuer key hash needs back.
pub fn der_sequence(contents: &[u8]) -> Vec<u8> {
    let mut der = Vec::with_capacity(contents.len() + 6);
    der.push(0x30);
    let len = contents.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        der.push(0x80 | (4 - skip) as u8);
        der.extend_from_slice(&bytes[skip..]);
    }
    der.extend_from_slice(contents);
    der
}

/// Reads every certificate in a PEM or DER file of at most
/// [`DEFAULT_MAX_FILE_BYTES`](pinproxy_policy::load::DEFAULT_MAX_FILE_BYTES).
pub fn read_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let max = pinproxy_policy::load::DEFAULT_MAX_FILE_BYTES;
    let bytes = pinproxy_policy::load::read_capped(std::path::Path::new(path), max)
        .map_err(|source| Error::Read {
            path: path.to_string(),
            source,
        })?
        .ok_or_else(|| Error::Parse {
            path: path.to_string(),
            detail: format!("larger than the {max}-byte limit; not read"),
        })?;
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        let certs = certs.map_err(|e| Error::Parse {
            path: path.to_string(),
            detail: pinproxy_policy::pemfile::describe(&e),
        })?;
        if certs.is_empty() {
            return Err(Error::Parse {
                path: path.to_string(),
                detail: "no CERTIFICATE block in PEM file".into(),
            });
        }
        return Ok(certs);
    }
    Ok(vec![CertificateDer::from(bytes)])
}

/// A pinset snippet for `host`, ready to paste under `hosts:`.
pub fn yaml_snippet(host: &str, chain: &[CertInfo]) -> String {
    let mut s = format!("  {}:\n    pins:\n", yaml_key(host));
    for (i, c) in chain.iter().enumerate() {
        let role = match i {
            0 => "leaf",
            _ if i + 1 == chain.len() && chain.len() > 1 => "root / top of chain",
            _ => "intermediate",
        };
        s.push_str(&format!(
            "      - {}  # {role}: {}\n",
            c.pin,
            comment::escape(&c.subject)
        ));
    }
    s.push_str("      # add a backup pin: a key you hold in reserve, or your next CA's key\n");
    s
}

fn yaml_key(host: &str) -> String {
    if host.starts_with('*') || host.contains(':') {
        comment::double_quoted(host)
    } else {
        host.to_string()
    }
}
