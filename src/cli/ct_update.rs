//! `pinproxy ct-update --from FILE [--out FILE]`: checks a Certificate
//! Transparency log list (Chrome's v3 `log_list.json` format) the way `run
//! --ct-log-list` will read it — every problem, each on its own line, exit
//! 1 — says what changes against the list it replaces, and with `--out`
//! installs it atomically (written beside the target, then renamed, so a
//! watching pinproxy never reads half a list). A list older than the one
//! at `--out` (or than now, if that list claims to be from the future) is
//! refused: that would be a rollback. A list dated more than a day ahead
//! of the clock is refused as `run` refuses it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::Error;
use crate::policy::load::{read_capped, DEFAULT_MAX_FILE_BYTES};
use crate::tls::ct::{ListSource, LogListError, LogListInForce, StateKind};

#[derive(Args, Debug)]
pub struct CtUpdateArgs {
    /// The new log list (e.g. a download of
    /// https://www.gstatic.com/ct/log_list/v3/log_list.json, or your own).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Install it here (the file `run --ct-log-list` names), atomically.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Largest list accepted, bytes (as `run --max-file-bytes`).
    #[arg(long, env = "PINPROXY_MAX_FILE_BYTES", default_value_t = DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
}

pub fn ct_update(args: &CtUpdateArgs) -> Result<(), Error> {
    let now = rustls::pki_types::UnixTime::now();
    let shown = args.from.display();
    let bytes = read_capped(&args.from, args.max_file_bytes)
        .map_err(|e| Error::failed(format!("{shown}: {e}")))?
        .ok_or_else(|| {
            Error::failed(format!(
                "{shown}: larger than {} bytes (--max-file-bytes); refused unread",
                args.max_file_bytes
            ))
        })?;
    let new = match LogListInForce::from_bytes_at(&bytes, ListSource::File(args.from.clone()), now)
    {
        Ok(l) => l,
        Err(e) => {
            for problem in problems(&e) {
                outln!("{shown}: error: {problem}");
            }
            return Err(Error::Reported);
        }
    };
    outln!("{shown}: ok: {}", new.describe(now));
    outln!("{shown}: {}", census(&new));
    let (current, at_out) = current(args.out.as_deref(), args.max_file_bytes);
    outln!(
        "{shown}: against the list it replaces ({}, {}): {}",
        current.label(),
        current.source(),
        changes(&current, &new)
    );
    if new.is_stale(now) {
        outln!(
            "{shown}: warning: {} days old: with this list ct: enforce acts as ct: report \
             (Chrome stops enforcing at 70 days); fetch a newer one",
            new.age_days(now)
        );
    }
    let Some(out) = &args.out else {
        return Ok(());
    };
    // Against the clock too: a list installed from the future (before
    // such lists were refused, or within the day's margin) must not
    // block the real lists that follow it.
    if at_out && new.timestamp() < current.timestamp().min(now) {
        outln!(
            "{shown}: error: it is older than the list at {} ({} < {}): refusing to roll \
             back; remove {} first to install an older list on purpose",
            out.display(),
            new.timestamp_rfc3339(),
            current.timestamp_rfc3339(),
            out.display()
        );
        return Err(Error::Reported);
    }
    install(out, &bytes).map_err(Error::failed)?;
    outln!(
        "{}: installed; a pinproxy run with --ct-log-list {} reloads it",
        out.display(),
        out.display()
    );
    Ok(())
}

/// Every problem a list has, one line each.
fn problems(e: &LogListError) -> Vec<String> {
    match e {
        LogListError::Logs(issues) => issues.iter().map(ToString::to_string).collect(),
        other => vec![other.to_string()],
    }
}

/// The list at `out` if there is a valid one (`true`), else the built-in.
fn current(out: Option<&Path>, max: u64) -> (Arc<LogListInForce>, bool) {
    match out.filter(|p| p.exists()) {
        Some(p) => match LogListInForce::read(p, max) {
            Ok(l) => (Arc::new(l), true),
            Err(e) => {
                outln!("{}: warning: the list there is replaced: {e}", p.display());
                (LogListInForce::builtin(), false)
            }
        },
        None => (LogListInForce::builtin(), false),
    }
}

/// "21 operators, 181 logs (…by state)".
fn census(l: &LogListInForce) -> String {
    let kinds = [
        StateKind::Usable,
        StateKind::Qualified,
        StateKind::ReadOnly,
        StateKind::Retired,
        StateKind::Pending,
        StateKind::Rejected,
    ];
    let mut parts: Vec<String> = kinds
        .iter()
        .map(|k| {
            let n = l
                .list()
                .logs()
                .filter(|log| log.state.is_some_and(|s| s.kind == *k))
                .count();
            (k, n)
        })
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let stateless = l.list().logs().filter(|log| log.state.is_none()).count();
    if stateless > 0 {
        parts.push(format!("{stateless} without a state"));
    }
    format!(
        "{} operators, {} logs ({})",
        l.list().operators().len(),
        l.list().logs().count(),
        parts.join(", ")
    )
}

/// Logs added, removed and changed state between `old` and `new`.
fn changes(old: &LogListInForce, new: &LogListInForce) -> String {
    let added = new
        .list()
        .logs()
        .filter(|l| old.list().log(&l.id).is_none())
        .count();
    let removed = old
        .list()
        .logs()
        .filter(|l| new.list().log(&l.id).is_none())
        .count();
    let changed = new
        .list()
        .logs()
        .filter(|l| {
            old.list()
                .log(&l.id)
                .is_some_and(|o| o.state.map(|s| s.kind) != l.state.map(|s| s.kind))
        })
        .count();
    format!("{added} logs added, {removed} removed, {changed} changed state")
}

/// Writes `bytes` to `out` by way of a temporary file in its directory,
/// synced, then renamed over it.
fn install(out: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let (shown, dir_shown) = (tmp.display(), dir.display());
    let mut f = create_new(&tmp).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("cannot write {shown}: the directory {dir_shown} does not exist ({e})")
        }
        _ => format!("cannot write {shown} in {dir_shown}: {e}"),
    })?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    let renamed = written
        .map_err(|e| format!("cannot write {shown}: {e}"))
        .and_then(|()| {
            std::fs::rename(&tmp, out)
                .map_err(|e| format!("cannot rename {shown} to {}: {e}", out.display()))
        });
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("installed, but cannot sync the directory {dir_shown}: {e}"))
}

/// A new file at `tmp`, never one reached through a symlink: a leftover
/// `tmp` (an interrupted run's, or a link someone planted there to have
/// the list written over another file) is removed — the link itself, not
/// what it points to — and the file created afresh.
fn create_new(tmp: &Path) -> std::io::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(tmp)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp)?;
            open()
        }
        other => other,
    }
}
