//! The proxy listener: accepts client connections, serves HTTP/1.1 on them,
//! and dispatches absolute-form requests to [`forward`] and CONNECT to
//! [`connect`]. The proxy asks the snapshot's `Policy` what to do; it never
//! parses YAML.

pub mod connect;
pub mod forward;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::config::{self, Decision, HostPolicy};
use crate::host::Host;
use crate::intercept::Intercept;
use crate::upstream::{Failure, Shared, Snapshot, UpstreamError};

/// Response bodies: streamed from upstream, or a short local answer.
pub type Body = Either<Incoming, Full<Bytes>>;

/// The header carrying a refusal's machine-readable reason.
pub const ERROR_HEADER: &str = "x-pinproxy-error";

/// Listener limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Process-wide proxy state. The snapshot is swapped whole on reload.
pub struct State {
    pub snapshot: ArcSwap<Snapshot>,
    pub shared: Shared,
    pub pins_path: PathBuf,
    pub limits: Limits,
    pub intercept: Option<Arc<Intercept>>,
    pub listening: AtomicBool,
    pub draining: AtomicBool,
    reload_lock: tokio::sync::Mutex<()>,
    /// Signals long-lived tunnels that the pinset changed (value = generation).
    pub generation_tx: watch::Sender<u64>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Swapped(u64),
    Unchanged(u64),
}

// === impl State ===

impl State {
    pub fn new(
        policy: config::Policy,
        shared: Shared,
        pins_path: PathBuf,
        limits: Limits,
        intercept: Option<Arc<Intercept>>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let snapshot = Snapshot::build(policy, 1, &shared)?;
        let (generation_tx, _) = watch::channel(1);
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            shared,
            pins_path,
            limits,
            intercept,
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            generation_tx,
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && self.intercept.as_ref().is_none_or(|i| i.ca_written())
    }

