//! Admission on the data path. Every request (forward, each request inside
//! an intercepted tunnel) and every CONNECT or redirected connection is
//! admitted exactly once — one [`admission::decide`], one clock reading —
//! here, and the [`Admission`] is carried along to where the target is
//! dialed and to what watches it for revocation. A refusal is made (logged
//! and counted) here too. While the memory guard says the process is
//! overloaded ([`super::overload`]), everything is refused here first:
//! new work on connections already open.

use std::net::{IpAddr, SocketAddr};

use super::overload;
use super::refusal::{refuse, Refused};
use super::Context;
use pinproxy_policy::admission::{self, Admission, Target};
use pinproxy_reason::Reason;
use pinproxy_upstream::{Share, Snapshot};

/// Why a redirected connection that names no host, in no passthrough
/// CIDR, is refused, and what to do about it: it sent nothing, or sent
/// neither TLS nor HTTP.
const SILENT: &str = "the client sent nothing (a server-first protocol such as MySQL, SSH or \
                      SMTP?); list the destination in a passthrough: CIDR, or leave it out of \
                      the redirect (--transparent-exclude-cidr, --transparent-ports)";
const NEITHER: &str = "neither TLS nor HTTP on a redirected connection (a client-first protocol \
                       such as PostgreSQL or Redis?); list the destination in a passthrough: \
                       CIDR, or leave it out of the redirect (--transparent-exclude-cidr, \
                       --transparent-ports)";

/// What admission said, and the addresses a passthrough-by-CIDR name
/// resolved to (dialed as they are, never resolved again).
#[derive(Debug)]
pub struct Admitted {
    pub admission: Admission,
    pub resolved: Option<Vec<SocketAddr>>,
}

/// Where the target is, should the policy's answer want its addresses (an
/// unlisted name when `passthrough:` lists CIDRs).
#[derive(Clone, Copy, Debug)]
pub enum Place {
    /// Resolve its name (forward and CONNECT): a short in-cluster name such
    /// as `orders` passes when every address lies in one CIDR.
    Resolve,
    /// The address the app dialed (transparent mode): the app chose it, so
    /// that address is judged.
    Dialed(IpAddr),
    /// Nowhere to look: a request inside an intercepted tunnel, whose host
    /// was admitted (as pinned) to open it.
    Unknown,
}

/// Admits `target` under the snapshot `snap`: the policy is asked once, at
/// one instant, and the answer completed by the target's addresses where
/// they can decide. A refusal is logged and counted (under the entry the
/// target matched, if any) before it is returned to be answered. Over
/// `--max-memory`, `overloaded` before the policy is asked.
pub async fn admit(
    ctx: &Context,
    snap: &Snapshot,
    target: &Target,
    place: Place,
) -> Result<Admitted, Refused> {
    if ctx.overload.is_on() {
        let host = target.host.to_string();
        return Err(overloaded(ctx, &host));
    }
    let now = time::OffsetDateTime::now_utc();
    let answer = admission::decide(&snap.policy, target, now);
    let (ips, resolved) = match place {
        _ if !answer.wants_addresses() => (Vec::new(), None),
        // Only unlisted names want addresses: they take no lookup slot
        // held for the pinset's hosts.
        Place::Resolve => match snap
            .connector
            .resolve(&target.host, target.port, Share::Unlisted)
            .await
        {
            Ok(addrs) => (addrs.iter().map(SocketAddr::ip).collect(), Some(addrs)),
            // Unresolvable: judged as the name alone (the dial then fails
            // as `upstream-unreachable`, if it is let through at all).
            Err(_) => (Vec::new(), None),
        },
        Place::Dialed(ip) => (vec![ip], None),
        Place::Unknown => (Vec::new(), None),
    };
    match answer.finish(&snap.policy, &ips) {
        Ok(admission) => {
            // Passed through by these addresses: dialed at exactly them.
            let resolved = resolved.filter(|_| admission.passthrough().is_some());
            Ok(Admitted {
                admission,
                resolved,
            })
        }
        Err(r) => {
            if let (Reason::PinMismatch, Some(e)) = (r.reason, &r.entry) {
                // A `pin-only` entry past `expires`, refused before any
                // handshake: what is blocked for a pin reason counts where
                // the pin-mismatch alert looks, handshake or not.
                ctx.metrics
                    .pin_mismatch
                    .with_label_values(&[&e.name, e.mode.as_str()])
                    .inc();
            }
            let entry = r.entry.as_ref().map(|e| e.name.as_str());
            let host = target.host.to_string();
            Err(refuse(ctx, r.reason, entry, &host, &r.message))
        }
    }
}

/// Admits a redirected connection that names no host — it sent nothing
/// within the first-byte timeout (a server-first protocol), or neither TLS
/// nor HTTP (PostgreSQL, Redis) — by the address the app dialed alone:
/// passed through when a `passthrough:` CIDR holds it (a database, SSH,
/// SMTP in the cluster). Anything else is refused (`bad-request`: there is
/// nothing to judge), logged and counted.
pub fn admit_unnamed(
    ctx: &Context,
    snap: &Snapshot,
    orig: SocketAddr,
    silent: bool,
) -> Result<Admission, Refused> {
    if ctx.overload.is_on() {
        return Err(overloaded(ctx, &orig.to_string()));
    }
    admission::by_address(&snap.policy, orig.ip()).ok_or_else(|| {
        let message = if silent { SILENT } else { NEITHER };
        refuse(ctx, Reason::BadRequest, None, &orig.to_string(), message)
    })
}

/// New work refused while resident memory is over `--max-memory`.
#[cold]
fn overloaded(ctx: &Context, host: &str) -> Refused {
    refuse(ctx, Reason::Overloaded, None, host, overload::REFUSAL)
}
