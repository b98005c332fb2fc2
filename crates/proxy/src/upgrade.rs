//! HTTP/1.1 Upgrade (WebSocket), inside intercepted tunnels and on the
//! plain forward path alike: a dedicated pinned HTTP/1.1 connection
//! upstream (an h2 pool connection cannot carry it; an unlisted host's
//! `ws://` gets a plain one, as its `http://` does), the request relayed
//! with `Upgrade: websocket` kept, and on a `101` that switched to
//! WebSocket the two upgraded streams spliced. The splice is a task drain
//! waits for, closed when idle and when a reload revokes the admission it
//! was made under. No other upgrade is relayed ([`is_upgrade`]).

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch};
use tokio_util::either::Either as EitherIo;

use super::body::{revoked, Revocation};
use super::exchange::{response_headers, strip_hop_by_hop};
use super::refusal::{
    refuse, upstream_failed, upstream_refusal, upstream_timed_out, UnaskedSwitch,
};
use super::{tunnel, Body, Client, ClientIo, Context, Streamed, ERROR_HEADER};
use pinproxy_policy::{Admission, Target};
use pinproxy_reason::{Reason, RequestOutcome};
use pinproxy_upstream::Snapshot;

/// Whether a request is a WebSocket opening handshake (RFC 6455 §4.1: a
/// `GET` with `Connection: upgrade`, `websocket` among its `Upgrade`
/// tokens, case-insensitive, and a `Sec-WebSocket-Key`): the one upgrade
/// pinproxy relays, since it can judge the host and pins before the
/// `101`. Every other upgrade (`h2c`, `TLS/1.x`, a custom token) is served
/// as a plain HTTP/1.1 request, `Upgrade` and its `Connection` token
/// stripped with the other hop-by-hop headers: relayed, an upstream's
/// `101` would turn the connection into an unmediated byte tunnel.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let tokens = |name: header::HeaderName| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    req.method() == http::Method::GET
        && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
        && tokens(header::CONNECTION)
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
        && tokens(header::UPGRADE)
            .iter()
            .any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// Whether an upstream's `101` switched to WebSocket, the one protocol
