//! Reading public key files (`run --pinset-key`, `webhook --pinset-key`,
//! `check --key`) into a [`KeyRing`]. Plain `std::fs`: called at start.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::key::{KeyError, PublicKey, MAX_KEY_FILE};
use crate::signer::{SignError, SigningKey};
use crate::verify::KeyRing;

/// Why a key file could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("public key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("public key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("no public key given")]
    Empty,
    #[error("private key {path}: {source}")]
    Private {
        path: PathBuf,
        #[source]
        source: SignError,
    },
}

/// Reads one PEM public key file (at most a little over the largest key
/// file there is).
pub fn read_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let read = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    PublicKey::from_pem(&bytes).map_err(|source| KeyFileError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an unencrypted PEM private key file (`pinproxy sign --key`); the
/// bytes read are wiped from memory once parsed.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let read = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    SigningKey::from_pem(&bytes).map_err(|source| KeyFileError::Private {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every key file, in order, into a ring (a key given twice is
/// kept once).
pub fn read_keys(paths: &[PathBuf]) -> Result<KeyRing, KeyFileError> {
    let keys = paths
        .iter()
        .map(|p| read_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    KeyRing::new(keys).map_err(|_| KeyFileError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, SigningKey};

    #[test]
    fn files_are_read_and_named_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, pem) = SigningKey::generate(Algorithm::EcdsaP256).expect("keygen");
        let good = dir.path().join("cosign.pub");
        std::fs::write(&good, &pem.public_pem).expect("write");
        let ring = read_keys(&[good.clone(), good.clone()]).expect("one key twice");
        assert_eq!(ring.keys().len(), 1);

        let private = dir.path().join("cosign.key");
        std::fs::write(&private, pem.private_pem.as_bytes()).expect("write");
        let err = read_keys(&[good.clone(), private.clone()]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cosign.key") && text.contains("private key"),
            "{text}"
        );
        assert!(!text.contains("BEGIN"), "no key bytes in errors: {text}");

        let missing = dir.path().join("absent.pub");
        assert!(read_keys(&[missing])
            .unwrap_err()
            .to_string()
            .contains("absent.pub"));
        assert!(matches!(read_keys(&[]), Err(KeyFileError::Empty)));

        let huge = dir.path().join("huge.pub");
        std::fs::write(&huge, vec![b'A'; 1 << 20]).expect("write");
        assert!(read_keys(&[huge])
            .unwrap_err()
            .to_string()
            .contains("larger"));
    }
}
