//! Findings of the security review (SECURITY.md), each pinned by a test
//! that fails on the vulnerable behaviour.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use pinproxy::policy::pin::Pin;
use support::*;

const HOST: &str = "api.pinned.test";

/// An echo server on 127.0.0.1 for byte tunnels.
async fn echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn alive(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 5];
    tcp.write_all(b"still").await.is_ok()
        && matches!(
            tokio::time::timeout(Duration::from_secs(1), tcp.read_exact(&mut buf)).await,
            Ok(Ok(_))
        )
}

fn allow_yaml(port: u16) -> String {
    format!("version: 1\ndefaults:\n  unlisted: allow\n  allow_private: true\n  ports: [{port}]\nhosts: {{}}\n")
}

/// F1: `::ffff:127.0.0.1` is 127.0.0.1 to the kernel.
#[tokio::test]
async fn mapped_loopback_cannot_reach_the_proxys_own_ports() {
    let p = TestProxy::builder()
        .pinset("version: 1\nhosts: {}\n")
        .run()
        .await;
    let own = p.admin.port();
    std::fs::write(&p.pins_path, allow_yaml(own)).unwrap();
    p.reloader.reload().await.unwrap();
    for target in [
        format!("127.0.0.1:{own}"),
        format!("[::ffff:127.0.0.1]:{own}"),
        format!("[::ffff:7f00:1]:{own}"),
    ] {
        let (s, head, _) = connect_status(p.addr, &target).await;
        assert_eq!(s, 403, "{target}: {head}");
    }
}

