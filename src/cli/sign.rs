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

/// Signs the exact bytes of a pinset with a valid `serial:`.
pub fn sign(args: &SignArgs) -> Result<(), Error> {
    let key = sign::read_signing_key(&args.key).map_err(Error::failed)?;
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", args.file.display())))?;
    // A signed file without a valid serial is refused by every sidecar:
    // say so now rather than sign it.
    let serial = policy::load::serial(&bytes)
        .map_err(|e| Error::failed(format!("{}: not signed: {e}", args.file.display())))?;
    let signature = key.sign(&bytes).map_err(Error::failed)?;
    let out = sig_path(&args.file);
    std::fs::write(&out, signature.to_base64())
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", out.display())))?;
    outln!(
        "{}: signed (serial {serial}, key {}, sha256 {})",
        out.display(),
        key.public_key().id(),
        sign::Sha256::of(&bytes)
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
