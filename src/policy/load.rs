//! Reading a pinset file. `check`, `run` and the live reloader all call
//! [`load`]: it reads the file (and any CA bundles it names), collects
//! *every* problem with host, field and line before failing, and never
//! yields a half-valid policy.
//!
//! A file must cost no more than it weighs: at most `max_bytes` are ever
//! read ([`DEFAULT_MAX_BYTES`] unless the operator says otherwise), and
//! [`shape`] refuses deep nesting and YAML anchors/aliases in one linear
//! pass *before* the YAML parser sees the text (libyaml's flow-collection
//! handling is quadratic in depth; aliases are "billion laughs").

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use time::OffsetDateTime;

use super::validate::Validator;
use super::wire::FileWire;
use super::Policy;

mod named;
mod shape;

pub use named::named_files;

/// One thing wrong with a pinset, located as precisely as the parser allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub host: Option<String>,
    pub field: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Problem {
    pub(super) fn new(
        host: Option<&str>,
        field: Option<&str>,
        line: Option<usize>,
        message: String,
    ) -> Self {
        Self {
            host: host.map(str::to_string),
            field: field.map(str::to_string),
            line,
            column: None,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(host) = &self.host {
            write!(f, "host {host:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The size limit on a pinset file unless the operator sets another: four
/// times what a Secret or ConfigMap can hold (1 MiB), about 20,000 hosts
/// with two pins each. Parsing costs about 12 bytes of memory per byte of
/// YAML, so this keeps a load well inside a sidecar's memory limit.
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The size limit on every file a pinset names — CA bundles, client
/// certificates and keys, CRLs — unless the operator sets another. Real
/// bundles and certificates weigh kilobytes (Mozilla's whole root store is
/// 220 KB); a CRL at [`DEFAULT_MAX_CRL_ENTRIES`] weighs 4–6 MB as DER,
/// up to 8 MB as PEM. A file is read whole at every reload and hashed.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Revoked certificates a pinset's CRLs may list, all files together.
/// Each costs about 400 bytes while it is loaded and 200 in every snapshot
/// (webpki keeps a map for lookups; a reload holds two snapshots): 100,000
/// is about 40 MB at the peak, inside a sidecar's memory limit, where the
/// 2 million entries of a large public CA's CRL took 1.5 GB.
pub const DEFAULT_MAX_CRL_ENTRIES: usize = 100_000;

/// What one load may read: the pinset file, each file it names, and the
/// CRL entries all its CRLs list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub pinset: u64,
    pub file: u64,
    pub crl_entries: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            pinset: DEFAULT_MAX_BYTES,
            file: DEFAULT_MAX_FILE_BYTES,
            crl_entries: DEFAULT_MAX_CRL_ENTRIES,
        }
    }
}

/// Why a pinset file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is larger than the {limit}-byte limit for a pinset file \
         (a Secret holds at most 1 MiB); refused without parsing it"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Read { .. } | Error::TooLarge { .. } => &[],
            Error::Invalid { problems, .. } => problems,
        }
    }
}

/// Why a PEM CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read CA bundle {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA bundle {path}: certificate {index}: {detail}")]
    Pem {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("CA bundle {path}: certificate {index} is not usable as a trust anchor: {detail}")]
    Anchor {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("CA bundle {path} holds no PEM certificate")]
    Empty { path: PathBuf },
    #[error(
        "CA bundle {path} is larger than the {limit}-byte limit for a file the pinset \
         names (--max-file-bytes); refused without reading it whole"
    )]
    TooLarge { path: PathBuf, limit: u64 },
}

/// Reads and validates a pinset file within the default [`Caps`].
pub fn load(path: &Path) -> Result<Policy, Error> {
    load_with(path, Caps::default())
}

/// Reads and validates a pinset file of at most `max_bytes`, the files it
/// names within the default [`Caps`].
pub fn load_capped(path: &Path, max_bytes: u64) -> Result<Policy, Error> {
    load_with(
        path,
        Caps {
            pinset: max_bytes,
            ..Caps::default()
        },
    )
}

