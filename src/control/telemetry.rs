//! Turning verifier verdicts into metrics, the drift view and rate-limited
//! logs: the [`Observer`] every snapshot's verifier reports to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::drift::Drift;
use super::metrics::Metrics;
use rustls_pki_types::CertificateDer;

use crate::tls::verify::{Observer, Rejection, Verdict};

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
        self.drift.record_rejected(
            r.host,
            self.generation,
            r.reason,
            r.end_entity,
            r.intermediates,
        );
        let key = format!("{}\0{}", r.host, r.reason);
        if let Some(suppressed) = self.limiter.allow(&key) {
            let presented: Vec<String> = std::iter::once(r.end_entity)
                .chain(r.intermediates)
                .map(|c| {
                    crate::policy::pin::Pin::of_certificate(c)
                        .map_or_else(|e| e.to_string(), |p| p.to_string())
                })
                .collect();
            tracing::warn!(
                host = r.host,
                reason = r.reason.as_str(),
                generation = self.generation,
                error = %r.error,
                presented = %Json(&presented),
                subjects = %Json(&chain_subjects(r.end_entity, r.intermediates)),
                suppressed,
                "untrusted upstream chain"
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

/// A log field whose value is JSON: the JSON log format embeds it as JSON
/// (an array stays an array); text logs show the JSON text.
pub struct Json<'a, T: serde::Serialize>(pub &'a T);

impl<T: serde::Serialize> std::fmt::Display for Json<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("null"),
        }
    }
}

/// At most `burst` log lines per key (a host label, or host and reason)
/// per `window`; returns how many were suppressed since the last one
/// allowed. Keys may come from clients (requested hosts), so at most
/// [`MAX_KEYS`] are tracked; past that, unknown keys share one budget.
/// The most keys a [`LogLimiter`] tracks.
pub const MAX_KEYS: usize = 1024;

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

    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() >= MAX_KEYS && !state.contains_key(key) {
            // Forget what is quiet before pooling the rest.
            state.retain(|_, slot| now.duration_since(slot.0) < self.window);
        }
        let key = if state.len() >= MAX_KEYS && !state.contains_key(key) {
            "\0overflow"
        } else {
            key
        };
        let slot = state.entry(key.to_string()).or_insert((now, 0, 0));
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
        // Client-chosen keys can't grow it without bound.
        for i in 0..(MAX_KEYS * 3) {
            l.allow(&format!("h{i}"));
        }
        assert!(l.state.lock().unwrap().len() <= MAX_KEYS + 1);
    }
}
