//! Rollback protection: a signed pinset carries `serial: N`, and the serial
//! in force only goes up.
//!
//! A validly signed file with a lower serial is an old pinset replayed
//! (perhaps one that still trusted a compromised key): refused. The same
//! serial with other bytes is two different pinsets under one number, which
//! a signer must not produce and an attacker holding a leaked old key could:
//! refused too. The same serial with the same bytes is a re-delivery
//! (a sidecar restart, a label-only Secret update): allowed.
//!
//! A floor learnt from what was applied lives only as long as the pod that
//! learnt it (`--state-dir` is an emptyDir): a new pod has none, and would
//! apply whatever validly signed serial the Secret holds. The minimum serial
//! (`--pinset-min-serial`, [`Floor::minimum`]) is a floor set by the
//! platform team in the pod's arguments, outside the Secret: every pod
//! starts with it, and whoever writes the Secret cannot lower it.

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
    /// `None` for a state file an operator wrote with a bare serial, and
    /// for a minimum: then an equal serial cannot be compared and is let
    /// through.
    sha256: Option<Sha256>,
    origin: Origin,
}

/// Where a floor comes from: what the refusal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A pinset applied since this start (or, at admission, the object
    /// replaced).
    InForce,
    /// Read from `--state-dir` at start: what this pod applied before this
    /// start. Nothing of it is in force yet, so the refusal must not say
    /// "the serial in force".
    Kept,
    /// `--pinset-min-serial`.
    Minimum,
}

/// Why a validly signed pinset was refused (`reason: rollback`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    #[error(
        "serial {serial} is lower than the serial in force ({in_force}): a rollback is refused"
    )]
    Lower { serial: Serial, in_force: Serial },
    #[error(
        "serial {serial} is lower than the minimum serial ({minimum}, --pinset-min-serial): a rollback is refused"
    )]
    BelowMinimum { serial: Serial, minimum: Serial },
    #[error("serial {serial} is the serial in force but the content differs (sha256 {sha256}, in force {in_force_sha256}): a changed pinset needs a higher serial")]
    SameSerialDifferentContent {
        serial: Serial,
        sha256: Sha256,
        in_force_sha256: Sha256,
    },
    /// Below the floor read from `--state-dir`, before anything is in force.
    #[error(
        "serial {serial} is lower than the serial kept in --state-dir ({kept}, applied by this pod before this start): a rollback is refused"
    )]
    LowerThanKept { serial: Serial, kept: Serial },
    #[error("serial {serial} is the serial kept in --state-dir (applied by this pod before this start) with other content (sha256 {sha256}, kept {kept_sha256}): a changed pinset needs a higher serial")]
    KeptSerialDifferentContent {
        serial: Serial,
        sha256: Sha256,
        kept_sha256: Sha256,
    },
}

/// A serial that is not a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("serial must be a positive integer, not 0")]
pub struct ZeroSerial;

