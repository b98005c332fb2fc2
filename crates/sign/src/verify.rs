//! Checking a `.sig` file against the configured keys.
//!
//! The signature file is what `cosign sign-blob --key` writes: base64 of the
//! DER ECDSA signature over SHA-256 of the file, or base64 of the raw 64-byte
//! Ed25519 signature; whitespace around it is ignored. Every configured key
//! is tried (two during a key rotation); the first that verifies is named.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::key::{Algorithm, KeyId, PublicKey};
use crate::Sha256;

/// No signature file is larger: a DER P-256 signature is at most 72 bytes,
/// 96 in base64. The slack allows for whitespace; more is not a signature.
const MAX_SIGNATURE_FILE: usize = 4096;

/// The keys a pinset may be signed with (`--pinset-key`, repeatable).
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<PublicKey>,
}

/// Proof that a file's bytes were signed by one of the keys. Only
/// [`KeyRing::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    key: KeyId,
    algorithm: Algorithm,
    sha256: Sha256,
}

/// Why a signature was refused (`reason: bad-signature`). Messages never
/// carry the signed file's bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error(
        "the signature file is missing: `pinproxy sign --key KEY FILE` writes FILE.sig beside \
         the pinset (or `cosign sign-blob --key cosign.key --tlog-upload=false FILE > FILE.sig`)"
    )]
    Missing,
    #[error("the signature file is empty")]
    Empty,
    /// `len`: the file's size (its metadata's, when it was not read whole).
    #[error(
        "the signature file is {len} bytes, larger than any signature \
         (at most {MAX_SIGNATURE_FILE} bytes)"
    )]
    TooLarge { len: u64 },
    /// There, but not readable as a file: not a regular file (a FIFO, a
    /// device, a directory), a symlink loop, no permission.
    #[error("the signature file cannot be read: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("the signature file is not base64 (cosign sign-blob writes one base64 line): {0}")]
    NotBase64(#[source] base64::DecodeError),
    #[error(
        "signature does not verify with any trusted key (tried {}){shape}",
        KeyIds(tried)
    )]
    NoKeyVerifies { tried: Vec<KeyId>, shape: Shape },
}

/// What a signature that verified with no key looks like, so the message
/// can say "that is an Ed25519 signature and no Ed25519 key is configured".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shape {
    /// Fits an algorithm that some configured key has: a plain mismatch.
    Plausible,
    /// A well-formed signature of an algorithm no configured key has.
    NoKeyOf(Algorithm),
    /// Neither a DER ECDSA signature nor 64 raw bytes.
    Unrecognised { len: usize },
}

/// Why a key ring could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    #[error("no pinset key given")]
    Empty,
}

// === impl KeyRing ===

impl KeyRing {
    /// The keys in the order given; a key given twice is kept once.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, KeyRingError> {
        let mut unique: Vec<PublicKey> = Vec::new();
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        if unique.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(KeyRing { keys: unique })
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id().clone()).collect()
    }

    /// Checks `signature_file` (the `.sig` file's bytes as read) over the
    /// exact bytes of `file` with every key, in order.
    pub fn verify(&self, file: &[u8], signature_file: &[u8]) -> Result<Verified, VerifyError> {
        let signature = decode(signature_file)?;
        for key in &self.keys {
            if key.verifies(file, &signature) {
                return Ok(Verified {
                    key: key.id().clone(),
                    algorithm: key.algorithm(),
                    sha256: Sha256::of(file),
                });
            }
        }
        Err(VerifyError::NoKeyVerifies {
            tried: self.ids(),
            shape: self.shape_of(&signature),
        })
    }

    fn shape_of(&self, signature: &[u8]) -> Shape {
        let guess = if looks_like_der_ecdsa(signature) {
            Algorithm::EcdsaP256
        } else if signature.len() == 64 {
            Algorithm::Ed25519
        } else {
            return Shape::Unrecognised {
                len: signature.len(),
            };
        };
        if self.keys.iter().any(|k| k.algorithm() == guess) {
            Shape::Plausible
        } else {
            Shape::NoKeyOf(guess)
        }
    }
}

/// Trims whitespace and decodes the base64 line.
fn decode(signature_file: &[u8]) -> Result<Vec<u8>, VerifyError> {
    if signature_file.len() > MAX_SIGNATURE_FILE {
        return Err(VerifyError::TooLarge {
            len: signature_file.len() as u64,
        });
    }
    let text = signature_file.trim_ascii();
    if text.is_empty() {
        return Err(VerifyError::Empty);
    }
    STANDARD.decode(text).map_err(VerifyError::NotBase64)
}

