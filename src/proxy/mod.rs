//! The proxy listener: accepts client connections, serves HTTP/1.1 on them,
//! and dispatches absolute-form requests to [`forward`] and CONNECT to
//! [`connect`]. The proxy asks the snapshot's `Policy` what to do; it never
//! parses YAML.

pub mod connect;
pub mod forward;
pub mod tunnel;

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

use crate::policy;
use crate::policy::admission::{self, Admission, Target};
use crate::reason::{Outcome, Reason};
use crate::tls::ca::Intercept;
use crate::upstream::{Failure, Shared, Snapshot, UpstreamError};

/// Response bodies: streamed from upstream, or a short local answer.
pub type Body = Either<Streamed, Full<Bytes>>;

/// An upstream response body that ends (with an error, so the client sees
/// a truncated response, not a clean end) if a reload revokes the
/// admission it was fetched under: a long stream never outlives its pins.
/// The watch is armed only once the body has to wait for the upstream, so
/// a response that is already complete costs no timer or allocation.
pub struct Streamed {
    inner: Incoming,
    watch: Watch,
}

enum Watch {
    Off,
    Idle(Box<(Revocation, Target)>),
    Armed(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Streamed {
    pub fn new(inner: Incoming, watch: Option<Box<(Revocation, Target)>>) -> Self {
        Self {
            inner,
            watch: watch.map_or(Watch::Off, Watch::Idle),
        }
    }
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Watch::Armed(revoked) = &mut self.watch {
            if revoked.as_mut().poll(cx).is_ready() {
                self.watch = Watch::Off;
                return Poll::Ready(Some(Err(
                    "pinset reloaded: this host's pins or policy changed".into(),
                )));
            }
        }
        let polled = std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(Into::into);
        if polled.is_pending() && matches!(self.watch, Watch::Idle(_)) {
            if let Watch::Idle(w) = std::mem::replace(&mut self.watch, Watch::Off) {
                let (r, target) = *w;
                let mut fut: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
                    Box::pin(revoked(r.state, r.rx, target, r.admission, None));
                if fut.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(
                        "pinset reloaded: this host's pins or policy changed".into(),
                    )));
                }
                self.watch = Watch::Armed(fut);
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

/// What a streamed response needs to watch for revocation.
pub struct Revocation {
    pub state: Arc<State>,
    pub rx: watch::Receiver<u64>,
    pub admission: Admission,
}

/// The header carrying a refusal's machine-readable reason.
pub const ERROR_HEADER: &str = "x-pinproxy-error";

/// Listener limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    /// A tunnel (CONNECT, WebSocket) with no bytes either way this long is closed.
    pub tunnel_idle: Duration,
    /// After a reload revokes a tunnel or a streaming response, how long
    /// in-flight work may still finish before it is closed.
    pub revoke_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            tunnel_idle: Duration::from_secs(3600),
            revoke_grace: Duration::from_secs(5),
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
        policy: policy::Policy,
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
    pub async fn reload(&self) -> Result<Reloaded, policy::Error> {
        let _guard = self.reload_lock.lock().await;
        let path = self.pins_path.clone();
        let loaded = tokio::task::spawn_blocking(move || policy::load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(policy::Error::Read {
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
            policy::Error::Read {
                path: self.pins_path.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let old = self.snapshot.swap(Arc::new(snapshot));
        self.generation_tx.send_replace(generation);
        let new = self.snapshot.load();
        warn_if_weaker(&old.policy, &new.policy);
        // Series and drift entries of hosts no longer listed go away.
        for gone in old
            .policy
            .hosts
            .iter()
            .filter(|h| !new.policy.hosts.iter().any(|n| n.name == h.name))
        {
            metrics.forget_host(&gone.name);
        }
        self.shared
            .drift
            .retain(|h| new.policy.hosts.iter().any(|n| n.name == h));
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tracing::info!(generation, "pinset reloaded");
        Ok(Reloaded::Swapped(generation))
    }
}

/// Logs what a reload relaxes: hosts removed, enforce → report, unlisted
/// deny → allow. Legitimate, but worth a line an operator can alert on.
fn warn_if_weaker(old: &policy::Policy, new: &policy::Policy) {
    let mut weaker = Vec::new();
    if old.defaults.unlisted == policy::Unlisted::Deny
        && new.defaults.unlisted == policy::Unlisted::Allow
    {
        weaker.push("unlisted: deny -> allow".to_string());
    }
    for h in &old.hosts {
        match new.hosts.iter().find(|n| n.name == h.name) {
            None => weaker.push(format!("host {:?} removed", h.name)),
            Some(n) if h.mode == policy::Mode::Enforce && n.mode == policy::Mode::Report => {
                weaker.push(format!("host {:?}: enforce -> report", h.name))
            }
            Some(_) => {}
        }
    }
    if !weaker.is_empty() {
        tracing::warn!(changes = ?weaker, "reloaded pinset relaxes enforcement");
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
            count_denied(&state, Reason::Overloaded);
            tracker.spawn(refuse_overloaded(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let guard = Arc::new(ConnGuard::new(permit, state.shared.metrics.clone()));
        let state = state.clone();
        let stop = stop_rx.clone();
        let conn_tracker = tracker.clone();
        tracker.spawn(async move {
            serve_connection(stream, state, stop, conn_tracker, guard).await;
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
    let reason = Reason::Overloaded;
    let status = reason.status().unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let msg = format!(
        "HTTP/1.1 {status}\r\n{ERROR_HEADER}: {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
}

/// The client side of a connection: a TCP stream with any bytes hyper had
/// buffered put back in front.
pub type ClientIo = tunnel::Rewind<TcpStream>;

/// Where a CONNECT handler leaves its claim on the client stream: after
/// hyper has written the `200`, the connection task hands the raw stream
/// (and whatever the client sent after the CONNECT head) over.
#[derive(Default)]
pub struct Handoff(std::sync::Mutex<Option<tokio::sync::oneshot::Sender<ClientIo>>>);

impl Handoff {
    pub fn claim(&self) -> tokio::sync::oneshot::Receiver<ClientIo> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn take(&self) -> Option<tokio::sync::oneshot::Sender<ClientIo>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Requests in flight on one connection, and a counter of requests seen,
/// to tell when it has been idle long enough to park.
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    seen: std::sync::atomic::AtomicU64,
}

/// A response body that marks its request finished when hyper drops it.
pub struct Counted {
    body: Body,
    activity: Arc<Activity>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How long a keep-alive connection must be idle before it is parked:
/// hyper's buffers (~21 KiB) are released and the connection waits on a
/// one-byte peek until the client speaks again.
const PARK_AFTER: Duration = Duration::from_secs(1);

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
    guard: Arc<ConnGuard>,
) {
    let mut io = tunnel::Rewind::new(stream);
    let mut stopping = false;
    // A connection parked in the middle of a request head (bytes buffered)
    // is not parked again: parking restarts hyper's header timer, and a
    // slow client must not get more than one extra header timeout.
    let mut may_park = true;
    loop {
        // A client that hasn't spoken (new, or parked) waits here without
        // hyper's buffers, under the header timeout.
        if !io.has_prefix() {
            let mut first = [0u8; 1];
            tokio::select! {
                // `peek` waits for a byte without consuming it (`readable`
                // may report ready before any data has arrived).
                r = tokio::time::timeout(state.limits.header_read_timeout, io.get_ref().peek(&mut first)) => {
                    if !matches!(r, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                }
                _ = stop.changed(), if !stopping => return,
            }
        }
        let handoff = Arc::new(Handoff::default());
        let activity = Arc::new(Activity::default());
        let svc_state = state.clone();
        let client = Client {
            tracker: tracker.clone(),
            guard: guard.clone(),
            handoff: handoff.clone(),
        };
        let svc_activity = activity.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let state = svc_state.clone();
            let client = client.clone();
            let activity = svc_activity.clone();
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
            activity.seen.fetch_add(1, Ordering::AcqRel);
            Box::pin(async move {
                let resp = handle(state, req, client).await;
                Ok::<_, Infallible>(resp.map(|body| Counted { body, activity }))
            })
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(state.limits.header_read_timeout)
            .max_buf_size(parse_buffer(&state.limits));
        let mut conn = builder.serve_connection(TokioIo::new(io), service);
        let park = async {
            let mut last = activity.seen.load(Ordering::Acquire);
            loop {
                tokio::time::sleep(PARK_AFTER).await;
                let now = activity.seen.load(Ordering::Acquire);
                if now == last && activity.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                last = now;
            }
        };
        tokio::pin!(park);
        let mut parked = false;
        let done = loop {
            tokio::select! {
                r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
                _ = &mut park, if may_park && !parked && !stopping => {
                    parked = true;
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    // Finish the in-flight exchange, then close.
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                }
            }
        };
        if let Err(e) = done {
            // hyper answered unparseable requests itself (400/431).
            if e.is_parse() || e.is_parse_too_large() {
                count_denied(&state, Reason::BadRequest);
            }
            tracing::debug!(error = %e, "client connection error");
            return;
        }
        let parts = conn.into_parts();
        let rest = parts.io.into_inner().rewind(parts.read_buf);
        // A CONNECT was answered 200: the tunnel takes the stream.
        if let Some(tx) = handoff.take() {
            let _ = tx.send(rest);
            return;
        }
        if stopping || !parked {
            return;
        }
        may_park = !rest.has_prefix();
        io = rest;
    }
}

/// One client connection, as its requests' handlers see it.
#[derive(Clone)]
pub struct Client {
    /// Spawns tasks that graceful drain waits for.
    pub tracker: TaskTracker,
    /// The connection's slot; tunnels carried out of it keep a clone.
    pub guard: Arc<ConnGuard>,
    /// Where a CONNECT handler claims the stream after its `200`.
    pub handoff: Arc<Handoff>,
}

async fn handle(state: Arc<State>, req: Request<Incoming>, client: Client) -> Response<Body> {
    if head_size(&req) > state.limits.max_header_bytes {
        return deny(
            &state,
            Reason::HeadTooLarge,
            "",
            &format!(
                "request head is over {} bytes",
                state.limits.max_header_bytes
            ),
        );
    }
    if req.method() == http::Method::CONNECT {
        connect::handle(state, req, client).await
    } else {
        forward::handle(state, req).await
    }
}

/// hyper's parse buffer: twice the header limit, so a head over the limit
/// but within the buffer reaches us and gets a 431 *with* its reason;
/// only heads beyond twice the limit get the parser's bare 431.
pub fn parse_buffer(limits: &Limits) -> usize {
    limits.max_header_bytes.saturating_mul(2).max(8192)
}

/// Approximate size of a request head as sent (target, names, values).
fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target
        + 16
}

/// A refusal: the reason's status and `x-pinproxy-error` value, and a
/// short human body.
pub fn refuse(reason: Reason, host: &str, message: &str) -> Response<Body> {
    debug_assert!(reason.status().is_some(), "{reason:?} is not a refusal");
    let status = reason.status().unwrap_or(StatusCode::BAD_GATEWAY);
    let body = if host.is_empty() {
        format!("pinproxy: {message}\n")
    } else {
        format!("pinproxy: {host}: {message}\n")
    };
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static(reason.as_str()));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A refusal made before any upstream connection: also counted as denied.
pub fn deny(state: &State, reason: Reason, host: &str, message: &str) -> Response<Body> {
    count_denied(state, reason);
    refuse(reason, host, message)
}

/// Counts a refusal in `pinproxy_denied_total`.
pub fn count_denied(state: &State, reason: Reason) {
    state
        .shared
        .metrics
        .denied
        .with_label_values(&[reason.as_str()])
        .inc();
}

/// The refusal for an upstream failure.
pub fn upstream_refusal(state: &State, err: &UpstreamError) -> (Response<Body>, Reason) {
    let reason = match err.failure {
        Failure::Unreachable => Reason::UpstreamUnreachable,
        Failure::Timeout => Reason::UpstreamTimeout,
        Failure::PinMismatch => Reason::PinMismatch,
        Failure::Untrusted(_) => Reason::UntrustedCertificate,
        Failure::Tls(_) => Reason::UpstreamTlsError,
        Failure::PrivateAddress => {
            count_denied(state, Reason::PrivateAddress);
            Reason::PrivateAddress
        }
    };
    (refuse(reason, &err.host, &err.detail), reason)
}

/// [`admission::decide`] under the snapshot `snap`, with a refusal turned
/// into a counted response.
#[allow(clippy::result_large_err)] // the refusal is the answer; it is not kept
pub fn admit(state: &State, snap: &Snapshot, target: &Target) -> Result<Admission, Response<Body>> {
    admission::decide(&snap.policy, target, time::OffsetDateTime::now_utc()).map_err(|r| {
        let host = target.host.to_string();
        if r.reason.is_denied() {
            deny(state, r.reason, &host, &r.message)
        } else {
            if let Some(e) = &r.entry {
                count(state, &e.name, r.reason.into());
            }
            refuse(r.reason, &host, &r.message)
        }
    })
}

/// Would `target` (reached at `peer`, admitted as `admitted`) still be let
/// through under the snapshot in force now? Open tunnels, WebSockets and
/// streaming responses ask this after every reload.
pub fn still_allowed(
    state: &State,
    target: &Target,
    admitted: &Admission,
    peer: Option<std::net::SocketAddr>,
) -> bool {
    let snap = state.snapshot.load();
    admitted.still_holds(&snap.policy, target, time::OffsetDateTime::now_utc())
        && peer.is_none_or(|p| snap.connector.egress_allowed(&p))
}

/// Resolves `revoke_grace` after a reload means the admission no longer
/// holds. Subscribe
/// (`generation_tx.subscribe()`) *before* deciding admission, so a reload
/// in between is seen.
pub async fn revoked(
    state: Arc<State>,
    mut rx: watch::Receiver<u64>,
    target: Target,
    admitted: Admission,
    peer: Option<std::net::SocketAddr>,
) {
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !still_allowed(&state, &target, &admitted, peer) {
            // In-flight exchanges finish; only what outlives the grace
            // period (a long stream, an open tunnel) is cut.
            tokio::time::sleep(state.limits.revoke_grace).await;
            return;
        }
    }
}

/// One client connection's share of `--max-connections` and of
/// `connections_active`; tunnels carried out of the HTTP connection keep a
/// clone, so the slot is held until the last of them closes.
pub struct ConnGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<crate::control::metrics::Metrics>,
}

impl ConnGuard {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        metrics: Arc<crate::control::metrics::Metrics>,
    ) -> Self {
        metrics.connections_active.inc();
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.connections_active.dec();
    }
}

/// Counts a finished request or tunnel.
pub fn count(state: &State, host: &str, outcome: Outcome) {
    state
        .shared
        .metrics
        .requests
        .with_label_values(&[host, outcome.as_str()])
        .inc();
}
