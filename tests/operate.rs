//! Operating pinproxy (issue 11): the CLI an operator meets — durations,
//! help, messages, pins from keys and CSRs — run as the built binary.

mod support;

use support::proxy::TestProxy;
use support::run_pinproxy as pinproxy;
use support::*;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `pin` on keys and CSRs equals openssl's pin of the same public key,
/// for every key kind and encoding an operator holds in reserve.
#[test]
fn pin_of_keys_and_csrs_equals_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    sh(&format!(
        "cd {d} && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pk8 2>/dev/null \
         && openssl rsa -in rsa.pk8 -traditional -out rsa.pkcs1 2>/dev/null \
         && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pk8 \
         && openssl ec -in ec.pk8 -out ec.sec1 2>/dev/null \
         && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.pk8 \
         && openssl genpkey -algorithm ed25519 -out ed.pk8 \
         && openssl pkey -in rsa.pk8 -pubout -out rsa.pub \
         && openssl rsa -in rsa.pk8 -RSAPublicKey_out -out rsa.pkcs1.pub 2>/dev/null \
         && openssl pkey -in ed.pk8 -pubout -out ed.pub \
         && openssl req -new -key ec.pk8 -subj /CN=leaf2 -out ec.csr \
         && openssl req -new -key rsa.pk8 -subj /CN=leaf3 -out rsa.csr \
         && openssl pkey -in ec.pk8 -pubout -outform der -out ec.pub.der \
         && openssl pkey -in rsa.pk8 -outform der -out rsa.pk8.der \
         && openssl req -in ec.csr -outform der -out ec.csr.der"
    ));
    let openssl_key = |key: &str| {
        format!(
            "sha256/{}",
            sh(&format!(
                "openssl pkey -in {d}/{key} -pubout -outform der | openssl dgst -sha256 -binary | base64"
            ))
        )
    };
    let rsa = openssl_key("rsa.pk8");
    let ec = openssl_key("ec.pk8");
    let ec384 = openssl_key("ec384.pk8");
    let ed = openssl_key("ed.pk8");
    let cases = [
        ("rsa.pk8", &rsa, "RSA"),
        ("rsa.pkcs1", &rsa, "RSA"),
        ("rsa.pk8.der", &rsa, "RSA"),
        ("rsa.pub", &rsa, "RSA"),
        ("rsa.pkcs1.pub", &rsa, "RSA"),
        ("rsa.csr", &rsa, "leaf3"),
        ("ec.pk8", &ec, "EC P-256"),
        ("ec.sec1", &ec, "EC P-256"),
        ("ec.pub.der", &ec, "EC P-256"),
        ("ec.csr", &ec, "leaf2"),
        ("ec.csr.der", &ec, "leaf2"),
        ("ec384.pk8", &ec384, "EC P-384"),
        ("ed.pk8", &ed, "Ed25519"),
        ("ed.pub", &ed, "Ed25519"),
    ];
    for (file, want, says) in cases {
        let path = Path::new(&dir.path()).join(file);
        let (code, out, err) = pinproxy(&["pin", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{file}: {err}");
        assert_eq!(
            out.split_whitespace().next(),
            Some(want.as_str()),
            "{file}: {out}"
        );
        assert!(out.contains(says), "{file}: {out}");
        // A private key's file never has its secret echoed.
        assert!(!out.contains("PRIVATE KEY-----"), "{out}");
    }
    // Garbage is refused, naming the file.
    let junk = support::write(
        dir.path(),
        "junk.pem",
        "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
    );
    let (code, _, err) = pinproxy(&["pin", junk.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("junk.pem"), "{err}");
}

/// Durations take units (and plain seconds, as before); a bad one is a
/// usage error that says what is expected.
#[test]
fn durations_take_units() {
    for ok in ["5s", "500ms", "2m", "5", "0.5"] {
        let (code, _, err) = pinproxy(&[
            "run",
            "--pins",
            "/nonexistent/pins.yaml",
            "--connect-timeout",
            ok,
            "--revoke-grace",
            ok,
        ]);
        // Past argument parsing: it fails reading the pinset, not on the flag.
        assert_eq!(code, 1, "{ok}: {err}");
        assert!(
            err.contains("cannot read /nonexistent/pins.yaml"),
            "{ok}: {err}"
        );
    }
    let (code, _, err) = pinproxy(&["run", "--pins", "x", "--connect-timeout", "5x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use e.g. 5s, 500ms, 2m"), "{err}");
}

/// `check`: one host is "1 host"; a pinset that refuses everything says so.
#[test]
fn check_grammar_and_the_deny_everything_warning() {
    let dir = tempfile::tempdir().unwrap();
    let one = support::write(
        dir.path(),
        "one.yaml",
        "version: 1\nhosts:\n  a.test:\n    pins: [sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=, sha256/YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=]\n",
    );
    let (code, out, _) = pinproxy(&["check", one.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("ok (1 host)\n"), "{out}");
    let none = support::write(dir.path(), "none.yaml", "version: 1\nhosts: {}\n");
    let (code, out, _) = pinproxy(&["check", none.to_str().unwrap()]);
    assert_eq!(code, 0, "a warning, not an error");
    assert!(out.contains("refuses all egress"), "{out}");
    let observe = support::write(
        dir.path(),
        "observe.yaml",
        "version: 1\ndefaults:\n  unlisted: allow\nhosts: {}\n",
    );
    let (_, out, _) = pinproxy(&["check", observe.to_str().unwrap()]);
    assert!(!out.contains("refuses all egress"), "{out}");
}

/// `pin --connect --address` dials the given address with SNI = the host;
/// its snippet carries the `trust:` and `address:` it used, and an
/// untrusted chain still prints one, marked, with exit 1.
#[tokio::test]
async fn pin_connect_snippet_carries_trust_and_address_and_marks_untrusted() {
    let support::LiveServer {
        pki,
        up,
        dir: _dir,
        ca,
    } = support::live_server().await;
    let addr = up.addr.to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pinproxy(&args)
        })
    };
    let with_ca = vec![
        "pin".into(),
        "--connect".into(),
        format!("live.test:{}", up.addr.port()),
        "--address".into(),
        addr.clone(),
        "--ca-file".into(),
        ca.display().to_string(),
    ];
    let (code, out, err) = run(with_ca).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("at {addr} (SNI live.test)")), "{out}");
    assert!(out.contains("  live.test:\n    pins:\n"), "{out}");
    assert!(
        out.contains(&format!("    trust: {}", ca.display())),
        "{out}"
    );
    assert!(out.contains(&format!("    address: {addr}\n")), "{out}");
    assert!(
        out.contains(&format!("    ports: [{}]\n", up.addr.port())),
        "{out}"
    );
    assert!(!out.contains("UNTRUSTED"), "{out}");

    // Mozilla's roots don't know the test root: untrusted, snippet marked.
    let without_ca = vec![
        "pin".into(),
        "--connect".into(),
        "live.test:443".into(),
        "--address".into(),
        addr.clone(),
    ];
    let (code, out, _) = run(without_ca).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("# NOT VALID"), "{out}");
    assert!(out.contains("# UNTRUSTED chain: do not paste"), "{out}");
    assert!(out.contains(&pki.leaf.pin().to_string()), "{out}");
    assert!(out.contains(&format!("    address: {addr}\n")), "{out}");
}

