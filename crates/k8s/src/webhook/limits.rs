//! What one client may cost the webhook. The API server sends at most
//! 3 MiB per request (its own request limit) and needs a handful of
//! connections; a down webhook blocks pod creation (`Fail`) or lets pods
//! start unpinned (`Ignore`), so nothing a client sends may take it down:
//! one 8 MB POST took it from 8.5 MB to 289 MB RSS (the chart's limit is
//! 128 Mi), and half-sent bodies stayed open for ever.
//!
//! - bodies over [`Limits::max_body`] get `413` — from `Content-Length`
//!   before a byte of body is read, or while streaming, the moment the
//!   count passes the limit: never buffered whole;
//! - a request head must arrive within [`Limits::header_timeout`], its
//!   body within [`Limits::body_timeout`] (`408`);
//! - a body is parsed only if it holds at most [`Limits::max_json_values`]
//!   JSON values, counted in one pass over the bytes: a parsed value costs
//!   tens of bytes, so 3.5 MiB of `[0,0,0,…]` would cost 150 MB, while a
//!   real Pod — mostly strings — holds a few thousand;
//! - bodies being read share [`Limits::body_budget`] bytes, taken as bytes
//!   arrive: a client that sends slowly holds only what it sent (until its
//!   body timeout), and when clients together hold the whole budget the
//!   next body gets `503` at once instead of memory; at most
//!   [`Limits::reviews`] bodies are parsed and reviewed at once;
//! - at most [`Limits::max_connections`] connections are served; when all
//!   are taken the one idle longest, no request in flight (before its first,
//!   or kept alive after its answers) is closed to make room (`slots`), and
//!   only when every one has a request in flight do new ones wait in the
//!   kernel's accept queue (1024 long). One source address holds at most
//!   16 such idle connections. A TLS handshake must finish within 3 s.
//!
//! The input side alone did not bound memory: what the webhook *builds*
//! grew with the pod, not the body. Injection adds ~2 KB to every app
//! container, so 600 KB of one-line containers became a 33 MB patch (and
//! its base64, and the answer's text) and four such reviews took the
//! webhook to 1.4 GB. So, per review (`review`):
//! - a pod that asks for injection with more than `MAX_CONTAINERS`
//!   containers and init containers is denied before anything is built
//!   from it: what injection adds is then at most that many times a few KB;
//! - the patch is diffed element by element, so it holds what injection
//!   adds, not a copy of every container it touched; a patch over
//!   `MAX_PATCH_BYTES` is denied, not sent;
//! - a review holds its body, the parsed review and the pod's YAML form
//!   (each in proportion to the body and its `max_json_values`: a 600 KB
//!   review of 18,000 containers parses to ~20 MB), plus the patch. Four
//!   such reviews at once peak at ~60 MB RSS (they were 1.4 GB).
//!
//! Memory is so bounded by `body_budget`, plus `reviews` reviews each a
//! small multiple of a body of at most `max_body` bytes and
//! `max_json_values` values, plus at most `MAX_PATCH_BYTES` of patch (and
//! its base64) each, whatever arrives.

use std::time::Duration;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one webhook server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body accepted, bytes.
    pub max_body: usize,
    /// Time to send a request head (idle keep-alive included).
    pub header_timeout: Duration,
    /// Time to send a request body, from its head.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Bytes of request bodies held at once, all requests together.
    pub body_budget: usize,
    /// Request bodies parsed and reviewed at once.
    pub reviews: usize,
    /// JSON values (objects, arrays, scalars) a body may hold.
    pub max_json_values: usize,
}

/// A little over what the API server ever sends (3 MiB).
pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024 + 512 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 128,
            body_budget: 32 << 20,
            reviews: 2,
            max_json_values: 100_000,
        }
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

/// A body read, and its share of the body budget (held until dropped).
pub(super) struct Body {
    pub(super) bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Reads `req`'s body within `limits`, taking its bytes from `budget`.
pub(super) async fn read_body(
    req: Request<Incoming>,
    limits: &Limits,
    budget: &Arc<Semaphore>,
) -> Result<Body, Refused> {
    let too_large = || Refused {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "request body over {} bytes (the API server sends at most 3 MiB)",
            limits.max_body
        ),
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    let mut incoming = req.into_body();
    let mut buf = BytesMut::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let read = async {
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| Refused {
                status: StatusCode::BAD_REQUEST,
                message: format!("reading request body: {e}"),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            // Counted as it streams: refused the moment it passes the limit.
            if buf.len() + data.len() > limits.max_body {
                return Err(too_large());
            }
            let share = u32::try_from(data.len())
                .ok()
                .and_then(|n| budget.clone().try_acquire_many_owned(n).ok())
                .ok_or_else(|| Refused {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!(
                        "busy: request bodies in flight hold the {}-byte budget; retry",
                        limits.body_budget
                    ),
                })?;
            match &mut held {
                Some(h) => h.merge(share),
                None => held = Some(share),
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => return Err(refused),
        Err(_) => {
            return Err(Refused {
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the request body did not arrive within {:?}",
                    limits.body_timeout
                ),
            })
        }
    }
    if json_values(&buf) > limits.max_json_values {
        return Err(Refused {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "request body holds over {} JSON values, more than any Pod the API server \
                 sends; not parsed",
                limits.max_json_values
            ),
        });
    }
    Ok(Body {
        bytes: buf.freeze(),
        _budget: held,
    })
}

/// An upper bound on the JSON values in `bytes`: every value but the first
/// follows a `,`, `:`, `[` or `{` outside a string. One pass, no
/// allocation; malformed JSON is counted the same way (the parser then
/// refuses it).
fn json_values(bytes: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (1usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b':' | b'[' | b'{' => n += 1,
                _ => {}
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(json_values(b"0"), 1);
        assert!(json_values(b"[0,0,0]") >= 4);
        assert!(json_values(br#"{"a":[1,{"b":2}]}"#) >= 5);
        // Separators inside strings, escaped quotes included, are text.
        assert_eq!(json_values(br#""a,b:[{\",]""#), 1);
        let pod = br#"{"metadata":{"name":"x","annotations":{"k":"v,v:v[{"}}}"#;
        assert_eq!(json_values(pod), 9);
    }
}
