//! The memory guard's figures (`run --max-memory`; the guard itself is
//! the proxy's `overload`): the limit it judges against, the resident set
//! at its last sample, and whether it refuses new work now. The guard sets
//! them a few times a second; `/metrics` only reads them. Without a guard
//! (`--max-memory 0`, `auto` with no container limit, a program that never
//! starts one) the limit and the figure have no sample (absent, not 0: an
//! unknown figure is not a small one), and `overloaded` is 0.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

#[derive(Clone)]
pub(super) struct Memory {
    limit: IntGauge,
    resident: IntGauge,
    overloaded: IntGauge,
    /// Set once the guard runs.
    guarded: Arc<OnceLock<()>>,
    /// Why `/healthz` fails: the guard has been on too long (no figure,
    /// so it lives here beside the ones the guard sets).
    unhealthy: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("limit", &self.limit.get())
            .field("resident", &self.resident.get())
            .field("overloaded", &self.overloaded.get())
            .finish()
    }
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// === impl Memory ===

impl Memory {
    pub(super) fn new() -> Self {
        Self {
            limit: gauge(
                "memory_limit_bytes",
                "Resident memory past which new connections and requests are refused overloaded (--max-memory as in force); absent when the guard is off.",
            ),
            resident: gauge(
                "memory_resident_bytes",
                "The process's resident memory (with --max-memory auto on cgroup v2, plus the socket buffers charged to its cgroup) at the memory guard's last sample (a few times a second); absent when the guard is off.",
            ),
            overloaded: gauge(
                "overloaded",
                "1 while resident memory is over --max-memory and new connections and requests are refused overloaded (until below 90 % of it), else 0.",
            ),
            guarded: Arc::default(),
            unhealthy: Arc::default(),
        }
    }

    /// The guard runs, judging against `limit` bytes; the first call wins.
    pub(super) fn watch(&self, limit: u64) {
        if self.guarded.set(()).is_ok() {
            self.limit.set(clamp(limit));
        }
    }

    pub(super) fn sampled(&self, resident: u64, overloaded: bool) {
        self.resident.set(clamp(resident));
        self.overloaded.set(i64::from(overloaded));
    }

    pub(super) fn set_unhealthy(&self, why: Option<String>) {
        *self
            .unhealthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
    }

    pub(super) fn unhealthy(&self) -> Option<String> {
        self.unhealthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn gauges(&self) -> [&IntGauge; 3] {
        [&self.limit, &self.resident, &self.overloaded]
    }
}

impl Collector for Memory {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self.guarded.get() {
            Some(()) => self
                .gauges()
                .into_iter()
                .flat_map(|g| g.collect())
                .collect(),
            None => self.overloaded.collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(families: &[MetricFamily], name: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.get_metric()[0].get_gauge().get_value())
    }

    #[test]
    fn limit_and_figure_are_absent_until_the_guard_runs() {
        let m = Memory::new();
        let off = m.collect();
        assert_eq!(value(&off, "memory_limit_bytes"), None);
        assert_eq!(value(&off, "memory_resident_bytes"), None);
        assert_eq!(value(&off, "overloaded"), Some(0.0));

        m.watch(100 << 20);
        m.sampled(101 << 20, true);
        let on = m.collect();
        assert_eq!(value(&on, "memory_limit_bytes"), Some(104857600.0));
        assert_eq!(value(&on, "memory_resident_bytes"), Some(105906176.0));
        assert_eq!(value(&on, "overloaded"), Some(1.0));
        m.sampled(80 << 20, false);
        assert_eq!(value(&m.collect(), "overloaded"), Some(0.0));
    }
}
