//! CONNECT from `HTTPS_PROXY` clients.
//!
//! - A pinned host is intercepted: after `200`, pinproxy terminates the
//!   client's TLS with a leaf its pod CA minted for the CONNECT host (the
//!   client's SNI must name that same host), serves HTTP/1.1 or h2 on it,
//!   and forwards every request over pinned upstream connections — the same
//!   path as plain-HTTP forwarding, so no request skips the verifier.
//! - An unlisted host allowed by `unlisted: allow` is tunnelled as bytes,
//!   after checking that a TLS ClientHello names the CONNECT host.
//!
//! Refusals known before `200` answer the CONNECT; an upstream pin failure
//! answers the first request inside the tunnel with 502 + `x-pinproxy-error`.
//! Every tunnel holds its client connection's slot, closes when idle, and
//! closes when a reload means it would no longer be admitted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::admit::{admit, Place};
use super::body::revoked;
use super::refusal::{refuse, upstream_refusal};
use super::target::parse_connect;
use super::tunnel::{self, Hello};
use super::{intercept, passthrough, Body, Client, Context};
use pinproxy_policy::host::Host;
use pinproxy_policy::{Admission, Target};
use pinproxy_reason::{Reason, RequestOutcome};
use pinproxy_upstream::Snapshot;

pub async fn handle(ctx: Arc<Context>, req: Request<Incoming>, client: Client) -> Response<Body> {
    let target = match parse_connect(&req) {
        Ok(t) => t,
        Err(e) => return refuse(&ctx, Reason::BadRequest, None, "", &e.to_string()).into(),
    };
    // Subscribe before deciding, so a reload in between is not missed.
    let generation = ctx.live.subscribe();
    let snap = ctx.live.load_full();
    let admitted = match admit(&ctx, &snap, &target, Place::Resolve).await {
        Ok(a) => a,
        Err(refused) => return refused.into(),
    };
    if admitted.admission.passthrough().is_some() {
        return passthrough::tunnel(ctx, snap, admitted, target, client, generation).await;
    }
    let admission = admitted.admission;
    match admission.entry().cloned() {
        None => tunnel_unlisted(ctx, snap, target, admission, client, generation).await,
        Some(_) => {
            // Mint (or fetch) the leaf before answering, so a failure is a
            // readable 502 rather than a broken handshake.
            let tls = match ctx.intercept.server_config(&target.host) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "minting an interception certificate");
                    let host = target.host.to_string();
                    let message = "cannot mint an interception certificate";
                    let label = Some(admission.label());
                    return refuse(&ctx, Reason::InternalError, label, &host, message).into();
                }
            };
            // The connection task hands the client stream over once the
            // 200 is written.
            let upgrade = client.handoff.claim();
            // Not the handoff holding the Sender the task waits on: the
            // tunnel serves its own connection (hyper's upgrades, not this
            // handoff), and a task that held it could wait on itself.
            let client = Client {
                handoff: Arc::default(),
                ..client
            };
            let tracker = client.tracker.clone();
            tracker.spawn(async move {
                let Ok(up) = upgrade.await else {
                    return;
                };
                let revoked = revoked(ctx.clone(), generation, target.clone(), admission, None);
                tokio::select! {
                    _ = intercept::serve(ctx.clone(), target.clone(), tls, up, client) => {}
                    _ = revoked => tracing::info!(host = %target.host, "closing intercepted tunnel: a reload changed its pins or policy"),
                }
            });
            Response::new(Either::Right(Full::default()))
        }
    }
}

async fn tunnel_unlisted(
    ctx: Arc<Context>,
    snap: Arc<Snapshot>,
    target: Target,
    admission: Admission,
    client: Client,
    generation: tokio::sync::watch::Receiver<u64>,
) -> Response<Body> {
    // Dial before answering, so refusals (private address, unreachable)
    // are the answer to the CONNECT.
    let upstream = match snap
        .connector
        .dial_unlisted(&target.host, target.port)
        .await
    {
        Ok(s) => s,
        Err(e) => return upstream_refusal(&ctx, admission.label(), &e).into(),
    };
    let peer = upstream.peer_addr().ok();
    let upgrade = client.handoff.claim();
    let guard = client.guard;
    client.tracker.spawn(async move {
        let _guard = guard;
        let Ok(up) = upgrade.await else {
            return;
        };
        let label = admission.label().to_string();
        // The host dialed and the name the client's TLS asks for must be
        // one name here too (domain fronting through an unlisted alias).
        // The tunnel counts as served once its first message passes that
        // check (a refused one counts only as `sni-mismatch`), or when it
        // ends without one (a client that never spoke).
        let counted = AtomicBool::new(false);
        let host = target.host.clone();
        let accept = |hello: &Hello| {
            let ok = match hello {
                Hello::Tls(Some(sni)) => Host::parse(sni).as_ref() == Ok(&host),
                // TLS whose name cannot be read cannot be checked either:
                // an empty handshake record before the ClientHello got any
                // SNI past this check (the upstream's OpenSSL skips it).
                Hello::Unreadable => false,
                Hello::Tls(None) | Hello::Other => true,
            };
            if ok && !counted.swap(true, Ordering::Relaxed) {
                ctx.metrics.served(&label, RequestOutcome::Tunnel);
            }
            ok
        };
        let splice = tunnel::splice_checked(up, upstream, ctx.limits.tunnel_idle, accept);
        let revoked = revoked(ctx.clone(), generation, target.clone(), admission, peer);
        tokio::select! {
            done = splice => {
                let message = match done {
                    // `{:?}` of the name as received: quoted, control bytes escaped.
                    tunnel::Spliced::Refused(Hello::Tls(Some(sni))) => {
                        format!("the TLS SNI {sni:?} names another host than the CONNECT")
                    }
                    tunnel::Spliced::Refused(_) => "the tunnel's first bytes are a TLS \
                        handshake record but no readable ClientHello: the name it asks for \
                        cannot be checked against the CONNECT"
                        .to_string(),
                    tunnel::Spliced::Done => String::new(),
                };
                if !message.is_empty() {
                    let host = target.host.to_string();
                    refuse(&ctx, Reason::SniMismatch, Some(&label), &host, &message).close();
                    return;
                }
            }
            _ = revoked => tracing::info!(host = %target.host, "closing tunnel: a reload no longer admits it"),
        }
        if !counted.swap(true, Ordering::Relaxed) {
            ctx.metrics.served(&label, RequestOutcome::Tunnel);
        }
    });
    Response::new(Either::Right(Full::default()))
}
