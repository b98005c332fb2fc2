//! Why a reload applied nothing, and the result it is counted under
//! (`pinproxy_config_reloads_total{result}`).

use std::path::PathBuf;

use pinproxy_policy as policy;
use pinproxy_reason::ReloadResult;
use pinproxy_sign::{Refusal, Sha256, StateError};
use pinproxy_tls::ct::ListError;

/// Why a reload left the last good pinset in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file (or a file it names) does not load.
    #[error(transparent)]
    Load(#[from] policy::Error),
    /// With `--pinset-key`: the signature, the serial or the rollback
    /// floor refused the file before it was parsed for use.
    #[error("{path} (sha256 {sha256}): {refusal}")]
    Refused {
        path: PathBuf,
        /// SHA-256 of the refused file's bytes.
        sha256: Sha256,
        #[source]
        refusal: Box<Refusal>,
    },
    /// The rollback floor kept in `--state-dir` cannot be read: no pinset
    /// is applied until it is repaired or deleted.
    #[error(transparent)]
    State(#[from] StateError),
    /// `--ct-log-list` names a file that is not a usable log list.
    #[error(transparent)]
    LogList(#[from] ListError),
}

impl Error {
    /// The result this failure is counted under.
    pub fn result(&self) -> ReloadResult {
        match self {
            Error::Load(_) | Error::State(_) | Error::LogList(_) => ReloadResult::Failure,
            Error::Refused { refusal, .. } => match refusal.as_ref() {
                Refusal::BadSignature(_) => ReloadResult::BadSignature,
                Refusal::Rollback { .. } => ReloadResult::Rollback,
                _ => ReloadResult::Failure,
            },
        }
    }

    /// The key id a log line names: the key that signed the file, or the
    /// keys tried when none verified it.
    pub fn key(&self) -> Option<String> {
        let Error::Refused { refusal, .. } = self else {
            return None;
        };
        if let Some(key) = refusal.key() {
            return Some(key.to_string());
        }
        match refusal.as_ref() {
            Refusal::BadSignature(e) if !e.tried().is_empty() => {
                let tried: Vec<String> = e.tried().iter().map(|k| k.to_string()).collect();
                Some(format!("none of {}", tried.join(", ")))
            }
            _ => None,
        }
    }
}
