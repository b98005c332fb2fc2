//! One exchange with an upstream over a pooled client, shared by every
//! way a request goes out (pinned, plain, passthrough, upgrades): the
//! request sent (once more when that is safe) and the hop-by-hop headers
//! stripped both ways.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client as Pool;

use super::refusal::UnaskedSwitch;
use super::ERROR_HEADER;
use pinproxy_upstream::{Failure, RequestBody, UpBody, UpstreamError};

/// Why an exchange with the upstream produced no response.
pub(super) enum Exchange {
    TimedOut,
    Failed(ExchangeError),
}

/// An exchange that failed on the connection or on what came back.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExchangeError {
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
    /// `101 Switching Protocols` to a request sent without `Upgrade` (every
    /// exchange here strips it): the upstream would turn the connection
    /// into an unmediated byte tunnel (h2c smuggling). A protocol
    /// violation, answered as a malformed response; never relayed.
    #[error("protocol violation")]
    Switched(#[source] UnaskedSwitch),
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
    send_via(client, None::<&Pool<C, UpBody>>, req, timeout).await
}

/// As [`exchange`], through the `http2_only` client `h2`. A request it
/// dropped unsent goes out through the ALPN client `alpn` instead, body and
/// all, on a connect of its own. This happens when the upstream speaks
/// HTTP/1.1 ([`Failure::NoH2`]), so learning that fails no request. It also
/// happens when another request's connect, which this one waited for,
/// failed (a connect error with no [`UpstreamError`]: "request was
/// canceled"): each waiter then gets its own verdict instead of sharing
/// that failure. For an `upstream_protocol: h2` entry `alpn` is the
/// unpooled `http2_only` client instead (never HTTP/1.1).
pub(super) async fn exchange_h2<C, D>(
    h2: &Pool<C, UpBody>,
    alpn: &Pool<D, UpBody>,
    req: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, Exchange>
where
    C: Connect + Clone + Send + Sync + 'static,
    D: Connect + Clone + Send + Sync + 'static,
{
    send_via(h2, Some(alpn), req, timeout).await
}

async fn send_via<C, D>(
    client: &Pool<C, UpBody>,
    fallback: Option<&Pool<D, UpBody>>,
    req: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, Exchange>
where
    C: Connect + Clone + Send + Sync + 'static,
    D: Connect + Clone + Send + Sync + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let (parts, mut body) = req.into_parts();
    let empty = body.is_end_stream();
    let idempotent = is_idempotent(&parts.method) && empty;
    // An empty body needs no reclaiming (sent again as `Empty`): the
    // channel is only for bodies.
    let reclaim = fallback.filter(|_| !empty).map(|_| body.reclaimable());
    let head = (idempotent || fallback.is_some()).then(|| Head::of(&parts));
    let first = Request::from_parts(parts, Either::Left(body));
    let err = match tokio::time::timeout_at(deadline, client.request(first)).await {
        Err(_) => return Err(Exchange::TimedOut),
        Ok(Ok(resp)) => return unswitched(resp),
        Ok(Err(e)) => e,
    };
    let unsent = match UpstreamError::find(&err) {
        Some(u) => u.failure == Failure::NoH2,
        None => err.is_connect(),
    };
    if let (true, Some(alpn), Some(head)) = (unsent, fallback, &head) {
        // No connection for it: nothing was sent, the body is back.
        let body = match reclaim {
            None => Some(Either::Right(Empty::new())),
            Some(mut rx) => rx.try_recv().ok().map(Either::Left),
        };
        if let Some(body) = body {
            tracing::debug!(error = %err, "resending over HTTP/1.1");
            let err =
                match tokio::time::timeout_at(deadline, alpn.request(head.request(body))).await {
                    Err(_) => return Err(Exchange::TimedOut),
                    Ok(Ok(resp)) => return unswitched(resp),
                    Ok(Err(e)) => e,
                };
            return retry_once(alpn, idempotent, Some(head), err, deadline).await;
        }
    }
    retry_once(client, idempotent, head.as_ref(), err, deadline).await
}

/// After `err`, sends `head` once more through `client` if that is safe
/// (an idempotent, bodiless request that failed on the connection itself).
async fn retry_once<C>(
    client: &Pool<C, UpBody>,
    idempotent: bool,
    head: Option<&Head>,
    err: hyper_util::client::legacy::Error,
    deadline: tokio::time::Instant,
) -> Result<Response<Incoming>, Exchange>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let retry =
        head.filter(|_| idempotent && !err.is_connect() && UpstreamError::find(&err).is_none());
    let Some(again) = retry else {
        return Err(Exchange::Failed(err.into()));
    };
    tracing::debug!(error = %err, "upstream connection failed under an idempotent request; retrying once");
    once(client, again.request(Either::Right(Empty::new())), deadline).await
}

