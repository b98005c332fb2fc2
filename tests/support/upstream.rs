//! Real TLS upstreams on 127.0.0.1: HTTP/1.1 and h2 servers with a
//! test-chosen chain, mTLS, and a chain that can be switched live.

use super::*;

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
    let provider = pinproxy::tls::provider();
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
    let provider = pinproxy::tls::provider();
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
    let provider = pinproxy::tls::provider();
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
    let provider = pinproxy::tls::provider();
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
pub(super) async fn upstream_handler(
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

/// A TLS server for `live.test` on 127.0.0.1 with a PKI of its own, and
/// that PKI's root written to `ca.pem` in a temporary directory: what the
/// `pin --connect` and `check --live` tests dial.
pub struct LiveServer {
    pub pki: super::Pki,
    pub up: Upstream,
    /// Holds `ca` (and whatever else a test writes there) until dropped.
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
}

pub async fn live_server() -> LiveServer {
    let pki = super::Pki::new(&["live.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("live")).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = super::write(dir.path(), "ca.pem", &pki.root.pem());
    LiveServer { pki, up, dir, ca }
}
