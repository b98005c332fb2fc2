//! Test support: a PKI made with rcgen, real TLS upstreams on 127.0.0.1,
//! the proxy started in-process, and a small HTTP client that talks to it.
#![allow(dead_code)]

pub mod alpn;
pub mod netns;
pub mod pod;
pub mod udp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use pinproxy::app::{CaSource, Config};
use pinproxy::control::drift::Drift;
use pinproxy::control::metrics::Metrics;
use pinproxy::control::{Live, Reloader};
use pinproxy::policy::pin::Pin;
use pinproxy::proxy::Limits;
use pinproxy::tls::ca::Intercept;
use pinproxy::upstream::Options;

// === PKI ===

pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn pin(&self) -> Pin {
        Pin::of_certificate(self.cert.der()).unwrap()
    }

    pub fn key_copy(&self) -> KeyPair {
        KeyPair::from_pem(&self.key.serialize_pem()).unwrap()
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pinproxy tests");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365);
    p
}

pub fn root(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(cn).self_signed(&key).unwrap();
    Ca { cert, key }
}

/// An intermediate CA named `cn` with its own (or the given) key.
pub fn intermediate(cn: &str, issuer: &Ca, key: Option<KeyPair>) -> Ca {
    let key = key.unwrap_or_else(|| KeyPair::generate().unwrap());
    let cert = ca_params(cn)
        .signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap();
    Ca { cert, key }
}

pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub key: KeyPair,
}

impl Leaf {
    pub fn pin(&self) -> Pin {
        Pin::of_certificate(&self.cert).unwrap()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

pub struct LeafOpts {
    pub expired: bool,
}

pub fn leaf(names: &[&str], issuer: &Ca) -> Leaf {
    leaf_with(names, issuer, LeafOpts { expired: false }, None)
}

pub fn leaf_with(names: &[&str], issuer: &Ca, opts: LeafOpts, key: Option<KeyPair>) -> Leaf {
    let key = key.unwrap_or_else(|| KeyPair::generate().unwrap());
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(names[0]);
    p.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).to_string().try_into().unwrap()),
        })
        .collect();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    if opts.expired {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(90);
    }
    let cert = p.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
    Leaf {
        cert: cert.der().clone(),
        key,
    }
}

/// A normal PKI: root → intermediate → leaf for `names`.
pub struct Pki {
    pub root: Ca,
    pub int: Ca,
    pub leaf: Leaf,
}

impl Pki {
    pub fn new(names: &[&str]) -> Self {
        let root = root("Test Root");
        let int = intermediate("Test Intermediate", &root, None);
        let leaf = leaf(names, &int);
        Self { root, int, leaf }
    }

    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.leaf.cert.clone(), self.int.der()]
    }
}

pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

// === upstreams ===

pub struct UpstreamOpts {
    pub name: &'static str,
    pub alpn: Vec<Vec<u8>>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

impl UpstreamOpts {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
        }
    }

    pub fn h1_only(mut self) -> Self {
        self.alpn = vec![b"http/1.1".to_vec()];
        self
    }

    pub fn h2_only(mut self) -> Self {
        self.alpn = vec![b"h2".to_vec()];
        self
    }

    pub fn tls12_only(mut self) -> Self {
        self.versions = vec![&rustls::version::TLS12];
        self
    }

    pub fn tls13_only(mut self) -> Self {
        self.versions = vec![&rustls::version::TLS13];
        self
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

/// Presents `chain` but signs the handshake with whatever key it is given:
/// with a key that doesn't match the leaf, it is an impostor.
#[derive(Debug)]
struct FixedResolver(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

pub async fn upstream(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    opts: UpstreamOpts,
) -> Upstream {
    upstream_at("127.0.0.1:0".parse().unwrap(), chain, key, opts).await
}

/// As [`upstream`], listening on `bind` (e.g. an address inside a test
/// network namespace).
pub async fn upstream_at(
    bind: SocketAddr,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    opts: UpstreamOpts,
) -> Upstream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(CertifiedKey::new(chain, signing));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&opts.versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedResolver(certified)));
    cfg.alpn_protocols = opts.alpn.clone();
    let (addr, connections) = serve_tls_until(cfg, opts.name, bind, None).await;
    Upstream { addr, connections }
}

