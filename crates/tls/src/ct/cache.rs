//! CT verdicts already reached in this generation: checking a leaf's SCTs
//! costs a signature check per SCT (two to five), and every fresh
//! handshake to the same server presents the same leaf. One cache belongs
//! to one verifier — one pinset and log list generation — so a new list
//! never meets an old verdict.
//!
//! An entry is keyed by the SHA-256 of what the verdict depends on besides
//! the clock: the leaf, its issuer on the validated path and the SCTs
//! delivered outside the certificate. The clock matters at the edges — an
//! SCT stamped up to five minutes ahead, a log retiring at a set instant —
//! so an entry is trusted for [`TTL`] only. The list's age is never
//! cached: the caller judges staleness at every handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pinproxy_ct::CtReport;

/// How long a verdict is reused, seconds.
pub const TTL: u64 = 600;

/// How many verdicts are kept: a workload talks to a few dozen servers.
pub const CAPACITY: usize = 512;

/// Verdicts by the digest of their inputs, with when each was reached.
type Entries = HashMap<[u8; 32], (Arc<CtReport>, u64)>;

/// Verdicts by the digest of their inputs.
#[derive(Debug, Default)]
pub struct CtCache {
    entries: Mutex<Entries>,
}

/// The cache key: leaf, issuer and delivered SCTs, each length-prefixed
/// so no two inputs share a digest by running into each other.
pub fn key(leaf: &[u8], issuer: &[&[u8]], delivered: Option<&[u8]>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in std::iter::once(leaf)
        .chain(issuer.iter().copied())
        .chain(std::iter::once(delivered.unwrap_or_default()))
    {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

// === impl CtCache ===

impl CtCache {
    /// The verdict for `key` reached within [`TTL`] of `now` (Unix
    /// seconds), else `check`'s, kept. `check` runs without the lock held.
    pub fn get_or_check(
        &self,
        key: [u8; 32],
        now: u64,
        check: impl FnOnce() -> CtReport,
    ) -> (Arc<CtReport>, bool) {
        if let Some((report, at)) = self.lock().get(&key) {
            if now.saturating_sub(*at) < TTL && *at <= now {
                return (report.clone(), true);
            }
        }
        let report = Arc::new(check());
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, at)| now.saturating_sub(*at) < TTL && *at <= now);
        }
        if entries.len() >= CAPACITY {
            // Full of fresh entries (a client naming ever new servers):
            // start again rather than grow.
            entries.clear();
        }
        entries.insert(key, (report.clone(), now));
        (report, false)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
