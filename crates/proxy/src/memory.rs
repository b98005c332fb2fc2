//! Giving freed memory back to the kernel.
//!
//! After a burst of connections (each one's hyper buffers, ~21 KiB while
//! it is served) an allocator keeps the freed pages for reuse; a sidecar
//! that once served 10,000 connections would keep their peak resident.
//! The binary installs a trim function (`src/main.rs`: mimalloc's
//! `mi_collect`). It runs [`SETTLE`] after the first release of a burst
//! (connections parked or closed), so memory is back within about a second
//! of the last response, and then waits at least [`GAP`] before the next
//! trim, so a steady stream of closing connections trims a few times a
//! second at most. It runs on the runtime's own thread, whose heap holds
//! the connections' memory (with the default single worker, all of it).
//! docs/benchmarks.md ("Memory") has the figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

/// How long after a release the trim waits, so that one burst of parked
/// or closed connections is one trim.
const SETTLE: Duration = Duration::from_millis(100);

/// The least time between two trims.
const GAP: Duration = Duration::from_millis(400);

/// A flag set by every release and a wake-up for the trim task.
pub(crate) struct Releases {
    released: AtomicBool,
    wake: Notify,
}

impl Releases {
    const fn new() -> Self {
        Self {
            released: AtomicBool::new(false),
            wake: Notify::const_new(),
        }
    }

    fn note(&self) {
        // Only the first release of a burst wakes the task.
        if !self.released.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }
}

static RELEASED: Releases = Releases::new();

/// A connection was parked or closed: its buffers were freed.
pub(crate) fn note_release() {
    RELEASED.note();
}

/// Trims after releases, until the task is dropped.
pub async fn trim_after_releases() {
    if let Some(trim) = TRIM.get() {
        trim_loop(&RELEASED, *trim).await;
    }
}

async fn trim_loop(releases: &'static Releases, trim: fn()) {
    loop {
        releases.wake.notified().await;
        tokio::time::sleep(SETTLE).await;
        // Releases from here on wake the task again for the next trim.
        releases.released.store(false, Ordering::Release);
        // On this thread: an allocator's per-thread heap can only be
        // collected by its owner. Bounded by the heap's page count.
        trim();
        tokio::time::sleep(GAP).await;
    }
}

/// The trim function, installed by the binary (`src/main.rs`): the
/// library stays free of `unsafe`, and a program embedding it keeps its
/// allocator to itself.
static TRIM: OnceLock<fn()> = OnceLock::new();

/// Gives freed memory back now, on this thread (the memory guard, when it
/// trips: `overload`).
pub(crate) fn trim_now() {
    if let Some(trim) = TRIM.get() {
        trim();
    }
}

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

    async fn calls_settle() -> usize {
        tokio::task::yield_now().await;
        CALLS.load(Ordering::SeqCst)
    }

    /// In virtual time: nothing released, no trim; a burst of releases,
    /// one trim SETTLE after the first; none after it without a new
    /// release; a release during the GAP trims once the GAP is over.
    #[tokio::test(start_paused = true)]
    async fn trims_once_per_burst_of_releases_and_never_without_one() {
        // Its own flag: other tests' connections note the process's.
        static FLAG: Releases = Releases::new();
        let task = tokio::spawn(trim_loop(&FLAG, counting_trim));
        tokio::time::sleep(GAP * 5).await;
        assert_eq!(calls_settle().await, 0, "trimmed with nothing released");

        FLAG.note();
        FLAG.note();
        tokio::time::sleep(SETTLE / 2).await;
        assert_eq!(calls_settle().await, 0, "trimmed before the burst settled");
        FLAG.note();
        tokio::time::sleep(SETTLE / 2 + Duration::from_millis(1)).await;
        assert_eq!(calls_settle().await, 1, "one trim for the burst");

        tokio::time::sleep(GAP * 5).await;
        assert_eq!(
            calls_settle().await,
            1,
            "trimmed again with nothing new released"
        );

        FLAG.note();
        tokio::time::sleep(SETTLE + Duration::from_millis(1)).await;
        assert_eq!(calls_settle().await, 2, "a new release, a new trim");
        FLAG.note();
        tokio::time::sleep(SETTLE + Duration::from_millis(1)).await;
        assert_eq!(calls_settle().await, 2, "trimmed again within the GAP");
        tokio::time::sleep(GAP).await;
        assert_eq!(
            calls_settle().await,
            3,
            "the release in the GAP was never trimmed"
        );
        task.abort();
    }
}
