//! The admission rule for a pinset Secret/ConfigMap (`POST /validate`), as
//! a pure function: the webhook decodes the AdmissionReview and hands the
//! `pins.yaml` / `pins.yaml.sig` bytes of the new and the old object here;
//! the message comes back ready for `status.message`, which `kubectl apply`
//! prints.
//!
//! The floor is the old object's serial, but only when the old object's own
//! signature verifies with the configured keys. An unverified serial is
//! whatever whoever wrote the object chose: trusting it would let anyone who
//! once wrote past the webhook (it was down, or not yet installed) pin the
//! floor at 2^64-1 and block every real update. The sidecars keep their own
//! floor either way; this check only stops a bad object before it lands.
//!
//! The old object is no floor for a CREATE: deleting the object and
//! creating it again with an old serial passes that check. The webhook's
//! minimum serial (`--pinset-min-serial`, [`review_with_minimum`]) is a
//! floor for every CREATE and UPDATE, old object or not.

use crate::check::{check, BoxError, Refusal};
use crate::serial::{Floor, Serial};
use crate::verify::{KeyIds, KeyRing, VerifyError};
use crate::Accepted;

/// The data key holding the pinset.
pub const PINS_KEY: &str = "pins.yaml";
/// The data key holding its signature.
pub const SIG_KEY: &str = "pins.yaml.sig";

/// The two data entries of a pinset object, as decoded bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Object<'a> {
    /// `pins.yaml`, if the object has it.
    pub pins: Option<&'a [u8]>,
    /// `pins.yaml.sig`, if the object has it.
    pub signature: Option<&'a [u8]>,
}

/// The webhook's answer.
#[derive(Debug)]
pub enum Admission {
    Allow(Accepted),
    Deny(Denial),
}

/// A refusal in the words `kubectl apply` prints.
#[derive(Debug)]
pub struct Denial {
    reason: &'static str,
    message: String,
}

impl Denial {
    /// `bad-signature`, `rollback` or `failure` (no pinset, no serial),
    /// the same labels the reloader counts.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The `status.message`: starts with `pinproxy: `.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Decides a CREATE (`old` is `None`) or UPDATE of a labelled pinset object.
/// `serial_of` is the policy loader's serial reader; it runs only on bytes
/// whose signature verified.
pub fn review<E>(
    keys: &KeyRing,
    new: &Object<'_>,
    old: Option<&Object<'_>>,
    serial_of: impl Fn(&[u8]) -> Result<u64, E>,
) -> Admission
where
    E: Into<BoxError>,
{
    review_with_minimum(keys, new, old, None, serial_of)
}

/// [`review`], refusing as `rollback` a serial below `minimum` (the
/// webhook's `--pinset-min-serial`) whatever the old object says.
pub fn review_with_minimum<E>(
    keys: &KeyRing,
    new: &Object<'_>,
    old: Option<&Object<'_>>,
    minimum: Option<Serial>,
    serial_of: impl Fn(&[u8]) -> Result<u64, E>,
) -> Admission
where
    E: Into<BoxError>,
{
    let Some(pins) = new.pins else {
        return Admission::Deny(Denial {
            reason: "failure",
            message: format!(
                "pinproxy: the object is labelled as a pinset but has no {PINS_KEY} entry"
            ),
        });
    };
    let floor = Floor::at_least(old.and_then(|old| floor_of(keys, old, &serial_of)), minimum);
    match check(keys, pins, new.signature, floor.as_ref(), &serial_of) {
        Ok(accepted) => Admission::Allow(accepted),
        Err(refusal) => Admission::Deny(Denial {
            reason: refusal.result_label(),
            message: message(keys, &refusal),
        }),
    }
}

/// The old object's serial, when its signature verifies.
fn floor_of<E>(
    keys: &KeyRing,
    old: &Object<'_>,
    serial_of: &impl Fn(&[u8]) -> Result<u64, E>,
) -> Option<Floor>
where
    E: Into<BoxError>,
{
    check(keys, old.pins?, old.signature, None, serial_of)
        .ok()
        .map(|accepted| accepted.floor())
}

fn message(keys: &KeyRing, refusal: &Refusal) -> String {
    let untrusted = format!(
        "pinproxy: {PINS_KEY} is not signed by a trusted key (tried {})",
        KeyIds(&keys.ids())
    );
    match refusal {
        Refusal::BadSignature(VerifyError::Missing) => format!(
            "pinproxy: {PINS_KEY} is not signed: the object has no {SIG_KEY} entry \
             (cosign sign-blob --key cosign.key --tlog-upload=false {PINS_KEY} > {SIG_KEY}, \
             or pinproxy sign --key KEY {PINS_KEY})"
        ),
        Refusal::BadSignature(VerifyError::NoKeyVerifies { shape, .. }) => {
            format!("{untrusted}: signature does not verify{shape}")
        }
        Refusal::BadSignature(VerifyError::Empty) => format!("{untrusted}: {SIG_KEY} is empty"),
        Refusal::BadSignature(VerifyError::TooLarge { len }) => {
            format!("{untrusted}: {SIG_KEY} is {len} bytes, larger than any signature")
        }
        // An object's entry is bytes, never a file: only for completeness.
        Refusal::BadSignature(VerifyError::Unreadable(e)) => {
            format!("{untrusted}: {SIG_KEY} cannot be read: {e}")
        }
        Refusal::BadSignature(VerifyError::NotBase64(e)) => format!(
            "{untrusted}: {SIG_KEY} is not base64 (cosign sign-blob writes one base64 line): {e}"
        ),
        Refusal::Serial { key, source } => {
            format!("pinproxy: {PINS_KEY} (signed by {key}) has no valid serial: {source}")
        }
        Refusal::Rollback { source, .. } => format!("pinproxy: {source}"),
    }
}
