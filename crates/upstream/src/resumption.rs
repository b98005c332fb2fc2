//! Upstream TLS sessions are never resumed; what each server prefers for
//! its key exchange is still remembered.
//!
//! rustls does not call the certificate verifier on a resumed handshake
//! (no certificate is sent), so a resumed session would skip everything
//! [`pinproxy_tls::verify::PinVerifier`] judges beyond the pins of the
//! generation it was made under: the leaf's expiry, a pin-only entry's
//! `expires`, the stapled OCSP response and Certificate Transparency. An
//! attack review had a server whose staple turned `revoked` (and one whose
//! leaf expired) keep passing for as long as it kept resuming. Go and
//! OkHttp re-check on resumption; rustls gives no hook to, so every
//! upstream connection is a full, judged handshake. Pooled connections
//! make that rare: a resumed handshake would save a few signature checks,
//! not the key exchange.
//!
//! The store still keeps each server's key-exchange group ([`NoResume`]
//! wraps rustls' own memory cache for it), so a server that wants another
//! group than the first one offered is not asked again on every connection
//! (a HelloRetryRequest, one more round trip).

use std::sync::Arc;

use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12Resumption};
use rustls::client::{Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::NamedGroup;
use rustls_pki_types::ServerName;

/// How many servers' key-exchange groups are remembered (rustls' default
/// store size).
const SERVERS: usize = 256;

/// A resumption setting that never resumes and remembers key-exchange
/// groups; one store per call (a generation's, or an identity's).
pub fn never() -> Resumption {
    Resumption::store(Arc::new(NoResume(ClientSessionMemoryCache::new(SERVERS))))
        .tls12_resumption(Tls12Resumption::Disabled)
}

/// Keeps key-exchange hints, drops every session and ticket.
#[derive(Debug)]
struct NoResume(ClientSessionMemoryCache);

impl ClientSessionStore for NoResume {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.0.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.kx_hint(server_name)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, _: ServerName<'static>, _: Tls13ClientSessionValue) {}

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_dropped_and_hints_kept() {
        let store = NoResume(ClientSessionMemoryCache::new(SERVERS));
        let name = ServerName::try_from("up.test").unwrap();
        store.set_kx_hint(name.clone(), NamedGroup::secp384r1);
        assert_eq!(store.kx_hint(&name), Some(NamedGroup::secp384r1));
        assert!(store.tls12_session(&name).is_none());
        assert!(store.take_tls13_ticket(&name).is_none());
    }
}
