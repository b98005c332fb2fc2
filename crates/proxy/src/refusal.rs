//! Refusals: the answers pinproxy makes itself, each with the
//! `x-pinproxy-error` reason and status of the contract's table
//! ([`Reason`]). Every refusal on every path — an HTTP answer, a TLS
//! alert, a closed connection — is made by [`refuse`], which logs it and
//! has it counted where the table says (`Metrics::refused`); a
//! [`Refused`] can be made nowhere else, so no answer goes out uncounted
//! and no call site picks counters.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::tunnel::HANDSHAKE_FAILURE_ALERT;
use super::{Body, Context};
use pinproxy_policy::host::Host;
use pinproxy_reason::Reason;
use pinproxy_upstream::error::alert_detail;
use pinproxy_upstream::{Failure, UpstreamError};

/// The header carrying a refusal's machine-readable reason.
pub const ERROR_HEADER: &str = "x-pinproxy-error";

/// A refusal that has been logged and counted: what is left is to answer
/// it, as an HTTP response (`.into()`), a TLS alert, or by closing.
#[must_use = "a refusal is answered: into() a response, or close()"]
#[derive(Debug)]
pub struct Refused {
    reason: Reason,
    /// The one-line body: `pinproxy: HOST: MESSAGE`.
    body: String,
}

// === impl Refused ===

impl Refused {
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.reason.status().unwrap_or(StatusCode::BAD_GATEWAY)
    }

    pub fn body(&self) -> &str {
        &self.body
    }

    /// Answered by closing the connection (or by a TLS alert rustls sent,
    /// which carries no text): nothing more to send.
    pub fn close(self) {}

    /// Answered with a TLS `handshake_failure` alert, then closed: a client
    /// speaking TLS to pinproxy sees a TLS error, not a bare reset.
    pub async fn alert<W: AsyncWrite + Unpin>(self, io: &mut W) {
        let _ = io.write_all(&HANDSHAKE_FAILURE_ALERT).await;
        let _ = io.shutdown().await;
    }
}

impl From<Refused> for Response<Body> {
    fn from(r: Refused) -> Self {
        debug_assert!(
            r.reason.status().is_some(),
            "{:?} answers no HTTP request",
            r.reason
        );
        let status = r.status();
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(r.body))));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(ERROR_HEADER, HeaderValue::from_static(r.reason.as_str()));
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

/// Refuses: logs the refusal (at most a few lines per host and reason per
/// window, the rest counted as `suppressed`) and counts it as the table
/// says — in `denied_total`, and in `requests_total` under `admitted`, the
/// label the target was admitted as (`None`: refused before admission).
pub fn refuse(
    ctx: &Context,
    reason: Reason,
    admitted: Option<&str>,
    host: &str,
    message: &str,
) -> Refused {
    log(ctx, reason, host, message);
    ctx.metrics.refused(reason, admitted);
    let body = if host.is_empty() {
        format!("pinproxy: {message}\n")
    } else {
        format!("pinproxy: {host}: {message}\n")
    };
    Refused { reason, body }
}

fn log(ctx: &Context, reason: Reason, host: &str, message: &str) {
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

/// The refusal for an upstream that could not be reached or trusted, of a
/// target admitted as `admitted`.
pub fn upstream_refusal(ctx: &Context, admitted: &str, err: &UpstreamError) -> Refused {
    let reason = match err.failure {
        Failure::Unreachable => Reason::UpstreamUnreachable,
        Failure::Timeout => Reason::UpstreamTimeout,
        Failure::PinMismatch => Reason::PinMismatch,
        Failure::Untrusted(_) => Reason::UntrustedCertificate,
        Failure::Tls(_) => Reason::UpstreamTlsError,
        Failure::PrivateAddress => Reason::PrivateAddress,
        // Resent over HTTP/1.1 before any refusal (forward::send); were it
        // not, the upstream would be unreachable the way it was asked.
        Failure::NoH2 => Reason::UpstreamUnreachable,
        // `--max-upstream-connections` reached: no upstream was dialed.
        Failure::Overloaded => Reason::Overloaded,
    };
    refuse(ctx, reason, Some(admitted), &err.host, &err.detail)
}

/// Answers a request admitted as `admitted` that got no usable answer
/// upstream: the connector's reason if it failed (pin mismatch, untrusted,
/// timeout…), a protocol violation if the upstream's response could not
/// be parsed (`upstream-tls-error`: it "does not speak TLS (or HTTP)
/// properly"), else `upstream-unreachable` with the error's causes.
pub fn upstream_failed(
    ctx: &Context,
    admitted: &str,
    host: &Host,
    err: &(dyn std::error::Error + 'static),
) -> Response<Body> {
    if let Some(u) = UpstreamError::find(err) {
        return upstream_refusal(ctx, admitted, u).into();
    }
    tracing::debug!(error = ?err, %host, "upstream request failed");
    let (reason, detail) = if let Some(alert) = tls_alert(err) {
        // TLS 1.3: the server judges our client certificate (or its
        // absence) after our side of the handshake is done, so its refusal
        // arrives as an alert on the first read: a failed handshake too.
        ctx.metrics
            .handshake_failed(admitted, Reason::AlertReceived);
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
    refuse(ctx, reason, Some(admitted), &host.to_string(), &detail).into()
}

/// Answers a request admitted as `admitted` whose response head did not
/// come in time.
pub fn upstream_timed_out(ctx: &Context, admitted: &str, host: &Host) -> Response<Body> {
    let message = "no response from upstream in time";
    refuse(
        ctx,
        Reason::UpstreamTimeout,
        Some(admitted),
        &host.to_string(),
        message,
    )
    .into()
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

#[cfg(test)]
mod tests;
