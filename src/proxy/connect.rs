//! CONNECT from `HTTPS_PROXY` clients.
//!
//! - A pinned host is intercepted: after `200`, pinproxy terminates the
//!   client's TLS with a leaf its pod CA minted for the CONNECT host (the
//!   client's SNI must name that same host), serves HTTP/1.1 or h2 on it,
//!   and forwards every request over pinned upstream connections — the same
//!   path as plain-HTTP forwarding, so no request skips the verifier.
//! - An unlisted host allowed by `unlisted: allow` is tunnelled as bytes.
//!
//! Refusals known before `200` answer the CONNECT; an upstream pin failure
//! answers the first request inside the tunnel with 502 + `x-pinproxy-error`.

use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::task::TaskTracker;

use super::forward::{self, split_authority};
use super::{admit, count, deny, upstream_refusal, Admission, Body, State, Target};
use crate::config::{Decision, HostPolicy};
use crate::host::Host;
use crate::upstream::{Failure, Snapshot, UpstreamError};

pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    tracker: TaskTracker,
) -> Response<Body> {
    let target = match parse_connect(&req) {
        Ok(t) => t,
        Err(msg) => return deny(&state, StatusCode::BAD_REQUEST, "bad-request", "", &msg),
    };
    let snap = state.snapshot.load_full();
    let admission = match admit(&state, &snap, &target) {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    match admission {
        Admission::Unlisted => tunnel_unlisted(state, snap, target, req, tracker).await,
        Admission::Pinned(entry) => {
            let Some(intercept) = state.intercept.clone() else {
                return super::refuse(
                    StatusCode::BAD_GATEWAY,
                    "upstream-tls-error",
                    &target.host.to_string(),
                    "CONNECT interception is not configured",
                );
            };
            // Mint (or fetch) the leaf before answering, so a failure is a
            // readable 502 rather than a broken handshake.
            let tls = match intercept.server_config(&target.host) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "minting an interception certificate");
                    return super::refuse(
                        StatusCode::BAD_GATEWAY,
                        "upstream-tls-error",
                        &target.host.to_string(),
                        "cannot mint an interception certificate",
                    );
                }
            };
            let upgrade = hyper::upgrade::on(req);
            tracker.spawn(async move {
                match upgrade.await {
                    Ok(up) => intercepted(state, target, entry, tls, up).await,
                    Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                }
            });
            Response::new(Either::Right(Full::default()))
        }
    }
}

/// Validates a CONNECT target: authority form `host:port`, nothing else.
pub fn parse_connect<B>(req: &Request<B>) -> Result<Target, String> {
    let uri = req.uri();
    if uri.scheme().is_some()
        || uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err("CONNECT target must be host:port".into());
    }
    let authority = uri
        .authority()
        .ok_or_else(|| "CONNECT target must be host:port".to_string())?;
    let (host, port) = split_authority(authority)?;
    let port = port.ok_or_else(|| "CONNECT target needs a port (host:port)".to_string())?;
    Ok(Target { host, port })
}

async fn tunnel_unlisted(
    state: Arc<State>,
    snap: Arc<Snapshot>,
    target: Target,
    req: Request<Incoming>,
    tracker: TaskTracker,
) -> Response<Body> {
    // Dial before answering, so refusals (private address, unreachable)
    // are the answer to the CONNECT.
    let upstream = match snap.connector.dial_plain(&target.host, target.port).await {
        Ok(s) => s,
        Err(e) => {
            let (resp, reason) = upstream_refusal(&state, &e);
            count(&state, "unlisted", reason);
            return resp;
        }
    };
    let upgrade = hyper::upgrade::on(req);
    let mut generation = state.generation_tx.subscribe();
    tracker.spawn(async move {
        let mut client = match upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let mut upstream = upstream;
        count(&state, "unlisted", "tunnel");
        let host = target.host.clone();
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnel closed");
                }
            }
            _ = entry_changed(&state, &mut generation, &host, None) => {
                tracing::info!(host = %host, "closing tunnel: the pinset now lists this host");
            }
        }
    });
    Response::new(Either::Right(Full::default()))
}

/// Resolves when a reload changes what the policy says for `host`
/// compared with `entry` (the entry the tunnel was admitted under).
async fn entry_changed(
    state: &State,
    rx: &mut tokio::sync::watch::Receiver<u64>,
    host: &Host,
    entry: Option<&Arc<HostPolicy>>,
) {
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let snap = state.snapshot.load();
        let now = match snap.policy.lookup(host) {
            Decision::Listed(e) => Some(e),
            Decision::Unlisted => None,
        };
        let same = match (entry, now) {
            (None, None) => true,
            (Some(a), Some(b)) => same_enforcement(a, b),
            _ => false,
        };
        if !same {
            return;
        }
    }
}

