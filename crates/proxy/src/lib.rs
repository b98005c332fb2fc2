//! The proxy room: listeners and per-connection serving. It asks the
//! policy what to do and never parses YAML.
//!
//! - [`serve`] accepts clients (bounded by `--max-connections`) and drains
//!   them on shutdown; `conn` serves HTTP/1.1 on each and parks idle ones.
//! - Absolute-form requests go to [`forward`] (unlisted hosts' `http://`
//!   to [`plain`]), CONNECT to [`connect`] (interception for pinned hosts,
//!   [`tunnel`]s for unlisted ones), redirected connections to
//!   [`transparent`]. Each is admitted once, by [`admit::admit`], and carries its
//!   `Admission` from there.
//! - Every way a request goes out (pinned, plain, passthrough, upgrades)
//!   sends it through [`exchange`].
//! - [`refusal`] makes every refusal (logged, counted as the reason table
//!   says, then answered); [`body`] streams upstream responses and cuts
//!   them when a reload revokes them.

#![forbid(unsafe_code)]

pub mod admit;
pub mod body;
mod conn;
pub mod connect;
mod ech;
pub mod exchange;
pub mod forward;
pub mod intercept;
pub mod memory;
pub mod original_dst;
pub mod passthrough;
pub mod plain;
pub mod refusal;
pub mod target;
pub mod transparent;
pub mod tunnel;
pub mod upgrade;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use rustls::crypto::CryptoProvider;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

pub use admit::{admit, Admitted, Place};
pub use body::{Body, Revocation, Streamed};
pub use conn::{ClientIo, Handoff};
pub use refusal::{refuse, upstream_refusal, Refused, ERROR_HEADER};

use pinproxy_control::logs::LogLimiter;
use pinproxy_control::metrics::Metrics;
use pinproxy_control::Live;
use pinproxy_reason::Reason;
use pinproxy_tls::ca::Intercept;
use pinproxy_upstream::Timeouts;

/// What one proxy listener serves with: the live snapshot, its limits and
/// the pod CA. Shared by every connection of the listener.
pub struct Context {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub intercept: Arc<Intercept>,
    pub provider: Arc<CryptoProvider>,
    /// Rate limit of refusal log lines, per host and reason.
    pub refusal_logs: Arc<LogLimiter>,
    /// `--max-connections` slots, shared by every proxy and transparent
    /// listener (see [`Context::connection_slots`]).
    pub connections: Arc<Semaphore>,
}

impl Context {
    /// The slots of `limits.max_connections`, for [`Context::connections`].
    pub fn connection_slots(limits: &Limits) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(limits.max_connections.max(1)))
    }
}

/// Connections past the limit that are answered `503 overloaded` at once
/// (each holds its descriptor up to a second); past these, a connection is
/// closed unanswered, so a flood cannot spend descriptors on refusals.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;

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
    /// How long a redirected connection may stay silent before pinproxy
    /// decides it is a server-first protocol (MySQL, SSH, SMTP): spliced
    /// when its destination is a passthrough CIDR, else closed.
    pub first_byte_timeout: Duration,
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
            first_byte_timeout: Duration::from_secs(1),
        }
    }
}

/// Serves the proxy on `listener` until `shutdown` resolves, then stops
/// accepting and drains open connections up to the drain timeout.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    accept_loop(listener, ctx, shutdown, |a, ctx| async move {
        conn::serve_connection(a.stream, ctx, a.stop, a.tracker, a.guard).await;
        tracing::trace!(peer = %a.peer, "client connection closed");
    })
    .await
}

/// One accepted client connection, as a listener's handler gets it.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: std::net::SocketAddr,
    /// Turns true when the listener stops: finish, then close.
    pub stop: watch::Receiver<bool>,
    /// Tasks spawned here are waited for by the drain.
    pub tracker: TaskTracker,
    /// The connection's slot of `--max-connections`.
    pub guard: Arc<ConnGuard>,
}

/// Accepts on `listener` until `shutdown` resolves — each connection under
/// the connection limit (beyond it: 503 `overloaded`), handled by `handle`
/// on a tracked task — then stops accepting and drains up to the drain
/// timeout. EMFILE and friends back off instead of spinning or exiting.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
    handle: F,
) where
    F: Fn(Accepted, Arc<Context>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = ctx.connections.clone();
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let refused = refuse(
                &ctx,
                Reason::Overloaded,
                None,
                "",
                "connection limit reached",
            );
            match refusals.clone().try_acquire_owned() {
                Ok(slot) => {
                    tracker.spawn(async move {
                        refuse_overloaded(stream, refused).await;
                        drop(slot);
                    });
                }
                // Past the refusals in flight: closed unanswered.
                Err(_) => refused.close(),
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            stream,
            peer,
            stop: stop_rx.clone(),
            tracker: tracker.clone(),
            guard: Arc::new(ConnGuard::new(permit, ctx.metrics.clone())),
        };
        tracker.spawn(handle(accepted, ctx.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracker.close();
    if tokio::time::timeout(ctx.limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline reached with connections still open");
    }
}

/// Answers a connection over the limit before any request is read: the
/// refusal, written raw, and the connection closed.
async fn refuse_overloaded(mut stream: TcpStream, refused: Refused) {
    let (status, reason, body) = (refused.status(), refused.reason(), refused.body());
    let msg = format!(
        "HTTP/1.1 {status}\r\n{ERROR_HEADER}: {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
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

async fn handle(ctx: Arc<Context>, req: Request<Incoming>, client: Client) -> Response<Body> {
    if head_size(&req) > ctx.limits.max_header_bytes {
        let message = format!("request head is over {} bytes", ctx.limits.max_header_bytes);
        return refuse(&ctx, Reason::HeadTooLarge, None, "", &message).into();
    }
    if req.method() == http::Method::CONNECT {
        // Boxed: once per tunnel, not per request; keeps it out of the size
        // of every forwarded request's future.
        Box::pin(connect::handle(ctx, req, client)).await
    } else {
        forward::handle(ctx, req, client).await
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

/// One client connection's share of `--max-connections` and of
/// `connections_active`; tunnels carried out of the HTTP connection keep a
/// clone, so the slot is held until the last of them closes.
pub struct ConnGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<pinproxy_control::metrics::Metrics>,
}

impl ConnGuard {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        metrics: Arc<pinproxy_control::metrics::Metrics>,
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
        memory::note_release();
    }
}
