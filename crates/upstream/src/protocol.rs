//! What each upstream chose in ALPN, remembered for one generation, and
//! which pooled client a forwarded request therefore takes.
//!
//! hyper-util's legacy pool deduplicates connects to one host only when it
//! knows beforehand that the connection will be HTTP/2 (`http2_only`): with
//! h2 negotiated by ALPN, every request that finds no idle connection
//! starts its own TLS handshake, and all but the first are dropped once
//! ALPN says h2 ("ALPN upgraded to HTTP/2"). A burst of first requests to
//! one host thus cost one handshake per request. So:
//!
//! - a host not known to speak HTTP/1.1 only (h2, or not known yet) is
//!   sent through the snapshot's `http2_only` client, whose connecting
//!   lock lets one connect run while every other request waits for the
//!   connection it makes;
//! - when that connect finds the upstream chose HTTP/1.1, the host is
//!   remembered as such, the connection is kept aside as a spare and the
//!   request is refused unsent
//!   ([`Failure::NoH2`](super::error::Failure::NoH2)): it goes out again
//!   through the ALPN client, which takes the spare rather than dialing
//!   again — so an HTTP/1.1 upstream costs no extra handshake, and an
//!   upstream that stops offering h2 fails no request.
//!
//! A failed connect is not shared. When the one connect fails,
//! hyper-util ends the other requests' wait with a connect error
//! ("request was canceled": the pool drops its waiters along with the
//! failed connect), unsent. Each then goes out again through the ALPN
//! client on a connect of its own, with its own handshake and verdict
//! as before, all in parallel. So a request that waited is answered
//! within two connects' time (each bounded by the connect and handshake
//! timeouts) when a host's connects fail.
//!
//! When the memory is full (`MAX_HOSTS`, `MAX_PORTS`), a host it has no
//! room for takes the ALPN client: a connection per concurrent request, as
//! before this memory existed — never an h2 connect refused on every
//! request because its answer cannot be remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_rustls::client::TlsStream;

use super::budget::Socket;
use pinproxy_policy::host::Host;

/// At most this many hosts are remembered per generation (wildcard and
/// unlisted hosts are unbounded): beyond it a new host is served through
/// the ALPN client, and not remembered.
const MAX_HOSTS: usize = 4096;

/// How long a spare HTTP/1.1 connection waits for the request it was made
/// for (resent at once) before it is closed.
const SPARE_FOR: Duration = Duration::from_secs(1);

/// The pooled client a forwarded request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// h2, or not known yet: the `http2_only` client.
    H2,
    /// HTTP/1.1: the ALPN client.
    Alpn,
    /// `upstream_protocol: h2`: the `http2_only` client, h2 by prior
    /// knowledge, never resent over HTTP/1.1.
    H2Prior,
}

/// What is known of one host.
#[derive(Default)]
struct State {
    /// `Some(true)`: the upstream chose h2 on its last connection.
    h2: Option<bool>,
    /// An unused HTTP/1.1 connection, made by the h2 client's connect
    /// (boxed: most hosts never have one, and a full map stays small).
    spare: Option<(Box<TlsStream<Socket>>, Instant)>,
}

/// At most this many ports are remembered per host.
const MAX_PORTS: usize = 16;

/// Per host, per port: a lookup borrows the host (no allocation on the
/// request path).
type Hosts = HashMap<Host, Vec<(u16, State)>>;

/// Per (host, port), what its upstream chose in ALPN (one generation).
#[derive(Default)]
pub struct Protocols {
    hosts: Mutex<Hosts>,
}

fn port_of(ports: &[(u16, State)], port: u16) -> Option<&State> {
    ports.iter().find(|(p, _)| *p == port).map(|(_, s)| s)
}

fn get<'a>(hosts: &'a Hosts, host: &Host, port: u16) -> Option<&'a State> {
    port_of(hosts.get(host)?, port)
}

fn get_mut<'a>(hosts: &'a mut Hosts, host: &Host, port: u16) -> Option<&'a mut State> {
    let ports = hosts.get_mut(host)?;
    ports.iter_mut().find(|(p, _)| *p == port).map(|(_, s)| s)
}

impl std::fmt::Debug for Protocols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Protocols")
    }
}

impl Protocols {
    fn lock(&self) -> std::sync::MutexGuard<'_, Hosts> {
        // Every update is one field set: a panic elsewhere while holding
        // the lock leaves a consistent map.
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on `host:port`'s state, creating it if there is room.
    fn with<R>(&self, host: &Host, port: u16, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        let mut hosts = self.lock();
        if !hosts.contains_key(host) && hosts.len() >= MAX_HOSTS {
            return None;
        }
        let ports = hosts.entry(host.clone()).or_default();
        let i = match ports.iter().position(|(p, _)| *p == port) {
            Some(i) => i,
            None if ports.len() >= MAX_PORTS => return None,
            None => {
                ports.push((port, State::default()));
                ports.len() - 1
            }
        };
        Some(f(&mut ports[i].1))
    }

