//! The two certificates every check here is about: the server's leaf and
//! its issuer, read with RustCrypto's `x509-cert`.
//!
//! The precertificate TBS an embedded SCT signs (RFC 6962 §3.2) is rebuilt
//! by decoding the leaf's TBSCertificate, dropping the SCT list extension
//! and re-encoding it as DER — the way Go's `ctutil`/`x509util`
//! `BuildPrecertTBS` does, never by cutting bytes. A precertificate issued
//! by a Precertificate Signing Certificate carries that certificate's
//! issuer and authority key id, but RFC 6962 §3.2 has the log sign a TBS
//! whose issuer and AKI are changed back to the final issuer's: rebuilding
//! from the final certificate gives those same bytes, so the case needs no
//! code here — only `issuer_key_hash`, which is always the final issuer's.
//!
//! Certificates are read with `x509-cert`'s `Raw` profile, not its RFC 5280
//! one: webpki accepts a serial longer than 20 octets (as browsers do), and
//! a leaf the verifier trusts but these checks could not read would skip
//! must-staple and revocation. `Raw` relaxes only the serial's length.

use der::asn1::{ObjectIdentifier as Oid, OctetStringRef};
use der::{Decode, Encode, Reader, SliceReader};
use rustls_pki_types::UnixTime;
use x509_cert::certificate::{CertificateInner, Raw};
use x509_cert::ext::Extension;

use crate::key::{KeyError, PublicKey, SignatureError};
use crate::oid;
use crate::time::Instant;

/// A certificate as these checks read it: any serial length (see the
/// module doc).
pub(crate) type Certificate = CertificateInner<Raw>;

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CertError {
    #[error("{which} is not a DER X.509 certificate: {reason}")]
    Der { which: &'static str, reason: String },
    #[error("{which}: the extension {oid} appears more than once")]
    DuplicateExtension { which: &'static str, oid: String },
    #[error("the SCT list extension is not an OCTET STRING in an OCTET STRING")]
    SctExtension,
    #[error("issuer key: {0}")]
    IssuerKey(#[from] KeyError),
}

/// The server's certificate, parsed once for every check.
#[derive(Clone, Debug)]
pub struct Leaf {
    der: Vec<u8>,
    cert: Certificate,
}

/// The leaf's issuer: its subject name and key are all the checks need, so
/// a trust anchor (which has no certificate) can be one too.
#[derive(Clone, Debug)]
pub struct Issuer {
    /// The DER Name, SEQUENCE tag included.
    subject: Vec<u8>,
    /// The DER SubjectPublicKeyInfo, SEQUENCE tag included.
    spki: Vec<u8>,
    key: PublicKey,
}

// === impl Leaf ===

impl Leaf {
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let cert = parse_cert("the leaf", der)?;
        Ok(Self {
            der: der.to_vec(),
            cert,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn not_before(&self) -> UnixTime {
        UnixTime::since_unix_epoch(
            self.cert
                .tbs_certificate
                .validity
                .not_before
                .to_unix_duration(),
        )
    }

    pub fn not_after(&self) -> UnixTime {
        UnixTime::since_unix_epoch(
            self.cert
                .tbs_certificate
                .validity
                .not_after
                .to_unix_duration(),
        )
    }

    /// notAfter − notBefore, as Chromium computes a certificate's lifetime
    /// for the CT policy's table.
    pub fn lifetime(&self) -> std::time::Duration {
        let v = &self.cert.tbs_certificate.validity;
        v.not_after
            .to_unix_duration()
            .saturating_sub(v.not_before.to_unix_duration())
    }

    /// The serial number's content octets, as an OCSP CertID carries them.
    pub fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }

    /// The DER issuer Name, as an OCSP CertID hashes it.
    pub(crate) fn issuer_name_der(&self) -> Result<Vec<u8>, CertError> {
        self.cert
            .tbs_certificate
            .issuer
            .to_der()
            .map_err(|e| der_error("the leaf", e))
    }

    /// RFC 7633 must-staple: a TLS Feature extension listing
    /// status_request (5). An extension that cannot be read counts as
    /// must-staple: the CA asked for something, and refusing is the safe
    /// reading.
    pub fn must_staple(&self) -> bool {
        let Some(ext) = self.extension(oid::TLS_FEATURE) else {
            return false;
        };
        match Vec::<u64>::from_der(ext.extn_value.as_bytes()) {
            Ok(features) => features.contains(&5),
            Err(_) => true,
        }
    }

    /// The TLS-encoded SignedCertificateTimestampList of the embedded SCT
    /// extension, if there is one.
    pub(crate) fn embedded_sct_list(&self) -> Result<Option<Vec<u8>>, CertError> {
        self.check_unique(oid::CT_PRECERT_SCTS)?;
        match self.extension(oid::CT_PRECERT_SCTS) {
            None => Ok(None),
            Some(ext) => inner_octets(ext.extn_value.as_bytes()).map(Some),
        }
    }

    /// The TBSCertificate of the precertificate the embedded SCTs were
    /// issued for: this certificate's, without the SCT list extension.
    pub(crate) fn precert_tbs(&self) -> Result<Vec<u8>, CertError> {
        let mut tbs = self.cert.tbs_certificate.clone();
        if let Some(exts) = tbs.extensions.as_mut() {
            exts.retain(|e| e.extn_id != oid::CT_PRECERT_SCTS);
            // An empty extensions field is omitted in DER, as Go's
            // `BuildPrecertTBS` omits it.
            if exts.is_empty() {
                tbs.extensions = None;
            }
        }
        tbs.to_der().map_err(|e| der_error("the leaf", e))
    }

    fn extension(&self, id: Oid) -> Option<&Extension> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == id)
    }

    fn check_unique(&self, id: Oid) -> Result<(), CertError> {
        let n = self
            .cert
            .tbs_certificate
            .extensions
            .as_ref()
            .map_or(0, |exts| exts.iter().filter(|e| e.extn_id == id).count());
        if n > 1 {
            return Err(CertError::DuplicateExtension {
                which: "the leaf",
                oid: id.to_string(),
            });
        }
        Ok(())
    }
}

// === impl Issuer ===

impl Issuer {
    /// From the issuing CA's certificate (the second certificate of the
    /// validated path).
    pub fn from_cert_der(der: &[u8]) -> Result<Self, CertError> {
        let cert = parse_cert("the issuer", der)?;
        let tbs = &cert.tbs_certificate;
        let subject = tbs
            .subject
            .to_der()
            .map_err(|e| der_error("the issuer", e))?;
        let spki = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|e| der_error("the issuer", e))?;
        Self::from_subject_and_spki(&subject, &spki)
    }

    /// From a trust anchor's subject and SubjectPublicKeyInfo, both as
    /// complete DER (webpki's `TrustAnchor` stores them without their outer
    /// SEQUENCE: add it back first).
    pub fn from_subject_and_spki(subject_der: &[u8], spki_der: &[u8]) -> Result<Self, CertError> {
        let key = PublicKey::from_spki_der(spki_der)?;
        Ok(Self {
            subject: subject_der.to_vec(),
            spki: spki_der.to_vec(),
            key,
        })
    }

    pub(crate) fn subject_der(&self) -> &[u8] {
        &self.subject
    }

    pub(crate) fn key(&self) -> &PublicKey {
        &self.key
    }

    /// RFC 6962's `issuer_key_hash`: SHA-256 of the whole DER SPKI.
    pub(crate) fn spki_sha256(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.spki);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The subjectPublicKey BIT STRING's contents, which an OCSP CertID
    /// and a byKey ResponderID hash (RFC 6960 §4.1.1, §4.2.1).
    pub(crate) fn public_key_bits(&self) -> Result<Vec<u8>, CertError> {
        spki_key_bits(&self.spki)
    }
}

/// Whether the DER of a certificate that could not be parsed contains the
/// TLS Feature extension's OID anywhere. Such a leaf may be must-staple:
/// a caller that cannot read it refuses it rather than skip the rule
/// (a false match only refuses a certificate nothing here can read).
pub fn mentions_tls_feature(der: &[u8]) -> bool {
    // OBJECT IDENTIFIER, length 8, 1.3.6.1.5.5.7.1.24.
    const TLS_FEATURE_DER: [u8; 10] = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x18];
    der.windows(TLS_FEATURE_DER.len())
        .any(|w| w == TLS_FEATURE_DER)
}

