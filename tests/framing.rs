//! HTTP framing on the plain forward path (issue 12, items 5–8): a
//! malformed request is the client's fault (400, never counted against the
//! upstream), a malformed response is the upstream's (refused and labelled
//! as a protocol violation), a Content-Length that disagrees with the body
//! is never forwarded, Host must appear once, and a WebSocket upgrade is
//! relayed over a pinned connection.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use pinproxy::reason::Reason;
use support::*;

const HOST: &str = "api.pinned.test";

/// Every outcome but `ok` a request to `host` was counted under.
fn upstream_failures(p: &Proxy, host: &str) -> u64 {
    Reason::ALL
        .iter()
        .filter(|r| r.status().is_some())
        .map(|r| p.requests(host, r.as_str()))
        .sum()
}

/// Sends raw bytes and reads until the proxy closes (or 5 s). A write the
/// proxy cut short (it answered before reading everything) is not an error.
async fn send_raw(proxy: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status line and the header block of a raw response.
fn head_of(raw: &str) -> (&str, String) {
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let status = head.lines().next().unwrap_or_default();
    (status, head.to_ascii_lowercase())
}

/// Item 5: each malformed chunked request body gets 400 `bad-request`,
/// counted as denied; the pinned host's failure counters do not move.
#[tokio::test]
async fn a_malformed_chunked_request_body_is_the_clients_fault() {
    let (_pki, _up, p) = pinned(HOST).await;
    let extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(200_000));
    let bodies = [
        ("a non-hex size", "zz\r\nhello\r\n0\r\n\r\n".to_string()),
        ("a negative size", "-5\r\nhello\r\n0\r\n\r\n".to_string()),
        (
            "a 20-digit size",
            "99999999999999999999\r\nhello\r\n0\r\n\r\n".to_string(),
        ),
        ("a missing CRLF", "5\r\nhelloXX0\r\n\r\n".to_string()),
        ("a 200 KB chunk extension", extension),
    ];
    for (i, (what, body)) in bodies.iter().enumerate() {
        let req = format!(
            "POST http://{HOST}/upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let out = send_raw(p.addr, req.as_bytes()).await;
        let (status, head) = head_of(&out);
        assert!(status.starts_with("HTTP/1.1 400"), "{what}: {out}");
        assert!(
            head.contains("x-pinproxy-error: bad-request"),
            "{what}: {out}"
        );
        assert_eq!(p.denied("bad-request"), i as u64 + 1, "{what}");
        assert_eq!(upstream_failures(&p, HOST), 0, "{what}: counted upstream");
        assert_eq!(p.requests(HOST, "ok"), 0, "{what}");
    }
    // A well-formed chunked body still goes through.
    let req = format!(
        "POST http://{HOST}/upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let out = raw(p.addr, req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("body=hello"), "{out}");
}

/// An upstream that answers every request with `response`.
async fn answering(pki: &Pki, response: &'static str) -> Proxy {
    let addr = raw_tls_upstream(pki.chain(), pki.leaf.key_der(), move |mut tls| async move {
        while read_head(&mut tls).await.is_some() {
            if tls.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await
}

/// Item 6: Content-Length beside Transfer-Encoding is dropped (RFC 9112
/// §6.3): the client gets the whole body, never a length that disagrees
/// with it.
#[tokio::test]
async fn content_length_beside_transfer_encoding_is_never_forwarded() {
    let pki = Pki::new(&[HOST]);
    let p = answering(
        &pki,
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let r = get(p.addr, &format!("http://{HOST}/")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "hello", "{r:?}");
    let length = r.headers.get(http::header::CONTENT_LENGTH);
    assert!(length.is_none_or(|v| v == "5"), "{r:?}");
    // On the wire too: no `content-length: 3` before the body.
    let out = raw(
        p.addr,
        format!("GET http://{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let (_, head) = head_of(&out);
    assert!(!head.contains("content-length: 3"), "{out}");
    assert!(out.contains("hello"), "{out}");
    // An upgrade the upstream declines with the same answer: the same rule.
    let mut tcp = TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(upgrade_request().as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await.unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length: 3"),
        "{head}"
    );
    let mut rest = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut rest))
        .await
        .expect("a body")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest[..n]);
    assert!(rest.contains("hello"), "{head}{rest}");
}

/// Item 6: duplicate or conflicting Content-Length from the upstream is
/// refused as the upstream's protocol violation, `upstream-tls-error`
/// ("does not speak TLS (or HTTP) properly"), never `upstream-unreachable`.
#[tokio::test]
async fn conflicting_upstream_content_lengths_are_a_protocol_violation() {
    let pki = Pki::new(&[HOST]);
    for (what, response) in [
        (
            "two lines",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "a list",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        (
            "not a number",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nhello!",
        ),
    ] {
        let p = answering(&pki, response).await;
        let r = get(p.addr, &format!("http://{HOST}/")).await;
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (502, Some("upstream-tls-error")),
            "{what}: {r:?}"
        );
        assert!(
            r.body.contains("malformed HTTP response"),
            "{what}: {}",
            r.body
        );
        assert_eq!(p.requests(HOST, "upstream-tls-error"), 1, "{what}");
        assert_eq!(p.requests(HOST, "upstream-unreachable"), 0, "{what}");
    }
}

/// Item 7: an HTTP/1.1 request with two Host lines, or none, is 400
/// (RFC 9112 §3.2) and never reaches the upstream; HTTP/1.0 may omit it.
#[tokio::test]
async fn http11_requests_need_exactly_one_host() {
    let (_pki, up, p) = pinned(HOST).await;
    for (what, headers) in [
        (
            "two Host lines",
            format!("Host: {HOST}\r\nHost: other.test\r\n"),
        ),
        (
            "two equal Host lines",
            format!("Host: {HOST}\r\nHost: {HOST}\r\n"),
        ),
        ("no Host", String::new()),
    ] {
        let req = format!("GET http://{HOST}/ HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
        let out = raw(p.addr, req.as_bytes()).await;
        let (status, head) = head_of(&out);
        assert!(status.starts_with("HTTP/1.1 400"), "{what}: {out}");
        assert!(
            head.contains("x-pinproxy-error: bad-request"),
            "{what}: {out}"
        );
    }
    assert_eq!(p.denied("bad-request"), 3);
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
    let out = raw(
        p.addr,
        format!("GET http://{HOST}/ HTTP/1.0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
}

/// Item 8: `GET http://host/ws` with `Upgrade: websocket` through
/// HTTP_PROXY is relayed over a pinned upstream connection and echoes;
/// a pin that does not match refuses the upgrade as it refuses a request.
#[tokio::test]
async fn websocket_echo_through_the_plain_forward_path() {
    for opts in [UpstreamOpts::new("ws"), UpstreamOpts::new("ws").h1_only()] {
        let (_pki, _up, p) = pinned_with(HOST, opts).await;
        let mut tcp = TcpStream::connect(p.addr).await.unwrap();
        tcp.write_all(upgrade_request().as_bytes()).await.unwrap();
        let head = read_head(&mut tcp).await.unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: websocket"),
            "{head}"
        );
        assert!(head.contains("x-saw-hop-by-hop: no"), "{head}");
        for frame in [&b"ping"[..], b"\x81\x05hello", b"binary\x00\xff"] {
            tcp.write_all(frame).await.unwrap();
            let mut echo = vec![0u8; frame.len()];
            tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echo))
                .await
                .expect("echoed")
                .unwrap();
            assert_eq!(echo, frame);
        }
        assert_eq!(p.requests(HOST, "ok"), 1);
    }
    // Pins that do not match: refused, never upgraded.
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("ws")).await;
    let wrong = pinset(
        HOST,
        &[pinproxy::policy::pin::Pin::from_bytes([3; 32])],
        "",
        up.addr,
    );
    let p = TestProxy::builder()
        .pinset(&wrong)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let mut tcp = TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(upgrade_request().as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await.unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.contains("x-pinproxy-error: pin-mismatch"), "{head}");
}

/// Issue 24 item 2: only WebSocket upgrades are relayed. Any other token
/// (h2c, TLS/1.x, custom; a `websocket` without the RFC 6455 key) through
/// HTTP_PROXY is served as plain HTTP/1.1: the upstream sees neither
/// `Upgrade` nor the headers `Connection` names. An upstream that switches
/// protocols anyway, or to anything but WebSocket, gets no tunnel.
#[tokio::test]
async fn only_websocket_upgrades_are_relayed_on_the_forward_path() {
    // Over h2 (ALPN) a 101 cannot even be sent: the upstream resets the
    // stream. Over HTTP/1.1 it arrives, and is a protocol violation.
    for (opts, refused) in [
        (UpstreamOpts::new("up"), "upstream-unreachable"),
        (UpstreamOpts::new("up").h1_only(), "upstream-tls-error"),
    ] {
        let (_pki, _up, p) = pinned_with(HOST, opts).await;
        for upgrade in [
            "h2c",
            "H2C",
            "TLS/1.2",
            "x-custom/1",
            "websocket",
            "h2c, websocket",
        ] {
            let req = format!(
                "GET http://{HOST}/hop HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
            );
            let out = send_raw(p.addr, req.as_bytes()).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{upgrade}: {out}");
            assert!(
                out.ends_with("upgrade=[] connection=[] http2-settings=[]"),
                "{upgrade}: {out}"
            );
        }
        assert_eq!(p.requests(HOST, "ok"), 6);
        // A hostile upstream switching to h2c: to a request that asked for
        // nothing (h2c stripped), and to a WebSocket handshake.
        let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";
        // (A WebSocket always goes over its own HTTP/1.1 connection.)
        for (what, headers, refused) in [
            ("h2c", "Upgrade: h2c\r\nConnection: Upgrade", refused),
            ("websocket", ws, "upstream-tls-error"),
        ] {
            let mut tcp = TcpStream::connect(p.addr).await.unwrap();
            let req =
                format!("GET http://{HOST}/switch HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.unwrap();
            let head = read_head(&mut tcp).await.unwrap_or_default();
            assert!(head.starts_with("HTTP/1.1 502"), "{what}: {head}");
            assert!(
                head.contains(&format!("x-pinproxy-error: {refused}")),
                "{what}: {head}"
            );
            // Nothing behind the refusal is a tunnel to the echo.
            let _ = tcp.write_all(b"PRI-smuggled-bytes\r\n\r\n").await;
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest)).await;
            let rest = String::from_utf8_lossy(&rest);
            assert!(!rest.contains("PRI-smuggled-bytes"), "{what}: {rest}");
        }
        let counted = (
            p.requests(HOST, "upstream-tls-error"),
            p.requests(HOST, "upstream-unreachable"),
        );
        let want = match refused {
            "upstream-tls-error" => (2, 0),
            _ => (1, 1),
        };
        assert_eq!(counted, want, "{refused}");
    }
}

fn upgrade_request() -> String {
    format!(
        "GET http://{HOST}/ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade, x-hop\r\nX-Hop: 1\r\nProxy-Authorization: Basic c2VjcmV0\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// [`pinned`], with the upstream's options.
async fn pinned_with(host: &str, opts: UpstreamOpts) -> (Pki, Upstream, Proxy) {
    let pki = Pki::new(&[host]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), opts).await;
    let p = TestProxy::builder()
        .pinset(&pinset(host, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    (pki, up, p)
}
