//! Response bodies: streamed from upstream (and cut if a reload revokes
//! the admission they were fetched under), or a short local answer.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::Context;
use pinproxy_policy::{Admission, Target};

/// Response bodies: streamed from upstream, or a short local answer.
pub type Body = Either<Streamed, Full<Bytes>>;

/// An upstream response body that ends (with an error, so the client sees
/// a truncated response, not a clean end) if a reload revokes the
/// admission it was fetched under: a long stream never outlives its pins.
/// The watch is armed only once the body has to wait for the upstream, so
/// a response that is already complete costs no timer or allocation.
pub struct Streamed {
    inner: Incoming,
    watch: Watch,
}

enum Watch {
    Off,
    Idle(Box<(Revocation, Target)>),
    Armed(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Streamed {
    pub fn new(inner: Incoming, watch: Option<Box<(Revocation, Target)>>) -> Self {
        Self {
            inner,
            watch: watch.map_or(Watch::Off, Watch::Idle),
        }
    }
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Watch::Armed(revoked) = &mut self.watch {
            if revoked.as_mut().poll(cx).is_ready() {
                self.watch = Watch::Off;
                return Poll::Ready(Some(Err(
                    "pinset reloaded: this host's pins or policy changed".into(),
                )));
            }
        }
        let polled = std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(Into::into);
        if polled.is_pending() && matches!(self.watch, Watch::Idle(_)) {
            if let Watch::Idle(w) = std::mem::replace(&mut self.watch, Watch::Off) {
                let (r, target) = *w;
                let mut fut: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
                    Box::pin(revoked(r.ctx, r.rx, target, r.admission, None));
                if fut.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(
                        "pinset reloaded: this host's pins or policy changed".into(),
                    )));
                }
                self.watch = Watch::Armed(fut);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What a streamed response needs to watch for revocation.
pub struct Revocation {
    pub ctx: Arc<Context>,
    pub rx: watch::Receiver<u64>,
    pub admission: Admission,
}

/// Resolves `revoke_grace` after a reload means the admission no longer
/// holds. Subscribe ([`Live::subscribe`](pinproxy_control::Live::subscribe))
/// *before* deciding admission, so a reload in between is seen.
pub async fn revoked(
    ctx: Arc<Context>,
    mut rx: watch::Receiver<u64>,
    target: Target,
    admitted: Admission,
    peer: Option<std::net::SocketAddr>,
) {
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !still_allowed(&ctx, &target, &admitted, peer) {
            // In-flight exchanges finish; only what outlives the grace
            // period (a long stream, an open tunnel) is cut.
            tokio::time::sleep(ctx.limits.revoke_grace).await;
            return;
        }
    }
}

/// Would `target` (reached at `peer`, admitted as `admitted`) still be let
/// through under the snapshot in force now? Open tunnels, WebSockets and
/// streaming responses ask this after every reload.
pub fn still_allowed(
    ctx: &Context,
    target: &Target,
    admitted: &Admission,
    peer: Option<std::net::SocketAddr>,
) -> bool {
    let snap = ctx.live.load();
    let now = time::OffsetDateTime::now_utc();
    if !admitted.still_holds(&snap.policy, target, peer.map(|p| p.ip()), now) {
        return false;
    }
    match peer {
        // Passthrough is exempt from the private-address rule, never from
        // the loop guard.
        Some(p) if admitted.passthrough().is_some() => !snap.connector.is_own(&p),
        Some(p) => snap.connector.egress_allowed(&p),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::Limits;
    use pinproxy_control::metrics::Metrics;
    use pinproxy_control::telemetry::Telemetry;
    use pinproxy_control::Live;
    use pinproxy_policy::admission::decide;
    use pinproxy_policy::host::Host;
    use pinproxy_tls::ca::Intercept;
    use pinproxy_upstream::{Options, Shared, Snapshot, Timeouts};

    fn snapshot(yaml: &str, generation: u64, shared: &Shared) -> Snapshot {
        let now = time::OffsetDateTime::now_utc();
        let policy = pinproxy_policy::parse(yaml.as_bytes(), Path::new("."), now).unwrap();
        Snapshot::build(
            policy,
            pinproxy_tls::ct::LogListInForce::builtin(),
            generation,
            shared,
        )
        .unwrap()
    }

    const ALLOW: &str = "version: 1\ndefaults:\n  unlisted: allow\nhosts: {}\n";
    const DENY: &str = "version: 1\ndefaults:\n  unlisted: deny\nhosts: {}\n";

    /// In virtual time: a revoked admission ends exactly one grace period
    /// after the reload that revoked it; a reload that changes nothing for
    /// it never ends it.
    #[tokio::test(start_paused = true)]
    async fn revocation_waits_the_grace_period_and_only_for_what_changed() {
        let metrics = Metrics::new();
        let telemetry = Telemetry::new(metrics.clone());
        let shared = Shared::new(Arc::new(telemetry.clone()), Options::default(), Vec::new());
        let (live, publisher) = Live::new(snapshot(ALLOW, 1, &shared), &telemetry);
        let grace = Duration::from_secs(5);
        let provider = pinproxy_tls::provider();
        let ctx = Arc::new(Context {
            live: live.clone(),
            metrics: metrics.clone(),
            limits: Limits {
                revoke_grace: grace,
                ..Limits::default()
            },
            timeouts: Timeouts::default(),
            intercept: Arc::new(
                Intercept::generate(provider.clone(), metrics.minted_leaves.clone(), 1).unwrap(),
            ),
            provider,
            refusal_logs: pinproxy_control::logs::LogLimiter::new(grace, 5),
            connections: Context::connection_slots(&Limits::default()),
            overload: Default::default(),
        });
        let target = Target {
            host: Host::parse("unlisted.test").unwrap(),
            port: 443,
        };
        let rx = live.subscribe();
        let now = time::OffsetDateTime::now_utc();
        let policy = &live.load().policy;
        let admission = decide(policy, &target, now).finish(policy, &[]).unwrap();
        let done = tokio::spawn(revoked(ctx, rx, target, admission, None));

        // The same policy again (a new generation): not revoked.
        publisher.publish(snapshot(&format!("{ALLOW}# c\n"), 2, &shared));
        tokio::time::sleep(grace * 10).await;
        assert!(!done.is_finished(), "an unrelated reload revoked it");

        publisher.publish(snapshot(DENY, 3, &shared));
        let revoked_at = tokio::time::Instant::now();
        tokio::time::sleep(grace - Duration::from_millis(1)).await;
        assert!(!done.is_finished(), "cut before the grace period ended");
        tokio::time::sleep(Duration::from_millis(2)).await;
        tokio::task::yield_now().await;
        assert!(done.is_finished(), "still open after the grace period");
        assert!(revoked_at.elapsed() < grace + Duration::from_millis(10));
    }
}
