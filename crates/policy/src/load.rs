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

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::TrustAnchor;
use time::OffsetDateTime;

use super::files::read_bundle;
pub use super::files::{
    open_regular, read_capped, BundleError, Caps, NotRegular, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CRL_ENTRIES, DEFAULT_MAX_FILE_BYTES,
};
pub use super::problem::Problem;
use super::validate::Validator;
use super::wire::FileWire;
use super::Policy;

mod named;
mod shape;
mod source;
mod unknown;

pub use named::named_files;
pub use source::{
    read, read_between, read_signature, signature_path, SignatureError, Source, MAX_SIGNATURE_READ,
    SIGNATURE_SUFFIX,
};

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

/// Reads and validates a pinset file within the default [`Caps`].
pub fn load(path: &Path) -> Result<Policy, Error> {
    load_with(path, Caps::default())
}

/// Reads and validates a pinset file; a file over `caps.pinset` is refused
/// after reading at most one byte more, and so is every file it names
/// over `caps.file`.
pub fn load_with(path: &Path, caps: Caps) -> Result<Policy, Error> {
    load_source(&read(path, caps, false)?, caps)
}

/// Validates a pinset already read ([`read`]). The CA bundles and other
/// files it names beside it are read from the same version directory (the
/// kubelet's `..data` resolved once), even if another is swapped in
/// meanwhile.
pub fn load_source(source: &Source, caps: Caps) -> Result<Policy, Error> {
    let path = &source.path;
    let shown = path.parent().unwrap_or(Path::new("."));
    let read_from = source.real.parent().unwrap_or(shown);
    let now = OffsetDateTime::now_utc();
    parse_in(&source.bytes, shown, read_from, now, caps).map_err(|problems| Error::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Why a pinset's `serial:` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error(
        "no top-level `serial:`; a signed pinset carries `serial: N`, a positive integer \
         raised with every change"
    )]
    Missing,
    #[error("`serial:` must be a positive integer, not 0")]
    Zero,
    #[error("the file does not parse:\n{}", render(.0))]
    Invalid(Vec<Problem>),
}

/// The top-level `serial:` of pinset bytes, read by the loader's own
/// parser (the same UTF-8, shape and YAML steps, the same wire type): the
/// signature check, the admission webhook and the load that applies a
/// file cannot read two different serials from the same bytes.
pub fn serial(bytes: &[u8]) -> Result<u64, SerialError> {
    let (wire, _, unknown) = wire_of(bytes).map_err(SerialError::Invalid)?;
    if !unknown.is_empty() {
        return Err(SerialError::Invalid(unknown));
    }
    match wire.serial {
        None => Err(SerialError::Missing),
        Some(0) => Err(SerialError::Zero),
        Some(n) => Ok(n),
    }
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
    let (wire, text, mut unknown) = wire_of(bytes)?;
    let validated = Validator::new(&text, shown, read_from, now, caps).run(wire, bytes);
    if unknown.is_empty() {
        return validated;
    }
    // Unknown keys were blanked out to validate the rest: still refused,
    // every problem in the order of the file's lines.
    unknown.extend(validated.err().unwrap_or_default());
    unknown.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(unknown)
}

/// The text's wire shape: UTF-8, not empty, within the shape limits, and
/// what the YAML parser makes of it, with the problems of any unknown keys
/// it had to blank out (and the text without them, lines kept) to get it.
fn wire_of(bytes: &[u8]) -> Result<(FileWire, Cow<'_, str>, Vec<Problem>), Vec<Problem>> {
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
    let pruned = unknown::parse(text);
    let mut problems: Vec<Problem> = pruned.unknown.iter().map(yaml_problem).collect();
    match pruned.parsed {
        Ok(wire) => Ok((wire, pruned.text, problems)),
        Err(e) => {
            problems.push(yaml_problem(&e));
            Err(problems)
        }
    }
}

fn yaml_problem(e: &serde_yaml::Error) -> Problem {
    let loc = e.location();
    Problem {
        host: None,
        field: None,
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        message: strip_location(&e.to_string()),
    }
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
