//! Certificate Transparency and stapled OCSP on the validated path — the
//! one function the verifier enforces with and `check --live` / `pin
//! --connect` predict with ([`check_path`]), over the pure checks of
//! `pinproxy-ct`.
//!
//! What is judged, in this order:
//!
//! 1. The OCSP response the server stapled (rustls requests one on every
//!    handshake — `status_request` in its ClientHello — and hands it to the
//!    verifier: in TLS 1.2 from the CertificateStatus message, in TLS 1.3
//!    from the leaf's CertificateEntry): `revoked` refuses; a must-staple
//!    leaf (RFC 7633) without a good staple refuses (`ocsp-required`); an
//!    invalid or absent staple for any other leaf is counted only —
//!    soft-fail, as browsers do.
//! 2. The leaf's SCTs — embedded, and those in the staple — under Chrome's
//!    CT policy, when the entry's `ct` is not `off`. Under `enforce` a
//!    leaf that does not comply refuses (`ct-policy`), unless the log list
//!    is 70 days old or older: then `enforce` acts as `report`.
//!
//! A leaf or issuer webpki accepted but these checks cannot read is not
//! waved through: when a staple was sent, the leaf may be must-staple (it
//! names the TLS Feature extension), or CT is enforced, the path is
//! refused (`bad-encoding`) — skipping the checks would let exactly such a
//! certificate past revocation and must-staple.
//!
//! SCTs in the TLS `signed_certificate_timestamp` extension are not
//! seen: rustls 0.23 neither offers the extension nor passes what a server
//! sends to the verifier (docs/reference.md, "Certificate Transparency and
//! OCSP", says what it would take).
//!
//! **Which issuer.** An embedded SCT signs the hash of the issuing CA's
//! key, and an OCSP CertID names the issuer's name and key: both are the
//! leaf's issuer on the *validated* path — the certificate whose key
//! verified the leaf's signature — never a certificate merely sent along.
//! When several paths validate (cross-signs), their first certificates
//! above the leaf may differ in who signed *them*, but each verified the
//! same leaf signature, so they carry the same key and name (a CA key
//! that signs the leaf is the key every path starts with); the path the
//! verdict reports is used.

mod cache;
mod list;

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::{TrustAnchor, UnixTime};

pub use cache::CtCache;
pub use list::{ListError, ListSource, LogListInForce};
pub use pinproxy_ct::cert::{CertError, Issuer, Leaf};
pub use pinproxy_ct::loglist::{Log, LogIssue, LogState, StateKind};
pub use pinproxy_ct::ocsp::{StapleReport, StapleVerdict};
pub use pinproxy_ct::verify::CheckedSct;
use pinproxy_ct::{ocsp, policy};
pub use pinproxy_ct::{
    CtReport, LogId, LogList, LogListError, Verdict, BUILTIN_TIMESTAMP, BUILTIN_VERSION,
};
use pinproxy_policy::CtMode;
use pinproxy_reason::Reason;

use crate::cert::der_sequence;

/// The leaf's issuer on the validated path.
#[derive(Clone, Copy, Debug)]
pub enum IssuerOf<'a> {
    /// The first intermediate of the path (DER).
    Cert(&'a [u8]),
    /// The trust anchor itself issued the leaf.
    Anchor(&'a TrustAnchor<'a>),
}

/// What was found on one validated path.
#[derive(Clone, Debug)]
pub struct PathChecks {
    /// The entry's `ct`.
    pub mode: CtMode,
    /// The log list was 70 days old or older: `enforce` acted as `report`.
    pub stale: bool,
    /// `None` under `ct: off`, or when the certificates could not be read.
    pub ct: Option<Arc<CtReport>>,
    /// The staple's verdict; `None` when the certificates could not be read.
    pub staple: Option<StapleReport>,
    /// The server stapled something (even if it could not be judged).
    pub stapled: bool,
    /// RFC 7633 must-staple; for a leaf that cannot be read, whether it
    /// names the TLS Feature extension at all.
    pub must_staple: bool,
    /// Why the leaf or its issuer could not be read for these checks
    /// (webpki accepted them; the DER parser here is stricter).
    pub unreadable: Option<String>,
    /// The CT verdict came from this generation's cache.
    pub cached: bool,
}

