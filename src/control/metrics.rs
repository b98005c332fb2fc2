//! Prometheus metrics (DESIGN §5), on a registry owned by the process and
//! passed to constructors, and the verifier [`Observer`] that feeds them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::control::drift::Drift;
use crate::reason::{self, Reason};
use crate::tls::verify::{Observer, Verdict};

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub pin_mismatch: IntCounterVec,
    pub next_pins_mismatch: IntCounterVec,
    pub tls_verify_failures: IntCounterVec,
    pub requests: IntCounterVec,
    pub denied: IntCounterVec,
    pub handshake_seconds: HistogramVec,
    pub connections_active: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub pinset_expiry: GaugeVec,
    pub upstream_cert_expiry: GaugeVec,
    pub minted_leaves: IntCounterVec,
    pub build_info: Gauge,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("pinproxy".into()), None)
            .expect("a constant prefix is valid");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let handshake_seconds = HistogramVec::new(
            HistogramOpts::new(
                "upstream_handshake_seconds",
                "Upstream TCP connect plus TLS handshake time, by pinset entry.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["host"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(handshake_seconds.clone()))
            .expect("registered once");
        let build_info = Gauge::with_opts(
            Opts::new("build_info", "pinproxy build information.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("registered once");
        build_info.set(1.0);

        let m = Self {
            pin_mismatch: counter(
                "pin_mismatch_total",
                "Handshakes whose validated chain carried no configured pin.",
                &["host", "mode"],
            ),
            next_pins_mismatch: counter(
                "next_pins_mismatch_total",
                "Handshakes whose validated chain carried none of the entry's next_pins.",
                &["host"],
            ),
            tls_verify_failures: counter(
                "tls_verify_failures_total",
                "Upstream TLS handshakes that failed, by reason.",
                &["host", "reason"],
            ),
            requests: counter(
                "requests_total",
                "Proxied requests and tunnels, by pinset entry and outcome.",
                &["host", "outcome"],
            ),
            denied: counter(
                "denied_total",
                "Requests refused before any upstream connection, by reason.",
                &["reason"],
            ),
            handshake_seconds,
            connections_active: int_gauge(
                "connections_active",
                "Client connections currently open.",
            ),
            config_reloads: counter(
                "config_reloads_total",
                "Pinset reloads, by result.",
                &["result"],
            ),
            config_generation: int_gauge(
                "config_generation",
                "Generation of the pinset in force (1 at start, +1 per successful reload).",
            ),
            pinset_expiry: gauge_vec(
                "pinset_expiry_timestamp_seconds",
                "When each entry's pins stop being enforced (Unix time).",
                &["host"],
            ),
            upstream_cert_expiry: gauge_vec(
                "upstream_cert_expiry_timestamp_seconds",
                "notAfter of the leaf certificate last seen upstream (Unix time).",
                &["host"],
            ),
            minted_leaves: counter(
                "intercept_leaf_certificates_total",
                "Interception leaf certificates, by cache result (minted or cached).",
                &["result"],
            ),
            build_info,
            registry,
        };
        for r in Reason::denied() {
            m.denied.with_label_values(&[r]);
        }
        for r in ["success", "failure"] {
            m.config_reloads.with_label_values(&[r]);
        }
        Arc::new(m)
    }

    /// Removes every series labelled with `host` (an entry no longer in the
    /// pinset), so stale expiry gauges can't fire alerts.
    pub fn forget_host(&self, host: &str) {
        for mode in ["enforce", "report"] {
            let _ = self.pin_mismatch.remove_label_values(&[host, mode]);
        }
        let _ = self.next_pins_mismatch.remove_label_values(&[host]);
        let _ = self.upstream_cert_expiry.remove_label_values(&[host]);
        let _ = self.pinset_expiry.remove_label_values(&[host]);
        let _ = self.handshake_seconds.remove_label_values(&[host]);
        for reason in Reason::tls_failures() {
            let _ = self
                .tls_verify_failures
                .remove_label_values(&[host, reason]);
        }
        for outcome in reason::Outcome::labels() {
            let _ = self.requests.remove_label_values(&[host, outcome]);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        buf
    }
}

/// Feeds metrics and rate-limited logs from verifier verdicts.
#[derive(Debug)]
pub struct Telemetry {
    metrics: Arc<Metrics>,
    generation: u64,
    limiter: Arc<LogLimiter>,
    drift: Arc<Drift>,
}

impl Telemetry {
    pub fn new(
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
        }
    }
}

impl Observer for Telemetry {
    fn verdict(&self, v: &Verdict<'_>) {
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
            let subjects = chain_subjects(v);
            tracing::warn!(
                host = v.host,
                mode = v.mode.as_str(),
                generation = self.generation,
                outcome = ?v.outcome,
                presented = ?presented,
                subjects = ?subjects,
                expected = ?expected,
                suppressed,
                "pin mismatch"
            );
        }
    }
}

fn chain_subjects(v: &Verdict<'_>) -> Vec<String> {
    std::iter::once(v.end_entity)
        .chain(v.intermediates.iter())
        .map(|c| match x509_parser::parse_x509_certificate(c.as_ref()) {
            Ok((_, cert)) => cert.subject().to_string(),
            Err(_) => "<unparseable>".into(),
        })
        .collect()
}

/// At most `burst` log lines per host per `window`; returns how many were
/// suppressed since the last one allowed.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<HashMap<String, (Instant, u32, u64)>>,
}

impl LogLimiter {
    pub fn new(window: Duration, burst: u32) -> Arc<Self> {
        Arc::new(Self {
            window,
            burst,
            state: Mutex::new(HashMap::new()),
        })
    }

    pub fn allow(&self, host: &str) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Host labels come from the pinset (bounded) or `unlisted`.
        let slot = state.entry(host.to_string()).or_insert((now, 0, 0));
        if now.duration_since(slot.0) >= self.window {
            *slot = (now, 0, slot.2);
        }
        if slot.1 < self.burst {
            slot.1 += 1;
            let suppressed = std::mem::take(&mut slot.2);
            Some(suppressed)
        } else {
            slot.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_caps_per_host() {
        let l = LogLimiter::new(Duration::from_secs(3600), 2);
        assert_eq!(l.allow("a"), Some(0));
        assert_eq!(l.allow("a"), Some(0));
        assert_eq!(l.allow("a"), None);
        assert_eq!(l.allow("b"), Some(0));
    }

    #[test]
    fn every_family_is_exposed() {
        let m = Metrics::new();
        m.connections_active.set(0);
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "pinproxy_denied_total",
            "pinproxy_config_reloads_total",
            "pinproxy_connections_active",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
