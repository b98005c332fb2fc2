//! Signed pinsets end to end, with the built binary (`run --pinset-key`)
//! against real TLS upstreams, the files swapped the way the kubelet swaps
//! them (`..data` rename, pins.yaml and pins.yaml.sig in one version):
//!
//! - every attack of the README's table — an edited file, one byte changed,
//!   a signature by another key, the signature stripped, an old signed file
//!   replayed, the same serial with other content, a start with a bad or no
//!   signature, a replay across a restart — is refused with the last good
//!   pinset in force, counted and logged with the file's SHA-256 and key;
//! - a pinset signed by the real `cosign sign-blob` is applied;
//! - the README's "Emergency: unpin one host now" commands, run as written
//!   against a proxy under load, with the time from the signed files landing
//!   to the first request served under them (drill.rs);
//! - keys given inline (`run --pinset-key-pem`), and the sidecar of a pod
//!   `inject --pinset-key-inline` renders, run with its args and env
//!   (inline.rs);
//! - a `.sig` or a CA bundle that is not a regular file (`/dev/zero`, a
//!   FIFO) is refused and never freezes the reloader (special.rs);
//! - the webhook's `POST /validate`, the built binary over TLS answering
//!   curl, refusing an unsigned Secret update with a message an operator
//!   reads (webhook.rs).

#[path = "../support/mod.rs"]
mod support;

mod drill;
mod inline;
mod special;
mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pinproxy::policy::pin::Pin;
use pinproxy::sign::{Algorithm, SigningKey};
use serde_json::Value as Json;
use support::proxy::TestProxy;
use support::*;

pub(crate) const HOST: &str = "api.signed.test";

/// A key made in-process, its public half written for `--pinset-key`.
pub(crate) struct Key {
    signer: SigningKey,
    pub(crate) public: PathBuf,
    pub(crate) id: String,
}

impl Key {
    pub(crate) fn new(dir: &Path, name: &str, algorithm: Algorithm) -> Self {
        let (signer, pem) = SigningKey::generate(algorithm).unwrap();
        let public = dir.join(format!("{name}.pub"));
        std::fs::write(&public, &pem.public_pem).unwrap();
        let id = signer.public_key().id().to_string();
        Key { signer, public, id }
    }

    pub(crate) fn sign(&self, bytes: &str) -> String {
        self.signer.sign(bytes.as_bytes()).unwrap().to_base64()
    }
}

/// An upstream for HOST, the pin it matches, and one it does not.
pub(crate) struct World {
    pub(crate) pki: Pki,
    pub(crate) up: Upstream,
    pub(crate) wrong: Pin,
}

impl World {
    pub(crate) async fn new() -> Self {
        let pki = Pki::new(&[HOST]);
        let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
        let wrong = Pki::new(&[HOST]).int.pin();
        World { pki, up, wrong }
    }

    /// A pinset with `serial`, HOST pinned to `pin` in `mode`.
    pub(crate) fn pinset(&self, serial: u64, pin: &Pin, mode: &str) -> String {
        format!(
            "version: 1\nserial: {serial}\ndefaults:\n  unlisted: deny\nhosts:\n  {HOST:?}:\n    \
             pins: [{pin}]\n    mode: {mode}\n    trust: ca.pem\n    address: {}\n",
            self.up.addr
        )
    }

    pub(crate) fn good(&self, serial: u64) -> String {
        self.pinset(serial, &self.pki.int.pin(), "enforce")
    }
}

/// The Secret's files: pins.yaml, pins.yaml.sig (when given) and ca.pem.
pub(crate) fn files<'a>(
    pins: &'a str,
    sig: Option<&'a str>,
    ca: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![("pins.yaml", pins), ("ca.pem", ca)];
    if let Some(sig) = sig {
        f.push(("pins.yaml.sig", sig));
    }
    f
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    pinproxy::sign::Sha256::of(bytes).to_hex()
}

pub(crate) async fn admin(run: &Run, path: &str) -> Reply {
    get(run.admin, &format!("http://{}{path}", run.admin)).await
}

pub(crate) async fn pins_json(run: &Run) -> Json {
    serde_json::from_str(&admin(run, "/pins").await.body).unwrap()
}