async fn once<C>(
    client: &Pool<C, UpBody>,
    req: Request<UpBody>,
    deadline: tokio::time::Instant,
) -> Result<Response<Incoming>, Exchange>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    match tokio::time::timeout_at(deadline, client.request(req)).await {
        Err(_) => Err(Exchange::TimedOut),
        Ok(Ok(resp)) => unswitched(resp),
        Ok(Err(e)) => Err(Exchange::Failed(e.into())),
    }
}

/// A request's head, kept to send it again.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
}

impl Head {
    fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    fn request(&self, body: UpBody) -> Request<UpBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// `resp`, unless it switches protocols ([`ExchangeError::Switched`]).
fn unswitched(resp: Response<Incoming>) -> Result<Response<Incoming>, Exchange> {
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(Exchange::Failed(ExchangeError::Switched(UnaskedSwitch)));
    }
    Ok(resp)
}

fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method)
}

/// An upstream response's headers as the client gets them.
pub(super) fn response_headers(headers: &mut HeaderMap) {
    // One pass over the names: most responses carry nothing to remove, and
    // a lookup per name below hashes it (docs/benchmarks.md, "Forward CPU").
    if !headers
        .keys()
        .any(|n| is_fixed_hop_by_hop(n) || n == ERROR_HEADER)
    {
        return;
    }
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

/// Whether `name` is one of the hop-by-hop headers every message loses,
/// whatever its `Connection` names (RFC 9110 §7.6.1, and the unregistered
/// but common `keep-alive` and `proxy-connection`). By spelling (names are
/// lowercase): a length switch, where comparing `HeaderName`s walks a set.
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Whether `headers` carries a hop-by-hop header: without one (and so
/// without `Connection`), [`strip_hop_by_hop`] has nothing to do.
pub fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers.keys().any(is_fixed_hop_by_hop)
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed set and every
/// header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !has_hop_by_hop(headers) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        remove_connection_tokens(headers);
    }
    // Only the names present, found by the same test: one list, and no
    // lookup of the seven or eight a message does not carry.
    while let Some(name) = headers.keys().find(|n| is_fixed_hop_by_hop(n)).cloned() {
        headers.remove(name);
    }
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

    #[test]
    fn every_value_of_every_hop_by_hop_header_is_removed() {
        let mut h = HeaderMap::new();
        for v in ["trailers", "gzip"] {
            h.append(header::TE, HeaderValue::from_static(v));
        }
        for v in ["keep-alive", "x-a", "x-b"] {
            h.append(header::CONNECTION, HeaderValue::from_static(v));
        }
        for n in ["x-a", "x-b", "upgrade", "proxy-connection", "x-kept"] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static("1"));
        }
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append("keep-alive", HeaderValue::from_static("max=9"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        assert_eq!(h.len(), 1);
    }

    /// The one test the skip and the removals share must know every
    /// hop-by-hop name: a name it missed would go through.
    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        // RFC 9110 §7.6.1's, and the two unregistered ones clients send.
        for name in [
            "connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            let mut r = h.clone();
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "request kept {name}");
            response_headers(&mut r);
            assert_eq!(r.len(), 1, "response kept {name}");
        }
        let mut r = HeaderMap::new();
        r.insert(ERROR_HEADER, HeaderValue::from_static("pin-mismatch"));
        response_headers(&mut r);
        assert!(
            r.is_empty(),
            "an upstream's x-pinproxy-error reached the client"
        );
        for kept in ["content-length", "connectionx", "t", "tee", "x-upgrade"] {
            assert!(
                !is_fixed_hop_by_hop(&HeaderName::from_static(kept)),
                "{kept}"
            );
        }
    }

    #[test]
    fn content_length_goes_with_transfer_encoding() {
        let mut r = HeaderMap::new();
        r.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        r.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        response_headers(&mut r);
        assert!(r.is_empty());
    }
}
