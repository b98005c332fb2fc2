//! The upstream room: reaching servers under one pinset generation.
//!
//! - [`Snapshot`] ([`snapshot`]) is everything that depends on one
//!   generation: the policy, the rustls configs built around that
//!   generation's pin verifier (never resuming a session: [`resumption`])
//!   and a pooled HTTP client. hyper-util's pool keys on (scheme,
//!   authority) only, so the client lives inside the snapshot: after a
//!   reload no idle connection verified under older pins can be reused.
//! - [`Lookups`] ([`dns`]) bounds name lookups in flight (getaddrinfo
//!   holds a thread each), keeping a share for hosts the pinset lists, and
//!   joins requests for one name into one lookup.
//! - [`Connector`] ([`connector`]) resolves (or takes an entry's
//!   `address`), applies the [`egress`] rules to unlisted hosts, dials and
//!   completes the pinned handshake.
//! - [`Budget`] ([`budget`]) counts every upstream socket, idle pooled
//!   ones included, against one process-wide limit: a dial past it is
//!   refused (`overloaded`), so upstreams never take the descriptors the
//!   listeners, `/readyz` and reloads need.
//! - [`Protocols`] ([`protocol`]) remembers what each upstream chose in
//!   ALPN, so a host that speaks h2 gets one connection, not one per
//!   request of a burst.
//! - [`UpstreamError`] ([`error`]) says why an upstream could not be
//!   reached or trusted, in the terms of the contract's reasons.
//! - [`Observe`] ([`observe`]) is how this room reports dials, handshakes,
//!   verdicts and requests: the control plane implements it, so this room
//!   depends on nothing above it.

#![forbid(unsafe_code)]

pub mod budget;
pub mod connector;
pub mod dns;
pub mod egress;
pub mod error;
pub mod observe;
pub mod passthrough;
pub mod protocol;
pub mod resumption;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{Budget, Socket};
pub use connector::{Conn, Connector, H2Only};
pub use dns::{Lookups, Resolve, Share, SystemResolver};
pub use error::{Failure, UpstreamError};
pub use observe::{Observe, Requests};
pub use protocol::{Protocols, Route};
pub use snapshot::{BodyFault, RequestBody, Shared, Snapshot, UpBody};

/// Timeouts for reaching an upstream.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    /// From sending a request to the upstream's response head.
    pub response: Duration,
    /// How long a pooled connection may idle, and how often hyper-util's
    /// pool sweeps (the same duration; it has no other knob): an h2
    /// connection the upstream closed keeps its pool entry (~12.5 KiB)
    /// until the next sweep unless the same host is asked again. 30 s, not
    /// hyper-util's 90 s: a third of what closed entries under many names
    /// can pile up (review 9 F4), and idle connections give their place in
    /// `--max-upstream-connections` back sooner; servers commonly close
    /// idle connections within 5-75 s anyway (Node 5 s, nginx 75 s).
    pub pool_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            response: Duration::from_secs(60),
            pool_idle: Duration::from_secs(30),
        }
    }
}

/// How upstreams are reached: settings a runner (or a test) chooses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Name resolution; tests inject their own so no name reaches DNS.
    pub resolver: Arc<dyn Resolve>,
    pub timeouts: Timeouts,
    /// Name lookups in flight at most ([`Lookups`]).
    pub max_dns_lookups: usize,
    /// The upstream sockets all generations may hold open at once.
    pub budget: Budget,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resolver: Arc::new(SystemResolver),
            timeouts: Timeouts::default(),
            max_dns_lookups: Lookups::DEFAULT_MAX,
            budget: Budget::default(),
        }
    }
}