fn same_enforcement(a: &HostPolicy, b: &HostPolicy) -> bool {
    a.pins == b.pins
        && a.mode == b.mode
        && a.expires == b.expires
        && a.ports == b.ports
        && a.address == b.address
        && a.trust.describe() == b.trust.describe()
        && match (&a.trust, &b.trust) {
            (
                crate::config::Trust::Bundle { anchors: x, .. },
                crate::config::Trust::Bundle { anchors: y, .. },
            ) => {
                x.len() == y.len()
                    && x.iter().zip(y.iter()).all(|(p, q)| {
                        p.subject_public_key_info == q.subject_public_key_info
                            && p.subject == q.subject
                    })
            }
            _ => true,
        }
}

async fn intercepted(
    state: Arc<State>,
    target: Target,
    entry: Arc<HostPolicy>,
    tls: Arc<rustls::ServerConfig>,
    up: Upgraded,
) {
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(up));
    let start = match tokio::time::timeout(state.limits.header_read_timeout, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.host, "client TLS hello failed");
            return;
        }
        Err(_) => return,
    };
    // The host dialed, the name verified and the pinset entry must be one
    // name: a different SNI is domain fronting.
    let sni = start.client_hello().server_name().map(Host::parse);
    if let Some(sni) = sni {
        if sni.as_ref() != Ok(&target.host) {
            state
                .shared
                .metrics
                .denied
                .with_label_values(&["sni-mismatch"])
                .inc();
            tracing::warn!(connect = %target.host, sni = ?sni, "refusing TLS inside CONNECT: SNI names another host");
            if let Some(refuse) = crate::intercept::refusing_config(state.shared.provider.clone()) {
                let _ = start.into_stream(refuse).await;
            }
            return;
        }
    }
    let stream = match tokio::time::timeout(
        state.limits.header_read_timeout,
        start.into_stream(tls),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.host, "client TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let svc_state = state.clone();
    let svc_target = target.clone();
    let label = entry.name.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let state = svc_state.clone();
        let target = svc_target.clone();
        let label = label.clone();
        async move { Ok::<_, std::convert::Infallible>(inner_request(state, target, label, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut generation = state.generation_tx.subscribe();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "intercepted connection closed");
            }
            return;
        }
        _ = entry_changed(&state, &mut generation, &target.host, Some(&entry)) => {
            tracing::info!(host = %target.host, "closing intercepted tunnel: its pins changed");
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.as_mut()).await;
}

/// One request inside an intercepted tunnel. The target is always the
/// CONNECT host: the inner `Host` / `:authority` cannot redirect it.
async fn inner_request(
    state: Arc<State>,
    target: Target,
    label: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let snap = state.snapshot.load_full();
    // Re-admit under the snapshot in force now: a reload may have removed
    // the host or changed its ports since the tunnel opened.
    let label = match admit(&state, &snap, &target) {
        Ok(Admission::Pinned(e)) => e.name.clone(),
        Ok(Admission::Unlisted) => label,
        Err(refusal) => return refusal,
    };
    if is_upgrade(&req) {
        return upgrade_request(state, snap, label, target, req).await;
    }
    forward::send(&state, &snap, &label, &target, req).await
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
    state: Arc<State>,
    snap: Arc<Snapshot>,
    label: String,
    target: Target,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let host = target.host.to_string();
    let tls = match snap.connector.connect_h1(&target.host, target.port).await {
        Ok(s) => s,
        Err(e) => {
            let (resp, reason) = upstream_refusal(&state, &e);
            count(&state, &label, reason);
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
            let (resp, reason) = upstream_refusal(&state, &err);
            count(&state, &label, reason);
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
        Err(_) => {
            return deny(
                &state,
                StatusCode::BAD_REQUEST,
                "bad-request",
                &host,
                "invalid request path",
            )
        }
    };
    parts.version = http::Version::HTTP_11;
    let authority = if target.port == 443 {
        target.host.authority_form()
    } else {
        format!("{}:{}", target.host.authority_form(), target.port)
    };
    if let Ok(v) = authority.parse() {
        parts.headers.insert(header::HOST, v);
    }
    let out = Request::from_parts(parts, body);
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => {
            count(&state, &label, "upstream-unreachable");
            return super::refuse(
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                &host,
                &format!("upstream upgrade failed: {e}"),
            );
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let mut generation = state.generation_tx.subscribe();
        let entry = match snap.policy.lookup(&target.host) {
            Decision::Listed(e) => Some(e.clone()),
            Decision::Unlisted => None,
        };
        let st = state.clone();
        let h = target.host.clone();
        tokio::spawn(async move {
            let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) else {
                return;
            };
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                _ = entry_changed(&st, &mut generation, &h, entry.as_ref()) => {
                    tracing::info!(host = %h, "closing upgraded stream: its pins changed");
                }
            }
        });
    }
    count(&state, &label, "ok");
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Either::Left(body))
}
