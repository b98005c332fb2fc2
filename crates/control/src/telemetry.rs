//! Turning what the data path observes into metrics, the drift view and
//! rate-limited logs — and, through the [`Sinks`] that outlive
//! generations, into key continuity, learned chains and failure reports.
//! [`Telemetry`] is the upstream room's [`Observe`]; each generation's
//! [`Generation`] is the [`Observer`] its verifier reports to.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use super::continuity::Continuity;
use super::drift::{ChainOutcome, Drift};
use super::learn::{self, Learned, LearnedCert};
use super::logs::{Json, LogLimiter};
use super::metrics::Metrics;
use super::reports::ct::{CtView, OcspView};
use super::reports::{self, Report, Reporter, Route};
use pinproxy_policy::host::Host;
use pinproxy_policy::pin::Pin;
use pinproxy_policy::{HostPolicy, Mode, Policy, Trust, Unlisted};
use pinproxy_reason::{Position, Reason, ReportType, RequestOutcome};
use pinproxy_tls::ct::PathChecks;
use pinproxy_tls::verify::{Observer, Outcome, Rejection, Verdict};
use pinproxy_upstream::observe::{self, dialed, Observe, ProbeSlot, Requests};

/// Everything the data path reports to, across generations: the
/// upstream room's [`Observe`].
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<LogLimiter>,
    pub drift: Arc<Drift>,
    /// Key continuity, learned chains, failure reports.
    pub sinks: Sinks,
}

impl Telemetry {
    /// An empty drift view, default [`Sinks`] and log limits.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            sinks: Sinks::new(&metrics),
            limiter: LogLimiter::new(Duration::from_secs(10), 5),
            drift: Arc::new(Drift::default()),
            metrics,
        }
    }
}

impl Observe for Telemetry {
    fn generation(
        &self,
        policy: &Arc<Policy>,
        generation: u64,
        provider: &Arc<CryptoProvider>,
        roots: &[TrustAnchor<'static>],
    ) -> observe::Generation {
        let g = Arc::new(
            Generation::new(
                self.metrics.clone(),
                generation,
                self.limiter.clone(),
                self.drift.clone(),
            )
            .with_sinks(&self.sinks, policy, provider, roots),
        );
        observe::Generation {
            verdicts: g.clone(),
            requests: g,
        }
    }

    fn handshake_done(&self, entry: &str, took: Duration) {
        self.metrics
            .handshake_seconds
            .with_label_values(&[entry])
            .observe(took.as_secs_f64());
    }

    fn handshake_failed(&self, entry: &str, reason: Reason) {
        self.metrics.handshake_failed(entry, reason);
        self.drift.mark_failed(entry, reason);
    }

    fn handshake_timed_out(&self, entry: &str) {
        self.metrics.handshake_failed(entry, Reason::Timeout);
    }

    fn probe_due(&self, host: &Host, port: u16) -> Option<ProbeSlot> {
        self.sinks
            .probe_due(host, port)
            .map(|slot| Box::new(slot) as ProbeSlot)
    }
}

/// What verdicts feed beyond metrics and logs, kept across generations.
#[derive(Clone, Debug)]
pub struct Sinks {
    pub reporter: Arc<Reporter>,
    pub continuity: Arc<Continuity>,
    pub learned: Arc<Learned>,
}

impl Sinks {
    /// Default limits, and a reporter that delivers nothing (see
    /// [`Reporter::spawn`]).
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            reporter: Arc::new(Reporter::inert(metrics)),
            continuity: Arc::default(),
            learned: Arc::new(Learned::new(
                learn::Limits::default(),
                metrics.learned_hosts.clone(),
            )),
        }
    }

    /// Whether learn mode should dial `host:port` itself to see its chain
    /// (an unlisted tunnel carries TLS pinproxy cannot read); the slot is
    /// held until the probe ends.
    fn probe_due(&self, host: &Host, port: u16) -> Option<learn::Probe> {
        self.learned
            .probe_due(&host.to_string(), port, tokio::time::Instant::now())
    }
}

/// Where one generation's reports go.
#[derive(Debug)]
struct Routes {
    by_entry: HashMap<String, (Arc<HostPolicy>, Option<Route>)>,
    unlisted: Option<Route>,
    unlisted_mode: Mode,
}

