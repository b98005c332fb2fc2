//! The pin verifier: a rustls [`ServerCertVerifier`] that builds the chain
//! with webpki itself and matches pins inside webpki's `verify_path`
//! callback, so only certificates on a *validated* path can satisfy a pin
//! (OkHttp CVE-2016-2402 matched the chain as sent), and webpki keeps
//! searching other paths — cross-signed roots — when one lacks a pin.
//!
//! One verifier belongs to one pinset snapshot; rustls (≥ 0.23.24) resumes a
//! session only under the same verifier `Arc`, so a reload can never resume
//! a session verified under older pins.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage, VerifiedPath};

use crate::policy::host::Host;
use crate::policy::pin::Pin;
use crate::policy::{Decision, HostPolicy, Mode, Policy, Trust};
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Chain valid and (where enforced) a pin matched.
    Pass,
    /// Chain valid, pins expired: CA validation only.
    PassPinsExpired,
    /// Unlisted host: CA validation only.
    PassUnpinned,
    /// Chain valid, no pin on any valid path, entry in report mode.
    ReportedMismatch,
    /// Chain valid, no pin on any valid path: refused.
    Mismatch,
    /// Pin-only entry whose pinset expired: nothing left to validate.
    ExpiredPinOnly,
}

/// Receives every verdict (metrics, drift view, logs).
pub trait Observer: Send + Sync + std::fmt::Debug {
    fn verdict(&self, verdict: &Verdict<'_>);
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

    fn verify_pin_only(
        &self,
        entry: &HostPolicy,
        ee: &EndEntityCert<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: OffsetDateTime,
    ) -> Result<(), rustls::Error> {
        ee.verify_is_valid_for_subject_name(server_name)
            .map_err(pki_error)?;
        // Only the leaf key authenticates without a validated chain: an
        // intermediate or root pin here would prove nothing.
        let leaf = [Pin::of_spki_der(ee.subject_public_key_info().as_ref())];
        let matched = entry.pins.iter().find(|p| **p == leaf[0]).copied();
        let outcome = if entry.pins_expired(now) {
            Outcome::ExpiredPinOnly
        } else if matched.is_some() {
            Outcome::Pass
        } else {
            Outcome::Mismatch
        };
        self.observer.verdict(&Verdict {
            host: &entry.name,
            mode: entry.mode,
            outcome,
            path_pins: &leaf,
            expected: &entry.pins,
            next_pins: &entry.next_pins,
            matched,
            next_pins_matched: next_matched(entry, &leaf),
            end_entity,
            intermediates,
        });
        match outcome {
            Outcome::Pass => Ok(()),
            _ => Err(CertificateError::ApplicationVerificationFailure.into()),
        }
    }
}

fn next_matched(entry: &HostPolicy, path: &[Pin]) -> Option<bool> {
    (!entry.next_pins.is_empty()).then(|| path.iter().any(|p| entry.next_pins.contains(p)))
}

/// Pins of a validated path: leaf, the intermediates webpki used, the anchor.
pub(crate) fn path_pins(leaf: Pin, path: &VerifiedPath<'_>) -> Vec<Pin> {
    let mut pins = Vec::with_capacity(4);
    pins.push(leaf);
    for cert in path.intermediate_certificates() {
        pins.push(Pin::of_spki_der(cert.subject_public_key_info().as_ref()));
    }
    pins.push(Pin::of_spki_contents(
        path.anchor().subject_public_key_info.as_ref(),
    ));
    pins
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

        if let (Trust::PinOnly, Some(entry)) = (trust, entry) {
            self.verify_pin_only(entry, &ee, end_entity, intermediates, server_name, now_dt)?;
            return Ok(ServerCertVerified::assertion());
        }

        let leaf = Pin::of_spki_der(ee.subject_public_key_info().as_ref());
        let enforced = entry.filter(|e| !e.pins_expired(now_dt));
        let first_valid: RefCell<Option<Vec<Pin>>> = RefCell::new(None);
        let matched: Cell<Option<Pin>> = Cell::new(None);
        let next_ok = Cell::new(false);
        let on_path = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
            let pins = path_pins(leaf, path);
            if let Some(e) = entry {
                if pins.iter().any(|p| e.next_pins.contains(p)) {
                    next_ok.set(true);
                }
            }
            let hit = enforced.and_then(|e| pins.iter().find(|p| e.pins.contains(p)).copied());
            first_valid.borrow_mut().get_or_insert(pins);
            match (enforced, hit) {
                (None, _) => Ok(()),
                (Some(_), Some(pin)) => {
                    matched.set(Some(pin));
                    Ok(())
                }
                // Refusing the path makes webpki try the next candidate.
                (Some(_), None) => Err(webpki::Error::UnknownIssuer),
            }
        };
        let chain = ee.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            self.anchors(trust),
            intermediates,
            now,
            KeyUsage::server_auth(),
            None,
            Some(&on_path),
        );
        let saw_valid = first_valid.borrow().is_some();
        match chain {
            Ok(_) => {}
            // webpki reports the last candidate's error; a path that was
            // fully valid but refused by us means "no pin", not "untrusted".
            Err(_) if saw_valid => {}
            Err(e) => return Err(pki_error(e)),
        }
        ee.verify_is_valid_for_subject_name(server_name)
            .map_err(pki_error)?;

        let path_pins = first_valid.take().unwrap_or_default();
        let outcome = match (entry, enforced, matched.get()) {
            (None, _, _) => Outcome::PassUnpinned,
            (Some(_), None, _) => Outcome::PassPinsExpired,
            (Some(_), Some(_), Some(_)) => Outcome::Pass,
            (Some(e), Some(_), None) if e.mode == Mode::Report => Outcome::ReportedMismatch,
            (Some(_), Some(_), None) => Outcome::Mismatch,
        };
        self.observer.verdict(&Verdict {
            host: entry.map_or("unlisted", |e| e.name.as_str()),
            mode: entry.map_or(self.policy.defaults.mode, |e| e.mode),
            outcome,
            path_pins: &path_pins,
            expected: entry.map_or(&[][..], |e| &e.pins),
            next_pins: entry.map_or(&[][..], |e| &e.next_pins),
            matched: matched.get(),
            next_pins_matched: entry.and_then(|e| (!e.next_pins.is_empty()).then(|| next_ok.get())),
            end_entity,
            intermediates,
        });
        match outcome {
            Outcome::Mismatch | Outcome::ExpiredPinOnly => {
                Err(CertificateError::ApplicationVerificationFailure.into())
            }
            _ => Ok(ServerCertVerified::assertion()),
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
