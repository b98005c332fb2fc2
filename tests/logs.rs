//! What an operator reads (issue 11, finding 6): every refusal is logged,
//! an untrusted chain says why and shows itself in /pins, JSON logs carry
//! arrays as arrays, reloads say when they recover and what SIGHUP did,
//! text logs have no colour codes when not on a terminal. The built binary.

mod support;

use std::time::Duration;

use support::proxy::TestProxy;
use support::*;

const HOST: &str = "api.pinned.test";

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// A CA move: the server's chain now leads to a root missing from trust:.
/// Refused as untrusted-certificate *and* logged with why and what was
/// presented, and /pins shows the failing chain, not the last good one.
#[tokio::test]
async fn an_untrusted_chain_is_logged_and_shown_in_pins() {
    let old = Pki::new(&[HOST]);
    let moved_root = root("Another Public Root");
    let moved_int = intermediate("Another Issuing CA", &moved_root, None);
    let moved = Pki {
        leaf: leaf(&[HOST], &moved_int),
        int: moved_int,
        root: moved_root,
    };
    let up = switchable_upstream(old.chain(), old.leaf.key_der(), UpstreamOpts::new("real")).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &old.root.pem());
    let pins = write(
        dir.path(),
        "pins.yaml",
        &pinset(HOST, &[old.int.pin(), old.root.pin()], "", up.addr),
    );
    let mut run = TestProxy::builder()
        .pins_path(pins.clone())
        .args(&["--log-format", "json", "--no-watch"])
        .spawn()
        .await;
    assert_eq!(
        get(run.listen, &format!("http://{HOST}/")).await.status,
        200
    );

    up.switch(moved.chain(), moved.leaf.key_der());
    // A new generation has a new pool, so the next request handshakes
    // afresh (as a new pod, or any new upstream connection, would).
    let text = std::fs::read_to_string(&pins).unwrap();
    std::fs::write(&pins, format!("{text}# touched\n")).unwrap();
    run.signal("-HUP");
    run.until("SIGHUP: new pinset in force").await;
    let r = get(run.listen, &format!("http://{HOST}/")).await;
    assert_eq!(r.error(), Some("untrusted-certificate"), "{r:?}");

    let lines = run.until("untrusted upstream chain").await;
    let event = json(lines.last().unwrap());
    assert_eq!(event["level"], "WARN");
    assert_eq!(event["host"], HOST);
    assert_eq!(event["reason"], "unknown-issuer");
    let presented: Vec<&str> = event["presented"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        presented,
        [moved.leaf.pin().to_string(), moved.int.pin().to_string()]
    );
    // The refusal itself is logged too, with its reason.
    let refused = run.until("\"refused\"").await;
    let event = json(refused.last().unwrap());
    assert_eq!(event["reason"], "untrusted-certificate");
    assert_eq!(event["host"], HOST);

    let pins_view = get(run.admin, &format!("http://{}/pins", run.admin)).await;
    let v: serde_json::Value = serde_json::from_str(&pins_view.body).unwrap();
    let last = &v["hosts"][0]["last_seen"];
    assert_eq!(last["outcome"], "untrusted", "{last}");
    assert_eq!(last["failure"], "unknown-issuer", "{last}");
    assert_eq!(
        last["chain"][0]["pin"],
        moved.leaf.pin().to_string(),
        "{last}"
    );
}

/// Every refusal is logged once per window per host and reason, not only
/// pin mismatches.
#[tokio::test]
async fn refusals_are_logged_and_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let pins = write(dir.path(), "pins.yaml", "version: 1\nhosts: {}\n");
    let mut run = TestProxy::builder()
        .pins_path(pins.clone())
        .args(&["--log-format", "json"])
        .spawn()
        .await;
    for _ in 0..12 {
        let r = get(run.listen, "http://denied.example/").await;
        assert_eq!(r.error(), Some("host-not-allowed"));
    }
    let r = get(run.listen, "http://other.example/").await;
    assert_eq!(r.error(), Some("host-not-allowed"));
    let lines = run.until("other.example").await;
    let refused: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| json(l))
        .filter(|v| v["message"] == "refused")
        .collect();
    let denied = refused
        .iter()
        .filter(|v| v["host"] == "denied.example")
        .count();
    assert!((1..=5).contains(&denied), "{denied} lines for 12 refusals");
    let other = refused.last().unwrap();
    assert_eq!(other["reason"], "host-not-allowed");
    assert_eq!(other["level"], "WARN");
}

/// A reload that recovers says so; SIGHUP says what it did; text logs on a
/// pipe carry no ANSI colour codes.
#[tokio::test]
async fn reload_recovery_and_sighup_are_logged_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let good = "version: 1\ndefaults:\n  unlisted: allow\nhosts: {}\n";
    let pins = write(dir.path(), "pins.yaml", good);
    let mut run = TestProxy::builder()
        .pins_path(pins.clone())
        .args(&["--no-watch"])
        .spawn()
        .await;
    std::fs::write(&pins, "version: 1\nhosts:\n  a.test:\n    pins: [\n").unwrap();
    run.signal("-HUP");
    let failed = run.until("SIGHUP: reload failed").await;
    std::fs::write(&pins, format!("{good}# fixed\n")).unwrap();
    run.signal("-HUP");
    let recovered = run.until("SIGHUP: new pinset in force").await;
    assert!(
        recovered
            .iter()
            .any(|l| l.contains("pinset reload recovered")),
        "{recovered:?}"
    );
    std::fs::write(&pins, format!("{good}# fixed\n")).unwrap();
    run.signal("-HUP");
    let unchanged = run.until("SIGHUP: pinset unchanged").await;
    for line in failed.iter().chain(&recovered).chain(&unchanged) {
        assert!(
            !line.contains('\u{1b}'),
            "ANSI escape in a piped log: {line:?}"
        );
    }
}