/// F6: the mapped spelling of a pinned IP is that entry.
#[test]
fn mapped_spelling_hits_the_pinned_ip_entry() {
    let yaml = "version: 1\nhosts:\n  \"203.0.113.7\":\n    pins: [sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=]\n";
    let p = pinproxy::policy::parse(
        yaml.as_bytes(),
        std::path::Path::new("."),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mapped = pinproxy::policy::host::Host::parse("[::ffff:203.0.113.7]").unwrap();
    assert!(matches!(
        p.lookup(&mapped),
        pinproxy::policy::Decision::Listed(_)
    ));
}

/// F2: a byte tunnel admitted under `unlisted: allow` closes when a reload
/// denies unlisted hosts.
#[tokio::test]
async fn unlisted_tunnel_closes_when_a_reload_denies_it() {
    let port = echo().await;
    let p = TestProxy::builder()
        .pinset(&allow_yaml(port))
        .limits(|l| l.revoke_grace = Duration::from_millis(1000))
        .run()
        .await;
    let (s, head, mut tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(s, 200, "{head}");
    assert!(alive(&mut tcp).await, "the tunnel works before the reload");
    std::fs::write(
        &p.pins_path,
        "version: 1\ndefaults:\n  unlisted: deny\nhosts: {}\n",
    )
    .unwrap();
    p.reloader.reload().await.unwrap();
    assert!(
        alive(&mut tcp).await,
        "in-flight work gets the grace period"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !alive(&mut tcp).await,
        "an unlisted tunnel outlived unlisted: deny"
    );
    // And a reload that changes nothing for it leaves a tunnel open.
    std::fs::write(&p.pins_path, allow_yaml(port)).unwrap();
    p.reloader.reload().await.unwrap();
    let (_, _, mut tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    std::fs::write(&p.pins_path, allow_yaml(port) + "# comment\n").unwrap();
    p.reloader.reload().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        alive(&mut tcp).await,
        "an unrelated reload closed the tunnel"
    );
}

/// F3: tunnels hold their client connection's slot, and idle ones close.
#[tokio::test]
async fn tunnels_count_against_the_connection_limit_and_idle_out() {
    let port = echo().await;
    let p = TestProxy::builder()
        .pinset(&allow_yaml(port))
        .limits(|l| {
            l.max_connections = 2;
            l.tunnel_idle = Duration::from_millis(1200);
        })
        .run()
        .await;
    let (_, _, mut a) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    let (_, _, mut b) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert!(alive(&mut a).await && alive(&mut b).await);
    assert_eq!(p.metrics.connections_active.get(), 2);
    let (s, head, _) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(s, 503, "{head}");
    assert!(head.contains("x-pinproxy-error: overloaded"), "{head}");
    // Idle tunnels close and give their slots back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!alive(&mut a).await, "an idle tunnel stayed open");
    assert_eq!(p.metrics.connections_active.get(), 0);
    let (s, _, _) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(s, 200);
}

/// F4: an in-place rewrite that exposes a valid prefix is not swapped in
/// while the writer is still writing.
#[tokio::test]
async fn a_half_written_file_that_parses_is_not_swapped_in() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let dir = tempfile::tempdir().unwrap();
    let full = format!(
        "version: 1\ndefaults:\n  mode: report\n  trust: ca.pem\nhosts:\n  {HOST}:\n    pins: [{}, {}]\n    address: {}\n    mode: enforce\n",
        pki.int.pin(),
        Pin::from_bytes([1; 32]),
        up.addr
    );
    std::fs::write(dir.path().join("ca.pem"), pki.root.pem()).unwrap();
    let path = dir.path().join("pins.yaml");
    std::fs::write(&path, &full).unwrap();
    let p = TestProxy::builder()
        .dir(dir)
        .pins_path(path.clone())
        .watch()
        .run()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = full.find("    mode: enforce").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    use std::io::Write;
    f.write_all(&full.as_bytes()[..cut]).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The writer continues within a few debounce periods.
    f.write_all(&full.as_bytes()[cut..]).unwrap();
    f.write_all(b"# done\n").unwrap();
    drop(f);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snap = p.live.load();
    let mode = snap.policy.hosts.first().map(|h| h.mode);
    assert_eq!(
        mode,
        Some(pinproxy::policy::Mode::Enforce),
        "a prefix was in force: generation {}",
        snap.generation
    );
    assert_eq!(
        p.metrics
            .config_reloads
            .with_label_values(&["success"])
            .get(),
        1,
        "only the complete file was loaded"
    );
}

/// F7: a long streaming response on the plain-HTTP path ends when a reload
/// removes its host's pin.
#[tokio::test]
async fn streaming_response_ends_when_its_pins_change() {
    stream_ends_when_its_pins_change(&[]).await;
}

/// The same for a WebSocket handshake the upstream declines with an
/// ordinary streaming response: the upgrade relay returned that body with
/// no revocation watch, and it streamed on after the reload (the seventh
/// review's F3).
#[tokio::test]
async fn a_declined_upgrades_stream_ends_when_its_pins_change() {
    stream_ends_when_its_pins_change(&[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ])
    .await;
}

async fn stream_ends_when_its_pins_change(headers: &[(&str, &str)]) {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("stream")).await;
    let yaml = pinset(HOST, &[pki.int.pin()], "", up.addr);
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .limits(|l| l.revoke_grace = Duration::from_millis(300))
        .run()
        .await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(format!("http://{HOST}/stream")).header("host", HOST);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    std::fs::write(
        &p.pins_path,
        pinset(HOST, &[Pin::from_bytes([2; 32])], "", up.addr),
    )
    .unwrap();
    p.reloader.reload().await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        let mut n = 0;
        while let Some(f) = body.frame().await {
            if f.is_err() {
                return Err(n);
            }
            n += 1;
        }
        Ok(n)
    })
    .await
    .expect("the stream ended within 2 s of the reload");
    assert!(
        rest.is_err(),
        "the stream ended cleanly after all 50 chunks: {rest:?}"
    );
}

/// F8: the drift view never says "pass" for a handshake that failed its
/// signature check.
#[tokio::test]
async fn drift_view_records_an_impostor_as_failed() {
    let pki = Pki::new(&[HOST]);
    let impostor_key = leaf(&[HOST], &pki.int).key_der();
    let up = upstream(
        pki.chain(),
        impostor_key,
        UpstreamOpts::new("impostor").tls13_only(),
    )
    .await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &format!("http://{HOST}/")).await;
    assert_eq!(r.error(), Some("untrusted-certificate"));
    let seen = p.drift.get(HOST).unwrap();
    assert_eq!(
        (seen.outcome.as_str(), seen.failure),
        ("handshake-failed", Some("bad-signature"))
    );
}

