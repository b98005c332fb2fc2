//! pinproxy: a sidecar egress proxy that lets a workload's outbound TLS
//! through only when the *validated* chain carries a pinned key.
//!
//! # Rooms
//!
//! | room | owns | may use (crate) | may not |
//! |---|---|---|---|
//! | [`reason`] | the contract's names: status, `x-pinproxy-error`, metric labels | — | anything |
//! | [`policy`] | host names, pins, the pinset file (wire types, validation), the compiled `Policy`, admission | `reason` | sockets, tokio, HTTP |
//! | [`tls`] | the pin verifier and the one verdict on a chain, probes, certificate summaries, the pod CA | `policy`, `reason` | HTTP, the proxy, the control plane |
//! | [`upstream`] | one generation's snapshot (verifier, TLS configs, pool), the connector, egress rules | `policy`, `tls`, `reason`, control's sinks (`metrics`, `drift`, `telemetry`) | publishing snapshots, the proxy |
//! | [`proxy`] | listeners and per-connection serving: forward, CONNECT, interception, tunnels, upgrades, refusals | `policy`, `tls`, `upstream`, `reason`, `control::Live` (read), `control::metrics` | reloading, publishing, the file watcher |
//! | [`control`] | the live snapshot and its one publisher (the reloader), the file watcher, admin, metrics, telemetry, drift | `policy`, `tls`, `upstream`, `reason` | the proxy |
//! | [`k8s`] | `inject`, the admission webhook, the transparent-mode rule installer | — | anything on the request path |
//! | [`app`] | building and serving a whole proxy, for `pinproxy run` and the tests | every room but `cli`, `k8s` | — |
//! | [`cli`] | one file per command; maps errors to exit codes | everything | — |
//!
//! `tests/layout.rs` checks these walls on the source.
//!
//! # One request's path
//!
//! `GET http://api.example.com/v1` arrives through `HTTP_PROXY`:
//!
//! 1. [`proxy::serve`] accepts the connection (a `--max-connections` slot)
//!    and `proxy::conn` serves HTTP/1.1 on it, parking it when idle.
//! 2. [`proxy::forward`] parses the target once ([`proxy::target`]),
//!    subscribes to the generation watch, loads the snapshot in force from
//!    [`control::Live`] and asks [`policy::admission::decide`]: refused
//!    (counted, with its [`reason::Reason`]) or an [`policy::Admission`]
//!    naming the entry.
//! 3. The request goes through the snapshot's pooled client to the
//!    [`upstream::Connector`], which dials the entry's `address` (or the
//!    resolved addresses, filtered by [`upstream::egress`] for unlisted
//!    hosts) and handshakes with this generation's
//!    [`tls::verify::PinVerifier`]: webpki validates the paths, and
//!    [`tls::verdict::judge`] matches the pins against the *validated*
//!    path only — the same function `pinproxy check --live` predicts with.
//! 4. The verdict is reported to [`control::telemetry`] (metrics, drift
//!    view, logs); a refusal becomes a 502 with `x-pinproxy-error`.
//! 5. The response streams back ([`proxy::body`]), cut if a reload published
//!    by [`control::reload::Reloader`] revokes the admission it was made
//!    under.
//!
//! CONNECT follows the same steps in [`proxy::connect`]: pinned hosts are
//! intercepted with the pod CA ([`tls::ca`], [`proxy::intercept`]) and each
//! inner request goes through step 3; unlisted ones are spliced as bytes.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub use pinproxy_control as control;
#[doc(hidden)]
pub mod fuzzing;
pub use pinproxy_k8s as k8s;
pub use pinproxy_policy as policy;
pub use pinproxy_proxy as proxy;
pub use pinproxy_reason as reason;
pub use pinproxy_tls as tls;
pub use pinproxy_upstream as upstream;
