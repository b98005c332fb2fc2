//! Serving an intercepted TLS connection: the client's TLS is terminated
//! with a leaf the pod CA minted for the target host (the client's SNI must
//! name that host), HTTP/1.1 or h2 is served on it, and every request goes
//! upstream over pinned connections — the same path as plain-HTTP
//! forwarding, so no request skips the verifier. WebSocket upgrades get
//! their own pinned HTTP/1.1 connection ([`super::upgrade`]).

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;

use super::admit::{admit, Place};
use super::refusal::refuse;
use super::target::split_authority;
use super::{forward, tunnel, upgrade, Body, Client, Context};
use pinproxy_policy::host::Host;
use pinproxy_policy::Target;
use pinproxy_reason::Reason;

/// Concurrent h2 streams an intercepted tunnel serves (SETTINGS
/// `MAX_CONCURRENT_STREAMS`); more are refused by the h2 layer.
pub const MAX_STREAMS: u32 = 100;

/// Response bytes h2 queues per stream beyond what the client has read
/// (hyper: 400 KiB). A client that opens its windows wide and stops reading
/// holds at most this per stream, 6.4 MiB per tunnel at `MAX_STREAMS`.
pub const SEND_BUFFER: usize = 64 * 1024;

/// The windows pinproxy opens to the client for request bodies, stated
/// rather than left to hyper's defaults (the same 1 MiB each). Request
/// bytes pinproxy has not yet sent upstream are bounded per tunnel by the
/// connection window, so a smaller stream window saves no memory; it costs
/// uploads round trips: a 50 MiB upload through a tunnel on a CPU-contended
/// loopback ran at 19-34 MiB/s with 64 KiB stream windows (Envoy's edge
/// value), 28-32 with 256 KiB, 65-70 with 1 MiB (review 9's measurement).
pub const STREAM_WINDOW: u32 = 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Terminates the client's TLS on `io` and serves it until it closes or
/// idles out.
pub async fn serve<IO>(
    ctx: Arc<Context>,
    target: Target,
    tls: Arc<rustls::ServerConfig>,
    io: IO,
    client: Client,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(ctx.limits.header_read_timeout, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.host, "client TLS hello failed");
            return;
        }
        Err(_) => return,
    };
    // The host dialed, the name verified and the pinset entry must be one
    // name: a different SNI is domain fronting.
    if let Some(sni) = start.client_hello().server_name() {
        if Host::parse(sni).as_ref() != Ok(&target.host) {
            // `{:?}` of the name as received: quoted, control bytes escaped.
            let message = format!("the TLS SNI {sni:?} names another host than the one dialed");
            let host = target.host.to_string();
            // Answered with a TLS alert.
            refuse(&ctx, Reason::SniMismatch, None, &host, &message).close();
            if let Some(alert) = pinproxy_tls::ca::refusing_config(ctx.provider.clone()) {
                let _ = start.into_stream(alert).await;
            }
            return;
        }
    }
    let handshake = start.into_stream(tls);
    let stream = match tokio::time::timeout(ctx.limits.header_read_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.host, "client TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    // Idle is judged by requests, not bytes: h2's PINGs (ours every 30 s,
    // and the client's answers or its own) kept a connection that never
    // sent a request open past --tunnel-idle-timeout, holding its slot.
    // A request is activity from its head until its response's last
    // frame; each response frame moves the clock too.
    let clock = tunnel::Clock::new();
    let svc_ctx = ctx.clone();
    let svc_target = target.clone();
    let svc_clock = clock.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let ctx = svc_ctx.clone();
        let target = svc_target.clone();
        let client = client.clone();
        let busy = svc_clock.busy();
        async move {
            let resp = inner_request(ctx, target, req, client).await;
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked { body, busy }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_read_timeout)
        .max_buf_size(super::parse_buffer(&ctx.limits));
    // Each stream to an HTTP/1.1 upstream holds an upstream connection of
    // its own (from the upstream budget): Envoy's default of 100 streams
    // per client connection, not hyper's 200.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buf_size(SEND_BUFFER)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // The same head limit as HTTP/1.1 in the tunnel, the parser's
        // (hyper's h2 default is 16 KiB: h2 heads of 16-64 KiB got a bare
        // 431 that HTTP/1.1 let through).
        .max_header_list_size(super::h2_header_list(&ctx.limits))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "intercepted connection closed");
            }
            return;
        }
        _ = clock.idle(ctx.limits.tunnel_idle) => {
            tracing::debug!(host = %target.host, "intercepted tunnel idle: closing");
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
}

/// One request inside an intercepted tunnel. The target is always the
/// CONNECT host: a request naming another host is misdirected (421), never
/// rerouted, so credentials meant for one host never reach another.
async fn inner_request(
    ctx: Arc<Context>,
    target: Target,
    req: Request<Incoming>,
    client: Client,
) -> Response<Body> {
    // As on the forward path: one Host, neither none nor two.
    let problem = if req.method() == http::Method::CONNECT {
        Some("CONNECT inside an intercepted tunnel: the tunnel already goes to its host")
    } else {
        forward::host_problem(&req)
    };
    if let Some(why) = problem {
        let host = target.host.to_string();
        return refuse(&ctx, Reason::BadRequest, None, &host, why).into();
    }
    // Every name the request gives must be the tunnel's: an h2 request's
    // `:authority` and, when it also sends one, its `host` (RFC 9113
    // §8.3.1: a server should treat a differing one as malformed).
    for named in request_authorities(&req) {
        let same = named
            .parse::<Authority>()
            .ok()
            .and_then(|a| split_authority(&a).ok())
            .is_some_and(|(h, p)| h == target.host && p.is_none_or(|p| p == target.port));
        if !same {
            let message = format!(
                "this tunnel is for {}:{}; the request names {named:?}",
                target.host, target.port
            );
            let host = target.host.to_string();
            return refuse(&ctx, Reason::MisdirectedRequest, None, &host, &message).into();
        }
    }
    // Subscribe before deciding, so a reload in between is not missed.
    let generation = ctx.live.subscribe();
    let snap = ctx.live.load_full();
    // Each request is admitted under the snapshot in force now: a reload
    // may have removed the host or changed its ports since the tunnel
    // opened.
    let admission = match admit(&ctx, &snap, &target, Place::Unknown).await {
        Ok(a) => a.admission,
        Err(refused) => return refused.into(),
    };
    if upgrade::is_upgrade(&req) {
        // Boxed: the rare upgrade would otherwise size every request's future.
        return Box::pin(upgrade::relay(
            &ctx, &snap, admission, target, req, &client, generation,
        ))
        .await;
    }
    // The whole tunnel is revoked by its owner task; no per-request watch.
    let entry = admission.entry().cloned();
    forward::send(&ctx, &snap, entry, target, req, None).await
}

/// The authorities a request names: h2 `:authority` / absolute URI, else
/// Host — and, over h2, a `host` sent beside `:authority` too (HTTP/1.1's
/// absolute form overrides Host instead: RFC 9112 §3.2.2). A Host that is
/// not text names no host pinproxy could match: taken lossily, it fails
/// the check.
fn request_authorities<B>(req: &Request<B>) -> impl Iterator<Item = String> {
    let uri = req.uri().authority().map(|a| a.as_str().to_string());
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|_| uri.is_none() || req.version() == http::Version::HTTP_2);
    uri.into_iter().chain(host)
}

/// A response body that holds its connection busy until its last frame,
/// and moves the connection's clock with each frame.
struct Tracked {
    body: Body,
    busy: tunnel::Busy,
}

impl hyper::body::Body for Tracked {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            self.busy.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
