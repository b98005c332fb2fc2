//! Key material never reaches an error message or a log line (issue 21,
//! attack 2). A client key whose newlines were lost — one-line PEM, a
//! common copy-paste accident — made the PEM parser's message quote the
//! whole key as decimal bytes (`missing section end marker: [80, 82, 73,
//! …]`) in `check` output and in an ERROR line on every reload. Each case
//! here runs the built binary and searches everything it printed for any
//! 16-byte run of the key in every form a message could carry it.

mod support;

use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
use support::proxy::TestProxy;
use support::*;

/// A client certificate and its key (PEM, and the key's DER).
struct Identity {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn identity() -> Identity {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "client");
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.self_signed(&key).unwrap();
    Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: key.serialize_der(),
    }
}

/// `pem` with its newlines turned into spaces: what a paste into a
/// one-line field leaves.
fn one_line(pem: &str) -> String {
    format!("{}\n", pem.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Every 16-byte window of the key in each form a message could carry it:
/// the DER and the PEM text as Rust's `{:?}` of bytes (`[48, 129, …`
/// without the brackets), as hex (either case), and every 16-character
/// window of the PEM's base64 body.
fn forms(id: &Identity, pasted: &str) -> Vec<String> {
    let mut out = Vec::new();
    for bytes in [&id.der[..], pasted.as_bytes(), id.key.as_bytes()] {
        for w in bytes.windows(16) {
            let dec: Vec<String> = w.iter().map(u8::to_string).collect();
            out.push(dec.join(", "));
            let hex: String = w.iter().map(|b| format!("{b:02x}")).collect();
            out.push(hex.to_uppercase());
            out.push(hex);
        }
    }
    let body: String = id.key.lines().filter(|l| !l.starts_with("-----")).collect();
    let body: Vec<char> = body.chars().collect();
    for w in body.windows(16) {
        out.push(w.iter().collect());
    }
    out
}

#[track_caller]
fn assert_no_key(what: &str, text: &str, forms: &[String]) {
    if let Some(hit) = forms.iter().find(|f| text.contains(f.as_str())) {
        panic!("{what} carries key bytes ({hit:?}):\n{text}");
    }
}

fn pinset(cert: &str, key: &str) -> String {
    format!(
        "version: 1\nhosts:\n  pay.test:\n    pins: [sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=]\n    \
         client_cert: {{cert: {cert}, key: {key}}}\n"
    )
}

fn check(pins: &Path) -> String {
    let (code, out, err) = run_pinproxy(&["check", pins.to_str().unwrap()]);
    assert_eq!(code, 1, "a broken key is a load error:\n{out}{err}");
    format!("{out}{err}")
}

#[test]
fn check_names_the_file_and_the_problem_never_the_key() {
    let id = identity();
    let pasted = one_line(&id.key);
    let forms = forms(&id, &pasted);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tls.crt", &id.cert);
    write(dir.path(), "tls.key", &pasted);
    let pins = write(dir.path(), "pins.yaml", &pinset("tls.crt", "tls.key"));
    let out = check(&pins);
    assert_no_key("check, one-line key", &out, &forms);
    assert!(
        out.contains("tls.key") && out.contains("one line"),
        "names the file and the likely cause:\n{out}"
    );

    // A combined certificate file with the key pasted after it: the
    // *certificate* file's error must not quote it either.
    write(dir.path(), "both.pem", &format!("{}{pasted}", id.cert));
    write(dir.path(), "good.key", &id.key);
    let pins = write(dir.path(), "pins.yaml", &pinset("both.pem", "good.key"));
    let out = check(&pins);
    assert_no_key("check, combined cert+key file", &out, &forms);
    assert!(out.contains("both.pem"), "{out}");

    // A CA bundle that is really a combined file.
    write(
        dir.path(),
        "bundle.pem",
        &format!("{}{pasted}", identity().cert),
    );
    let pins = write(
        dir.path(),
        "pins.yaml",
        "version: 1\nhosts:\n  a.test:\n    pins: [sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=]\n    trust: bundle.pem\n",
    );
    let out = check(&pins);
    assert_no_key("check, CA bundle with a key", &out, &forms);
    assert!(out.contains("bundle.pem"), "{out}");
}

#[test]
fn ca_key_and_pin_errors_never_quote_the_key() {
    let id = identity();
    let pasted = one_line(&id.key);
    let forms = forms(&id, &pasted);
    let dir = tempfile::tempdir().unwrap();
    let pins = write(
        dir.path(),
        "pins.yaml",
        "version: 1\ndefaults: {unlisted: allow}\nhosts: {}\n",
    );
    // A CA certificate file with the key pasted after it on one line.
    let cert = write(dir.path(), "ca.crt", &format!("{}{pasted}", id.cert));
    let key = write(dir.path(), "ca.key", &pasted);
    let (code, out, err) = run_pinproxy(&[
        "run",
        "--pins",
        pins.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--ca-cert",
        cert.to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "a broken CA file stops the start");
    assert_no_key("run --ca-cert/--ca-key", &format!("{out}{err}"), &forms);
    assert!(err.contains("ca.crt"), "{err}");

    let broken = write(
        dir.path(),
        "broken.pem",
        &format!("{}-----END RSA PRIVATE KEY-----\n", pasted.trim_end()),
    );
    for file in [&key, &broken] {
        let (_, out, err) = run_pinproxy(&["pin", file.to_str().unwrap()]);
        assert_no_key("pin FILE", &format!("{out}{err}"), &forms);
    }
}

/// The kubelet swaps in a one-line key: the reload fails, and its ERROR
/// line (text and JSON logs) names the file, not the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_logs_the_file_never_the_key() {
    for format in ["text", "json"] {
        let id = identity();
        let pasted = one_line(&id.key);
        let forms = forms(&id, &pasted);
        let dir = tempfile::tempdir().unwrap();
        let pins = pinset("id/tls.crt", "id/tls.key");
        let mut volume = SecretVolume::new(
            dir.path(),
            &[
                ("pins.yaml", &pins),
                ("id/tls.crt", &id.cert),
                ("id/tls.key", &id.key),
            ],
        );
        let mut run = TestProxy::builder()
            .pins_path(volume.path("pins.yaml"))
            .args(&["--log-format", format])
            .spawn()
            .await;
        let mut lines = run.until("ready").await;
        volume.update(&[
            ("pins.yaml", &pins),
            ("id/tls.crt", &id.cert),
            ("id/tls.key", &pasted),
        ]);
        lines.extend(run.until("pinset reload failed").await);
        // A text message continues on the lines after.
        lines.extend(run.more(std::time::Duration::from_millis(500)).await);
        let text = lines.join("\n");
        assert_no_key(&format!("{format} logs"), &text, &forms);
        assert!(text.contains("tls.key"), "{text}");
    }
}
