//! The live snapshot and its generation watch.
//!
//! Everything on the data path holds an `Arc<Live>`: it reads the snapshot
//! in force and subscribes to generation changes (open tunnels re-check
//! their admission on each). Only the holder of the one [`Publisher`] — the
//! reloader — can swap a snapshot in; it is deliberately not `Clone`.
//! Publishing is also what puts a generation's metric series and gauges in
//! force, and what forgets the series and drift entries of hosts it no
//! longer lists: building a snapshot changes nothing.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use super::drift::Drift;
use super::metrics::Metrics;
use super::telemetry::Telemetry;
use pinproxy_policy::CtMode;
use pinproxy_upstream::Snapshot;

/// The snapshot in force, and a watch of its generation.
pub struct Live {
    snapshot: ArcSwap<Snapshot>,
    generation: watch::Sender<u64>,
}

/// The one handle that can publish a new snapshot.
pub struct Publisher {
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    drift: Arc<Drift>,
}

// === impl Live ===

impl Live {
    /// A live view starting at `first`, and the publisher for it, which
    /// shows what is in force in `telemetry`'s metrics and drift view.
    pub fn new(first: Snapshot, telemetry: &Telemetry) -> (Arc<Live>, Publisher) {
        telemetry.metrics.in_force(&first.policy, first.generation);
        ct_list_in_force(&telemetry.metrics, &first, None);
        let (generation, _) = watch::channel(first.generation);
        let live = Arc::new(Live {
            snapshot: ArcSwap::from_pointee(first),
            generation,
        });
        let publisher = Publisher {
            live: live.clone(),
            metrics: telemetry.metrics.clone(),
            drift: telemetry.drift.clone(),
        };
        (live, publisher)
    }

    /// The snapshot in force (cheap; don't hold it across an `.await`).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The snapshot in force, owned.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Notified on every published generation. Subscribe *before* deciding
    /// anything from [`Live::load`], so a reload in between is seen.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.load().generation)
            .finish()
    }
}

/// Shows `next`'s CT log list in force; says which list it is when it is
/// not the one in force before (`old`), and warns when it is stale while
/// an entry (or the defaults) asks for `ct: enforce`.
fn ct_list_in_force(metrics: &Metrics, next: &Snapshot, old: Option<&Snapshot>) {
    metrics.ct_list_in_force(&next.ct_list);
    let list = &next.ct_list;
    let now = rustls_pki_types::UnixTime::now();
    let changed = old.is_none_or(|o| o.ct_list.sha256() != list.sha256());
    if changed {
        tracing::info!(
            generation = next.generation,
            ct_log_list = %list.describe(now),
            "CT log list in force"
        );
    }
    let enforcing = next.policy.hosts.iter().any(|h| h.ct == CtMode::Enforce)
        || next.policy.defaults.ct == CtMode::Enforce;
    if list.is_stale(now) && enforcing {
        tracing::warn!(
            generation = next.generation,
            ct_log_list = %list.describe(now),
            "the CT log list is 70 days old or older: ct: enforce acts as ct: report \
             (Chrome's rule: a stale list must not refuse connections); mount a newer list \
             with run --ct-log-list (check it with pinproxy ct-update --from FILE)"
        );
    }
}

// === impl Publisher ===

impl Publisher {
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Swaps `next` in and notifies subscribers; returns the old snapshot.
    /// `next`'s series exist before any request under it can count, and
    /// the series and drift entries of hosts it no longer lists go away.
    pub fn publish(&self, next: Snapshot) -> Arc<Snapshot> {
        let generation = next.generation;
        self.metrics.in_force(&next.policy, generation);
        ct_list_in_force(&self.metrics, &next, Some(&self.live.load()));
        let next = Arc::new(next);
        let old = self.live.snapshot.swap(next.clone());
        self.live.generation.send_replace(generation);
        self.forget_gone(&old, &next);
        old
    }

    /// Forgets what only `old` listed: entries' series and drift entries,
    /// and the series of passthrough items.
    fn forget_gone(&self, old: &Snapshot, new: &Snapshot) {
        let names: HashSet<&str> = new.policy.hosts.iter().map(|h| h.name.as_str()).collect();
        for gone in old
            .policy
            .hosts
            .iter()
            .filter(|h| !names.contains(h.name.as_str()))
        {
            self.metrics.forget_host(&gone.name);
        }
        self.drift.retain(|h| names.contains(h));
        let kept: HashSet<&str> = new
            .policy
            .passthrough
            .items()
            .iter()
            .map(String::as_str)
            .collect();
        for gone in old
            .policy
            .passthrough
            .items()
            .iter()
            .filter(|i| !kept.contains(i.as_str()))
        {
            self.metrics.forget_host(gone);
        }
    }

    /// The metrics publishing shows what is in force in.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
