//! The drift view: per pinset entry, the chain last seen upstream and which
//! pins it matched — what an operator reads during a key rotation (`/pins`).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Serialize, Serializer};

use pinproxy_tls::cert::CertInfo;
use pinproxy_tls::verify::{Outcome, Verdict};

/// What became of a chain: the verifier's verdict on it, or why there was
/// none — `last_seen.outcome` in `/pins`, and a failure report's `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainOutcome {
    /// Judged against the pins.
    Judged(Outcome),
    /// Refused before pins were looked at (untrusted, expired, wrong name…).
    Untrusted,
    /// Judged as passing, then the handshake failed (a bad handshake
    /// signature): the view must not say "pass".
    HandshakeFailed,
}

// === impl ChainOutcome ===

impl ChainOutcome {
    /// Every value, in the reference's order.
    pub const ALL: &'static [ChainOutcome] = &[
        ChainOutcome::Judged(Outcome::Pass),
        ChainOutcome::Judged(Outcome::PassPinsExpired),
        ChainOutcome::Judged(Outcome::PassUnpinned),
        ChainOutcome::Judged(Outcome::ReportedMismatch),
        ChainOutcome::Judged(Outcome::Mismatch),
        ChainOutcome::Judged(Outcome::ExpiredPinOnly),
        ChainOutcome::Untrusted,
        ChainOutcome::HandshakeFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChainOutcome::Judged(o) => o.as_str(),
            ChainOutcome::Untrusted => "untrusted",
            ChainOutcome::HandshakeFailed => "handshake-failed",
        }
    }

    /// A verdict that let the chain pass on its pins (or without any):
    /// what a later handshake failure overrides.
    fn passed(self) -> bool {
        matches!(
            self,
            ChainOutcome::Judged(Outcome::Pass | Outcome::PassPinsExpired | Outcome::PassUnpinned)
        )
    }
}

impl std::fmt::Display for ChainOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ChainOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SeenCert {
    #[serde(flatten)]
    pub info: CertInfo,
    /// On the path webpki validated (the leaf under pin-only).
    pub on_validated_path: bool,
    pub matches_pin: bool,
    pub matches_next_pin: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastSeen {
    pub generation: u64,
    /// RFC 3339.
    pub seen_at: String,
    pub outcome: ChainOutcome,
    /// Why the handshake failed after the chain was judged, if it did.
    pub failure: Option<&'static str>,
    pub matched_pin: Option<String>,
    /// `None` when the entry has no `next_pins`.
    pub next_pins_matched: Option<bool>,
    /// As presented, leaf first; a trust anchor the server did not send is
    /// appended (subject "trust anchor").
    pub chain: Vec<SeenCert>,
    /// notAfter of the leaf, Unix time.
    pub leaf_not_after: i64,
}

#[derive(Debug, Default)]
pub struct Drift {
    seen: Mutex<HashMap<String, (Vec<u8>, LastSeen)>>,
}

// === impl Drift ===

impl Drift {
    /// Records a verdict; returns the leaf's notAfter when the chain is new.
    pub fn record(
        &self,
        v: &Verdict<'_>,
        generation: u64,
        next_pins: &[pinproxy_policy::pin::Pin],
    ) -> Option<i64> {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut key: Vec<u8> = v.end_entity.as_ref().to_vec();
        for c in v.intermediates {
            key.extend_from_slice(c.as_ref());
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, last)) = seen.get_mut(v.host) {
            if *k == key && last.generation == generation {
                // Same chain under the same pinset: only the verdict moves.
                last.seen_at = now;
                last.outcome = ChainOutcome::Judged(v.outcome);
                last.failure = None;
                last.matched_pin = v.matched.map(|p| p.to_string());
                last.next_pins_matched = v.next_pins_matched;
                return None;
            }
        }
        let mut chain: Vec<SeenCert> = std::iter::once(v.end_entity)
            .chain(v.intermediates.iter())
            .filter_map(|c| CertInfo::from_der(c.as_ref()).ok())
            .map(|info| seen_cert(info, v, next_pins))
            .collect();
        if let Some(anchor) = v.path_pins.last().filter(|_| v.path_pins.len() > 1) {
            let pin = anchor.to_string();
            if !chain.iter().any(|c| c.info.pin == pin) {
                let info = CertInfo {
                    pin,
                    subject: v
                        .anchor_subject
                        .clone()
                        .unwrap_or_else(|| "trust anchor".into()),
                    issuer: String::new(),
                    not_after: String::new(),
                    not_after_unix: 0,
                };
                chain.push(seen_cert(info, v, next_pins));
            }
        }
        let leaf_not_after = chain.first().map(|c| c.info.not_after_unix).unwrap_or(0);
        let last = LastSeen {
            generation,
            seen_at: now,
            outcome: ChainOutcome::Judged(v.outcome),
            failure: None,
            matched_pin: v.matched.map(|p| p.to_string()),
            next_pins_matched: v.next_pins_matched,
            chain,
            leaf_not_after,
        };
        seen.insert(v.host.to_string(), (key, last));
        Some(leaf_not_after)
    }

    /// A chain the verifier refused before judging pins (untrusted, expired,
    /// wrong name): the drift view shows *this* chain and why, not the last
    /// good one — after a CA move, that is what the operator needs to see.
    pub fn record_rejected(
        &self,
        host: &str,
        generation: u64,
        reason: pinproxy_reason::Reason,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
    ) {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let chain: Vec<SeenCert> = std::iter::once(end_entity)
            .chain(intermediates.iter())
            .filter_map(|c| CertInfo::from_der(c.as_ref()).ok())
            .map(|info| SeenCert {
                info,
                on_validated_path: false,
                matches_pin: false,
                matches_next_pin: false,
            })
            .collect();
        let last = LastSeen {
            generation,
            seen_at: now,
            outcome: ChainOutcome::Untrusted,
            failure: Some(reason.as_str()),
            matched_pin: None,
            next_pins_matched: None,
            leaf_not_after: chain.first().map(|c| c.info.not_after_unix).unwrap_or(0),
            chain,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // An empty key: the next verdict, whatever its chain, is recorded
        // afresh.
        seen.insert(host.to_string(), (Vec::new(), last));
    }

    /// A handshake whose verdict was recorded then failed later (a bad
    /// handshake signature): the drift view must not say "pass".
    pub fn mark_failed(&self, host: &str, reason: pinproxy_reason::Reason) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, last)) = seen.get_mut(host).filter(|(_, l)| l.outcome.passed()) {
            last.outcome = ChainOutcome::HandshakeFailed;
            last.failure = Some(reason.as_str());
        }
    }

    /// Keeps only the hosts `keep` says yes to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|h, _| keep(h));
    }

    pub fn get(&self, host: &str) -> Option<LastSeen> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(host).map(|(_, l)| l.clone())
    }
}

fn seen_cert(info: CertInfo, v: &Verdict<'_>, next_pins: &[pinproxy_policy::pin::Pin]) -> SeenCert {
    let pin = info.pin.parse::<pinproxy_policy::pin::Pin>().ok();
    let has = |set: &[pinproxy_policy::pin::Pin]| pin.is_some_and(|p| set.contains(&p));
    SeenCert {
        on_validated_path: has(v.path_pins),
        matches_pin: has(v.expected),
        matches_next_pin: has(next_pins),
        info,
    }
}