/// F9: an upstream can't forge pinproxy's refusal header.
#[tokio::test]
async fn upstream_cannot_spoof_the_refusal_header() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("spoof")).await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &format!("http://{HOST}/spoof")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error(), None, "{r:?}");
}

async fn intercepted_tls(p: &Proxy) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let (s, head, tcp) = connect_status(p.addr, &format!("{HOST}:443")).await;
    assert_eq!(s, 200, "{head}");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(p.intercept.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(rustls_pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap()
}

/// F10 + pins changing under a WebSocket: hop-by-hop headers don't reach
/// the upstream, and the upgraded stream closes when its pins change.
#[tokio::test]
async fn websocket_strips_hop_by_hop_and_closes_on_pin_change() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("ws")).await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .limits(|l| l.revoke_grace = Duration::from_millis(100))
        .run()
        .await;
    let mut tls = intercepted_tls(&p).await;
    tls.write_all(format!("GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade, x-hop\r\nX-Hop: 1\r\nProxy-Authorization: Basic c2VjcmV0\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tls).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("x-saw-hop-by-hop: no"), "{head}");
    tls.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    tls.read_exact(&mut b).await.unwrap();
    std::fs::write(
        &p.pins_path,
        pinset(HOST, &[Pin::from_bytes([2; 32])], "", up.addr),
    )
    .unwrap();
    p.reloader.reload().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = tls.write_all(b"ping").await;
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(2), tls.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    assert!(closed, "the WebSocket outlived its pins");
}

/// F11: a request inside a tunnel that names another host is refused with
/// 421, never rerouted to the CONNECT host.
#[tokio::test]
async fn misdirected_requests_inside_a_tunnel_get_421() {
    let (_, up, p) = pinned(HOST).await;
    let mut tls = intercepted_tls(&p).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: other.pinned.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut tls).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
    assert!(
        head.contains("x-pinproxy-error: misdirected-request"),
        "{head}"
    );
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    let mut tls = intercepted_tls(&p).await;
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {HOST}:443\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut tls).await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the CONNECT host with its port is fine: {head}"
    );
}

