//! Unlisted plain HTTP (issue 20, item 2), with the built binary and curl:
//! under `unlisted: allow` an `http://` URL to a host the pinset does not
//! list is relayed as plain HTTP to the port the URL names — it used to be
//! upgraded to TLS on 443 and fail — counted as outcome `plain-http`; the
//! private-address rule still refuses it without `allow_private`, and
//! `unlisted: deny` still refuses it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// A plain-HTTP server: answers with what it saw; a WebSocket upgrade is
/// answered `101` and then echoed.
async fn plain_server() -> SocketAddr {
    raw_tcp_upstream(|mut s: TcpStream| async move {
        while let Some(head) = read_head(&mut s).await {
            let line = head.lines().next().unwrap_or_default().to_string();
            if head.to_ascii_lowercase().contains("upgrade: websocket") {
                let _ = s
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
                    )
                    .await;
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                return;
            }
            let body = format!("plain server saw [{line}]");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// The binary on `yaml`; dropped, it is killed.
async fn binary(dir: &Path, yaml: &str) -> (Spawned, SocketAddr, SocketAddr) {
    let pins = write(dir, "pins.yaml", yaml);
    let p = TestProxy::builder()
        .pins_path(pins)
        .arg("--no-watch")
        .stderr_uncaptured()
        .spawn()
        .await;
    wait_listening(p.admin).await;
    let (listen, admin) = (p.listen, p.admin);
    (p, listen, admin)
}

/// curl through the proxy: (status line and headers, body).
async fn curl(proxy: SocketAddr, url: &str) -> (String, String) {
    let (proxy, url) = (format!("http://{proxy}"), url.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-x", &proxy, "-D", "/dev/stderr"])
            .arg(&url)
            .output()
            .expect("curl is installed")
    })
    .await
    .unwrap();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn metrics(admin: SocketAddr) -> String {
    get(admin, &format!("http://{admin}/metrics")).await.body
}

fn allow(port: u16) -> String {
    format!(
        "version: 1\ndefaults:\n  unlisted: allow\n  mode: report\n  allow_private: true\n  ports: [443, {port}]\nhosts: {{}}\n"
    )
}

#[tokio::test]
async fn curl_reaches_an_unlisted_plain_http_server_as_plain_http() {
    let server = plain_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, listen, admin) = binary(dir.path(), &allow(server.port())).await;

    let (head, body) = curl(
        listen,
        &format!("http://127.0.0.1:{}/hello?x=1", server.port()),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}{body}");
    assert_eq!(body, "plain server saw [GET /hello?x=1 HTTP/1.1]");
    let text = metrics(admin).await;
    assert!(
        text.contains("pinproxy_requests_total{host=\"unlisted\",outcome=\"plain-http\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pinproxy_requests_total{host=\"unlisted\",outcome=\"ok\"} 0"),
        "{text}"
    );

    // No port in the URL: port 80, never the TLS upgrade's 443.
    let (head, body) = curl(listen, "http://127.0.0.1/").await;
    assert!(!body.contains(":443"), "{head}{body}");
    if head.starts_with("HTTP/1.1 502") {
        assert!(body.contains("127.0.0.1:80"), "{head}{body}");
    }
}

#[tokio::test]
async fn a_websocket_to_an_unlisted_plain_host_stays_plain() {
    let server = plain_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, listen, admin) = binary(dir.path(), &allow(server.port())).await;
    let mut c = TcpStream::connect(listen).await.unwrap();
    let req = format!(
        "GET http://127.0.0.1:{p}/ws HTTP/1.1\r\nhost: 127.0.0.1:{p}\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        p = server.port()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut c).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    assert!(metrics(admin)
        .await
        .contains("pinproxy_requests_total{host=\"unlisted\",outcome=\"plain-http\"} 1"));
}

#[tokio::test]
async fn private_addresses_and_deny_still_refuse_unlisted_plain_http() {
    let server = plain_server().await;
    let url = format!("http://127.0.0.1:{}/", server.port());

    // Without allow_private: 403 private-address, nothing sent.
    let dir = tempfile::tempdir().unwrap();
    let strict = allow(server.port()).replace("  allow_private: true\n", "");
    let (_child, listen, admin) = binary(dir.path(), &strict).await;
    let (head, body) = curl(listen, &url).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}{body}");
    assert!(head.contains("x-pinproxy-error: private-address"), "{head}");
    let text = metrics(admin).await;
    assert!(
        text.contains("pinproxy_denied_total{reason=\"private-address\"} 1"),
        "{text}"
    );
    assert!(!text.contains("outcome=\"plain-http\"} 1"), "{text}");

    // unlisted: deny
    let dir = tempfile::tempdir().unwrap();
    let deny = allow(server.port()).replace("unlisted: allow", "unlisted: deny");
    let (_child, listen, _) = binary(dir.path(), &deny).await;
    let (head, body) = curl(listen, &url).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}{body}");
    assert!(
        head.contains("x-pinproxy-error: host-not-allowed"),
        "{head}"
    );
}
