//! The allocator's own figures on `/metrics`, read at scrape time: what a
//! memory figure (RSS, a container's working set) is made of. The binary
//! installs the reader (`src/main.rs`: mimalloc's `mi_process_info`), as it
//! installs its trim (`pinproxy_proxy::memory`): this crate stays free of
//! `unsafe` and of the allocator, and a program embedding it keeps its
//! allocator to itself. Without a reader the gauges have no sample at all
//! (absent, not 0: an unknown figure is not a small one).

use std::sync::OnceLock;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

/// The allocator's figures at one moment, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Memory the allocator holds committed (backed by RAM or swap when
    /// touched): its heap, live and free-but-kept.
    pub committed: u64,
    /// The most it has held committed since the process started.
    pub committed_peak: u64,
}

/// The reader, installed by the binary; the first call wins.
static READER: OnceLock<fn() -> HeapStats> = OnceLock::new();

/// Installs the function that reads the allocator's figures at each scrape.
pub fn install_heap_stats(read: fn() -> HeapStats) {
    let _ = READER.set(read);
}

/// The two gauges, set from the reader when the registry is gathered.
#[derive(Clone)]
pub(super) struct Allocator {
    committed: IntGauge,
    committed_peak: IntGauge,
    read: fn() -> Option<HeapStats>,
}

/// The installed reader's figures, if one is installed.
fn installed() -> Option<HeapStats> {
    READER.get().map(|read| read())
}

// === impl Allocator ===

impl Allocator {
    /// Gauges read through the reader the binary installs.
    pub(super) fn new() -> Self {
        Self::reading(installed)
    }

    fn reading(read: fn() -> Option<HeapStats>) -> Self {
        Self {
            committed: IntGauge::new(
                "allocator_committed_bytes",
                "Memory the allocator holds committed (its heap: live and free-but-kept), read at scrape time.",
            )
            .expect("valid metric"),
            committed_peak: IntGauge::new(
                "allocator_committed_peak_bytes",
                "The most memory the allocator has held committed since start, read at scrape time.",
            )
            .expect("valid metric"),
            read,
        }
    }
}

impl Collector for Allocator {
    fn desc(&self) -> Vec<&Desc> {
        self.committed
            .desc()
            .into_iter()
            .chain(self.committed_peak.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(stats) = (self.read)() else {
            return Vec::new();
        };
        let gauge = |g: &IntGauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g.collect()
        };
        let mut families = gauge(&self.committed, stats.committed);
        families.extend(gauge(&self.committed_peak, stats.committed_peak));
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Option<HeapStats> {
        Some(HeapStats {
            committed: 3 << 20,
            committed_peak: 5 << 20,
        })
    }

    fn value(families: &[MetricFamily], name: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.get_metric()[0].get_gauge().get_value())
    }

    #[test]
    fn figures_are_read_at_each_collect_and_absent_without_a_reader() {
        let with = Allocator::reading(fixed).collect();
        assert_eq!(
            value(&with, "allocator_committed_bytes"),
            Some(3.0 * 1048576.0)
        );
        assert_eq!(
            value(&with, "allocator_committed_peak_bytes"),
            Some(5.0 * 1048576.0)
        );
        assert!(Allocator::reading(|| None).collect().is_empty());
    }
}
