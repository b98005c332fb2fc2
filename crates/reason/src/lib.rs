//! The names the contract gives to what happened (docs/reference.md,
//! "Refusals" and "Metrics"),
//! in one table: the status a refusal answers with, the value of its
//! `x-pinproxy-error` header and the label it is counted under.
//!
//! Every room names reasons through [`Reason`]; the strings below appear
//! nowhere else in the crate. Metric series are pre-created from the same
//! table ([`Reason::denied`], [`Reason::outcomes`], [`Reason::tls_failures`]),
//! so a dashboard sees zeros rather than absent series, and a new reason
//! cannot be added to one list and forgotten in another. What a refusal
//! counts is read from the table too ([`Reason::counted`]), by one function
//! (`Metrics::refused` in the control room): no call site picks counters.
//!
//! The other label values of the contract — request outcomes, reload
//! results, transparent outcomes, report deliveries… — are enums in
//! [`labels`], each with `as_str` and `ALL`.

#![forbid(unsafe_code)]

pub mod labels;

use std::fmt;

use http::StatusCode;

pub use labels::{
    Delivery, LeafResult, Position, ReloadResult, ReportType, RequestOutcome, TransparentOutcome,
    TransparentProtocol,
};

/// Where a reason is counted: the columns of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// `pinproxy_denied_total{reason}`: refused before any upstream
    /// connection.
    pub denied: bool,
    /// `pinproxy_requests_total{host,outcome}`: a request or tunnel that was
    /// let through the policy (under `host`) and then refused.
    pub outcome: bool,
    /// `pinproxy_tls_verify_failures_total{host,reason}`: why an upstream
    /// handshake failed (counted where the handshake fails, not where the
    /// request is answered).
    pub tls: bool,
}

const DENIED: Counted = Counted {
    denied: true,
    outcome: false,
    tls: false,
};
const OUTCOME: Counted = Counted {
    denied: false,
    outcome: true,
    tls: false,
};
const TLS: Counted = Counted {
    denied: false,
    outcome: false,
    tls: true,
};
const OUTCOME_TLS: Counted = Counted {
    denied: false,
    outcome: true,
    tls: true,
};
const DENIED_OUTCOME: Counted = Counted {
    denied: true,
    outcome: true,
    tls: false,
};

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, $status:expr, $counted:expr; )*) => {
        /// A reason the contract names. `#[non_exhaustive]`: the contract is
        /// extended, never narrowed.
        #[non_exhaustive]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every reason, in table order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            fn row(self) -> (&'static str, Option<StatusCode>, Counted) {
                match self {
                    $( Reason::$variant => ($label, $status, $counted), )*
                }
            }
        }
    };
}

reasons! {
    // === refusals: status, x-pinproxy-error, label ===
    /// Host not in the pinset and `unlisted: deny`.
    HostNotAllowed => "host-not-allowed", Some(StatusCode::FORBIDDEN), DENIED;
    /// Port not in the entry's (or the defaults') `ports`.
    PortNotAllowed => "port-not-allowed", Some(StatusCode::FORBIDDEN), DENIED;
    /// Chain valid, no pin on any validated path (enforce), or a pin-only
    /// pinset expired.
    PinMismatch => "pin-mismatch", Some(StatusCode::BAD_GATEWAY), OUTCOME_TLS;
    /// Chain not trusted, expired, wrong name or a bad handshake signature.
    UntrustedCertificate => "untrusted-certificate", Some(StatusCode::BAD_GATEWAY), OUTCOME;
    /// DNS failure or connection refused.
    UpstreamUnreachable => "upstream-unreachable", Some(StatusCode::BAD_GATEWAY), OUTCOME;
    /// Connect, handshake or response timeout.
    UpstreamTimeout => "upstream-timeout", Some(StatusCode::GATEWAY_TIMEOUT), OUTCOME;
    /// The upstream does not speak TLS (or HTTP) properly.
    UpstreamTlsError => "upstream-tls-error", Some(StatusCode::BAD_GATEWAY), OUTCOME;
    /// A malformed request.
    BadRequest => "bad-request", Some(StatusCode::BAD_REQUEST), DENIED;
    /// A request head over the limit: the same header value and label as
    /// [`Reason::BadRequest`], another status.
    HeadTooLarge => "bad-request", Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE), DENIED;
    /// A request inside an intercepted tunnel naming another host.
    MisdirectedRequest => "misdirected-request", Some(StatusCode::MISDIRECTED_REQUEST), DENIED;
    /// An unlisted host resolving only to private, loopback or link-local
    /// addresses (or to pinproxy's own ports).
    PrivateAddress => "private-address", Some(StatusCode::FORBIDDEN), DENIED_OUTCOME;
    /// The connection limit is reached.
    Overloaded => "overloaded", Some(StatusCode::SERVICE_UNAVAILABLE), DENIED;
    /// No pinset is in force yet: with `run --pinset-key`, until a validly
    /// signed pinset arrives (the sidecar is not ready meanwhile).
    NoPinset => "no-pinset", Some(StatusCode::SERVICE_UNAVAILABLE), DENIED;
    /// pinproxy itself failed (e.g. minting an interception certificate).
    InternalError => "internal-error", Some(StatusCode::INTERNAL_SERVER_ERROR), OUTCOME;

    // === refused with a TLS alert, not an HTTP answer ===
    /// A client's TLS SNI inside a CONNECT tunnel names another host.
    SniMismatch => "sni-mismatch", None, DENIED;

    // === why an upstream handshake failed (tls_verify_failures) ===
    Expired => "expired", None, TLS;
    NotYetValid => "not-yet-valid", None, TLS;
    UnknownIssuer => "unknown-issuer", None, TLS;
    WrongName => "wrong-name", None, TLS;
    BadSignature => "bad-signature", None, TLS;
    /// A certificate on the path, or its issuer, is on one of the entry's
    /// CRLs, or the OCSP response the server stapled says the leaf is
    /// revoked.
    Revoked => "revoked", None, TLS;
    /// The CRL deciding a certificate's status is past its nextUpdate and
    /// the entry says `crl_policy: refuse-expired`.
    CrlExpired => "crl-expired", None, TLS;
    BadEncoding => "bad-encoding", None, TLS;
    /// `ct: enforce` and the leaf's SCTs do not satisfy the CT policy (too
    /// few valid SCTs, logs or operators).
    CtPolicy => "ct-policy", None, TLS;
    /// The leaf is must-staple (TLS Feature extension) and the server
    /// stapled no valid OCSP response.
    OcspRequired => "ocsp-required", None, TLS;
    InvalidCertificate => "invalid-certificate", None, TLS;
    NoCertificate => "no-certificate", None, TLS;
    AlertReceived => "alert-received", None, TLS;
    ProtocolError => "protocol-error", None, TLS;
    TlsError => "tls-error", None, TLS;
    Timeout => "timeout", None, TLS;
    Closed => "closed", None, TLS;
    Io => "io", None, TLS;
}

