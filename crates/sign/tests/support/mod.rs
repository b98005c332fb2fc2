//! What the integration tests share: the real `cosign` binary, `openssl`,
//! and a scratch directory per test.
//!
//! cosign comes from `PINPROXY_COSIGN` (scripts/test.sh builds it with
//! scripts/tools/cosign.sh and exports the path). When that is unset on a
//! developer machine, the tests run the same script themselves (the first
//! build takes minutes, then it is cached); under CI it must be set, and a
//! test fails rather than build or skip.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

/// The cosign binary, found or built once per test binary.
pub fn cosign_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_cosign)
}

fn find_cosign() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/sign sits two levels below the workspace root");
    let script = root.join("scripts/tools/cosign.sh");
    if let Some(path) = std::env::var_os("PINPROXY_COSIGN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PINPROXY_COSIGN={} is not a file; build cosign with {}",
            path.display(),
            script.display()
        );
        return path;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "PINPROXY_COSIGN is unset under CI: scripts/test.sh sets it (it runs {}); \
         the cosign tests are the proof of compatibility and are never skipped",
        script.display()
    );
    eprintln!(
        "PINPROXY_COSIGN is unset: running {} (builds cosign once, minutes the first time)",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); run it by hand to see why, then export PINPROXY_COSIGN=<the path it prints>",
        script.display(),
        out.status
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "{} printed {:?}", script.display(), path);
    path
}

/// A scratch directory; cosign's HOME and TUF cache live in it too.
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read scratch file")
    }

    /// `cosign ARGS` in this directory, with nothing of the caller's
    /// environment. `SIGSTORE_REKOR_PUBLIC_KEY` is set only because cosign
    /// otherwise tries to fetch Sigstore's TUF root from the internet before
    /// it looks at `--insecure-ignore-tlog` (cmd/cosign/cli/verify/
    /// verify_blob.go); with `--key` and the tlog ignored the file is never
    /// read.
    pub fn cosign(&self, args: &[&str]) -> Output {
        let home = self.path("cosign-home");
        std::fs::create_dir_all(&home).expect("cosign home");
        Command::new(cosign_bin())
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("TUF_ROOT", home.join("tuf"))
            .env("COSIGN_PASSWORD", PASSWORD)
            .env("SIGSTORE_REKOR_PUBLIC_KEY", home.join("unused-rekor.pub"))
            .stdin(Stdio::null())
            .output()
            .expect("run cosign")
    }

    /// Like [`Scratch::cosign`], but the command must succeed.
    pub fn cosign_ok(&self, args: &[&str]) -> Output {
        let out = self.cosign(args);
        assert!(
            out.status.success(),
            "cosign {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `cosign generate-key-pair --output-key-prefix PREFIX`: PREFIX.key
    /// (encrypted sigstore format) and PREFIX.pub.
    pub fn cosign_keypair(&self, prefix: &str) {
        self.cosign_ok(&["generate-key-pair", "--output-key-prefix", prefix]);
    }

    /// `cosign sign-blob --key KEY --tlog-upload=false --yes FILE`, the
    /// signature as cosign prints it on stdout.
    pub fn cosign_sign(&self, key: &str, file: &str) -> Vec<u8> {
        let key = format!("{key}.key");
        self.cosign_ok(&[
            "sign-blob",
            "--key",
            &key,
            "--tlog-upload=false",
            "--yes",
            file,
        ])
        .stdout
    }

    /// `cosign verify-blob --key PUB --signature SIG --insecure-ignore-tlog=true FILE`.
    pub fn cosign_verify(&self, public: &str, sig: &str, file: &str) -> Output {
        self.cosign(&[
            "verify-blob",
            "--key",
            public,
            "--signature",
            sig,
            "--insecure-ignore-tlog=true",
            file,
        ])
    }

    /// `openssl ARGS` in this directory; must succeed.
    pub fn openssl(&self, args: &[&str]) -> Output {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run openssl (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// A pinset file the way the policy room writes one.
pub fn pinset(serial: u64, extra: &str) -> Vec<u8> {
    format!(
        "version: 1\nserial: {serial}\nhosts:\n  api.example.com:\n    pins:\n      - sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n{extra}"
    )
    .into_bytes()
}

/// The serial reader the policy crate will provide, reduced to what these
/// tests need: the top-level `serial:` through serde_yaml.
pub fn serial_of(pins: &[u8]) -> Result<u64, serde_yaml::Error> {
    #[derive(serde::Deserialize)]
    struct Top {
        serial: u64,
    }
    serde_yaml::from_slice::<Top>(pins).map(|t| t.serial)
}
