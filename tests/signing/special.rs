//! Files that are not regular files, put in the pins Secret by someone who
//! can write it but has no signing key: `pins.yaml.sig` a symlink to
//! `/dev/zero` or a FIFO, a CA bundle the pinset names a symlink to
//! `/dev/zero`. Each used to freeze the reloader for good (the version
//! digest read `/dev/zero` for ever, or blocked opening the FIFO, holding
//! a load slot every later reload queued behind), so a validly signed newer
//! pinset was never applied, with nothing logged; a FIFO `.sig` at start
//! kept the listeners from ever coming up. Now each is refused as
//! documented and the next good version is applied.

use std::path::Path;

use pinproxy::sign::Algorithm;

use super::*;

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {path:?}");
}

fn dev_zero(path: &Path) {
    std::os::unix::fs::symlink("/dev/zero", path).unwrap();
}

/// A Secret volume holding serial 1, validly signed by `a` (`ka`: its
/// public key's path for `--pinset-key`), with the CA bundle `ca`.
struct Start {
    w: World,
    a: Key,
    ka: String,
    ca: String,
    v1: String,
    /// `a`'s signature of `v1`, as in the volume.
    sig1: String,
    vol: SecretVolume,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Start {
    async fn new() -> Self {
        let w = World::new().await;
        let keys = tempfile::tempdir().unwrap();
        let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
        let ka = a.public.display().to_string();
        let ca = w.pki.root.pem();
        let secret = tempfile::tempdir().unwrap();
        let v1 = w.good(1);
        let sig1 = a.sign(&v1);
        let vol = SecretVolume::new(secret.path(), &files(&v1, Some(&sig1), &ca));
        Start {
            w,
            a,
            ka,
            ca,
            v1,
            sig1,
            vol,
            _dirs: (keys, secret),
        }
    }
}

/// Starts with a good serial 1; delivers serial 2 (the wrong pin, validly
/// signed) with `name` replaced by `make`; asserts it is refused, counted
/// as `result` and logged naming `why`, with serial 1 still in force; then
/// delivers a validly signed serial 3 and asserts it is applied. With
/// `hangup`, also sends SIGHUP while serial 2 is there: refused again.
async fn refused_then_the_next_good_version_applies(
    name: &str,
    make: fn(&Path),
    result: &str,
    why: &str,
    hangup: bool,
) {
    let Start {
        w,
        a,
        ka,
        ca,
        mut vol,
        _dirs,
        ..
    } = Start::new().await;
    let mut run = sidecar(&vol, &["--pinset-key", &ka]).await;
    run.until("signed pinset in force").await;

    let bad = w.pinset(2, &w.wrong, "enforce");
    vol.update_then(&files(&bad, Some(&a.sign(&bad)), &ca), |dir| {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        make(&path);
    });
    // Bounded waits: the old reloader never got this far.
    counted(&run, result, 1).await;
    if result == "bad-signature" {
        let line = logged(&mut run, &["signed pinset refused", why]).await;
        for field in ["result=\"bad-signature\"", "sha256=", "key="] {
            assert!(line.contains(field), "{field}: {line}");
        }
        assert!(line.contains(&sha256_hex(bad.as_bytes())), "{line}");
    } else {
        // The problems follow the line, one a line.
        run.until("pinset reload failed").await;
        let line = run.until(why).await.pop().unwrap_or_default();
        assert!(line.contains(name), "{line}");
    }
    assert_eq!(in_force(&run).await.0, 1, "the last good pinset stays");
    assert_eq!(fetch(&run).await.status, 200);
    assert_eq!(admin(&run, "/readyz").await.status, 200);
    if hangup {
        run.signal("-HUP");
        counted(&run, result, 2).await;
    }

    // The platform team's next version, validly signed: applied.
    let v3 = w.good(3);
    vol.update(&files(&v3, Some(&a.sign(&v3)), &ca));
    run.until("pinset reloaded (signature verified)").await;
    assert_eq!(
        in_force(&run).await,
        (3, a.id.clone(), sha256_hex(v3.as_bytes()))
    );
    assert_eq!(reloads(&run, "success").await, 1);
    assert_eq!(fetch(&run).await.status, 200);
}

#[tokio::test]
async fn a_signature_symlinked_to_dev_zero_is_a_bad_signature_and_the_next_version_applies() {
    refused_then_the_next_good_version_applies(
        "pins.yaml.sig",
        dev_zero,
        "bad-signature",
        "not a regular file (a character device)",
        false,
    )
    .await;
}

#[tokio::test]
async fn a_fifo_signature_is_a_bad_signature_and_the_next_version_applies() {
    refused_then_the_next_good_version_applies(
        "pins.yaml.sig",
        mkfifo,
        "bad-signature",
        "not a regular file (a FIFO)",
        true,
    )
    .await;
}

#[tokio::test]
async fn a_ca_bundle_symlinked_to_dev_zero_fails_and_the_next_version_applies() {
    refused_then_the_next_good_version_applies(
        "ca.pem",
        dev_zero,
        "failure",
        "not a regular file (a character device)",
        false,
    )
    .await;
}

#[tokio::test]
async fn a_start_with_a_fifo_signature_is_not_ready_then_applies_the_next_good_pinset() {
    let Start {
        w,
        a,
        ka,
        ca,
        v1,
        mut vol,
        _dirs,
        ..
    } = Start::new().await;
    vol.update_then(&files(&v1, None, &ca), |dir| {
        mkfifo(&dir.join("pins.yaml.sig"))
    });
    // spawn() waits (bounded) for the listener: it used to never come up.
    let mut run = sidecar(&vol, &["--pinset-key", &ka]).await;
    run.until("NOT READY").await;
    let ready = admin(&run, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready
            .body
            .starts_with("not ready: no pinset in force: bad-signature: "),
        "{}",
        ready.body
    );
    assert!(ready.body.contains("(a FIFO)"), "{}", ready.body);
    assert_eq!(fetch(&run).await.error(), Some("no-pinset"));
    assert_eq!(reloads(&run, "bad-signature").await, 1);

    let v2 = w.good(2);
    vol.update(&files(&v2, Some(&a.sign(&v2)), &ca));
    run.until("signed pinset in force").await;
    assert_eq!(in_force(&run).await.0, 2);
    assert_eq!(admin(&run, "/readyz").await.status, 200);
    assert_eq!(fetch(&run).await.status, 200);
}

/// The signature covers the pinset's bytes alone: a CA bundle it names
/// changing under it reloads, but the line does not say a signature
/// verified the change — it names what changed.
#[tokio::test]
async fn a_changed_ca_bundle_alone_is_not_logged_as_signature_verified() {
    let Start {
        w,
        a,
        ka,
        ca,
        v1,
        sig1: sig,
        mut vol,
        _dirs,
    } = Start::new().await;
    let mut run = sidecar(&vol, &["--pinset-key", &ka]).await;
    run.until("signed pinset in force").await;

    let another = Pki::new(&[HOST]).root.pem();
    let swapped = format!("{ca}{another}");
    vol.update(&files(&v1, Some(&sig), &swapped));
    let line = logged(&mut run, &["pinset reloaded", "changed=\"named-files\""]).await;
    assert!(!line.contains("signature verified"), "{line}");
    assert!(line.contains("unsigned files changed"), "{line}");
    assert!(line.contains(&sha256_hex(v1.as_bytes())), "{line}");

    let v2 = w.good(2);
    vol.update(&files(&v2, Some(&a.sign(&v2)), &ca));
    logged(
        &mut run,
        &[
            "pinset reloaded (signature verified)",
            "changed=\"pinset,named-files\"",
        ],
    )
    .await;
}