/// A DER `SEQUENCE { INTEGER r, INTEGER s }` of P-256 size: tag 0x30, a
/// one-byte length that covers the rest. Only used to word an error; ring
/// does the real parsing.
fn looks_like_der_ecdsa(sig: &[u8]) -> bool {
    sig.len() >= 8 && sig.len() <= 72 && sig[0] == 0x30 && usize::from(sig[1]) == sig.len() - 2
}

// === impl Verified ===

impl Verified {
    /// The key that verified.
    pub fn key(&self) -> &KeyId {
        &self.key
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// SHA-256 of the signed file's bytes.
    pub fn sha256(&self) -> &Sha256 {
        &self.sha256
    }
}

// === impl VerifyError ===

impl VerifyError {
    /// The keys tried, when the signature decoded but verified with none.
    pub fn tried(&self) -> &[KeyId] {
        match self {
            VerifyError::NoKeyVerifies { tried, .. } => tried,
            _ => &[],
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Plausible => Ok(()),
            Shape::NoKeyOf(Algorithm::Ed25519) => {
                f.write_str("; it is a 64-byte Ed25519 signature and no Ed25519 key is configured")
            }
            Shape::NoKeyOf(Algorithm::EcdsaP256) => {
                f.write_str("; it is an ECDSA signature and no P-256 key is configured")
            }
            Shape::Unrecognised { len } => write!(
                f,
                "; its {len} bytes are neither a DER ECDSA signature nor a 64-byte Ed25519 signature"
            ),
        }
    }
}

/// `sha256/a, sha256/b` for messages.
pub(crate) struct KeyIds<'a>(pub(crate) &'a [KeyId]);

impl fmt::Display for KeyIds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    fn ring_of(keys: &[&SigningKey]) -> KeyRing {
        KeyRing::new(keys.iter().map(|k| k.public_key().clone())).expect("non-empty")
    }

    #[test]
    fn whitespace_around_the_signature_is_ignored() {
        let key = SigningKey::generate(Algorithm::EcdsaP256)
            .expect("keygen")
            .0;
        let sig = key.sign(b"serial: 1\n").expect("sign").to_base64();
        let padded = format!("\n  {sig}\r\n\t");
        let ok = ring_of(&[&key])
            .verify(b"serial: 1\n", padded.as_bytes())
            .expect("verifies");
        assert_eq!(ok.key(), key.public_key().id());
        assert_eq!(ok.sha256(), &Sha256::of(b"serial: 1\n"));
    }

    #[test]
    fn broken_signature_files_are_named() {
        let key = SigningKey::generate(Algorithm::Ed25519).expect("keygen").0;
        let ring = ring_of(&[&key]);
        assert!(matches!(ring.verify(b"x", b" \n"), Err(VerifyError::Empty)));
        assert!(matches!(
            ring.verify(b"x", b"not base64!"),
            Err(VerifyError::NotBase64(_))
        ));
        let err = ring.verify(b"x", &[b'A'; MAX_SIGNATURE_FILE + 1]);
        assert!(matches!(err, Err(VerifyError::TooLarge { len: 4097 })));
        assert_eq!(
            err.unwrap_err().to_string(),
            "the signature file is 4097 bytes, larger than any signature (at most 4096 bytes)"
        );
    }

    #[test]
    fn a_signature_of_the_wrong_algorithm_says_so() {
        let ec = SigningKey::generate(Algorithm::EcdsaP256)
            .expect("keygen")
            .0;
        let ed = SigningKey::generate(Algorithm::Ed25519).expect("keygen").0;
        let ed_sig = ed.sign(b"pins").expect("sign").to_base64();
        let err = ring_of(&[&ec])
            .verify(b"pins", ed_sig.as_bytes())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no Ed25519 key is configured"), "{text}");
        assert!(text.contains(&ec.public_key().id().to_string()), "{text}");
        let ec_sig = ec.sign(b"pins").expect("sign").to_base64();
        let err = ring_of(&[&ed])
            .verify(b"pins", ec_sig.as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("no P-256 key"), "{err}");
        let odd = STANDARD.encode([7u8; 10]);
        let err = ring_of(&[&ed]).verify(b"pins", odd.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("its 10 bytes are neither"),
            "{err}"
        );
    }

    #[test]
    fn a_key_given_twice_is_tried_once() {
        let key = SigningKey::generate(Algorithm::Ed25519).expect("keygen").0;
        let ring =
            KeyRing::new([key.public_key().clone(), key.public_key().clone()]).expect("non-empty");
        assert_eq!(ring.keys().len(), 1);
        assert!(matches!(KeyRing::new([]), Err(KeyRingError::Empty)));
    }
}
