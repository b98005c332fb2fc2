//! pinproxy: a sidecar egress proxy that lets a workload's outbound TLS
//! through only when the *validated* chain carries a pinned key.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod k8s;
pub mod netfilter;
pub mod policy;
pub mod proxy;
pub mod reason;
pub mod tls;
pub mod upstream;
