//! Turning verifier verdicts into metrics, the drift view and rate-limited
//! logs: the [`Observer`] every snapshot's verifier reports to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::drift::Drift;
use super::metrics::Metrics;
use crate::tls::verify::{Observer, Verdict};

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
}