/// `pinproxy_config_reloads_total{result}` as the sidecar exports it.
pub(crate) async fn reloads(run: &Run, result: &str) -> u64 {
    let text = admin(run, "/metrics").await.body;
    let want = format!("pinproxy_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {want} in /metrics"))
}

/// Waits (bounded) until `result` was counted `n` times.
pub(crate) async fn counted(run: &Run, result: &str, n: u64) {
    for _ in 0..200 {
        if reloads(run, result).await >= n {
            assert_eq!(
                reloads(run, result).await,
                n,
                "{result} counted once per version"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{result} never reached {n}");
}

pub(crate) async fn fetch(run: &Run) -> Reply {
    get(run.listen, &format!("http://{HOST}/")).await
}

/// The serial and key of the pinset in force, per `/pins`.
pub(crate) async fn in_force(run: &Run) -> (u64, String, String) {
    let p = pins_json(run).await;
    let s = &p["signature"];
    (
        s["serial"].as_u64().unwrap_or(0),
        s["key"].as_str().unwrap_or("").to_string(),
        s["sha256"].as_str().unwrap_or("").to_string(),
    )
}

/// One row of the attack table printed at the end of a test.
struct Row {
    attack: &'static str,
    result: String,
    in_force: u64,
}

/// A sidecar on `vol`'s `pins.yaml` with `args` (`--pinset-key …`).
async fn sidecar(vol: &SecretVolume, args: &[&str]) -> support::proxy::Spawned {
    TestProxy::builder()
        .pins_path(vol.path("pins.yaml"))
        .args(args)
        .spawn()
        .await
}

fn print_table(rows: &[Row]) {
    eprintln!("| attack | result | serial in force after |");
    eprintln!("|---|---|---|");
    for r in rows {
        eprintln!("| {} | {} | {} |", r.attack, r.result, r.in_force);
    }
}

/// One line of the log containing every one of `needles`.
async fn logged(run: &mut Run, needles: &[&str]) -> String {
    let lines = run.until(needles[0]).await;
    let line = lines.last().unwrap().clone();
    for n in needles {
        assert!(line.contains(n), "log line lacks {n:?}: {line}");
    }
    line
}

#[tokio::test]
async fn attacks_on_a_running_sidecar_are_refused_and_the_last_good_pinset_stays() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
    let b = Key::new(keys.path(), "b", Algorithm::Ed25519);
    let attacker = Key::new(keys.path(), "x", Algorithm::EcdsaP256);
    let ca = w.pki.root.pem();
    let secret = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();

    let v1 = w.good(1);
    let sig1 = a.sign(&v1);
    let mut vol = SecretVolume::new(secret.path(), &files(&v1, Some(&sig1), &ca));
    let (ka, kb) = (
        a.public.display().to_string(),
        b.public.display().to_string(),
    );
    let st = state.path().display().to_string();
    let mut run = sidecar(
        &vol,
        &["--pinset-key", &ka, "--pinset-key", &kb, "--state-dir", &st],
    )
    .await;
    run.until("signed pinset in force").await;
    assert_eq!(admin(&run, "/readyz").await.status, 200);
    assert_eq!(fetch(&run).await.status, 200);
    assert_eq!(
        in_force(&run).await,
        (1, a.id.clone(), sha256_hex(v1.as_bytes()))
    );
    let mut rows = vec![Row {
        attack: "(valid, serial 1, key A)",
        result: "applied".into(),
        in_force: 1,
    }];

    // Edit: the attacker turns pinning off and keeps the old signature.
    let edited = v1.replace(
        "defaults:\n  unlisted: deny",
        "defaults:\n  unlisted: allow\n  mode: report",
    );
    assert_ne!(edited, v1);
    vol.update(&files(&edited, Some(&sig1), &ca));
    counted(&run, "bad-signature", 1).await;
    let line = logged(
        &mut run,
        &["signed pinset refused", &sha256_hex(edited.as_bytes())],
    )
    .await;
    assert!(
        line.contains("bad-signature") && line.contains(&a.id),
        "{line}"
    );
    rows.push(Row {
        attack: "edit (unlisted: allow, mode: report; old .sig)",
        result: "refused: bad-signature".into(),
        in_force: in_force(&run).await.0,
    });

    // One byte changed: the pin's first character.
    let mut one = v1.clone().into_bytes();
    let at = one.windows(7).position(|s| s == b"sha256/").unwrap() + 7;
    one[at] = if one[at] == b'A' { b'B' } else { b'A' };
    let one = String::from_utf8(one).unwrap();
    vol.update(&files(&one, Some(&sig1), &ca));
    counted(&run, "bad-signature", 2).await;
    logged(
        &mut run,
        &["signed pinset refused", &sha256_hex(one.as_bytes())],
    )
    .await;
    rows.push(Row {
        attack: "one byte changed",
        result: "refused: bad-signature".into(),
        in_force: in_force(&run).await.0,
    });

    // Key swap: the attacker signs a new serial with their own key.
    let v2x = w.pinset(2, &w.wrong, "enforce");
    vol.update(&files(&v2x, Some(&attacker.sign(&v2x)), &ca));
    counted(&run, "bad-signature", 3).await;
    let line = logged(
        &mut run,
        &["signed pinset refused", &sha256_hex(v2x.as_bytes())],
    )
    .await;
    assert!(
        line.contains("none of") && line.contains(&b.id),
        "the keys tried: {line}"
    );
    rows.push(Row {
        attack: "key swap (serial 2 signed by an unknown key)",
        result: "refused: bad-signature".into(),
        in_force: in_force(&run).await.0,
    });

    // Strip the signature.
    vol.update(&files(&v2x, None, &ca));
    counted(&run, "bad-signature", 4).await;
    logged(
        &mut run,
        &["signed pinset refused", &sha256_hex(v2x.as_bytes())],
    )
    .await;
    rows.push(Row {
        attack: "strip signature (no pins.yaml.sig)",
        result: "refused: bad-signature".into(),
        in_force: in_force(&run).await.0,
    });

    // Through all of it, serial 1 stayed in force and enforced.
    assert_eq!(
        in_force(&run).await,
        (1, a.id.clone(), sha256_hex(v1.as_bytes()))
    );
    assert_eq!(fetch(&run).await.status, 200);
    assert_eq!(reloads(&run, "success").await, 0);

    // A real update, signed by the second key: applied.
    let v3 = w.pinset(3, &w.wrong, "enforce");
    vol.update(&files(&v3, Some(&b.sign(&v3)), &ca));
    counted(&run, "success", 1).await;
    assert_eq!(
        in_force(&run).await,
        (3, b.id.clone(), sha256_hex(v3.as_bytes()))
    );
    assert_eq!(
        fetch(&run).await.error(),
        Some("pin-mismatch"),
        "serial 3 pins another key"
    );
    rows.push(Row {
        attack: "(valid, serial 3, second key B)",
        result: "applied".into(),
        in_force: 3,
    });

    // Replay: the old, validly signed serial 1.
    vol.update(&files(&v1, Some(&sig1), &ca));
    counted(&run, "rollback", 1).await;
    let line = logged(
        &mut run,
        &["signed pinset refused", &sha256_hex(v1.as_bytes())],
    )
    .await;
    assert!(line.contains("rollback") && line.contains(&a.id), "{line}");
    rows.push(Row {
        attack: "replay (old signed serial 1)",
        result: "refused: rollback".into(),
        in_force: in_force(&run).await.0,
    });

    // The same serial with other content, validly signed.
    let v3b = w.good(3);
    vol.update(&files(&v3b, Some(&b.sign(&v3b)), &ca));
    counted(&run, "rollback", 2).await;
    logged(
        &mut run,
        &["signed pinset refused", &sha256_hex(v3b.as_bytes())],
    )
    .await;
    rows.push(Row {
        attack: "same serial 3, other content (signed)",
        result: "refused: rollback".into(),
        in_force: in_force(&run).await.0,
    });

    assert_eq!(in_force(&run).await.0, 3);
    assert_eq!(fetch(&run).await.error(), Some("pin-mismatch"));
    assert_eq!(
        admin(&run, "/readyz").await.status,
        200,
        "a refusal keeps the sidecar ready"
    );
    let kept = std::fs::read_to_string(state.path().join("serial")).unwrap();
    assert!(kept.contains('3'), "--state-dir keeps serial 3: {kept}");
    print_table(&rows);
}

#[tokio::test]
async fn a_start_without_a_valid_signature_is_not_ready_and_refuses_everything() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
    let ka = a.public.display().to_string();
    let ca = w.pki.root.pem();
    let v1 = w.good(1);
    let mut rows = Vec::new();

    for (attack, sig, reason) in [
        ("unsigned start (no pins.yaml.sig)", None, "bad-signature"),
        (
            "start with a bad signature",
            Some(a.sign("something else")),
            "bad-signature",
        ),
    ] {
        let secret = tempfile::tempdir().unwrap();
        let mut vol = SecretVolume::new(secret.path(), &files(&v1, sig.as_deref(), &ca));
        let mut run = sidecar(&vol, &["--pinset-key", &ka]).await;
        run.until("NOT READY").await;
        let ready = admin(&run, "/readyz").await;
        assert_eq!(ready.status, 503);
        assert!(
            ready
                .body
                .starts_with(&format!("not ready: no pinset in force: {reason}")),
            "{}",
            ready.body
        );
        let r = fetch(&run).await;
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (503, Some("no-pinset")),
            "never allow-everything"
        );
        assert_eq!(reloads(&run, reason).await, 1);
        rows.push(Row {
            attack,
            result: format!("not ready (503 {reason}); requests 503 no-pinset"),
            in_force: 0,
        });

        // The first good version the kubelet delivers is applied.
        vol.update(&files(&v1, Some(&a.sign(&v1)), &ca));
        run.until("signed pinset in force").await;
        assert_eq!(admin(&run, "/readyz").await.status, 200);
        assert_eq!(fetch(&run).await.status, 200);
    }
    print_table(&rows);
}