/// A refusal [`check_path`] calls for: wrapped in a rustls
/// `CertificateError::Other`, and mapped back to its reason by
/// [`crate::verify::failure_reason`].
#[derive(Clone, Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "the certificate does not satisfy the Certificate Transparency policy (ct: enforce): {0}"
    )]
    CtPolicy(String),
    #[error("the OCSP response the server stapled says the certificate is revoked: {0}")]
    Revoked(String),
    #[error(
        "the certificate is must-staple (TLS Feature status_request) and the server stapled no \
         valid OCSP response: {0}"
    )]
    OcspRequired(String),
    #[error(
        "the certificate cannot be read for the OCSP and Certificate Transparency checks, which \
         it is subject to (a staple was sent, it may be must-staple, or ct: enforce): {0}"
    )]
    Unreadable(String),
}

impl Refused {
    pub fn reason(&self) -> Reason {
        match self {
            Refused::CtPolicy(_) => Reason::CtPolicy,
            Refused::Revoked(_) => Reason::Revoked,
            Refused::OcspRequired(_) => Reason::OcspRequired,
            Refused::Unreadable(_) => Reason::BadEncoding,
        }
    }
}

/// Checks the staple `ocsp` (empty: none) and, unless `mode` is off, the
/// CT policy for `leaf_der` issued by `issuer`, at `now`. With `cache`,
/// a CT verdict reached within its TTL for the same inputs is reused.
pub fn check_path(
    lists: &LogListInForce,
    mode: CtMode,
    leaf_der: &[u8],
    issuer: IssuerOf<'_>,
    ocsp_response: &[u8],
    now: UnixTime,
    cache: Option<&CtCache>,
) -> PathChecks {
    let stale = lists.is_stale(now);
    let mut out = PathChecks {
        mode,
        stale,
        ct: None,
        staple: None,
        stapled: !ocsp_response.is_empty(),
        must_staple: false,
        unreadable: None,
        cached: false,
    };
    let (leaf, parsed_issuer, issuer_parts) = match read(leaf_der, issuer) {
        Ok(v) => v,
        Err(e) => {
            out.unreadable = Some(e.to_string());
            // Unread, the leaf might still be must-staple.
            out.must_staple = pinproxy_ct::cert::mentions_tls_feature(leaf_der);
            return out;
        }
    };
    out.must_staple = leaf.must_staple();
    let staple = ocsp::check_staple(&leaf, &parsed_issuer, Some(ocsp_response), now);
    if mode != CtMode::Off {
        let delivered = policy::Delivered {
            tls: None,
            ocsp: staple.sct_list(),
        };
        let run = || policy::check(lists.list(), &leaf, &parsed_issuer, delivered, now);
        let (report, cached) = match cache {
            Some(c) => {
                let parts: Vec<&[u8]> = issuer_parts.iter().map(Vec::as_slice).collect();
                c.get_or_check(
                    cache::key(leaf_der, &parts, delivered.ocsp),
                    now.as_secs(),
                    run,
                )
            }
            None => (Arc::new(run()), false),
        };
        out.ct = Some(report);
        out.cached = cached;
    }
    out.staple = Some(staple);
    out
}

/// The leaf and its issuer as the checks read them, and the issuer's
/// bytes for the cache key.
fn read(leaf_der: &[u8], issuer: IssuerOf<'_>) -> Result<(Leaf, Issuer, Vec<Vec<u8>>), CertError> {
    let leaf = Leaf::parse(leaf_der)?;
    let (parsed, parts) = match issuer {
        IssuerOf::Cert(der) => (Issuer::from_cert_der(der)?, vec![der.to_vec()]),
        IssuerOf::Anchor(a) => {
            let subject = der_sequence(a.subject.as_ref());
            let spki = der_sequence(a.subject_public_key_info.as_ref());
            let parsed = Issuer::from_subject_and_spki(&subject, &spki)?;
            (parsed, vec![subject, spki])
        }
    };
    Ok((leaf, parsed, parts))
}

