//! The CT log list in force: the one built into the binary, or one an
//! operator mounts (`run --ct-log-list FILE`), with where it came from and
//! a digest a reload compares.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls_pki_types::UnixTime;

use pinproxy_ct::{LogList, LogListError, BUILTIN_TIMESTAMP, BUILTIN_VERSION};
use pinproxy_policy::load::read_capped;

/// Where the list in force came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListSource {
    /// Built into the binary (Chrome's list, version [`BUILTIN_VERSION`]).
    Builtin,
    /// Read from this file.
    File(PathBuf),
}

/// Why a log list file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read the CT log list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CT log list {path} is larger than the {limit}-byte limit (--max-file-bytes); refused without parsing it")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("the CT log list {path} is not usable: {source}")]
    Invalid { path: PathBuf, source: LogListError },
}

/// A validated log list and where it came from.
#[derive(Debug)]
pub struct LogListInForce {
    list: Arc<LogList>,
    source: ListSource,
    /// SHA-256 of the file's bytes (of the built-in list's version for
    /// the built-in one): what a reload compares.
    sha256: [u8; 32],
}

// === impl LogListInForce ===

impl LogListInForce {
    /// The list built into the binary.
    pub fn builtin() -> Arc<Self> {
        static BUILTIN: OnceLock<Arc<LogListInForce>> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                let marker = format!("built-in log list {BUILTIN_VERSION} {BUILTIN_TIMESTAMP}");
                Arc::new(Self {
                    list: Arc::new(LogList::builtin().clone()),
                    source: ListSource::Builtin,
                    sha256: sha256(marker.as_bytes()),
                })
            })
            .clone()
    }

    /// Reads and validates a v3 log list file of at most `max` bytes, and
    /// refuses one dated more than a day ahead of the clock
    /// ([`Self::from_bytes_at`]).
    pub fn read(path: &Path, max: u64) -> Result<Self, ListError> {
        Self::read_at(path, max, UnixTime::now())
    }

    /// [`Self::read`] at `now`.
    pub fn read_at(path: &Path, max: u64, now: UnixTime) -> Result<Self, ListError> {
        let bytes = read_capped(path, max)
            .map_err(|source| ListError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .ok_or_else(|| ListError::TooLarge {
                path: path.to_path_buf(),
                limit: max,
            })?;
        Self::from_bytes_at(&bytes, ListSource::File(path.to_path_buf()), now).map_err(|source| {
            ListError::Invalid {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Validates a v3 log list's bytes.
    pub fn from_bytes(bytes: &[u8], source: ListSource) -> Result<Self, LogListError> {
        let list = LogList::from_json(bytes)?;
        Ok(Self {
            list: Arc::new(list),
            source,
            sha256: sha256(bytes),
        })
    }

    /// Validates a v3 log list's bytes for use at `now`: also refuses a
    /// list dated more than [`pinproxy_ct::loglist::MAX_FUTURE`] ahead of
    /// `now` (it would never turn stale, and would block every newer list
    /// as a rollback).
    pub fn from_bytes_at(
        bytes: &[u8],
        source: ListSource,
        now: UnixTime,
    ) -> Result<Self, LogListError> {
        let list = Self::from_bytes(bytes, source)?;
        list.list.check_not_future(now)?;
        Ok(list)
    }

    pub fn list(&self) -> &LogList {
        &self.list
    }

    pub fn source(&self) -> &ListSource {
        &self.source
    }

    /// The file it was read from (`None`: built in).
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            ListSource::Builtin => None,
            ListSource::File(p) => Some(p),
        }
    }

    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The list's `version` field, if it has one.
    pub fn version(&self) -> Option<&str> {
        self.list.version()
    }

    /// `log_list_timestamp`, as Unix seconds.
    pub fn timestamp(&self) -> UnixTime {
        self.list.timestamp()
    }

    /// `log_list_timestamp` as RFC 3339.
    pub fn timestamp_rfc3339(&self) -> String {
        pinproxy_ct::Instant::from_unix(self.list.timestamp()).to_string()
    }

    /// Chrome's rule: a list 70 days old or older is not enforced.
    pub fn is_stale(&self, now: UnixTime) -> bool {
        self.list.is_stale(now)
    }

    pub fn age_days(&self, now: UnixTime) -> u64 {
        self.list.age_days(now)
    }

    /// One line for logs, `pinproxy version` and `check`: version, date,
    /// source, age and whether `enforce` is in force.
    pub fn describe(&self, now: UnixTime) -> String {
        let stale = if self.is_stale(now) {
            ", stale (70 days or older): ct: enforce acts as ct: report until a newer list is mounted"
        } else {
            ""
        };
        let days = self.age_days(now);
        let unit = if days == 1 { "day" } else { "days" };
        format!(
            "{} ({}; {days} {unit} old{stale})",
            self.label(),
            self.source
        )
    }

    /// `version 53.34 of 2025-05-05T12:54:12Z`.
    pub fn label(&self) -> String {
        format!(
            "{} of {}",
            self.version()
                .map_or_else(|| "v3 log list".to_string(), |v| format!("version {v}")),
            self.timestamp_rfc3339(),
        )
    }
}

impl fmt::Display for ListSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListSource::Builtin => f.write_str("built in"),
            ListSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}
