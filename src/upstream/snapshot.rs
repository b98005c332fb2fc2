//! One pinset generation's snapshot, and what every snapshot is built from.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::crypto::CryptoProvider;
use rustls::ClientConfig;
use rustls_pki_types::TrustAnchor;

use super::connector::{Connector, ConnectorInner, Resolve, Tls};
use super::passthrough::Plain;
use super::{Options, Timeouts};
use crate::control::drift::Drift;
use crate::control::metrics::Metrics;
use crate::control::telemetry::{LogLimiter, Sinks, Telemetry};
use crate::policy::Policy;
use crate::reason::{Outcome, Position};
use crate::tls::verify::{self, Observer, PinVerifier};

/// A request body sent upstream: the client's own (watched for faults), or
/// empty (a retry of a bodiless request).
pub type UpBody = http_body_util::Either<RequestBody, http_body_util::Empty<bytes::Bytes>>;

/// Everything that depends on one pinset generation.
pub struct Snapshot {
    pub generation: u64,
    pub policy: Arc<Policy>,
    /// Dials with this generation's TLS configs (also for WebSocket
    /// upgrades, which need an HTTP/1.1-only connection).
    pub connector: Connector,
    /// Pooled, for forwarded requests (h2 or HTTP/1.1 by ALPN).
    pub client: Client<Connector, UpBody>,
    /// Pooled, for plain-HTTP passthrough requests (no TLS of ours). The
    /// Host header is the client's own: relayed as it came.
    pub plain: Client<Plain, UpBody>,
    /// Pooled, for unlisted hosts' `http://` URLs: plain HTTP under the
    /// unlisted egress rules, Host taken from the URL.
    pub unlisted_plain: Client<Plain, UpBody>,
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

/// A client's request body on its way upstream, remembering why reading
/// it failed: a malformed chunked body is the client's fault, yet the
/// pooled client reports it only as a failed send (over h2, as a stream
/// reset), which reads like the upstream's.
pub struct RequestBody {
    inner: Incoming,
    /// `None` for a body that was complete from the start (no allocation).
    fault: Option<Arc<OnceLock<String>>>,
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
                inner,
                fault: fault.clone(),
            },
            BodyFault(fault),
        )
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
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
    pub resolver: Arc<dyn Resolve>,
    pub metrics: Arc<Metrics>,
    pub roots: Arc<[TrustAnchor<'static>]>,
    pub provider: Arc<CryptoProvider>,
    pub limiter: Arc<LogLimiter>,
    pub drift: Arc<Drift>,
    /// Key continuity, learned chains, failure reports.
    pub sinks: Sinks,
    pub timeouts: Timeouts,
    /// pinproxy's own listeners (admin, proxy): never a target for
    /// unlisted egress, whatever `allow_private` says.
    pub own_addrs: Vec<SocketAddr>,
}

impl Shared {
    /// `own_addrs`: the proxy's and admin listeners' bound addresses.
    pub fn new(metrics: Arc<Metrics>, options: Options, own_addrs: Vec<SocketAddr>) -> Self {
        Self {
            sinks: Sinks::new(&metrics),
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
        let observer: Arc<dyn Observer> = Arc::new(
            Telemetry::new(
                shared.metrics.clone(),
                generation,
                shared.limiter.clone(),
                shared.drift.clone(),
            )
            .with_sinks(&shared.sinks, &policy, &shared.provider, &shared.roots),
        );
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
        let identities = policy
            .hosts
            .iter()
            .map(|h| h.client_cert.as_ref().map(|c| Tls::presenting(&tls, c)))
            .collect();
        let connector = Connector::new(ConnectorInner {
            resolver: shared.resolver.clone(),
            drift: shared.drift.clone(),
            sinks: shared.sinks.clone(),
            policy: policy.clone(),
            tls: Tls::new(tls),
            identities,
            metrics: shared.metrics.clone(),
            timeouts: shared.timeouts,
            own_addrs: shared.own_addrs.clone(),
        });
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .pool_max_idle_per_host(256)
            .build(connector.clone());
        let plain = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .set_host(false)
            .build(Plain {
                connector: connector.clone(),
                unlisted: false,
            });
        let unlisted_plain = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(shared.timeouts.pool_idle)
            .build(Plain {
                connector: connector.clone(),
                unlisted: true,
            });
        let metrics = &shared.metrics;
        metrics.config_generation.set(generation as i64);
        metrics.pinset_info.reset();
        metrics
            .pinset_info
            .with_label_values(&[&policy.pins_sha256])
            .set(1);
        metrics.pinset_expiry.reset();
        metrics.client_cert_expiry.reset();
        metrics.crl_next_update.reset();
        for h in &policy.hosts {
            if let Some(c) = &h.client_cert {
                metrics
                    .client_cert_expiry
                    .with_label_values(&[&h.name])
                    .set(c.not_after.unix_timestamp() as f64);
            }
            if let Some(next) = h.crls.as_ref().and_then(|c| c.next_update()) {
                metrics
                    .crl_next_update
                    .with_label_values(&[&h.name])
                    .set(next.unix_timestamp() as f64);
            }
            // Series exist at 0 from load time, so `increase()` alerts fire
            // on a host's first mismatch too.
            metrics
                .pin_mismatch
                .with_label_values(&[&h.name, h.mode.as_str()]);
            if !h.next_pins.is_empty() {
                metrics.next_pins_mismatch.with_label_values(&[&h.name]);
            }
            for position in Position::ALL {
                metrics
                    .chain_changes
                    .with_label_values(&[&h.name, position.as_str()]);
            }
            if let Some(e) = h.expires {
                metrics
                    .pinset_expiry
                    .with_label_values(&[&h.name])
                    .set(e.unix_timestamp() as f64);
            }
        }
        for position in Position::ALL {
            metrics
                .chain_changes
                .with_label_values(&["unlisted", position.as_str()]);
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
            plain,
            unlisted_plain,
            connector,
            policy,
        })
    }
}
