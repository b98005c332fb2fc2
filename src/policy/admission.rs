//! Admission: may a target be dialed, and under which pinset entry?
//!
//! Pure answers from a [`Policy`]: the proxy asks before dialing, and asks
//! again after every reload for what it keeps open (tunnels, WebSockets,
//! streaming responses). An [`Admission`] can only be made here, so holding
//! one proves the policy was asked.

use std::sync::Arc;

use time::OffsetDateTime;

use super::host::Host;
use super::{Decision, HostPolicy, Policy, Trust, Unlisted};
use crate::reason::Reason;

/// A request target after validation: normalized host and upstream port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// What the policy said about a target: let through under an entry, or
/// as an unlisted host.
#[derive(Clone, Debug)]
pub struct Admission(Admitted);

#[derive(Clone, Debug)]
enum Admitted {
    Pinned(Arc<HostPolicy>),
    Unlisted,
}

/// Why the policy refuses a target before any dialing.
#[derive(Debug)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
    /// The entry the target matched, if any (its metric label).
    pub entry: Option<Arc<HostPolicy>>,
}

// === impl Admission ===

impl Admission {
    /// The entry the target was admitted under; `None` for unlisted hosts.
    pub fn entry(&self) -> Option<&Arc<HostPolicy>> {
        match &self.0 {
            Admitted::Pinned(e) => Some(e),
            Admitted::Unlisted => None,
        }
    }

    /// The metric and log label: the entry as written, or `unlisted`.
    pub fn label(&self) -> &str {
        self.entry().map_or("unlisted", |e| e.name.as_str())
    }

    /// Would `target`, admitted as `self`, still be let through under
    /// `policy` (a newer generation)? Pinned targets must keep an entry
    /// that enforces the same thing; unlisted ones must stay unlisted and
    /// allowed.
    pub fn still_holds(&self, policy: &Policy, target: &Target, now: OffsetDateTime) -> bool {
        match (&self.0, decide(policy, target, now).map(|a| a.0)) {
            (Admitted::Pinned(old), Ok(Admitted::Pinned(new))) => same_enforcement(old, &new),
            (Admitted::Unlisted, Ok(Admitted::Unlisted)) => true,
            _ => false,
        }
    }
}

/// Policy checks that need no network: unlisted deny, ports, expired
/// pin-only entries.
pub fn decide(policy: &Policy, target: &Target, now: OffsetDateTime) -> Result<Admission, Refusal> {
    match policy.lookup(&target.host) {
        Decision::Listed(entry) => {
            let refuse = |reason, message| Refusal {
                reason,
                message,
                entry: Some(entry.clone()),
            };
            if !entry.ports.contains(&target.port) {
                return Err(refuse(
                    Reason::PortNotAllowed,
                    format!(
                        "port {} is not in ports {:?} of entry {:?}",
                        target.port, entry.ports, entry.name
                    ),
                ));
            }
            if matches!(entry.trust, Trust::PinOnly) && entry.pins_expired(now) {
                return Err(refuse(
                    Reason::PinMismatch,
                    "the pin-only pinset has expired and nothing else can authenticate this host; renew the pins".into(),
                ));
            }
            Ok(Admission(Admitted::Pinned(entry.clone())))
        }
        Decision::Unlisted => {
            let refuse = |reason, message| Refusal {
                reason,
                message,
                entry: None,
            };
            if policy.defaults.unlisted == Unlisted::Deny {
                return Err(refuse(
                    Reason::HostNotAllowed,
                    "host is not in the pinset and unlisted hosts are denied".into(),
                ));
            }
            if !policy.defaults.ports.contains(&target.port) {
                return Err(refuse(
                    Reason::PortNotAllowed,
                    format!(
                        "port {} is not in defaults.ports {:?}",
                        target.port, policy.defaults.ports
                    ),
                ));
            }
            Ok(Admission(Admitted::Unlisted))
        }
    }
}

/// Whether two entries enforce the same thing (pins, mode, expiry, ports,
/// address, trust and the CA bundle's contents).
pub fn same_enforcement(a: &HostPolicy, b: &HostPolicy) -> bool {
    let same_trust = match (&a.trust, &b.trust) {
        (Trust::WebPki, Trust::WebPki) | (Trust::PinOnly, Trust::PinOnly) => true,
        (Trust::Bundle { anchors: x, .. }, Trust::Bundle { anchors: y, .. }) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(p, q)| {
                    p.subject_public_key_info == q.subject_public_key_info && p.subject == q.subject
                })
        }
        _ => false,
    };
    same_trust
        && a.pins == b.pins
        && a.mode == b.mode
        && a.expires == b.expires
        && a.ports == b.ports
        && a.address == b.address
}
