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
/// rustls's *ring* provider, key exchange X25519 first, one instance for
/// the process.
///
/// rustls 0.23.48 deprecated `ring::default_provider` because *ring* has no
/// post-quantum key exchange (X25519MLKEM768); rustls's other provider,
/// aws-lc-rs, has. Moving to it is a change of its own (a C library in the
/// static musl build, the binary's size and code layout, the benchmarks'
/// figures), not made by the update that brought the deprecation. This and
/// the k8s room's copy (`pinproxy_k8s::provider`, which the room map keeps
/// from seeing this one; `tests/webhook.rs` ties the two) are the only
/// places that name *ring*'s provider; `clippy.toml` keeps rustls's
/// process default out.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(ring_provider())).clone()
}

/// *ring*'s provider with its key exchange groups in the order rustls
/// shipped them through 0.23.46: X25519, P-256, P-384. 0.23.48 moved P-384
/// first, so a client built on the default sends a P-384 key share in
/// every upstream handshake (servers choose among the client's shares in
/// the client's order, so they answer in P-384): a slower key exchange on
/// both sides of every fresh upstream connection, for no gain pinproxy
/// wants. The TLS server side (interception) follows the client's order
/// either way.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    CryptoProvider {
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::ring::default_provider()
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, HandshakeKind, NamedGroup, ServerConnection};

    use super::*;

    /// The groups, in order: X25519, then the two NIST curves as fallbacks
    /// (docs/reference.md, "Proxy behaviour").
    #[test]
    fn key_exchange_groups_are_x25519_p256_p384_in_that_order() {
        let names: Vec<NamedGroup> = provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            names,
            [
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
    }

    /// A real handshake (in memory) between a client built on
    /// [`provider`] and a rustls server that supports P-384 first in its
    /// list (rustls's own default since 0.23.48; a rustls server follows
    /// the client's order, so this checks what the client offers): X25519
    /// is negotiated, in one round trip (a client leading with a share the
    /// server lacks would need a HelloRetryRequest).
    #[test]
    fn upstream_handshakes_use_x25519_without_a_retry() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["up.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let p384_first = CryptoProvider {
            kx_groups: vec![
                rustls::crypto::ring::kx_group::SECP384R1,
                rustls::crypto::ring::kx_group::X25519,
            ],
            ..(*provider()).clone()
        };
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(p384_first))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let name = ServerName::try_from("up.test").unwrap();
        let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        let mut buf = Vec::new();
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            buf.clear();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets().unwrap();
            buf.clear();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking(), "handshake did not finish");
        let group = c.negotiated_key_exchange_group().map(|g| g.name());
        assert_eq!(group, Some(NamedGroup::X25519));
        assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
    }
}
