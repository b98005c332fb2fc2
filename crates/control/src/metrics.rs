//! Prometheus metrics (docs/reference.md, "Metrics"), on a registry owned by
//! the process and passed to constructors (tests stay independent).
//!
//! The counters a refusal can move are private: a refusal is counted by
//! [`Metrics::refused`] alone, which reads the contract's table
//! ([`Reason::counted`]), so no call site picks counters by hand.

use std::cell::RefCell;
use std::sync::Arc;

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use pinproxy_policy::{CtMode, Policy};
use pinproxy_reason::{
    Delivery, Position, Reason, ReloadResult, RequestOutcome, TransparentOutcome,
    TransparentProtocol,
};
use pinproxy_tls::ct::{LogListInForce, StapleVerdict, Verdict as CtVerdict};

mod allocator;
mod capacity;
mod memory;
mod reading;

pub use allocator::{install_heap_stats, HeapStats};
pub use capacity::Budgets;

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub pin_mismatch: IntCounterVec,
    pub next_pins_mismatch: IntCounterVec,
    tls_verify_failures: IntCounterVec,
    requests: IntCounterVec,
    denied: IntCounterVec,
    pub handshake_seconds: HistogramVec,
    pub connections_active: IntGauge,
    pub config_reloads: IntCounterVec,
    /// 1 while the pinset on disk is the one in force or loaded fine; 0
    /// while it fails to load (a bad version is counted once in
    /// `config_reloads`, so this is what says it is still bad).
    pub config_last_reload_successful: IntGauge,
    pub config_generation: IntGauge,
    pub pinset_info: IntGaugeVec,
    pub pinset_expiry: GaugeVec,
    pub upstream_cert_expiry: GaugeVec,
    pub client_cert_expiry: GaugeVec,
    pub crl_next_update: GaugeVec,
    pub minted_leaves: IntCounterVec,
    transparent_connections: IntCounterVec,
    pub build_info: Gauge,
    pub reports: IntCounterVec,
    pub chain_changes: IntCounterVec,
    pub learned_hosts: IntGauge,
    /// Certificate Transparency verdicts, by pinset entry (or `unlisted`).
    pub ct_verdicts: IntCounterVec,
    /// Handshakes under `ct: enforce` judged with a stale log list, which
    /// refused nothing: what an alert on a stale list must count (a
    /// stale list under `report` costs nothing).
    pub ct_enforce_degraded: IntCounterVec,
    pub ocsp_staples: IntCounterVec,
    /// `log_list_timestamp` of the CT log list in force.
    pub ct_log_list_timestamp: Gauge,
    /// Limits and their use, read from the budgets at scrape time.
    capacity: capacity::Capacity,
    /// The memory guard's limit, figure and state.
    memory: memory::Memory,
    /// Every metric's full name, as registered.
    names: Vec<String>,
}

/// Handshake latency buckets, seconds: loopback to a slow far server.
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The registry's prefix: every name is `pinproxy_…`.
const PREFIX: &str = "pinproxy";

