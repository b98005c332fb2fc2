//! Admission: may a target be dialed, and under which pinset entry?
//!
//! Pure answers from a [`Policy`]: the proxy asks once per request or
//! connection ([`decide`], one clock reading), carries the [`Admission`]
//! along, and asks again only after a reload, for what it keeps open
//! (tunnels, WebSockets, streaming responses: [`Admission::still_holds`]).
//! An [`Admission`] can only be made here, so holding one proves the policy
//! was asked.
//!
//! One question may need one fact the policy cannot know: where an unlisted
//! name resolves (or, in transparent mode, which address the app dialed),
//! when `passthrough:` lists CIDRs. [`decide`] says so
//! ([`Answer::wants_addresses`]); the caller resolves and completes the
//! same answer ([`Answer::finish`]) — never a second decision.

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
        let answer = decide(policy, target, now);
        // A passthrough admitted by the address its name resolved to is
        // judged by that address again.
        let peer = match (&self.0, peer) {
            (Admitted::Passthrough(_), Some(ip)) => vec![ip],
            _ => Vec::new(),
        };
        let again = answer.finish(policy, &peer).map(|a| a.0);
        match (&self.0, again) {
            (Admitted::Pinned(old), Ok(Admitted::Pinned(new))) => same_enforcement(old, &new),
            (Admitted::Unlisted, Ok(Admitted::Unlisted)) => true,
            (Admitted::Passthrough(old), Ok(Admitted::Passthrough(new))) => *old == new,
            _ => false,
        }
    }
}

/// The policy's answer about one target: final, or — for an unlisted
/// target when `passthrough:` lists CIDRs — final once the addresses it
/// resolves to (or was dialed at) are known.
#[must_use = "an answer is a decision: finish it, or it was never made"]
#[derive(Debug)]
pub struct Answer {
    /// What holds unless the addresses pass the target through.
    result: Result<Admission, Refusal>,
    /// Unlisted, and CIDRs could pass it: its addresses may decide.
    by_address: bool,
}

// === impl Answer ===

impl Answer {
    /// Whether the addresses the target resolves to may change this answer
    /// (an unlisted *name*: an IP literal was judged by its address
    /// already), so the caller should resolve before [`Answer::finish`].
    pub fn wants_addresses(&self) -> bool {
        self.by_address
    }

    /// The admission, given where the target is: the addresses its name
    /// resolved to, or the one a transparent client dialed (empty: none
    /// known). An unlisted target every one of whose addresses lies in one
    /// `passthrough:` CIDR passes through by it (a short in-cluster name
    /// such as `orders` resolving into the Service CIDR); anything else
    /// keeps the answer [`decide`] gave. Entries always win: a name with an
    /// entry is never passed through.
    pub fn finish(self, policy: &Policy, addrs: &[IpAddr]) -> Result<Admission, Refusal> {
        if !self.by_address || addrs.is_empty() {
            return self.result;
        }
        let Some(first) = policy.passthrough.by_address(addrs[0]) else {
            return self.result;
        };
        if addrs
            .iter()
            .all(|a| policy.passthrough.by_address(*a) == Some(first))
        {
            return Ok(Admission(Admitted::Passthrough(first.into())));
        }
        self.result
    }
}

/// Admission by address alone, for a connection that names nothing (a
/// server-first protocol in transparent mode): passed through when `ip`
/// lies in a `passthrough:` CIDR and no entry lists that address. The one
/// question such a connection is asked.
pub fn by_address(policy: &Policy, ip: IpAddr) -> Option<Admission> {
    if policy.pending || matches!(policy.lookup(&Host::from_ip(ip)), Decision::Listed(_)) {
        return None;
    }
    let label = policy.passthrough.by_address(ip)?;
    Some(Admission(Admitted::Passthrough(label.into())))
}

/// The one admission question: entries (which win), passthrough by name or
/// IP literal, then unlisted deny, ports, expired pin-only entries — checks
/// that need no network — at `now`. What the addresses may still change is
/// in the [`Answer`].
pub fn decide(policy: &Policy, target: &Target, now: OffsetDateTime) -> Answer {
    let result = judge(policy, target, now);
    let unlisted = match &result {
        Ok(a) => a.is_unlisted(),
        Err(r) => r.entry.is_none(),
    };
    let name = matches!(target.host, Host::Name(_));
    Answer {
        result,
        // Before a pinset is in force nothing passes, by address either.
        by_address: !policy.pending && unlisted && name && policy.passthrough.has_cidrs(),
    }
}

/// Nothing before a pinset is in force ([`Policy::pending`]), then the
/// checks [`decide`] lists.
fn judge(policy: &Policy, target: &Target, now: OffsetDateTime) -> Result<Admission, Refusal> {
    if policy.pending {
        return Err(Refusal {
            reason: Reason::NoPinset,
            message: "no pinset is in force yet: pinproxy waits for a validly signed pinset \
                      and lets nothing through meanwhile (its /readyz says why)"
                .into(),
            entry: None,
        });
    }
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
pub(crate) fn same_enforcement(a: &HostPolicy, b: &HostPolicy) -> bool {
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
