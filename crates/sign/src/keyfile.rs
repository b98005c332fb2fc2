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
    /// A key given inline (`run --pinset-key-pem`): `block` counts from 1;
    /// 0 when the text as a whole is refused.
    #[error("{}{source}", InlineBlock(*block))]
    Inline {
        block: usize,
        #[source]
        source: KeyError,
    },
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

/// Reads keys given as text rather than as files (`run --pinset-key-pem`,
/// what `inject --pinset-key-inline` puts in the pod spec): one or more PEM
/// `PUBLIC KEY` blocks, concatenated. Every block must be a public key —
/// a stray certificate or private key is refused, not skipped — and the
/// error says which block.
pub fn parse_keys(text: &[u8]) -> Result<Vec<PublicKey>, KeyFileError> {
    let whole = |source| KeyFileError::Inline { block: 0, source };
    if text.len() > MAX_KEY_FILE {
        return Err(whole(KeyError::TooLarge));
    }
    let blocks = pem::parse_many(text).map_err(|e| whole(KeyError::NotPem(e)))?;
    if blocks.is_empty() {
        return Err(whole(KeyError::NoPem));
    }
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            PublicKey::from_block(b).map_err(|source| KeyFileError::Inline {
                block: i + 1,
                source,
            })
        })
        .collect()
}

/// "PEM block N: " before an inline key's error, nothing for the whole text.
struct InlineBlock(usize);

impl std::fmt::Display for InlineBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, "PEM block {n}: "),
        }
    }
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

    /// `run --pinset-key-pem`: several keys in one text, each block a
    /// public key, errors naming the block and never the key bytes.
    #[test]
    fn inline_keys_are_parsed_block_by_block() {
        let (_, a) = SigningKey::generate(Algorithm::EcdsaP256).expect("keygen");
        let (_, b) = SigningKey::generate(Algorithm::Ed25519).expect("keygen");
        let both = format!("{}\n{}", a.public_pem, b.public_pem);
        let keys = parse_keys(both.as_bytes()).expect("two keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].algorithm(), Algorithm::Ed25519);
        // A stray private key is refused, naming its block.
        let with_private = format!("{}{}", a.public_pem, b.private_pem.as_str());
        let text = parse_keys(with_private.as_bytes()).unwrap_err().to_string();
        assert!(
            text.starts_with("PEM block 2: ") && text.contains("private key"),
            "{text}"
        );
        assert!(!text.contains("BEGIN"), "no key bytes in errors: {text}");
        for bad in [
            "",
            "not pem",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(parse_keys(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        assert!(parse_keys(&vec![b'A'; 1 << 20])
            .unwrap_err()
            .to_string()
            .contains("larger"));
    }
}
