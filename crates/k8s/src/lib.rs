//! Kubernetes delivery, never on the request path:
//!
//! - [`inject`]: add the sidecar to manifests (`pinproxy inject`);
//! - [`webhook`]: the mutating admission webhook doing the same at pod
//!   creation, through the same code;
//! - [`redirect`]: the kernel rules of transparent mode, installed by an
//!   init container (`pinproxy redirect`);
//! - [`status`]: the fleet view through the API server (`pinproxy status`).

#![forbid(unsafe_code)]

pub mod inject;
pub mod redirect;
pub mod status;
pub mod webhook;
