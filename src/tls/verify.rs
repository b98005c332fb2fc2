//! The pin verifier: a rustls [`ServerCertVerifier`] that builds the chain
//! with webpki itself and matches pins against the paths webpki validated
//! ([`super::verdict`]), so only certificates on a *validated* path can
//! satisfy a pin (OkHttp CVE-2016-2402 matched the chain as sent), and
//! webpki keeps searching other paths — cross-signed roots — while one
//! lacks a pin.
//!
//! One verifier belongs to one pinset snapshot; rustls (≥ 0.23.24) resumes a
//! session only under the same verifier `Arc`, so a reload can never resume
//! a session verified under older pins.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::EndEntityCert;

pub use super::verdict::Outcome;
use super::verdict::{check_name, judge, search_on, validated_paths_used, NameMismatch};
use crate::policy::host::Host;
use crate::policy::pin::Pin;
use crate::policy::{Decision, Mode, Policy, Trust};
use crate::reason::Reason;

/// What the verifier saw in one handshake, handed to an [`Observer`].
#[derive(Debug)]
pub struct Verdict<'a> {
    /// The pinset entry as written, or `unlisted`.
    pub host: &'a str,
    pub mode: Mode,
    pub outcome: Outcome,
    /// Pins of the first validated path (leaf first, anchor last), or of the
    /// leaf alone under pin-only.
    pub path_pins: &'a [Pin],
    pub expected: &'a [Pin],
    pub next_pins: &'a [Pin],
    pub matched: Option<Pin>,
    /// `None` when the entry has no `next_pins`.
    pub next_pins_matched: Option<bool>,
    pub end_entity: &'a CertificateDer<'a>,
    pub intermediates: &'a [CertificateDer<'a>],
    /// Which of `intermediates` the reported path (`path_pins`) used, in
    /// path order: only these, the end entity and the trust anchor may
    /// describe it — never the other certificates a server sent along.
    pub path_intermediates: &'a [usize],
    /// The subject of the path's trust anchor (which the server does not
    /// send), worked out only for mismatches, which are logged.
    pub anchor_subject: Option<String>,
}

/// A chain the verifier refused before any pin was looked at: not
/// trusted, expired, or not valid for the name.
#[derive(Debug)]
pub struct Rejection<'a> {
    /// The pinset entry as written, or `unlisted`.
    pub host: &'a str,
    pub reason: Reason,
    /// webpki's verdict, for people.
    pub error: String,
    pub end_entity: &'a CertificateDer<'a>,
    pub intermediates: &'a [CertificateDer<'a>],
}

