//! Refusals: the answers pinproxy makes itself, each with the
//! `x-pinproxy-error` reason and status of the contract's table
//! ([`Reason`]), and the counters they feed.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use super::{Body, Context};
use pinproxy_policy::admission::{self, Admission, Target};
use pinproxy_policy::host::Host;
use pinproxy_reason::{Outcome, Reason};
use pinproxy_upstream::error::alert_detail;
use pinproxy_upstream::{Failure, Snapshot, UpstreamError};

/// The header carrying a refusal's machine-readable reason.
pub const ERROR_HEADER: &str = "x-pinproxy-error";

/// A refusal: the reason's status and `x-pinproxy-error` value, and a
/// short human body. Every refusal is logged, at most a few lines per host
/// and reason per window (the rest counted as `suppressed`).
pub fn refuse(ctx: &Context, reason: Reason, host: &str, message: &str) -> Response<Body> {
    log_refusal(ctx, reason, host, message);
    let status = reason.status().unwrap_or(StatusCode::BAD_GATEWAY);
    debug_assert!(reason.status().is_some(), "{reason:?} is not a refusal");
    let body = if host.is_empty() {
        format!("pinproxy: {message}\n")
    } else {
        format!("pinproxy: {host}: {message}\n")
    };
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static(reason.as_str()));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Logs a refusal, rate-limited per host and reason.
pub fn log_refusal(ctx: &Context, reason: Reason, host: &str, message: &str) {
    let key = format!("{reason}\0{host}");
    let Some(suppressed) = ctx.refusal_logs.allow(&key) else {
        return;
    };
    let host = if host.is_empty() { "-" } else { host };
    match reason {
        // The client's own mistakes: worth a line, not an alarm.
        Reason::BadRequest | Reason::HeadTooLarge | Reason::MisdirectedRequest => {
            tracing::info!(
                host,
                reason = reason.as_str(),
                detail = message,
                suppressed,
                "refused"
            )
        }
        _ => tracing::warn!(
            host,
            reason = reason.as_str(),
            detail = message,
            suppressed,
            "refused"
        ),
    }
}

/// A refusal made before any upstream connection: also counted as denied.
pub fn deny(ctx: &Context, reason: Reason, host: &str, message: &str) -> Response<Body> {
    count_denied(ctx, reason);
    refuse(ctx, reason, host, message)
}

/// Counts a refusal in `pinproxy_denied_total`.
pub fn count_denied(ctx: &Context, reason: Reason) {
    ctx.metrics
        .denied
        .with_label_values(&[reason.as_str()])
        .inc();
}

/// The refusal for an upstream failure.
pub fn upstream_refusal(ctx: &Context, err: &UpstreamError) -> (Response<Body>, Reason) {
    let reason = match err.failure {
        Failure::Unreachable => Reason::UpstreamUnreachable,
        Failure::Timeout => Reason::UpstreamTimeout,
        Failure::PinMismatch => Reason::PinMismatch,
        Failure::Untrusted(_) => Reason::UntrustedCertificate,
        Failure::Tls(_) => Reason::UpstreamTlsError,
        Failure::PrivateAddress => {
            count_denied(ctx, Reason::PrivateAddress);
            Reason::PrivateAddress
        }
    };
    (refuse(ctx, reason, &err.host, &err.detail), reason)
}

/// [`admission::decide`] under the snapshot `snap`, with a refusal turned
/// into a counted response.
#[allow(clippy::result_large_err)] // the refusal is the answer; it is not kept
pub fn admit(ctx: &Context, snap: &Snapshot, target: &Target) -> Result<Admission, Response<Body>> {
    admission::decide(&snap.policy, target, time::OffsetDateTime::now_utc()).map_err(|r| {
        let host = target.host.to_string();
        if r.reason.is_denied() {
            deny(ctx, r.reason, &host, &r.message)
        } else {
            if let Some(e) = &r.entry {
                count(ctx, &e.name, r.reason.into());
            }
            refuse(ctx, r.reason, &host, &r.message)
        }
    })
}

/// Counts a finished request or tunnel.
pub fn count(ctx: &Context, host: &str, outcome: Outcome) {
    ctx.metrics
        .requests
        .with_label_values(&[host, outcome.as_str()])
        .inc();
}

/// Counts and answers a request that got no usable answer upstream: the
/// connector's reason if it failed (pin mismatch, untrusted, timeout…), a
/// protocol violation if the upstream's response could not be parsed
/// (`upstream-tls-error`: it "does not speak TLS (or HTTP) properly"),
/// else `upstream-unreachable` with the error's causes.
pub fn upstream_failed(
    ctx: &Context,
    label: &str,
    host: &Host,
    err: &(dyn std::error::Error + 'static),
) -> Response<Body> {
    let (resp, reason) = match UpstreamError::find(err) {
        Some(u) => upstream_refusal(ctx, u),
        None => {
            tracing::debug!(error = ?err, %host, "upstream request failed");
            let (reason, detail) = if let Some(alert) = tls_alert(err) {
                // TLS 1.3: the server judges our client certificate (or
                // its absence) after our side of the handshake is done, so
                // its refusal arrives as an alert on the first read.
                ctx.metrics
                    .tls_verify_failures
                    .with_label_values(&[label, Reason::AlertReceived.as_str()])
                    .inc();
                (Reason::UpstreamTlsError, alert_detail(&alert, true))
            } else if malformed_response(err) {
                let detail = format!(
                    "the upstream sent a malformed HTTP response: {}",
                    error_chain(err)
                );
                (Reason::UpstreamTlsError, detail)
            } else {
                let detail = format!("upstream request failed: {}", error_chain(err));
                (Reason::UpstreamUnreachable, detail)
            };
            (refuse(ctx, reason, &host.to_string(), &detail), reason)
        }
    };
    count(ctx, label, reason.into());
    resp
}

/// Counts and answers a request whose response head did not come in time.
pub fn upstream_timed_out(ctx: &Context, label: &str, host: &Host) -> Response<Body> {
    count(ctx, label, Reason::UpstreamTimeout.into());
    refuse(
        ctx,
        Reason::UpstreamTimeout,
        &host.to_string(),
        "no response from upstream in time",
    )
}

/// The TLS alert the upstream ended the session with, anywhere in the
/// error's causes, by name. An `io::Error` hides its inner error from
/// `source()`, and h2 keeps only an io error's message, so the message
/// rustls gives the alert is recognised too.
fn tls_alert(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    const PREFIX: &str = "received fatal alert: ";
    let mut cur = Some(err);
    while let Some(e) = cur {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static))
            .unwrap_or(e);
        if let Some(rustls::Error::AlertReceived(alert)) = inner.downcast_ref::<rustls::Error>() {
            return Some(format!("{alert:?}"));
        }
        if let Some(name) = inner.to_string().strip_prefix(PREFIX) {
            return Some(name.to_string());
        }
        cur = e.source();
    }
    None
}

/// An upstream's `101 Switching Protocols` that pinproxy did not ask for:
/// to a request without `Upgrade` (every pooled exchange strips it), or to
/// anything but the WebSocket handshake the upgrade relay sent. A
/// protocol violation (`upstream-tls-error`), never a tunnel.
#[derive(Debug, thiserror::Error)]
#[error("the upstream switched protocols (101) without being asked to")]
pub struct UnaskedSwitch;

/// Whether hyper refused to parse the upstream's response (duplicate or
/// conflicting Content-Length, a bad status line, a head over the limit…).
/// Only the upstream client reports here, so a parse error is the
/// upstream's, never the client's.
fn malformed_response(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<UnaskedSwitch>() {
            return true;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