/// A self-signed server (the README's first example) is untrusted by any
/// CA, and `trust: pin-only` is how it is pinned: the output says so
/// instead of only "fix trust first". A chain issued by a CA does not get
/// the hint.
#[tokio::test]
async fn pin_connect_points_a_self_signed_server_at_pin_only() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["self.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    let up = upstream(vec![cert.der().clone()], key_der, UpstreamOpts::new("self")).await;
    let addr = up.addr.to_string();
    let args = [
        "pin".to_string(),
        "--connect".into(),
        format!("self.test:{}", up.addr.port()),
        "--address".into(),
        addr,
    ];
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pinproxy(&args)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("# UNTRUSTED chain: do not paste"), "{out}");
    assert!(
        out.contains("# SELF-SIGNED: the server presents one certificate it issued itself")
            && out.contains("`trust: pin-only`"),
        "{out}"
    );

    // Untrusted, but issued by a CA: no pin-only hint.
    let support::LiveServer { up, dir: _dir, .. } = support::live_server().await;
    let args = [
        "pin".to_string(),
        "--connect".into(),
        format!("live.test:{}", up.addr.port()),
        "--address".into(),
        up.addr.to_string(),
    ];
    let (code, out, _) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pinproxy(&args)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("SELF-SIGNED"), "{out}");
}

/// `pin --connect IP:PORT --servername NAME`: the snippet is keyed by the
/// name, so it carries `address:` (pasted without it, pinproxy would
/// resolve the name instead of dialing the server tested); another DNS
/// name dialed is named in a comment. A chain that validated for a name
/// it does not carry prints that validated path, anchor included and
/// labelled as one, not an "UNTRUSTED" presented chain.
#[tokio::test]
async fn pin_connect_snippet_reaches_what_was_tested_and_keeps_a_wrong_names_path() {
    let support::LiveServer {
        pki,
        up,
        dir: _dir,
        ca,
    } = support::live_server().await;
    let (addr, port) = (up.addr.to_string(), up.addr.port());
    let ca = ca.display().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pinproxy(&args)
        })
    };
    let pin = |rest: &[&str]| -> Vec<String> {
        ["pin", "--ca-file", &ca]
            .iter()
            .chain(rest)
            .map(|a| a.to_string())
            .collect()
    };

    let by_ip = pin(&["--connect", &addr, "--servername", "live.test"]);
    let (code, out, err) = run(by_ip).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  live.test:\n    pins:\n"), "{out}");
    assert!(out.contains(&format!("    address: {addr}\n")), "{out}");

    let other = format!("localhost:{port}");
    let by_name = pin(&["--connect", &other, "--servername", "live.test"]);
    let (code, out, err) = run(by_name).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("    address: "), "no IP was dialed: {out}");
    assert!(
        out.contains("    # address: IP:PORT   # tested by dialing localhost;"),
        "{out}"
    );

    let wrong = format!("wrong.test:{port}");
    let wrong_name = pin(&["--connect", &wrong, "--address", &addr]);
    let (code, out, _) = run(wrong_name).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("# WRONG NAME"), "{out}");
    assert!(!out.contains("UNTRUSTED"), "the chain validated: {out}");
    let snippet = out.split_once("  wrong.test:\n").expect("a snippet").1;
    let int = pki.int.pin();
    let root = pki.root.pin();
    assert!(
        snippet.contains(&format!(
            "- {int}  # intermediate: O=pinproxy tests, CN=Test Intermediate"
        )),
        "{snippet}"
    );
    assert!(
        snippet.contains(&format!("- {root}  # root / top of chain: trust anchor")),
        "{snippet}"
    );
    assert!(
        snippet.contains(&format!("    address: {addr}\n")),
        "{snippet}"
    );
}

