//! Keys given inline: `run --pinset-key-pem` / `PINPROXY_PINSET_KEY_PEM`
//! (no key file at all), and the pod `pinproxy inject --pinset-key-inline`
//! renders, its sidecar's args and env fed to the built binary as the
//! kubelet would start it (docs/kubernetes.md, "Signed pinsets").

use std::collections::BTreeMap;
use std::path::Path;

use pinproxy::sign::Algorithm;
use serde_yaml::Value;

use crate::support::*;
use crate::{admin, fetch, files, in_force, reloads, Key, World};

fn pem_of(key: &Key) -> String {
    std::fs::read_to_string(&key.public).unwrap()
}

/// Only the inline form, by flag and by env: a pinset signed with the key
/// is applied, one signed with another key is refused `bad-signature` and
/// the signed one stays in force, as with `--pinset-key FILE`.
#[tokio::test]
async fn inline_keys_verify_as_key_files_do() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
    let b = Key::new(keys.path(), "b", Algorithm::Ed25519);
    let attacker = Key::new(keys.path(), "x", Algorithm::EcdsaP256);
    let ca = w.pki.root.pem();
    // Both keys in one value (the rotation case); either may verify.
    let both = format!("{}{}", pem_of(&a), pem_of(&b));
    for (how, signer) in [("flag", &a), ("env", &b)] {
        let (v1, v2) = (w.good(1), w.good(2));
        let secret = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let st = state.path().display().to_string();
        let mut vol = SecretVolume::new(secret.path(), &files(&v1, Some(&signer.sign(&v1)), &ca));
        let builder = TestProxy::builder()
            .pins_path(vol.path("pins.yaml"))
            .args(&["--state-dir", &st, "--pinset-min-serial", "1"]);
        let builder = match how {
            "flag" => builder.args(&["--pinset-key-pem", &both]),
            _ => builder.env("PINPROXY_PINSET_KEY_PEM", &both),
        };
        let mut run = builder.spawn().await;
        run.until("signed pinset in force").await;
        assert_eq!(admin(&run, "/readyz").await.status, 200, "{how}");
        assert_eq!(fetch(&run).await.status, 200, "{how}");
        assert_eq!(
            in_force(&run).await,
            (1, signer.id.clone(), crate::sha256_hex(v1.as_bytes())),
            "{how}: /pins names the inline key"
        );
        let metrics = admin(&run, "/metrics").await.body;
        let info = metrics
            .lines()
            .find(|l| l.starts_with("pinproxy_pinset_info{"))
            .unwrap_or_else(|| panic!("{how}: no pinproxy_pinset_info in {metrics}"));
        assert!(
            info.contains(&format!("key=\"{}\"", signer.id)) && info.contains("serial=\"1\""),
            "{how}: {info}"
        );

        // Another key's signature: refused, v1 stays.
        vol.update(&files(&v2, Some(&attacker.sign(&v2)), &ca));
        run.until("bad-signature").await;
        assert_eq!(reloads(&run, "bad-signature").await, 1, "{how}");
        assert_eq!(in_force(&run).await.0, 1, "{how}");
        assert_eq!(fetch(&run).await.status, 200, "{how}");

        // Signed by the key: applied, and the floor kept in --state-dir.
        vol.update(&files(&v2, Some(&signer.sign(&v2)), &ca));
        run.until("pinset reloaded (signature verified)").await;
        assert_eq!(in_force(&run).await.0, 2, "{how}");
        for _ in 0..200 {
            if std::fs::read_to_string(state.path().join("serial")).is_ok_and(|s| s.contains('2')) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            std::fs::read_to_string(state.path().join("serial"))
                .unwrap()
                .contains('2'),
            "{how}: --state-dir keeps the floor"
        );
    }
}

/// A value that is not one or more public keys stops the start, naming
/// the flag and the env variable, before anything listens.
#[test]
fn a_malformed_inline_key_refuses_to_start() {
    let keys = tempfile::tempdir().unwrap();
    let (_, pem) = pinproxy::sign::SigningKey::generate(Algorithm::EcdsaP256).unwrap();
    let truncated = pem.public_pem[..pem.public_pem.len() / 2].to_string();
    let with_private = format!("{}{}", pem.public_pem, pem.private_pem.as_str());
    let pins = keys.path().join("pins.yaml");
    std::fs::write(&pins, "version: 1\nserial: 1\nhosts: {}\n").unwrap();
    for (what, value, expect) in [
        ("not PEM", "sha256/abc", "no PEM block"),
        ("a truncated key", truncated.as_str(), "PEM"),
        (
            "a private key after the public one",
            &with_private,
            "PEM block 2: the file holds a private key",
        ),
    ] {
        for env in [false, true] {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"));
            cmd.args(["run", "--pins"]).arg(&pins);
            cmd.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
            if env {
                cmd.env("PINPROXY_PINSET_KEY_PEM", value);
            } else {
                cmd.args(["--pinset-key-pem", value]);
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what} (env {env}): {err}");
            assert!(
                err.contains("--pinset-key-pem (PINPROXY_PINSET_KEY_PEM): ")
                    && err.contains(expect),
                "{what} (env {env}): {err}"
            );
            assert!(!err.contains("PRIVATE KEY-----"), "no key bytes: {err}");
            assert!(!err.contains("listening"), "{what}: started: {err}");
        }
    }
}