/// An upstream that *requires* a client certificate issued by one of
/// `client_roots` (rustls' WebPkiClientVerifier) and reports the identity
/// it saw on every response: `x-client-pin` (the client leaf's SPKI pin)
/// and `x-client-subject`. Handshakes it refused are counted.
pub struct MtlsUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    /// Handshakes that failed (no client certificate, or an untrusted one).
    pub refused: Arc<AtomicUsize>,
}

pub async fn mtls_upstream(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: &[CertificateDer<'static>],
    name: &'static str,
) -> MtlsUpstream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for r in client_roots {
        roots.add(r.clone()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (counter, refusals) = (connections.clone(), refused.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(_) => {
                        refusals.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                let seen = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| pinproxy::tls::cert::CertInfo::from_der(c.as_ref()).ok());
                let (pin, subject) =
                    seen.map_or(("none".into(), "none".into()), |i| (i.pin, i.subject));
                let svc = service_fn(move |req| {
                    let (pin, subject) = (pin.clone(), subject.clone());
                    async move {
                        let mut resp = upstream_handler(name, req).await?;
                        let h = resp.headers_mut();
                        h.insert("x-client-pin", pin.parse().unwrap());
                        h.insert("x-client-subject", subject.parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    MtlsUpstream {
        addr,
        connections,
        refused,
    }
}

/// Presents whichever chain it was last given: a server that rotates its
/// certificate (or moves CA) while clients stay connected elsewhere.
#[derive(Debug)]
struct SwitchResolver(std::sync::Mutex<Arc<CertifiedKey>>);

impl ResolvesServerCert for SwitchResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.lock().unwrap().clone())
    }
}

/// An upstream whose certificate can be switched between handshakes.
pub struct SwitchableUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    resolver: Arc<SwitchResolver>,
    /// Bumped on every switch: open connections close, as a server that
    /// restarts with its new certificate closes them.
    restarts: tokio::sync::watch::Sender<u64>,
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<CertifiedKey> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).unwrap();
    Arc::new(CertifiedKey::new(chain, signing))
}

impl SwitchableUpstream {
    /// New handshakes present `chain`, signed with `key`.
    pub fn switch(&self, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) {
        *self.resolver.0.lock().unwrap() = certified(chain, key);
        self.restarts.send_modify(|n| *n += 1);
    }
}

pub async fn switchable_upstream(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    opts: UpstreamOpts,
) -> SwitchableUpstream {
    let name = opts.name;
    let resolver = Arc::new(SwitchResolver(std::sync::Mutex::new(certified(chain, key))));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    cfg.alpn_protocols = opts.alpn;
    // No resumption: every new connection shows the certificate in force
    // (a resumed session would carry the old identity across a switch).
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let (restarts, rx) = tokio::sync::watch::channel(0);
    let (addr, connections) =
        serve_tls_until(cfg, name, "127.0.0.1:0".parse().unwrap(), Some(rx)).await;
    SwitchableUpstream {
        addr,
        connections,
        resolver,
        restarts,
    }
}

/// Serves `upstream_handler` over TLS with `cfg` on `bind`; open
/// connections close when `restarts` changes.
async fn serve_tls_until(
    cfg: ServerConfig,
    name: &'static str,
    bind: SocketAddr,
    restarts: Option<tokio::sync::watch::Receiver<u64>>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let mut restarts = restarts.clone();
            if let Some(rx) = restarts.as_mut() {
                // Only restarts after this connection was accepted close it.
                rx.borrow_and_update();
            }
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req| upstream_handler(name, req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serve = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                tokio::pin!(serve);
                match restarts.as_mut() {
                    Some(rx) => {
                        tokio::select! {
                            _ = serve.as_mut() => return,
                            _ = rx.changed() => {}
                        }
                        // A restart closes connections gracefully (GOAWAY,
                        // close_notify), as a real server does.
                        serve.as_mut().graceful_shutdown();
                        let _ = serve.await;
                    }
                    None => {
                        let _ = serve.await;
                    }
                }
            });
        }
    });
    (addr, connections)
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Echoes what it saw; `/grpc` answers with trailers; `/ws` upgrades and
/// echoes bytes; `/hop` tells the upgrade headers it got; `/switch`
/// answers every request with a `101` to h2c, then echoes.
async fn upstream_handler(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let path = req.uri().path().to_string();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    if path == "/spoof" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"spoofed")).boxed());
        resp.headers_mut()
            .insert("x-pinproxy-error", "pin-mismatch".parse().unwrap());
        return Ok(resp);
    }
    if path == "/stream" {
        // 50 chunks, 100 ms apart: a long-lived streaming response.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            for i in 0..50 {
                if tx
                    .send(Ok(http_body::Frame::data(Bytes::from(format!(
                        "chunk {i}\n"
                    )))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        return Ok(Response::new(
            http_body_util::StreamBody::new(ChannelStream(rx)).boxed(),
        ));
    }
    if path == "/hop" {
        // What arrived of the upgrade headers.
        let saw = |n: &str| {
            req.headers()
                .get_all(n)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let text = format!(
            "upgrade=[{}] connection=[{}] http2-settings=[{}]",
            saw("upgrade"),
            saw("connection"),
            saw("http2-settings")
        );
        return Ok(Response::new(Full::new(Bytes::from(text)).boxed()));
    }
    if path == "/switch" {
        // A hostile upstream: switches to h2c whatever was asked, then
        // echoes (a tunnel, if anything relayed it).
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()).boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(http::header::UPGRADE, "h2c".parse().unwrap());
        resp.headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        return Ok(resp);
    }
    if path == "/ws" {
        let saw_proxy_auth = req.headers().contains_key("proxy-authorization")
            || req.headers().contains_key("x-hop");
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()).boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(http::header::UPGRADE, "websocket".parse().unwrap());
        resp.headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        let saw = if saw_proxy_auth { "yes" } else { "no" };
        resp.headers_mut()
            .insert("x-saw-hop-by-hop", saw.parse().unwrap());
        return Ok(resp);
    }
    let te = req
        .headers()
        .get(http::header::TE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if path == "/grpc" {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "ok".parse().unwrap());
        let frames = futures_stream(body, trailers);
        let mut resp = Response::new(frames);
        resp.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        return Ok(resp);
    }
    let text = format!(
        "upstream={name} host={host} path={path} version={version} te={te} body={}",
        String::from_utf8_lossy(&body)
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
    resp.headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    Ok(resp)
}

struct ChannelStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ChannelStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

fn futures_stream(data: Bytes, trailers: http::HeaderMap) -> UpBody {
    use http_body::Frame;
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(data)),
        Ok(Frame::trailers(trailers)),
    ];
    http_body_util::StreamBody::new(tokio_stream_iter(frames)).boxed()
}

