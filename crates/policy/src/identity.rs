//! Workload identity and revocation for one entry (docs/reference.md, "Host
//! fields"):
//!
//! - [`ClientCert`] (`client_cert:`): the certificate and key pinproxy
//!   presents on its upstream TLS connections to the entry's hosts (mTLS);
//! - [`Name`] (`names:`): the SANs — DNS names or URIs such as SPIFFE IDs —
//!   the server's certificate must carry *instead of* the host name;
//! - [`Crls`] (`crls:`): certificate revocation lists checked on the
//!   validated path.
//!
//! The files are read at load, as CA bundles are: their bytes join the
//! pinset's source hash, so a rotated certificate or a new CRL is a new
//! snapshot even when the pinset text did not change, and a broken or
//! mismatched pair is a load error that keeps the last good snapshot.
//! Nothing here ever formats key material: errors name files, never bytes.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use webpki::{BorrowedCertRevocationList, CertRevocationList, OwnedCertRevocationList};

use super::host::Host;
use super::pemfile;
use super::pin::Pin;

pub use names::{normalize_uri, Name, NameError};

/// What to do with a CRL whose `nextUpdate` has passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrlPolicy {
    /// Keep checking against it: what it revokes stays revoked; what was
    /// revoked after it was issued cannot be known (and is not, either way).
    #[default]
    UseExpired,
    /// Refuse every chain whose status depends on it, until a fresh CRL is
    /// mounted.
    RefuseExpired,
}

impl CrlPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CrlPolicy::UseExpired => "use-expired",
            CrlPolicy::RefuseExpired => "refuse-expired",
        }
    }
}

/// A client certificate to present upstream, read from `cert` and `key`.
pub struct ClientCert {
    /// As the pinset names them (the watcher watches their directories).
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The chain (leaf first) and the signing key, as rustls presents them.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's subject, pin, validity and URI SANs (a SPIFFE ID), for
    /// `/pins`, `check` and the expiry metric.
    pub subject: String,
    pub pin: Pin,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub uris: Vec<String>,
    /// Whether the leaf's extended key usage allows client authentication
    /// (no EKU extension at all allows everything).
    pub client_auth: bool,
}

impl ClientCert {
    /// Whether two client certificates present the same identity (the
    /// same chain; a new key always comes with a new certificate).
    pub(crate) fn same_identity(&self, other: &ClientCert) -> bool {
        self.certified.cert == other.certified.cert
    }
}

impl fmt::Debug for ClientCert {
    /// Paths and the leaf's public facts only: never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("subject", &self.subject)
            .field("pin", &self.pin.to_string())
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// One CRL file as loaded.
#[derive(Clone, Debug)]
pub struct CrlFile {
    /// As the pinset names it.
    pub path: PathBuf,
    /// The issuer of each CRL in the file, and their nextUpdate.
    pub issuers: Vec<String>,
    /// The earliest nextUpdate of the CRLs in the file.
    pub next_update: OffsetDateTime,
    /// Certificates revoked, all CRLs of the file together.
    pub revoked: usize,
}

/// An entry's `crls:`: every CRL of every file, ready for webpki.
pub struct Crls {
    pub files: Vec<Arc<CrlFile>>,
    pub lists: Arc<[CertRevocationList<'static>]>,
    pub policy: CrlPolicy,
    /// SHA-256 over each CRL's issuer and revoked serial numbers: a CRL
    /// re-issued with nothing newly revoked changes nothing enforced.
    revoked_digest: [u8; 32],
}

impl Crls {
    pub(super) fn new(files: Vec<(Arc<CrlFile>, Arc<LoadedCrl>)>, policy: CrlPolicy) -> Self {
        let mut lists = Vec::new();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut out = Vec::with_capacity(files.len());
        for (file, loaded) in files {
            lists.extend(loaded.lists.iter().cloned().map(CertRevocationList::Owned));
            ctx.update(&loaded.revoked_digest);
            out.push(file);
        }
        let mut revoked_digest = [0u8; 32];
        revoked_digest.copy_from_slice(ctx.finish().as_ref());
        Self {
            files: out,
            lists: lists.into(),
            policy,
            revoked_digest,
        }
    }

    /// The earliest nextUpdate of all the entry's CRLs.
    pub fn next_update(&self) -> Option<OffsetDateTime> {
        self.files.iter().map(|f| f.next_update).min()
    }

