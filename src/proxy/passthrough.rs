//! Passthrough (docs/reference.md, "Passthrough"): traffic to in-cluster
//! services relayed as it came. Absolute-form `http://` stays plain HTTP (no
//! TLS upgrade), CONNECT is tunnelled as bytes without interception. Never
//! pinned, exempt from the private-address rule (never from the loop guard),
//! counted as outcome `passthrough` under the item it passed by.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Scheme;
use http::{Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::body::revoked;
use super::forward::{exchange, response_headers, strip_hop_by_hop, Exchange};
use super::refusal::{admit, upstream_failed, upstream_timed_out};
use super::{
    count, deny, tunnel, upgrade, upstream_refusal, Body, Client, Context, Revocation, Streamed,
};
use crate::policy::admission::{self, Admission};
use crate::policy::host::Host;
use crate::policy::Target;
use crate::reason::{Outcome, Reason};
use crate::upstream::{RequestBody, Snapshot};

/// What admission said, and the addresses a passthrough-by-CIDR target
/// resolved to (dialed as they are, never resolved again).
pub struct Admitted {
    pub admission: Admission,
    pub resolved: Option<Vec<SocketAddr>>,
}

/// [`admit`], and for an unlisted *name* when the pinset lists passthrough
/// CIDRs: resolve it, and pass it through when every address lies in one
/// (short in-cluster names such as `orders` have no pattern to match).
#[allow(clippy::result_large_err)] // the refusal is the answer; it is not kept
pub async fn admit_resolving(
    ctx: &Context,
    snap: &Snapshot,
    target: &Target,
) -> Result<Admitted, Response<Body>> {
    let now = time::OffsetDateTime::now_utc();
    let decided = admission::decide(&snap.policy, target, now);
    let unlisted = match &decided {
        Ok(a) => a.is_unlisted(),
        Err(r) => r.entry.is_none(),
    };
    if unlisted && snap.policy.passthrough.has_cidrs() && matches!(target.host, Host::Name(_)) {
        if let Ok(addrs) = snap.connector.resolve(&target.host, target.port).await {
            let ips: Vec<_> = addrs.iter().map(SocketAddr::ip).collect();
            if let Some(admission) = admission::by_address(&snap.policy, target, &ips) {
                return Ok(Admitted {
                    admission,
                    resolved: Some(addrs),
                });
            }
        }
    }
    admit(ctx, snap, target).map(|admission| Admitted {
        admission,
        resolved: None,
    })
}

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
    if req.uri().scheme() != Some(&Scheme::HTTP) {
        return deny(
            ctx,
            Reason::BadRequest,
            &target.host.to_string(),
            "passthrough relays http:// as it came; for TLS use CONNECT (HTTPS_PROXY) or NO_PROXY",
        );
    }
    if upgrade::is_upgrade(&req) {
        return deny(
            ctx,
            Reason::BadRequest,
            &target.host.to_string(),
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
            return deny(ctx, Reason::BadRequest, &target.host.to_string(), &why);
        }
        Err(Exchange::Failed(e)) => return upstream_failed(ctx, &label, &target.host, &e),
        Err(Exchange::TimedOut) => return upstream_timed_out(ctx, &label, &target.host),
    };
    count(ctx, &label, Outcome::Passthrough);
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
        Err(e) => {
            let (resp, reason) = upstream_refusal(&ctx, &e);
            count(&ctx, &label, reason.into());
            return resp;
        }
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
        count(&ctx, &label, Outcome::Passthrough);
        let revoked = revoked(ctx.clone(), generation, target.clone(), admission, peer);
        tokio::select! {
            _ = tunnel::splice(up, upstream, ctx.limits.tunnel_idle) => {}
            _ = revoked => tracing::info!(host = %target.host, "closing passthrough tunnel: a reload no longer admits it"),
        }
    });
    Response::new(Either::Right(Full::default()))
}