/// One generation's reports: metrics and rate-limited logs from its
/// verifier's verdicts, and its answered requests.
#[derive(Debug)]
pub struct Generation {
    metrics: Arc<Metrics>,
    generation: u64,
    limiter: Arc<LogLimiter>,
    drift: Arc<Drift>,
    sinks: Option<Sinks>,
    routes: Option<Routes>,
    /// Set when this generation learns: the trust unlisted hosts are
    /// validated under, and its anchors' subjects and dates.
    learning: Option<(String, learn::Anchors)>,
    /// This generation's pinset, whose entries [`Generation::ok`] counts by
    /// `index`.
    policy: Option<Arc<Policy>>,
    /// `requests_total{outcome="ok"}` per entry (by `index`), then
    /// unlisted: looked up by label once, at the first request, rather
    /// than on every one.
    ok: Vec<OnceLock<prometheus::IntCounter>>,
}

impl Generation {
    fn new(
        metrics: Arc<Metrics>,
        generation: u64,
        limiter: Arc<LogLimiter>,
        drift: Arc<Drift>,
    ) -> Self {
        Self {
            metrics,
            generation,
            limiter,
            drift,
            sinks: None,
            routes: None,
            learning: None,
            policy: None,
            ok: Vec::new(),
        }
    }

    /// Feeds `sinks` too, as `policy` (this generation's) says: reports to
    /// its `report_uri`s (over a client trusting `roots` and
    /// `defaults.trust`'s bundle), chains learned under `unlisted: learn`.
    fn with_sinks(
        mut self,
        sinks: &Sinks,
        policy: &Arc<Policy>,
        provider: &Arc<CryptoProvider>,
        roots: &[TrustAnchor<'static>],
    ) -> Self {
        self.routes = routes(policy, provider, roots);
        self.ok = (0..=policy.hosts.len()).map(|_| OnceLock::new()).collect();
        self.policy = Some(policy.clone());
        if policy.defaults.unlisted == Unlisted::Learn {
            self.learning = Some((
                policy.defaults.trust.describe(),
                learn::anchors(&policy.defaults.trust),
            ));
        }
        self.sinks = Some(sinks.clone());
        self
    }

    /// Key continuity, learning and reports for one verdict.
    fn feed(&self, sinks: &Sinks, v: &Verdict<'_>) {
        let dialed = dialed();
        let host = dialed.as_ref().map_or(v.host, |(h, _)| h.as_str());
        let now = time::OffsetDateTime::now_utc();
        for position in sinks
            .continuity
            .observe(v.host, host, v.path_pins, now.unix_timestamp())
        {
            self.metrics
                .chain_changes
                .with_label_values(&[v.host, position.as_str()])
                .inc();
        }
        if let (Some((trust, anchors)), Some((_, port)), Outcome::PassUnpinned) =
            (&self.learning, &dialed, v.outcome)
        {
            sinks.learned.record(
                host,
                *port,
                trust,
                v.path_pins,
                v.checks
                    .and_then(PathChecks::ct_policy_verdict)
                    .map(|c| c.as_str()),
                now.unix_timestamp(),
                || learned_certs(v, anchors),
            );
        }
        if !v.outcome.is_mismatch() {
            return;
        }
        let Some(route) = self.route(v.host) else {
            return;
        };
        let outcome = ChainOutcome::Judged(v.outcome);
        sinks.reporter.offer(route, host, outcome, || Report {
            kind: ReportType::PinFailure,
            time: rfc3339(now),
            host: host.to_string(),
            port: dialed.as_ref().map(|(_, p)| *p),
            entry: v.host.to_string(),
            mode: v.mode,
            outcome,
            reason: Reason::PinMismatch,
            expected_pins: strings(v.expected),
            next_pins: strings(v.next_pins),
            validated_path_pins: strings(v.path_pins),
            presented_chain_pem: pem_chain(v.end_entity, v.intermediates),
            pod: sinks.reporter.pod().clone(),
            generation: self.generation,
            version: env!("CARGO_PKG_VERSION"),
            ct: v.checks.and_then(CtView::of),
            ocsp: v.checks.map(OcspView::of),
        });
    }

    /// A report for a chain refused before pins were looked at.
    fn feed_rejected(&self, sinks: &Sinks, r: &Rejection<'_>) {
        let (Some(routes), Some(route)) = (&self.routes, self.route(r.host)) else {
            return;
        };
        let dialed = dialed();
        let host = dialed.as_ref().map_or(r.host, |(h, _)| h.as_str());
        let entry = routes.by_entry.get(r.host).map(|(e, _)| e.as_ref());
        let outcome = ChainOutcome::Untrusted;
        sinks.reporter.offer(route, host, outcome, || Report {
            kind: ReportType::PinFailure,
            time: rfc3339(time::OffsetDateTime::now_utc()),
            host: host.to_string(),
            port: dialed.as_ref().map(|(_, p)| *p),
            entry: r.host.to_string(),
            mode: entry.map_or(routes.unlisted_mode, |e| e.mode),
            outcome,
            reason: r.reason,
            expected_pins: entry.map_or_else(Vec::new, |e| strings(&e.pins)),
            next_pins: entry.map_or_else(Vec::new, |e| strings(&e.next_pins)),
            validated_path_pins: Vec::new(),
            presented_chain_pem: pem_chain(r.end_entity, r.intermediates),
            pod: sinks.reporter.pod().clone(),
            generation: self.generation,
            version: env!("CARGO_PKG_VERSION"),
            ct: r.checks.and_then(CtView::of),
            ocsp: r.checks.map(OcspView::of),
        });
    }

    /// The route for reports about `label` (an entry, or `unlisted`).
    fn route(&self, label: &str) -> Option<&Route> {
        let routes = self.routes.as_ref()?;
        match routes.by_entry.get(label) {
            Some((_, route)) => route.as_ref(),
            None => routes.unlisted.as_ref(),
        }
    }
}

/// This generation's report routes; `None` when it names no `report_uri`.
fn routes(
    policy: &Policy,
    provider: &Arc<CryptoProvider>,
    roots: &[TrustAnchor<'static>],
) -> Option<Routes> {
    let any = policy.report_uri(None).is_some()
        || policy
            .hosts
            .iter()
            .any(|h| policy.report_uri(Some(h)).is_some());
    if !any {
        return None;
    }
    let extra = match &policy.defaults.trust {
        Trust::Bundle { anchors, .. } => Some(&anchors[..]),
        _ => None,
    };
    let tls = match reports::collector::tls(provider.clone(), roots, extra) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the report client: no failure reports");
            return None;
        }
    };
    let route = |entry: Option<&HostPolicy>| {
        let uri = policy.report_uri(entry)?;
        match uri.as_str().parse::<http::Uri>() {
            Ok(uri) => Some(Route {
                uri,
                tls: tls.clone(),
            }),
            Err(e) => {
                tracing::warn!(report_uri = uri.as_str(), error = %e, "unusable report_uri");
                None
            }
        }
    };
    Some(Routes {
        by_entry: policy
            .hosts
            .iter()
            .map(|h| (h.name.clone(), (h.clone(), route(Some(h)))))
            .collect(),
        unlisted: route(None),
        unlisted_mode: policy.defaults.mode,
    })
}

