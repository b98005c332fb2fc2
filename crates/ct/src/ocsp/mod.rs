//! Stapled OCSP responses (RFC 6960), as a TLS server sends them in the
//! handshake and rustls hands them to `verify_server_cert`.
//!
//! A staple is `good` only when all of this holds:
//! - it is a successful `id-pkix-ocsp-basic` response that parses;
//! - one of its SingleResponses has the leaf's CertID: issuer name hash,
//!   issuer key hash and serial, with SHA-1 or SHA-256 (when several do,
//!   a `revoked` one is judged, else a `good` one);
//! - it is signed by the issuer, or by a delegated responder whose
//!   certificate is in the response, names the issuer as its issuer, is
//!   signed by the issuer's key, carries id-kp-OCSPSigning and is valid
//!   now (RFC 6960 §4.2.2.2); the ResponderID names that signer;
//! - thisUpdate is not later than now plus [`CLOCK_SKEW`], and now is
//!   before nextUpdate — the rule the CRL checks use (rustls-webpki's
//!   `ExpirationPolicy::Enforce`: a CRL is expired when now ≥ nextUpdate,
//!   with no tolerance); without a nextUpdate, within 7 days of thisUpdate
//!   (Chromium's maximum OCSP response age);
//! - the status is good.
//!
//! A response that passes every check but the time window and says
//! `revoked` is `revoked` all the same — revocation is not undone by a
//! response growing old (mozilla::pkix does the same).
//!
//! Parsing is RustCrypto's `x509-ocsp` and `der`; the signed bytes are
//! taken from the response as received, not re-encoded.

mod responder;

use std::fmt;
use std::time::Duration;

use der::Decode;
use rustls_pki_types::UnixTime;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, SingleResponse};

use crate::cert::{self, inner_octets, Issuer, Leaf};
use crate::key::SignatureError;
use crate::oid;
use crate::time::{Instant, CLOCK_SKEW};

pub use responder::{ResponderError, Signer};

/// How long a response without nextUpdate is trusted after thisUpdate
/// (Chromium's `kMaxOCSPResponseAge`).
pub const MAX_AGE_WITHOUT_NEXT_UPDATE: Duration = Duration::from_secs(7 * 86_400);

/// The staple's verdict: the `result` label of
/// `pinproxy_ocsp_staples_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StapleVerdict {
    Good,
    Revoked,
    /// Present but not usable: see [`StapleReport::problem`].
    Invalid,
    /// The server stapled nothing.
    Absent,
}

/// A refusal a staple calls for (rows `revoked` and `ocsp-required` of the
/// refusal table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A valid staple says the leaf is revoked.
    Revoked,
    /// The leaf is must-staple and no valid staple came with it.
    OcspRequired,
}

/// Why a staple is `invalid`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OcspError {
    #[error("not a DER OCSP response: {0}")]
    Der(String),
    #[error("the responder answered {0:?}, not successful")]
    Status(OcspResponseStatus),
    #[error("the response type {0} is not id-pkix-ocsp-basic")]
    NotBasic(String),
    #[error("no response in it is for this certificate (CertID: issuer name hash, issuer key hash, serial)")]
    NotForThisCertificate,
    #[error("the issuer: {0}")]
    Issuer(String),
    #[error("signed by an unauthorised responder: {0}")]
    Responder(#[from] ResponderError),
    #[error("its signature: {0}")]
    Signature(SignatureError),
    #[error("its thisUpdate {0} is in the future")]
    NotYetValid(Instant),
    #[error("it expired at {0}")]
    Expired(Instant),
    #[error("the responder does not know this certificate (status unknown)")]
    UnknownStatus,
}

/// What was found in a staple.
#[derive(Clone, Debug)]
pub struct StapleReport {
    verdict: StapleVerdict,
    problem: Option<OcspError>,
    signer: Option<Signer>,
    this_update: Option<Instant>,
    next_update: Option<Instant>,
    revoked_at: Option<Instant>,
    sct_list: Option<Vec<u8>>,
}

// === impl StapleVerdict ===

