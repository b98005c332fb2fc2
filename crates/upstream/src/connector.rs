//! Dialing an upstream: resolution (or an entry's `address`), the egress
//! rules for unlisted hosts, TCP with a timeout per address, and the pinned
//! TLS handshake — for the pooled HTTP client (as a tower `Service<Uri>`),
//! for WebSocket upgrades and for unlisted byte tunnels alike.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::budget::{Budget, Socket};
use super::dns::{LookupError, Lookups, Share};
use super::egress;
use super::error::{classify_tls, Failure, UpstreamError};
use super::observe::{self, Observe};
use super::protocol::Protocols;
use super::Timeouts;
use pinproxy_policy::host::Host;
use pinproxy_policy::identity::ClientCert;
use pinproxy_policy::{Decision, HostPolicy, Policy, UpstreamProtocol};
use pinproxy_reason::Reason;

/// Dials an upstream with this generation's pinned TLS config. Cheap to
/// clone: the HTTP client clones it for every request.
#[derive(Clone)]
pub struct Connector(Arc<ConnectorInner>);

pub struct ConnectorInner {
    /// Every lookup goes through it (bounded, shared by generations).
    pub(super) lookups: Arc<Lookups>,
    pub(super) observe: Arc<dyn Observe>,
    pub(super) policy: Arc<Policy>,
    /// Without a client certificate: unlisted hosts and entries with none.
    pub(super) tls: Tls,
    /// Per entry (by `index`), the configs presenting its `client_cert`.
    pub(super) identities: Vec<Option<Tls>>,
    pub(super) timeouts: Timeouts,
    pub(super) own_addrs: Vec<SocketAddr>,
    /// What each upstream chose in ALPN, for the pooled clients.
    pub(super) protocols: Arc<Protocols>,
    /// The process-wide upstream connection budget every dial takes a
    /// permit from (shared by all generations).
    pub(super) budget: Budget,
}

impl std::ops::Deref for Connector {
    type Target = ConnectorInner;

    fn deref(&self) -> &ConnectorInner {
        &self.0
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// One generation's client configs for one identity: h2 and HTTP/1.1 by
/// ALPN, HTTP/1.1 only (upgrades, `upstream_protocol: h1`) and h2 only
/// (`upstream_protocol: h2`). All share the generation's verifier.
pub(super) struct Tls {
    any: Arc<ClientConfig>,
    h1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
}

impl Tls {
    /// `base` offers h2 and HTTP/1.1.
    pub(super) fn new(base: ClientConfig) -> Self {
        let mut h1 = base.clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut h2 = base.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            any: Arc::new(base),
            h1: Arc::new(h1),
            h2: Arc::new(h2),
        }
    }

    /// The config offering what `protocol` allows in ALPN.
    fn offering(&self, protocol: UpstreamProtocol) -> &Arc<ClientConfig> {
        match protocol {
            UpstreamProtocol::Auto => &self.any,
            UpstreamProtocol::H1 => &self.h1,
            UpstreamProtocol::H2 => &self.h2,
        }
    }

    /// `base` presenting `cert` (mTLS), with a store of its own (it holds
    /// key-exchange hints only: sessions are never resumed,
    /// [`super::resumption`]).
    pub(super) fn presenting(base: &ClientConfig, cert: &ClientCert) -> Self {
        let mut cfg = base.clone();
        cfg.client_auth_cert_resolver = Arc::new(Present(cert.certified.clone()));
        cfg.resumption = super::resumption::never();
        Self::new(cfg)
    }
}

/// Presents one client certificate whenever a server asks.
#[derive(Debug)]
struct Present(Arc<CertifiedKey>);

impl ResolvesClientCert for Present {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A pinned TLS connection, as the HTTP client sees it.
/// It holds its socket's budget permit ([`Socket`]) for as long as the
/// pool keeps it, idle or not.
pub struct Conn(TokioIo<TlsStream<Socket>>);

impl Connector {
    pub(super) fn new(inner: ConnectorInner) -> Self {
        Self(Arc::new(inner))
    }

    /// The entry `host` falls under in this connector's generation.
    pub fn entry(&self, host: &Host) -> Option<&Arc<HostPolicy>> {
        match self.policy.lookup(host) {
            Decision::Listed(e) => Some(e),
            Decision::Unlisted => None,
        }
    }

