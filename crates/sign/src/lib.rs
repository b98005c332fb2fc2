//! Signed, rollback-proof pinsets: the pure part.
//!
//! With `--pinset-key`, a pinset is applied only when `pins.yaml.sig` beside
//! it verifies over the file's exact bytes, and only when its `serial:` does
//! not go back. This crate is that rule and the key handling around it, free
//! of sockets, async and YAML; the reloader, the admission webhook and the
//! CLI call it.
//!
//! - [`key`]: PEM public keys (ECDSA P-256 as in `cosign.pub`, Ed25519) and
//!   their ids, `sha256/<base64 SHA-256 of the SPKI>`.
//! - [`read_keys`]: key files (`--pinset-key`) into a [`KeyRing`];
//!   [`parse_keys`]: keys given inline (`--pinset-key-pem`).
//! - [`verify`]: a [`KeyRing`] checks a `.sig` (cosign `sign-blob --key`
//!   format) and says which key verified ([`Verified`]).
//! - [`signer`]: [`SigningKey`] signs (`pinproxy sign`) and generates key
//!   pairs (`pinproxy keygen`), writing what cosign writes.
//! - [`serial`]: the rollback [`Floor`]: serials only go up, and never
//!   below a minimum set outside the Secret (`--pinset-min-serial`).
//! - [`state`]: the floor kept in `--state-dir` across restarts.
//! - [`check()`]: signature → serial → floor, shared by reloader and webhook;
//!   yields an [`Accepted`] or a [`Refusal`] with its metric label.
//! - [`admission`]: the webhook's decision and the message `kubectl` prints.
//!
//! Data flow: key files → [`PublicKey::from_pem`] → [`KeyRing`]; on each
//! reload, `(pins, sig, floor)` → [`check()`] → `Accepted::floor` →
//! [`StateDir::store`].

#![forbid(unsafe_code)]

use std::fmt;

pub mod admission;
mod check;
pub mod key;
mod keyfile;
pub mod serial;
pub mod signer;
pub mod state;
pub mod verify;

pub use check::{check, Accepted, BoxError, Refusal};
pub use key::{Algorithm, KeyError, KeyId, PublicKey};
pub use keyfile::{parse_keys, read_key, read_keys, read_signing_key, KeyFileError};
pub use serial::{Floor, RollbackError, Serial, SerialTextError, ZeroSerial};
pub use signer::{GeneratedPem, SignError, Signature, SigningKey};
pub use state::{StateDir, StateError};
pub use verify::{KeyRing, KeyRingError, Verified, VerifyError};

/// SHA-256 of a file's bytes; shown as lowercase hex (`/pins`' `sha256`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    pub fn of(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Sha256(out)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// 64 hex digits, either case.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// PEM with LF line endings (the `pem` crate defaults to CRLF), the form
/// OpenSSL and cosign write.
pub(crate) fn pem_lf(label: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_round_trips() {
        let d = Sha256::of(b"");
        assert_eq!(
            d.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Sha256::from_hex(&d.to_hex().to_uppercase()), Some(d));
        assert_eq!(Sha256::from_hex("e3b0"), None);
        assert_eq!(Sha256::from_hex(&"g".repeat(64)), None);
        assert_eq!(Sha256::from_hex(&"é".repeat(32)), None);
    }
}
