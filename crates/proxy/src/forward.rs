//! Absolute-form requests from `HTTP_PROXY` clients: for a listed host
//! pinproxy originates TLS to the URL's host and forwards the request over
//! a pooled, pinned connection (unlisted `http://` URLs are relayed plain,
//! [`plain`]; passthrough ones as they came). The URL's authority decides the host, never `Host` (RFC 9112
//! §3.2.2; Squid CVE-2009-0801).

use std::sync::Arc;

use http::header;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::admit::{admit, Place};
use super::exchange::{
    exchange, exchange_h2, has_hop_by_hop, response_headers, strip_hop_by_hop, te_trailers,
    wants_trailers, Exchange,
};
use super::refusal::{refuse, upstream_failed, upstream_timed_out};
use super::target::{parse_absolute, TargetError};
use super::{passthrough, plain, upgrade, Body, Client, Context, Revocation, Streamed};
use pinproxy_policy::host::Host;
use pinproxy_policy::Target;
use pinproxy_reason::Reason;
use pinproxy_upstream::{RequestBody, Route, Snapshot};

pub async fn handle(ctx: Arc<Context>, req: Request<Incoming>, client: Client) -> Response<Body> {
    let target = match parse_absolute(req.uri()) {
        Ok(t) => t,
        Err(e) => return refuse(&ctx, Reason::BadRequest, None, "", &e.to_string()).into(),
    };
    if let Some(why) = host_problem(&req) {
        let host = target.host.to_string();
        return refuse(&ctx, Reason::BadRequest, None, &host, why).into();
    }
    // Subscribe before deciding, so a reload in between is not missed.
    let rx = ctx.live.subscribe();
    let snap = ctx.live.load_full();
    let admission = match admit(&ctx, &snap, &target, Place::Resolve).await {
        Ok(a) => a.admission,
        Err(refused) => return refused.into(),
    };
    // Relayed as it came: the port the URL names (80 by default), not the
    // TLS upgrade's.
    let plain_port = req.uri().port_u16().unwrap_or(80);
    if admission.passthrough().is_some() {
        let plain = Target {
            host: target.host,
            port: plain_port,
        };
        // Boxed, as are the other rare paths below: an `async fn`'s future
        // is as large as its largest await, and hyper moves and allocates the
        // whole of it for every request (5.5 KB unboxed, most of it the
        // upgrade relay's state; docs/benchmarks.md).
        return Box::pin(passthrough::forward(&ctx, &snap, admission, plain, req, rx)).await;
    }
    // Only listed hosts are upgraded to TLS: an unlisted host has no pin
    // to check, and its http:// service may have no TLS port at all.
    let plain = (admission.is_unlisted() && req.uri().scheme() == Some(&Scheme::HTTP))
        .then_some(plain_port);
    if upgrade::is_upgrade(&req) {
        let relay = upgrade::relay_plain(&ctx, &snap, admission, target, plain, req, &client, rx);
        return Box::pin(relay).await;
    }
    if let Some(port) = plain {
        return Box::pin(plain::forward(
            &ctx, &snap, admission, target, port, req, rx,
        ))
        .await;
    }
    let entry = admission.entry().cloned();
    let revocation = Revocation {
        ctx: ctx.clone(),
        rx,
        admission,
    };
    send(&ctx, &snap, entry, target, req, Some(revocation)).await
}

/// Sends a request upstream through the snapshot's pinned client and
/// returns the response, or the refusal for why it could not be sent.
/// `entry` is what admission found for the target (`None`: unlisted).
pub async fn send(
    ctx: &Context,
    snap: &Arc<Snapshot>,
    entry: Option<Arc<pinproxy_policy::HostPolicy>>,
    target: Target,
    req: Request<Incoming>,
    revocation: Option<Revocation>,
) -> Response<Body> {
    let label = entry.as_deref().map_or("unlisted", |e| e.name.as_str());
    let (mut parts, body) = req.into_parts();
    parts.uri = match upstream_uri(&target, &parts.uri) {
        Ok(u) => u,
        Err(e) => {
            let host = target.host.to_string();
            return refuse(ctx, Reason::BadRequest, Some(label), &host, &e.to_string()).into();
        }
    };
    parts.version = Version::HTTP_11;
    if has_hop_by_hop(&parts.headers) {
        let trailers = wants_trailers(&parts.headers);
        strip_hop_by_hop(&mut parts.headers);
        if trailers {
            parts.headers.insert(header::TE, te_trailers());
        }
    }
    // The client regenerates Host from the URL authority.
    parts.headers.remove(header::HOST);
    let (body, fault) = RequestBody::new(body);
    let out = Request::from_parts(parts, body);
    let timeout = ctx.timeouts.response;
    let sent = match snap.route(entry.as_deref(), &target.host, target.port) {
        Route::H2 => exchange_h2(&snap.client_h2, &snap.client, out, timeout).await,
        Route::Alpn => exchange(&snap.client, out, timeout).await,
        Route::H2Prior => exchange_h2(&snap.client_h2, &snap.client_h2_once, out, timeout).await,
    };
    match sent {
        Err(Exchange::TimedOut) => upstream_timed_out(ctx, label, &target.host),
        Ok(resp) => {
            snap.count_ok(entry.as_deref());
            let (mut parts, body) = resp.into_parts();
            response_headers(&mut parts.headers);
            parts.version = Version::HTTP_11;
            let watch = revocation.map(|r| Box::new((r, target)));
            Response::from_parts(parts, Either::Left(Streamed::new(body, watch)))
        }
        // A malformed (e.g. chunked) request body is the client's fault:
        // never counted against the upstream.
        Err(Exchange::Failed(_)) if fault.get().is_some() => {
            let why = format!(
                "malformed request body: {}",
                fault.get().unwrap_or_default()
            );
            let host = target.host.to_string();
            refuse(ctx, Reason::BadRequest, Some(label), &host, &why).into()
        }
        Err(Exchange::Failed(e)) => upstream_failed(ctx, label, &target.host, &e),
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host (which the
/// URL's authority then overrides); two, or none, is a bad request.
pub(crate) fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    match req.headers().get_all(header::HOST).iter().count() {
        1 => None,
        0 => Some("an HTTP/1.1 request needs a Host header"),
        _ => Some("more than one Host header"),
    }
}

/// The upstream URL: `https://host[:port]/path`. The client's own
/// authority is reused when it already is the canonical spelling (the
/// common case), which saves building and parsing a string per request.
fn upstream_uri(target: &Target, incoming: &Uri) -> Result<Uri, TargetError> {
    let path = incoming
        .path_and_query()
        .filter(|p| !p.as_str().is_empty())
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let canonical = incoming.authority().filter(|a| {
        let same_host = matches!(&target.host, Host::Name(n) if a.host() == n);
        let same_port = match a.port_u16() {
            None => target.port == 443,
            Some(p) => p == target.port && p != 443,
        };
        same_host && same_port && !a.as_str().contains('@')
    });
    let authority = match canonical {
        Some(a) => a.clone(),
        None => {
            let s = if target.port == 443 {
                target.host.authority_form()
            } else {
                format!("{}:{}", target.host.authority_form(), target.port)
            };
            s.parse::<Authority>()?
        }
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTPS);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).map_err(|e| TargetError::Invalid(e.into()))
}