/// The certificates of a verdict's validated path: the end entity, the
/// intermediates webpki used — by position, never looked up by key, since
/// a server may send more certificates with a path key and any subject it
/// likes — and the anchor as the trust store holds it, never as a server
/// sent it.
fn learned_certs(v: &Verdict<'_>, anchors: &learn::Anchors) -> Vec<LearnedCert> {
    let on_path: Vec<&CertificateDer<'_>> = std::iter::once(v.end_entity)
        .chain(
            v.path_intermediates
                .iter()
                .filter_map(|i| v.intermediates.get(*i)),
        )
        .collect();
    let last = v.path_pins.len().saturating_sub(1);
    v.path_pins
        .iter()
        .enumerate()
        .map(|(i, pin)| {
            let position = match i {
                0 => Position::Leaf,
                _ if i == last => Position::Anchor,
                _ => Position::Intermediate,
            };
            let text = pin.to_string();
            let (subject, not_after) = match position {
                Position::Anchor => anchors.get(pin).map_or((None, None), |a| {
                    (Some(a.subject.clone()), a.not_after.clone())
                }),
                _ => on_path
                    .get(i)
                    .and_then(|c| pinproxy_tls::cert::CertInfo::from_der(c.as_ref()).ok())
                    .filter(|c| c.pin == text)
                    .map_or((None, None), |c| (Some(c.subject), Some(c.not_after))),
            };
            LearnedCert {
                pin: text,
                position: position.as_str().into(),
                subject,
                not_after,
            }
        })
        .collect()
}

