//! The proxy room: listeners and per-connection serving. It asks the
//! policy what to do and never parses YAML.
//!
//! - [`serve`] accepts clients (bounded by `--max-connections`) and drains
//!   them on shutdown; `conn` serves HTTP/1.1 on each and parks idle ones.
//!   While [`overload`]'s memory guard says the process is over
//!   `--max-memory`, new connections are refused there and new requests
//!   in [`admit::admit`].
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
pub mod overload;
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
    /// On while resident memory is over `--max-memory` (set by
    /// [`overload::guard`]): new connections and requests are refused.
    pub overload: Arc<overload::Overload>,
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

/// `SO_SNDBUF` asked for on every accepted client socket, proxy and
/// transparent listeners alike (the kernel doubles it: 512 KiB of queue);
/// it also turns off send-buffer autotuning for the socket. On loopback,
/// the app's hop, autotuning grows a stalled reader's queue to
/// `tcp_wmem`'s maximum (4 MiB), memory charged to the container's cgroup
/// but in no figure the guard judges (review 10 F6). 100 unlisted CONNECT
/// tunnels whose client stopped reading: pinproxy's sockets held 432 MiB
/// without the cap, 81 MiB with it (~0.8 MiB a tunnel, 29 MiB of it
/// upstream receive queues, which autotune only as far as pinproxy reads).
/// The hop is loopback or the pod's network, where this is many times the
/// bandwidth-delay product: 50 MiB through the debug build, forward and
/// CONNECT, took the same time with and without it within a loaded
/// machine's noise (median of 11: 0.16 / 0.19 s forward, 0.21 / 0.23 s
/// CONNECT). Upstream sockets are left to autotune: there the window is
/// the throughput over a real round trip.
pub const CLIENT_SEND_BUFFER: usize = 256 * 1024;

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
    /// After the memory guard has refused new work this long without a
    /// break, `/healthz` fails so the liveness probe restarts the
    /// container (`None`: never); see [`overload`].
    pub overloaded_unhealthy_after: Option<Duration>,
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
            overloaded_unhealthy_after: Some(overload::UNHEALTHY_AFTER),
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
/// the connection limit and while not overloaded (else: 503 `overloaded`,
/// the log detail naming the limit), handled by `handle`
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
        let overloaded = ctx.overload.is_on();
        let permit = match overloaded {
            false => permits.clone().try_acquire_owned().ok(),
            true => None,
        };
        let Some(permit) = permit else {
            let message = match overloaded {
                true => overload::REFUSAL.to_string(),
                // Named as the upstream budget's refusal is: the flag and its value.
                false => format!(
                    "every client connection pinproxy may serve is open (--max-connections {}, \
                     the proxy and transparent listeners together); try again once some have \
                     closed",
                    ctx.limits.max_connections.max(1)
                ),
            };
            let refused = refuse(&ctx, Reason::Overloaded, None, "", &message);
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
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(CLIENT_SEND_BUFFER);
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
    let _ = tokio::time::timeout(REFUSAL_WRITE, write_refusal(&mut stream, &refused)).await;
}

/// How long a refusal written raw may take to leave.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Writes `refused` as a whole HTTP/1.1 response that closes the
/// connection, without reading the request (hyper never sees it).
async fn write_refusal<S>(stream: &mut S, refused: &Refused) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let (status, reason, body) = (refused.status(), refused.reason(), refused.body());
    let msg = format!(
        "HTTP/1.1 {status}\r\n{ERROR_HEADER}: {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await
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

/// hyper's parse buffer: the header limit plus `HEAD_SLACK`, so a head of
/// the limit parses and one just over it still reaches us and gets a 431
/// *with* its reason; a head still unfinished past it gets the parser's
/// bare 431 at once. hyper holds what it has read of an unfinished head
/// (up to `--header-timeout`): with twice the limit that was ~138 KiB per
/// connection (review 9), now ~77 KiB. Not a byte-exact cap: hyper reads
/// into whatever its buffer's growth left free, so a head that arrives at
/// once may parse up to ~112 KiB. Also the most a client's write queue holds.
pub fn parse_buffer(limits: &Limits) -> usize {
    limits.max_header_bytes.saturating_add(HEAD_SLACK).max(8192)
}

/// The h2 server's `SETTINGS_MAX_HEADER_LIST_SIZE` inside intercepted
/// tunnels: the head limit plus the slack HPACK's 32 bytes per field need,
/// as `parse_buffer` is for HTTP/1.1 there (requests inside a tunnel meet
/// the parsers' limits only; `handle`'s 431 with a reason is the
/// listener's). Over it, h2's bare 431.
pub fn h2_header_list(limits: &Limits) -> u32 {
    u32::try_from(limits.max_header_bytes.saturating_add(HEAD_SLACK)).unwrap_or(u32::MAX)
}

/// Bytes a parser may hold beyond `max_header_bytes`: `head_size` counts
/// names, values and the target, and the head as sent also has the method,
/// `http://`, the version and line ends (h2: 32 bytes per field), so a
/// head just over the limit by `head_size` may be a little more on the wire.
pub const HEAD_SLACK: usize = 4096;

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
