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

use std::sync::Arc;

/// rustls's *ring* provider, for the webhook's server and the API client,
/// key exchange X25519 first. The proxy's own is `pinproxy_tls::provider()`
/// (the same provider; this room does not see that one): its comments say
/// why *ring* (deprecated by rustls 0.23.48 for having no post-quantum key
/// exchange) and why the groups are listed (0.23.48 moved P-384 first).
/// `tests/webhook.rs` checks that the two offer the same groups.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::ring::default_provider()
    })
}
