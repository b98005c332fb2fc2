//! Kubernetes delivery: `inject` and the admission webhook.

pub mod inject;
pub mod redirect;
pub mod webhook;
