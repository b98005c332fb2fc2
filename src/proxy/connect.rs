//! CONNECT from `HTTPS_PROXY` clients.
//!
//! - A pinned host is intercepted: after `200`, pinproxy terminates the
//!   client's TLS with a leaf its pod CA minted for the CONNECT host (the
//!   client's SNI must name that same host), serves HTTP/1.1 or h2 on it,
//!   and forwards every request over pinned upstream connections — the same
//!   path as plain-HTTP forwarding, so no request skips the verifier.
//! - An unlisted host allowed by `unlisted: allow` is tunnelled as bytes,
//!   after checking that a TLS ClientHello names the CONNECT host.
//!
//! Refusals known before `200` answer the CONNECT; an upstream pin failure
//! answers the first request inside the tunnel with 502 + `x-pinproxy-error`.
//! Every tunnel holds its client connection's slot, closes when idle, and
//! closes when a reload means it would no longer be admitted.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_rustls::LazyConfigAcceptor;

use super::body::revoked;
use super::forward::{self, strip_hop_by_hop};
use super::target::{parse_connect, split_authority};
use super::tunnel::{self, Hello};
use super::{
    admit, count, deny, refuse, upstream_refusal, Body, Client, ClientIo, ConnGuard, Context,
    ERROR_HEADER,
};
use crate::policy::admission::{self, Admission};
use crate::policy::host::Host;
use crate::policy::Target;
use crate::reason::{Outcome, Reason};
use crate::upstream::{Failure, Snapshot, UpstreamError};

pub async fn handle(ctx: Arc<Context>, req: Request<Incoming>, client: Client) -> Response<Body> {
    let target = match parse_connect(&req) {
        Ok(t) => t,
        Err(e) => return deny(&ctx, Reason::BadRequest, "", &e.to_string()),
    };
    // Subscribe before deciding, so a reload in between is not missed.
    let generation = ctx.live.subscribe();
    let snap = ctx.live.load_full();
    let admission = match admit(&ctx, &snap, &target) {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    match admission.entry().cloned() {
        None => tunnel_unlisted(ctx, snap, target, admission, client, generation).await,
        Some(entry) => {
            // Mint (or fetch) the leaf before answering, so a failure is a
            // readable 502 rather than a broken handshake.
            let tls = match ctx.intercept.server_config(&target.host) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "minting an interception certificate");
                    return refuse(
                        Reason::InternalError,
                        &target.host.to_string(),
                        "cannot mint an interception certificate",
                    );
                }
            };
            let label = entry.name.clone();
            // The connection task hands the client stream over once the
            // 200 is written.
            let upgrade = client.handoff.claim();
            let guard = client.guard;
            client.tracker.spawn(async move {
                let Ok(up) = upgrade.await else {
                    return;
                };
                let revoked = revoked(ctx.clone(), generation, target.clone(), admission, None);
                tokio::select! {
                    _ = intercepted(ctx.clone(), target.clone(), label, tls, up, guard) => {}
                    _ = revoked => tracing::info!(host = %target.host, "closing intercepted tunnel: a reload changed its pins or policy"),
                }
            });
            Response::new(Either::Right(Full::default()))
        }
    }
}

async fn tunnel_unlisted(
    ctx: Arc<Context>,
    snap: Arc<Snapshot>,
    target: Target,
    admission: Admission,
    client: Client,
    generation: tokio::sync::watch::Receiver<u64>,
) -> Response<Body> {
    // Dial before answering, so refusals (private address, unreachable)
    // are the answer to the CONNECT.
    let upstream = match snap.connector.dial_plain(&target.host, target.port).await {
        Ok(s) => s,
        Err(e) => {
            let (resp, reason) = upstream_refusal(&ctx, &e);
            count(&ctx, "unlisted", reason.into());
            return resp;
        }
    };
    let peer = upstream.peer_addr().ok();
    let upgrade = client.handoff.claim();
    let guard = client.guard;
    client.tracker.spawn(async move {
        let _guard = guard;
        let Ok(up) = upgrade.await else {
            return;
        };
        count(&ctx, "unlisted", Outcome::Tunnel);
        // The host dialed and the name the client's TLS asks for must be
        // one name here too (domain fronting through an unlisted alias).
        let host = target.host.clone();
        let accept = |hello: &Hello| match hello {
            Hello::Tls(Some(sni)) => Host::parse(sni).as_ref() == Ok(&host),
            _ => true,
        };
        let splice = tunnel::splice_checked(up, upstream, ctx.limits.tunnel_idle, accept);
        let revoked = revoked(ctx.clone(), generation, target.clone(), admission, peer);
        tokio::select! {
            done = splice => {
                if let tunnel::Spliced::Refused(Hello::Tls(sni)) = done {
                    super::count_denied(&ctx, Reason::SniMismatch);
                    tracing::warn!(connect = %target.host, sni = ?sni, "refused tunnel: SNI names another host");
                }
            }
            _ = revoked => tracing::info!(host = %target.host, "closing tunnel: a reload no longer admits it"),
        }
    });
    Response::new(Either::Right(Full::default()))
}