    /// Resolves (or takes the entry's `address`), dials each address in
    /// turn, and completes a pinned TLS handshake with SNI = `host`,
    /// offering in ALPN what the entry's (else the defaults')
    /// `upstream_protocol` allows. `entry` is what admission found for `host`.
    pub async fn connect(
        &self,
        host: &Host,
        port: u16,
        entry: Option<&HostPolicy>,
    ) -> Result<TlsStream<Socket>, UpstreamError> {
        let tls = self.tls_for(entry).offering(self.protocol(entry));
        self.connect_with(host, port, entry, tls, None).await
    }

    /// The HTTP version forwarded requests under `entry` (`None`: an
    /// unlisted host) go upstream in.
    pub fn protocol(&self, entry: Option<&HostPolicy>) -> UpstreamProtocol {
        entry.map_or(self.policy.defaults.upstream_protocol, |e| {
            e.upstream_protocol
        })
    }

    /// As [`Connector::connect`], offering only HTTP/1.1 (for upgrades).
    pub async fn connect_h1(
        &self,
        host: &Host,
        port: u16,
        entry: Option<&HostPolicy>,
    ) -> Result<TlsStream<Socket>, UpstreamError> {
        let tls = &self.tls_for(entry).h1;
        self.connect_with(host, port, entry, tls, None).await
    }

    /// The configs presenting `entry`'s client certificate, if it has one
    /// in this generation.
    fn tls_for(&self, entry: Option<&HostPolicy>) -> &Tls {
        let Some(e) = entry else {
            return &self.tls;
        };
        // `entry` comes from this generation's policy: its index finds it.
        // One from another generation is found by name, or gets none.
        let index = match self.policy.hosts.get(e.index) {
            Some(h) if std::ptr::eq(h.as_ref(), e) => Some(e.index),
            _ => self.policy.hosts.iter().position(|h| h.name == e.name),
        };
        index
            .and_then(|i| self.identities.get(i))
            .and_then(Option::as_ref)
            .unwrap_or(&self.tls)
    }

    /// A plain TCP connection to an unlisted host (for byte tunnels), with
    /// the same resolution and egress rules.
    pub async fn dial_unlisted(&self, host: &Host, port: u16) -> Result<Socket, UpstreamError> {
        let tcp = self.dial_unlisted_plain(host, port).await?;
        self.learn_by_probe(host, port, None);
        Ok(tcp)
    }

    /// A plain TCP connection to an unlisted host for plain HTTP: the same
    /// resolution and egress rules, and nothing to learn (no chain).
    pub async fn dial_unlisted_plain(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<Socket, UpstreamError> {
        let addrs = self.addresses(host, port, None).await?;
        self.dial(host, &addrs).await
    }

    /// Learn mode cannot read the TLS inside an unlisted tunnel: it dials
    /// the host once more itself (spaced, capped) to record its chain —
    /// at `at` when the app chose the address (a transparent splice, whose
    /// egress rules were checked on it), else where `host` resolves.
    pub fn learn_by_probe(&self, host: &Host, port: u16, at: Option<SocketAddr>) {
        if self.policy.defaults.unlisted != pinproxy_policy::Unlisted::Learn {
            return;
        }
        let Some(slot) = self.observe.probe_due(host, port) else {
            return;
        };
        let (this, host) = (self.clone(), host.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let at = at.map(|a| vec![a]);
            let probe = this.connect_with(&host, port, None, &this.tls.h1, at.as_deref());
            if let Ok(mut tls) = probe.await {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            }
        });
    }

