//! One version of a pinset's inputs: a digest of the pinset file, of
//! every file it names (CA bundles, client certificates and keys, CRLs)
//! and of the CT log list (`--ct-log-list`), which a reload reads too.
//!
//! The watcher reloads on events that change content, but such events also
//! come for files that did not change (a `touch`, a neighbour in the same
//! directory, a helper that rewrites identical bytes). The reloader takes a
//! version's digest *before* it loads it and remembers the digest of the
//! version in force and of the one that last failed: an event that leaves
//! the inputs as they were costs a read and a hash, never a parse, and a
//! bad version is counted and logged once — it is retried only when one of
//! its files changes again.
//!
//! Taken before the load, a digest can only be older than what the load
//! read: if a file changes in between, the next event sees a digest that
//! differs and reloads, so a change is never skipped.

use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use pinproxy_policy as policy;
use pinproxy_policy::load::Caps;

/// A digest of one version of the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest([u8; 32]);

/// What the reloader remembers between reloads.
#[derive(Debug, Default)]
pub(super) struct Versions {
    /// The inputs of the pinset in force, when known.
    pub(super) in_force: Option<Digest>,
    /// The inputs of the last version that failed, until one succeeds.
    pub(super) failed: Option<Digest>,
    named: Named,
}

/// The pinset text last digested and the files it names: the text is
/// parsed for its names only when it changes.
#[derive(Clone, Debug, Default)]
pub(super) struct Named(Option<(Digest, Vec<PathBuf>)>);

/// What a digest says about a version.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Known {
    InForce,
    Failed,
    New,
}

// === impl Versions ===

impl Versions {
    pub(super) fn judge(&self, d: Option<Digest>) -> Known {
        match d {
            Some(d) if self.in_force == Some(d) => Known::InForce,
            Some(d) if self.failed == Some(d) => Known::Failed,
            _ => Known::New,
        }
    }

    /// The files the last digested pinset text names (for the watcher).
    pub(super) fn named(&self) -> Vec<PathBuf> {
        self.named
            .0
            .as_ref()
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    }

    /// What [`digest`] starts from: taken out under the lock, so the
    /// files are read without it.
    pub(super) fn names(&self) -> Named {
        self.named.clone()
    }

    /// What [`digest`] learnt, put back.
    pub(super) fn remember(&mut self, named: Named) {
        self.named = named;
    }
}

/// Digests the pinset at `pins` (within `caps.pinset`), with `signed` its
/// signature file, the files it names and the CT log list `ct_list` (each
/// within `caps.file`), if one is read; `named` is updated when the text's
/// names are new. A pinset that cannot be read is one version too (deleted,
/// unreadable, not a regular file): it fails once, not on every event.
///
/// Every file is read as the load reads it ([`policy::load::read_capped`]):
/// a regular file within its cap, or not at all — the Secret's writer can
/// make any of them `/dev/zero` or a FIFO, and a digest that never ends
/// would hold a load slot, and every later reload, for good. Blocking; no
/// lock held.
pub(super) fn digest(
    pins: &Path,
    caps: Caps,
    signed: bool,
    ct_list: Option<&Path>,
    named: &mut Named,
) -> Digest {
    // The pinset and its signature through one resolution of `..data`,
    // as the load reads them: a new signature alone is a new version.
    let real = std::fs::canonicalize(pins).unwrap_or_else(|_| pins.to_path_buf());
    let Ok(Some(bytes)) = policy::load::read_capped(&real, caps.pinset) else {
        let mut ctx = Context::new(&SHA256);
        ctx.update(b"the pinset could not be read");
        if let Some(list) = ct_list {
            digest_file(list, caps.file, &mut ctx);
        }
        return finish(ctx);
    };
    let text = Digest(sha256(&bytes));
    let files = match &named.0 {
        Some((d, files)) if *d == text => files.clone(),
        _ => {
            let files = if names_files(&bytes) {
                policy::load::named_files(pins, &bytes)
            } else {
                Vec::new()
            };
            named.0 = Some((text, files.clone()));
            files
        }
    };
    let mut ctx = Context::new(&SHA256);
    ctx.update(&text.0);
    if signed {
        ctx.update(b"signature\0");
        match policy::load::read_signature(&policy::load::signature_path(&real)) {
            Ok(Some(sig)) => digest_bytes(&sig, &mut ctx),
            Ok(None) => ctx.update(b"missing"),
            Err(e) => unreadable(&e.to_string(), &mut ctx),
        }
    }
    for file in &files {
        ctx.update(file.as_os_str().as_encoded_bytes());
        ctx.update(&[0]);
        digest_file(file, caps.file, &mut ctx);
    }
    if let Some(list) = ct_list {
        ctx.update(b"ct-log-list\0");
        digest_file(list, caps.file, &mut ctx);
    }
    finish(ctx)
}

