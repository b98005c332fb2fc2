//! One version of a pinset file and its signature, read together.
//!
//! The kubelet delivers a Secret as a directory of symlinks through
//! `..data`, which it renames over to a new timestamped directory on every
//! update (and then deletes the old one): `pins.yaml` and `pins.yaml.sig`
//! change in one atomic swap. Reading each through its own symlink could
//! pair the old file with the new signature, so both are read from the one
//! directory the pinset path resolved to. A version directory is never
//! written after the swap, so two files read from it are one version,
//! whatever the kubelet does meanwhile — except delete it: if the path
//! resolves elsewhere after the reads, the reads are done again from the
//! new version (a few times at most), rather than calling a signature
//! "missing" because the old directory vanished half-way.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::{open_regular, read_capped, Caps, Error};

/// The signature file is the pinset file's name with this appended
/// (`pins.yaml.sig`), beside it.
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// At most this much of a signature file is read: a real one is under 100
/// bytes, and the verifier refuses anything over 4 KiB by its length.
pub const MAX_SIGNATURE_READ: u64 = 8 * 1024;

/// Reads are done again at most this often when the directory keeps moving.
const ATTEMPTS: usize = 4;

/// A pinset file's bytes and, when asked for, its signature's, from one
/// version of the directory.
#[derive(Debug)]
pub struct Source {
    /// The path as configured (what messages name).
    pub path: PathBuf,
    /// The file the path resolved to (the `..data` version directory's).
    pub real: PathBuf,
    pub bytes: Vec<u8>,
    /// `<file>.sig` beside [`Source::real`]; `None` when there is none (or
    /// it was not asked for); an error when it is there but cannot be
    /// read — a bad signature, not a pinset that cannot be read.
    pub signature: Result<Option<Vec<u8>>, SignatureError>,
}

/// Why the signature file beside a pinset was not read. Whoever can write
/// the pinset can write this too: it refuses the signature, as a missing
/// one does.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Not a regular file (a FIFO, a device, a directory), a symlink loop,
    /// no permission, an I/O error.
    #[error("the signature file cannot be read: {0}")]
    Read(#[source] std::io::Error),
    /// Its size (from the file's metadata) is over [`MAX_SIGNATURE_READ`]:
    /// not read at all.
    #[error("the signature file is {len} bytes, larger than any signature")]
    TooLarge { len: u64 },
}

/// Where the signature of the pinset file at `real` (a resolved path) is.
pub fn signature_path(real: &Path) -> PathBuf {
    let mut name = real.file_name().unwrap_or_default().to_owned();
    name.push(SIGNATURE_SUFFIX);
    real.with_file_name(name)
}

/// Reads the pinset at `path` (at most `caps.pinset` bytes) and, with
/// `signature`, the `.sig` beside it, both from one version.
pub fn read(path: &Path, caps: Caps, signature: bool) -> Result<Source, Error> {
    read_between(path, caps, signature, || {})
}

/// [`read`], calling `between` after the pinset is read and before its
/// signature is: the tests swap the directory there.
#[doc(hidden)]
pub fn read_between(
    path: &Path,
    caps: Caps,
    signature: bool,
    mut between: impl FnMut(),
) -> Result<Source, Error> {
    for _ in 0..ATTEMPTS {
        let (real, result) = read_once(path, caps, signature, &mut between);
        if real.is_none() {
            // The path resolves to nothing: the error says why.
            return result;
        }
        if std::fs::canonicalize(path).ok() == real {
            // Resolved to the same version before and after: one version.
            return result;
        }
    }
    // Never the same version twice running: an error (never a pair that
    // may be mixed, nor a signature called missing because its directory
    // went away); the swaps are events the watcher reloads on.
    Err(Error::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!(
            "the directory changed during each of {ATTEMPTS} reads (a volume update in progress)"
        )),
    })
}