/// Receives every verdict and every rejection (metrics, drift view, logs).
pub trait Observer: Send + Sync + std::fmt::Debug {
    fn verdict(&self, verdict: &Verdict<'_>);
    fn rejected(&self, rejection: &Rejection<'_>);
}

#[derive(Debug)]
pub struct PinVerifier {
    policy: Arc<Policy>,
    webpki_roots: Arc<[TrustAnchor<'static>]>,
    provider: Arc<CryptoProvider>,
    observer: Arc<dyn Observer>,
}

/// Mozilla's roots as webpki trust anchors.
pub fn webpki_roots() -> Arc<[TrustAnchor<'static>]> {
    webpki_roots::TLS_SERVER_ROOTS.to_vec().into()
}

// === impl PinVerifier ===

impl PinVerifier {
    pub fn new(
        policy: Arc<Policy>,
        webpki_roots: Arc<[TrustAnchor<'static>]>,
        provider: Arc<CryptoProvider>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            policy,
            webpki_roots,
            provider,
            observer,
        }
    }

    fn anchors<'s>(&'s self, trust: &'s Trust) -> &'s [TrustAnchor<'static>] {
        match trust {
            Trust::Bundle { anchors, .. } => anchors,
            _ => &self.webpki_roots,
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let host = match server_name {
            ServerName::DnsName(d) => Host::parse(d.as_ref())
                .map_err(|_| rustls::Error::from(CertificateError::NotValidForName))?,
            ServerName::IpAddress(ip) => Host::from_ip(std::net::IpAddr::from(*ip)),
            _ => return Err(CertificateError::NotValidForName.into()),
        };
        let entry = match self.policy.lookup(&host) {
            Decision::Listed(e) => Some(e.as_ref()),
            Decision::Unlisted => None,
        };
        let now_dt = OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let ee = EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        let trust = entry.map_or(&self.policy.defaults.trust, |e| &e.trust);
        // Pin-only applies to listed entries only (it cannot be a default).
        let anchors = match (trust, entry) {
            (Trust::PinOnly, Some(_)) => None,
            _ => Some(self.anchors(trust)),
        };
        let label = entry.map_or("unlisted", |e| e.name.as_str());
        let reject = |e: webpki::Error| {
            let error = e.to_string();
            let err = pki_error(e);
            self.observer.rejected(&Rejection {
                host: label,
                reason: failure_reason(&err),
                error,
                end_entity,
                intermediates,
            });
            err
        };
        let used = validated_paths_used(
            &ee,
            intermediates,
            anchors,
            entry.and_then(|e| e.crls.as_deref()),
            now,
            &self.provider.signature_verification_algorithms,
            search_on(entry, now_dt),
        )
        .map_err(reject)?;
        let paths: Vec<Vec<Pin>> = used.iter().map(|p| p.pins.clone()).collect();
        let names = entry.map_or(&[][..], |e| &e.names);
        match check_name(&ee, end_entity, server_name, names) {
            Ok(()) => {}
            Err(NameMismatch::Host(e)) => return Err(reject(e)),
            Err(NameMismatch::Names(error)) => {
                self.observer.rejected(&Rejection {
                    host: label,
                    reason: Reason::WrongName,
                    error,
                    end_entity,
                    intermediates,
                });
                return Err(CertificateError::NotValidForName.into());
            }
        }
        let j = judge(entry, now_dt, &paths);
        let anchor_subject = match (j.outcome.is_mismatch(), anchors, j.path.last()) {
            (true, Some(anchors), Some(pin)) if j.path.len() > 1 => anchors
                .iter()
                .find(|a| Pin::of_spki_contents(a.subject_public_key_info.as_ref()) == *pin)
                .map(|a| super::cert::anchor_subject(a)),
            _ => None,
        };
        self.observer.verdict(&Verdict {
            host: label,
            mode: entry.map_or(self.policy.defaults.mode, |e| e.mode),
            outcome: j.outcome,
            path_pins: &j.path,
            expected: entry.map_or(&[][..], |e| &e.pins),
            next_pins: entry.map_or(&[][..], |e| &e.next_pins),
            matched: j.matched,
            next_pins_matched: j.next_pins_matched,
            end_entity,
            intermediates,
            path_intermediates: used.get(j.index).map_or(&[][..], |p| &p.intermediates),
            anchor_subject,
        });
        if j.outcome.passes() {
            Ok(ServerCertVerified::assertion())
        } else {
            // rustls maps this to the right alert; the verdict above
            // already carried host, presented and expected pins.
            Err(CertificateError::ApplicationVerificationFailure.into())
        }
    }

    // Handshake signatures are checked with the key of the leaf that was
    // verified above, by the provider's algorithms — never assumed.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Maps webpki's verdicts to rustls' certificate errors (and so to the
/// right TLS alert).
fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let ce = match e {
        W::CertExpired { .. } | W::InvalidCertValidity => CertificateError::Expired,
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertNotValidForName(_) => CertificateError::NotValidForName,
        W::CertRevoked => CertificateError::Revoked,
        W::CrlExpired { .. } => CertificateError::ExpiredRevocationList,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    ce.into()
}

/// The reason label for a failed upstream handshake.
pub fn failure_reason(e: &rustls::Error) -> Reason {
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::ApplicationVerificationFailure => Reason::PinMismatch,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Reason::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Reason::NotYetValid
            }
            CertificateError::UnknownIssuer => Reason::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Reason::WrongName
            }
            CertificateError::BadSignature => Reason::BadSignature,
            CertificateError::Revoked => Reason::Revoked,
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Reason::CrlExpired,
            CertificateError::BadEncoding => Reason::BadEncoding,
            _ => Reason::InvalidCertificate,
        },
        rustls::Error::NoCertificatesPresented => Reason::NoCertificate,
        rustls::Error::AlertReceived(_) => Reason::AlertReceived,
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::PeerIncompatible(_)
        | rustls::Error::PeerMisbehaved(_) => Reason::ProtocolError,
        _ => Reason::TlsError,
    }
}