// === impl PathChecks ===

impl PathChecks {
    /// The CT verdict to count (`None` under `ct: off`): `stale-list`
    /// whenever the list is stale now, whatever the cached report says;
    /// certificates that cannot be read count as `bad-signature`.
    pub fn ct_verdict(&self) -> Option<Verdict> {
        if self.mode == CtMode::Off {
            return None;
        }
        Some(match (&self.ct, self.stale) {
            (_, true) => Verdict::StaleList,
            (Some(r), false) => r.policy_verdict(),
            (None, false) => Verdict::BadSignature,
        })
    }

    /// The CT verdict by the list in force whatever its age (`None` under
    /// `ct: off`): what learn mode records about a leaf.
    pub fn ct_policy_verdict(&self) -> Option<Verdict> {
        if self.mode == CtMode::Off {
            return None;
        }
        Some(
            self.ct
                .as_ref()
                .map_or(Verdict::BadSignature, |r| r.policy_verdict()),
        )
    }

    /// The staple's verdict (`invalid` when something was stapled but the
    /// certificates could not be read).
    pub fn staple_verdict(&self) -> StapleVerdict {
        match (&self.staple, self.stapled) {
            (Some(s), _) => s.verdict(),
            (None, true) => StapleVerdict::Invalid,
            (None, false) => StapleVerdict::Absent,
        }
    }

    /// Whether `enforce` is acted on (not degraded by a stale list).
    pub fn enforced(&self) -> bool {
        self.mode == CtMode::Enforce && !self.stale
    }

    /// `enforce` degraded to `report` by a stale list.
    pub fn degraded(&self) -> bool {
        self.mode == CtMode::Enforce && self.stale
    }

    /// What these checks refuse: certificates they had to judge but could
    /// not read, then revocation, then CT.
    pub fn refusal(&self) -> Option<Refused> {
        if let Some(why) = &self.unreadable {
            if self.stapled || self.must_staple || self.enforced() {
                return Some(Refused::Unreadable(why.clone()));
            }
        }
        if let Some(s) = &self.staple {
            match s.refusal(self.must_staple) {
                Some(ocsp::Refusal::Revoked) => return Some(Refused::Revoked(s.to_string())),
                Some(ocsp::Refusal::OcspRequired) => {
                    return Some(Refused::OcspRequired(s.to_string()))
                }
                _ => {}
            }
        }
        if !self.enforced() || self.ct_verdict() == Some(Verdict::Ok) {
            return None;
        }
        Some(Refused::CtPolicy(self.ct_line()))
    }

    /// The CT verdict for people: `ok, 3 SCTs from 3 operators (embedded)`,
    /// or why not.
    pub fn ct_line(&self) -> String {
        match (&self.ct, &self.unreadable) {
            _ if self.mode == CtMode::Off => "off".into(),
            (Some(r), _) => r.to_string(),
            (None, Some(why)) => format!("bad-signature: the certificates cannot be read: {why}"),
            (None, None) => "not checked".into(),
        }
    }

    /// The SCTs seen, one per item: log id, log, operator, time, verdict.
    pub fn scts(&self) -> &[CheckedSct] {
        self.ct.as_deref().map_or(&[], CtReport::scts)
    }

    /// The staple for people: `good`, `revoked (since …)`, `invalid: why`,
    /// `absent`.
    pub fn staple_line(&self) -> String {
        match (&self.staple, &self.unreadable) {
            (Some(s), _) => s.to_string(),
            (None, Some(why)) if self.stapled => format!("invalid: {why}"),
            _ => "absent".into(),
        }
    }
}

impl fmt::Display for PathChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CT: {}; OCSP: {}", self.ct_line(), self.staple_line())
    }
}

#[cfg(test)]
mod tests;
