//! Pinned upstream connections: one [`Snapshot`] per pinset generation holds
//! the policy, the rustls configs built around that generation's
//! [`PinVerifier`] (with their own session store) and a pooled HTTP client.
//!
//! hyper-util's pool keys on (scheme, authority) only, so the client lives
//! inside the snapshot: after a reload no idle connection or TLS session
//! verified under older pins can be reused.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::crypto::CryptoProvider;
use rustls::ClientConfig;
use rustls_pki_types::{ServerName, TrustAnchor};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::control::drift::Drift;
use crate::control::metrics::{LogLimiter, Metrics, Telemetry};
use crate::policy::host::Host;
use crate::policy::{Decision, Policy};
use crate::reason::{Outcome, Reason};
use crate::tls::verify::{self, Observer, PinVerifier};

/// Timeouts for reaching an upstream.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    /// From sending a request to the upstream's response head.
    pub response: Duration,
    pub pool_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            response: Duration::from_secs(60),
            pool_idle: Duration::from_secs(90),
        }
    }
}

/// Why an upstream could not be reached or trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// DNS failure or every address refused the connection.
    Unreachable,
    /// TCP connect or TLS handshake took too long.
    Timeout,
    /// The chain was valid but carried no pin (or a pin-only pinset expired).
    PinMismatch,
    /// The chain, name or handshake signature did not verify.
    Untrusted(Reason),
    /// The server did not speak TLS properly.
    Tls(Reason),
    /// An unlisted host resolved only to private, loopback or link-local addresses.
    PrivateAddress,
}

#[derive(Debug, thiserror::Error)]
#[error("{host}: {detail}")]
pub struct UpstreamError {
    pub failure: Failure,
    pub host: String,
    pub detail: String,
}

impl UpstreamError {
    fn new(failure: Failure, host: &Host, detail: impl Into<String>) -> Self {
        Self {
            failure,
            host: host.to_string(),
            detail: detail.into(),
        }
    }

    /// Finds an `UpstreamError` anywhere in an error's source chain.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a UpstreamError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(u) = e.downcast_ref::<UpstreamError>() {
                return Some(u);
            }
            cur = e.source();
        }
        None
    }
}

/// Everything that depends on one pinset generation.
pub struct Snapshot {
    pub generation: u64,
    pub policy: Arc<Policy>,
    /// Dials with this generation's TLS configs (also for WebSocket
    /// upgrades, which need an HTTP/1.1-only connection).
    pub connector: Connector,
    /// Pooled, for forwarded requests (h2 or HTTP/1.1 by ALPN).
    pub client: Client<Connector, Incoming>,
    /// `requests_total{outcome="ok"}` per entry (by `index`), then unlisted:
    /// resolved once here rather than by label on every request.
    ok_counters: Vec<prometheus::IntCounter>,
}