    /// Re-reads the pinset (off the async workers), validates it, builds a
    /// whole new snapshot and swaps it in. An invalid file leaves the last
    /// good snapshot in force.
    pub async fn reload(&self) -> Result<Reloaded, config::Error> {
        let _guard = self.reload_lock.lock().await;
        let path = self.pins_path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(config::Error::Read {
                    path: self.pins_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let metrics = &self.shared.metrics;
        let policy = match loaded {
            Ok(p) => p,
            Err(e) => {
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(error = %e, "pinset reload failed; the last good pinset stays in force");
                return Err(e);
            }
        };
        let current = self.snapshot.load();
        if current.policy.source_hash == policy.source_hash {
            return Ok(Reloaded::Unchanged(current.generation));
        }
        let generation = current.generation + 1;
        drop(current);
        let snapshot = Snapshot::build(policy, generation, &self.shared).map_err(|e| {
            metrics.config_reloads.with_label_values(&["failure"]).inc();
            config::Error::Read {
                path: self.pins_path.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        self.snapshot.store(Arc::new(snapshot));
        self.generation_tx.send_replace(generation);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tracing::info!(generation, "pinset reloaded");
        Ok(Reloaded::Swapped(generation))
    }
}

/// Serves the proxy on `listener` until `shutdown` resolves, then stops
/// accepting and drains open connections up to the drain timeout.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(state.limits.max_connections));
    state.listening.store(true, Ordering::Release);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning or exiting.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            state
                .shared
                .metrics
                .denied
                .with_label_values(&["overloaded"])
                .inc();
            tracker.spawn(refuse_overloaded(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop = stop_rx.clone();
        let conn_tracker = tracker.clone();
        tracker.spawn(async move {
            state.shared.metrics.connections_active.inc();
            serve_connection(stream, state.clone(), stop, conn_tracker).await;
            state.shared.metrics.connections_active.dec();
            drop(permit);
            tracing::trace!(%peer, "client connection closed");
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracker.close();
    if tokio::time::timeout(state.limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline reached with connections still open");
    }
}

async fn refuse_overloaded(mut stream: TcpStream) {
    let body = "pinproxy: connection limit reached\n";
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\n{ERROR_HEADER}: overloaded\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let svc_state = state.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let state = svc_state.clone();
        let tracker = tracker.clone();
        async move { Ok::<_, Infallible>(handle(state, req, tracker).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_read_timeout)
        .max_buf_size(state.limits.max_header_bytes.max(8192));
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                // hyper answered unparseable requests itself (400/431).
                if e.is_parse() || e.is_parse_too_large() {
                    state.shared.metrics.denied.with_label_values(&["bad-request"]).inc();
                }
                tracing::debug!(error = %e, "client connection error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            // Keep polling until hyper finishes the in-flight exchange.
            if let Err(e) = conn.as_mut().await {
                tracing::debug!(error = %e, "client connection error while draining");
            }
        }
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>, tracker: TaskTracker) -> Response<Body> {
    if req.method() == http::Method::CONNECT {
        connect::handle(state, req, tracker).await
    } else {
        forward::handle(&state, req).await
    }
}

/// A refusal: status, `x-pinproxy-error` reason and a short human body.
pub fn refuse(
    status: StatusCode,
    reason: &'static str,
    host: &str,
    message: &str,
) -> Response<Body> {
    let body = if host.is_empty() {
        format!("pinproxy: {message}\n")
    } else {
        format!("pinproxy: {host}: {message}\n")
    };
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static(reason));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A refusal made before any upstream connection: also counted as denied.
pub fn deny(
    state: &State,
    status: StatusCode,
    reason: &'static str,
    host: &str,
    message: &str,
) -> Response<Body> {
    state
        .shared
        .metrics
        .denied
        .with_label_values(&[reason])
        .inc();
    refuse(status, reason, host, message)
}

/// The refusal for an upstream failure.
pub fn upstream_refusal(state: &State, err: &UpstreamError) -> (Response<Body>, &'static str) {
    let (status, reason) = match err.failure {
        Failure::Unreachable => (StatusCode::BAD_GATEWAY, "upstream-unreachable"),
        Failure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
        Failure::PinMismatch => (StatusCode::BAD_GATEWAY, "pin-mismatch"),
        Failure::Untrusted(_) => (StatusCode::BAD_GATEWAY, "untrusted-certificate"),
        Failure::Tls(_) => (StatusCode::BAD_GATEWAY, "upstream-tls-error"),
        Failure::PrivateAddress => {
            state
                .shared
                .metrics
                .denied
                .with_label_values(&["private-address"])
                .inc();
            (StatusCode::FORBIDDEN, "private-address")
        }
    };
    (refuse(status, reason, &err.host, &err.detail), reason)
}

/// A request target after validation: normalized host and upstream port.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// What the policy says about a target, before dialing.
pub enum Admission {
    Pinned(Arc<HostPolicy>),
    Unlisted,
}

/// Policy checks that need no network: unlisted deny, ports, expired
/// pin-only entries. Returns the refusal on failure.
#[allow(clippy::result_large_err)] // the refusal is the answer; it is not kept
pub fn admit(state: &State, snap: &Snapshot, target: &Target) -> Result<Admission, Response<Body>> {
    let host = target.host.to_string();
    match snap.policy.lookup(&target.host) {
        Decision::Listed(entry) => {
            if !entry.ports.contains(&target.port) {
                return Err(deny(
                    state,
                    StatusCode::FORBIDDEN,
                    "port-not-allowed",
                    &host,
                    &format!(
                        "port {} is not in ports {:?} of entry {:?}",
                        target.port, entry.ports, entry.name
                    ),
                ));
            }
            if matches!(entry.trust, config::Trust::PinOnly)
                && entry.pins_expired(time::OffsetDateTime::now_utc())
            {
                count(state, &entry.name, "pin-mismatch");
                return Err(refuse(
                    StatusCode::BAD_GATEWAY,
                    "pin-mismatch",
                    &host,
                    "the pin-only pinset has expired and nothing else can authenticate this host; renew the pins",
                ));
            }
            Ok(Admission::Pinned(entry.clone()))
        }
        Decision::Unlisted => {
            if snap.policy.defaults.unlisted == config::Unlisted::Deny {
                return Err(deny(
                    state,
                    StatusCode::FORBIDDEN,
                    "host-not-allowed",
                    &host,
                    "host is not in the pinset and unlisted hosts are denied",
                ));
            }
            if !snap.policy.defaults.ports.contains(&target.port) {
                return Err(deny(
                    state,
                    StatusCode::FORBIDDEN,
                    "port-not-allowed",
                    &host,
                    &format!(
                        "port {} is not in defaults.ports {:?}",
                        target.port, snap.policy.defaults.ports
                    ),
                ));
            }
            Ok(Admission::Unlisted)
        }
    }
}

/// Counts a finished request or tunnel.
pub fn count(state: &State, host: &str, outcome: &str) {
    state
        .shared
        .metrics
        .requests
        .with_label_values(&[host, outcome])
        .inc();
}
