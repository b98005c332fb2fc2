//! Rollback protection: a signed pinset carries `serial: N`, and the serial
//! in force only goes up.
//!
//! A validly signed file with a lower serial is an old pinset replayed
//! (perhaps one that still trusted a compromised key): refused. The same
//! serial with other bytes is two different pinsets under one number, which
//! a signer must not produce and an attacker holding a leaked old key could:
//! refused too. The same serial with the same bytes is a re-delivery
//! (a sidecar restart, a label-only Secret update): allowed.

use std::fmt;
use std::num::NonZeroU64;

use crate::Sha256;

/// A pinset serial: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(NonZeroU64);

/// The serial and content hash of the pinset in force: the rollback floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    serial: Serial,
    /// `None` only for a state file an operator wrote with a bare serial:
    /// then an equal serial cannot be compared and is let through.
    sha256: Option<Sha256>,
}

/// Why a validly signed pinset was refused (`reason: rollback`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    #[error(
        "serial {serial} is lower than the serial in force ({in_force}): a rollback is refused"
    )]
    Lower { serial: Serial, in_force: Serial },
    #[error("serial {serial} is the serial in force but the content differs (sha256 {sha256}, in force {in_force_sha256}): a changed pinset needs a higher serial")]
    SameSerialDifferentContent {
        serial: Serial,
        sha256: Sha256,
        in_force_sha256: Sha256,
    },
}

/// A serial that is not a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("serial must be a positive integer, not 0")]
pub struct ZeroSerial;

// === impl Serial ===

impl Serial {
    pub fn new(n: u64) -> Result<Self, ZeroSerial> {
        NonZeroU64::new(n).map(Serial).ok_or(ZeroSerial)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl Floor ===

impl Floor {
    /// The floor set by a pinset that was applied.
    pub fn new(serial: Serial, sha256: Sha256) -> Self {
        Floor {
            serial,
            sha256: Some(sha256),
        }
    }

    /// A floor known only by its serial (a hand-written state file).
    pub fn serial_only(serial: Serial) -> Self {
        Floor {
            serial,
            sha256: None,
        }
    }

    pub fn serial(&self) -> Serial {
        self.serial
    }

    pub fn sha256(&self) -> Option<&Sha256> {
        self.sha256.as_ref()
    }

    /// Whether a pinset with `serial` and content `sha256` may replace the
    /// one in force.
    pub fn check(&self, serial: Serial, sha256: &Sha256) -> Result<(), RollbackError> {
        if serial < self.serial {
            return Err(RollbackError::Lower {
                serial,
                in_force: self.serial,
            });
        }
        match &self.sha256 {
            Some(in_force) if serial == self.serial && in_force != sha256 => {
                Err(RollbackError::SameSerialDifferentContent {
                    serial,
                    sha256: *sha256,
                    in_force_sha256: *in_force,
                })
            }
            _ => Ok(()),
        }
    }

    /// The floor after applying `serial`/`sha256`, or why it may not be
    /// applied. With no floor yet (first start, no state), anything goes.
    pub fn advance(
        floor: Option<&Floor>,
        serial: Serial,
        sha256: Sha256,
    ) -> Result<Floor, RollbackError> {
        if let Some(floor) = floor {
            floor.check(serial, &sha256)?;
        }
        Ok(Floor::new(serial, sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(n: u64) -> Serial {
        Serial::new(n).expect("positive")
    }

    #[test]
    fn the_floor_only_goes_up() {
        let a = Sha256::of(b"a");
        let b = Sha256::of(b"b");
        let floor = Floor::new(serial(7), a);
        assert_eq!(
            floor.check(serial(6), &b),
            Err(RollbackError::Lower {
                serial: serial(6),
                in_force: serial(7)
            })
        );
        // A lower serial is refused even with the same bytes: the bytes
        // cannot be the same (the serial is in them), but the rule must not
        // depend on that.
        assert!(floor.check(serial(6), &a).is_err());
        assert!(matches!(
            floor.check(serial(7), &b),
            Err(RollbackError::SameSerialDifferentContent { .. })
        ));
        assert_eq!(floor.check(serial(7), &a), Ok(()));
        assert_eq!(floor.check(serial(8), &b), Ok(()));
        assert_eq!(floor.check(serial(u64::MAX), &b), Ok(()));
    }

    #[test]
    fn advance_from_nothing_and_from_a_floor() {
        let a = Sha256::of(b"a");
        let first = Floor::advance(None, serial(3), a).expect("no floor yet");
        assert_eq!(first.serial(), serial(3));
        let b = Sha256::of(b"b");
        assert!(Floor::advance(Some(&first), serial(2), b).is_err());
        let next = Floor::advance(Some(&first), serial(4), b).expect("higher");
        assert_eq!(next, Floor::new(serial(4), b));
    }

    #[test]
    fn a_serial_only_floor_lets_the_equal_serial_through() {
        let floor = Floor::serial_only(serial(5));
        assert_eq!(floor.check(serial(5), &Sha256::of(b"x")), Ok(()));
        assert!(floor.check(serial(4), &Sha256::of(b"x")).is_err());
    }

    #[test]
    fn zero_is_not_a_serial() {
        assert_eq!(Serial::new(0), Err(ZeroSerial));
        assert_eq!(serial(1).get(), 1);
    }

    #[test]
    fn messages_read_as_the_operator_needs_them() {
        let floor = Floor::new(serial(7), Sha256::of(b"a"));
        let err = floor.check(serial(6), &Sha256::of(b"b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "serial 6 is lower than the serial in force (7): a rollback is refused"
        );
        let err = floor.check(serial(7), &Sha256::of(b"b")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("serial 7 is the serial in force but the content differs"),
            "{err}"
        );
    }
}
