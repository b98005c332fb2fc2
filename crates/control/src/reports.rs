//! Failure reports (docs/reference.md, "Failure reports"): one JSON document
//! per refused or report-mode handshake failure, POSTed to the entry's
//! `report_uri` (or
//! `defaults.report_uri`) off the request path.
//!
//! The verifier's observer only *offers* a report ([`Reporter::offer`]):
//! a rate limit per host and outcome, then a non-blocking push onto a
//! bounded queue — full means dropped and counted, never waited for.
//! Workers deliver with their own HTTP client ([`collector`]) under
//! ordinary CA validation, never through pinproxy's listener or its pinned
//! connector: a report about a host whose pins fail cannot be stuck behind
//! those pins (TrustKit-Android#72). Each attempt has a short timeout;
//! transient failures are retried with backoff a bounded number of times.

pub mod collector;
pub mod ct;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;
use rustls::ClientConfig;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use super::drift::ChainOutcome;
use super::logs::LogLimiter;
use super::metrics::Metrics;
use pinproxy_policy::Mode;
use pinproxy_reason::{Delivery, Reason, ReportType};

/// How reports are queued, limited and delivered.
#[derive(Clone, Debug)]
pub struct Options {
    /// Reports waiting for a worker; past that, new ones are dropped.
    pub queue: usize,
    /// Deliveries in flight at once.
    pub workers: usize,
    /// Per attempt: connect, TLS, request and the collector's response head.
    pub timeout: Duration,
    pub attempts: u32,
    /// Wait before the second attempt, doubled before each next one.
    pub backoff: Duration,
    /// At most `burst` reports per host and outcome per `window`.
    pub burst: u32,
    pub window: Duration,
    /// Who is reporting (the downward API's pod name and namespace).
    pub pod: Pod,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            queue: 256,
            workers: 4,
            timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_secs(1),
            burst: 5,
            window: Duration::from_secs(300),
            pod: Pod::from_env(),
        }
    }
}

/// The pod a report comes from, as the downward API gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl Pod {
    /// `POD_NAME` and `POD_NAMESPACE`, set by `inject` and the chart from
    /// `metadata.name` / `metadata.namespace`.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k| var(k).filter(|v: &String| !v.is_empty());
        Self {
            name: get("POD_NAME"),
            namespace: get("POD_NAMESPACE"),
        }
    }
}

/// One report, as POSTed (`Content-Type: application/json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(rename = "type", serialize_with = "label")]
    pub kind: ReportType,
    /// RFC 3339.
    pub time: String,
    /// The name dialed (the TLS server name).
    pub host: String,
    pub port: Option<u16>,
    /// The pinset entry as written, or `unlisted`.
    pub entry: String,
    pub mode: Mode,
    /// The verdict: `mismatch`, `reported-mismatch`, `expired-pin-only`,
    /// or `untrusted` for a chain refused before pins were looked at.
    pub outcome: ChainOutcome,
    /// `pin-mismatch`, or why the chain was untrusted (`unknown-issuer`…).
    #[serde(serialize_with = "label")]
    pub reason: Reason,
    pub expected_pins: Vec<String>,
    pub next_pins: Vec<String>,
    /// Leaf first, anchor last; empty when no path validated.
    pub validated_path_pins: Vec<String>,
    /// The certificates the server sent, leaf first, one PEM block each.
    pub presented_chain_pem: Vec<String>,
    pub pod: Pod,
    pub generation: u64,
    pub version: &'static str,
    /// Certificate Transparency on the validated path: verdict, mode and
    /// every SCT's log id (absent when not judged: `ct: off`, pin-only, or
    /// no path validated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct: Option<ct::CtView>,
    /// The OCSP response the server stapled (absent when not judged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocsp: Option<ct::OcspView>,
}

/// A contract label, as its `as_str` spells it.
fn label<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Where one report goes.
#[derive(Clone, Debug)]
pub struct Route {
    pub uri: http::Uri,
    /// Ordinary CA validation (Mozilla's roots and `defaults.trust`'s
    /// bundle): never the pin verifier.
    pub tls: Arc<ClientConfig>,
}