/// Registers `c` (names are constants: registering twice is a bug) and
/// notes its name in `names`.
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    names: &RefCell<Vec<String>>,
    c: C,
) -> C {
    names
        .borrow_mut()
        .extend(c.desc().iter().map(|d| format!("{PREFIX}_{}", d.fq_name)));
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Arc<Self> {
        let names = RefCell::new(Vec::new());
        let registry =
            Registry::new_custom(Some(PREFIX.into()), None).expect("a constant prefix is valid");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                &names,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                &names,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let int_gauge = |name: &str, help: &str| {
            register(
                &registry,
                &names,
                IntGauge::new(name, help).expect("valid metric"),
            )
        };
        let handshake_seconds = register(
            &registry,
            &names,
            HistogramVec::new(
                HistogramOpts::new(
                    "upstream_handshake_seconds",
                    "Upstream TCP connect plus TLS handshake time, by pinset entry.",
                )
                .buckets(HANDSHAKE_BUCKETS.to_vec()),
                &["host"],
            )
            .expect("valid metric"),
        );
        let build_info = register(
            &registry,
            &names,
            Gauge::with_opts(
                Opts::new("build_info", "pinproxy build information.")
                    .const_label("version", env!("CARGO_PKG_VERSION")),
            )
            .expect("valid metric"),
        );
        build_info.set(1.0);
        register(&registry, &names, allocator::Allocator::new());
        let capacity = register(&registry, &names, capacity::Capacity::new());
        let memory = register(&registry, &names, memory::Memory::new());

        let m = Self {
            pin_mismatch: counter(
                "pin_mismatch_total",
                "Handshakes whose validated chain carried no configured pin, and requests a pin-only entry past its expires refused.",
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
            config_last_reload_successful: int_gauge(
                "config_last_reload_successful",
                "Whether the last pinset reload succeeded (1) or the file on disk fails to load (0).",
            ),
            config_generation: int_gauge(
                "config_generation",
                "Generation of the pinset in force (1 at start, +1 per successful reload).",
            ),
            pinset_info: register(
                &registry,
                &names,
                IntGaugeVec::new(
                    Opts::new(
                        "pinset_info",
                        "1, labelled with the SHA-256 of the pins file in force (what `pinproxy status` compares with the Secret), its serial and the key that verified it (empty when unsigned).",
                    ),
                    &["sha256", "serial", "key"],
                )
                .expect("valid metric"),
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
            client_cert_expiry: gauge_vec(
                "client_cert_expiry_timestamp_seconds",
                "notAfter of the client certificate each entry presents upstream (Unix time).",
                &["host"],
            ),
            crl_next_update: gauge_vec(
                "crl_next_update_timestamp_seconds",
                "The earliest nextUpdate of each entry's CRLs (Unix time); past it the CRL is expired.",
                &["host"],
            ),
            transparent_connections: counter(
                "transparent_connections_total",
                "Connections on the transparent listener, by what their first bytes were (tls, http, other) and what became of them.",
                &["protocol", "outcome"],
            ),
            minted_leaves: counter(
                "intercept_leaf_certificates_total",
                "Interception leaf certificates, by cache result (minted or cached).",
                &["result"],
            ),
            build_info,
            reports: counter(
                "reports_total",
                "Failure reports, by what became of them (sent, failed, dropped: queue full, limited: over the rate limit).",
                &["result"],
            ),
            chain_changes: counter(
                "upstream_chain_changes_total",
                "Handshakes whose validated path carried another key at this position than the host's previous one.",
                &["host", "position"],
            ),
            learned_hosts: int_gauge(
                "learned_hosts",
                "Unlisted host:port pairs whose validated chains learn mode has recorded.",
            ),
            ct_verdicts: counter(
                "ct_verdicts_total",
                "Certificate Transparency verdicts on validated leaves, by pinset entry (or unlisted) and result.",
                &["host", "result"],
            ),
            ct_enforce_degraded: counter(
                "ct_enforce_degraded_total",
                "Handshakes to an entry with ct: enforce judged with a CT log list 70 days old or older: enforce acted as report.",
                &["host"],
            ),
            ocsp_staples: counter(
                "ocsp_staples_total",
                "OCSP responses stapled by upstream servers, by verdict (absent: none stapled).",
                &["result"],
            ),
            ct_log_list_timestamp: register(
                &registry,
                &names,
                Gauge::new(
                    "ct_log_list_timestamp_seconds",
                    "log_list_timestamp of the CT log list in force (Unix time); 70 days past it, ct: enforce acts as report.",
                )
                .expect("valid metric"),
            ),
            registry,
            capacity,
            memory,
            names: names.into_inner(),
        };
        for v in StapleVerdict::ALL {
            m.ocsp_staples.with_label_values(&[v.as_str()]);
        }
        for d in Delivery::ALL {
            m.reports.with_label_values(&[d.as_str()]);
        }
        for r in Reason::denied() {
            m.denied.with_label_values(&[r]);
        }
        for r in ReloadResult::ALL {
            m.config_reloads.with_label_values(&[r.as_str()]);
        }
        m.config_last_reload_successful.set(1);
        Arc::new(m)
    }

    /// Shows generation `generation` of `policy` as the one in force: its
    /// number, its entries' expiry gauges, and their series at 0 from
    /// load time, so `increase()` alerts fire on a host's first event too.
    /// Called by the publisher only, before the generation is swapped in.
    pub(crate) fn in_force(&self, policy: &Policy, generation: u64) {
        self.config_generation.set(generation as i64);
        self.pinset_info.reset();
        let serial = policy.serial.map(|n| n.to_string()).unwrap_or_default();
        let key = policy.signature.as_ref().map_or("", |s| s.key.as_str());
        self.pinset_info
            .with_label_values(&[&policy.pins_sha256, &serial, key])
            .set(1);
        self.pinset_expiry.reset();
        self.client_cert_expiry.reset();
        self.crl_next_update.reset();
        for h in &policy.hosts {
            if let Some(c) = &h.client_cert {
                self.client_cert_expiry
                    .with_label_values(&[&h.name])
                    .set(c.not_after.unix_timestamp() as f64);
            }
            if let Some(next) = h.crls.as_ref().and_then(|c| c.next_update()) {
                self.crl_next_update
                    .with_label_values(&[&h.name])
                    .set(next.unix_timestamp() as f64);
            }
            self.pin_mismatch
                .with_label_values(&[&h.name, h.mode.as_str()]);
            if !h.next_pins.is_empty() {
                self.next_pins_mismatch.with_label_values(&[&h.name]);
            }
            if let Some(e) = h.expires {
                self.pinset_expiry
                    .with_label_values(&[&h.name])
                    .set(e.unix_timestamp() as f64);
            }
        }
        self.ct_series(policy);
        let entries = policy.hosts.iter().map(|h| h.name.as_str());
        for name in entries.chain(std::iter::once("unlisted")) {
            for position in Position::ALL {
                self.chain_changes
                    .with_label_values(&[name, position.as_str()]);
            }
            self.requests
                .with_label_values(&[name, RequestOutcome::Ok.as_str()]);
        }
    }

    /// `ct_verdicts_total` at 0 for every entry (and `unlisted`) whose CT is
    /// checked; none for those whose CT is `off`.
    fn ct_series(&self, policy: &Policy) {
        let checked = policy
            .hosts
            .iter()
            .filter(|h| h.ct != CtMode::Off)
            .map(|h| h.name.as_str());
        let unlisted = (policy.defaults.unlisted.admits() && policy.defaults.ct != CtMode::Off)
            .then_some("unlisted");
        for name in checked.chain(unlisted) {
            for v in CtVerdict::ALL {
                self.ct_verdicts.with_label_values(&[name, v.as_str()]);
            }
        }
        // An entry whose CT was turned off has no verdicts any more.
        let off = policy
            .hosts
            .iter()
            .filter(|h| h.ct == CtMode::Off)
            .map(|h| h.name.as_str());
        let unlisted_off = unlisted.is_none().then_some("unlisted");
        for name in off.chain(unlisted_off) {
            for v in CtVerdict::ALL {
                let _ = self.ct_verdicts.remove_label_values(&[name, v.as_str()]);
            }
        }
        // ct_enforce_degraded_total at 0 for entries that enforce, gone
        // for the rest.
        let unlisted_enforces =
            policy.defaults.unlisted.admits() && policy.defaults.ct == CtMode::Enforce;
        let modes = policy
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.ct == CtMode::Enforce))
            .chain(std::iter::once(("unlisted", unlisted_enforces)));
        for (name, enforces) in modes {
            if enforces {
                self.ct_enforce_degraded.with_label_values(&[name]);
            } else {
                let _ = self.ct_enforce_degraded.remove_label_values(&[name]);
            }
        }
    }

    /// Shows the CT log list in force.
    pub(crate) fn ct_list_in_force(&self, list: &LogListInForce) {
        self.ct_log_list_timestamp
            .set(list.timestamp().as_secs() as f64);
    }

    /// Counts what CT and the OCSP staple said on one validated path;
    /// `degraded`: `ct: enforce` acted as `report` (a stale list).
    pub fn checked(
        &self,
        host: &str,
        ct: Option<CtVerdict>,
        staple: StapleVerdict,
        degraded: bool,
    ) {
        self.ocsp_staples
            .with_label_values(&[staple.as_str()])
            .inc();
        if degraded {
            self.ct_enforce_degraded.with_label_values(&[host]).inc();
        }
        if let Some(v) = ct {
            self.ct_verdicts
                .with_label_values(&[host, v.as_str()])
                .inc();
        }
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
        let _ = self.client_cert_expiry.remove_label_values(&[host]);
        let _ = self.crl_next_update.remove_label_values(&[host]);
        let _ = self.handshake_seconds.remove_label_values(&[host]);
        for position in Position::ALL {
            let _ = self
                .chain_changes
                .remove_label_values(&[host, position.as_str()]);
        }
        for reason in Reason::tls_failures() {
            let _ = self
                .tls_verify_failures
                .remove_label_values(&[host, reason]);
        }
        for outcome in RequestOutcome::labels() {
            let _ = self.requests.remove_label_values(&[host, outcome]);
        }
        for v in CtVerdict::ALL {
            let _ = self.ct_verdicts.remove_label_values(&[host, v.as_str()]);
        }
        let _ = self.ct_enforce_degraded.remove_label_values(&[host]);
    }

    // === counting ===

    /// Counts one refusal where the contract's table says
    /// ([`Reason::counted`]): `denied_total{reason}`, and
    /// `requests_total{host,outcome=reason}` under `host` — the label the
    /// request was admitted under (entry, passthrough item or `unlisted`);
    /// `None` when refused before admission, where only `denied_total` can
    /// count it. Every refusal, on every path, is counted here and only here.
    pub fn refused(&self, reason: Reason, host: Option<&str>) {
        let counted = reason.counted();
        debug_assert!(
            counted.denied || host.is_some(),
            "{reason} is counted only under the host it was admitted as"
        );
        if counted.denied {
            self.denied.with_label_values(&[reason.as_str()]).inc();
        }
        if let (true, Some(host)) = (counted.outcome, host) {
            self.requests
                .with_label_values(&[host, reason.as_str()])
                .inc();
        }
    }

    /// Counts a failed upstream handshake with `host` (the entry, or
    /// `unlisted`): `tls_verify_failures_total{host,reason}`, for the
    /// reasons the table declares there.
    pub fn handshake_failed(&self, host: &str, reason: Reason) {
        debug_assert!(reason.counted().tls, "{reason} is not a handshake failure");
        if reason.counted().tls {
            self.tls_verify_failures
                .with_label_values(&[host, reason.as_str()])
                .inc();
        }
    }

    /// Counts a request or tunnel let through under `host` that ended well.
    pub fn served(&self, host: &str, outcome: RequestOutcome) {
        self.served_counter(host, outcome).inc();
    }

    /// The counter [`Metrics::served`] moves, for callers that keep it.
    pub fn served_counter(&self, host: &str, outcome: RequestOutcome) -> prometheus::IntCounter {
        self.requests.with_label_values(&[host, outcome.as_str()])
    }

    /// Counts a connection on the transparent listener.
    pub fn transparent(&self, protocol: TransparentProtocol, outcome: TransparentOutcome) {
        self.transparent_connections
            .with_label_values(&[protocol.as_str(), outcome.as_str()])
            .inc();
    }

    /// Counts a pinset reload.
    pub fn reloaded(&self, result: ReloadResult) {
        self.config_reloads
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// From now on `/metrics` shows the limits in force and how much of
    /// each is in use (`connections_limit`, `upstream_connections_*`,
    /// `dns_lookups_*`); the first call wins.
    pub fn watch_capacity(&self, budgets: Budgets) {
        self.capacity.watch(budgets);
    }

    /// The memory guard runs with `limit` bytes (`--max-memory` in force):
    /// from now on its gauges have samples; the first call wins.
    pub fn watch_memory(&self, limit: u64) {
        self.memory.watch(limit);
    }

    /// The memory guard's last sample: the resident set and whether it
    /// refuses new work.
    pub fn memory_sampled(&self, resident: u64, overloaded: bool) {
        self.memory.sampled(resident, overloaded);
    }

    /// The guard has been on too long (`Some(why)`): `/healthz` fails so
    /// the liveness probe restarts the container; `None` once it clears.
    pub fn memory_unhealthy(&self, why: Option<String>) {
        self.memory.set_unhealthy(why);
    }

    /// Why `/healthz` fails, if it does.
    pub fn unhealthy(&self) -> Option<String> {
        self.memory.unhealthy()
    }
}

#[cfg(test)]
mod tests;
