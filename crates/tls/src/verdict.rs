//! The verdict on a presented chain, in two steps every caller shares:
//!
//! 1. [`validated_paths`]: the pins of the paths webpki validates from the
//!    leaf to a trust anchor (or the leaf alone under pin-only), checked
//!    against the entry's CRLs. Only these certificates can ever satisfy a
//!    pin — never extra certificates a server merely sent along (OkHttp
//!    CVE-2016-2402). [`check_name`]: the host name, or the entry's
//!    `names:` instead.
//! 2. [`judge`]: those paths against a pinset entry — pass, mismatch,
//!    report-only mismatch, expired pins — and whether `next_pins` match.
//!
//! The [`PinVerifier`](super::verify::PinVerifier) enforces with them,
//! `pin --connect` prints them and `check --live` predicts with them, so the
//! three cannot disagree about a chain.

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy, VerifiedPath,
};

use pinproxy_policy::identity::{CrlPolicy, Crls, Name};
use pinproxy_policy::pin::Pin;
use pinproxy_policy::{HostPolicy, Mode, Trust};

/// How a handshake's chain fared against its entry.
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

impl Outcome {
    /// Whether the connection may carry traffic.
    pub fn passes(self) -> bool {
        !matches!(self, Outcome::Mismatch | Outcome::ExpiredPinOnly)
    }

    /// Whether no pin matched (counted as a pin mismatch, enforced or not).
    pub fn is_mismatch(self) -> bool {
        matches!(
            self,
            Outcome::Mismatch | Outcome::ReportedMismatch | Outcome::ExpiredPinOnly
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::PassPinsExpired => "pass-pins-expired",
            Outcome::PassUnpinned => "pass-unpinned",
            Outcome::ReportedMismatch => "reported-mismatch",
            Outcome::Mismatch => "mismatch",
            Outcome::ExpiredPinOnly => "expired-pin-only",
        }
    }
}

/// The result of [`judge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub outcome: Outcome,
    /// The pin that matched, first in path order.
    pub matched: Option<Pin>,
    /// `None` when the entry has no `next_pins`.
    pub next_pins_matched: Option<bool>,
    /// The path reported: the one that matched, else the first (leaf
    /// first, anchor last; the leaf alone under pin-only).
    pub path: Vec<Pin>,
    /// Its index in the paths judged.
    pub index: usize,
}

/// Pins of a validated path: leaf, the intermediates webpki used, the anchor.
fn path_pins(leaf: Pin, path: &VerifiedPath<'_>) -> Vec<Pin> {
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

/// The pins of the paths from `ee` to one of `anchors` that webpki
/// validates (chain, dates, key usage, name constraints, signatures), in
/// the order webpki finds them. `search_on(path)` returning `true` makes
/// webpki look for another path after `path` (cross-signed roots); the
/// search stops at the first path for which it returns `false`.
///
/// `anchors: None` is pin-only: no CA validation, and only the leaf key is
/// returned — an intermediate or root key proves nothing without a chain.
///
/// `crls`: every certificate of a candidate path (leaf and intermediates)
/// is looked up in the CRL of its issuer, if one is given: a revoked one
/// fails that path (`CertRevoked`). A certificate whose issuer has no CRL
/// here is not refused for it — the operator lists the CRLs there are.
///
/// `Err` is webpki's error when no path validated at all.
pub fn validated_paths(
    ee: &EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: Option<&[TrustAnchor<'_>]>,
    crls: Option<&Crls>,
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
    search_on: impl Fn(&[Pin]) -> bool,
) -> Result<Vec<Vec<Pin>>, webpki::Error> {
    let paths = validated_paths_used(ee, intermediates, anchors, crls, now, algorithms, search_on)?;
    Ok(paths.into_iter().map(|p| p.pins).collect())
}

/// One path webpki validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedPath {
    /// Leaf first, anchor last (the leaf alone under pin-only).
    pub pins: Vec<Pin>,
    /// For each intermediate on the path, in path order, its index in the
    /// presented intermediates: *which* certificates were used, not only
    /// their keys — a server can send more certificates with the same key
    /// and another subject, and only the one on the path may describe it.
    pub intermediates: Vec<usize>,
    /// The path's trust anchor, by its index in the anchors searched
    /// (`None` under pin-only).
    pub anchor: Option<usize>,
}

/// As [`validated_paths`], with which presented certificates each path used.
pub fn validated_paths_used(
    ee: &EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: Option<&[TrustAnchor<'_>]>,
    crls: Option<&Crls>,
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
    search_on: impl Fn(&[Pin]) -> bool,
) -> Result<Vec<UsedPath>, webpki::Error> {
    let leaf = Pin::of_spki_der(ee.subject_public_key_info().as_ref());
    let Some(anchors) = anchors else {
        return Ok(vec![UsedPath {
            pins: vec![leaf],
            intermediates: Vec::new(),
            anchor: None,
        }]);
    };
    let lists: Vec<&CertRevocationList<'_>> =
        crls.map(|c| c.lists.iter().collect()).unwrap_or_default();
    let revocation = crls.and_then(|c| {
        let expired = match c.policy {
            CrlPolicy::UseExpired => ExpirationPolicy::Ignore,
            CrlPolicy::RefuseExpired => ExpirationPolicy::Enforce,
        };
        // `Err` only for an empty list, which the loader never makes.
        RevocationOptionsBuilder::new(&lists).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(expired)
                .build()
        })
    });
    let paths = std::sync::Mutex::new(Vec::new());
    let on_path = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let pins = path_pins(leaf, path);
        let more = search_on(&pins);
        // webpki hands back the presented certificates it used: the same
        // DER is the same certificate.
        let used = path
            .intermediate_certificates()
            .filter_map(|c| {
                let der = c.der();
                intermediates
                    .iter()
                    .position(|i| i.as_ref() == der.as_ref())
            })
            .collect();
        // The anchor webpki hands back is one of `anchors`.
        let anchor = anchors.iter().position(|a| {
            std::ptr::eq(a, path.anchor())
                || (a.subject_public_key_info == path.anchor().subject_public_key_info
                    && a.subject == path.anchor().subject)
        });
        paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(UsedPath {
                pins,
                intermediates: used,
                anchor,
            });
        // Refusing the path makes webpki try the next candidate.
        if more {
            Err(webpki::Error::UnknownIssuer)
        } else {
            Ok(())
        }
    };
    let result = ee.verify_for_usage(
        algorithms.all,
        anchors,
        intermediates,
        now,
        KeyUsage::server_auth(),
        revocation,
        Some(&on_path),
    );
    let paths = paths.into_inner().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(_) => Ok(paths),
        // webpki reports the last candidate's error; a path that was fully
        // valid but refused by `search_on` means "search on", not
        // "untrusted".
        Err(_) if !paths.is_empty() => Ok(paths),
        Err(e) => Err(e),
    }
}