    /// Whether two CRL sets refuse the same certificates the same way.
    pub(crate) fn same_revocations(&self, other: &Crls) -> bool {
        self.policy == other.policy && self.revoked_digest == other.revoked_digest
    }
}

impl fmt::Debug for Crls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crls")
            .field("files", &self.files)
            .field("policy", &self.policy)
            .finish()
    }
}

/// The CRLs of one file, parsed once however many entries name it.
pub(super) struct LoadedCrl {
    pub(super) file: Arc<CrlFile>,
    lists: Vec<OwnedCertRevocationList>,
    revoked_digest: [u8; 32],
}

/// Why a `client_cert:` or `crls:` file could not be used. Names files,
/// never their contents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error(
        "the key in {key} does not match the certificate in {cert} \
         (a certificate and key from different rotations?)"
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{path} is larger than the {limit}-byte limit for a file the pinset names \
         (--max-file-bytes); refused without reading it whole"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{path}: the pinset's CRLs list more than {total} revoked certificates together \
         (--max-crl-entries); refused: each costs memory in every snapshot"
    )]
    TooManyEntries { path: PathBuf, total: usize },
}

/// How many more CRL entries a load may read, of how many in all.
#[derive(Clone, Copy, Debug)]
pub(super) struct EntryBudget {
    pub(super) left: usize,
    pub(super) total: usize,
}

/// A file as named in the pinset (`shown`) and where it is read (`read`):
/// beside the pinset, in the same version of its Secret volume.
#[derive(Clone, Debug)]
pub(super) struct FilePath {
    pub(super) shown: PathBuf,
    pub(super) read: PathBuf,
}

/// A client certificate as read, with the files' bytes (for the source
/// hash, never kept) and what is worth a warning.
pub(super) struct ReadClientCert {
    pub(super) cert: ClientCert,
    pub(super) bytes: [Vec<u8>; 2],
    pub(super) warnings: Vec<String>,
}

/// Reads `cert` and `key` as one pair.
pub(super) fn read_client_cert(
    cert: &FilePath,
    key: &FilePath,
    now: OffsetDateTime,
    max: u64,
) -> Result<ReadClientCert, FileError> {
    let [cert_bytes, key_bytes] = read_pair(&cert.read, &key.read, max).map_err(|(i, e)| {
        let path = if i == 0 { &cert.shown } else { &key.shown }.clone();
        match e {
            PairError::Io(source) => FileError::Read { path, source },
            PairError::TooLarge => FileError::TooLarge { path, limit: max },
        }
    })?;
    let invalid = |path: &Path, detail: String| FileError::Invalid {
        path: path.to_path_buf(),
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(
                &cert.shown,
                format!("not a PEM certificate chain: {}", pemfile::describe(&e)),
            )
        })?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(
            &cert.shown,
            "holds no PEM CERTIFICATE block".into(),
        ));
    };
    let leaf = leaf_facts(leaf.as_ref()).map_err(|e| invalid(&cert.shown, e))?;
    let key_der = private_key(&key_bytes).map_err(|e| invalid(&key.shown, e))?;
    // What *ring*'s provider does with a key (`KeyProvider::load_private_key`:
    // wiped when dropped); this room does not see the TLS room's `provider()`.
    let key_der = zeroize::Zeroizing::new(key_der);
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| {
        invalid(
            &key.shown,
            format!("unusable private key (RSA or ECDSA P-256/P-384 expected): {e}"),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(FileError::Mismatch {
            cert: cert.shown.clone(),
            key: key.shown.clone(),
        });
    }
    let mut warnings = Vec::new();
    if leaf.not_after <= now {
        warnings.push(format!(
            "{}: the client certificate expired on {} — servers will refuse it; renew it",
            cert.shown.display(),
            leaf.not_after.date()
        ));
    } else if leaf.not_before > now {
        warnings.push(format!(
            "{}: the client certificate is not valid before {}",
            cert.shown.display(),
            leaf.not_before
        ));
    }
    if !leaf.client_auth {
        warnings.push(format!(
            "{}: the certificate's extended key usage does not include clientAuth; \
             servers will refuse it as a client certificate",
            cert.shown.display()
        ));
    }
    Ok(ReadClientCert {
        cert: ClientCert {
            cert_path: cert.shown.clone(),
            key_path: key.shown.clone(),
            certified: Arc::new(certified),
            subject: leaf.subject,
            pin: leaf.pin,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            uris: leaf.uris,
            client_auth: leaf.client_auth,
        },
        bytes: [cert_bytes, key_bytes],
        warnings,
    })
}

