//! Admission: may a target be dialed, and under which pinset entry?
//!
//! Pure answers from a [`Policy`]: the proxy asks before dialing, and asks
//! again after every reload for what it keeps open (tunnels, WebSockets,
//! streaming responses). An [`Admission`] can only be made here, so holding
//! one proves the policy was asked.

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use super::host::Host;
use super::{Decision, HostPolicy, Policy, Trust};
use pinproxy_reason::Reason;

/// A request target after validation: normalized host and upstream port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// What the policy said about a target: let through under an entry, as an
/// unlisted host, or as passthrough traffic.
#[derive(Clone, Debug)]
pub struct Admission(Admitted);

#[derive(Clone, Debug)]
enum Admitted {
    Pinned(Arc<HostPolicy>),
    Unlisted,
    /// Relayed as it came, under the `passthrough:` item (as written).
    Passthrough(Arc<str>),
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
    /// The entry the target was admitted under; `None` for unlisted and
    /// passthrough targets.
    pub fn entry(&self) -> Option<&Arc<HostPolicy>> {
        match &self.0 {
            Admitted::Pinned(e) => Some(e),
            _ => None,
        }
    }

    /// The `passthrough:` item the target passes by, as written.
    pub fn passthrough(&self) -> Option<&str> {
        match &self.0 {
            Admitted::Passthrough(label) => Some(label),
            _ => None,
        }
    }

    /// Whether the target is an unlisted host (CA validation only).
    pub fn is_unlisted(&self) -> bool {
        matches!(self.0, Admitted::Unlisted)
    }

    /// The metric and log label: the entry or passthrough item as written,
    /// or `unlisted`.
    pub fn label(&self) -> &str {
        match &self.0 {
            Admitted::Pinned(e) => &e.name,
            Admitted::Unlisted => "unlisted",
            Admitted::Passthrough(label) => label,
        }
    }

    /// Would `target`, admitted as `self` (and connected to `peer`, for
    /// what is already open), still be let through under `policy` (a newer
    /// generation)? Pinned targets must keep an entry that enforces the
    /// same thing; unlisted ones must stay unlisted and allowed;
    /// passthrough ones must still pass by the same item.
    pub fn still_holds(
        &self,
        policy: &Policy,
        target: &Target,
        peer: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> bool {
        let mut again = decide(policy, target, now).map(|a| a.0);
        if let (Admitted::Passthrough(_), Some(ip)) = (&self.0, peer) {
            // Admitted by the address its name resolved to.
            if !matches!(again, Ok(Admitted::Pinned(_))) {
                if let Some(a) = by_address(policy, target, &[ip]) {
                    again = Ok(a.0);
                }
            }
        }
        match (&self.0, again) {
            (Admitted::Pinned(old), Ok(Admitted::Pinned(new))) => same_enforcement(old, &new),
            (Admitted::Unlisted, Ok(Admitted::Unlisted)) => true,
            (Admitted::Passthrough(old), Ok(Admitted::Passthrough(new))) => *old == new,
            _ => false,
        }
    }
}

/// Passthrough by address: an unlisted name whose every resolved address
/// lies in one `passthrough:` CIDR (a short in-cluster name such as
/// `orders` resolving into the Service CIDR). Entries always win: a name
/// with an entry is never passed through.
pub fn by_address(policy: &Policy, target: &Target, addrs: &[IpAddr]) -> Option<Admission> {
    if addrs.is_empty() || matches!(policy.lookup(&target.host), Decision::Listed(_)) {
        return None;
    }
    let first = policy.passthrough.by_address(addrs[0])?;
    addrs
        .iter()
        .all(|a| policy.passthrough.by_address(*a) == Some(first))
        .then(|| Admission(Admitted::Passthrough(first.into())))
}

/// Policy checks that need no network: entries (which win), passthrough
/// by name or IP literal, then unlisted deny, ports, expired pin-only
/// entries.
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
            if let Some(label) = policy.passthrough.by_host(&target.host) {
                return Ok(Admission(Admitted::Passthrough(label.into())));
            }
            let refuse = |reason, message| Refusal {
                reason,
                message,
                entry: None,
            };
            // `learn` admits as `allow` does; only what is recorded differs.
            if !policy.defaults.unlisted.admits() {
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
/// address, CT, trust and the CA bundle's contents, names, what the CRLs
/// revoke) and present the same client certificate. A rotated client
/// certificate counts as a change: connections made with the old one end
/// a grace period after the rotation, so an identity withdrawn is
/// withdrawn everywhere, not only from new connections.
pub fn same_enforcement(a: &HostPolicy, b: &HostPolicy) -> bool {
    let same_identity = match (&a.client_cert, &b.client_cert) {
        (None, None) => true,
        (Some(x), Some(y)) => x.same_identity(y),
        _ => false,
    };
    let same_crls = match (&a.crls, &b.crls) {
        (None, None) => true,
        (Some(x), Some(y)) => x.same_revocations(y),
        _ => false,
    };
    same_identity && same_crls && a.names == b.names && same_pinning(a, b)
}

fn same_pinning(a: &HostPolicy, b: &HostPolicy) -> bool {
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
        && a.ct == b.ct
}