/// Inside an intercepted tunnel as on the forward path: an HTTP/1.1
/// request carries exactly one Host (RFC 9112 §3.2); two, or none, is 400
/// and never reaches the upstream — the second Host is never judged. So
/// is a CONNECT inside the tunnel.
#[tokio::test]
async fn a_request_inside_a_tunnel_with_two_hosts_or_none_is_400() {
    let (_, up, p) = pinned(HOST).await;
    for head in [
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.pinned.test\r\n\r\n"),
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
        // A CONNECT to the tunnel's own host: nothing to open (it used to
        // be answered with an empty response).
        format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n"),
    ] {
        let mut tls = intercepted_tls(&p).await;
        tls.write_all(head.as_bytes()).await.unwrap();
        let answer = read_head(&mut tls).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        assert!(answer.contains("x-pinproxy-error: bad-request"), "{answer}");
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(p.denied("bad-request"), 3);
}

/// Sends a ClientHello for [`HOST`] over `tcp`; asserts the proxy answered
/// with a handshake-failure alert.
async fn refused_with_an_alert(tcp: TcpStream) {
    let cfg = rustls::ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let err = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(rustls_pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("HandshakeFailure"), "{err}");
}

/// F12: an unlisted byte tunnel whose ClientHello names another host is
/// refused with a TLS alert (domain fronting through an unlisted alias).
#[tokio::test]
async fn unlisted_tunnel_with_a_foreign_sni_is_refused() {
    let port = echo().await;
    let p = TestProxy::builder().pinset(&allow_yaml(port)).run().await;
    let (s, _, tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(s, 200);
    refused_with_an_alert(tcp).await;
    assert_eq!(p.denied("sni-mismatch"), 1);
    // Counted as what it was, a refusal, and not as a tunnel too.
    assert_eq!(p.requests("unlisted", "tunnel"), 0);
    // Non-TLS bytes pass: unlisted tunnels carry any protocol.
    let (_, _, mut tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert!(alive(&mut tcp).await);
    assert_eq!(p.requests("unlisted", "tunnel"), 1);
    assert_eq!(p.denied("sni-mismatch"), 1);
}

/// The fifth review's F1: an empty TLS handshake record (`16 03 01 00
/// 00`) before the ClientHello made it unreadable to the check, which then
/// let it through as "not TLS" — and the upstream's OpenSSL skips empty
/// records, so any SNI reached it. Unreadable TLS is refused as
/// `sni-mismatch`.
#[tokio::test]
async fn unlisted_tunnel_with_an_empty_record_before_a_foreign_sni_is_refused() {
    let port = echo().await;
    let p = TestProxy::builder().pinset(&allow_yaml(port)).run().await;
    let (s, _, mut tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(s, 200);
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x00])
        .await
        .unwrap();
    refused_with_an_alert(tcp).await;
    assert_eq!(p.denied("sni-mismatch"), 1);
    assert_eq!(p.requests("unlisted", "tunnel"), 0);
}

/// F13: a combined cert+key file never publishes the key; a key that
/// doesn't match the certificate is refused.
#[test]
fn loaded_ca_publishes_only_its_certificate_and_must_match_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = root("Operator CA");
    let combined = write(
        dir.path(),
        "combined.pem",
        &format!("{}{}", ca.pem(), ca.key.serialize_pem()),
    );
    let key = write(dir.path(), "ca.key", &ca.key.serialize_pem());
    let provider = pinproxy::tls::provider();
    let metrics = pinproxy::control::metrics::Metrics::new();
    let i = pinproxy::tls::ca::Intercept::load(
        &combined,
        &key,
        provider.clone(),
        metrics.minted_leaves.clone(),
        4,
    )
    .unwrap();
    let outs = i.write_trust(&dir.path().join("out"), &[]).unwrap();
    for out in outs {
        let written = std::fs::read_to_string(out).unwrap();
        assert!(!written.contains("PRIVATE KEY"), "{written}");
        assert!(written.contains("BEGIN CERTIFICATE"));
    }
    let other = write(
        dir.path(),
        "other.key",
        &rcgen::KeyPair::generate().unwrap().serialize_pem(),
    );
    let err = pinproxy::tls::ca::Intercept::load(
        &combined,
        &other,
        provider,
        metrics.minted_leaves.clone(),
        4,
    )
    .expect_err("mismatched key refused");
    assert!(
        err.to_string().contains("does not hold the private key"),
        "{err}"
    );
}

/// RUSTSEC-2026-0099: name constraints need rustls-webpki >= 0.103.12.
#[test]
fn locked_rustls_webpki_has_the_name_constraint_fix() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let mut found = false;
    for block in lock.split("[[package]]") {
        if block.contains("name = \"rustls-webpki\"") {
            let version = block
                .lines()
                .find_map(|l| l.strip_prefix("version = \""))
                .unwrap()
                .trim_end_matches('"');
            let parts: Vec<u64> = version
                .split(['.', '-'])
                .take(3)
                .map(|p| p.parse().unwrap_or(0))
                .collect();
            assert!(
                parts >= vec![0, 103, 12],
                "rustls-webpki {version} lacks the RUSTSEC-2026-0099 fix"
            );
            found = true;
        }
    }
    assert!(found);
}

/// Server-first protocols (SSH, SMTP banners) still work through an
/// unlisted tunnel while it waits for the client's first bytes, and a late
/// ClientHello is judged like an early one.
#[tokio::test]
async fn unlisted_tunnel_serves_server_first_protocols_and_judges_late_hellos() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"SSH-2.0-banner\r\n").await;
                let mut b = [0u8; 1024];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let p = TestProxy::builder().pinset(&allow_yaml(port)).run().await;
    let (_, _, mut tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    let mut banner = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-banner\r\n");
    assert!(alive(&mut tcp).await);

    let (_, _, tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let cfg = rustls::ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    // The banner arrives first; rustls then sees garbage or our alert:
    // either way no handshake with the fronted name gets through.
    let r = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(rustls_pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await;
    assert!(r.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        p.denied("sni-mismatch"),
        1,
        "the late ClientHello was judged"
    );
}
