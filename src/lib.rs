//! pinproxy: a sidecar egress proxy that lets a workload's outbound TLS
//! through only when the *validated* chain carries a pinned key.
//!
//! # Rooms
//!
//! Each room is a crate of the workspace, and the crate graph is the room
//! map: a room can only name the crates its `Cargo.toml` lists, so the
//! compiler keeps the walls (linkerd2-proxy's way). This crate holds the
//! binary's own part ([`app`], [`cli`], `main`) and re-exports the rooms
//! under their names, so tests and `fuzz/` reach everything through
//! `pinproxy::…`.
//!
//! | room (crate) | owns | depends on | must not depend on |
//! |---|---|---|---|
//! | [`reason`] (`pinproxy-reason`) | the contract's names: status, `x-pinproxy-error`, metric labels | — | tokio, hyper, rustls |
//! | [`policy`] (`pinproxy-policy`) | host names, pins, the pinset file (wire types, validation), the compiled `Policy`, admission | reason | tokio, hyper, http, tokio-rustls, notify, socket2, prometheus |
//! | [`tls`] (`pinproxy-tls`) | the pin verifier and the one verdict on a chain, probes, certificate summaries, the pod CA | policy, reason | hyper, http |
//! | [`upstream`] (`pinproxy-upstream`) | one generation's snapshot (verifier, TLS configs, pool), the connector, egress rules; reports through its own [`upstream::Observe`] | policy, tls, reason | notify, prometheus |
//! | [`control`] (`pinproxy-control`) | the live snapshot and its one publisher (the reloader), the file watcher, admin, metrics, telemetry (implements `Observe`), drift | policy, tls, upstream, reason, sign | the proxy |
//! | [`proxy`] (`pinproxy-proxy`) | listeners and per-connection serving: forward, CONNECT, interception, tunnels, upgrades, refusals | policy, tls, upstream, reason, control (`Live`, `metrics`, `logs` only) | notify, serde_yaml |
//! | [`sign`] (`pinproxy-sign`) | pinset keys and signatures (cosign's format), the rollback floor and its state file, the admission rule | — | tokio, hyper, serde_yaml |
//! | [`k8s`] (`pinproxy-k8s`) | `inject`, the admission webhooks, the transparent-mode rule installer, `status` | sign | — (no room depends on it) |
//! | [`app`] | building and serving a whole proxy, for `pinproxy run` and the tests | every room but `k8s` | — |
//! | [`cli`] | one file per command; maps errors to exit codes | everything | — |
//!
//! [`sign`] (`pinproxy-sign`, pure: keys, signatures, the rollback floor,
//! the admission rule) is used by the reloader (`run --pinset-key`), the
//! webhook's `POST /validate` and the `sign`/`keygen`/`check --key`
//! commands. `crates/ct` (Certificate Transparency, stapled OCSP) is a
//! pure crate not wired in yet. `tests/layout.rs`
//! checks the graph with `cargo metadata` and, parsing each crate, that no
//! two of its modules use each other.
//!
//! # One request's path
//!
//! `GET http://api.example.com/v1` arrives through `HTTP_PROXY`:
//!
//! 1. [`proxy::serve`] accepts the connection (a `--max-connections` slot)
//!    and `proxy::conn` serves HTTP/1.1 on it, parking it when idle.
//! 2. [`proxy::forward`] parses the target once ([`proxy::target`]),
//!    subscribes to the generation watch, loads the snapshot in force from
//!    [`control::Live`] and admits it once ([`proxy::admit::admit`]: one
//!    [`policy::admission::decide`], one clock reading): an
//!    [`policy::Admission`] naming the entry, carried from there, or a
//!    refusal made by [`proxy::refusal::refuse`], which counts exactly
//!    what its [`reason::Reason`]'s row declares.
//! 3. The request goes through the snapshot's pooled client to the
//!    [`upstream::Connector`], which dials the entry's `address` (or the
//!    resolved addresses, filtered by [`upstream::egress`] for unlisted
//!    hosts) and handshakes with this generation's
//!    [`tls::verify::PinVerifier`]: webpki validates the paths, and
//!    [`tls::verdict::judge`] matches the pins against the *validated*
//!    path only — the same function `pinproxy check --live` predicts with.
//! 4. The verdict goes to the generation's observer: upstream reports
//!    through its own [`upstream::Observe`], which [`control::telemetry`]
//!    implements (metrics, drift view, logs); a refusal becomes a 502 with
//!    `x-pinproxy-error`.
//! 5. The response streams back ([`proxy::body`]), cut if a reload published
//!    by [`control::reload::Reloader`] revokes the admission it was made
//!    under.
//!
//! CONNECT follows the same steps in [`proxy::connect`]: pinned hosts are
//! intercepted with the pod CA ([`tls::ca`], [`proxy::intercept`]) and each
//! inner request goes through step 3; unlisted ones are spliced as bytes.
//! docs/architecture.md draws this path, and one reload's.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod reference;

pub use pinproxy_control as control;
pub use pinproxy_k8s as k8s;
pub use pinproxy_policy as policy;
pub use pinproxy_proxy as proxy;
pub use pinproxy_reason as reason;
pub use pinproxy_sign as sign;
pub use pinproxy_tls as tls;
pub use pinproxy_upstream as upstream;