/// The app container's environment exactly as `pinproxy inject` writes it
/// for `pod.in.yaml`, with the CA directory moved to `ca_dir`.
fn injected_env(ca_dir: &Path, proxy: std::net::SocketAddr) -> Vec<(String, String)> {
    let input = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject/pod.in.yaml"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["inject", "--proxy-port", &proxy.port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let pod: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let env = pod["spec"]["containers"][0]["env"].as_sequence().unwrap();
    env.iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .map(|(k, v)| {
            let v = v.replace("/var/run/pinproxy", &ca_dir.display().to_string());
            (k, v)
        })
        .collect()
}

/// Finding 4: the injected trust variables named the pod CA alone, so an
/// unlisted tunnel (the real server's certificate) and a direct NO_PROXY
/// call failed with curl (60). With exactly the injected environment, both
/// verify now: ca-bundle.crt carries Mozilla's roots and the
/// --ca-bundle-extra CA (here the "cluster CA" both servers use).
#[tokio::test]
async fn curl_with_the_injected_environment_reaches_tunnels_and_direct_hosts() {
    let cluster = root("Cluster Internal CA");
    let tunnelled = leaf(&["partner.example.test"], &cluster);
    let direct = leaf(&["localhost"], &cluster);
    let chain = |l: &Leaf| vec![l.cert.clone()];
    let up_tunnel = upstream(
        chain(&tunnelled),
        tunnelled.key_der(),
        UpstreamOpts::new("tunnelled"),
    )
    .await;
    let up_direct = upstream(
        chain(&direct),
        direct.key_der(),
        UpstreamOpts::new("direct"),
    )
    .await;
    let extra_dir = tempfile::tempdir().unwrap();
    let extra = write(extra_dir.path(), "cluster-ca.pem", &cluster.pem());
    let resolver = Arc::new(StaticResolver(
        [(
            "partner.example.test".to_string(),
            vec!["127.0.0.1".parse().unwrap()],
        )]
        .into_iter()
        .collect(),
    ));
    let yaml = format!(
        "version: 1\ndefaults:\n  unlisted: allow\n  allow_private: true\n  ports: [{}]\nhosts: {{}}\n",
        up_tunnel.addr.port()
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .resolver(resolver)
        .run()
        .await;
    // What --ca-out --ca-bundle-extra writes, as the sidecar would.
    let ca_dir = tempfile::tempdir().unwrap();
    p.intercept.write_trust(ca_dir.path(), &[extra]).unwrap();

    let env = injected_env(ca_dir.path(), p.addr);
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for want in ["HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "CURL_CA_BUNDLE"] {
        assert!(names.contains(&want), "{want} not injected: {names:?}");
    }
    let curl = |url: String, env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .env_clear()
                .envs(env)
                .args(["-sS", "--max-time", "10", &url])
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
    };
    // Through HTTPS_PROXY: an unlisted host is tunnelled, the app sees the
    // server's own certificate.
    let tunnel_url = format!("https://partner.example.test:{}/", up_tunnel.addr.port());
    let (code, out) = curl(tunnel_url.clone(), env.clone()).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream=tunnelled"), "{out}");
    // NO_PROXY (localhost is in it): straight to the server.
    let direct_url = format!("https://localhost:{}/", up_direct.addr.port());
    let (code, out) = curl(direct_url.clone(), env.clone()).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream=direct"), "{out}");
    assert_eq!(
        p.requests("unlisted", "tunnel"),
        1,
        "only the first went through the proxy"
    );

    // The old trust variables (the pod CA alone) fail both: finding 4.
    let pod_ca_only: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.clone(), v.replace("ca-bundle.crt", "ca.crt")))
        .collect();
    for url in [tunnel_url, direct_url] {
        let (code, out) = curl(url, pod_ca_only.clone()).await.unwrap();
        assert_eq!(code, 60, "{out}");
    }
}
/// Every flag and argument of every command has help text, and `run
/// --help` names the log filter variable.
#[test]
fn every_flag_has_help() {
    use clap::CommandFactory;
    let cli = pinproxy::cli::Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{} --{id}", sub.get_name()));
            }
        }
    }
    assert!(missing.is_empty(), "flags without help: {missing:?}");
    let (code, out, _) = pinproxy(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("PINPROXY_LOG "), "{out}");
}
