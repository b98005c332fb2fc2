//! Passthrough (docs/reference.md, "Passthrough"): traffic to in-cluster
//! services relayed as it came. Absolute-form `http://` stays plain HTTP (no
//! TLS upgrade), CONNECT is tunnelled as bytes without interception. Never
//! pinned, exempt from the private-address rule (never from the loop guard),
//! counted as outcome `passthrough` under the item it passed by.

use std::sync::Arc;

use http::uri::Scheme;
use http::{Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::admit::Admitted;
use super::body::revoked;
use super::exchange::{exchange, response_headers, strip_hop_by_hop, Exchange};
use super::refusal::{refuse, upstream_failed, upstream_refusal, upstream_timed_out};
use super::{tunnel, upgrade, Body, Client, Context, Revocation, Streamed};
use pinproxy_policy::admission::Admission;
use pinproxy_policy::Target;
use pinproxy_reason::{Reason, RequestOutcome};
use pinproxy_upstream::{RequestBody, Snapshot};

/// Relays an absolute-form `http://` request as plain HTTP to the host and
/// port it names (80 by default), with its own Host header.
pub async fn forward(
    ctx: &Arc<Context>,
    snap: &Snapshot,
    admission: Admission,
    target: Target,
    req: Request<Incoming>,
    rx: watch::Receiver<u64>,
) -> Response<Body> {
    let label = admission.label().to_string();
    let bad = |message: &str| -> Response<Body> {
        let host = target.host.to_string();
        refuse(ctx, Reason::BadRequest, Some(&label), &host, message).into()
    };
    if req.uri().scheme() != Some(&Scheme::HTTP) {
        return bad(
            "passthrough relays http:// as it came; for TLS use CONNECT (HTTPS_PROXY) or NO_PROXY",
        );
    }
    if upgrade::is_upgrade(&req) {
        return bad(
            "an upgrade (WebSocket) to a passthrough host is not relayed through HTTP_PROXY; \
             use NO_PROXY for it",
        );
    }
    let (mut parts, body) = req.into_parts();
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let (body, fault) = RequestBody::new(body);
    let out = Request::from_parts(parts, body);
    let resp = match exchange(&snap.plain, out, ctx.timeouts.response).await {
        Ok(resp) => resp,
        // A malformed request body is the client's fault.
        Err(Exchange::Failed(_)) if fault.get().is_some() => {
            let why = format!(
                "malformed request body: {}",
                fault.get().unwrap_or_default()
            );
            return bad(&why);
        }
        Err(Exchange::Failed(e)) => return upstream_failed(ctx, &label, &target.host, &e),
        Err(Exchange::TimedOut) => return upstream_timed_out(ctx, &label, &target.host),
    };
    ctx.metrics.served(&label, RequestOutcome::Passthrough);
    let (mut parts, body) = resp.into_parts();
    // Hop-by-hop headers, x-pinproxy-error, and a Content-Length beside
    // Transfer-Encoding go, as on the forward path.
    response_headers(&mut parts.headers);
    let revocation = Revocation {
        ctx: ctx.clone(),
        rx,
        admission,
    };
    let watch = Some(Box::new((revocation, target)));
    Response::from_parts(parts, Either::Left(Streamed::new(body, watch)))
}

/// Tunnels a CONNECT as bytes, without interception or an SNI check (the
/// client's TLS is its own business with an in-cluster service).
pub async fn tunnel(
    ctx: Arc<Context>,
    snap: Arc<Snapshot>,
    admitted: Admitted,
    target: Target,
    client: Client,
    generation: watch::Receiver<u64>,
) -> Response<Body> {
    let label = admitted.admission.label().to_string();
    // Dial before answering, so a failure is the answer to the CONNECT.
    let upstream = match snap
        .connector
        .dial_passthrough(&target.host, target.port, admitted.resolved)
        .await
    {
        Ok(s) => s,
        Err(e) => return upstream_refusal(&ctx, &label, &e).into(),
    };
    let peer = upstream.peer_addr().ok();
    let upgrade = client.handoff.claim();
    let guard = client.guard;
    let admission = admitted.admission;
    client.tracker.spawn(async move {
        let _guard = guard;
        let Ok(up) = upgrade.await else {
            return;
        };
        ctx.metrics.served(&label, RequestOutcome::Passthrough);
        let revoked = revoked(ctx.clone(), generation, target.clone(), admission, peer);
        tokio::select! {
            _ = tunnel::splice(up, upstream, ctx.limits.tunnel_idle) => {}
            _ = revoked => tracing::info!(host = %target.host, "closing passthrough tunnel: a reload no longer admits it"),
        }
    });
    Response::new(Either::Right(Full::default()))
}
