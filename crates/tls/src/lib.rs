//! The TLS room: the pin verifier, probes, certificate summaries, the pod CA.

#![forbid(unsafe_code)]

pub mod ca;
pub mod cert;
pub mod ct;
pub mod keyfile;
pub mod probe;
pub mod verdict;
pub mod verify;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The cryptography of every TLS connection pinproxy makes or accepts:
/// rustls's *ring* provider, one instance for the process.
///
/// rustls 0.23.48 deprecated `ring::default_provider` because *ring* has no
/// post-quantum key exchange (X25519MLKEM768); rustls's other provider,
/// aws-lc-rs, has. Moving to it is a change of its own (a C library in the
/// static musl build, the binary's size and code layout, the benchmarks'
/// figures), not made by the update that brought the deprecation: this is
/// the one place that names *ring*'s provider.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