struct Job {
    route: Route,
    body: Bytes,
}

/// Takes reports from the verifier's observer and delivers them.
pub struct Reporter {
    tx: Option<mpsc::Sender<Job>>,
    limiter: Arc<LogLimiter>,
    counted: Counters,
    pod: Pod,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("running", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Counters([IntCounter; 4]);

impl Counters {
    fn new(metrics: &Metrics) -> Self {
        let c = |d: Delivery| metrics.reports.with_label_values(&[d.as_str()]);
        Self([
            c(Delivery::Sent),
            c(Delivery::Failed),
            c(Delivery::Dropped),
            c(Delivery::Limited),
        ])
    }

    fn inc(&self, d: Delivery) {
        let i = Delivery::ALL.iter().position(|x| *x == d).unwrap_or(0);
        self.0[i].inc();
    }
}

/// The retry policy of one delivery.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub timeout: Duration,
    pub backoff: Duration,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum Attempt {
    /// Worth another try: unreachable, reset, 5xx, 408, 429.
    #[error("{0}")]
    Transient(String),
    /// Another try would fail the same way: a 4xx, a bad URL.
    #[error("{0}")]
    Permanent(String),
}

// === impl Reporter ===

impl Reporter {
    /// A reporter that delivers nothing: every offer is counted as dropped.
    pub fn inert(metrics: &Metrics) -> Self {
        Self {
            tx: None,
            limiter: LogLimiter::new(Duration::from_secs(1), 0),
            counted: Counters::new(metrics),
            pod: Pod::default(),
        }
    }

    /// Starts the delivery workers on the current runtime. `own` are
    /// pinproxy's own listeners: a report is never sent to them.
    pub fn spawn(options: Options, metrics: &Metrics, own: Vec<SocketAddr>) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let counted = Counters::new(metrics);
        let retry = Retry {
            attempts: options.attempts.max(1),
            timeout: options.timeout,
            backoff: options.backoff,
        };
        tokio::spawn(work(
            rx,
            options.workers.max(1),
            retry,
            counted.clone(),
            own,
        ));
        Self {
            tx: Some(tx),
            limiter: LogLimiter::new(options.window, options.burst),
            counted,
            pod: options.pod,
        }
    }

    /// The pod reports name.
    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// Queues the report `build` makes, unless `host` and `outcome` are
    /// over the rate limit or the queue is full. Never blocks: this runs
    /// inside a TLS handshake.
    pub fn offer(
        &self,
        route: &Route,
        host: &str,
        outcome: ChainOutcome,
        build: impl FnOnce() -> Report,
    ) {
        let Some(tx) = &self.tx else {
            self.counted.inc(Delivery::Dropped);
            return;
        };
        if self.limiter.allow(&format!("{host}\0{outcome}")).is_none() {
            self.counted.inc(Delivery::Limited);
            return;
        }
        let body = match serde_json::to_vec(&build()) {
            Ok(b) => Bytes::from(b),
            Err(_) => return,
        };
        let job = Job {
            route: route.clone(),
            body,
        };
        if tx.try_send(job).is_err() {
            self.counted.inc(Delivery::Dropped);
        }
    }
}

async fn work(
    mut rx: mpsc::Receiver<Job>,
    workers: usize,
    retry: Retry,
    counted: Counters,
    own: Vec<SocketAddr>,
) {
    let slots = Arc::new(Semaphore::new(workers));
    let own: Arc<[SocketAddr]> = own.into();
    let failures = LogLimiter::new(Duration::from_secs(60), 1);
    while let Some(job) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (counted, own, failures) = (counted.clone(), own.clone(), failures.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let result = deliver(retry, || {
                collector::post(&job.route, job.body.clone(), &own)
            })
            .await;
            if let Err(e) = &result {
                if let Some(suppressed) = failures.allow(&job.route.uri.to_string()) {
                    tracing::warn!(collector = %job.route.uri, error = %e, suppressed, "failure report not delivered");
                }
            }
            counted.inc(match result {
                Ok(()) => Delivery::Sent,
                Err(_) => Delivery::Failed,
            });
        });
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or `retry.attempts`
/// are used up; each attempt is cut at `retry.timeout`, and the wait
/// before the next one doubles from `retry.backoff`.
pub async fn deliver<F, Fut>(retry: Retry, mut attempt: F) -> Result<(), Attempt>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Attempt>>,
{
    let mut wait = retry.backoff;
    let mut last = Attempt::Transient("no attempt made".into());
    for n in 1..=retry.attempts.max(1) {
        match tokio::time::timeout(retry.timeout, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e @ Attempt::Permanent(_))) => return Err(e),
            Ok(Err(e)) => last = e,
            Err(_) => last = Attempt::Transient(format!("no answer within {:?}", retry.timeout)),
        }
        if n < retry.attempts {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn retry() -> Retry {
        Retry {
            attempts: 3,
            timeout: Duration::from_secs(2),
            backoff: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_collector_costs_attempts_times_timeout_plus_backoff_then_fails() {
        let tries = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r = deliver(retry(), || {
            tries.fetch_add(1, Ordering::SeqCst);
            std::future::pending()
        })
        .await;
        assert!(matches!(r, Err(Attempt::Transient(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        // 3 × 2 s timeouts, 1 s then 2 s of backoff.
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let tries = AtomicU32::new(0);
        let r = deliver(retry(), || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Attempt::Transient("503".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        let tries = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r = deliver(retry(), || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err(Attempt::Permanent("400".into())) }
        })
        .await;
        assert!(matches!(r, Err(Attempt::Permanent(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn pod_comes_from_the_downward_api_variables() {
        let pod = Pod::from_vars(|k| match k {
            "POD_NAME" => Some("web-1".into()),
            "POD_NAMESPACE" => Some(String::new()),
            _ => None,
        });
        assert_eq!(pod.name.as_deref(), Some("web-1"));
        assert_eq!(pod.namespace, None);
    }

    #[tokio::test]
    async fn offers_over_the_limit_or_the_queue_are_counted_not_queued() {
        let metrics = Metrics::new();
        let reporter = Reporter::spawn(
            Options {
                queue: 1,
                workers: 1,
                burst: 2,
                window: Duration::from_secs(3600),
                ..Options::default()
            },
            &metrics,
            Vec::new(),
        );
        let count = |d: Delivery| metrics.reports.with_label_values(&[d.as_str()]).get();
        let route = Route {
            // Nothing listens on port 9 of an unroutable documentation address;
            // the deliveries fail, which this test doesn't wait for.
            uri: "http://192.0.2.1:9/r".parse().unwrap(),
            tls: collector::tls(pinproxy_tls::provider(), &[], None).unwrap(),
        };
        let mut built = 0;
        for _ in 0..5 {
            reporter.offer(&route, "a.test", MISMATCH, || {
                built += 1;
                report()
            });
        }
        assert_eq!(built, 2, "reports over the limit are never even built");
        assert_eq!(count(Delivery::Limited), 3);
        // The worker has not run yet (one thread, no await): the queue of
        // one holds the first, the second is dropped.
        assert_eq!(count(Delivery::Dropped), 1);
        let inert = Reporter::inert(&metrics);
        inert.offer(&route, "a.test", MISMATCH, report);
        assert_eq!(count(Delivery::Dropped), 2);
    }

    const MISMATCH: ChainOutcome = ChainOutcome::Judged(pinproxy_tls::verify::Outcome::Mismatch);

    fn report() -> Report {
        Report {
            kind: ReportType::PinFailure,
            time: String::new(),
            host: "a.test".into(),
            port: Some(443),
            entry: "a.test".into(),
            mode: pinproxy_policy::Mode::Enforce,
            outcome: MISMATCH,
            reason: Reason::PinMismatch,
            expected_pins: vec![],
            next_pins: vec![],
            validated_path_pins: vec![],
            presented_chain_pem: vec![],
            pod: Pod::default(),
            generation: 1,
            version: "0",
            ct: None,
            ocsp: None,
        }
    }
}
