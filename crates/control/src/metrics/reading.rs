//! Reading the registry (tests, tools, the admin port's `/metrics`):
//! never creates a series.

use std::collections::BTreeMap;

use prometheus::proto::MetricType;
use prometheus::{Encoder, IntCounterVec, TextEncoder};

use super::Metrics;

// === impl Metrics: reading ===

impl Metrics {
    /// Every metric's full name (`pinproxy_…`), registered or not yet
    /// holding a series: what docs/reference.md must list.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Every sample in the registry, `family{label="value",…}` → value
    /// (a histogram by its count): what a test compares before and after.
    pub fn samples(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for family in self.registry.gather() {
            for metric in family.get_metric() {
                let labels: Vec<String> = metric
                    .get_label()
                    .iter()
                    .map(|l| format!("{}={:?}", l.name(), l.value()))
                    .collect();
                let value = match family.get_field_type() {
                    MetricType::COUNTER => metric.get_counter().get_value(),
                    MetricType::GAUGE => metric.get_gauge().get_value(),
                    _ => metric.get_histogram().get_sample_count() as f64,
                };
                out.insert(format!("{}{{{}}}", family.name(), labels.join(",")), value);
            }
        }
        out
    }

    /// `pinproxy_denied_total{reason}`.
    pub fn denied_count(&self, reason: &str) -> u64 {
        read(&self.denied, &[("reason", reason)])
    }

    /// `pinproxy_requests_total{host,outcome}`.
    pub fn requests_count(&self, host: &str, outcome: &str) -> u64 {
        read(&self.requests, &[("host", host), ("outcome", outcome)])
    }

    /// `pinproxy_tls_verify_failures_total{host,reason}`.
    pub fn tls_failures_count(&self, host: &str, reason: &str) -> u64 {
        read(
            &self.tls_verify_failures,
            &[("host", host), ("reason", reason)],
        )
    }

    /// `pinproxy_transparent_connections_total{protocol,outcome}`.
    pub fn transparent_count(&self, protocol: &str, outcome: &str) -> u64 {
        read(
            &self.transparent_connections,
            &[("protocol", protocol), ("outcome", outcome)],
        )
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

/// The value of the series of `vec` with `labels`, 0 if it does not exist
/// (reading never creates it).
fn read(vec: &IntCounterVec, labels: &[(&str, &str)]) -> u64 {
    use prometheus::core::Collector;
    vec.collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .find(|m| {
            labels.iter().all(|(name, value)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *name && l.value() == *value)
            })
        })
        .map_or(0, |m| m.get_counter().get_value() as u64)
}
