//! pinproxy: a sidecar egress proxy that lets a workload's outbound TLS
//! through only when the *validated* chain carries a pinned key.
//!
//! How data flows:
//!
//! - [`config`] reads the pinset YAML (with [`host`] and [`pin`]) into an
//!   immutable `Policy`.
//! - [`upstream::Snapshot`] wraps one policy generation: a [`verify`]
//!   `PinVerifier`, rustls client configs with their own session store, and a
//!   pooled HTTP client whose [`upstream::Connector`] dials and handshakes.
//! - [`proxy`] accepts clients: absolute-form requests go to
//!   `proxy::forward`, CONNECT to `proxy::connect`, which terminates the
//!   client's TLS with a leaf from [`intercept`] for pinned hosts.
//! - [`reload`] watches the mounted Secret and swaps in new snapshots;
//!   [`admin`] serves health, readiness, [`metrics`] and the `/pins` view.
//! - [`cmd`] implements the `run`, `pin` and `check` commands ([`probe`] and
//!   [`chain`] serve `pin --connect` and `check --live`); [`inject`] adds the
//!   sidecar to Kubernetes manifests, [`webhook`] does the same at admission.

#![forbid(unsafe_code)]

pub mod admin;
pub mod chain;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod drift;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod inject;
pub mod intercept;
pub mod metrics;
pub mod pin;
pub mod probe;
pub mod proxy;
pub mod reload;
pub mod upstream;
pub mod verify;
pub mod webhook;