#[tokio::test]
async fn a_restart_with_state_dir_keeps_the_floor() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
    let ka = a.public.display().to_string();
    let ca = w.pki.root.pem();
    let state = tempfile::tempdir().unwrap();
    let st = state.path().display().to_string();
    let secret = tempfile::tempdir().unwrap();
    let (v4, v5) = (w.good(4), w.good(5));
    let (s4, s5) = (a.sign(&v4), a.sign(&v5));

    let mut vol = SecretVolume::new(secret.path(), &files(&v5, Some(&s5), &ca));
    let mut run = sidecar(&vol, &["--pinset-key", &ka, "--state-dir", &st]).await;
    run.until("signed pinset in force").await;
    // The floor is written just after the swap: wait for it, then stop.
    for _ in 0..200 {
        if std::fs::read_to_string(state.path().join("serial")).is_ok_and(|s| s.contains('5')) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(run);

    // The attacker replays serial 4 and restarts the pod's sidecar.
    vol.update(&files(&v4, Some(&s4), &ca));
    let mut run = sidecar(&vol, &["--pinset-key", &ka, "--state-dir", &st]).await;
    run.until("NOT READY").await;
    let ready = admin(&run, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("rollback"), "{}", ready.body);
    // Nothing is in force: the floor is named as what it is.
    assert!(
        ready.body.contains(
            "serial 4 is lower than the serial kept in --state-dir (5, applied by this pod \
             before this start)"
        ),
        "{}",
        ready.body
    );
    assert!(!ready.body.contains("serial in force"), "{}", ready.body);
    assert_eq!(fetch(&run).await.error(), Some("no-pinset"));
    assert_eq!(reloads(&run, "rollback").await, 1);
    eprintln!("| replay across a restart, --state-dir | refused: rollback, not ready | 0 (floor 5 kept) |");

    // Without --state-dir the floor is what the sidecar starts with: the
    // README's stated limit.
    let mut run = sidecar(&vol, &["--pinset-key", &ka]).await;
    run.until("signed pinset in force").await;
    assert_eq!(in_force(&run).await.0, 4);
    eprintln!("| replay across a restart, no --state-dir | applied (documented limit) | 4 |");
}

