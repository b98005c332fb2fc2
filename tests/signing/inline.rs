//! Keys given inline: `run --pinset-key-pem` / `PINPROXY_PINSET_KEY_PEM`
//! (no key file at all).

use pinproxy::sign::Algorithm;

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