fn finish(ctx: Context) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Digest(out)
}

/// Whether the text may name a file at all: most pinsets name none, and
/// are not parsed a second time for their names. (The text is within the
/// size limit: a larger one was not read.)
fn names_files(bytes: &[u8]) -> bool {
    let keys: [&[u8]; 3] = [b"trust", b"client_cert", b"crls"];
    keys.iter().any(|k| bytes.windows(k.len()).any(|w| w == *k))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&SHA256, bytes).as_ref());
    out
}

/// A file within `max` bytes into `ctx`; one that is missing, over the
/// limit or unreadable hashes as such (its becoming readable is a change).
/// The tags keep the cases apart from any content.
fn digest_file(path: &Path, max: u64, ctx: &mut Context) {
    match policy::load::read_capped(path, max) {
        Ok(Some(bytes)) => digest_bytes(&bytes, ctx),
        Ok(None) => ctx.update(b"\x01over the size limit"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ctx.update(b"\x02missing"),
        Err(e) => unreadable(&e.to_string(), ctx),
    }
}

fn digest_bytes(bytes: &[u8], ctx: &mut Context) {
    ctx.update(b"\x00");
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}

fn unreadable(why: &str, ctx: &mut Context) {
    ctx.update(b"\x03unreadable: ");
    ctx.update(why.as_bytes());
    ctx.update(&[0]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn caps(max: u64) -> Caps {
        Caps {
            pinset: max,
            file: max,
            ..Caps::default()
        }
    }

    impl Versions {
        /// [`digest`], remembering the names as the reloader does.
        fn digest(&mut self, pins: &Path, max: u64, signed: bool, list: Option<&Path>) -> Digest {
            let mut named = self.names();
            let d = super::digest(pins, caps(max), signed, list, &mut named);
            self.remember(named);
            d
        }
    }

    #[test]
    fn a_named_file_changing_changes_the_digest_and_a_touch_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins.yaml");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&pins, "version: 1\ndefaults: {trust: ca.pem}\nhosts: {}\n").unwrap();
        let mut v = Versions::default();
        let missing = v.digest(&pins, 1 << 20, false, None);
        std::fs::write(&ca, "one").unwrap();
        let one = v.digest(&pins, 1 << 20, false, None);
        assert_ne!(missing, one, "the named file appearing is a change");
        assert_eq!(v.named(), vec![ca.clone()]);
        // Same bytes rewritten: the same version.
        std::fs::write(&ca, "one").unwrap();
        assert_eq!(v.digest(&pins, 1 << 20, false, None), one);
        std::fs::write(&ca, "two").unwrap();
        let two = v.digest(&pins, 1 << 20, false, None);
        assert_ne!(two, one);
        std::fs::remove_file(&pins).unwrap();
        let gone = v.digest(&pins, 1 << 20, false, None);
        assert!(gone != two && gone != missing);
        assert_eq!(
            v.digest(&pins, 1 << 20, false, None),
            gone,
            "a missing pinset is one version"
        );
    }

    #[test]
    fn the_ct_log_list_is_an_input_like_a_named_file() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins.yaml");
        let list = dir.path().join("log_list.json");
        std::fs::write(&pins, "version: 1\nhosts: {}\n").unwrap();
        std::fs::write(&list, "one").unwrap();
        let mut v = Versions::default();
        let one = v.digest(&pins, 1 << 20, false, Some(&list));
        assert_ne!(one, v.digest(&pins, 1 << 20, false, None));
        // Rewritten with the same bytes (a touch, a ConfigMap resync): the
        // same version, so no reload.
        std::fs::write(&list, "one").unwrap();
        assert_eq!(v.digest(&pins, 1 << 20, false, Some(&list)), one);
        std::fs::write(&list, "two").unwrap();
        assert_ne!(v.digest(&pins, 1 << 20, false, Some(&list)), one);
        // Unreadable pinset: the list still counts.
        std::fs::remove_file(&pins).unwrap();
        let gone = v.digest(&pins, 1 << 20, false, Some(&list));
        std::fs::write(&list, "three").unwrap();
        assert_ne!(v.digest(&pins, 1 << 20, false, Some(&list)), gone);
    }

    #[test]
    fn with_a_key_a_new_signature_alone_is_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins.yaml");
        std::fs::write(&pins, "version: 1\nserial: 1\nhosts: {}\n").unwrap();
        let mut v = Versions::default();
        let unsigned = v.digest(&pins, 1 << 20, true, None);
        std::fs::write(dir.path().join("pins.yaml.sig"), "AAAA").unwrap();
        let one = v.digest(&pins, 1 << 20, true, None);
        assert_ne!(unsigned, one, "the signature appearing is a change");
        std::fs::write(dir.path().join("pins.yaml.sig"), "BBBB").unwrap();
        let two = v.digest(&pins, 1 << 20, true, None);
        assert_ne!(one, two, "a new signature over the same file is a change");
        assert_eq!(v.digest(&pins, 1 << 20, true, None), two);
        // Without a key the signature is not an input.
        let plain = v.digest(&pins, 1 << 20, false, None);
        std::fs::write(dir.path().join("pins.yaml.sig"), "CCCC").unwrap();
        assert_eq!(v.digest(&pins, 1 << 20, false, None), plain);
    }

    /// Whoever writes the Secret can point the signature, a named file or
    /// the pinset itself at `/dev/zero` or a FIFO: the digest reads none
    /// of them (it returns, where it used to spin or block for good), and
    /// each is a version of its own.
    #[test]
    fn files_that_are_not_regular_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins.yaml");
        let (ca, sig) = (dir.path().join("ca.pem"), dir.path().join("pins.yaml.sig"));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::write(&pins, "version: 1\ndefaults: {trust: ca.pem}\nhosts: {}\n").unwrap();
        std::fs::write(&ca, "ca").unwrap();
        std::fs::write(&sig, "AAAA").unwrap();
        let mut v = Versions::default();
        let good = v.digest(&pins, 1 << 20, true, None);
        let mut seen = vec![good];
        for (file, target) in [
            (&sig, "/dev/zero"),
            (&sig, "fifo"),
            (&ca, "/dev/zero"),
            (&ca, "fifo"),
        ] {
            let kept = std::fs::read(file).unwrap_or_default();
            std::fs::remove_file(file).unwrap();
            symlink(target, file).unwrap();
            let d = v.digest(&pins, 1 << 20, true, None);
            assert!(
                !seen.contains(&d),
                "{file:?} -> {target}: a version of its own"
            );
            seen.push(d);
            std::fs::remove_file(file).unwrap();
            std::fs::write(file, kept).unwrap();
        }
        assert_eq!(v.digest(&pins, 1 << 20, true, None), good);
        // The pinset itself a FIFO, or /dev/zero: "could not be read".
        std::fs::rename(&pins, dir.path().join("kept.yaml")).unwrap();
        symlink("fifo", &pins).unwrap();
        let unreadable = v.digest(&pins, 1 << 20, true, None);
        std::fs::remove_file(&pins).unwrap();
        symlink("/dev/zero", &pins).unwrap();
        assert_eq!(v.digest(&pins, 1 << 20, true, None), unreadable);
    }

    #[test]
    fn a_named_file_over_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins.yaml");
        std::fs::write(&pins, "version: 1\ndefaults: {trust: ca.pem}\nhosts: {}\n").unwrap();
        std::fs::write(dir.path().join("ca.pem"), vec![b'a'; 200]).unwrap();
        let mut v = Versions::default();
        let big = v.digest(&pins, 100, false, None);
        std::fs::write(dir.path().join("ca.pem"), vec![b'b'; 200]).unwrap();
        assert_eq!(
            v.digest(&pins, 100, false, None),
            big,
            "only its being over the limit counts"
        );
        std::fs::write(dir.path().join("ca.pem"), vec![b'b'; 100]).unwrap();
        assert_ne!(v.digest(&pins, 100, false, None), big);
    }

    #[test]
    fn only_a_pinset_that_mentions_a_file_is_parsed_for_names() {
        assert!(names_files(b"hosts: {a: {trust: ca.pem}}"));
        assert!(names_files(b"client_cert: {}"));
        assert!(names_files(b"crls: []"));
        assert!(!names_files(b"version: 1\nhosts: {}\n"));
    }

    #[test]
    fn judged_against_the_version_in_force_and_the_failed_one() {
        let (a, b, c) = (Digest([1; 32]), Digest([2; 32]), Digest([3; 32]));
        let v = Versions {
            in_force: Some(a),
            failed: Some(b),
            named: Named::default(),
        };
        assert_eq!(v.judge(Some(a)), Known::InForce);
        assert_eq!(v.judge(Some(b)), Known::Failed);
        assert_eq!(v.judge(Some(c)), Known::New);
        assert_eq!(v.judge(None), Known::New);
    }
}