    /// Which client a request to `host:port` takes: the h2 client unless
    /// the host is known to speak HTTP/1.1, or there is no room to
    /// remember what it speaks (then a connect refused for speaking
    /// HTTP/1.1 would be refused again on every request).
    pub fn route(&self, host: &Host, port: u16) -> Route {
        let hosts = self.lock();
        let Some(ports) = hosts.get(host) else {
            return if hosts.len() >= MAX_HOSTS {
                Route::Alpn
            } else {
                Route::H2
            };
        };
        match port_of(ports, port) {
            Some(State {
                h2: Some(false), ..
            }) => Route::Alpn,
            Some(_) => Route::H2,
            None if ports.len() >= MAX_PORTS => Route::Alpn,
            None => Route::H2,
        }
    }

    /// Whether `host:port`'s upstream chose h2, if known.
    pub fn known(&self, host: &Host, port: u16) -> Option<bool> {
        get(&self.lock(), host, port).and_then(|s| s.h2)
    }

    /// Records what a completed handshake with `host:port` chose.
    pub(super) fn learned(&self, host: &Host, port: u16, h2: bool) {
        self.with(host, port, |s| s.h2 = Some(h2));
    }

    /// Keeps `tls` (HTTP/1.1, unused) for the ALPN client's next connect
    /// to `host:port`; closed if not taken within [`SPARE_FOR`].
    pub(super) fn keep_spare(
        self: &std::sync::Arc<Self>,
        host: &Host,
        port: u16,
        tls: TlsStream<Socket>,
    ) {
        let at = Instant::now();
        let kept = self.with(host, port, |s| s.spare = Some((Box::new(tls), at)));
        if kept.is_some() {
            let (this, host) = (self.clone(), host.clone());
            tokio::spawn(async move {
                tokio::time::sleep(SPARE_FOR).await;
                drop(this.take_spare_made_at(&host, port, at));
            });
        }
    }

    /// The spare connection to `host:port` if it is the one kept at `at`
    /// (a newer spare is left for its own request).
    fn take_spare_made_at(
        &self,
        host: &Host,
        port: u16,
        at: Instant,
    ) -> Option<Box<TlsStream<Socket>>> {
        let mut hosts = self.lock();
        let state = get_mut(&mut hosts, host, port)?;
        match &state.spare {
            Some((_, made)) if *made == at => state.spare.take().map(|(tls, _)| tls),
            _ => None,
        }
    }

    /// The spare connection to `host:port`, if one is fresh.
    pub(super) fn take_spare(&self, host: &Host, port: u16) -> Option<TlsStream<Socket>> {
        let spare = get_mut(&mut self.lock(), host, port)?.spare.take();
        // Closed (dropped) outside the lock.
        let (tls, at) = spare?;
        (at.elapsed() < SPARE_FOR).then_some(*tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host::parse("api.example.com").unwrap()
    }

    #[test]
    fn a_host_takes_the_h2_client_until_it_is_known_to_speak_http1() {
        let p = Protocols::default();
        assert_eq!(p.route(&host(), 443), Route::H2);
        p.learned(&host(), 443, true);
        assert_eq!(p.route(&host(), 443), Route::H2);
        p.learned(&host(), 443, false);
        assert_eq!(p.route(&host(), 443), Route::Alpn);
        assert_eq!(p.known(&host(), 443), Some(false));
        // Another port is another upstream.
        assert_eq!(p.route(&host(), 8443), Route::H2);
        assert_eq!(p.known(&host(), 8443), None);
        // It offers h2 again: the h2 client again.
        p.learned(&host(), 443, true);
        assert_eq!(p.route(&host(), 443), Route::H2);
    }

    #[test]
    fn the_map_is_bounded() {
        let p = Protocols::default();
        for port in 0..MAX_PORTS as u16 {
            p.learned(&host(), port, false);
        }
        let extra = MAX_PORTS as u16;
        p.learned(&host(), extra, false);
        assert_eq!(p.known(&host(), extra), None);
        // No room to learn what it speaks: the ALPN client, which needs
        // no memory (never an h2 connect refused on every request).
        assert_eq!(p.route(&host(), extra), Route::Alpn);
        assert_eq!(p.known(&host(), 0), Some(false));
        for i in 0..MAX_HOSTS {
            let h = Host::parse(&format!("h{i}.example.com")).unwrap();
            p.learned(&h, 443, false);
        }
        let last = Host::parse("last.example.com").unwrap();
        p.learned(&last, 443, false);
        assert_eq!(p.known(&last, 443), None);
        assert_eq!(p.route(&last, 443), Route::Alpn);
        // Hosts already remembered keep their route.
        let first = Host::parse("h0.example.com").unwrap();
        assert_eq!(p.route(&first, 443), Route::Alpn);
        p.learned(&first, 443, true);
        assert_eq!(p.route(&first, 443), Route::H2);
    }
}
