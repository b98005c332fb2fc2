//! The learn file (`--learn-file`): what learn mode knows, kept across
//! restarts. Read at start at most [`MAX_FILE_BYTES`]; written a few hosts
//! at a time ([`Chunks`]), atomically, never more than its cap.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Chunks, Doc, Error, Learned};

/// The largest learn file read (or written): eight times what
/// [`super::Limits::bytes`] lets be learned by default, so a file this
/// proxy wrote always fits, and an edited or foreign one cannot take the
/// memory a parse of it would.
pub const MAX_FILE_BYTES: u64 = 32 << 20;

/// Counters move on every handshake: they alone are saved only every so
/// many save ticks (and at shutdown); a new host or path at the next tick.
const COUNTS_EVERY_TICKS: u32 = 10;

/// Reads a learn file (or a saved `GET /learned` answer); `None` when the
/// file does not exist yet.
pub fn read(path: &Path) -> Result<Option<Doc>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_err(source)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `chunks` to `path` atomically (a temporary file renamed over
/// it): a crash mid-write never leaves half a file, and a document over
/// `cap` bytes is abandoned, the last file kept.
pub fn write(path: &Path, chunks: impl Iterator<Item = Vec<u8>>, cap: u64) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(err)?);
        let mut written = 0u64;
        for chunk in chunks {
            written += chunk.len() as u64;
            if written > cap {
                return Err(Error::TooLarge {
                    path: path.to_path_buf(),
                    limit: cap,
                });
            }
            out.write_all(&chunk).map_err(err)?;
        }
        out.flush().map_err(err)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Saves what was learned to `path`: at the next tick of `every` after a
/// new host or path, every [`COUNTS_EVERY_TICKS`] ticks when only counters
/// moved, until `stop` resolves; then once more.
pub async fn persist(
    learned: Arc<Learned>,
    path: PathBuf,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = 0u32;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = &mut stop => true,
        };
        tick = tick.wrapping_add(1);
        let counts_too = stopping || tick % COUNTS_EVERY_TICKS == 0;
        if learned.take_dirty_or(counts_too) {
            save(&learned, &path).await;
        }
        if stopping {
            return;
        }
    }
}

async fn save(learned: &Arc<Learned>, path: &Path) {
    let (l, p) = (learned.clone(), path.to_path_buf());
    let cap = learned.file_cap();
    match tokio::task::spawn_blocking(move || write(&p, Chunks::new(l, true), cap)).await {
        Ok(Ok(())) => tracing::debug!(path = %path.display(), "saved learned chains"),
        Ok(Err(e)) => tracing::warn!(error = %e, "saving learned chains"),
        Err(e) => tracing::warn!(error = %e, "saving learned chains"),
    }
}
