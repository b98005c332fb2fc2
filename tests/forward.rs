//! Plain-HTTP forwarding through the pinned verifier, against real TLS
//! upstreams on 127.0.0.1 with PKIs made here.

mod support;

use support::proxy::TestProxy;
use support::*;

use pinproxy::policy::pin::Pin;

const HOST: &str = "api.pinned.test";

fn url(path: &str) -> String {
    format!("http://{HOST}{path}")
}

async fn serve(pki: &Pki) -> Upstream {
    upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await
}

async fn proxy_for(pki: &Pki, pins: &[Pin], extra: &str, up: &Upstream) -> Proxy {
    TestProxy::builder()
        .pinset(&pinset(HOST, pins, extra, up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await
}

#[tokio::test]
async fn leaf_intermediate_root_and_backup_pins_pass() {
    let pki = Pki::new(&[HOST]);
    let up = serve(&pki).await;
    let backup = Pin::from_bytes([7; 32]);
    for (what, pins) in [
        ("leaf", vec![pki.leaf.pin()]),
        ("intermediate", vec![pki.int.pin()]),
        ("root", vec![pki.root.pin()]),
        ("backup listed first", vec![backup, pki.int.pin()]),
    ] {
        let p = proxy_for(&pki, &pins, "", &up).await;
        let r = get(p.addr, &url("/hello")).await;
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert!(r.body.starts_with("upstream=real"), "{what}: {}", r.body);
        assert_eq!(p.requests(HOST, "ok"), 1, "{what}");
        assert_eq!(p.mismatches(HOST, "enforce"), 0, "{what}");
    }
}

#[tokio::test]
async fn rogue_but_trusted_ca_is_a_pin_mismatch() {
    let real = Pki::new(&[HOST]);
    let rogue = Pki::new(&[HOST]);
    let up = serve(&rogue).await;
    // Both roots are trusted: the rogue chain is valid, only the pin fails.
    let bundle = format!("{}{}", real.root.pem(), rogue.root.pem());
    let p = TestProxy::builder()
        .pinset(&pinset(
            HOST,
            &[real.int.pin(), real.root.pin()],
            "",
            up.addr,
        ))
        .file("ca.pem", bundle)
        .run()
        .await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.error(), Some("pin-mismatch"));
    assert!(r.body.contains(HOST), "{}", r.body);
    assert_eq!(p.mismatches(HOST, "enforce"), 1);
    assert_eq!(p.tls_failures(HOST, "pin-mismatch"), 1);
    assert_eq!(p.requests(HOST, "pin-mismatch"), 1);
}

/// OkHttp CVE-2016-2402: the real pinned intermediate sent along with (or
/// ahead of) a rogue chain must not satisfy the pin.
#[tokio::test]
async fn pinned_intermediate_sent_as_an_extra_certificate_does_not_count() {
    let real = Pki::new(&[HOST]);
    let rogue_root = root("Rogue Root");
    // A look-alike: the same subject name as the real intermediate.
    let lookalike = intermediate("Test Intermediate", &rogue_root, None);
    let rogue_leaf = leaf(&[HOST], &lookalike);
    let bundle = format!("{}{}", real.root.pem(), rogue_root.pem());
    for (what, chain) in [
        (
            "appended",
            vec![
                rogue_leaf.cert.clone(),
                lookalike.der(),
                real.int.der(),
                real.root.der(),
            ],
        ),
        (
            "placed first",
            vec![
                rogue_leaf.cert.clone(),
                real.int.der(),
                real.root.der(),
                lookalike.der(),
            ],
        ),
    ] {
        let up = upstream(chain, rogue_leaf.key_der(), UpstreamOpts::new("rogue")).await;
        let p = TestProxy::builder()
            .pinset(&pinset(
                HOST,
                &[real.int.pin(), real.root.pin()],
                "",
                up.addr,
            ))
            .file("ca.pem", bundle.clone())
            .run()
            .await;
        let r = get(p.addr, &url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (502, Some("pin-mismatch")),
            "{what}: {r:?}"
        );
        assert_eq!(p.mismatches(HOST, "enforce"), 1, "{what}");
    }
}

/// Two valid paths (a cross-signed intermediate): a pin on either passes,
/// whatever order the server sends the certificates in.
#[tokio::test]
async fn cross_signed_paths_pass_when_either_carries_a_pin() {
    let root_a = root("Root A");
    let root_b = root("Root B");
    let int_a = intermediate("Shared Intermediate", &root_a, None);
    let int_b = intermediate("Shared Intermediate", &root_b, Some(int_a.key_copy()));
    let l = leaf(&[HOST], &int_a);
    let bundle = format!("{}{}", root_a.pem(), root_b.pem());
    for order in [[int_a.der(), int_b.der()], [int_b.der(), int_a.der()]] {
        let chain = vec![l.cert.clone(), order[0].clone(), order[1].clone()];
        let up = upstream(chain, l.key_der(), UpstreamOpts::new("cross")).await;
        for pin in [root_a.pin(), root_b.pin()] {
            let p = TestProxy::builder()
                .pinset(&pinset(HOST, &[pin], "", up.addr))
                .file("ca.pem", bundle.clone())
                .run()
                .await;
            let r = get(p.addr, &url("/")).await;
            assert_eq!(r.status, 200, "pin {pin}: {r:?}");
        }
        let p = TestProxy::builder()
            .pinset(&pinset(HOST, &[Pin::from_bytes([1; 32])], "", up.addr))
            .file("ca.pem", bundle.clone())
            .run()
            .await;
        let r = get(p.addr, &url("/")).await;
        assert_eq!(r.error(), Some("pin-mismatch"), "{r:?}");
    }
}

/// AFNetworking 2.5.1–2.5.3: a matching pin never replaces validation.
#[tokio::test]
async fn expired_or_wrong_name_fails_even_when_pinned() {
    let pki = Pki::new(&[HOST]);
    let expired = leaf_with(&[HOST], &pki.int, LeafOpts { expired: true }, None);
    let wrong = leaf(&["other.pinned.test"], &pki.int);
    for (leaf, reason) in [(expired, "expired"), (wrong, "wrong-name")] {
        let chain = vec![leaf.cert.clone(), pki.int.der()];
        let up = upstream(chain, leaf.key_der(), UpstreamOpts::new(reason)).await;
        // The leaf's own key is pinned: the pin must not rescue it.
        let p = proxy_for(&pki, &[leaf.pin(), pki.int.pin()], "", &up).await;
        let r = get(p.addr, &url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (502, Some("untrusted-certificate")),
            "{reason}: {r:?}"
        );
        assert_eq!(p.tls_failures(HOST, reason), 1, "{reason}");
        assert_eq!(p.mismatches(HOST, "enforce"), 0, "{reason}");
    }
}

/// "goto fail": a server presenting the real chain but signing the
/// handshake with another key, over TLS 1.2 and 1.3, CA and pin-only.
#[tokio::test]
async fn impostor_signing_with_another_key_is_refused() {
    let pki = Pki::new(&[HOST]);
    let impostor_key = leaf(&[HOST], &pki.int).key_der();
    for (trust_extra, pins) in [
        ("", vec![pki.leaf.pin(), pki.int.pin()]),
        ("    trust: pin-only\n", vec![pki.leaf.pin()]),
    ] {
        for (version, opts) in [
            ("1.2", UpstreamOpts::new("impostor").tls12_only()),
            ("1.3", UpstreamOpts::new("impostor").tls13_only()),
        ] {
            let up = upstream(pki.chain(), impostor_key.clone_key(), opts).await;
            let yaml = pinset(HOST, &pins, "", up.addr);
            let yaml = if trust_extra.is_empty() {
                yaml
            } else {
                yaml.replace("    trust: ca.pem\n", trust_extra)
            };
            let p = TestProxy::builder()
                .pinset(&yaml)
                .file("ca.pem", pki.root.pem())
                .run()
                .await;
            let r = get(p.addr, &url("/")).await;
            assert_eq!(r.status, 502, "TLS {version} {trust_extra:?}: {r:?}");
            assert_eq!(
                r.error(),
                Some("untrusted-certificate"),
                "TLS {version} {trust_extra:?}: {r:?}"
            );
            assert_eq!(
                p.tls_failures(HOST, "bad-signature"),
                1,
                "TLS {version} {trust_extra:?}"
            );
            assert_eq!(p.requests(HOST, "ok"), 0);
        }
        // The genuine server with the same settings passes.
        let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
        let yaml = pinset(HOST, &pins, "", up.addr);
        let yaml = if trust_extra.is_empty() {
            yaml
        } else {
            yaml.replace("    trust: ca.pem\n", trust_extra)
        };
        let p = TestProxy::builder()
            .pinset(&yaml)
            .file("ca.pem", pki.root.pem())
            .run()
            .await;
        assert_eq!(get(p.addr, &url("/")).await.status, 200, "{trust_extra:?}");
    }
}

#[tokio::test]
async fn pin_only_accepts_the_leaf_key_only() {
    // A self-signed-style internal service: its CA is trusted by nobody.
    let pki = Pki::new(&[HOST]);
    let up = serve(&pki).await;
    let yaml = |pin: Pin| {
        pinset(HOST, &[pin], "", up.addr).replace("    trust: ca.pem\n", "    trust: pin-only\n")
    };
    let p = TestProxy::builder()
        .pinset(&yaml(pki.leaf.pin()))
        .run()
        .await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(r.status, 200, "{r:?}");

    // An intermediate pin proves nothing without a validated chain.
    let p = TestProxy::builder()
        .pinset(&yaml(pki.int.pin()))
        .run()
        .await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (502, Some("pin-mismatch")),
        "{r:?}"
    );
    assert_eq!(p.mismatches(HOST, "enforce"), 1);

    // The name is still checked.
    let wrong = leaf(&["other.test"], &pki.int);
    let up2 = upstream(
        vec![wrong.cert.clone()],
        wrong.key_der(),
        UpstreamOpts::new("wrong"),
    )
    .await;
    let y = pinset(HOST, &[wrong.pin()], "", up2.addr)
        .replace("    trust: ca.pem\n", "    trust: pin-only\n");
    let p = TestProxy::builder().pinset(&y).run().await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(r.error(), Some("untrusted-certificate"), "{r:?}");
}

