//! Absolute-form requests from `HTTP_PROXY` clients: for a listed host
//! pinproxy originates TLS to the URL's host and forwards the request over
//! a pooled, pinned connection (unlisted `http://` URLs are relayed plain,
//! [`plain`]; passthrough ones as they came). The URL's authority decides the host, never `Host` (RFC 9112
//! §3.2.2; Squid CVE-2009-0801).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::Either;
use http_body_util::Empty;
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client as Pool;
use std::time::Duration;

use super::refusal::{upstream_failed, upstream_timed_out};
use super::target::{parse_absolute, TargetError};
use super::{
    deny, passthrough, plain, upgrade, Body, Client, Context, Revocation, Streamed, ERROR_HEADER,
};
use crate::policy::host::Host;
use crate::policy::Target;
use crate::reason::Reason;
use crate::upstream::{RequestBody, Snapshot, UpBody, UpstreamError};

pub async fn handle(ctx: Arc<Context>, req: Request<Incoming>, client: Client) -> Response<Body> {
    let target = match parse_absolute(req.uri()) {
        Ok(t) => t,
        Err(e) => return deny(&ctx, Reason::BadRequest, "", &e.to_string()),
    };
    if let Some(why) = host_problem(&req) {
        return deny(&ctx, Reason::BadRequest, &target.host.to_string(), why);
    }
    // Subscribe before deciding, so a reload in between is not missed.
    let rx = ctx.live.subscribe();
    let snap = ctx.live.load_full();
    let admission = match passthrough::admit_resolving(&ctx, &snap, &target).await {
        Ok(a) => a.admission,
        Err(refusal) => return refusal,
    };
    // Relayed as it came: the port the URL names (80 by default), not the
    // TLS upgrade's.
    let plain_port = req.uri().port_u16().unwrap_or(80);
    if admission.passthrough().is_some() {
        let plain = Target {
            host: target.host,
            port: plain_port,
        };
        return passthrough::forward(&ctx, &snap, admission, plain, req, rx).await;
    }
    // Only listed hosts are upgraded to TLS: an unlisted host has no pin
    // to check, and its http:// service may have no TLS port at all.
    let plain = (admission.is_unlisted() && req.uri().scheme() == Some(&Scheme::HTTP))
        .then_some(plain_port);
    if upgrade::is_upgrade(&req) {
        return upgrade::relay_plain(&ctx, &snap, admission, target, plain, req, &client, rx).await;
    }
    if let Some(port) = plain {
        return plain::forward(&ctx, &snap, admission, target, port, req, rx).await;
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
    entry: Option<Arc<crate::policy::HostPolicy>>,
    target: Target,
    req: Request<Incoming>,
    revocation: Option<Revocation>,
) -> Response<Body> {
    let label = entry.as_deref().map_or("unlisted", |e| e.name.as_str());
    let (mut parts, body) = req.into_parts();
    parts.uri = match upstream_uri(&target, &parts.uri) {
        Ok(u) => u,
        Err(e) => {
            return deny(
                ctx,
                Reason::BadRequest,
                &target.host.to_string(),
                &e.to_string(),
            )
        }
    };
    parts.version = Version::HTTP_11;
    let trailers = wants_trailers(&parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    if trailers {
        parts.headers.insert(header::TE, te_trailers());
    }
    // The client regenerates Host from the URL authority.
    parts.headers.remove(header::HOST);
    let (body, fault) = RequestBody::new(body);
    let out = Request::from_parts(parts, body);
    match exchange(&snap.client, out, ctx.timeouts.response).await {
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
            deny(ctx, Reason::BadRequest, &target.host.to_string(), &why)
        }
        Err(Exchange::Failed(e)) => upstream_failed(ctx, label, &target.host, &e),
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host (which the
/// URL's authority then overrides); two, or none, is a bad request.
fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    match req.headers().get_all(header::HOST).iter().count() {
        1 => None,
        0 => Some("an HTTP/1.1 request needs a Host header"),
        _ => Some("more than one Host header"),
    }
}

/// Why an exchange with the upstream produced no response.
pub(super) enum Exchange {
    TimedOut,
    Failed(hyper_util::client::legacy::Error),
}

/// Sends `req` through a pooled `client` within `timeout`. A request that
/// cannot have changed anything upstream — an idempotent method and no
/// body — is sent once more when the first attempt failed on the
/// connection itself: the upstream closed a pooled keep-alive connection
/// just as the request went out (nginx's `proxy_next_upstream error` does
/// the same by default). Failures of pinproxy's own connector (pins, TLS,
/// egress rules) are final and never retried.
pub(super) async fn exchange<C>(
    client: &Pool<C, UpBody>,
    req: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, Exchange>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let (parts, body) = req.into_parts();
    let replay = (is_idempotent(&parts.method) && body.is_end_stream()).then(|| {
        let mut again = Request::new(Either::Right(Empty::new()));
        *again.method_mut() = parts.method.clone();
        *again.uri_mut() = parts.uri.clone();
        *again.version_mut() = parts.version;
        *again.headers_mut() = parts.headers.clone();
        again
    });
    let first = Request::from_parts(parts, Either::Left(body));
    let err = match tokio::time::timeout_at(deadline, client.request(first)).await {
        Err(_) => return Err(Exchange::TimedOut),
        Ok(Ok(resp)) => return Ok(resp),
        Ok(Err(e)) => e,
    };
    let retry = replay.filter(|_| !err.is_connect() && UpstreamError::find(&err).is_none());
    let Some(again) = retry else {
        return Err(Exchange::Failed(err));
    };
    tracing::debug!(error = %err, "upstream connection failed under an idempotent request; retrying once");
    match tokio::time::timeout_at(deadline, client.request(again)).await {
        Err(_) => Err(Exchange::TimedOut),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(Exchange::Failed(e)),
    }
}

fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method)
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

/// An upstream response's headers as the client gets them.
pub(super) fn response_headers(headers: &mut HeaderMap) {
    // RFC 9112 §6.3: with Transfer-Encoding, a received Content-Length is
    // wrong by definition; forwarding it would present a cut body as
    // complete.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
    // Only pinproxy speaks x-pinproxy-error.
    headers.remove(ERROR_HEADER);
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed set and every
/// header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        remove_connection_tokens(headers);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn remove_connection_tokens(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// `TE: trailers` is the one TE value allowed through (gRPC needs it).
pub fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

pub fn te_trailers() -> HeaderValue {
    HeaderValue::from_static("trailers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