impl StapleVerdict {
    pub const ALL: [StapleVerdict; 4] = [
        StapleVerdict::Good,
        StapleVerdict::Revoked,
        StapleVerdict::Invalid,
        StapleVerdict::Absent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StapleVerdict::Good => "good",
            StapleVerdict::Revoked => "revoked",
            StapleVerdict::Invalid => "invalid",
            StapleVerdict::Absent => "absent",
        }
    }
}

impl Refusal {
    /// The refusal reason's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Revoked => "revoked",
            Refusal::OcspRequired => "ocsp-required",
        }
    }
}

// === impl StapleReport ===

impl StapleReport {
    pub fn verdict(&self) -> StapleVerdict {
        self.verdict
    }

    /// Why the staple is `invalid` (`None` otherwise).
    pub fn problem(&self) -> Option<&OcspError> {
        self.problem.as_ref()
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    pub fn this_update(&self) -> Option<UnixTime> {
        self.this_update.map(Instant::as_unix)
    }

    pub fn next_update(&self) -> Option<UnixTime> {
        self.next_update.map(Instant::as_unix)
    }

    pub fn revoked_at(&self) -> Option<UnixTime> {
        self.revoked_at.map(Instant::as_unix)
    }

    /// The SCT list (TLS-encoded) in the leaf's SingleResponse, for
    /// [`crate::policy::Delivered::ocsp`]. Given whenever the response names
    /// the leaf: each SCT's own signature covers the leaf, so it does not
    /// depend on the response's signature.
    pub fn sct_list(&self) -> Option<&[u8]> {
        self.sct_list.as_deref()
    }

    /// The refusal this staple calls for, if any: `revoked` whenever a
    /// valid staple says so; `ocsp-required` for a must-staple leaf without
    /// a good staple. An invalid staple for a leaf that is not must-staple
    /// refuses nothing (soft-fail, as browsers do).
    pub fn refusal(&self, must_staple: bool) -> Option<Refusal> {
        match self.verdict {
            StapleVerdict::Revoked => Some(Refusal::Revoked),
            StapleVerdict::Good => None,
            StapleVerdict::Invalid | StapleVerdict::Absent if must_staple => {
                Some(Refusal::OcspRequired)
            }
            StapleVerdict::Invalid | StapleVerdict::Absent => None,
        }
    }

    fn new(verdict: StapleVerdict) -> Self {
        StapleReport {
            verdict,
            problem: None,
            signer: None,
            this_update: None,
            next_update: None,
            revoked_at: None,
            sct_list: None,
        }
    }

    fn invalid(mut self, problem: OcspError) -> Self {
        self.verdict = StapleVerdict::Invalid;
        self.problem = Some(problem);
        self
    }
}

/// Checks the staple `response` (rustls passes an empty slice when there
/// is none) for `leaf`, issued by `issuer`, at `now`.
pub fn check_staple(
    leaf: &Leaf,
    issuer: &Issuer,
    response: Option<&[u8]>,
    now: UnixTime,
) -> StapleReport {
    match response {
        None | Some([]) => StapleReport::new(StapleVerdict::Absent),
        Some(bytes) => check_bytes(leaf, issuer, bytes, Instant::from_unix(now)),
    }
}

fn check_bytes(leaf: &Leaf, issuer: &Issuer, bytes: &[u8], now: Instant) -> StapleReport {
    let report = StapleReport::new(StapleVerdict::Invalid);
    let (basic, tbs) = match unwrap_basic(bytes) {
        Ok(v) => v,
        Err(e) => return report.invalid(e),
    };
    let single = match find_single(&basic, leaf, issuer) {
        Ok(s) => s,
        Err(e) => return report.invalid(e),
    };
    let mut report = StapleReport {
        this_update: Some(Instant::from_unix_duration(
            single.this_update.0.to_unix_duration(),
        )),
        next_update: single
            .next_update
            .map(|t| Instant::from_unix_duration(t.0.to_unix_duration())),
        sct_list: sct_list_of(single),
        ..report
    };
    match responder::verify(&basic, &tbs, issuer, now) {
        Ok(signer) => report.signer = Some(signer),
        Err(e) => return report.invalid(e),
    }
    judge(report, single, now)
}

/// The time window and the status.
fn judge(mut report: StapleReport, single: &SingleResponse, now: Instant) -> StapleReport {
    let this_update = report.this_update.unwrap_or(Instant(0));
    if this_update > now.plus(CLOCK_SKEW) {
        return report.invalid(OcspError::NotYetValid(this_update));
    }
    if let CertStatus::Revoked(info) = &single.cert_status {
        report.verdict = StapleVerdict::Revoked;
        report.revoked_at = Some(Instant::from_unix_duration(
            info.revocation_time.0.to_unix_duration(),
        ));
        return report;
    }
    let expiry = report
        .next_update
        .unwrap_or_else(|| this_update.plus(MAX_AGE_WITHOUT_NEXT_UPDATE));
    if now >= expiry {
        return report.invalid(OcspError::Expired(expiry));
    }
    match single.cert_status {
        CertStatus::Good(_) => {
            report.verdict = StapleVerdict::Good;
            report
        }
        _ => report.invalid(OcspError::UnknownStatus),
    }
}

/// OCSPResponse → BasicOCSPResponse, with the exact bytes its signature
/// covers (tbsResponseData as received).
fn unwrap_basic(bytes: &[u8]) -> Result<(BasicOcspResponse, Vec<u8>), OcspError> {
    let resp = OcspResponse::from_der(bytes).map_err(|e| OcspError::Der(e.to_string()))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Status(resp.response_status));
    }
    let Some(body) = resp.response_bytes else {
        return Err(OcspError::Der(
            "a successful response without responseBytes".into(),
        ));
    };
    if body.response_type != oid::OCSP_BASIC {
        return Err(OcspError::NotBasic(body.response_type.to_string()));
    }
    let basic_der = body.response.as_bytes();
    let basic =
        BasicOcspResponse::from_der(basic_der).map_err(|e| OcspError::Der(e.to_string()))?;
    let tbs = cert::first_element(basic_der)
        .map_err(|e| OcspError::Der(e.to_string()))?
        .to_vec();
    Ok((basic, tbs))
}