/// Why a certificate is not valid for the name it was checked against.
#[derive(Debug)]
pub enum NameMismatch {
    /// Not valid for the host name (webpki's verdict).
    Host(webpki::Error),
    /// Carries none of the entry's `names:`; the message lists what it does
    /// carry.
    Names(String),
}

/// The name check: the certificate must be valid for `server_name` — or,
/// when the entry lists `names:`, carry one of them *instead* (DNS names
/// by the certificate's wildcard rules, URIs exactly or by `/*` prefix).
/// There is no case without a check.
pub fn check_name(
    ee: &EndEntityCert<'_>,
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    names: &[Name],
) -> Result<(), NameMismatch> {
    if names.is_empty() {
        return ee
            .verify_is_valid_for_subject_name(server_name)
            .map_err(NameMismatch::Host);
    }
    let dns_ok = |n: &str| {
        DnsName::try_from(n.to_string()).is_ok_and(|d| {
            ee.verify_is_valid_for_subject_name(&ServerName::DnsName(d))
                .is_ok()
        })
    };
    let (dns, uris) = presented_names(end_entity.as_ref());
    let hit = names.iter().any(|n| match n {
        Name::Dns(d) => dns_ok(d),
        Name::Uri(_) | Name::UriPrefix(_) => uris.iter().any(|u| n.matches_uri(u)),
    });
    if hit {
        return Ok(());
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    Err(NameMismatch::Names(format!(
        "the certificate carries none of names [{}] (it presents DNS: {}; URI: {})",
        wanted.join(", "),
        list(&dns),
        list(&uris)
    )))
}

/// The DNS and URI SANs of a certificate, as written in it.
pub fn presented_names(der: &[u8]) -> (Vec<String>, Vec<String>) {
    use x509_parser::extensions::GeneralName;
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    _ => {}
                }
            }
        }
    }
    (dns, uris)
}

/// Whether the verifier should look for another valid path after `path`:
/// while no pin (where enforced) or no next pin (where listed) was found
/// yet, so a pin on *any* valid path counts, for `pins` and `next_pins`
/// alike — the same answer `check --live` gets from all paths.
pub fn search_on(entry: Option<&HostPolicy>, now: OffsetDateTime) -> impl Fn(&[Pin]) -> bool + '_ {
    let seen_pin = std::cell::Cell::new(false);
    let seen_next = std::cell::Cell::new(false);
    move |path: &[Pin]| {
        let Some(e) = entry else {
            return false;
        };
        if path.iter().any(|p| e.pins.contains(p)) {
            seen_pin.set(true);
        }
        if path.iter().any(|p| e.next_pins.contains(p)) {
            seen_next.set(true);
        }
        let want_pin = !e.pins_expired(now) && !seen_pin.get();
        let want_next = !e.next_pins.is_empty() && !seen_next.get();
        want_pin || want_next
    }
}