/// Reads two files from one version of their directories. A kubelet swap
/// of `..data` between the two reads would pair a certificate with the
/// other rotation's key: the real paths are resolved before and after, and
/// a pair read across a swap is read again.
fn read_pair(a: &Path, b: &Path, max: u64) -> Result<[Vec<u8>; 2], (usize, PairError)> {
    let real = |p: &Path, i: usize| std::fs::canonicalize(p).map_err(|e| (i, PairError::Io(e)));
    let mut last = None;
    for _ in 0..5 {
        let before = [real(a, 0)?, real(b, 1)?];
        let read = |i: usize| match super::files::read_capped(&before[i], max) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err((i, PairError::TooLarge)),
            Err(e) => Err((i, PairError::Io(e))),
        };
        let bytes = match (read(0), read(1)) {
            (Ok(x), Ok(y)) => [x, y],
            (Err(e @ (_, PairError::TooLarge)), _) | (_, Err(e @ (_, PairError::TooLarge))) => {
                return Err(e)
            }
            // The old version vanished under us: look again.
            (Err(e), _) | (_, Err(e)) => {
                last = Some(e);
                continue;
            }
        };
        if [real(a, 0)?, real(b, 1)?] == before {
            return Ok(bytes);
        }
    }
    Err(last.unwrap_or_else(|| {
        (
            0,
            PairError::Io(io::Error::other("the files kept changing while read")),
        )
    }))
}

#[derive(Debug)]
enum PairError {
    Io(io::Error),
    TooLarge,
}

/// The first private key in PEM text: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn private_key(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        let encrypted = bytes.windows(9).any(|w| w == b"ENCRYPTED");
        if encrypted {
            "the key is encrypted; pinproxy needs it unencrypted (as cert-manager and \
             SPIFFE helpers write it)"
                .into()
        } else {
            format!(
                "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block in PEM form ({})",
                pemfile::describe(&e)
            )
        }
    })
}

struct Leaf {
    subject: String,
    pin: Pin,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    uris: Vec<String>,
    client_auth: bool,
}

fn leaf_facts(der: &[u8]) -> Result<Leaf, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let validity = cert.validity();
    let uris = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let client_auth = match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
        Ok(None) => true,
        Err(_) => false,
    };
    Ok(Leaf {
        subject: cert.subject().to_string(),
        pin: Pin::of_spki_der(cert.tbs_certificate.subject_pki.raw),
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        uris,
        client_auth,
    })
}