fn tokio_stream_iter<T: Send + Unpin + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T>
    where
        T: Unpin,
    {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

// === the proxy ===

pub mod proxy;

pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    pub drift: Arc<Drift>,
    pub metrics: Arc<Metrics>,
    pub intercept: Arc<Intercept>,
    pub dir: tempfile::TempDir,
    pub pins_path: PathBuf,
    stop: watch::Sender<bool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts the proxy in-process on 127.0.0.1:0 with the pinset `yaml`,
/// written into a fresh directory (relative CA bundle paths resolve there).
pub async fn proxy(yaml: &str, files: &[(&str, String)]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        write(dir.path(), name, contents);
    }
    let pins_path = write(dir.path(), "pins.yaml", yaml);
    proxy_at(dir, pins_path, false).await
}

/// Starts the proxy on an existing pinset path, optionally with the
/// directory watcher running.
pub async fn proxy_at(dir: tempfile::TempDir, pins_path: PathBuf, watch: bool) -> Proxy {
    proxy_full(dir, pins_path, watch, |_, _| {}).await
}

/// Starts the proxy with `tune` applied to its shared settings and limits.
pub async fn proxy_tuned(
    yaml: &str,
    files: &[(&str, String)],
    tune: impl FnOnce(&mut Options, &mut Limits),
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        write(dir.path(), name, contents);
    }
    let pins_path = write(dir.path(), "pins.yaml", yaml);
    proxy_full(dir, pins_path, false, tune).await
}

