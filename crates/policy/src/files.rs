//! Reading the files a pinset load touches — the pinset itself, the CA
//! bundles, client certificates, keys and CRLs it names — within the
//! [`Caps`] an operator sets, so no file costs more than it may weigh.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

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

/// Opens `path` for reading if it is a regular file, with its size.
///
/// Every file a pinset load reads can be written by whoever writes the
/// pins Secret or ConfigMap, signing key or not, and a volume holds
/// symlinks: `/dev/zero` never ends, a FIFO blocks the open until a writer
/// comes and then the read until it leaves. The open does not wait
/// (`O_NONBLOCK`), and the type is judged on the opened descriptor, not
/// the path, so no swap between a check and the read can put a device
/// there. Symlinks are followed (the kubelet's whole layout is symlinks);
/// a loop is the open's own error.
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = std::fs::File::from(rustix::fs::open(path, flags, Mode::empty())?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            NotRegular(kind_of(&meta.file_type())),
        ));
    }
    Ok((file, meta.len()))
}

/// A file that is not a regular file: never read.
#[derive(Debug, thiserror::Error)]
#[error("not a regular file ({0}): refused without reading it")]
pub struct NotRegular(&'static str);

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// The file's bytes, or `None` when it is over `max`. Only a regular file
/// is read ([`open_regular`]). Its size is only a hint (a file can grow
/// while it is read): the read itself stops after `max + 1` bytes.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let (file, hint) = open_regular(path)?;
    if hint > max {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
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