fn strings(pins: &[Pin]) -> Vec<String> {
    pins.iter().map(Pin::to_string).collect()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The presented chain, one PEM block per certificate.
fn pem_chain(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<String> {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    std::iter::once(end_entity)
        .chain(intermediates)
        .map(|c| pem::encode_config(&pem::Pem::new("CERTIFICATE", c.as_ref()), config))
        .collect()
}

impl Requests for Generation {
    fn ok(&self, entry: Option<&HostPolicy>) {
        let label = entry.map_or("unlisted", |e| e.name.as_str());
        let index = self.policy.as_ref().and_then(|p| match entry {
            None => Some(p.hosts.len()),
            Some(e) => p
                .hosts
                .get(e.index)
                .filter(|h| std::ptr::eq(h.as_ref(), e))
                .map(|_| e.index),
        });
        let count = |label: &str| self.metrics.served_counter(label, RequestOutcome::Ok);
        match index.and_then(|i| self.ok.get(i)) {
            Some(c) => c.get_or_init(|| count(label)).inc(),
            // An entry from another generation: look the label up.
            None => count(label).inc(),
        }
    }
}

impl Generation {
    /// Counts what CT and the staple said on a validated path; warns
    /// (rate-limited) while a stale log list keeps `enforce` from acting.
    fn count_checks(&self, host: &str, c: &PathChecks) {
        self.metrics
            .checked(host, c.ct_verdict(), c.staple_verdict(), c.degraded());
        if c.degraded() {
            if let Some(suppressed) = self.limiter.allow("\0ct-stale-list") {
                tracing::warn!(
                    host,
                    generation = self.generation,
                    suppressed,
                    "the CT log list is 70 days old or older: ct: enforce acts as ct: report \
                     (verdicts counted as stale-list) until a newer list is mounted \
                     (run --ct-log-list, pinproxy ct-update)"
                );
            }
        }
    }
}

impl Observer for Generation {
    fn verdict(&self, v: &Verdict<'_>) {
        if let Some(c) = v.checks {
            self.count_checks(v.host, c);
        }
        // Parses the chain only when it changed since the last handshake.
        if let Some(not_after) = self.drift.record(v, self.generation, v.next_pins) {
            self.metrics
                .upstream_cert_expiry
                .with_label_values(&[v.host])
                .set(not_after as f64);
        }
        if v.next_pins_matched == Some(false) {
            self.metrics
                .next_pins_mismatch
                .with_label_values(&[v.host])
                .inc();
        }
        if let Some(sinks) = &self.sinks {
            self.feed(sinks, v);
        }
        if !v.outcome.is_mismatch() {
            return;
        }
        self.metrics
            .pin_mismatch
            .with_label_values(&[v.host, v.mode.as_str()])
            .inc();
        if let Some(suppressed) = self.limiter.allow(v.host) {
            let presented: Vec<String> = v.path_pins.iter().map(|p| p.to_string()).collect();
            let expected: Vec<String> = v.expected.iter().map(|p| p.to_string()).collect();
            let mut subjects = chain_subjects(v.end_entity, v.intermediates);
            if let Some(anchor) = &v.anchor_subject {
                subjects.push(format!("{anchor} (trust anchor)"));
            }
            tracing::warn!(
                host = v.host,
                mode = v.mode.as_str(),
                generation = self.generation,
                outcome = v.outcome.as_str(),
                presented = %Json(&presented),
                subjects = %Json(&subjects),
                expected = %Json(&expected),
                suppressed,
                "pin mismatch"
            );
        }
    }

    fn rejected(&self, r: &Rejection<'_>) {
        if let Some(c) = r.checks {
            self.count_checks(r.host, c);
        }
        self.drift.record_rejected(
            r.host,
            self.generation,
            r.reason,
            r.end_entity,
            r.intermediates,
        );
        if let Some(sinks) = &self.sinks {
            self.feed_rejected(sinks, r);
        }
        let key = format!("{}\0{}", r.host, r.reason);
        if let Some(suppressed) = self.limiter.allow(&key) {
            let presented: Vec<String> = std::iter::once(r.end_entity)
                .chain(r.intermediates)
                .map(|c| {
                    pinproxy_policy::pin::Pin::of_certificate(c)
                        .map_or_else(|e| e.to_string(), |p| p.to_string())
                })
                .collect();
            let what = if r.checks.is_some() {
                "upstream chain refused by Certificate Transparency or OCSP"
            } else {
                "untrusted upstream chain"
            };
            tracing::warn!(
                host = r.host,
                reason = r.reason.as_str(),
                generation = self.generation,
                error = %r.error,
                presented = %Json(&presented),
                subjects = %Json(&chain_subjects(r.end_entity, r.intermediates)),
                suppressed,
                "{what}"
            );
        }
    }
}

fn chain_subjects(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Vec<String> {
    std::iter::once(end_entity)
        .chain(intermediates.iter())
        .map(|c| match x509_parser::parse_x509_certificate(c.as_ref()) {
            Ok((_, cert)) => cert.subject().to_string(),
            Err(_) => "<unparseable>".into(),
        })
        .collect()
}
