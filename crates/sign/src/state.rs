//! The rollback floor kept across restarts (`--state-dir DIR`, file
//! `DIR/serial`).
//!
//! The file is one line, `<serial> <sha256 hex of the pinset>`; a line with
//! the serial alone is read too (an operator setting a floor by hand). It is
//! written atomically: a temporary file in the same directory, fsync,
//! rename over `serial`, fsync of the directory, so a crash leaves the old
//! floor or the new one, never a torn file.
//!
//! Safe behaviour on a bad file: [`StateDir::load`] returns an error, never
//! "no floor". A floor that cannot be read is unknown, and guessing low
//! would reopen the rollback the file exists to prevent. So the caller keeps
//! the floor it holds in memory (while running) or applies no pinset (at
//! start: not ready, the message names the file) until an operator repairs
//! or deletes the file. Deleting it is the explicit way to reset the floor.
//! An absent file (first start on a fresh emptyDir) is simply no floor.
//!
//! Plain `std::fs`, blocking: callers run it off the async workers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::serial::{Floor, Serial};
use crate::Sha256;

/// The state file's name inside `--state-dir`.
pub const STATE_FILE: &str = "serial";

/// A state file this large is not ours.
const MAX_STATE_FILE: u64 = 1024;

/// Where the floor is kept.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// Why the floor could not be read or kept. Each names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state directory {path} is not a directory")]
    NotDir { path: PathBuf },
    #[error("cannot read the rollback state {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the rollback state {path} is corrupt ({detail}); no pinset is applied until it is repaired or deleted (deleting it makes the next valid signed pinset the floor)")]
    Corrupt { path: PathBuf, detail: &'static str },
    #[error("cannot write the rollback state {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    /// `DIR/serial`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The floor kept by an earlier run; `Ok(None)` when there is none yet.
    /// The directory must exist: a `--state-dir` that points nowhere is a
    /// mistake that would silently lose the floor on every restart.
    pub fn load(&self) -> Result<Option<Floor>, StateError> {
        let meta = fs::metadata(&self.dir).map_err(|source| StateError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(StateError::NotDir {
                path: self.dir.clone(),
            });
        }
        let path = self.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let mut text = Vec::new();
        file.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut text)
            .map_err(|source| StateError::Read {
                path: path.clone(),
                source,
            })?;
        parse(&text)
            .map(Some)
            .map_err(|detail| StateError::Corrupt { path, detail })
    }

    /// Keeps `floor`, replacing the file atomically. Callers pass only a
    /// floor that [`Floor::advance`] produced, so it never goes down.
    pub fn store(&self, floor: &Floor) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self
            .dir
            .join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        let result = write_synced(&tmp, render(floor).as_bytes())
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if result.is_err() {
            // Best effort: a leftover temporary file is harmless (never read).
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|source| StateError::Write { path, source })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn render(floor: &Floor) -> String {
    match floor.sha256() {
        Some(sha) => format!("{} {}\n", floor.serial(), sha.to_hex()),
        None => format!("{}\n", floor.serial()),
    }
}

fn parse(bytes: &[u8]) -> Result<Floor, &'static str> {
    if bytes.len() as u64 > MAX_STATE_FILE {
        return Err("larger than a state file");
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not text")?;
    let mut fields = text.split_ascii_whitespace();
    let serial = fields.next().ok_or("empty")?;
    if !serial.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the serial is not a decimal number");
    }
    let serial: u64 = serial.parse().map_err(|_| "the serial is out of range")?;
    let serial = Serial::new(serial).map_err(|_| "the serial is 0")?;
    let floor = match fields.next() {
        None => Floor::serial_only(serial),
        Some(hex) => Floor::new(
            serial,
            Sha256::from_hex(hex).ok_or("the content hash is not 64 hex digits")?,
        ),
    }
    .kept();
    if fields.next().is_some() {
        return Err("more than `<serial> <sha256>`");
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse_agree() {
        let floor = Floor::new(Serial::new(42).expect("positive"), Sha256::of(b"pins"));
        assert_eq!(parse(render(&floor).as_bytes()), Ok(floor.kept()));
        let bare = Floor::serial_only(Serial::new(9).expect("positive"));
        assert_eq!(render(&bare), "9\n");
        assert_eq!(parse(b"  9 \n"), Ok(bare.kept()));
    }

    #[test]
    fn corrupt_lines_are_named() {
        let hex = Sha256::of(b"x").to_hex();
        for (text, detail) in [
            ("", "empty"),
            ("\n", "empty"),
            ("-3", "the serial is not a decimal number"),
            ("+3", "the serial is not a decimal number"),
            ("0", "the serial is 0"),
            ("99999999999999999999999", "the serial is out of range"),
            ("7 zz", "the content hash is not 64 hex digits"),
            ("7 abc", "the content hash is not 64 hex digits"),
        ] {
            assert_eq!(parse(text.as_bytes()), Err(detail), "{text:?}");
        }
        assert_eq!(
            parse(format!("7 {hex} extra").as_bytes()),
            Err("more than `<serial> <sha256>`")
        );
        assert_eq!(parse(&[0xff, 0xfe]), Err("not text"));
    }
}