/// A serial given as text (`--pinset-min-serial N`) that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerialTextError {
    #[error("serial must be a positive integer: {0}")]
    NotANumber(#[from] std::num::ParseIntError),
    #[error(transparent)]
    Zero(#[from] ZeroSerial),
}

// === impl Serial ===

impl Serial {
    pub fn new(n: u64) -> Result<Self, ZeroSerial> {
        NonZeroU64::new(n).map(Serial).ok_or(ZeroSerial)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl std::str::FromStr for Serial {
    type Err = SerialTextError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Serial::new(text.trim().parse()?)?)
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
            origin: Origin::InForce,
        }
    }

    /// A floor known only by its serial (a hand-written state file).
    pub fn serial_only(serial: Serial) -> Self {
        Floor {
            serial,
            sha256: None,
            origin: Origin::InForce,
        }
    }

    /// This floor as read from `--state-dir` at start: its refusals name
    /// the state directory, not a pinset in force.
    pub fn kept(self) -> Self {
        Floor {
            origin: Origin::Kept,
            ..self
        }
    }

    /// Whether `other` is the same floor (serial and content), wherever
    /// each came from.
    pub fn same_as(&self, other: &Floor) -> bool {
        self.serial == other.serial && self.sha256 == other.sha256
    }

    /// The minimum serial (`--pinset-min-serial`): a lower serial is a
    /// rollback, the minimum itself with any content is not.
    pub fn minimum(serial: Serial) -> Self {
        Floor {
            serial,
            sha256: None,
            origin: Origin::Minimum,
        }
    }

    /// The floor in effect: `floor` (from what was applied), raised to
    /// `minimum` when that is higher. At an equal serial `floor` wins: it
    /// knows the content in force.
    pub fn at_least(floor: Option<Floor>, minimum: Option<Serial>) -> Option<Floor> {
        match (floor, minimum) {
            (Some(f), Some(m)) if f.serial >= m => Some(f),
            (_, Some(m)) => Some(Floor::minimum(m)),
            (f, None) => f,
        }
    }

    /// Whether this floor is a `--pinset-min-serial`.
    pub fn is_minimum(&self) -> bool {
        self.origin == Origin::Minimum
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
            return Err(match self.origin {
                Origin::InForce => RollbackError::Lower {
                    serial,
                    in_force: self.serial,
                },
                Origin::Kept => RollbackError::LowerThanKept {
                    serial,
                    kept: self.serial,
                },
                Origin::Minimum => RollbackError::BelowMinimum {
                    serial,
                    minimum: self.serial,
                },
            });
        }
        match &self.sha256 {
            Some(held) if serial == self.serial && held != sha256 => Err(match self.origin {
                Origin::Kept => RollbackError::KeptSerialDifferentContent {
                    serial,
                    sha256: *sha256,
                    kept_sha256: *held,
                },
                Origin::InForce | Origin::Minimum => RollbackError::SameSerialDifferentContent {
                    serial,
                    sha256: *sha256,
                    in_force_sha256: *held,
                },
            }),
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
    fn the_minimum_is_a_floor_a_new_pod_starts_with() {
        let a = Sha256::of(b"a");
        let min = Floor::minimum(serial(3));
        assert_eq!(
            min.check(serial(2), &a),
            Err(RollbackError::BelowMinimum {
                serial: serial(2),
                minimum: serial(3)
            })
        );
        assert_eq!(min.check(serial(3), &a), Ok(()));
        assert_eq!(min.check(serial(4), &a), Ok(()));
        assert_eq!(
            min.check(serial(1), &a).unwrap_err().to_string(),
            "serial 1 is lower than the minimum serial (3, --pinset-min-serial): a rollback is refused"
        );
    }

    #[test]
    fn the_floor_in_effect_is_the_higher_one() {
        let a = Sha256::of(b"a");
        assert_eq!(Floor::at_least(None, None), None);
        assert_eq!(
            Floor::at_least(None, Some(serial(3))),
            Some(Floor::minimum(serial(3)))
        );
        let kept = Floor::new(serial(5), a);
        assert_eq!(Floor::at_least(Some(kept), None), Some(kept));
        assert_eq!(Floor::at_least(Some(kept), Some(serial(3))), Some(kept));
        // Equal: the kept floor knows the content, so it still refuses
        // other bytes under the same serial.
        assert_eq!(Floor::at_least(Some(kept), Some(serial(5))), Some(kept));
        let raised = Floor::at_least(Some(kept), Some(serial(9))).expect("a floor");
        assert!(raised.is_minimum() && raised.serial() == serial(9));
        assert!(!kept.is_minimum());
    }

    #[test]
    fn zero_is_not_a_serial() {
        assert_eq!(Serial::new(0), Err(ZeroSerial));
        assert_eq!(serial(1).get(), 1);
        assert_eq!("7".parse::<Serial>(), Ok(serial(7)));
        assert_eq!(
            "0".parse::<Serial>(),
            Err(SerialTextError::Zero(ZeroSerial))
        );
        for bad in ["", "-1", "x", "1.5", "18446744073709551616"] {
            assert!(
                matches!(bad.parse::<Serial>(), Err(SerialTextError::NotANumber(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_floor_kept_in_the_state_dir_is_not_called_in_force() {
        // At start nothing is in force: the floor is what the pod applied
        // before, read from --state-dir, and the refusal says so.
        let kept = Floor::new(serial(7), Sha256::of(b"a")).kept();
        assert_eq!(
            kept.check(serial(6), &Sha256::of(b"b"))
                .unwrap_err()
                .to_string(),
            "serial 6 is lower than the serial kept in --state-dir (7, applied by this pod \
             before this start): a rollback is refused"
        );
        let err = kept.check(serial(7), &Sha256::of(b"b")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "serial 7 is the serial kept in --state-dir (applied by this pod before this \
                 start) with other content (sha256 "
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("in force"), "{err}");
        assert_eq!(kept.check(serial(7), &Sha256::of(b"a")), Ok(()));
        assert!(kept.same_as(&Floor::new(serial(7), Sha256::of(b"a"))));
        assert!(!kept.is_minimum());
        // Raised by the minimum, the minimum speaks.
        let raised = Floor::at_least(Some(kept), Some(serial(9))).expect("a floor");
        assert!(raised.is_minimum());
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