/// `pinproxy inject` as an operator runs it (binary, stdin to stdout).
fn inject(args: &[&str], manifest: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .arg("inject")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "inject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  \
    labels: {app: web}\nspec:\n  containers:\n  - {name: app, image: app:1}\n";

/// The sidecar of an injected pod: its args after `run`, and its env as
/// the kubelet sets it (downward-API fields filled in).
fn sidecar_of(rendered: &str) -> (Vec<String>, Vec<(String, String)>, Value) {
    let pod: Value = serde_yaml::from_str(rendered).unwrap();
    let side = pod["spec"]["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pinproxy")
        .unwrap()
        .clone();
    let args = side["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let env = side["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => "web".to_string(),
                    Some("metadata.namespace") => "shop".to_string(),
                    other => panic!("unexpected env source {other:?}"),
                },
            };
            (name, value)
        })
        .collect();
    (args, env, pod)
}

/// docs/kubernetes.md's walkthrough: `inject --pinset-key-inline
/// pinset.pub` renders a pod whose sidecar, started with exactly its args
/// and env (the pod's paths mapped to local directories, the ports to free
/// ones), verifies a signed pinset with the key in its env — no key file
/// anywhere — and refuses one signed by another key. The pod has no key
/// volume: nothing in the namespace holds the key.
#[tokio::test]
async fn an_injected_pods_sidecar_verifies_with_the_inline_key() {
    let w = World::new().await;
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "pinset", Algorithm::EcdsaP256);
    let attacker = Key::new(keys.path(), "x", Algorithm::EcdsaP256);
    let rendered = inject(
        &[
            "--pinset-key-inline",
            a.public.to_str().unwrap(),
            "--pinset-min-serial",
            "2",
        ],
        POD,
    );
    let (args, env, pod) = sidecar_of(&rendered);
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        !volumes.contains(&"pinproxy-pinset-key") && volumes.contains(&"pinproxy-state"),
        "{volumes:?}"
    );
    assert!(!args.iter().any(|a| a == "--pinset-key"), "{args:?}");
    assert!(
        env.iter()
            .any(|(k, v)| k == "PINPROXY_PINSET_KEY_PEM" && *v == pem_of(&a)),
        "{env:?}"
    );

    // The pod's directories, here.
    let ca = w.pki.root.pem();
    let secret = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let ca_out = tempfile::tempdir().unwrap();
    let (v1, v2, v3) = (w.good(1), w.good(2), w.good(3));
    let mut vol = SecretVolume::new(secret.path(), &files(&v2, Some(&a.sign(&v2)), &ca));
    let local: BTreeMap<&str, &Path> = [
        ("/var/lib/pinproxy-state", state.path()),
        ("/var/run/pinproxy", ca_out.path()),
    ]
    .into();
    assert_eq!(args[0], "run");
    let mut rest: Vec<String> = Vec::new();
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // The harness gives these: the Secret's mount and free ports.
            "--pins" | "--listen" | "--admin" => {
                it.next();
            }
            a if a.starts_with('/') => {
                let dir = local
                    .get(a)
                    .unwrap_or_else(|| panic!("a pod path this test does not map: {a}"));
                rest.push(dir.display().to_string());
            }
            a => rest.push(a.to_string()),
        }
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let mut builder = TestProxy::builder()
        .pins_path(vol.path("pins.yaml"))
        .args(&rest);
    for (k, v) in &env {
        builder = builder.env(k, v);
    }
    let mut run = builder.spawn().await;
    run.until("signed pinset in force").await;
    assert_eq!(in_force(&run).await.0, 2);
    assert_eq!(in_force(&run).await.1, a.id);
    assert_eq!(fetch(&run).await.status, 200);

    // Whoever writes the pins Secret, without the private key: refused.
    vol.update(&files(&v3, Some(&attacker.sign(&v3)), &ca));
    run.until("bad-signature").await;
    assert_eq!(reloads(&run, "bad-signature").await, 1);
    // An old validly signed one, below the pod's --pinset-min-serial.
    vol.update(&files(&v1, Some(&a.sign(&v1)), &ca));
    run.until("rollback").await;
    assert_eq!(reloads(&run, "rollback").await, 1);
    assert_eq!(in_force(&run).await.0, 2);
    assert_eq!(fetch(&run).await.status, 200);
}

/// A key file that is not a public key stops `inject` and `webhook` at
/// start, naming the flag and the file; both ways of giving keys at once
/// are refused with the reason.
#[test]
fn inject_and_webhook_refuse_a_bad_inline_key_file() {
    let keys = tempfile::tempdir().unwrap();
    let a = Key::new(keys.path(), "a", Algorithm::EcdsaP256);
    let junk = keys.path().join("junk.pub");
    std::fs::write(&junk, "not a key\n").unwrap();
    let private = keys.path().join("a.key");
    let (_, pem) = pinproxy::sign::SigningKey::generate(Algorithm::Ed25519).unwrap();
    std::fs::write(&private, pem.private_pem.as_bytes()).unwrap();
    for (file, expect) in [
        (&junk, "no PEM block"),
        (&private, "holds a private key"),
        (&keys.path().join("absent.pub"), "absent.pub"),
    ] {
        for cmd in [
            vec!["inject", "-f", "-"],
            vec!["webhook", "--tls-cert", "c", "--tls-key", "k"],
        ] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
                .args(&cmd)
                .arg("--pinset-key-inline")
                .arg(file)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
            assert!(
                err.contains("--pinset-key-inline") && err.contains(expect),
                "{cmd:?}: {err}"
            );
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["inject", "-f", "-", "--pinset-key-inline"])
        .arg(&a.public)
        .args(["--pinset-key-from", "configmap/pinset-key"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--pinset-key-inline and --pinset-key-from together"),
        "{err}"
    );
}