/// The verdict on validated `paths` (non-empty, as [`validated_paths`]
/// returns them) for `entry` (`None`: an unlisted host).
pub fn judge(entry: Option<&HostPolicy>, now: OffsetDateTime, paths: &[Vec<Pin>]) -> Judgement {
    let first = paths.first().cloned().unwrap_or_default();
    let Some(e) = entry else {
        return Judgement {
            outcome: Outcome::PassUnpinned,
            matched: None,
            next_pins_matched: None,
            path: first,
            index: 0,
        };
    };
    let hit = paths
        .iter()
        .enumerate()
        .find_map(|(i, path)| Some(((i, path), *path.iter().find(|p| e.pins.contains(p))?)));
    let next_pins_matched =
        (!e.next_pins.is_empty()).then(|| paths.iter().flatten().any(|p| e.next_pins.contains(p)));
    let expired = e.pins_expired(now);
    let outcome = match (&e.trust, expired, hit.is_some()) {
        (Trust::PinOnly, true, _) => Outcome::ExpiredPinOnly,
        (_, true, _) => Outcome::PassPinsExpired,
        (_, false, true) => Outcome::Pass,
        (_, false, false) if e.mode == Mode::Report => Outcome::ReportedMismatch,
        (_, false, false) => Outcome::Mismatch,
    };
    Judgement {
        outcome,
        // Expired pins match nothing that counts.
        matched: hit.filter(|_| !expired).map(|(_, pin)| pin),
        next_pins_matched,
        path: hit.map_or(first, |((_, path), _)| path.clone()),
        index: hit.map_or(0, |((i, _), _)| i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(n: u8) -> Pin {
        Pin::from_bytes([n; 32])
    }

    fn entry(pins: &[u8], next: &[u8], mode: Mode, trust: Trust) -> HostPolicy {
        HostPolicy {
            index: 0,
            name: "a.test".into(),
            pins: pins.iter().map(|n| pin(*n)).collect(),
            next_pins: next.iter().map(|n| pin(*n)).collect(),
            mode,
            expires: None,
            ports: vec![443],
            trust,
            address: None,
            client_cert: None,
            names: Vec::new(),
            crls: None,
            ct: pinproxy_policy::CtMode::Off,
            upstream_protocol: pinproxy_policy::UpstreamProtocol::Auto,
        }
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-30 00:00 UTC)
    }

    #[test]
    fn any_valid_path_with_a_pin_passes_and_is_the_one_reported() {
        let e = entry(&[9], &[], Mode::Enforce, Trust::WebPki);
        let paths = vec![vec![pin(1), pin(2), pin(3)], vec![pin(1), pin(4), pin(9)]];
        let j = judge(Some(&e), now(), &paths);
        assert_eq!(j.outcome, Outcome::Pass);
        assert_eq!(j.matched, Some(pin(9)));
        assert_eq!((&j.path, j.index), (&paths[1], 1));
    }

    #[test]
    fn mismatch_report_expiry_and_next_pins() {
        let paths = vec![vec![pin(1), pin(2), pin(3)]];
        let e = entry(&[7], &[3], Mode::Enforce, Trust::WebPki);
        let j = judge(Some(&e), now(), &paths);
        assert_eq!(
            (j.outcome, j.next_pins_matched),
            (Outcome::Mismatch, Some(true))
        );
        let e = entry(&[7], &[8], Mode::Report, Trust::WebPki);
        let j = judge(Some(&e), now(), &paths);
        assert_eq!(
            (j.outcome, j.next_pins_matched),
            (Outcome::ReportedMismatch, Some(false))
        );
        let mut e = entry(&[1], &[], Mode::Enforce, Trust::PinOnly);
        e.expires = Some(now() - time::Duration::days(1));
        assert_eq!(
            judge(Some(&e), now(), &paths).outcome,
            Outcome::ExpiredPinOnly
        );
        e.trust = Trust::WebPki;
        let j = judge(Some(&e), now(), &paths);
        assert_eq!((j.outcome, j.matched), (Outcome::PassPinsExpired, None));
        assert_eq!(judge(None, now(), &paths).outcome, Outcome::PassUnpinned);
    }

    #[test]
    fn search_goes_on_until_pins_and_next_pins_are_found() {
        let e = entry(&[9], &[5], Mode::Enforce, Trust::WebPki);
        let more = search_on(Some(&e), now());
        assert!(more(&[pin(1), pin(2)]));
        assert!(more(&[pin(1), pin(9)]), "next pin still missing");
        assert!(!more(&[pin(1), pin(5)]));
        assert!(!search_on(None, now())(&[pin(1)]));
    }
}
