//! The `pin`, `check` and `sign` commands, run as the built binary.

mod support;
use support::run_pinproxy as pinproxy;

use std::path::Path;
use std::process::Command;

use pinproxy::policy::pin::Pin;

/// docs/reference.md, "pinproxy pin": `pin` must equal this pipeline, byte for
/// byte.
fn openssl_pin(pem: &Path) -> String {
    let script = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        pem.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("sha256/{}", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn pin_output_equals_the_openssl_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::Pki::new(&["api.test"]);
    // ECDSA (rcgen's default) and RSA, PEM and DER, several per file.
    let rsa_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256);
    let mut pems = vec![("root", pki.root.pem()), ("int", pki.int.pem())];
    if let Ok(key) = rsa_key {
        let mut params = rcgen::CertificateParams::new(vec!["rsa.test".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let cert = params.self_signed(&key).unwrap();
        pems.push(("rsa", cert.pem()));
    }
    for (name, pem) in &pems {
        let path = support::write(dir.path(), &format!("{name}.pem"), pem);
        let (code, out, err) = pinproxy(&["pin", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let first = out.split_whitespace().next().unwrap();
        assert_eq!(first, openssl_pin(&path), "{name}");
    }
    let bundle = support::write(
        dir.path(),
        "bundle.pem",
        &format!("{}{}", pki.int.pem(), pki.root.pem()),
    );
    let (_, out, _) = pinproxy(&["pin", bundle.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(&pki.int.pin().to_string()));
    assert!(
        lines[0].contains("subject=")
            && lines[0].contains("issuer=")
            && lines[0].contains("notAfter="),
        "{}",
        lines[0]
    );
    let der = dir.path().join("leaf.der");
    std::fs::write(&der, pki.leaf.cert.as_ref()).unwrap();
    let (code, out, _) = pinproxy(&["pin", der.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&pki.leaf.pin().to_string()), "{out}");
    let (code, _, err) = pinproxy(&["pin", dir.path().join("missing.pem").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
}

/// A file `check` or `pin` cannot use at all is the command failing:
/// one `pinproxy: …` line on stderr (docs/reference.md, "Exit codes"),
/// nothing on stdout, exit 1.
#[test]
fn unusable_files_are_errors_on_stderr_with_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good.yaml");
    let good = good.to_str().unwrap();
    let missing_pem = dir.path().join("missing.pem");
    for (args, says) in [
        (vec!["check", missing], format!("cannot read {missing}: ")),
        (
            vec!["check", good, "--max-pinset-bytes", "10"],
            format!("{good} is larger than the 10-byte limit"),
        ),
        (
            vec!["pin", missing_pem.to_str().unwrap()],
            format!("cannot read {}: ", missing_pem.display()),
        ),
        (
            vec!["pin", good],
            format!("{good}: not a certificate, public key"),
        ),
    ] {
        let (code, out, err) = pinproxy(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(out, "", "{args:?}: nothing on stdout");
        assert!(
            err.starts_with(&format!("pinproxy: {says}")) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

/// webpki keeps a trust anchor's SPKI without its SEQUENCE; the root pin
/// pinproxy computes from an anchor must still equal openssl's.
#[test]
fn trust_anchor_pin_equals_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let root = support::root("Anchor Root");
    let path = support::write(dir.path(), "root.pem", &root.pem());
    let der = root.der();
    let anchor = webpki::anchor_from_trusted_cert(&der).unwrap();
    let from_anchor = Pin::of_spki_contents(anchor.subject_public_key_info.as_ref());
    assert_eq!(from_anchor.to_string(), openssl_pin(&path));
    // And a real Mozilla root (RSA 4096: a long-form DER length).
    let isrg = webpki_roots::TLS_SERVER_ROOTS
        .iter()
        .find(|a| String::from_utf8_lossy(a.subject.as_ref()).contains("ISRG Root X1"))
        .expect("ISRG Root X1 is in webpki-roots");
    assert_eq!(
        Pin::of_spki_contents(isrg.subject_public_key_info.as_ref()).to_string(),
        "sha256/C5+lpZ7tcVwmwQIMcRtPbsQtWLABXhQzejna0wHFr8M="
    );
}

#[test]
fn check_rejects_each_malformed_fixture_naming_host_and_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || name == "good.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let (code, out, err) = pinproxy(&["check", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{name} must fail: {out}{err}");
        if let Some(expect) = first.strip_prefix("# expect: ") {
            assert!(
                out.contains(expect),
                "{name}: expected {expect:?} in:\n{out}{err}"
            );
        } else if let Some(n) = first.strip_prefix("# expect-count: ") {
            let errors = out.lines().filter(|l| l.contains(": error: ")).count();
            assert_eq!(errors, n.parse::<usize>().unwrap(), "{name}:\n{out}");
        } else {
            panic!("{name} has no '# expect' line");
        }
        seen += 1;
    }
    assert!(seen >= 25, "only {seen} fixtures");
}

/// An unknown field no longer hides the file's other problems: each
/// unknown block key is reported, and the rest is still validated.
#[test]
fn check_lists_every_problem_beside_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins.yaml");
    std::fs::write(
        &path,
        "version: 1\nhosts:\n  api.local.test:\n    pins: [\"sha256/notbase64!\"]\n    bogus: 1\n    \
         mode: report\n  other.test:\n    pins: []\n    also_bogus:\n      - x\n",
    )
    .unwrap();
    let (code, out, err) = pinproxy(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let p = path.display();
    let errors: Vec<&str> = out.lines().collect();
    assert_eq!(errors.len(), 4, "{out}");
    for (line, expect) in errors.iter().zip([
        format!("{p}: error: line 4: host \"api.local.test\": pins[0]: "),
        format!("{p}: error: line 5, column 5: hosts.api.local.test: unknown field `bogus`"),
        format!("{p}: error: line 8: host \"other.test\": pins: empty"),
        format!("{p}: error: line 9, column 5: hosts.other.test: unknown field `also_bogus`"),
    ]) {
        assert!(line.starts_with(&expect), "{expect:?} in:\n{out}");
    }
}

#[test]
fn check_accepts_a_good_file_and_warns() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good.yaml");
    let (code, out, err) = pinproxy(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning: line 11: host \"single.test\": pins: only one pin"),
        "{out}"
    );
    assert!(out.contains("ok (4 hosts)"), "{out}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pins.yaml");
    let (code, out, _) = pinproxy(&["check", example.to_str().unwrap()]);
    assert_eq!(code, 0, "examples/pins.yaml: {out}");
}

/// `check --key` takes a comma-separated list as `run --pinset-key` and
/// `PINPROXY_PINSET_KEY` do: any one of the keys may verify.
#[test]
fn check_key_accepts_a_comma_separated_list() {
    let dir = tempfile::tempdir().unwrap();
    let at = |f: &str| dir.path().join(f).display().to_string();
    for prefix in ["old", "new"] {
        let (code, out, err) = pinproxy(&["keygen", "--out", &at(prefix)]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good.yaml"),
    )
    .unwrap();
    let pins = dir.path().join("pins.yaml");
    std::fs::write(&pins, format!("serial: 3\n{good}")).unwrap();
    let pins = pins.display().to_string();
    let (code, out, err) = pinproxy(&["sign", "--key", &at("new.key"), &pins]);
    assert_eq!(code, 0, "{out}{err}");
    let both = format!("{},{}", at("old.pub"), at("new.pub"));
    let (code, out, err) = pinproxy(&["check", &pins, "--key", &both]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{pins}: signature ok (serial 3, key sha256/")),
        "{out}"
    );
    // Only the key that did not sign: refused, so both were read.
    let (code, out, _) = pinproxy(&["check", &pins, "--key", &at("old.pub")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(": error: bad-signature: "), "{out}");
    // No signature at all: the error says how one is made.
    std::fs::remove_file(format!("{pins}.sig")).unwrap();
    let (code, out, _) = pinproxy(&["check", &pins, "--key", &both]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{pins}: error: bad-signature: the signature file is missing: \
             `pinproxy sign --key KEY FILE` writes FILE.sig beside the pinset"
        )),
        "{out}"
    );
}

/// `version --ct-log-list` prints the built-in list *and* the one in use;
/// its help must not say "instead of".
#[test]
fn version_help_says_the_list_is_described_besides_the_built_in_one() {
    let (code, out, _) = pinproxy(&["version", "--help"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("instead of"), "{out}");
    assert!(
        out.contains("Also describe this CT log list, after the built-in one"),
        "{out}"
    );
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/ct/data/log_list.json");
    let (code, out, _) = pinproxy(&["version", "--ct-log-list", list.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("CT log list built in: "), "{out}");
    assert!(out.contains("CT log list in use: "), "{out}");
}

/// `pinproxy version | head -1`, `pinproxy inject … | kubectl apply -f -`,
/// `pinproxy redirect --dry-run | less` quit early: the reader goes away before the output is all written. The command ends
/// as a tool killed by SIGPIPE looks to a shell (exit status 141), without
/// a panic's message and backtrace or an error on stderr.
#[test]
fn a_reader_that_goes_away_ends_a_one_shot_command_quietly() {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = root.join("crates/ct/data/log_list.json");
    let manifest = root.join("tests/fixtures/inject/deployment.in.yaml");
    for args in [
        vec!["version", "--ct-log-list", list.to_str().unwrap()],
        vec!["inject", "-f", manifest.to_str().unwrap()],
        vec![
            "redirect",
            "--dry-run",
            "--proxy-uid",
            "1337",
            "--port",
            "3128",
        ],
    ] {
        // The reading end is closed before the command starts: its first
        // write meets no reader (EPIPE), whatever the timing.
        let (reader, writer) = UnixStream::pair().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(&args)
            .stdout(Stdio::from(OwnedFd::from(writer)))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = pinproxy(&["check"]);
    assert_eq!(code, 2);
    let (code, _, _) = pinproxy(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, _) = pinproxy(&["run"]);
    assert_eq!(code, 2, "--pins is required");
}

#[tokio::test]
async fn pin_connect_and_check_live_against_a_local_server() {
    let support::LiveServer { pki, up, dir, ca } = support::live_server().await;
    let target = format!("127.0.0.1:{}", up.addr.port());
    let out = tokio::task::spawn_blocking({
        let ca = ca.clone();
        move || {
            pinproxy(&[
                "pin",
                "--connect",
                &target,
                "--servername",
                "live.test",
                "--ca-file",
                ca.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(out.0, 0, "{}{}", out.1, out.2);
    for pin in [pki.leaf.pin(), pki.int.pin(), pki.root.pin()] {
        assert!(
            out.1.contains(&pin.to_string()),
            "{pin} missing:\n{}",
            out.1
        );
    }
    assert!(out.1.contains("  live.test:\n    pins:\n"), "{}", out.1);

    let pins = |p: &[Pin], next: &str| {
        let p: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        format!(
            "version: 1\nhosts:\n  live.test:\n    pins: [{}]\n    trust: ca.pem\n    address: {}\n{next}",
            p.join(", "),
            up.addr
        )
    };
    let good = support::write(
        dir.path(),
        "good.yaml",
        &pins(
            &[pki.int.pin()],
            &format!("    next_pins: [{}]\n", Pin::from_bytes([5; 32])),
        ),
    );
    let out =
        tokio::task::spawn_blocking(move || pinproxy(&["check", "--live", good.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(out.0, 0, "{}{}", out.1, out.2);
    assert!(
        out.1.contains(&format!(
            "live.test: ok, matches {} (intermediate)\n",
            pki.int.pin()
        )),
        "{}",
        out.1
    );
    assert!(out.1.contains("next_pins: MISMATCH"), "{}", out.1);
    let bad = support::write(
        dir.path(),
        "bad.yaml",
        &pins(&[Pin::from_bytes([6; 32])], ""),
    );
    let out =
        tokio::task::spawn_blocking(move || pinproxy(&["check", "--live", bad.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(out.0, 1, "{}", out.1);
    assert!(
        out.1.contains("MISMATCH: requests would be refused"),
        "{}",
        out.1
    );
    // The live chain, labelled and in order from the leaf to the anchor.
    let live = format!(
        "live chain pins: {} (leaf), {} (intermediate), {} (anchor)",
        pki.leaf.pin(),
        pki.int.pin(),
        pki.root.pin()
    );
    assert!(out.1.contains(&live), "{}", out.1);
}

/// `sign` loads the file as `check` does (without `--live`) before it
/// signs: a pinset every sidecar would refuse (`failure`) is not signed,
/// and the reasons are `check`'s.
#[test]
fn sign_refuses_a_pinset_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let at = |f: &str| dir.path().join(f).display().to_string();
    let (code, out, err) = pinproxy(&["keygen", "--out", &at("k")]);
    assert_eq!(code, 0, "{out}{err}");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (fixture, expect) in [
        ("bad_pin_base64.yaml", "pins[1]: pin is not valid base64"),
        ("missing_bundle.yaml", "trust: cannot read CA bundle"),
    ] {
        let body = std::fs::read_to_string(fixtures.join(fixture)).unwrap();
        let pins = dir.path().join(fixture);
        std::fs::write(&pins, format!("serial: 9\n{body}")).unwrap();
        let p = pins.display().to_string();
        let (code, out, err) = pinproxy(&["sign", "--key", &at("k.key"), &p]);
        assert_eq!(code, 1, "{fixture}: {out}{err}");
        assert!(
            out.contains(&format!("{p}: error: ")) && out.contains(expect),
            "{fixture}: {out}{err}"
        );
        assert!(out.contains(&format!("{p}: not signed")), "{out}");
        assert!(
            !Path::new(&format!("{p}.sig")).exists(),
            "{fixture}: signed anyway"
        );
    }
}

/// `FILE.sig` is replaced, never followed: a symlink there used to have
/// its target overwritten with the signature.
#[test]
fn sign_replaces_a_symlinked_sig_without_writing_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let at = |f: &str| dir.path().join(f).display().to_string();
    let (code, out, err) = pinproxy(&["keygen", "--out", &at("k")]);
    assert_eq!(code, 0, "{out}{err}");
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good.yaml"),
    )
    .unwrap();
    std::fs::write(at("pins.yaml"), format!("serial: 2\n{good}")).unwrap();
    std::fs::write(at("precious.txt"), "precious\n").unwrap();
    std::os::unix::fs::symlink(at("precious.txt"), at("pins.yaml.sig")).unwrap();
    let (code, out, err) = pinproxy(&["sign", "--key", &at("k.key"), &at("pins.yaml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(at("precious.txt")).unwrap(),
        "precious\n"
    );
    let sig = dir.path().join("pins.yaml.sig");
    assert!(!sig.symlink_metadata().unwrap().is_symlink());
    let (code, out, err) = pinproxy(&["check", &at("pins.yaml"), "--key", &at("k.pub")]);
    assert_eq!(code, 0, "the replaced .sig verifies: {out}{err}");
    // Nothing left behind but the files named.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "k.key",
            "k.pub",
            "pins.yaml",
            "pins.yaml.sig",
            "precious.txt"
        ]
    );
}
