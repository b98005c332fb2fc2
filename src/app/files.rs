//! The files `run` is pointed at, checked at start rather than at their
//! first use: a mistake is then one line and exit 1, not a sidecar that
//! starts and fails later. Each check says why in a sentence; the caller
//! names the flag (`app::Error`).

use std::path::Path;

/// Checks `--learn-file` at start rather than at its first save: creates
/// its directory if it can, and refuses when the file cannot be written
/// there (the saver writes `FILE.tmp`, then renames it).
pub(super) fn learn_file(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create its directory {}: {e}", dir.display()))?;
    if path.is_dir() {
        return Err("is a directory".into());
    }
    let mut probe = path.as_os_str().to_owned();
    probe.push(".tmp");
    writable(Path::new(&probe)).map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

/// Checks `--state-dir`: it must be a directory. A missing one is not
/// created (unlike `--learn-file`'s): a mistyped path would put the floor
/// in the container's own layer, lost at every restart, and the sidecar
/// would otherwise start but never apply a pinset. One it cannot write in
/// is only warned about: a floor set by hand in a read-only volume is read
/// at every start, and a failed write is logged per pinset as before.
pub(super) fn state_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err("not a directory".into()),
        Err(e) => return Err(e.to_string()),
    }
    // The floor is written as a temporary file renamed over `serial`.
    let probe = dir.join(format!(".serial.{}.probe", std::process::id()));
    if let Err(e) = writable(&probe) {
        tracing::warn!(
            state_dir = %dir.display(),
            error = %e,
            "--state-dir is not writable: the rollback floor in it is read, never raised"
        );
    }
    Ok(())
}

/// Whether a file can be made at `probe` (made, then removed).
fn writable(probe: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(probe)?;
    std::fs::remove_file(probe)
}