#[tokio::test]
async fn report_mode_passes_and_counts() {
    let pki = Pki::new(&[HOST]);
    let up = serve(&pki).await;
    let p = proxy_for(&pki, &[Pin::from_bytes([9; 32])], "    mode: report\n", &up).await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(p.mismatches(HOST, "report"), 1);
    assert_eq!(p.mismatches(HOST, "enforce"), 0);
    assert_eq!(p.requests(HOST, "ok"), 1);
    // Report mode relaxes pins, never chain validation.
    let rogue = Pki::new(&[HOST]);
    let up = serve(&rogue).await;
    let p = proxy_for(&pki, &[Pin::from_bytes([9; 32])], "    mode: report\n", &up).await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(r.error(), Some("untrusted-certificate"), "{r:?}");
}

#[tokio::test]
async fn expired_pinset_is_not_enforced_but_pin_only_fails_closed() {
    let pki = Pki::new(&[HOST]);
    let up = serve(&pki).await;
    let p = proxy_for(
        &pki,
        &[Pin::from_bytes([9; 32])],
        "    expires: 2020-01-01\n",
        &up,
    )
    .await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(r.status, 200, "expired pins are not enforced: {r:?}");
    assert_eq!(p.mismatches(HOST, "enforce"), 0);

    // CA validation still applies after expiry.
    let rogue = Pki::new(&[HOST]);
    let up2 = serve(&rogue).await;
    let p = proxy_for(
        &pki,
        &[Pin::from_bytes([9; 32])],
        "    expires: 2020-01-01\n",
        &up2,
    )
    .await;
    assert_eq!(
        get(p.addr, &url("/")).await.error(),
        Some("untrusted-certificate")
    );

    // Pin-only has nothing left once its pins expire: fail closed, even
    // with the right leaf pin.
    let y = pinset(
        HOST,
        &[pki.leaf.pin()],
        "    expires: 2020-01-01\n",
        up.addr,
    )
    .replace("    trust: ca.pem\n", "    trust: pin-only\n");
    let p = TestProxy::builder().pinset(&y).run().await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (502, Some("pin-mismatch")),
        "{r:?}"
    );
    assert!(r.body.contains("expired"), "{}", r.body);
    // Refused before any handshake, and still where the pin-mismatch
    // alert looks: every request it blocks is counted.
    assert_eq!(p.mismatches(HOST, "enforce"), 1);
    get(p.addr, &url("/")).await;
    assert_eq!(p.mismatches(HOST, "enforce"), 2);
    assert_eq!(p.requests(HOST, "pin-mismatch"), 2);
}

