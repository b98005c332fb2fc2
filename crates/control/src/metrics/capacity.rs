//! How close pinproxy is to the limits it refuses at with `overloaded`:
//! client connections (`--max-connections`), upstream sockets
//! (`--max-upstream-connections`) and name lookups in flight
//! (`--max-dns-lookups`), each as "in use" beside "limit", read at scrape
//! time from the budgets themselves — nothing is counted on the request
//! path. A refusal says which limit in its log line; these say how near
//! the others are (Envoy's `upstream_cx_active` and circuit-breaker
//! gauges). Client connections in use are `connections_active`, kept by
//! the connections themselves.
//!
//! The budgets exist once the runner has built them
//! ([`super::Metrics::watch_capacity`]); until then, and in a program that
//! never installs them, the gauges have no sample (absent, not 0).

use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

use pinproxy_upstream::{Budget, Lookups};

/// The limits in force and where their use is read.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Client connections at most (`--max-connections`, as lowered to the
    /// open-files limit).
    pub connections: usize,
    /// Upstream sockets (`--max-upstream-connections`).
    pub upstream: Budget,
    /// Name lookups in flight (`--max-dns-lookups`).
    pub lookups: Arc<Lookups>,
}

/// The five gauges, set from [`Budgets`] when the registry is gathered.
#[derive(Clone)]
pub(super) struct Capacity {
    connections_limit: IntGauge,
    upstream_active: IntGauge,
    upstream_limit: IntGauge,
    lookups_active: IntGauge,
    lookups_limit: IntGauge,
    budgets: Arc<OnceLock<Budgets>>,
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capacity")
            .field("budgets", &self.budgets.get())
            .finish()
    }
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

// === impl Capacity ===

impl Capacity {
    pub(super) fn new() -> Self {
        Self {
            connections_limit: gauge(
                "connections_limit",
                "Client connections pinproxy accepts at once (--max-connections); past it, overloaded.",
            ),
            upstream_active: gauge(
                "upstream_connections_active",
                "Upstream sockets open now (pinned, plain, tunnels, splices, idle pooled), read at scrape time.",
            ),
            upstream_limit: gauge(
                "upstream_connections_limit",
                "Upstream sockets pinproxy may hold open (--max-upstream-connections); past it, overloaded.",
            ),
            lookups_active: gauge(
                "dns_lookups_active",
                "Name lookups holding a slot now (asking the resolver), read at scrape time.",
            ),
            lookups_limit: gauge(
                "dns_lookups_limit",
                "Name lookups in flight at most (--max-dns-lookups).",
            ),
            budgets: Arc::default(),
        }
    }

    /// From now on the gauges read `budgets`; the first call wins.
    pub(super) fn watch(&self, budgets: Budgets) {
        let _ = self.budgets.set(budgets);
    }

    fn gauges(&self) -> [&IntGauge; 5] {
        [
            &self.connections_limit,
            &self.upstream_active,
            &self.upstream_limit,
            &self.lookups_active,
            &self.lookups_limit,
        ]
    }
}

impl Collector for Capacity {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(b) = self.budgets.get() else {
            return Vec::new();
        };
        let set = |g: &IntGauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.connections_limit, b.connections);
        set(&self.upstream_active, b.upstream.in_use());
        set(&self.upstream_limit, b.upstream.size());
        set(&self.lookups_active, b.lookups.in_flight());
        set(&self.lookups_limit, b.lookups.max());
        self.gauges()
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::time::Duration;

    use pinproxy_upstream::{Resolve, Share};

    /// Never answers: a lookup keeps its slot.
    #[derive(Debug)]
    struct Silent;

    impl Resolve for Silent {
        fn resolve(
            &self,
            _: &str,
            _: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
            Box::pin(std::future::pending())
        }
    }

    fn value(families: &[MetricFamily], name: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.get_metric()[0].get_gauge().get_value())
    }

    #[tokio::test(start_paused = true)]
    async fn use_and_limits_are_read_at_each_collect_and_absent_before_the_budgets_exist() {
        let capacity = Capacity::new();
        assert!(capacity.collect().is_empty(), "no budgets yet: no samples");

        let upstream = Budget::new(3);
        let lookups = Arc::new(Lookups::new(Arc::new(Silent), 8));
        capacity.watch(Budgets {
            connections: 40,
            upstream: upstream.clone(),
            lookups: lookups.clone(),
        });
        let idle = capacity.collect();
        assert_eq!(value(&idle, "connections_limit"), Some(40.0));
        assert_eq!(value(&idle, "upstream_connections_active"), Some(0.0));
        assert_eq!(value(&idle, "upstream_connections_limit"), Some(3.0));
        assert_eq!(value(&idle, "dns_lookups_active"), Some(0.0));
        assert_eq!(value(&idle, "dns_lookups_limit"), Some(8.0));

        let held: Vec<_> = (0..2).filter_map(|_| upstream.try_acquire()).collect();
        for i in 0..3 {
            let l = lookups.clone();
            tokio::spawn(async move {
                l.lookup(
                    &format!("n{i}.test"),
                    443,
                    Share::Unlisted,
                    Duration::from_secs(60),
                )
                .await
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let busy = capacity.collect();
        assert_eq!(value(&busy, "upstream_connections_active"), Some(2.0));
        assert_eq!(value(&busy, "dns_lookups_active"), Some(3.0));

        drop(held);
        let after = capacity.collect();
        assert_eq!(value(&after, "upstream_connections_active"), Some(0.0));
    }
}