/// The `--state-dir` floor is the pod's own: a new pod (rollout,
/// reschedule, scale-up) had none and applied an old signed pinset the
/// Secret's writer put back. `--pinset-min-serial`, in the pod's args, is a
/// floor every start begins with: below it is refused `rollback` at start
/// and at reload, as a floor kept in `--state-dir` is.
#[tokio::test]
async fn a_new_pod_refuses_a_serial_below_the_minimum() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
    let ka = a.public.display().to_string();
    let ca = w.pki.root.pem();
    // Serial 1 pins another key: the retired one an attacker holds.
    let old1 = w.pinset(1, &w.wrong, "enforce");
    let (v3, v4) = (w.good(3), w.good(4));
    let secret = tempfile::tempdir().unwrap();
    let mut vol = SecretVolume::new(secret.path(), &files(&old1, Some(&a.sign(&old1)), &ca));
    // A new pod: a fresh, empty --state-dir.
    let state = tempfile::tempdir().unwrap();
    let st = state.path().display().to_string();
    let mut run = sidecar(
        &vol,
        &[
            "--pinset-key",
            &ka,
            "--state-dir",
            &st,
            "--pinset-min-serial",
            "3",
        ],
    )
    .await;
    let seen = run.until("NOT READY").await;
    let ready = admin(&run, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("rollback") && ready.body.contains("minimum serial (3"),
        "{}",
        ready.body
    );
    assert_eq!(fetch(&run).await.error(), Some("no-pinset"));
    assert_eq!(reloads(&run, "rollback").await, 1);
    // Logged as a --state-dir floor's refusal is: result, file, key.
    let hash = sha256_hex(old1.as_bytes());
    assert!(
        seen.iter()
            .any(|l| l.contains("rollback") && l.contains(&hash) && l.contains(&a.id)),
        "{seen:#?}"
    );
    eprintln!("| new pod, old signed serial 1, --pinset-min-serial 3 | refused: rollback, not ready | 0 |");

    // The minimum itself is applied, then a newer one.
    vol.update(&files(&v3, Some(&a.sign(&v3)), &ca));
    run.until("signed pinset in force").await;
    assert_eq!(in_force(&run).await.0, 3);
    assert_eq!(fetch(&run).await.status, 200);
    vol.update(&files(&v4, Some(&a.sign(&v4)), &ca));
    counted(&run, "success", 1).await;
    assert_eq!(in_force(&run).await.0, 4);

    // Reload to the old serial: refused, the last good one stays.
    vol.update(&files(&old1, Some(&a.sign(&old1)), &ca));
    counted(&run, "rollback", 2).await;
    assert_eq!(in_force(&run).await.0, 4);
    assert_eq!(fetch(&run).await.status, 200);
    drop(run);

    // Without a --state-dir at all, the minimum still holds at start.
    let mut run = sidecar(&vol, &["--pinset-key", &ka, "--pinset-min-serial", "3"]).await;
    run.until("NOT READY").await;
    assert_eq!(reloads(&run, "rollback").await, 1);
    assert_eq!(fetch(&run).await.error(), Some("no-pinset"));
}