#[tokio::test]
async fn host_spellings_wildcards_unlisted_and_ports() {
    let pki = Pki::new(&[
        "a.wild.test",
        "b.wild.test",
        "a.b.wild.test",
        "wild.test",
        HOST,
    ]);
    let up = serve(&pki).await;
    let yaml = format!(
        "version: 1\nhosts:\n  \"*.wild.test\":\n    pins: [{int}]\n    trust: ca.pem\n  {HOST}:\n    pins: [{int}]\n    trust: ca.pem\n    address: {addr}\n",
        int = pki.int.pin(),
        addr = up.addr
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    // Spellings: case and one trailing dot reach the same entry.
    for spelling in ["API.Pinned.TEST", "api.pinned.test.", "Api.Pinned.Test."] {
        let r = get(p.addr, &format!("http://{spelling}/")).await;
        assert_eq!(r.status, 200, "{spelling}: {r:?}");
    }
    assert_eq!(p.requests(HOST, "ok"), 3);
    // Wildcards cover exactly one label; other names are unlisted (denied).
    for miss in ["wild.test", "a.b.wild.test", "evil-wild.test", "xwild.test"] {
        let r = get(p.addr, &format!("http://{miss}/")).await;
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (403, Some("host-not-allowed")),
            "{miss}: {r:?}"
        );
    }
    assert_eq!(p.denied("host-not-allowed"), 4);
    // a.wild.test matches the wildcard entry: its port rule applies, not
    // the unlisted rule (no DNS is needed to tell).
    let r = get(p.addr, "http://a.wild.test:8443/").await;
    assert_eq!(r.error(), Some("port-not-allowed"), "{r:?}");
    let r = get(p.addr, "http://A.Wild.Test.:8443/").await;
    assert_eq!(r.error(), Some("port-not-allowed"), "{r:?}");
    // Port not allowed.
    let r = get(p.addr, &format!("http://{HOST}:8443/")).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (403, Some("port-not-allowed")),
        "{r:?}"
    );
    assert_eq!(p.denied("port-not-allowed"), 3);
}