impl Snapshot {
    /// The `ok` counter of an entry of this snapshot (or of unlisted hosts).
    pub fn count_ok(&self, entry: Option<&crate::policy::HostPolicy>) {
        let index = match entry {
            None => Some(self.policy.hosts.len()),
            Some(e) => self
                .policy
                .hosts
                .get(e.index)
                .filter(|h| std::ptr::eq(h.as_ref(), e))
                .map(|_| e.index),
        };
        match index.and_then(|i| self.ok_counters.get(i)) {
            Some(c) => c.inc(),
            // An entry from another generation: look the label up.
            None => self
                .connector
                .metrics
                .requests
                .with_label_values(&[
                    entry.map_or("unlisted", |e| e.name.as_str()),
                    Outcome::Ok.as_str(),
                ])
                .inc(),
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Name resolution, injectable so tests control every answer (and never
/// ask a real resolver).
pub trait Resolve: Send + Sync + std::fmt::Debug {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> StdPin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>>;
}

/// The system resolver (getaddrinfo on a blocking thread).
#[derive(Debug)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> StdPin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        let name = name.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// How upstreams are reached: settings a runner (or a test) chooses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Name resolution; tests inject their own so no name reaches DNS.
    pub resolver: Arc<dyn Resolve>,
    pub timeouts: Timeouts,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resolver: Arc::new(SystemResolver),
            timeouts: Timeouts::default(),
        }
    }
}

/// Things a snapshot needs that outlive generations.
#[derive(Clone, Debug)]
pub struct Shared {
    pub resolver: Arc<dyn Resolve>,
    pub metrics: Arc<Metrics>,
    pub roots: Arc<[TrustAnchor<'static>]>,
    pub provider: Arc<CryptoProvider>,
    pub limiter: Arc<LogLimiter>,
    pub drift: Arc<Drift>,
    pub timeouts: Timeouts,
    /// pinproxy's own listeners (admin, proxy): never a target for
    /// unlisted egress, whatever `allow_private` says.
    pub own_addrs: Vec<SocketAddr>,
}

impl Shared {
    /// `own_addrs`: the proxy's and admin listeners' bound addresses.
    pub fn new(metrics: Arc<Metrics>, options: Options, own_addrs: Vec<SocketAddr>) -> Self {
        Self {
            resolver: options.resolver,
            metrics,
            roots: verify::webpki_roots(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            limiter: LogLimiter::new(Duration::from_secs(10), 5),
            drift: Arc::new(Drift::default()),
            timeouts: options.timeouts,
            own_addrs,
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    pub fn build(policy: Policy, generation: u64, shared: &Shared) -> Result<Self, rustls::Error> {
        let policy = Arc::new(policy);
        let observer: Arc<dyn Observer> = Arc::new(Telemetry::new(
            shared.metrics.clone(),
            generation,
            shared.limiter.clone(),
            shared.drift.clone(),
        ));
        let verifier = Arc::new(PinVerifier::new(
            policy.clone(),
            shared.roots.clone(),
            shared.provider.clone(),
            observer,
        ));
        let mut tls = ClientConfig::builder_with_provider(shared.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut tls_h1 = tls.clone();
        tls_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = Arc::new(tls);
        let tls_h1 = Arc::new(tls_h1);
        let connector = Connector(Arc::new(ConnectorInner {
            resolver: shared.resolver.clone(),
            drift: shared.drift.clone(),
            policy: policy.clone(),
            tls,
            tls_h1,
            metrics: shared.metrics.clone(),
            timeouts: shared.timeouts,
            own_addrs: shared.own_addrs.clone(),
        }));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .pool_max_idle_per_host(256)
            .build(connector.clone());
        let metrics = &shared.metrics;
        metrics.config_generation.set(generation as i64);
        metrics.pinset_expiry.reset();
        for h in &policy.hosts {
            // Series exist at 0 from load time, so `increase()` alerts fire
            // on a host's first mismatch too.
            metrics
                .pin_mismatch
                .with_label_values(&[&h.name, h.mode.as_str()]);
            if !h.next_pins.is_empty() {
                metrics.next_pins_mismatch.with_label_values(&[&h.name]);
            }
            if let Some(e) = h.expires {
                metrics
                    .pinset_expiry
                    .with_label_values(&[&h.name])
                    .set(e.unix_timestamp() as f64);
            }
        }
        let ok_counters = policy
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .chain(std::iter::once("unlisted"))
            .map(|name| {
                metrics
                    .requests
                    .with_label_values(&[name, Outcome::Ok.as_str()])
            })
            .collect();
        Ok(Self {
            ok_counters,
            generation,
            client,
            connector,
            policy,
        })
    }
}

/// Dials an upstream with this generation's pinned TLS config. Cheap to
/// clone: the HTTP client clones it for every request.
#[derive(Clone)]
pub struct Connector(Arc<ConnectorInner>);

pub struct ConnectorInner {
    resolver: Arc<dyn Resolve>,
    drift: Arc<Drift>,
    policy: Arc<Policy>,
    tls: Arc<ClientConfig>,
    tls_h1: Arc<ClientConfig>,
    metrics: Arc<Metrics>,
    timeouts: Timeouts,
    own_addrs: Vec<SocketAddr>,
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

/// A pinned TLS connection, as the HTTP client sees it.
pub struct Conn(TokioIo<TlsStream<TcpStream>>);

impl Connector {
    /// Resolves (or takes the entry's `address`), dials each address in turn,
    /// and completes a pinned TLS handshake with SNI = `host`.
    pub async fn connect(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        self.connect_with(host, port, &self.tls).await
    }

    /// As [`Connector::connect`], offering only HTTP/1.1 (for upgrades).
    pub async fn connect_h1(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        self.connect_with(host, port, &self.tls_h1).await
    }

    /// A plain TCP connection (for unlisted tunnels), with the same
    /// resolution and private-address rules.
    pub async fn dial_plain(&self, host: &Host, port: u16) -> Result<TcpStream, UpstreamError> {
        let addrs = self.addresses(host, port).await?;
        self.dial(host, &addrs).await
    }

    async fn addresses(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, UpstreamError> {
        let (address, unlisted) = match self.policy.lookup(host) {
            Decision::Listed(e) => (e.address, false),
            Decision::Unlisted => (None, true),
        };
        let addrs = match address {
            Some(a) => vec![a],
            None => self.resolve(host, port).await?,
        };
        if !unlisted {
            return Ok(addrs);
        }
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
            let why = if addrs.iter().any(|a| self.is_own(a)) {
                "is pinproxy's own listener"
            } else {
                "resolves only to private, loopback or link-local addresses"
            };
            return Err(UpstreamError::new(
                Failure::PrivateAddress,
                host,
                format!("{why} ({list})"),
            ));
        }
        let addrs = allowed;
        Ok(addrs)
    }

    async fn connect_with(
        &self,
        host: &Host,
        port: u16,
        tls: &Arc<ClientConfig>,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let label = match self.policy.lookup(host) {
            Decision::Listed(e) => e.name.as_str(),
            Decision::Unlisted => "unlisted",
        };
        let start = Instant::now();
        let addrs = self.addresses(host, port).await?;
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
        let handshake = TlsConnector::from(tls.clone()).connect(server_name, tcp);
        let tls = match tokio::time::timeout(self.timeouts.handshake, handshake).await {
            Err(_) => {
                self.count_failure(label, Reason::Timeout);
                return Err(UpstreamError::new(
                    Failure::Timeout,
                    host,
                    "TLS handshake timed out",
                ));
            }
            Ok(Err(e)) => {
                let (failure, reason, detail) = classify_tls(&e);
                self.count_failure(label, reason);
                self.drift.mark_failed(label, reason);
                return Err(UpstreamError::new(failure, host, detail));
            }
            Ok(Ok(tls)) => tls,
        };
        self.metrics
            .handshake_seconds
            .with_label_values(&[label])
            .observe(start.elapsed().as_secs_f64());
        Ok(tls)
    }

    /// The proxy's own listeners (admin, proxy): a wildcard bind matches
    /// every local address on that port.
    /// Whether unlisted egress may go to `addr` under this generation.
    pub fn egress_allowed(&self, addr: &SocketAddr) -> bool {
        !self.is_own(addr) && (self.policy.defaults.allow_private || !is_private(addr.ip()))
    }

    fn is_own(&self, target: &SocketAddr) -> bool {
        let ip = target.ip().to_canonical();
        self.own_addrs.iter().any(|own| {
            own.port() == target.port()
                && (own.ip().to_canonical() == ip
                    || own.ip().is_unspecified()
                    || ip.is_loopback()
                    || ip.is_unspecified())
        })
    }

    fn count_failure(&self, label: &str, reason: Reason) {
        self.metrics
            .tls_verify_failures
            .with_label_values(&[label, reason.as_str()])
            .inc();
    }

    async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, UpstreamError> {
        match host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(name) => {
                let lookup = self.resolver.resolve(name, port);
                match tokio::time::timeout(self.timeouts.connect, lookup).await {
                    Err(_) => Err(UpstreamError::new(
                        Failure::Timeout,
                        host,
                        "DNS lookup timed out",
                    )),
                    Ok(Err(e)) => Err(UpstreamError::new(
                        Failure::Unreachable,
                        host,
                        format!("DNS lookup failed: {e}"),
                    )),
                    Ok(Ok(addrs)) => {
                        if addrs.is_empty() {
                            Err(UpstreamError::new(
                                Failure::Unreachable,
                                host,
                                "DNS lookup returned no address",
                            ))
                        } else {
                            Ok(addrs)
                        }
                    }
                }
            }
        }
    }

    async fn dial(&self, host: &Host, addrs: &[SocketAddr]) -> Result<TcpStream, UpstreamError> {
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
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

fn classify_tls(e: &io::Error) -> (Failure, Reason, String) {
    let rustls_err = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(r) => {
            let reason = verify::failure_reason(r);
            let failure = match r {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ) => Failure::PinMismatch,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    Failure::Untrusted(reason)
                }
                _ => Failure::Tls(reason),
            };
            let detail = match failure {
                Failure::PinMismatch => "the validated certificate chain carries none of this host's pins \
                     (or its pin-only pinset expired); the presented pins are in pinproxy's log and /pins"
                    .to_string(),
                _ => format!("TLS handshake failed: {r}"),
            };
            (failure, reason, detail)
        }
        None if e.kind() == io::ErrorKind::UnexpectedEof => (
            Failure::Tls(Reason::Closed),
            Reason::Closed,
            "connection closed during the TLS handshake".into(),
        ),
        None => (
            Failure::Tls(Reason::Io),
            Reason::Io,
            format!("TLS handshake failed: {e}"),
        ),
    }
}

/// Loopback, private (RFC 1918, ULA), link-local (cloud metadata),
/// unspecified, CGNAT and similar non-public ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Addresses that embed an IPv4 address: judge the embedded one.
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_private(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || s[..6] == [0; 6] // IPv4-compatible ::a.b.c.d (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] && embedded(s[6], s[7])) // NAT64 well-known
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // NAT64 local-use
                || (s[0] == 0x2002 && embedded(s[1], s[2])) // 6to4
        }
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
        Box::pin(async move {
            let raw = uri.host().unwrap_or_default();
            let host = Host::parse(raw).map_err(|e| UpstreamError {
                failure: Failure::Unreachable,
                host: raw.to_string(),
                detail: e.to_string(),
            })?;
            let port = uri.port_u16().unwrap_or(443);
            this.connect(&host, port)
                .await
                .map(|s| Conn(TokioIo::new(s)))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "172.32.0.1",
            "2002:101:101::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