async fn intercepted(
    ctx: Arc<Context>,
    target: Target,
    label: String,
    tls: Arc<rustls::ServerConfig>,
    up: ClientIo,
    guard: Arc<ConnGuard>,
) {
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), up);
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
    if let Some(sni) = start.client_hello().server_name().map(Host::parse) {
        if sni.as_ref() != Ok(&target.host) {
            super::count_denied(&ctx, Reason::SniMismatch);
            tracing::warn!(connect = %target.host, sni = ?sni, "refusing TLS inside CONNECT: SNI names another host");
            if let Some(refuse) = crate::tls::ca::refusing_config(ctx.provider.clone()) {
                let _ = start.into_stream(refuse).await;
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
    let clock = tunnel::Clock::new();
    let stream = tunnel::Activity::new(stream, clock.clone());
    let svc_ctx = ctx.clone();
    let svc_target = target.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let ctx = svc_ctx.clone();
        let target = svc_target.clone();
        let label = label.clone();
        let guard = guard.clone();
        async move {
            Ok::<_, std::convert::Infallible>(inner_request(ctx, target, label, req, guard).await)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_read_timeout)
        .max_buf_size(super::parse_buffer(&ctx.limits));
    builder
        .http2()
        .timer(TokioTimer::new())
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
    label: String,
    req: Request<Incoming>,
    guard: Arc<ConnGuard>,
) -> Response<Body> {
    if let Some(named) = request_authority(&req) {
        let same = named
            .parse::<Authority>()
            .ok()
            .and_then(|a| split_authority(&a).ok())
            .is_some_and(|(h, p)| h == target.host && p.is_none_or(|p| p == target.port));
        if !same {
            return deny(
                &ctx,
                Reason::MisdirectedRequest,
                &target.host.to_string(),
                &format!(
                    "this tunnel is for {}:{}; the request names {named:?}",
                    target.host, target.port
                ),
            );
        }
    }
    let snap = ctx.live.load_full();
    // Re-admit under the snapshot in force now: a reload may have removed
    // the host or changed its ports since the tunnel opened.
    let entry = match admit(&ctx, &snap, &target) {
        Ok(admission) => admission.entry().cloned(),
        Err(refusal) => return refusal,
    };
    if is_upgrade(&req) {
        return upgrade_request(ctx, snap, label, target, req, guard).await;
    }
    // The whole tunnel is revoked by its owner task; no per-request watch.
    forward::send(&ctx, &snap, entry, target, req, None).await
}

/// The authority a request names: h2 `:authority` / absolute URI, else Host.
fn request_authority<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// An HTTP/1.1 Upgrade (WebSocket) inside a tunnel: a dedicated pinned
/// HTTP/1.1 connection upstream, then the two upgraded streams are spliced.
async fn upgrade_request(
    ctx: Arc<Context>,
    snap: Arc<Snapshot>,
    label: String,
    target: Target,
    mut req: Request<Incoming>,
    guard: Arc<ConnGuard>,
) -> Response<Body> {
    let host = target.host.to_string();
    let generation = ctx.live.subscribe();
    let admitted = match admission::decide(&snap.policy, &target, time::OffsetDateTime::now_utc()) {
        Ok(a) => a,
        Err(r) => return refuse(r.reason, &host, &r.message),
    };
    let tls = match snap.connector.connect_h1(&target.host, target.port).await {
        Ok(s) => s,
        Err(e) => {
            let (resp, reason) = upstream_refusal(&ctx, &e);
            count(&ctx, &label, reason.into());
            return resp;
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
        Ok(x) => x,
        Err(e) => {
            let err = UpstreamError {
                failure: Failure::Unreachable,
                host: host.clone(),
                detail: e.to_string(),
            };
            let (resp, reason) = upstream_refusal(&ctx, &err);
            count(&ctx, &label, reason.into());
            return resp;
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream upgrade connection closed");
        }
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => return deny(&ctx, Reason::BadRequest, &host, "invalid request path"),
    };
    parts.version = http::Version::HTTP_11;
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(p) = protocol {
        parts.headers.insert(header::UPGRADE, p);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let authority = if target.port == 443 {
        target.host.authority_form()
    } else {
        format!("{}:{}", target.host.authority_form(), target.port)
    };
    if let Ok(v) = authority.parse() {
        parts.headers.insert(header::HOST, v);
    }
    let out = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(ctx.timeouts.response, sender.send_request(out)).await;
    let mut resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            count(&ctx, &label, Reason::UpstreamUnreachable.into());
            return refuse(
                Reason::UpstreamUnreachable,
                &host,
                &format!("upstream upgrade failed: {e}"),
            );
        }
        Err(_) => {
            count(&ctx, &label, Reason::UpstreamTimeout.into());
            return refuse(
                Reason::UpstreamTimeout,
                &host,
                "no response from upstream in time",
            );
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let st = ctx.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) else {
                return;
            };
            let revoked = revoked(st.clone(), generation, target.clone(), admitted, None);
            tokio::select! {
                _ = tunnel::splice(TokioIo::new(c), TokioIo::new(u), st.limits.tunnel_idle) => {}
                _ = revoked => tracing::info!(host = %target.host, "closing upgraded stream: a reload changed its pins or policy"),
            }
        });
    }
    count(&ctx, &label, Outcome::Ok);
    let (mut parts, body) = resp.into_parts();
    // Only pinproxy speaks x-pinproxy-error.
    parts.headers.remove(ERROR_HEADER);
    Response::from_parts(parts, Either::Left(super::Streamed::new(body, None)))
}
