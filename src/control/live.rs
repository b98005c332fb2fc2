//! The live snapshot and its generation watch.
//!
//! Everything on the data path holds an `Arc<Live>`: it reads the snapshot
//! in force and subscribes to generation changes (open tunnels re-check
//! their admission on each). Only the holder of the one [`Publisher`] — the
//! reloader — can swap a snapshot in; it is deliberately not `Clone`.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::upstream::Snapshot;

/// The snapshot in force, and a watch of its generation.
pub struct Live {
    snapshot: ArcSwap<Snapshot>,
    generation: watch::Sender<u64>,
}

/// The one handle that can publish a new snapshot.
pub struct Publisher {
    live: Arc<Live>,
}

// === impl Live ===

impl Live {
    /// A live view starting at `first`, and the publisher for it.
    pub fn new(first: Snapshot) -> (Arc<Live>, Publisher) {
        let (generation, _) = watch::channel(first.generation);
        let live = Arc::new(Live {
            snapshot: ArcSwap::from_pointee(first),
            generation,
        });
        (live.clone(), Publisher { live })
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

// === impl Publisher ===

impl Publisher {
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Swaps `next` in and notifies subscribers; returns the old snapshot.
    pub fn publish(&self, next: Snapshot) -> Arc<Snapshot> {
        let generation = next.generation;
        let old = self.live.snapshot.swap(Arc::new(next));
        self.live.generation.send_replace(generation);
        old
    }
}