/// An `https://` URL in absolute form: unlisted hosts get TLS with CA
/// validation (an unlisted `http://` URL stays plain: tests/passthrough.rs).
#[tokio::test]
async fn unlisted_allow_validates_the_chain_without_pins() {
    let pki = Pki::new(&["127.0.0.1"]);
    let up = serve(&pki).await;
    let port = up.addr.port();
    let yaml = format!("version: 1\ndefaults:\n  unlisted: allow\n  trust: ca.pem\n  ports: [{port}]\n  allow_private: true\nhosts: {{}}\n");
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &format!("https://127.0.0.1:{port}/x")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(p.requests("unlisted", "ok"), 1);
    // Without allow_private, loopback is refused after resolution.
    let yaml = yaml.replace("  allow_private: true\n", "");
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &format!("https://127.0.0.1:{port}/x")).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (403, Some("private-address")),
        "{r:?}"
    );
    // The body says what the operator can do about it.
    assert!(
        r.body.contains(&format!(
            "resolves only to private, loopback or link-local addresses (127.0.0.1:{port}), \
             which unlisted hosts may not reach: give it an entry in the pinset, list it under \
             passthrough: (an in-cluster service), or set defaults.allow_private: true"
        )),
        "{r:?}"
    );
    assert_eq!(p.denied("private-address"), 1);
    // An untrusted chain fails for unlisted hosts too.
    let other = Pki::new(&["127.0.0.1"]);
    let yaml = format!("version: 1\ndefaults:\n  unlisted: allow\n  trust: ca.pem\n  ports: [{port}]\n  allow_private: true\nhosts: {{}}\n");
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", other.root.pem())
        .run()
        .await;
    let r = get(p.addr, &format!("https://127.0.0.1:{port}/x")).await;
    assert_eq!(r.error(), Some("untrusted-certificate"), "{r:?}");
}

