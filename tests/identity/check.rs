//! `pinproxy check` and `check --live` on identity problems.

use super::*;

// === pinproxy check ===

fn pinproxy(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(args)
        .output()
        .expect("run pinproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `check` names the host and field of every identity problem, and
/// never prints a key.
#[test]
fn check_reports_identity_problems_by_host_and_field() {
    let server = server_pki(&[PAY]);
    let workload_ca = Authority::root("Workload CA", 0x0606);
    let (a, b) = (identity(&workload_ca, "a"), identity(&workload_ca, "b"));
    let old_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "old");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = OffsetDateTime::now_utc() - time::Duration::days(90);
    p.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let old = p
        .signed_by(&old_key, &workload_ca.cert, &workload_ca.key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("ca.pem", server.root_pem()),
        ("a.crt", a.cert_pem.clone()),
        ("a.key", a.key_pem.clone()),
        ("b.key", b.key_pem.clone()),
        ("old.crt", old.pem()),
        ("old.key", old_key.serialize_pem()),
        (
            "stale.crl",
            server
                .int
                .crl(&[], OffsetDateTime::now_utc() - time::Duration::days(1)),
        ),
    ] {
        write(dir.path(), name, &text);
    }
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let pin = [server.int.pin(), server.root.pin()];
    let bad = format!(
        "version: 1\nhosts:\n{}{}{}{}",
        entry(
            "mismatch.test",
            &pin,
            addr,
            "    client_cert: {cert: a.crt, key: b.key}\n"
        ),
        entry("unreadable.test", &pin, addr, "    crls: [missing.crl]\n"),
        entry(
            "names.test",
            &pin,
            addr,
            "    names: [\"not a name\", \"spiffe://example.org/a/*/b\"]\n"
        ),
        entry(
            "nocert.test",
            &pin,
            addr,
            "    client_cert: {cert: nope.crt, key: a.key}\n"
        ),
    );
    let path = write(dir.path(), "bad.yaml", &bad);
    let (code, out) = pinproxy(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "host \"mismatch.test\": client_cert: the key in",
        "b.key does not match the certificate in",
        "host \"unreadable.test\": crls[0]: cannot read",
        "host \"names.test\": names[0]: \"not a name\" is neither a DNS name nor a URI",
        "host \"names.test\": names[1]:",
        "host \"nocert.test\": client_cert: cannot read",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    for key in [&a.key_pem, &b.key_pem] {
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!out.contains(&body[..32]), "a key in check's output");
    }
    // Expired client certificate and CRL: warnings, exit 0.
    let warn = format!(
        "version: 1\nhosts:\n{}{}",
        entry(
            "old.test",
            &pin,
            addr,
            "    client_cert: {cert: old.crt, key: old.key}\n"
        ),
        entry("stale.test", &pin, addr, "    crls: [stale.crl]\n"),
    );
    let path = write(dir.path(), "warn.yaml", &warn);
    let (code, out) = pinproxy(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: line 7: host \"old.test\": client_cert:")
            && out.contains("the client certificate expired on"),
        "{out}"
    );
    assert!(
        out.contains("host \"stale.test\": crls:") && out.contains("the CRL expired"),
        "{out}"
    );
    assert!(out.contains("ok (2 hosts)"), "{out}");
}

/// `check --live` says per host whether the server asked for a client
/// certificate and whether the handshake with it succeeded.
#[tokio::test]
async fn check_live_reports_whether_a_client_certificate_was_asked_for_and_accepted() {
    let server = server_pki(&["live.mtls.test"]);
    let workload_ca = Authority::root("Workload CA", 0x0707);
    let stranger_ca = Authority::root("Another CA", 0x0808);
    let (good, stranger) = (
        identity(&workload_ca, "good"),
        identity(&stranger_ca, "stranger"),
    );
    let strict = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let plain = upstream(server.chain(), server.key_der(), UpstreamOpts::new("plain")).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("ca.pem", server.root_pem()),
        ("good.crt", good.cert_pem.clone()),
        ("good.key", good.key_pem.clone()),
        ("stranger.crt", stranger.cert_pem.clone()),
        ("stranger.key", stranger.key_pem.clone()),
    ] {
        write(dir.path(), name, &text);
    }
    let pin = [server.int.pin(), server.root.pin()];
    let names = "    names: [live.mtls.test]\n";
    let with = |c: &str| format!("{names}    client_cert: {{cert: {c}.crt, key: {c}.key}}\n");
    let yaml = format!(
        "version: 1\nhosts:\n{}{}{}{}",
        entry("good.test", &pin, strict.addr, &with("good")),
        entry("bare.test", &pin, strict.addr, names),
        entry("stranger.test", &pin, strict.addr, &with("stranger")),
        entry("unasked.test", &pin, plain.addr, &with("good")),
    );
    let path = write(dir.path(), "pins.yaml", &yaml);
    let (code, out) =
        tokio::task::spawn_blocking(move || pinproxy(&["check", "--live", path.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(code, 1, "{out}");
    let line = |host: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{host}: client certificate:")))
            .unwrap_or_else(|| panic!("no client certificate line for {host}:\n{out}"))
            .to_string()
    };
    let l = line("good.test");
    assert!(
        l.contains("the server asked for one; the handshake presenting")
            && l.contains(&good.pin.to_string())
            && l.ends_with("succeeded"),
        "{l}"
    );
    let l = line("bare.test");
    assert!(
        l.contains("REQUIRED") && l.contains("add client_cert"),
        "{l}"
    );
    let l = line("stranger.test");
    assert!(
        l.contains("REFUSED") && l.contains(&stranger.pin.to_string()),
        "{l}"
    );
    let l = line("unasked.test");
    assert!(l.contains("did not ask for one"), "{l}");
    // The chain verdicts are still there.
    assert!(out.contains("good.test: ok, matches"), "{out}");
}
