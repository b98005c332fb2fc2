//! Unlisted plain HTTP: an `http://` URL naming a host the pinset does not
//! list, let through by `unlisted: allow` or `learn`, is relayed as plain
//! HTTP to the port the URL names (80 by default). Only listed hosts are
//! upgraded to TLS — there is no pin to check on an unlisted one, and an
//! upgrade would change whether traffic flows (a plain-HTTP service has no
//! port 443), not only where. The private-address rule applies as to
//! every unlisted connection; counted as outcome `plain-http`.

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::sync::watch;

use super::exchange::{exchange, response_headers, strip_hop_by_hop, Exchange};
use super::refusal::{refuse, upstream_failed, upstream_timed_out};
use super::{Body, Context, Revocation, Streamed};
use pinproxy_policy::{Admission, Target};
use pinproxy_reason::{Reason, RequestOutcome};
use pinproxy_upstream::{RequestBody, Snapshot};

/// Relays `req` to `target`'s host on `port` as plain HTTP. `target` is
/// what admission judged (a reload re-judges it); `generation` was
/// subscribed before it was judged.
pub async fn forward(
    ctx: &Arc<Context>,
    snap: &Snapshot,
    admission: Admission,
    target: Target,
    port: u16,
    req: Request<Incoming>,
    generation: watch::Receiver<u64>,
) -> Response<Body> {
    let label = admission.label().to_string();
    let (mut parts, body) = req.into_parts();
    parts.uri = match upstream_uri(&target, port, &parts.uri) {
        Some(u) => u,
        None => {
            let host = target.host.to_string();
            let message = "invalid request target";
            return refuse(ctx, Reason::BadRequest, Some(&label), &host, message).into();
        }
    };
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The URL's authority decides the host: the pool writes Host from it.
    parts.headers.remove(header::HOST);
    let (body, fault) = RequestBody::new(body);
    let out = Request::from_parts(parts, body);
    let resp = match exchange(&snap.unlisted_plain, out, ctx.timeouts.response).await {
        Ok(resp) => resp,
        // A malformed request body is the client's fault.
        Err(Exchange::Failed(_)) if fault.get().is_some() => {
            let why = format!(
                "malformed request body: {}",
                fault.get().unwrap_or_default()
            );
            let host = target.host.to_string();
            return refuse(ctx, Reason::BadRequest, Some(&label), &host, &why).into();
        }
        Err(Exchange::Failed(e)) => return upstream_failed(ctx, &label, &target.host, &e),
        Err(Exchange::TimedOut) => return upstream_timed_out(ctx, &label, &target.host),
    };
    ctx.metrics.served(&label, RequestOutcome::PlainHttp);
    let (mut parts, body) = resp.into_parts();
    response_headers(&mut parts.headers);
    parts.version = Version::HTTP_11;
    let revocation = Revocation {
        ctx: ctx.clone(),
        rx: generation,
        admission,
    };
    let watch = Some(Box::new((revocation, target)));
    Response::from_parts(parts, Either::Left(Streamed::new(body, watch)))
}

/// `http://host[:port]/path`: port 80 is left implicit.
fn upstream_uri(target: &Target, port: u16, incoming: &Uri) -> Option<Uri> {
    let authority = if port == 80 {
        target.host.authority_form()
    } else {
        format!("{}:{port}", target.host.authority_form())
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.parse::<Authority>().ok()?);
    parts.path_and_query = Some(
        incoming
            .path_and_query()
            .filter(|p| !p.as_str().is_empty())
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinproxy_policy::host::Host;

    #[test]
    fn the_upstream_url_names_the_port_the_client_named() {
        let target = Target {
            host: Host::parse("example.test").unwrap(),
            port: 443,
        };
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let got = upstream_uri(&target, 80, &uri("http://example.test/a?b=1")).unwrap();
        assert_eq!(got, uri("http://example.test/a?b=1"));
        let got = upstream_uri(&target, 8080, &uri("http://example.test:8080")).unwrap();
        assert_eq!(got, uri("http://example.test:8080/"));
        let v6 = Target {
            host: Host::parse("[::1]").unwrap(),
            port: 443,
        };
        let got = upstream_uri(&v6, 81, &uri("http://[::1]:81/x")).unwrap();
        assert_eq!(got, uri("http://[::1]:81/x"));
    }
}
