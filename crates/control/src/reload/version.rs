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

use std::io::Read as _;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use pinproxy_policy as policy;

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
    /// The pinset text last digested and the files it names: the text is
    /// parsed for its names only when it changes.
    named: Option<(Digest, Vec<PathBuf>)>,
}

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
            .as_ref()
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    }

    /// Digests the pinset at `pins` (at most `max + 1` bytes of it), with
    /// `signed` its signature file, the files it names and the CT log list
    /// `ct_list`, if one is read. A pinset that cannot be read is one
    /// version too (deleted, or unreadable): it fails once, not on every
    /// event.
    pub(super) fn digest(
        &mut self,
        pins: &Path,
        max: u64,
        signed: bool,
        ct_list: Option<&Path>,
    ) -> Digest {
        // The pinset and its signature through one resolution of `..data`,
        // as the load reads them: a new signature alone is a new version.
        let real = std::fs::canonicalize(pins).unwrap_or_else(|_| pins.to_path_buf());
        let Some(bytes) = read_capped(&real, max) else {
            let mut ctx = Context::new(&SHA256);
            ctx.update(b"the pinset could not be read");
            if let Some(list) = ct_list {
                digest_file(list, &mut ctx);
            }
            return finish(ctx);
        };
        let text = Digest(sha256(&bytes));
        let named = match &self.named {
            Some((d, named)) if *d == text => named.clone(),
            _ => {
                let named = if names_files(&bytes, max) {
                    policy::load::named_files(pins, &bytes)
                } else {
                    Vec::new()
                };
                self.named = Some((text, named.clone()));
                named
            }
        };
        let mut ctx = Context::new(&SHA256);
        ctx.update(&text.0);
        if signed {
            ctx.update(b"signature\0");
            digest_file(&policy::load::signature_path(&real), &mut ctx);
        }
        for file in &named {
            ctx.update(file.as_os_str().as_encoded_bytes());
            ctx.update(&[0]);
            digest_file(file, &mut ctx);
        }
        if let Some(list) = ct_list {
            ctx.update(b"ct-log-list\0");
            digest_file(list, &mut ctx);
        }
        finish(ctx)
    }
}

fn finish(ctx: Context) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Digest(out)
}

/// Whether the text may name a file at all: a file over the size limit is
/// refused unparsed (and must not be parsed here either), and most
/// pinsets name none — neither is parsed a second time for its names.
fn names_files(bytes: &[u8], max: u64) -> bool {
    let keys: [&[u8]; 3] = [b"trust", b"client_cert", b"crls"];
    bytes.len() as u64 <= max && keys.iter().any(|k| bytes.windows(k.len()).any(|w| w == *k))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&SHA256, bytes).as_ref());
    out
}

fn read_capped(path: &Path, max: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Streams a file into `ctx` (a missing or unreadable file hashes as such:
/// its appearing is a change).
fn digest_file(path: &Path, ctx: &mut Context) {
    let Ok(mut file) = std::fs::File::open(path) else {
        ctx.update(b"missing");
        return;
    };
    let mut buf = [0u8; 64 * 1024];
    let mut len: u64 = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                ctx.update(&buf[..n]);
                len += n as u64;
            }
            Err(_) => {
                ctx.update(b"unreadable");
                break;
            }
        }
    }
    ctx.update(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn only_a_pinset_within_the_limit_that_mentions_a_file_is_parsed_for_names() {
        assert!(names_files(b"hosts: {a: {trust: ca.pem}}", 100));
        assert!(names_files(b"client_cert: {}", 100));
        assert!(names_files(b"crls: []", 100));
        assert!(!names_files(b"version: 1\nhosts: {}\n", 100));
        assert!(!names_files(b"trust: ca.pem", 5), "over the limit");
    }

    #[test]
    fn judged_against_the_version_in_force_and_the_failed_one() {
        let (a, b, c) = (Digest([1; 32]), Digest([2; 32]), Digest([3; 32]));
        let v = Versions {
            in_force: Some(a),
            failed: Some(b),
            named: None,
        };
        assert_eq!(v.judge(Some(a)), Known::InForce);
        assert_eq!(v.judge(Some(b)), Known::Failed);
        assert_eq!(v.judge(Some(c)), Known::New);
        assert_eq!(v.judge(None), Known::New);
    }
}
