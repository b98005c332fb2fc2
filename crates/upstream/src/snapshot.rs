//! One pinset generation's snapshot, and what every snapshot is built from.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::crypto::CryptoProvider;
use rustls::ClientConfig;
use rustls_pki_types::TrustAnchor;

use super::budget::{Budget, IDLE_PER_HOST};
use super::connector::{Connector, ConnectorInner, H2Only, Tls};
use super::dns::Lookups;
use super::observe::{Observe, Requests};
use super::passthrough::Plain;
use super::protocol::Route;
use super::{Options, Timeouts};
use pinproxy_policy::Policy;
use pinproxy_tls::ct::LogListInForce;
use pinproxy_tls::verify::{self, PinVerifier};

/// hyper's HTTP/1.1 read buffer for upstream connections (hyper: ~408 KiB),
/// which holds a response head while it arrives and response bytes a slow
/// client has not taken yet (review 9: ~1 MiB per stalled client). It also
/// bounds response heads from HTTP/1.1 upstreams: one still unfinished past
/// it is `upstream-tls-error` (hyper's buffer grows by doubling, so a head
/// arriving at once may parse up to ~112 KiB). 64 KiB: the request-head
/// limit, four times what h2 upstreams already get (hyper's h2 client,
/// 16 KiB), about Envoy's `max_response_headers_kb` (60 KiB).
pub const READ_BUFFER: usize = 64 * 1024;

/// A request body sent upstream: the client's own (watched for faults), or
/// empty (a retry of a bodiless request).
pub type UpBody = http_body_util::Either<RequestBody, http_body_util::Empty<bytes::Bytes>>;

/// Everything that depends on one pinset generation.
pub struct Snapshot {
    pub generation: u64,
    pub policy: Arc<Policy>,
    /// The Certificate Transparency log list this generation's verifier
    /// judges with (a reload input like the pinset).
    pub ct_list: Arc<LogListInForce>,
    /// Dials with this generation's TLS configs (also for WebSocket
    /// upgrades, which need an HTTP/1.1-only connection).
    pub connector: Connector,
    /// Pooled, for forwarded requests (h2 or HTTP/1.1 by ALPN): hosts
    /// known to speak HTTP/1.1 ([`Snapshot::route`]).
    pub client: Client<Connector, UpBody>,
    /// Pooled, `http2_only`, for forwarded requests to hosts that speak
    /// h2 or are not known yet: one connect per host at a time, the other
    /// requests wait for it (hyper-util's connecting lock) and, should it
    /// fail, go out unsent through `client` ([`super::protocol`]).
    pub client_h2: Client<H2Only, UpBody>,
    /// Not pooled, `http2_only`: for a request to an `upstream_protocol:
    /// h2` entry that waited on the h2 client's connect when that connect
    /// failed — it goes out again on a connect of its own, with its own
    /// verdict (no connecting lock without a pool).
    pub client_h2_once: Client<H2Only, UpBody>,
    /// Pooled, for plain-HTTP passthrough requests (no TLS of ours). The
    /// Host header is the client's own: relayed as it came.
    pub plain: Client<Plain, UpBody>,
    /// Pooled, for unlisted hosts' `http://` URLs: plain HTTP under the
    /// unlisted egress rules, Host taken from the URL.
    pub unlisted_plain: Client<Plain, UpBody>,
    /// Where this generation's answered requests are reported.
    requests: Arc<dyn Requests>,
}

impl Snapshot {
    /// Which pinned client a forwarded request to `host:port` under
    /// `entry` (`None`: an unlisted host) takes: as its `upstream_protocol`
    /// says, or for `auto` by what the upstream chose ([`super::protocol`]).
    pub fn route(
        &self,
        entry: Option<&pinproxy_policy::HostPolicy>,
        host: &pinproxy_policy::host::Host,
        port: u16,
    ) -> Route {
        match self.connector.protocol(entry) {
            pinproxy_policy::UpstreamProtocol::H1 => Route::Alpn,
            pinproxy_policy::UpstreamProtocol::H2 => Route::H2Prior,
            pinproxy_policy::UpstreamProtocol::Auto => self.connector.protocols().route(host, port),
        }
    }

    /// Reports a request under `entry` (`None`: an unlisted host) answered.
    pub fn count_ok(&self, entry: Option<&pinproxy_policy::HostPolicy>) {
        self.requests.ok(entry);
    }
}

/// A client's request body on its way upstream, remembering why reading
/// it failed: a malformed chunked body is the client's fault, yet the
/// pooled client reports it only as a failed send (over h2, as a stream
/// reset), which reads like the upstream's.
pub struct RequestBody {
    /// `None` once handed back ([`RequestBody::reclaimable`]).
    inner: Option<Incoming>,
    /// `None` for a body that was complete from the start (no allocation).
    fault: Option<Arc<OnceLock<String>>>,
    /// Where the body goes when dropped before its first frame was read.
    give_back: Option<tokio::sync::oneshot::Sender<RequestBody>>,
}

/// Why a [`RequestBody`] could not be read, once it failed.
#[derive(Clone, Default)]
pub struct BodyFault(Option<Arc<OnceLock<String>>>);