/// Issue 20: the start names what went wrong and what is listening — the
/// ready line lists the transparent listener, a port clash names the flag
/// that chose the port, a missing pinset is the first and only complaint.
#[tokio::test]
async fn startup_lines_name_the_listeners_and_the_flag_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let pins = write(dir.path(), "pins.yaml", "version: 1\nhosts: {}\n");
    // Ephemeral ports on ::1, never on 127.0.0.1, where the other tests
    // pick theirs: a port taken here must not be one they just picked.
    let mut run = TestProxy::builder()
        .pins_path(pins.clone())
        .args(&["--transparent", "[::1]:0", "--log-format", "json"])
        .spawn()
        .await;
    let lines = run.until("pinproxy ready").await;
    let ready = json(lines.last().unwrap());
    let transparent = ready["transparent"].as_str().unwrap_or_default();
    assert!(transparent.starts_with("[::1]:"), "{ready}");
    assert_eq!(ready["listen"], run.listen.to_string());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().map(|a| a.to_string()).unwrap();
    let pins_arg = pins.to_str().unwrap();
    for (flag, name) in [
        ("--admin", "--admin / PINPROXY_ADMIN"),
        ("--listen", "--listen / PINPROXY_LISTEN"),
        ("--transparent", "--transparent / PINPROXY_TRANSPARENT"),
    ] {
        let mut args = vec!["run", "--pins", pins_arg];
        for (f, default) in [("--listen", "[::1]:0"), ("--admin", "[::1]:0")] {
            if f != flag {
                args.extend([f, default]);
            }
        }
        args.extend([flag, &taken]);
        let (code, _, err) = run_pinproxy(&args);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("cannot listen on {taken} (set by {name})")),
            "{flag}: {err}"
        );
    }

    let missing = dir.path().join("nowhere/pins.yaml");
    let (code, _, err) = run_pinproxy(&["run", "--pins", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot read") && !err.contains("watch"),
        "{err}"
    );
}

/// A ClientHello naming another host than the one dialed is logged with
/// that name as sent, quoted: never Rust debug text (`Ok(Name(…))`,
/// `Some(…)`). Both places that refuse it: the interception of a pinned
/// host and an unlisted byte tunnel.
#[tokio::test]
async fn sni_mismatch_detail_names_the_sni_plainly() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            // Held open, never answered: the refusal comes first.
            tokio::spawn(async move {
                let _s = s;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    let yaml = format!(
        "version: 1\ndefaults:\n  unlisted: allow\n  allow_private: true\n  ports: [{port}]\n\
         hosts:\n  {HOST}:\n    pins: [{}]\n    address: 127.0.0.1:{port}\n",
        pinproxy::policy::pin::Pin::from_bytes([8; 32])
    );
    let mut run = TestProxy::builder()
        .pinset(&yaml)
        .args(&["--log-format", "json"])
        .spawn()
        .await;
    for (target, detail) in [
        (
            format!("{HOST}:{port}"),
            "the TLS SNI \"other.pinned.test\" names another host than the one dialed",
        ),
        (
            format!("127.0.0.1:{port}"),
            "the TLS SNI \"other.pinned.test\" names another host than the CONNECT",
        ),
    ] {
        let (status, _, tcp) = connect_status(run.listen, &target).await;
        assert_eq!(status, 200, "CONNECT {target}");
        let cfg = rustls::ClientConfig::builder_with_provider(pinproxy::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("other.pinned.test").unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect_err("a foreign SNI is refused");
        let lines = run.until("sni-mismatch").await;
        let event = json(lines.last().unwrap());
        assert_eq!(event["detail"], detail, "{event}");
    }
}

/// A pinset's warnings at start are the event reloads log them as
/// (`pinset warning`, with `generation` and `warning`), so one query finds
/// them whenever they were loaded.
#[tokio::test]
async fn warnings_at_start_are_the_documented_event() {
    let pki = Pki::new(&[HOST]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &pki.root.pem());
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let pins = write(
        dir.path(),
        "pins.yaml",
        &pinset(HOST, &[pki.int.pin()], "", addr),
    );
    let mut run = TestProxy::builder()
        .pins_path(pins)
        .args(&["--log-format", "json", "--no-watch"])
        .spawn()
        .await;
    let lines = run.until("pinset warning").await;
    let event = json(lines.last().unwrap());
    assert_eq!(event["level"], "WARN");
    assert_eq!(event["generation"], 1);
    let warning = event["warning"].as_str().expect("a string field");
    assert!(warning.contains("only one pin"), "{event}");
}