/// asked for: `Upgrade: websocket` and nothing else.
fn switched_to_websocket<B>(resp: &Response<B>) -> bool {
    let mut values = resp.headers().get_all(header::UPGRADE).iter();
    let one = values.next().and_then(|v| v.to_str().ok());
    values.next().is_none() && one.is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Where the client's side of an upgraded connection comes from.
enum ClientSide {
    /// hyper serves the connection with upgrades (intercepted tunnels).
    Hyper(hyper::upgrade::OnUpgrade),
    /// A plain proxy connection (`conn`): once the `101` is written, the
    /// connection task hands the raw stream over through the [`Client`]'s
    /// handoff, as it does for CONNECT.
    Handoff,
}

/// What an upgrade was admitted as, and the generation watch (subscribed
/// before admission was decided) that revokes it.
struct Admitted {
    admission: Admission,
    target: Target,
    generation: watch::Receiver<u64>,
    /// An unlisted host's `ws://`: relayed as plain HTTP to this port.
    plain: Option<u16>,
}

/// Relays an upgrade request inside an intercepted tunnel to `target`,
/// admitted as `admission` under `snap`; `generation` was subscribed
/// before admission was decided.
pub async fn relay(
    ctx: &Arc<Context>,
    snap: &Snapshot,
    admission: Admission,
    target: Target,
    mut req: Request<Incoming>,
    client: &Client,
    generation: watch::Receiver<u64>,
) -> Response<Body> {
    let side = ClientSide::Hyper(hyper::upgrade::on(&mut req));
    let admitted = Admitted {
        admission,
        target,
        generation,
        plain: None,
    };
    relay_with(ctx, snap, admitted, req, client, side).await
}

/// As [`relay`], for an absolute-form request on a plain proxy connection
/// (`GET http://host/ws` with `Upgrade: websocket` through `HTTP_PROXY`).
/// `plain`: an unlisted host's port, relayed without TLS.
#[allow(clippy::too_many_arguments)] // the relay's inputs, each used once
pub async fn relay_plain(
    ctx: &Arc<Context>,
    snap: &Snapshot,
    admission: Admission,
    target: Target,
    plain: Option<u16>,
    req: Request<Incoming>,
    client: &Client,
    generation: watch::Receiver<u64>,
) -> Response<Body> {
    let admitted = Admitted {
        admission,
        target,
        generation,
        plain,
    };
    relay_with(ctx, snap, admitted, req, client, ClientSide::Handoff).await
}

async fn relay_with(
    ctx: &Arc<Context>,
    snap: &Snapshot,
    admitted: Admitted,
    req: Request<Incoming>,
    client: &Client,
    side: ClientSide,
) -> Response<Body> {
    let (label, target) = (admitted.admission.label().to_string(), &admitted.target);
    let admitted_plain = admitted.plain;
    let entry = admitted.admission.entry().map(Arc::as_ref);
    let dialed = match admitted_plain {
        Some(port) => snap
            .connector
            .dial_unlisted_plain(&target.host, port)
            .await
            .map(EitherIo::Right),
        None => snap
            .connector
            .connect_h1(&target.host, target.port, entry)
            .await
            .map(EitherIo::Left),
    };
    let io = match dialed {
        Ok(s) => s,
        Err(e) => return upstream_refusal(ctx, &label, &e).into(),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => return upstream_failed(ctx, &label, &target.host, &e),
    };
    client.tracker.spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream upgrade connection closed");
        }
    });
    let host_port = admitted_plain.map_or((target.port, 443), |p| (p, 80));
    let Some(out) = upstream_request(req, target, host_port) else {
        let host = target.host.to_string();
        let message = "invalid request path";
        return refuse(ctx, Reason::BadRequest, Some(&label), &host, message).into();
    };
    let sent = tokio::time::timeout(ctx.timeouts.response, sender.send_request(out)).await;
    let mut resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return upstream_failed(ctx, &label, &target.host, &e),
        Err(_) => return upstream_timed_out(ctx, &label, &target.host),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !switched_to_websocket(&resp) {
        return upstream_failed(ctx, &label, &target.host, &UnaskedSwitch);
    }
    let watch = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut resp);
        let client_io = match side {
            ClientSide::Hyper(on) => Either::Left(on),
            // Claimed only now: a connection whose upgrade the upstream
            // declined goes on serving requests.
            ClientSide::Handoff => Either::Right(client.handoff.claim()),
        };
        let (ctx, guard) = (ctx.clone(), client.guard.clone());
        client.tracker.spawn(async move {
            let _guard = guard;
            splice_upgraded(ctx, admitted, client_io, upstream).await;
        });
        None
    } else {
        // Declined: its body is a response like any other, and ends as one
        // does when a reload revokes the admission (it streamed on).
        let Admitted {
            admission,
            target,
            generation,
            ..
        } = admitted;
        let revocation = Revocation {
            ctx: ctx.clone(),
            rx: generation,
            admission,
        };
        Some(Box::new((revocation, target)))
    };
    let outcome = match admitted_plain {
        Some(_) => RequestOutcome::PlainHttp,
        None => RequestOutcome::Ok,
    };
    ctx.metrics.served(&label, outcome);
    let (mut parts, body) = resp.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        // Only pinproxy speaks x-pinproxy-error.
        parts.headers.remove(ERROR_HEADER);
    } else {
        // Declined: an ordinary response, framed and stripped as one.
        response_headers(&mut parts.headers);
    }
    Response::from_parts(parts, Either::Left(Streamed::new(body, watch)))
}

/// Splices the client's and the upstream's upgraded streams once both are
/// there, until idle or closed, or until a reload revokes the admission.
async fn splice_upgraded(
    ctx: Arc<Context>,
    admitted: Admitted,
    client_io: Either<hyper::upgrade::OnUpgrade, oneshot::Receiver<ClientIo>>,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let Admitted {
        admission,
        target,
        generation,
        ..
    } = admitted;
    let idle = ctx.limits.tunnel_idle;
    let spliced = async move {
        let Ok(upstream) = upstream.await else {
            return;
        };
        let upstream = TokioIo::new(upstream);
        match client_io {
            Either::Left(on) => {
                if let Ok(c) = on.await {
                    tunnel::splice(TokioIo::new(c), upstream, idle).await;
                }
            }
            Either::Right(handoff) => {
                if let Ok(c) = handoff.await {
                    tunnel::splice(c, upstream, idle).await;
                }
            }
        }
    };
    let revoked = revoked(ctx.clone(), generation, target.clone(), admission, None);
    tokio::select! {
        _ = spliced => {}
        _ = revoked => tracing::info!(host = %target.host, "closing upgraded stream: a reload changed its pins or policy"),
    }
}

/// The request as the upstream gets it: origin-form path, hop-by-hop
/// headers stripped but `Upgrade: websocket` kept, `Host` naming the target and
/// `port` unless it is the scheme's `default` one.
fn upstream_request(
    req: Request<Incoming>,
    target: &Target,
    (port, default): (u16, u16),
) -> Option<Request<Incoming>> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = path.parse().ok()?;
    parts.version = http::Version::HTTP_11;
    // Only the WebSocket token goes on (`Upgrade: websocket, h2c` asks
    // for both; the upstream may pick only the one pinproxy relays).
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let authority = if port == default {
        target.host.authority_form()
    } else {
        format!("{}:{port}", target.host.authority_form())
    };
    if let Ok(v) = authority.parse() {
        parts.headers.insert(header::HOST, v);
    }
    Some(Request::from_parts(parts, body))
}