impl RequestBody {
    pub fn new(inner: Incoming) -> (Self, BodyFault) {
        use hyper::body::Body as _;
        let fault = (!inner.is_end_stream()).then(Arc::default);
        (
            Self {
                inner: Some(inner),
                fault: fault.clone(),
                give_back: None,
            },
            BodyFault(fault),
        )
    }

    /// Hands the body back through the returned receiver if it is dropped
    /// before its first frame was read: a request the pooled client
    /// dropped without sending (its connect failed) can be sent again.
    pub fn reclaimable(&mut self) -> tokio::sync::oneshot::Receiver<RequestBody> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.give_back = Some(tx);
        rx
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(tx) = self.give_back.take() {
            let _ = tx.send(RequestBody {
                inner: self.inner.take(),
                fault: self.fault.take(),
                give_back: None,
            });
        }
    }
}

impl BodyFault {
    /// What went wrong reading the client's body, if it did.
    pub fn get(&self) -> Option<&str> {
        self.0
            .as_deref()
            .and_then(OnceLock::get)
            .map(String::as_str)
    }
}

impl hyper::body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        // Read from: no longer the sender's to send again.
        self.give_back = None;
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(e))) = &polled {
            if let Some(fault) = &self.fault {
                let mut why = e.to_string();
                if let Some(cause) = std::error::Error::source(e) {
                    why = format!("{why}: {cause}");
                }
                let _ = fault.set(why);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.as_ref().map_or_else(
            || hyper::body::SizeHint::with_exact(0),
            hyper::body::Body::size_hint,
        )
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Things a snapshot needs that outlive generations.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Every name lookup, bounded across generations.
    pub lookups: Arc<Lookups>,
    pub roots: Arc<[TrustAnchor<'static>]>,
    pub provider: Arc<CryptoProvider>,
    /// Where dials, handshakes, verdicts and requests are reported.
    pub observe: Arc<dyn Observe>,
    pub timeouts: Timeouts,
    /// pinproxy's own listeners (admin, proxy): never a target for
    /// unlisted egress, whatever `allow_private` says.
    pub own_addrs: Vec<SocketAddr>,
    /// The upstream connection budget, one for every generation: a reload
    /// does not close the old generation's connections at once.
    pub budget: Budget,
}

impl Shared {
    /// `own_addrs`: the proxy's and admin listeners' bound addresses.
    pub fn new(observe: Arc<dyn Observe>, options: Options, own_addrs: Vec<SocketAddr>) -> Self {
        Self {
            lookups: Arc::new(Lookups::new(options.resolver, options.max_dns_lookups)),
            roots: verify::webpki_roots(),
            provider: pinproxy_tls::provider(),
            observe,
            timeouts: options.timeouts,
            own_addrs,
            budget: options.budget,
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds generation `generation` of `policy`, judging Certificate
    /// Transparency with `ct_list`. No side effects: the snapshot may never
    /// be published, and what publishing it changes (metric series,
    /// gauges) is the publisher's to change.
    pub fn build(
        policy: Policy,
        ct_list: Arc<LogListInForce>,
        generation: u64,
        shared: &Shared,
    ) -> Result<Self, rustls::Error> {
        let policy = Arc::new(policy);
        let reports =
            shared
                .observe
                .generation(&policy, generation, &shared.provider, &shared.roots);
        let verifier = Arc::new(PinVerifier::new(
            policy.clone(),
            shared.roots.clone(),
            shared.provider.clone(),
            reports.verdicts,
            ct_list.clone(),
        ));
        let mut tls = ClientConfig::builder_with_provider(shared.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Every connection is a full, judged handshake ([`super::resumption`]).
        tls.resumption = super::resumption::never();
        // OCSP stapling needs nothing here: rustls offers status_request in
        // every ClientHello and hands the staple to the verifier.
        let identities = policy
            .hosts
            .iter()
            .map(|h| h.client_cert.as_ref().map(|c| Tls::presenting(&tls, c)))
            .collect();
        let connector = Connector::new(ConnectorInner {
            lookups: shared.lookups.clone(),
            observe: shared.observe.clone(),
            policy: policy.clone(),
            tls: Tls::new(tls),
            identities,
            timeouts: shared.timeouts,
            own_addrs: shared.own_addrs.clone(),
            protocols: Arc::default(),
            budget: shared.budget.clone(),
        });
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUFFER)
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(connector.clone());
        let client_h2 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .http2_only(true)
            .build(H2Only(connector.clone()));
        let client_h2_once = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(0)
            .http2_only(true)
            .build(H2Only(connector.clone()));
        let plain = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUFFER)
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .set_host(false)
            .build(Plain {
                connector: connector.clone(),
                unlisted: false,
            });
        let unlisted_plain = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUFFER)
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(Plain {
                connector: connector.clone(),
                unlisted: true,
            });
        Ok(Self {
            requests: reports.requests,
            generation,
            client,
            client_h2,
            client_h2_once,
            plain,
            unlisted_plain,
            connector,
            policy,
            ct_list,
        })
    }
}
