//! Charging a woken connection's unfinished request head against the
//! memory guard's headroom before the parser runs (the tenth review's F1).
//!
//! The guard samples the resident set every [`super::INTERVAL`], so it
//! sees memory only after it was taken. Connections opened while memory
//! was low (silent, or parked between requests) that all send unfinished
//! heads within one sample were all let into the parser, each then
//! holding up to ~112 KiB until `--header-timeout`: 2,500 of them got the
//! sidecar OOM-killed in a 128 MiB cgroup before the guard could trip.
//! Now each woken connection first reserves what its head may hold
//! ([`head_charge`]) out of the headroom the last sample left (the limit
//! minus the resident set); when the reservations in force would pass it,
//! the connection is refused as one woken while the guard is on.
//!
//! The charge is conservative: the bytes of a head already read are
//! resident, so the next sample counts them and the reservation counts
//! them again until the head is parsed. That is acceptable because a
//! legitimate head arrives in one packet and is parsed at once, so its
//! reservation lives for microseconds; what holds one for long is a slow
//! or unfinished head, which is what the guard exists to stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::Overload;

/// `headroom` while there is no guard (the `Default`): reservations cost
/// nothing and are never refused.
pub const UNGUARDED: u64 = u64::MAX;

/// The detail of a woken connection refused for want of headroom, in its
/// log line and body.
pub const NO_ROOM: &str = "unfinished request heads would take memory past --max-memory: \
                           connections that wake are refused until some finish";

/// What one woken connection's unfinished head is charged: hyper's parse
/// buffer (`parse_buffer`) and half again, as its buffer grows by
/// doubling and what it has read sits in the larger half of it (the
/// review measured ~77–112 KiB resident per head for a 68 KiB buffer).
pub fn head_charge(parse_buffer: usize) -> u64 {
    (parse_buffer as u64).saturating_mul(3) / 2
}

/// Refused: the reservations in force and this one would pass the
/// headroom the last sample left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

/// Bytes reserved against the headroom, given back once: by
/// [`Reservation::release`] or on drop, whichever comes first.
#[derive(Debug)]
pub struct Reservation {
    overload: Arc<Overload>,
    bytes: AtomicU64,
}

// === impl Overload ===

impl Default for Overload {
    /// No guard: `is_on` never, and every reservation free.
    fn default() -> Self {
        Self {
            on: AtomicBool::new(false),
            headroom: AtomicU64::new(UNGUARDED),
            reserved: AtomicU64::new(0),
        }
    }
}

impl Overload {
    /// Reserves `bytes` of the headroom: `Ok(None)` without a guard (one
    /// relaxed load, nothing written), `Err(NoRoom)` when the reservations
    /// in force and these would pass the headroom (then nothing stays
    /// reserved). The headroom is a sample old at most, as `is_on` is.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Option<Reservation>, NoRoom> {
        let headroom = self.headroom.load(Ordering::Relaxed);
        if headroom == UNGUARDED {
            return Ok(None);
        }
        // One modification order for `reserved`: concurrent reservations
        // each see the total including every one before them.
        let total = self
            .reserved
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        if total > headroom {
            self.reserved.fetch_sub(bytes, Ordering::Relaxed);
            return Err(NoRoom);
        }
        Ok(Some(Reservation {
            overload: self.clone(),
            bytes: AtomicU64::new(bytes),
        }))
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// The guard's word after a sample: the limit minus the resident set,
    /// 0 while it is on.
    pub(super) fn set_headroom(&self, headroom: u64) {
        self.headroom
            .store(headroom.min(UNGUARDED - 1), Ordering::Relaxed);
    }
}

// === impl Reservation ===

impl Reservation {
    /// Gives the bytes back; later calls do nothing. Once released, a call
    /// is one relaxed load (it runs on every request of a keep-alive
    /// connection).
    #[inline]
    pub fn release(&self) {
        if self.bytes.load(Ordering::Relaxed) == 0 {
            return;
        }
        let bytes = self.bytes.swap(0, Ordering::Relaxed);
        if bytes != 0 {
            self.overload.reserved.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_guard_nothing_is_reserved_or_refused() {
        let overload = Arc::new(Overload::default());
        for _ in 0..1000 {
            assert!(matches!(overload.reserve(u64::MAX / 2), Ok(None)));
        }
        assert_eq!(overload.reserved(), 0);
    }

    #[test]
    fn reservations_past_the_headroom_are_refused_and_given_back_once() {
        let overload = Arc::new(Overload::default());
        overload.set_headroom(1000);
        let a = overload.reserve(400).unwrap().expect("a reservation");
        let b = overload.reserve(400).unwrap().expect("a reservation");
        assert_eq!(overload.reserve(400).unwrap_err(), NoRoom);
        assert_eq!(
            overload.reserved(),
            800,
            "a refusal leaves nothing reserved"
        );
        let c = overload
            .reserve(200)
            .unwrap()
            .expect("exactly the headroom fits");
        a.release();
        a.release();
        assert_eq!(overload.reserved(), 600, "released once");
        drop(a);
        assert_eq!(overload.reserved(), 600, "not again on drop");
        drop(b);
        assert_eq!(overload.reserved(), 200, "released on drop");
        // The guard on: no headroom at all.
        overload.set_headroom(0);
        assert_eq!(overload.reserve(1).unwrap_err(), NoRoom);
        drop(c);
        assert_eq!(overload.reserved(), 0);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_headroom() {
        let overload = Arc::new(Overload::default());
        overload.set_headroom(100 * 64);
        let held: Vec<_> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let o = overload.clone();
                    s.spawn(move || {
                        (0..100)
                            .filter_map(|_| o.reserve(64).ok().flatten())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("no panic"))
                .collect()
        });
        assert_eq!(held.len(), 100, "exactly the headroom's worth");
        assert_eq!(overload.reserved(), 100 * 64);
        drop(held);
        assert_eq!(overload.reserved(), 0);
    }

    #[test]
    fn the_charge_is_the_parse_buffer_and_half_again() {
        assert_eq!(head_charge(69_632), 104_448);
        assert_eq!(head_charge(usize::MAX), u64::MAX / 2);
    }
}
