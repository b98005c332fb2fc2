//! `pinproxy sign` and `pinproxy keygen`: signed pinsets for users without
//! cosign. The `.sig` written is the bytes `cosign sign-blob --key`
//! writes with `--output-signature`, and `cosign verify-blob` accepts it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::Error;
use crate::policy;
use crate::sign::{self, Algorithm, SigningKey};

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The private key: PKCS#8 PEM (`pinproxy keygen`'s .key, or
    /// `openssl genpkey`), P-256 or Ed25519, unencrypted. cosign's own
    /// encrypted cosign.key is signed with `cosign sign-blob` instead.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The pinset file; the signature is written to FILE.sig beside it.
    pub file: PathBuf,
    /// FILE is loaded as the proxy will load it before it is signed.
    #[command(flatten)]
    pub caps: super::check::LoadCaps,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Writes PREFIX.key (the private key, mode 0600) and PREFIX.pub (the
    /// public key for `run --pinset-key`); refuses to overwrite either.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// An Ed25519 key instead of ECDSA P-256 (cosign's default).
    #[arg(long)]
    pub ed25519: bool,
}

/// Signs the exact bytes of a pinset that loads (as `check` loads it,
/// without `--live`) and has a valid `serial:`.
pub fn sign(args: &SignArgs) -> Result<(), Error> {
    let key = sign::read_signing_key(&args.key).map_err(Error::failed)?;
    let caps = args.caps.caps();
    // One read: the bytes loaded are the bytes signed.
    let source = policy::load::read(&args.file, caps, false).map_err(Error::failed)?;
    // A signed file without a valid serial is refused by every sidecar:
    // say so now rather than sign it.
    let serial = policy::load::serial(&source.bytes)
        .map_err(|e| Error::failed(format!("{}: not signed: {e}", args.file.display())))?;
    // So is one that does not load: a signature on it only gets a sidecar
    // to refuse it later, as a `failure` with the key's blessing.
    let loaded = policy::load::load_source(&source, caps).map_err(|e| {
        let e = super::check::reported(e);
        if matches!(e, Error::Reported) {
            outln!("{}: not signed", args.file.display());
        }
        e
    })?;
    for w in &loaded.warnings {
        outln!("{}: warning: {w}", args.file.display());
    }
    let signature = key.sign(&source.bytes).map_err(Error::failed)?;
    let out = sig_path(&args.file);
    replace(&out, signature.to_base64().as_bytes())?;
    outln!(
        "{}: signed (serial {serial}, key {}, sha256 {})",
        out.display(),
        key.public_key().id(),
        sign::Sha256::of(&source.bytes)
    );
    Ok(())
}

/// Makes a key pair: PREFIX.key (0600) and PREFIX.pub.
pub fn keygen(args: &KeygenArgs) -> Result<(), Error> {
    let algorithm = if args.ed25519 {
        Algorithm::Ed25519
    } else {
        Algorithm::EcdsaP256
    };
    let (key, pem) = SigningKey::generate(algorithm).map_err(Error::failed)?;
    let private = with_suffix(&args.out, ".key");
    let public = with_suffix(&args.out, ".pub");
    for path in [&private, &public] {
        if path.exists() {
            return Err(Error::failed(format!(
                "{} exists; refusing to overwrite a key (choose another --out)",
                path.display()
            )));
        }
    }
    write_new(&private, pem.private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, pem.public_pem.as_bytes(), 0o644) {
        // Never leave half a pair behind.
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    outln!(
        "{}: private key ({}; keep it out of the cluster)\n{}: public key for run --pinset-key \
         (id {})",
        private.display(),
        algorithm.as_str(),
        public.display(),
        key.public_key().id()
    );
    Ok(())
}

/// `FILE.sig`, beside FILE.
pub fn sig_path(file: &Path) -> PathBuf {
    with_suffix(file, policy::load::SIGNATURE_SUFFIX)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `bytes` to `path` through a new file in the same directory,
/// renamed over it: a symlink at `path` is replaced, never followed (a
/// `FILE.sig` pointing elsewhere would have had its target overwritten),
/// and a reader sees the old signature or the new one, never half.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = write_new(&tmp, bytes, 0o644).and_then(|()| {
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates `path` (never replacing a file) with `mode`, and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::failed(format!("cannot write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(fail)
}