/// RFC 9112 §3.2.2: the URL's authority decides the upstream, not Host.
#[tokio::test]
async fn absolute_url_wins_over_host_header() {
    let pki = Pki::new(&[HOST]);
    let up = serve(&pki).await;
    let p = proxy_for(&pki, &[pki.int.pin()], "", &up).await;
    let r = get_with(p.addr, &url("/x"), &[("host", "evil.example")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains(&format!("host={HOST}")),
        "upstream saw: {}",
        r.body
    );
    // Userinfo never changes the host: it is refused outright.
    let r = raw(
        p.addr,
        format!(
            "GET http://evil.example@{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("x-pinproxy-error: bad-request"),
        "{r}"
    );
}

/// Chromium CanPool / OkHttp isEligible: a connection verified for one host
/// never carries another, even when one certificate covers both.
#[tokio::test]
async fn two_hosts_on_one_server_never_share_a_connection() {
    let pki = Pki::new(&["a.shared.test", "b.shared.test"]);
    let up = serve(&pki).await;
    let yaml = format!(
        "version: 1\nhosts:\n  a.shared.test:\n    pins: [{int}]\n    trust: ca.pem\n    address: {addr}\n  b.shared.test:\n    pins: [{other}]\n    trust: ca.pem\n    address: {addr}\n",
        int = pki.int.pin(),
        other = Pin::from_bytes([3; 32]),
        addr = up.addr
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let mut c = ProxyConn::open(p.addr).await;
    let r = c.get("http://a.shared.test/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Same proxy connection, same upstream server and certificate, but b's
    // pins differ: it must get its own, failing, handshake.
    let r = c.get("http://b.shared.test/", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (502, Some("pin-mismatch")),
        "{r:?}"
    );
    let r = c.get("http://a.shared.test/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a reused its pooled connection; b made its own"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let pki = Pki::new(&[HOST]);
    let up = serve(&pki).await;
    let p = proxy_for(&pki, &[pki.int.pin()], "", &up).await;
    let r = raw(
        p.addr,
        b"GET /relative HTTP/1.1\r\nHost: api.pinned.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("x-pinproxy-error: bad-request"),
        "{r}"
    );
    for bad in [
        "http://0x7f.1/",
        "http://2130706433/",
        "ftp://api.pinned.test/",
    ] {
        let r = raw(
            p.addr,
            format!("GET {bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{bad}: {r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("x-pinproxy-error: bad-request"),
            "{bad}: {r}"
        );
    }
    // Bytes that are not HTTP at all.
    let r = raw(p.addr, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    // Non-ASCII host bytes.
    let r = raw(
        p.addr,
        "GET http://api\u{3002}pinned.test/ HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    // The first four are answered by pinproxy (with the reason header);
    // unparseable bytes by the HTTP parser; all six are counted.
    assert_eq!(p.denied("bad-request"), 6);
    // Still serving.
    assert_eq!(get(p.addr, &url("/")).await.status, 200);
}

#[tokio::test]
async fn keep_alive_reuses_the_pinned_connection_and_streams_bodies() {
    let pki = Pki::new(&[HOST]);
    let up = serve(&pki).await;
    let p = proxy_for(&pki, &[pki.int.pin()], "", &up).await;
    let mut c = ProxyConn::open(p.addr).await;
    for i in 0..5 {
        let r = c.get(&url(&format!("/n{i}")), &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains(&format!("path=/n{i}")), "{}", r.body);
        // Upstream negotiated h2 by ALPN.
        assert!(r.body.contains("version=HTTP/2.0"), "{}", r.body);
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    // HTTP/1.1-only upstream.
    let up1 = upstream(
        pki.chain(),
        pki.leaf.key_der(),
        UpstreamOpts::new("h1").h1_only(),
    )
    .await;
    let p = proxy_for(&pki, &[pki.int.pin()], "", &up1).await;
    let r = get(p.addr, &url("/")).await;
    assert!(r.body.contains("version=HTTP/1.1"), "{}", r.body);
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let pki = Pki::new(&[HOST]);
    // Bind then drop to get a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", closed))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (502, Some("upstream-unreachable")),
        "{r:?}"
    );
}

/// `n` concurrent requests through the proxy, each on its own client
/// connection (a burst of first requests): method, path and body per `i`.
async fn burst(proxy: std::net::SocketAddr, n: usize, posts: bool) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                if posts && i % 2 == 1 {
                    post(proxy, &url(&format!("/b{i}")), &format!("payload-{i}")).await
                } else {
                    get(proxy, &url(&format!("/b{i}"))).await
                }
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

/// Every reply of a [`burst`] with `posts`: 200, its own path, `version`,
/// and each POST's body arrived whole, exactly once (the GETs' empty).
fn assert_all_ok(replies: &[Reply], version: &str) {
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert!(r.body.contains(&format!("path=/b{i} ")), "{}", r.body);
        assert!(r.body.contains(version), "request {i}: {}", r.body);
        let body = if i % 2 == 1 {
            format!("body=payload-{i}")
        } else {
            "body=".to_string()
        };
        assert!(r.body.ends_with(&body), "request {i}: {}", r.body);
    }
}

/// A pinned proxy in front of an upstream whose handshakes take 300 ms.
async fn distant(pki: &Pki, h2: bool) -> (support::alpn::AlpnSwitch, Proxy) {
    let delay = std::time::Duration::from_millis(300);
    let up = support::alpn::alpn_upstream(pki, h2, delay).await;
    let pins = pinset(HOST, &[pki.int.pin()], "", up.addr);
    let p = TestProxy::builder()
        .pinset(&pins)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    (up, p)
}

/// A host's idle pool keeps what its concurrency needs: 64 concurrent
/// requests to an HTTP/1.1 upstream, three rounds, open 64 connections
/// in the first and none after. Before, the pool kept 32 idle per host and
/// every later round dialed the other 32 again: under wrk's 50 keep-alive
/// clients 5.8 % of requests were a fresh upstream TLS handshake, and the
/// forward path's CPU per request was 2.65× nginx's instead of ~1.1×.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_an_http1_upstream_reuse_its_pool() {
    let pki = Pki::new(&[HOST]);
    let (up, p) = distant(&pki, false).await;
    assert_all_ok(&burst(p.addr, 64, true).await, "version=HTTP/1.1");
    let first = handshakes(&up).await;
    for _ in 0..2 {
        assert_all_ok(&burst(p.addr, 64, true).await, "version=HTTP/1.1");
    }
    let later = handshakes(&up).await - first;
    eprintln!("upstream TLS handshakes: {first} in the first round, {later} in two more");
    assert!(
        later <= 4,
        "{later} upstream TLS handshakes in two more rounds of 64 ({first} in the first)"
    );
}

/// The upstream's handshakes so far, once connects still under way (a
/// losing racer finishes its handshake in the background) have arrived.
async fn handshakes(up: &support::alpn::AlpnSwitch) -> usize {
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    up.handshakes.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_requests_to_an_h2_upstream_shares_one_connection() {
    let pki = Pki::new(&[HOST]);
    let (up, p) = distant(&pki, true).await;
    assert_all_ok(&burst(p.addr, 100, true).await, "version=HTTP/2.0");
    // One connection, made by the first request, shared by the others
    // (before the fix: 100, one per request, 99 closed after the ALPN).
    let n = handshakes(&up).await;
    eprintln!("upstream TLS handshakes for 100 first requests: {n}");
    assert_eq!(n, 1, "{n} upstream TLS handshakes for 100 first requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_requests_to_an_http1_upstream_is_served() {
    let pki = Pki::new(&[HOST]);
    let (up, p) = distant(&pki, false).await;
    assert_all_ok(&burst(p.addr, 100, true).await, "version=HTTP/1.1");
    // HTTP/1.1: a connection per concurrent request, never more (the one
    // that found out it speaks HTTP/1.1 serves its request).
    let n = handshakes(&up).await;
    eprintln!("upstream TLS handshakes for 100 first requests: {n}");
    assert!(n <= 100, "{n} upstream TLS handshakes for 100 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_offering_h2_fails_no_request() {
    let pki = Pki::new(&[HOST]);
    let (up, p) = distant(&pki, true).await;
    assert_all_ok(&burst(p.addr, 20, true).await, "version=HTTP/2.0");
    assert_eq!(handshakes(&up).await, 1);
    // Redeployed behind an HTTP/1.1-only front end: the pooled h2
    // connection goes away (GOAWAY), the next handshake says HTTP/1.1.
    up.stop_offering_h2();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Half of them POST a body: those the h2 client could not send go out
    // again, body and all, over HTTP/1.1.
    assert_all_ok(&burst(p.addr, 20, true).await, "version=HTTP/1.1");
    assert_eq!(p.requests(HOST, "ok"), 40);
    // No handshake wasted finding out: one connection per request at most.
    let n = handshakes(&up).await;
    assert!(n <= 1 + 20, "{n}");
}

/// The h2 client runs one connect per host while the other requests wait
/// for it. When it times out, hyper-util ends their wait with a connect
/// error, unsent, and each goes out again through the ALPN client on a
/// connect of its own: its own verdict, all in parallel. Were they answered
/// with that error, they would get a 502 unsent and uncounted; were they
/// to retry the h2 connect in turn, the k-th would take k connect timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_an_h2_host_gone_dark_fail_together() {
    use std::time::{Duration, Instant};
    const N: usize = 10;
    let connect = Duration::from_secs(1);
    let pki = Pki::new(&[HOST]);
    let up = support::alpn::alpn_upstream(&pki, true, Duration::ZERO).await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .timeouts(move |t| {
            t.connect = connect;
            t.response = Duration::from_secs(15);
        })
        .run()
        .await;
    // Known to speak h2: requests to it take the h2 client.
    let r = get(p.addr, &url("/first")).await;
    assert!(r.body.contains("version=HTTP/2.0"), "{r:?}");
    // Its pooled connection closes, and no connect is answered any more.
    up.stop_answering_connects().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (proxy, start) = (p.addr, Instant::now());
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            tokio::spawn(async move {
                let target = url(&format!("/d{i}"));
                let r = if i % 2 == 1 {
                    post(proxy, &target, &format!("payload-{i}")).await
                } else {
                    get(proxy, &target).await
                };
                (r, start.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (r, took) = t.await.unwrap();
        eprintln!("{took:?}: {} {:?}", r.status, r.body.trim());
        // Each its own connect's verdict, as before the h2 client.
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (504, Some("upstream-timeout")),
            "{r:?}"
        );
        assert!(
            r.body.contains("timed out") && r.body.contains("connect to"),
            "{r:?}"
        );
        slowest = slowest.max(took);
    }
    // Unsent by the h2 client's one connect, each went out on a connect of
    // its own, in parallel: about two connect timeouts (in turn, the last
    // of the N would take N; margin for a loaded machine).
    assert!(
        slowest < 5 * connect,
        "the slowest request took {slowest:?}"
    );
    assert_eq!(p.requests(HOST, "upstream-timeout"), N as u64);
}

/// A proxy whose entry says `upstream_protocol: <proto>`, in front of an
/// upstream offering h2 (`h2`) or only HTTP/1.1.
async fn fixed(pki: &Pki, h2: bool, proto: &str) -> (support::alpn::AlpnSwitch, Proxy) {
    let up = support::alpn::alpn_upstream(pki, h2, std::time::Duration::ZERO).await;
    let extra = format!("    upstream_protocol: {proto}\n");
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], &extra, up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    (up, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_h1_speaks_http1_to_an_upstream_offering_h2() {
    let pki = Pki::new(&[HOST]);
    let (up, p) = fixed(&pki, true, "h1").await;
    // Concurrent requests, half of them POSTs with a body: each on an
    // HTTP/1.1 connection of the pool, though the upstream offers h2.
    assert_all_ok(&burst(p.addr, 10, true).await, "version=HTTP/1.1");
    // Sequential requests reuse one keep-alive connection.
    let before = handshakes(&up).await;
    for i in 0..5 {
        let r = get(p.addr, &url(&format!("/b{i}"))).await;
        assert!(r.body.contains("version=HTTP/1.1"), "{r:?}");
    }
    assert_eq!(handshakes(&up).await, before, "keep-alive reused");
    assert_eq!(p.requests(HOST, "ok"), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_h2_speaks_h2_and_refuses_an_http1_only_upstream() {
    let pki = Pki::new(&[HOST]);
    let (up, p) = fixed(&pki, true, "h2").await;
    assert_all_ok(&burst(p.addr, 20, true).await, "version=HTTP/2.0");
    assert_eq!(handshakes(&up).await, 1, "one multiplexed connection");
    // An upstream that speaks only HTTP/1.1 cannot agree on h2: refused at
    // the handshake (no_application_protocol), never spoken HTTP/1.1 to.
    let (_up, p) = fixed(&pki, false, "h2").await;
    let r = get(p.addr, &url("/")).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.error(), Some("upstream-tls-error"), "{r:?}");
    assert!(!r.body.contains("version="), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_auto_is_the_default_and_follows_alpn() {
    let pki = Pki::new(&[HOST]);
    let (_up, p) = fixed(&pki, true, "auto").await;
    assert!(get(p.addr, &url("/"))
        .await
        .body
        .contains("version=HTTP/2.0"));
    let (_up, p) = fixed(&pki, false, "auto").await;
    assert!(get(p.addr, &url("/"))
        .await
        .body
        .contains("version=HTTP/1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_h2_gives_each_request_that_waited_its_own_verdict() {
    // 10 first requests at once to an `h2` entry whose upstream's chain
    // carries none of its pins: one makes the connect (300 ms), the others
    // wait for it; when it fails, each goes out on a connect of its own and
    // is refused for what that connect found, counted once each — not
    // "unreachable" for having waited.
    let pki = Pki::new(&[HOST]);
    let other = Pki::new(&[HOST]);
    let delay = std::time::Duration::from_millis(300);
    let up = support::alpn::alpn_upstream(&pki, true, delay).await;
    let extra = "    upstream_protocol: h2\n";
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[other.int.pin()], extra, up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    for (i, r) in burst(p.addr, 10, true).await.iter().enumerate() {
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (502, Some("pin-mismatch")),
            "request {i}: {r:?}"
        );
    }
    assert_eq!(p.requests(HOST, "pin-mismatch"), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_unwritten_is_auto_and_defaults_are_inherited() {
    let pki = Pki::new(&[HOST]);
    let up = support::alpn::alpn_upstream(&pki, true, std::time::Duration::ZERO).await;
    // Not written anywhere: auto, and this upstream chooses h2.
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &url("/")).await;
    assert!(r.body.contains("version=HTTP/2.0"), "{r:?}");
    // `defaults.upstream_protocol: h1`, the entry silent: HTTP/1.1.
    let yaml = format!(
        "version: 1\ndefaults:\n  upstream_protocol: h1\nhosts:\n  {HOST:?}:\n    pins: [{}]\n    trust: ca.pem\n    address: {}\n",
        pki.int.pin(),
        up.addr
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &url("/")).await;
    assert!(r.body.contains("version=HTTP/1.1"), "{r:?}");
}