/// The SingleResponse for the leaf, among all whose CertID is the leaf's:
/// a `revoked` one if any, else a `good` one, else the first. A response
/// may hold several for one certificate; taking the first would let
/// "good" placed before "revoked" hide the revocation.
fn find_single<'b>(
    basic: &'b BasicOcspResponse,
    leaf: &Leaf,
    issuer: &Issuer,
) -> Result<&'b SingleResponse, OcspError> {
    let issuer_err = |e: cert::CertError| OcspError::Issuer(e.to_string());
    let name = leaf.issuer_name_der().map_err(issuer_err)?;
    let key = issuer.public_key_bits().map_err(issuer_err)?;
    let hashes = |alg: &'static ring::digest::Algorithm| {
        (
            ring::digest::digest(alg, &name),
            ring::digest::digest(alg, &key),
        )
    };
    let sha1 = hashes(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    let sha256 = hashes(&ring::digest::SHA256);
    let mine: Vec<&SingleResponse> = basic
        .tbs_response_data
        .responses
        .iter()
        .filter(|s| {
            let id = &s.cert_id;
            let (n, k) = match id.hash_algorithm.oid {
                oid::SHA1 => &sha1,
                oid::SHA256 => &sha256,
                _ => return false,
            };
            id.issuer_name_hash.as_bytes() == n.as_ref()
                && id.issuer_key_hash.as_bytes() == k.as_ref()
                && id.serial_number.as_bytes() == leaf.serial()
        })
        .collect();
    let revoked = || {
        mine.iter()
            .find(|s| matches!(s.cert_status, CertStatus::Revoked(_)))
    };
    let good = || {
        mine.iter()
            .find(|s| matches!(s.cert_status, CertStatus::Good(_)))
    };
    revoked()
        .or_else(good)
        .or_else(|| mine.first())
        .copied()
        .ok_or(OcspError::NotForThisCertificate)
}

fn sct_list_of(single: &SingleResponse) -> Option<Vec<u8>> {
    let ext = single
        .single_extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid::CT_OCSP_SCTS)?;
    inner_octets(ext.extn_value.as_bytes()).ok()
}

/// "good", "revoked at …", "invalid: why", "absent".
impl fmt::Display for StapleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verdict.as_str())?;
        if let Some(t) = self.revoked_at {
            write!(f, " (since {t})")?;
        }
        if let Some(p) = &self.problem {
            write!(f, ": {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
