//! Giving freed memory back to the kernel.
//!
//! After a burst of connections (each one's hyper buffers, ~21 KiB while
//! it is served) an allocator keeps the freed pages for reuse; a sidecar
//! that once served 10,000 connections would keep their peak resident.
//! The binary installs a trim function (`src/main.rs`: mimalloc's
//! `mi_collect`) and it runs at most every [`EVERY`], only after
//! connections were parked or closed since the last time. It runs on the
//! runtime's own thread, whose heap holds the connections' memory (with the
//! default single worker, all of it). docs/benchmarks.md ("Memory") has
//! the figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How often, at most, memory is trimmed.
const EVERY: Duration = Duration::from_secs(2);

static RELEASED: AtomicBool = AtomicBool::new(false);

/// A connection was parked or closed: its buffers were freed.
pub(crate) fn note_release() {
    RELEASED.store(true, Ordering::Relaxed);
}

/// Trims after releases, until the task is dropped.
pub async fn trim_after_releases() {
    if let Some(trim) = TRIM.get() {
        trim_loop(&RELEASED, *trim).await;
    }
}

async fn trim_loop(released: &'static AtomicBool, trim: fn()) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if released.swap(false, Ordering::Relaxed) {
            // On this thread: an allocator's per-thread heap can only be
            // collected by its owner. Bounded by the heap's page count.
            trim();
        }
    }
}

/// The trim function, installed by the binary (`src/main.rs`): the
/// library stays free of `unsafe`, and a program embedding it keeps its
/// allocator to itself.
static TRIM: OnceLock<fn()> = OnceLock::new();

/// Installs the function that gives freed memory back; the first call wins.
pub fn install_trim(trim: fn()) {
    let _ = TRIM.set(trim);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counting_trim() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    async fn calls_settle(_want: usize) -> usize {
        tokio::task::yield_now().await;
        CALLS.load(Ordering::SeqCst)
    }

    /// In virtual time: nothing released, no trim; one release, one trim at
    /// the next tick and none after it.
    #[tokio::test(start_paused = true)]
    async fn trims_once_per_burst_of_releases_and_never_without_one() {
        // Its own flag: other tests' connections set the process's.
        static FLAG: AtomicBool = AtomicBool::new(false);
        let task = tokio::spawn(trim_loop(&FLAG, counting_trim));
        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(calls_settle(1).await, 0, "trimmed with nothing released");

        FLAG.store(true, Ordering::Relaxed);
        FLAG.store(true, Ordering::Relaxed);
        tokio::time::sleep(EVERY).await;
        assert_eq!(calls_settle(1).await, 1, "one trim for the burst");

        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(
            calls_settle(2).await,
            1,
            "trimmed again with nothing new released"
        );
        task.abort();
    }
}