/// Reads and validates a pinset file; a file over `caps.pinset` is refused
/// after reading at most one byte more, and so is every file it names
/// over `caps.file`.
pub fn load_with(path: &Path, caps: Caps) -> Result<Policy, Error> {
    let max_bytes = caps.pinset;
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    // Resolve the kubelet's `..data` symlink once: the pinset and the CA
    // bundles beside it are then read from one version of the Secret, even
    // if the kubelet swaps in another between the reads.
    let real = std::fs::canonicalize(path).map_err(read_err)?;
    let bytes = read_capped(&real, max_bytes).map_err(read_err)?;
    let Some(bytes) = bytes else {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    };
    let shown = path.parent().unwrap_or(Path::new("."));
    let read_from = real.parent().unwrap_or(shown);
    parse_in(&bytes, shown, read_from, OffsetDateTime::now_utc(), caps).map_err(|problems| {
        Error::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    })
}

/// The file's bytes, or `None` when it is over `max`. The size on disk is
/// only a hint (a file can grow while it is read, and pipes report none):
/// the read itself stops after `max + 1` bytes.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let hint = file.metadata()?.len();
    if hint > max {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Validates pinset bytes; relative CA bundle paths resolve against `base`.
pub fn parse(bytes: &[u8], base: &Path, now: OffsetDateTime) -> Result<Policy, Vec<Problem>> {
    parse_in(bytes, base, base, now, Caps::default())
}

/// As [`parse`]; relative bundle paths are *named* under `shown` (what the
/// operator wrote and the watcher watches) and *read* under `read_from`.
fn parse_in(
    bytes: &[u8],
    shown: &Path,
    read_from: &Path,
    now: OffsetDateTime,
    caps: Caps,
) -> Result<Policy, Vec<Problem>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![Problem::new(
            None,
            None,
            None,
            format!("file is not UTF-8: {e}"),
        )]
    })?;
    // A truncated or half-written Secret can be empty or comments only.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(vec![Problem::new(
            None,
            None,
            None,
            "file is empty (no YAML content)".into(),
        )]);
    }
    if let Err(problem) = shape::check(text) {
        return Err(vec![problem]);
    }
    let wire: FileWire = serde_yaml::from_str(text).map_err(|e| {
        let loc = e.location();
        vec![Problem {
            host: None,
            field: None,
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message: strip_location(&e.to_string()),
        }]
    })?;
    Validator::new(text, shown, read_from, now, caps).run(wire, bytes)
}

/// serde_yaml appends " at line N column M"; we print the location first.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// Reads a PEM CA bundle into trust anchors.
pub fn load_bundle(path: &Path) -> Result<Arc<[TrustAnchor<'static>]>, BundleError> {
    read_bundle(path, DEFAULT_MAX_FILE_BYTES).map(|(anchors, _)| anchors)
}

/// Reads a PEM CA bundle of at most `max` bytes; also returns its bytes
/// (part of the source hash).
pub(super) fn read_bundle(
    path: &Path,
    max: u64,
) -> Result<(Arc<[TrustAnchor<'static>]>, Vec<u8>), BundleError> {
    let bytes = read_capped(path, max)
        .map_err(|source| BundleError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| BundleError::TooLarge {
            path: path.to_path_buf(),
            limit: max,
        })?;
    let mut anchors = Vec::new();
    for (index, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| BundleError::Pem {
            path: path.to_path_buf(),
            index,
            detail: super::pemfile::describe(&e),
        })?;
        let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|e| BundleError::Anchor {
            path: path.to_path_buf(),
            index,
            detail: format!("{e:?}"),
        })?;
        anchors.push(anchor.to_owned());
    }
    if anchors.is_empty() {
        return Err(BundleError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok((anchors.into(), bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