    /// Where to dial: the entry's `address`, else the resolved addresses;
    /// for unlisted hosts only those the egress rules allow.
    async fn addresses(
        &self,
        host: &Host,
        port: u16,
        entry: Option<&HostPolicy>,
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        if let Some(e) = entry {
            return match e.address {
                Some(a) => Ok(vec![a]),
                None => self.resolve(host, port, Share::Listed).await,
            };
        }
        let addrs = self.resolve(host, port, Share::Unlisted).await?;
        // Unlisted egress can't be turned against the pod or the cluster:
        // checked on the resolved addresses, so DNS rebinding can't bypass it.
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.egress_allowed(a))
            .collect();
        if allowed.is_empty() {
            let list = addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let why = if addrs.iter().any(|a| egress::is_own(a, &self.own_addrs)) {
                format!("is pinproxy's own listener ({list})")
            } else {
                // Say what the operator can do: the guard is deliberate.
                format!(
                    "resolves only to private, loopback or link-local addresses ({list}), which \
                     unlisted hosts may not reach: give it an entry in the pinset, list it under \
                     passthrough: (an in-cluster service), or set defaults.allow_private: true"
                )
            };
            return Err(UpstreamError::new(Failure::PrivateAddress, host, why));
        }
        Ok(allowed)
    }

    async fn connect_with(
        &self,
        host: &Host,
        port: u16,
        entry: Option<&HostPolicy>,
        tls: &Arc<ClientConfig>,
        at: Option<&[SocketAddr]>,
    ) -> Result<TlsStream<Socket>, UpstreamError> {
        let label = entry.map_or("unlisted", |e| e.name.as_str());
        let start = Instant::now();
        let addrs = match at {
            Some(at) => at.to_vec(),
            None => self.addresses(host, port, entry).await?,
        };
        let tcp = self.dial(host, &addrs).await?;
        let server_name = match host {
            Host::Name(n) => ServerName::try_from(n.clone()).map_err(|_| {
                UpstreamError::new(
                    Failure::Untrusted(Reason::WrongName),
                    host,
                    "not a valid TLS server name",
                )
            })?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let handshake = observe::dialing(
            host,
            port,
            TlsConnector::from(tls.clone()).connect(server_name, tcp),
        );
        let tls = match tokio::time::timeout(self.timeouts.handshake, handshake).await {
            Err(_) => {
                self.observe.handshake_timed_out(label);
                return Err(UpstreamError::new(
                    Failure::Timeout,
                    host,
                    "TLS handshake timed out",
                ));
            }
            Ok(Err(e)) => {
                let (failure, reason, detail) = classify_tls(&e);
                self.observe.handshake_failed(label, reason);
                return Err(UpstreamError::new(failure, host, detail));
            }
            Ok(Ok(tls)) => tls,
        };
        self.observe.handshake_done(label, start.elapsed());
        Ok(tls)
    }

    /// pinproxy's own listeners.
    pub fn own_addrs(&self) -> Vec<SocketAddr> {
        self.own_addrs.clone()
    }

    /// Whether `addr` is one of pinproxy's own listeners (never a target).
    pub fn is_own(&self, addr: &SocketAddr) -> bool {
        egress::is_own(addr, &self.own_addrs)
    }

    /// Whether unlisted egress may go to `addr` under this generation.
    pub fn egress_allowed(&self, addr: &SocketAddr) -> bool {
        egress::allowed(addr, &self.own_addrs, self.policy.defaults.allow_private)
    }

    /// `host`'s addresses (an IP literal is its own), looked up within the
    /// connect timeout — waiting for a lookup slot of `share` included
    /// ([`Lookups`]): a name the pinset lists (`Share::Listed`) always has
    /// one, whatever unlisted names hold.
    pub async fn resolve(
        &self,
        host: &Host,
        port: u16,
        share: Share,
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        let name = match host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(name) => name,
        };
        let within = self.timeouts.connect;
        match self.lookups.lookup(name, port, share, within).await {
            Err(e @ (LookupError::TimedOut | LookupError::NoSlot { .. })) => {
                Err(UpstreamError::new(Failure::Timeout, host, e.to_string()))
            }
            Err(e @ LookupError::Failed(_)) => Err(UpstreamError::new(
                Failure::Unreachable,
                host,
                e.to_string(),
            )),
            Ok(addrs) if addrs.is_empty() => Err(UpstreamError::new(
                Failure::Unreachable,
                host,
                "DNS lookup returned no address",
            )),
            Ok(addrs) => Ok(addrs),
        }
    }

