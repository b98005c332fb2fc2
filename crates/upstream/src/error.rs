//! Why an upstream could not be reached or trusted.

use std::io;

use pinproxy_policy::host::Host;
use pinproxy_reason::Reason;
use pinproxy_tls::ct::Refused;
use pinproxy_tls::verify;

/// Why an upstream could not be reached or trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// DNS failure or every address refused the connection.
    Unreachable,
    /// TCP connect or TLS handshake took too long.
    Timeout,
    /// The chain was valid but carried no pin (or a pin-only pinset expired).
    PinMismatch,
    /// The chain, name or handshake signature did not verify.
    Untrusted(Reason),
    /// The server did not speak TLS properly.
    Tls(Reason),
    /// An unlisted host resolved only to private, loopback or link-local addresses.
    PrivateAddress,
    /// The h2 client's connect found the upstream speaks HTTP/1.1: the
    /// request was never sent, and goes out again over HTTP/1.1.
    NoH2,
    /// The upstream connection budget is spent
    /// ([`Budget`](super::budget::Budget)): refused before any dial.
    Overloaded,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{host}: {detail}")]
pub struct UpstreamError {
    pub failure: Failure,
    pub host: String,
    pub detail: String,
}

impl UpstreamError {
    pub(super) fn new(failure: Failure, host: &Host, detail: impl Into<String>) -> Self {
        Self {
            failure,
            host: host.to_string(),
            detail: detail.into(),
        }
    }

    /// Finds an `UpstreamError` anywhere in an error's source chain.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a UpstreamError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(u) = e.downcast_ref::<UpstreamError>() {
                return Some(u);
            }
            cur = e.source();
        }
        None
    }
}

/// Classifies a failed TLS handshake: the failure, its
/// `tls_verify_failures` reason and a message for the refusal body.
pub(super) fn classify_tls(e: &io::Error) -> (Failure, Reason, String) {
    let rustls_err = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(r) => {
            let reason = verify::failure_reason(r);
            let failure = match r {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ) => Failure::PinMismatch,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    Failure::Untrusted(reason)
                }
                _ => Failure::Tls(reason),
            };
            let detail = match (&failure, r) {
                (Failure::PinMismatch, _) => "the validated certificate chain carries none of this host's pins \
                     (or its pin-only pinset expired); the presented pins are in pinproxy's log and /pins"
                    .to_string(),
                // Non-TLS bytes back (most often a plain-HTTP service:
                // pinproxy upgrades http:// URLs to TLS): say how to fix it.
                (_, rustls::Error::InvalidMessage(_)) => format!(
                    "TLS handshake failed: {r}: the server did not answer with TLS. \
                     pinproxy upgrades http:// URLs to TLS; if this is a plain-HTTP \
                     (in-cluster) service, list it under passthrough: in the pinset \
                     or add it to NO_PROXY"
                ),
                (_, rustls::Error::AlertReceived(alert)) => alert_detail(&format!("{alert:?}"), false),
                (
                    _,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. },
                    ),
                ) => "TLS handshake failed: the certificate is not valid for this host's name \
                      (or, with names:, carries none of them); pinproxy's log lists the names it \
                      presents"
                    .to_string(),
                (_, rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
                    "TLS handshake failed: the certificate or one of its issuers is revoked \
                     by one of this host's crls"
                        .to_string()
                }
                (
                    _,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredRevocationList
                        | rustls::CertificateError::ExpiredRevocationListContext { .. },
                    ),
                ) => "TLS handshake failed: the CRL that decides this chain is past its \
                      nextUpdate and the host says crl_policy: refuse-expired; mount a fresh CRL"
                    .to_string(),
                // Refused by CT or the OCSP staple: say which, and why.
                (_, rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)))
                    if o.0.is::<Refused>() =>
                {
                    let refused = o.0.downcast_ref::<Refused>().map(ToString::to_string);
                    format!("TLS handshake failed: {}", refused.unwrap_or_default())
                }
                _ => format!("TLS handshake failed: {r}"),
            };
            (failure, reason, detail)
        }
        None if e.kind() == io::ErrorKind::UnexpectedEof => (
            Failure::Tls(Reason::Closed),
            Reason::Closed,
            "connection closed during the TLS handshake".into(),
        ),
        None => (
            Failure::Tls(Reason::Io),
            Reason::Io,
            format!("TLS handshake failed: {e}"),
        ),
    }
}

/// What a TLS alert from the upstream (by name, as rustls spells it) most
/// likely means; `after` says it came after pinproxy's side of the
/// handshake was done (TLS 1.3, where the server judges the client's
/// certificate last).
pub fn alert_detail(alert: &str, after: bool) -> String {
    let hint = match alert {
        "CertificateRequired" => {
            "the server requires a client certificate: give this host a client_cert"
        }
        "BadCertificate"
        | "UnknownCA"
        | "CertificateExpired"
        | "CertificateRevoked"
        | "CertificateUnknown"
        | "UnsupportedCertificate"
        | "AccessDenied" => {
            "the server refused the client certificate pinproxy presented (or the lack of \
             one): check the host's client_cert and the CA the server trusts for clients"
        }
        _ => "the server ended the TLS session",
    };
    let when = if after {
        "after the handshake"
    } else {
        "during the handshake"
    };
    format!("TLS alert from the upstream {when}: {alert}; {hint}")
}