// === impl Reason ===

impl Reason {
    /// The label (and, for refusals, the `x-pinproxy-error` value).
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The status a refusal for this reason answers with; `None` for
    /// reasons that never answer an HTTP request.
    pub fn status(self) -> Option<StatusCode> {
        self.row().1
    }

    /// Where this reason is counted (docs/reference.md, "Refusals").
    pub fn counted(self) -> Counted {
        self.row().2
    }

    /// Counted in `pinproxy_denied_total` when refused.
    pub fn is_denied(self) -> bool {
        self.row().2.denied
    }

    /// Labels of `pinproxy_denied_total{reason}`.
    pub fn denied() -> impl Iterator<Item = &'static str> {
        Self::labels(|c| c.denied)
    }

    /// Labels of `pinproxy_requests_total{outcome}` that are refusals.
    pub fn outcomes() -> impl Iterator<Item = &'static str> {
        Self::labels(|c| c.outcome)
    }

    /// Labels of `pinproxy_tls_verify_failures_total{reason}`.
    pub fn tls_failures() -> impl Iterator<Item = &'static str> {
        Self::labels(|c| c.tls)
    }

    fn labels(keep: fn(Counted) -> bool) -> impl Iterator<Item = &'static str> {
        let mut seen: Vec<&'static str> = Vec::new();
        Self::ALL.iter().filter_map(move |r| {
            let (label, _, counted) = r.row();
            (keep(counted) && !seen.contains(&label)).then(|| {
                seen.push(label);
                label
            })
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_status_and_labels_are_unique_per_variant() {
        for r in Reason::ALL {
            if r.is_denied() && *r != Reason::SniMismatch {
                assert!(r.status().is_some(), "{r:?}");
            }
        }
        // Only HeadTooLarge shares a label (with BadRequest).
        let mut labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort();
        let n = labels.len();
        labels.dedup();
        assert_eq!(labels.len(), n - 1);
    }

    /// Every reason is counted somewhere, and every reason a client can be
    /// answered with is counted as a refusal (denied, or under the host it
    /// was admitted as).
    #[test]
    fn every_reason_is_counted_and_every_answer_as_a_refusal() {
        for r in Reason::ALL {
            let c = r.counted();
            assert!(c.denied || c.outcome || c.tls, "{r:?} is counted nowhere");
            if r.status().is_some() || *r == Reason::SniMismatch {
                assert!(c.denied || c.outcome, "{r:?} answers but is no refusal");
            }
        }
    }

    #[test]
    fn the_lists_the_contract_names() {
        let denied: Vec<_> = Reason::denied().collect();
        assert_eq!(
            denied,
            [
                "host-not-allowed",
                "port-not-allowed",
                "bad-request",
                "misdirected-request",
                "private-address",
                "overloaded",
                "no-pinset",
                "sni-mismatch"
            ]
        );
        let outcomes: Vec<_> = RequestOutcome::labels().collect();
        assert_eq!(
            outcomes,
            [
                "ok",
                "tunnel",
                "passthrough",
                "plain-http",
                "pin-mismatch",
                "untrusted-certificate",
                "upstream-unreachable",
                "upstream-timeout",
                "upstream-tls-error",
                "private-address",
                "internal-error"
            ]
        );
        assert_eq!(Reason::tls_failures().count(), 19);
        assert_eq!(
            Reason::HeadTooLarge.status(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }
}