    /// The one place an upstream TCP connection is opened: with a permit
    /// of the upstream connection budget, or refused at once without one.
    pub(super) async fn dial(
        &self,
        host: &Host,
        addrs: &[SocketAddr],
    ) -> Result<Socket, UpstreamError> {
        let Some(permit) = self.budget.try_acquire() else {
            return Err(UpstreamError::new(
                Failure::Overloaded,
                host,
                format!(
                    "every upstream connection pinproxy may hold is open \
                     (--max-upstream-connections {}); try again once some have closed",
                    self.budget.size()
                ),
            ));
        };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(Socket::new(s, permit));
                }
                Ok(Err(e)) => {
                    last = Some(UpstreamError::new(
                        Failure::Unreachable,
                        host,
                        format!("connect to {addr}: {e}"),
                    ))
                }
                Err(_) => {
                    last = Some(UpstreamError::new(
                        Failure::Timeout,
                        host,
                        format!("connect to {addr} timed out"),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            UpstreamError::new(Failure::Unreachable, host, "no address to connect to")
        }))
    }
}

impl Connector {
    /// A connection for the pooled clients: `uri`'s host looked up again,
    /// dialed offering what its `upstream_protocol` allows, and (`auto`)
    /// what its upstream chose remembered ([`Protocols`]). `h2_only`: for
    /// the `http2_only` client, which needs h2 ([`Failure::NoH2`]
    /// otherwise) — unless the entry says `h2`: then h2 is spoken whatever
    /// the upstream named in ALPN (prior knowledge), and nothing is learned.
    async fn pooled(&self, uri: &Uri, h2_only: bool) -> Result<Conn, UpstreamError> {
        let raw = uri.host().unwrap_or_default();
        let host = Host::parse(raw).map_err(|e| UpstreamError {
            failure: Failure::Unreachable,
            host: raw.to_string(),
            detail: e.to_string(),
        })?;
        let port = uri.port_u16().unwrap_or(443);
        // The pool only hands us a URI: this is the one place a
        // forwarded request's host is looked up again (the verifier,
        // which sees only a ServerName, is the other).
        let entry = self.entry(&host).cloned();
        if self.protocol(entry.as_deref()) != UpstreamProtocol::Auto {
            // Fixed by the pinset: routed to the client that speaks it
            // (`Snapshot::route`), offered alone in ALPN.
            let tls = self.connect(&host, port, entry.as_deref()).await?;
            return Ok(Conn(TokioIo::new(tls)));
        }
        let known = &self.protocols;
        if h2_only {
            if known.known(&host, port) == Some(false) {
                // Requests that took the h2 client before its upstream
                // was found to speak HTTP/1.1: no dial for them.
                return Err(no_h2(raw));
            }
        } else if let Some(tls) = known.take_spare(&host, port) {
            return Ok(Conn(TokioIo::new(tls)));
        }
        let tls = self.connect(&host, port, entry.as_deref()).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        known.learned(&host, port, h2);
        if h2_only && !h2 {
            known.keep_spare(&host, port, tls);
            return Err(no_h2(raw));
        }
        Ok(Conn(TokioIo::new(tls)))
    }

    /// The pooled clients' protocol memory (this generation's).
    pub fn protocols(&self) -> &Arc<Protocols> {
        &self.protocols
    }
}

fn no_h2(host: &str) -> UpstreamError {
    UpstreamError {
        failure: Failure::NoH2,
        host: host.to_string(),
        detail: "the upstream chose HTTP/1.1; the request goes out again over it".to_string(),
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = UpstreamError;
    type Future = StdPin<Box<dyn Future<Output = Result<Conn, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.pooled(&uri, false).await })
    }
}

/// The connector of the `http2_only` client: a connection whose upstream
/// did not choose h2 is refused with [`Failure::NoH2`] (that client would
/// speak h2 on it regardless) and its host is HTTP/1.1 from then on.
#[derive(Clone, Debug)]
pub struct H2Only(pub Connector);

impl tower_service::Service<Uri> for H2Only {
    type Response = Conn;
    type Error = UpstreamError;
    type Future = StdPin<Box<dyn Future<Output = Result<Conn, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.0.clone();
        Box::pin(async move { this.pooled(&uri, true).await })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let (_, session) = self.0.inner().get_ref();
        if session.alpn_protocol() == Some(b"h2") {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        StdPin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        StdPin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        StdPin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
