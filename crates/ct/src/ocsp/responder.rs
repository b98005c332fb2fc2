//! Who signed an OCSP response, and whether they may (RFC 6960 §4.2.2.2):
//! the issuer itself, or a delegated responder the issuer certified for
//! OCSP signing. A CA's other certificates, or a responder certified by
//! another CA, may not speak for the issuer's certificates.

use std::fmt;

use der::{Decode, Encode};
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::Certificate;
use x509_ocsp::{BasicOcspResponse, ResponderId};

use super::OcspError;
use crate::cert::{spki_key_bits, Issuer, Signed};
use crate::key::PublicKey;
use crate::oid;
use crate::time::Instant;

/// Who signed a response that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    Issuer,
    /// A delegated responder; its subject as text.
    Delegated {
        subject: String,
    },
}

/// Why the signer may not speak for the issuer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ResponderError {
    #[error("the ResponderID names neither the issuer nor a certificate in the response")]
    NotFound,
    #[error("the responder certificate {subject} was not issued by the leaf's issuer")]
    NotIssuedByIssuer { subject: String },
    #[error("the responder certificate {subject} lacks the id-kp-OCSPSigning extended key usage")]
    NoOcspSigning { subject: String },
    #[error("the responder certificate {subject} is not valid now")]
    Expired { subject: String },
    #[error("the responder certificate {subject} cannot be read: {reason}")]
    Unreadable { subject: String, reason: String },
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Issuer => f.write_str("the issuer"),
            Signer::Delegated { subject } => write!(f, "delegated responder {subject}"),
        }
    }
}

/// Verifies the response's signature over `tbs` and that its signer is
/// authorised.
pub(super) fn verify(
    basic: &BasicOcspResponse,
    tbs: &[u8],
    issuer: &Issuer,
    now: Instant,
) -> Result<Signer, OcspError> {
    let signature = basic
        .signature
        .as_bytes()
        .ok_or(OcspError::Der("signature has unused bits".into()))?;
    let id = &basic.tbs_response_data.responder_id;
    let issuer_bits = issuer
        .public_key_bits()
        .map_err(|e| OcspError::Issuer(e.to_string()))?;
    if names(id, issuer.subject_der(), &issuer_bits) {
        issuer
            .key()
            .verify_x509(&basic.signature_algorithm, tbs, signature)
            .map_err(OcspError::Signature)?;
        return Ok(Signer::Issuer);
    }
    let certs = basic.certs.as_deref().unwrap_or_default();
    let mut last = ResponderError::NotFound;
    for cert in certs {
        match delegated_key(cert, id, issuer, now) {
            Ok(Some((key, subject))) => {
                key.verify_x509(&basic.signature_algorithm, tbs, signature)
                    .map_err(OcspError::Signature)?;
                return Ok(Signer::Delegated { subject });
            }
            Ok(None) => {}
            Err(e) => last = e,
        }
    }
    Err(last.into())
}

/// `Ok(None)`: `cert` is not the one the ResponderID names. `Ok(Some)`:
/// it is, and the issuer authorised it; its key and subject.
fn delegated_key(
    cert: &Certificate,
    id: &ResponderId,
    issuer: &Issuer,
    now: Instant,
) -> Result<Option<(PublicKey, String)>, ResponderError> {
    let tbs = &cert.tbs_certificate;
    let subject = tbs.subject.to_string();
    let unreadable = |reason: String| ResponderError::Unreadable {
        subject: subject.clone(),
        reason,
    };
    let subject_der = tbs
        .subject
        .to_der()
        .map_err(|e| unreadable(e.to_string()))?;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| unreadable(e.to_string()))?;
    let bits = spki_key_bits(&spki).map_err(|e| unreadable(e.to_string()))?;
    if !names(id, &subject_der, &bits) {
        return Ok(None);
    }
    // Its own bytes, to check the issuer's signature on them.
    let der = cert.to_der().map_err(|e| unreadable(e.to_string()))?;
    let signed =
        Signed::parse("the responder certificate", &der).map_err(|e| unreadable(e.to_string()))?;
    let issued_by_issuer = tbs.issuer.to_der().is_ok_and(|n| n == issuer.subject_der())
        && signed.verify_signed_by(issuer.key()).is_ok();
    if !issued_by_issuer {
        return Err(ResponderError::NotIssuedByIssuer { subject });
    }
    if !has_ocsp_signing(cert) {
        return Err(ResponderError::NoOcspSigning { subject });
    }
    if !signed.valid_at(now) {
        return Err(ResponderError::Expired { subject });
    }
    let key = PublicKey::from_spki_der(&spki).map_err(|e| unreadable(e.to_string()))?;
    Ok(Some((key, subject)))
}

/// Whether the ResponderID names the holder of `subject_der` / key `bits`:
/// byName compares the DER Name, byKey the SHA-1 of the key's bits.
fn names(id: &ResponderId, subject_der: &[u8], bits: &[u8]) -> bool {
    match id {
        ResponderId::ByName(name) => name.to_der().is_ok_and(|n| n == subject_der),
        ResponderId::ByKey(hash) => {
            let h = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bits);
            hash.as_bytes() == h.as_ref()
        }
    }
}

fn has_ocsp_signing(cert: &Certificate) -> bool {
    let Some(exts) = cert.tbs_certificate.extensions.as_ref() else {
        return false;
    };
    exts.iter()
        .filter(|e| e.extn_id == oid::EXT_KEY_USAGE)
        .filter_map(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .any(|eku| eku.0.contains(&oid::KP_OCSP_SIGNING))
}