pub async fn proxy_full(
    dir: tempfile::TempDir,
    pins_path: PathBuf,
    watch: bool,
    tune: impl FnOnce(&mut Options, &mut Limits),
) -> Proxy {
    proxy_configured(dir, pins_path, watch, |c| {
        tune(&mut c.upstream, &mut c.limits)
    })
    .await
}

/// Starts the proxy with `tune` applied to its whole configuration.
pub async fn proxy_configured(
    dir: tempfile::TempDir,
    pins_path: PathBuf,
    watch: bool,
    tune: impl FnOnce(&mut Config),
) -> Proxy {
    let mut config = Config {
        pins: pins_path.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        admin_options: Default::default(),
        ca: CaSource::Generate,
        // Outside the pins directory, so writing it doesn't look like a reload.
        ca_out: Some(dir.path().join("ca-out")),
        ca_bundle_extra: Vec::new(),
        leaf_cache: 16,
        limits: Limits::default(),
        upstream: Options::default(),
        watch,
        sighup: false,
        reports: pinproxy::control::reports::Options {
            pod: Default::default(),
            ..Default::default()
        },
        learn_file: None,
        transparent: Vec::new(),
        max_pinset_bytes: pinproxy::policy::load::DEFAULT_MAX_BYTES,
        max_file_bytes: pinproxy::policy::load::DEFAULT_MAX_FILE_BYTES,
        max_crl_entries: pinproxy::policy::load::DEFAULT_MAX_CRL_ENTRIES,
        ct_log_list: None,
        signing: None,
    };
    tune(&mut config);
    proxy::start(config, dir, pins_path).await
}

impl Proxy {
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca-out/ca.crt")
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        get_with(self.admin, &format!("http://{}{path}", self.admin), &[]).await
    }

    pub fn mismatches(&self, host: &str, mode: &str) -> u64 {
        self.metrics
            .pin_mismatch
            .with_label_values(&[host, mode])
            .get()
    }

    pub fn denied(&self, reason: &str) -> u64 {
        self.metrics.denied_count(reason)
    }

    pub fn requests(&self, host: &str, outcome: &str) -> u64 {
        self.metrics.requests_count(host, outcome)
    }

    pub fn tls_failures(&self, host: &str, reason: &str) -> u64 {
        self.metrics.tls_failures_count(host, reason)
    }
}

// === a client of the proxy ===

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn error(&self) -> Option<&str> {
        self.headers
            .get("x-pinproxy-error")
            .and_then(|v| v.to_str().ok())
    }
}

/// Sends `GET url` in absolute form through the proxy on a new connection.
pub async fn get(proxy: SocketAddr, url: &str) -> Reply {
    get_with(proxy, url, &[]).await
}

pub async fn get_with(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut conn = ProxyConn::open(proxy).await;
    conn.get(url, headers).await
}