/// Reads a CRL file of at most `max` bytes: PEM (`X509 CRL` blocks, any
/// number) or one DER CRL, listing at most `entries.left` revoked
/// certificates. Also returns its bytes (for the source hash).
///
/// What it costs is bounded before it is paid: the size before the file is
/// read whole, the entries counted on webpki's borrowed view (no
/// allocation per entry) before the owned map is built, and the issuer and
/// nextUpdate read from the list's head, never by parsing every entry
/// again.
pub(super) fn read_crl(
    path: &FilePath,
    max: u64,
    entries: EntryBudget,
) -> Result<(LoadedCrl, Vec<u8>), FileError> {
    let bytes = super::files::read_capped(&path.read, max)
        .map_err(|source| FileError::Read {
            path: path.shown.clone(),
            source,
        })?
        .ok_or_else(|| FileError::TooLarge {
            path: path.shown.clone(),
            limit: max,
        })?;
    let invalid = |detail: String| FileError::Invalid {
        path: path.shown.clone(),
        detail,
    };
    let ders: Vec<Vec<u8>> = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .map(|r| r.map(|d| d.as_ref().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("not a PEM CRL: {}", pemfile::describe(&e))))?
    } else {
        vec![bytes.clone()]
    };
    if ders.is_empty() {
        return Err(invalid("holds no X509 CRL block".into()));
    }
    let mut lists = Vec::with_capacity(ders.len());
    let mut issuers = Vec::with_capacity(ders.len());
    let mut next_update: Option<OffsetDateTime> = None;
    let mut revoked = 0;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (i, der) in ders.iter().enumerate() {
        let which = if ders.len() > 1 {
            format!("CRL {i}: ")
        } else {
            String::new()
        };
        let borrowed = BorrowedCertRevocationList::from_der(der).map_err(|e| {
            invalid(format!(
                "{which}not a CRL webpki can use ({e:?}; a v2 CRL with nextUpdate is required)"
            ))
        })?;
        // What the CRL refuses: its issuer and serials, in a stable order
        // (slices of the DER: no copy per entry).
        let mut serials: Vec<&[u8]> = Vec::new();
        for cert in &borrowed {
            let cert = cert.map_err(|e| invalid(format!("{which}a revoked entry: {e:?}")))?;
            if revoked + serials.len() >= entries.left {
                return Err(FileError::TooManyEntries {
                    path: path.shown.clone(),
                    total: entries.total,
                });
            }
            serials.push(cert.serial_number);
        }
        serials.sort_unstable();
        revoked += serials.len();
        let head = crl_head(der).map_err(|e| invalid(format!("{which}{e}")))?;
        next_update = Some(next_update.map_or(head.next_update, |n| n.min(head.next_update)));
        issuers.push(head.issuer);
        ctx.update(&(head.issuer_der.len() as u64).to_be_bytes());
        ctx.update(head.issuer_der);
        for s in &serials {
            ctx.update(&(s.len() as u64).to_be_bytes());
            ctx.update(s);
        }
        drop(serials);
        let owned = borrowed
            .to_owned()
            .map_err(|e| invalid(format!("{which}{e:?}")))?;
        lists.push(owned);
    }
    let mut revoked_digest = [0u8; 32];
    revoked_digest.copy_from_slice(ctx.finish().as_ref());
    let file = Arc::new(CrlFile {
        path: path.shown.clone(),
        issuers,
        next_update: next_update.unwrap_or(OffsetDateTime::UNIX_EPOCH),
        revoked,
    });
    Ok((
        LoadedCrl {
            file,
            lists,
            revoked_digest,
        },
        bytes,
    ))
}

/// The issuer (for people) and nextUpdate of a DER CRL, read from the head
/// of its TBSCertList — `SEQUENCE { SEQUENCE { version?, signature,
/// issuer, thisUpdate, nextUpdate, … } … }` — without the revoked entries.
fn crl_head(der: &[u8]) -> Result<CrlHead<'_>, String> {
    use x509_parser::der_parser::asn1_rs::{FromDer, Header, Tag};
    use x509_parser::prelude::{AlgorithmIdentifier, X509Name};
    use x509_parser::time::ASN1Time;
    let bad = |what: &str| format!("does not parse ({what})");
    let inside = |i| -> Result<&[u8], String> {
        let (rest, h) = Header::from_der(i).map_err(|_| bad("a SEQUENCE"))?;
        let len = h.length().definite().map_err(|_| bad("a length"))?;
        rest.get(..len).ok_or_else(|| bad("a truncated SEQUENCE"))
    };
    let tbs = inside(inside(der)?)?;
    // version INTEGER OPTIONAL
    let tbs = match Header::from_der(tbs) {
        Ok((rest, h)) if h.tag() == Tag::Integer => {
            let len = h.length().definite().map_err(|_| bad("the version"))?;
            rest.get(len..).ok_or_else(|| bad("the version"))?
        }
        _ => tbs,
    };
    let (tbs, _) = AlgorithmIdentifier::from_der(tbs).map_err(|_| bad("the signature"))?;
    let (tbs, issuer) = X509Name::from_der(tbs).map_err(|_| bad("the issuer"))?;
    let (tbs, _) = ASN1Time::from_der(tbs).map_err(|_| bad("thisUpdate"))?;
    let (_, next) = ASN1Time::from_der(tbs).map_err(|_| "has no nextUpdate".to_string())?;
    Ok(CrlHead {
        issuer: issuer.to_string(),
        issuer_der: issuer.as_raw(),
        next_update: next.to_datetime(),
    })
}

struct CrlHead<'a> {
    issuer: String,
    issuer_der: &'a [u8],
    next_update: OffsetDateTime,
}

mod names;
#[cfg(test)]
mod tests;