fn read_once(
    path: &Path,
    caps: Caps,
    signature: bool,
    between: &mut impl FnMut(),
) -> (Option<PathBuf>, Result<Source, Error>) {
    let read_err = |path: &Path, source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let real = match std::fs::canonicalize(path) {
        Ok(r) => r,
        Err(e) => return (None, Err(read_err(path, e))),
    };
    let bytes = match read_capped(&real, caps.pinset) {
        Ok(Some(b)) => b,
        Ok(None) => {
            let err = Error::TooLarge {
                path: path.to_path_buf(),
                limit: caps.pinset,
            };
            return (Some(real), Err(err));
        }
        Err(e) => return (Some(real), Err(read_err(path, e))),
    };
    between();
    let signature = if signature {
        read_signature(&signature_path(&real))
    } else {
        Ok(None)
    };
    let source = Source {
        path: path.to_path_buf(),
        real: real.clone(),
        bytes,
        signature,
    };
    (Some(real), Ok(source))
}

/// The signature file's bytes (at most [`MAX_SIGNATURE_READ`]), `None` if
/// it is absent. Only a regular file is read, and only when its size is
/// within the limit: the verifier judges the rest by that size.
pub fn read_signature(path: &Path) -> Result<Option<Vec<u8>>, SignatureError> {
    let (file, len) = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SignatureError::Read(e)),
    };
    if len > MAX_SIGNATURE_READ {
        return Err(SignatureError::TooLarge { len });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIGNATURE_READ)
        .read_to_end(&mut bytes)
        .map_err(SignatureError::Read)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A Secret volume as the kubelet writes it: `..data` → a version
    /// directory, each name a symlink through `..data`.
    struct Volume {
        dir: tempfile::TempDir,
        n: usize,
    }

    impl Volume {
        fn new(pins: &str, sig: &str) -> Self {
            let mut v = Volume {
                dir: tempfile::tempdir().unwrap(),
                n: 0,
            };
            v.swap(pins, sig, true);
            for name in ["pins.yaml", "pins.yaml.sig"] {
                symlink(format!("..data/{name}"), v.dir.path().join(name)).unwrap();
            }
            v
        }

        fn pins(&self) -> PathBuf {
            self.dir.path().join("pins.yaml")
        }

        /// Writes a new version and swaps `..data` to it; the old version
        /// directory is deleted when `delete_old`.
        fn swap(&mut self, pins: &str, sig: &str, delete_old: bool) {
            self.n += 1;
            let root = self.dir.path();
            let old = std::fs::read_link(root.join("..data")).ok();
            let ts = format!("..2026_01_01_00_00_00.{}", self.n);
            std::fs::create_dir(root.join(&ts)).unwrap();
            std::fs::write(root.join(&ts).join("pins.yaml"), pins).unwrap();
            std::fs::write(root.join(&ts).join("pins.yaml.sig"), sig).unwrap();
            symlink(&ts, root.join("..data_tmp")).unwrap();
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
            if let (Some(old), true) = (old, delete_old) {
                std::fs::remove_dir_all(root.join(old)).unwrap();
            }
        }
    }

    #[test]
    fn both_files_come_from_one_version_when_the_kubelet_swaps_between_the_reads() {
        let mut v = Volume::new("pins v1", "sig v1");
        let path = v.pins();
        let mut swaps = 0;
        // The swap deletes the old version (what the kubelet does): the
        // signature read from the old directory fails, the path resolves
        // elsewhere now, and both are read again from the new version.
        let src = read_between(&path, Caps::default(), true, || {
            if swaps == 0 {
                v.swap("pins v2", "sig v2", true);
            }
            swaps += 1;
        })
        .unwrap();
        assert_eq!(swaps, 2, "read twice");
        assert_eq!(src.bytes, b"pins v2");
        assert_eq!(src.signature.unwrap().as_deref(), Some(&b"sig v2"[..]));
    }

    #[test]
    fn a_swap_that_keeps_the_old_directory_still_yields_one_version() {
        let mut v = Volume::new("pins v1", "sig v1");
        let path = v.pins();
        let mut first = true;
        let src = read_between(&path, Caps::default(), true, || {
            if std::mem::take(&mut first) {
                v.swap("pins v2", "sig v2", false);
            }
        })
        .unwrap();
        // The old pair could be read whole, but the path moved on: the
        // newer version is read, never v1's pins with v2's signature.
        assert_eq!(src.bytes, b"pins v2");
        assert_eq!(src.signature.unwrap().as_deref(), Some(&b"sig v2"[..]));
        assert!(src
            .real
            .starts_with(std::fs::canonicalize(v.dir.path()).unwrap()));
    }

    #[test]
    fn a_directory_that_never_settles_is_an_error_never_a_mixed_pair() {
        let mut v = Volume::new("pins v1", "sig v1");
        let path = v.pins();
        let mut calls = 0;
        let src = read_between(&path, Caps::default(), true, || {
            calls += 1;
            v.swap(
                &format!("pins v{}", calls + 1),
                &format!("sig v{}", calls + 1),
                true,
            );
        });
        assert_eq!(calls, ATTEMPTS);
        // Every attempt lost its directory before the signature read: an
        // error, never a mixed pair nor a signature called missing.
        let err = src.unwrap_err().to_string();
        assert!(err.contains("changed during each of 4 reads"), "{err}");
    }

    #[test]
    fn an_absent_signature_is_none_and_a_plain_directory_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.yaml");
        std::fs::write(&path, "x").unwrap();
        let src = read(&path, Caps::default(), true).unwrap();
        assert_eq!(src.signature.unwrap(), None);
        std::fs::write(dir.path().join("pins.yaml.sig"), "s").unwrap();
        let src = read(&path, Caps::default(), true).unwrap();
        assert_eq!(src.signature.unwrap().as_deref(), Some(&b"s"[..]));
        let src = read(&path, Caps::default(), false).unwrap();
        assert_eq!(src.signature.unwrap(), None, "not asked for");
    }

    #[test]
    fn a_huge_signature_file_is_refused_by_its_size_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.yaml");
        std::fs::write(&path, "x").unwrap();
        std::fs::write(dir.path().join("pins.yaml.sig"), vec![b'A'; 1 << 20]).unwrap();
        let src = read(&path, Caps::default(), true).unwrap();
        let err = src.signature.unwrap_err();
        assert!(
            matches!(err, SignatureError::TooLarge { len } if len == 1 << 20),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the signature file is 1048576 bytes, larger than any signature"
        );
        // Within the read limit it is read whole: the verifier judges it.
        let just = usize::try_from(MAX_SIGNATURE_READ).unwrap();
        std::fs::write(dir.path().join("pins.yaml.sig"), vec![b'A'; just]).unwrap();
        let src = read(&path, Caps::default(), true).unwrap();
        assert_eq!(src.signature.unwrap().unwrap().len(), just);
    }

    /// Whoever writes the Secret can make `.sig` anything a symlink can
    /// point at. None of these is read, none blocks, and each is the
    /// signature refused — the pinset itself was read.
    #[test]
    fn a_signature_that_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.yaml");
        std::fs::write(&path, "x").unwrap();
        let sig = dir.path().join("pins.yaml.sig");
        let fifo = std::process::Command::new("mkfifo")
            .arg(dir.path().join("fifo"))
            .status()
            .unwrap();
        assert!(fifo.success());
        std::fs::create_dir(dir.path().join("a-dir")).unwrap();
        for (target, why) in [
            ("/dev/zero", "a character device"),
            ("fifo", "a FIFO"),
            ("a-dir", "a directory"),
            ("pins.yaml.sig", "symbolic links"),
        ] {
            let _ = std::fs::remove_file(&sig);
            symlink(target, &sig).unwrap();
            let src = read(&path, Caps::default(), true).unwrap();
            assert_eq!(src.bytes, b"x");
            let err = src.signature.unwrap_err();
            assert!(matches!(err, SignatureError::Read(_)), "{target}: {err:?}");
            assert!(err.to_string().contains(why), "{target}: {err}");
        }
    }

    #[test]
    fn a_pinset_that_is_not_a_regular_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.yaml");
        let fifo = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(fifo.success());
        let err = read(&path, Caps::default(), true).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        std::fs::remove_file(&path).unwrap();
        symlink("/dev/zero", &path).unwrap();
        let err = read(&path, Caps::default(), false).unwrap_err().to_string();
        assert!(
            err.contains("not a regular file (a character device)"),
            "{err}"
        );
    }
}