/// A running pod below the minimum (the minimum raised past the serial it
/// holds in `--state-dir`): the higher floor is the minimum.
#[tokio::test]
async fn the_minimum_raises_a_lower_kept_floor() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::Ed25519);
    let ka = a.public.display().to_string();
    let ca = w.pki.root.pem();
    let v2 = w.good(2);
    let secret = tempfile::tempdir().unwrap();
    let vol = SecretVolume::new(secret.path(), &files(&v2, Some(&a.sign(&v2)), &ca));
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("serial"), "1\n").unwrap();
    let st = state.path().display().to_string();
    let mut run = sidecar(
        &vol,
        &[
            "--pinset-key",
            &ka,
            "--state-dir",
            &st,
            "--pinset-min-serial",
            "5",
        ],
    )
    .await;
    run.until("NOT READY").await;
    let ready = admin(&run, "/readyz").await;
    assert!(ready.body.contains("minimum serial (5"), "{}", ready.body);
}

/// `--pinset-min-serial` is a floor for signed pinsets only, and a
/// positive integer.
#[test]
fn the_minimum_needs_a_key_and_a_serial() {
    for (args, expect) in [
        (vec!["--pinset-min-serial", "3"], "--pinset-key"),
        (
            vec!["--pinset-key", "k.pub", "--pinset-min-serial", "0"],
            "positive integer",
        ),
        (
            vec!["--pinset-key", "k.pub", "--pinset-min-serial", "x"],
            "positive integer",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["run", "--pins", "pins.yaml"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

/// `--state-dir` is checked at start: a missing directory (or a file) stops
/// `run` naming the flag, where it used to start and refuse every request
/// for good; an unreadable floor in an existing one says that nothing is
/// in force, not that a last good pinset is.
#[tokio::test]
async fn a_state_dir_that_is_not_there_stops_the_start() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
    let ka = a.public.display().to_string();
    let secret = tempfile::tempdir().unwrap();
    let v1 = w.good(1);
    let vol = SecretVolume::new(
        secret.path(),
        &files(&v1, Some(&a.sign(&v1)), &w.pki.root.pem()),
    );
    let pins = vol.path("pins.yaml").display().to_string();
    let state = tempfile::tempdir().unwrap();
    let missing = state.path().join("state");
    let file = write(state.path(), "a-file", "");
    for (dir, why) in [(&missing, "No such file"), (&file, "not a directory")] {
        let d = dir.display().to_string();
        // Bounded: a start that is not refused runs until killed.
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["run", "--pins", &pins, "--listen", "127.0.0.1:0"])
            .args([
                "--admin",
                "127.0.0.1:0",
                "--pinset-key",
                &ka,
                "--state-dir",
                &d,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{d}: still running after 10 s: the start was not refused"))
            .unwrap();
        let (code, err) = (out.status.code(), String::from_utf8_lossy(&out.stderr));
        assert_eq!(code, Some(1), "{d}: {err}");
        assert!(
            err.contains(&format!("pinproxy: --state-dir {d}: ")) && err.contains(why),
            "{d}: {err}"
        );
    }

    // An existing directory with a corrupt floor: started, nothing applied.
    std::fs::create_dir(&missing).unwrap();
    std::fs::write(missing.join("serial"), "not a serial\n").unwrap();
    let d = missing.display().to_string();
    let mut run = sidecar(&vol, &["--pinset-key", &ka, "--state-dir", &d]).await;
    let seen = run.until("pinset load failed").await;
    let line = seen.last().unwrap();
    assert!(line.contains("nothing is in force yet"), "{line}");
    assert!(
        !seen.iter().any(|l| l.contains("last good pinset stays")),
        "{seen:?}"
    );
    let ready = admin(&run, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("corrupt"), "{}", ready.body);
    assert_eq!(fetch(&run).await.error(), Some("no-pinset"));
}

/// The real cosign (scripts/tools/cosign.sh; scripts/test.sh exports
/// PINPROXY_COSIGN): a pinset it signs with `sign-blob --key` is applied
/// with its cosign.pub as `--pinset-key`.
fn cosign() -> PathBuf {
    if let Some(p) = std::env::var_os("PINPROXY_COSIGN") {
        return PathBuf::from(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "PINPROXY_COSIGN is unset under CI (scripts/test.sh sets it)"
    );
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tools/cosign.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/tools/cosign.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test]
async fn a_pinset_signed_by_cosign_sign_blob_is_applied() {
    let w = World::new().await;
    let work = tempfile::tempdir().unwrap();
    let cosign = |args: &[&str]| {
        let out = std::process::Command::new(cosign())
            .args(args)
            .current_dir(work.path())
            .env("HOME", work.path())
            .env("TUF_ROOT", work.path().join("tuf"))
            .env("COSIGN_PASSWORD", "drill")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cosign {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    cosign(&["generate-key-pair"]);
    let v7 = w.good(7);
    std::fs::write(work.path().join("pins.yaml"), &v7).unwrap();
    let sig = cosign(&[
        "sign-blob",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        "--yes",
        "pins.yaml",
    ]);
    let sig = String::from_utf8(sig).unwrap();
    let secret = tempfile::tempdir().unwrap();
    let ca = w.pki.root.pem();
    let vol = SecretVolume::new(secret.path(), &files(&v7, Some(&sig), &ca));
    let key = work.path().join("cosign.pub").display().to_string();
    let mut run = sidecar(&vol, &["--pinset-key", &key]).await;
    run.until("signed pinset in force").await;
    assert_eq!(in_force(&run).await.0, 7);
    assert_eq!(fetch(&run).await.status, 200);
}