/// One keep-alive client connection to the proxy.
pub struct ProxyConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl ProxyConn {
    pub async fn open(proxy: SocketAddr) -> Self {
        let tcp = TcpStream::connect(proxy).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Self { sender }
    }

    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Reply {
        let uri: http::Uri = url.parse().unwrap();
        let mut req = Request::get(uri.clone());
        let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !has_host {
            if let Some(a) = uri.authority() {
                req = req.header(http::header::HOST, a.as_str());
            }
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        self.sender.ready().await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.sender.send_request(req))
            .await
            .expect("proxy answered in time")
            .expect("proxy answered");
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// Sends raw bytes to the proxy and reads until it closes (or 5 s).
pub async fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The usual fixture: a PKI for `host`, an upstream serving its chain, and
/// a proxy pinning its intermediate.
pub async fn pinned(host: &str) -> (Pki, Upstream, Proxy) {
    let pki = Pki::new(&[host]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let p = proxy(
        &pinset(host, &[pki.int.pin()], "", up.addr),
        &[("ca.pem", pki.root.pem())],
    )
    .await;
    (pki, up, p)
}

/// A pinset with one host entry.
pub fn pinset(host: &str, pins: &[Pin], extra: &str, addr: SocketAddr) -> String {
    let pins: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
    format!(
        "version: 1\nhosts:\n  {host:?}:\n    pins: [{}]\n    trust: ca.pem\n    address: {addr}\n{extra}",
        pins.join(", ")
    )
}

// === kubelet AtomicWriter ===

/// Writes a Secret volume the way the kubelet does: files in a new
/// timestamped directory, a `..data_tmp` symlink to it renamed over
/// `..data`, user-visible names as symlinks through `..data`, the old
/// directory removed.
pub struct SecretVolume {
    pub dir: PathBuf,
    n: usize,
}

impl SecretVolume {
    pub fn new(dir: &Path, files: &[(&str, &str)]) -> Self {
        let mut v = Self {
            dir: dir.to_path_buf(),
            n: 0,
        };
        v.update(files);
        // As the kubelet does for a projected path such as `id/tls.crt`:
        // only the top-level name is a symlink through `..data`.
        let mut top: Vec<&str> = files
            .iter()
            .map(|(name, _)| name.split('/').next().unwrap())
            .collect();
        top.dedup();
        for name in top {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        v
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.n += 1;
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let ts = format!("..2026_11_24_08_00_00.{:04}", self.n);
        let ts_dir = self.dir.join(&ts);
        std::fs::create_dir(&ts_dir).unwrap();
        for (name, contents) in files {
            let path = ts_dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

// === hostile upstreams and resolvers ===

/// A TLS server whose connection handler is the test's own code.
pub async fn raw_tls_upstream<F, Fut>(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    handler: F,
) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handler(tls).await;
                }
            });
        }
    });
    addr
}

/// A plain TCP server whose connection handler is the test's own code.
pub async fn raw_tcp_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move { handler(tcp).await });
        }
    });
    addr
}

/// Reads an HTTP/1.1 request head from `s`.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Answers names from a fixed table; anything else fails like NXDOMAIN.
#[derive(Debug, Default)]
pub struct StaticResolver(pub std::collections::HashMap<String, Vec<std::net::IpAddr>>);

impl pinproxy::upstream::Resolve for StaticResolver {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>,
    > {
        let found = self.0.get(name).cloned();
        let name = name.to_string();
        Box::pin(async move {
            match found {
                Some(ips) => Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                None => Err(std::io::Error::other(format!(
                    "failed to lookup address information: {name}: Name or service not known"
                ))),
            }
        })
    }
}

// === CONNECT and the built binary ===

/// Sends CONNECT; returns the status, the response head and the stream.
pub async fn connect_status(proxy: SocketAddr, target: &str) -> (u16, String, TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tcp).await.unwrap_or_default();
    let s = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (s, head, tcp)
}

/// Runs the built binary on free loopback ports: (child, proxy, admin).
pub fn spawn_binary(
    pins: &std::path::Path,
    extra: &[&str],
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin) = (free(), free());
    let mut args = vec![
        "run".to_string(),
        "--pins".into(),
        pins.display().to_string(),
        "--listen".into(),
        listen.to_string(),
        "--admin".into(),
        admin.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(&args)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, listen, admin)
}

/// Waits (bounded) until `addr` accepts connections.
pub async fn wait_listening(addr: std::net::SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} never listened");
}

/// Runs the built `pinproxy` binary with `args`: (exit code, stdout, stderr).
pub fn run_pinproxy(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(args)
        .output()
        .expect("run pinproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `args`, capturing stderr line by line.
pub struct Run {
    pub child: tokio::process::Child,
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    pub listen: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

impl Run {
    pub async fn start(pins: &std::path::Path, extra: &[&str]) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (listen, admin) = (free(), free());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["run", "--pins", pins.to_str().unwrap()])
            .args([
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stderr.take().unwrap(),
        ));
        wait_listening(listen).await;
        Self {
            child,
            lines,
            listen,
            admin,
        }
    }

    /// Lines until one contains `needle` (or 5 s pass): all of them.
    pub async fn until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline, self.lines.next_line()).await
        {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return seen;
            }
        }
        panic!("no line containing {needle:?} in:\n{}", seen.join("\n"));
    }

    /// The lines printed within `wait` (a multi-line message's rest).
    pub async fn more(&mut self, wait: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline, self.lines.next_line()).await
        {
            seen.push(line);
        }
        seen
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
    }
}
