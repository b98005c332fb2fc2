//! The one rule a signed pinset passes before it is applied: signature,
//! then serial, then the rollback floor. The reloader and the admission
//! webhook both call [`check`], so they cannot disagree.
//!
//! The serial is read by the caller's closure: the pinset schema (and its
//! YAML parser) belongs to the policy crate, and a second, looser parser
//! here could read a different `serial:` from the same bytes than the
//! loader that applies them (duplicate keys, anchors, tags). One parser,
//! one answer. The closure only ever sees bytes whose signature verified.

use std::error::Error;

use crate::key::KeyId;
use crate::serial::{Floor, RollbackError, Serial, ZeroSerial};
use crate::verify::{KeyRing, Verified, VerifyError};
use crate::Sha256;

/// The error type a serial reader may return.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// A pinset that passed: signed by a trusted key, serial not below the
/// floor. Only [`check`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    verified: Verified,
    serial: Serial,
}

/// Why a pinset was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Missing, malformed or non-verifying signature.
    #[error(transparent)]
    BadSignature(VerifyError),
    /// Signed, but no valid `serial:` (an ordinary load error).
    #[error("signed by {key} but without a valid serial: {source}")]
    Serial {
        key: KeyId,
        #[source]
        source: BoxError,
    },
    /// Signed, serial below the floor or equal with other bytes.
    #[error("signed by {key}, but {source}")]
    Rollback {
        /// The key that signed the replayed (or conflicting) file.
        key: KeyId,
        #[source]
        source: RollbackError,
    },
}

// === impl Accepted ===

impl Accepted {
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// The verifying key's id (`/pins`' `signature.key`).
    pub fn key(&self) -> &KeyId {
        self.verified.key()
    }

    pub fn serial(&self) -> Serial {
        self.serial
    }

    /// SHA-256 of the pinset's bytes.
    pub fn sha256(&self) -> &Sha256 {
        self.verified.sha256()
    }

    /// The floor once this pinset is in force (to keep with
    /// [`crate::StateDir::store`]).
    pub fn floor(&self) -> Floor {
        Floor::new(self.serial, *self.verified.sha256())
    }
}

// === impl Refusal ===

impl Refusal {
    /// The `pinproxy_config_reloads_total{result}` value.
    pub fn result_label(&self) -> &'static str {
        match self {
            Refusal::BadSignature(_) => "bad-signature",
            Refusal::Serial { .. } => "failure",
            Refusal::Rollback { .. } => "rollback",
        }
    }

    /// The key that signed the file, when its signature verified.
    pub fn key(&self) -> Option<&KeyId> {
        match self {
            Refusal::BadSignature(_) => None,
            Refusal::Serial { key, .. } | Refusal::Rollback { key, .. } => Some(key),
        }
    }
}

/// Checks a pinset's bytes and its `.sig` (`None` when the file is absent)
/// against the keys, reads its serial with `serial_of` once the signature
/// verified, and compares it with `floor` (`None`: nothing in force yet).
pub fn check<E>(
    keys: &KeyRing,
    pins: &[u8],
    signature: Option<&[u8]>,
    floor: Option<&Floor>,
    serial_of: impl FnOnce(&[u8]) -> Result<u64, E>,
) -> Result<Accepted, Refusal>
where
    E: Into<BoxError>,
{
    let signature = signature.ok_or(Refusal::BadSignature(VerifyError::Missing))?;
    let verified = keys
        .verify(pins, signature)
        .map_err(Refusal::BadSignature)?;
    let serial = serial_of(pins)
        .map_err(Into::into)
        .and_then(|n| Serial::new(n).map_err(|e: ZeroSerial| e.into()))
        .map_err(|source| Refusal::Serial {
            key: verified.key().clone(),
            source,
        })?;
    if let Some(floor) = floor {
        floor
            .check(serial, verified.sha256())
            .map_err(|source| Refusal::Rollback {
                key: verified.key().clone(),
                source,
            })?;
    }
    Ok(Accepted { verified, serial })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, SigningKey};

    fn serial_line(pins: &[u8]) -> Result<u64, String> {
        let text = std::str::from_utf8(pins).map_err(|e| e.to_string())?;
        text.lines()
            .find_map(|l| l.strip_prefix("serial: "))
            .ok_or_else(|| "no serial".to_owned())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    }

    #[test]
    fn each_refusal_has_its_metric_label() {
        let (key, _) = SigningKey::generate(Algorithm::Ed25519).expect("keygen");
        let keys = KeyRing::new([key.public_key().clone()]).expect("one key");
        let sign = |b: &[u8]| key.sign(b).expect("sign").to_base64();

        let missing = check(&keys, b"serial: 1\n", None, None, serial_line).unwrap_err();
        assert_eq!(missing.result_label(), "bad-signature");

        let v1 = b"serial: 1\n";
        let ok = check(&keys, v1, Some(sign(v1).as_bytes()), None, serial_line).expect("ok");
        assert_eq!(ok.serial().get(), 1);
        assert_eq!(ok.key(), key.public_key().id());

        let zero = b"serial: 0\n";
        let err = check(&keys, zero, Some(sign(zero).as_bytes()), None, serial_line).unwrap_err();
        assert_eq!(err.result_label(), "failure");
        assert!(err.to_string().contains("positive integer"), "{err}");

        let none = b"version: 1\n";
        let err = check(&keys, none, Some(sign(none).as_bytes()), None, serial_line).unwrap_err();
        assert_eq!(err.result_label(), "failure");

        let floor = Floor::new(Serial::new(2).expect("positive"), Sha256::of(b"other"));
        let err = check(
            &keys,
            v1,
            Some(sign(v1).as_bytes()),
            Some(&floor),
            serial_line,
        )
        .unwrap_err();
        assert_eq!(err.result_label(), "rollback");
    }

    #[test]
    fn the_serial_reader_never_sees_unverified_bytes() {
        let (key, _) = SigningKey::generate(Algorithm::EcdsaP256).expect("keygen");
        let keys = KeyRing::new([key.public_key().clone()]).expect("one key");
        let other = SigningKey::generate(Algorithm::EcdsaP256)
            .expect("keygen")
            .0;
        let sig = other.sign(b"serial: 1\n").expect("sign").to_base64();
        let err = check(
            &keys,
            b"serial: 1\n",
            Some(sig.as_bytes()),
            None,
            |_| -> Result<u64, String> { panic!("the serial reader ran on an unverified file") },
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Refusal::BadSignature(VerifyError::NoKeyVerifies { .. })
        ));
    }
}
