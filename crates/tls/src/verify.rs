//! The pin verifier: a rustls [`ServerCertVerifier`] that builds the chain
//! with webpki itself and matches pins against the paths webpki validated
//! ([`super::verdict`]), so only certificates on a *validated* path can
//! satisfy a pin (OkHttp CVE-2016-2402 matched the chain as sent), and
//! webpki keeps searching other paths — cross-signed roots — while one
//! lacks a pin.
//!
//! One verifier belongs to one pinset snapshot. rustls does not call it on
//! a resumed handshake, so the upstream configs never resume
//! (`pinproxy_upstream::resumption`): every connection is judged here.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::EndEntityCert;

use super::ct::{self, CtCache, IssuerOf, LogListInForce, PathChecks, Refused};
pub use super::verdict::Outcome;
use super::verdict::{check_name, judge, search_on, validated_paths_used, NameMismatch, UsedPath};
use pinproxy_policy::host::Host;
use pinproxy_policy::pin::Pin;
use pinproxy_policy::{Decision, HostPolicy, Mode, Policy, Trust};
use pinproxy_reason::Reason;

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
    /// Certificate Transparency and the OCSP staple, judged on the
    /// reported path (`None` under pin-only: no validated path).
    pub checks: Option<&'a PathChecks>,
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
    /// For refusals by Certificate Transparency or OCSP (`ct-policy`,
    /// `revoked`, `ocsp-required`): what the checks found on the validated
    /// path. `None` for chains refused before any path validated.
    pub checks: Option<&'a PathChecks>,
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
    /// The CT log list of this generation.
    ct_list: Arc<LogListInForce>,
    /// CT verdicts reached in this generation (fresh handshakes to the
    /// same server present the same leaf).
    ct_cache: CtCache,
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
        ct_list: Arc<LogListInForce>,
    ) -> Self {
        Self {
            policy,
            webpki_roots,
            provider,
            observer,
            ct_list,
            ct_cache: CtCache::default(),
        }
    }

    fn anchors<'s>(&'s self, trust: &'s Trust) -> &'s [TrustAnchor<'static>] {
        match trust {
            Trust::Bundle { anchors, .. } => anchors,
            _ => &self.webpki_roots,
        }
    }

    /// CT and the OCSP staple on `path` (docs/reference.md, "Certificate
    /// Transparency and OCSP"): the leaf's issuer is the path's first
    /// certificate above it, or its trust anchor.
    fn path_checks(
        &self,
        entry: Option<&HostPolicy>,
        chain: &Chain<'_>,
        path: &UsedPath,
        anchors: &[TrustAnchor<'static>],
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Option<PathChecks> {
        let issuer = match path.intermediates.first() {
            Some(i) => IssuerOf::Cert(chain.intermediates.get(*i)?.as_ref()),
            None => IssuerOf::Anchor(anchors.get(path.anchor?)?),
        };
        let mode = entry.map_or(self.policy.defaults.ct, |e| e.ct);
        Some(ct::check_path(
            &self.ct_list,
            mode,
            chain.end_entity.as_ref(),
            issuer,
            ocsp_response,
            now,
            Some(&self.ct_cache),
        ))
    }

    /// Refuses (and reports) a chain whose pins passed, or were only
    /// reported, for what CT or the OCSP staple says about it.
    fn refuse_by_checks(
        &self,
        chain: &Chain<'_>,
        checks: Option<&PathChecks>,
    ) -> Option<rustls::Error> {
        let refused = checks?.refusal()?;
        self.reject(chain, refused.reason(), refused.to_string(), checks);
        Some(refusal_error(refused))
    }

    /// Reports a chain refused for `reason`.
    fn reject(
        &self,
        chain: &Chain<'_>,
        reason: Reason,
        error: String,
        checks: Option<&PathChecks>,
    ) {
        self.observer.rejected(&Rejection {
            host: chain.label,
            reason,
            error,
            end_entity: chain.end_entity,
            intermediates: chain.intermediates,
            checks,
        });
    }
}

/// The chain of one handshake and the entry it is judged under.
struct Chain<'a> {
    label: &'a str,
    end_entity: &'a CertificateDer<'a>,
    intermediates: &'a [CertificateDer<'a>],
}

/// A refusal by CT or OCSP as a rustls error: `failure_reason` finds the
/// reason in it again.
fn refusal_error(refused: Refused) -> rustls::Error {
    CertificateError::Other(rustls::OtherError(Arc::new(refused))).into()
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
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
        let chain = Chain {
            label,
            end_entity,
            intermediates,
        };
        let reject = |e: webpki::Error| {
            let error = e.to_string();
            let err = pki_error(e);
            self.reject(&chain, failure_reason(&err), error, None);
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
                self.reject(&chain, Reason::WrongName, error, None);
                return Err(CertificateError::NotValidForName.into());
            }
        }
        let j = judge(entry, now_dt, &paths);
        let reported = used.get(j.index);
        let checks = match (anchors, reported) {
            (Some(anchors), Some(path)) => {
                self.path_checks(entry, &chain, path, anchors, ocsp_response, now)
            }
            _ => None,
        };
        if j.outcome.passes() {
            if let Some(err) = self.refuse_by_checks(&chain, checks.as_ref()) {
                return Err(err);
            }
        }
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
            path_intermediates: reported.map_or(&[][..], |p| &p.intermediates),
            anchor_subject,
            checks: checks.as_ref(),
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
            CertificateError::Other(o) => {
                o.0.downcast_ref::<Refused>()
                    .map_or(Reason::InvalidCertificate, Refused::reason)
            }
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
