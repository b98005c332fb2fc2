//! How long the memory guard has been on, and what a pinset reload left
//! it at: the two ways a guard that cannot clear is made visible (the
//! tenth review's F2), so a pod refusing every egress request does not
//! look healthy.

use std::time::Duration;

use pinproxy_control::metrics::Metrics;

/// How long the guard has been on without a break, and whether that made
/// `/healthz` fail: a guard that never clears (the resident floor stays
/// above 90 % of the limit (`clear`): a pinset that grew, caches filled
/// to their caps, stalled tunnels, a limit just above the start figure)
/// refuses every egress request while the pod looks healthy (the tenth
/// review's F2). Failing liveness turns that silent outage into a restart
/// the kubelet does and everyone sees; it costs the work still admitted,
/// which a guard on that long is not shedding anyway.
#[derive(Debug, Default)]
pub struct Stuck {
    since: Option<tokio::time::Instant>,
    unhealthy: bool,
}

// === impl Stuck ===

impl Stuck {
    /// One sample: `on` is the guard's state, `clear` the figure it
    /// clears below.
    pub fn judge(
        &mut self,
        on: bool,
        resident: u64,
        clear: u64,
        bound: Option<Duration>,
        metrics: &Metrics,
    ) {
        if !on {
            self.since = None;
            if std::mem::take(&mut self.unhealthy) {
                metrics.memory_unhealthy(None);
                tracing::info!(resident, "memory guard cleared: /healthz is 200 again");
            }
            return;
        }
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        let Some(bound) = bound else {
            return;
        };
        let on_for = since.elapsed();
        if self.unhealthy || on_for < bound {
            return;
        }
        self.unhealthy = true;
        let why = format!(
            "overloaded for {}s: resident memory {resident} bytes has not fallen below \
             {clear} bytes (90 % of --max-memory); restart me",
            on_for.as_secs(),
        );
        tracing::warn!(
            resident,
            clear,
            overloaded_for_secs = on_for.as_secs(),
            "memory guard stuck: overloaded longer than --overloaded-unhealthy-after; /healthz \
             fails (503) so the liveness probe restarts the container"
        );
        metrics.memory_unhealthy(Some(why));
    }
}

/// A pinset reload is not refused for its size (a valid pinset is always
/// applied), but one that leaves the guard on says so: [`RELOAD_SETTLE`]
/// after the swap, once the allocator has had the chance to give the old
/// pinset and the parse's garbage back.
#[derive(Debug)]
pub struct Reload {
    generation: u64,
    changed: Option<tokio::time::Instant>,
}

/// How long after a reload its memory is judged.
const RELOAD_SETTLE: Duration = Duration::from_secs(1);

// === impl Reload ===

impl Reload {
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            changed: None,
        }
    }

    /// One sample: `clear` is the figure the guard clears below.
    pub fn judge(&mut self, generation: u64, on: bool, resident: u64, clear: u64) {
        if generation != self.generation {
            self.generation = generation;
            self.changed = Some(tokio::time::Instant::now());
        }
        if self.changed.is_none_or(|at| at.elapsed() < RELOAD_SETTLE) {
            return;
        }
        self.changed = None;
        if on {
            tracing::warn!(
                generation,
                resident,
                clear,
                "the pinset reload left resident memory over --max-memory: it is in force, and \
                 new connections and requests are refused overloaded until memory falls below \
                 90 % of the limit (raise --max-memory or the container's limit)"
            );
        }
    }
}