/// A parsed certificate together with the exact bytes its signature covers.
pub(crate) struct Signed {
    pub cert: Certificate,
    pub tbs: Vec<u8>,
}

impl Signed {
    pub fn parse(which: &'static str, der: &[u8]) -> Result<Self, CertError> {
        let tbs = first_element(der)
            .map_err(|e| der_error(which, e))?
            .to_vec();
        let cert = parse_cert(which, der)?;
        Ok(Self { cert, tbs })
    }

    /// Checks that `signer` signed this certificate.
    pub fn verify_signed_by(&self, signer: &PublicKey) -> Result<(), SignatureError> {
        let sig = self
            .cert
            .signature
            .as_bytes()
            .ok_or(SignatureError::Invalid)?;
        signer.verify_x509(&self.cert.signature_algorithm, &self.tbs, sig)
    }

    pub fn valid_at(&self, now: Instant) -> bool {
        let v = &self.cert.tbs_certificate.validity;
        let from = Instant::from_unix_duration(v.not_before.to_unix_duration());
        let until = Instant::from_unix_duration(v.not_after.to_unix_duration());
        from <= now && now <= until
    }
}

/// The raw bytes of the first element inside a DER SEQUENCE: the signed
/// part of a certificate or a BasicOCSPResponse, exactly as it was signed.
pub(crate) fn first_element(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    reader.sequence(|r| {
        let first = r.tlv_bytes()?;
        // The rest is read by the typed decoder; skip it here.
        while !r.is_finished() {
            r.tlv_bytes()?;
        }
        Ok(first)
    })
}

pub(crate) fn spki_key_bits(spki: &[u8]) -> Result<Vec<u8>, CertError> {
    let info = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(spki)
        .map_err(|e| der_error("a key", e))?;
    Ok(info.subject_public_key.raw_bytes().to_vec())
}

/// An SCT list extension's value: an OCTET STRING (the extnValue) holding
/// a DER OCTET STRING holding the TLS-encoded list (RFC 6962 §3.3).
pub(crate) fn inner_octets(extn_value: &[u8]) -> Result<Vec<u8>, CertError> {
    OctetStringRef::from_der(extn_value)
        .map(|o| o.as_bytes().to_vec())
        .map_err(|_| CertError::SctExtension)
}

fn parse_cert(which: &'static str, der: &[u8]) -> Result<Certificate, CertError> {
    Certificate::from_der(der).map_err(|e| der_error(which, e))
}

fn der_error(which: &'static str, e: der::Error) -> CertError {
    CertError::Der {
        which,
        reason: e.to_string(),
    }
}
