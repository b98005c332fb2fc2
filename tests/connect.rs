//! CONNECT: interception with the pod CA, SNI checks, refusals, byte
//! tunnels for unlisted hosts, h2 / gRPC / WebSocket through the tunnel.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use pinproxy::policy::pin::Pin;
use support::*;

const HOST: &str = "api.pinned.test";

fn client_config(roots_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

async fn tls(
    tcp: TcpStream,
    cfg: Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

/// Opens an intercepted tunnel to HOST and returns the client TLS stream.
async fn tunnel(p: &Proxy, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let (status, head, tcp) = connect_status(p.addr, &format!("{HOST}:443")).await;
    assert_eq!(status, 200, "{head}");
    tls(tcp, client_config(p.intercept.ca_pem(), alpn), HOST)
        .await
        .expect("handshake with the pod CA's leaf")
}

async fn h1_get(stream: TlsStream<TcpStream>, path: &str) -> (u16, http::HeaderMap, String) {
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn setup(pins: &[Pin], opts: UpstreamOpts) -> (Pki, Upstream, Proxy) {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), opts).await;
    // No pins given: pin the real intermediate.
    let pins = if pins.is_empty() {
        vec![pki.int.pin()]
    } else {
        pins.to_vec()
    };
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &pins, "", up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    (pki, up, p)
}

#[tokio::test]
async fn curl_through_connect_reaches_the_pinned_host() {
    let (_, _, p) = pinned(HOST).await;
    let ca = p.ca_path();
    assert!(ca.exists());
    for extra in [&[][..], &["--http1.1"][..]] {
        let proxy_arg = format!("http://{}", p.addr);
        let mut args = vec![
            "-sS",
            "--max-time",
            "10",
            "-x",
            &proxy_arg,
            "--cacert",
            ca.to_str().unwrap(),
            "-D",
            "-",
        ];
        args.extend_from_slice(extra);
        let url = format!("https://{HOST}/hello");
        args.push(&url);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(&args)
                .output()
                .expect("curl is installed")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("upstream=real"), "{stdout}");
        assert!(stdout.contains(&format!("host={HOST}")), "{stdout}");
    }
    assert_eq!(p.requests(HOST, "ok"), 2);
}

#[tokio::test]
async fn connect_refusals_answer_the_connect() {
    let (pki, up, p) = setup(&[], UpstreamOpts::new("real")).await;
    let _ = (&pki, &up);
    let (s, head, _) = connect_status(p.addr, "unlisted.test:443").await;
    assert_eq!(s, 403, "{head}");
    assert!(
        head.contains("x-pinproxy-error: host-not-allowed"),
        "{head}"
    );
    let (s, head, _) = connect_status(p.addr, &format!("{HOST}:8443")).await;
    assert_eq!(s, 403, "{head}");
    assert!(
        head.contains("x-pinproxy-error: port-not-allowed"),
        "{head}"
    );
    for bad in [
        HOST.to_string(),
        format!("user@{HOST}:443"),
        "0x7f.1:443".to_string(),
        format!("{HOST}:0"),
    ] {
        let (s, head, _) = connect_status(p.addr, &bad).await;
        assert_eq!(s, 400, "{bad}: {head}");
        assert!(
            head.contains("x-pinproxy-error: bad-request"),
            "{bad}: {head}"
        );
    }
    assert_eq!(p.denied("host-not-allowed"), 1);
    assert_eq!(p.denied("port-not-allowed"), 1);
    assert!(p.denied("bad-request") >= 3, "{}", p.denied("bad-request"));
}

#[tokio::test]
async fn pin_mismatch_inside_the_tunnel_is_a_readable_502() {
    let (_pki, _up, p) = setup(&[Pin::from_bytes([8; 32])], UpstreamOpts::new("real")).await;
    let stream = tunnel(&p, &[b"http/1.1"]).await;
    let (status, headers, body) = h1_get(stream, "/").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers.get("x-pinproxy-error").unwrap(), "pin-mismatch");
    assert!(body.contains(HOST), "{body}");
    assert_eq!(p.mismatches(HOST, "enforce"), 1);
    assert_eq!(p.requests(HOST, "pin-mismatch"), 1);
}

#[tokio::test]
async fn sni_naming_another_host_is_refused() {
    let (pki, _up, p) = setup(&[], UpstreamOpts::new("real")).await;
    let _ = pki;
    let (status, _, tcp) = connect_status(p.addr, &format!("{HOST}:443")).await;
    assert_eq!(status, 200);
    let err = tls(
        tcp,
        client_config(p.intercept.ca_pem(), &[b"http/1.1"]),
        "other.pinned.test",
    )
    .await;
    let err = err.expect_err("a different SNI must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("HandshakeFailure") || msg.contains("alert"),
        "{msg}"
    );
    assert_eq!(p.denied("sni-mismatch"), 1);
    // The same host name with different spelling is the same host.
    let (_, _, tcp) = connect_status(p.addr, &format!("{HOST}:443")).await;
    assert!(tls(
        tcp,
        client_config(p.intercept.ca_pem(), &[b"http/1.1"]),
        "API.pinned.test"
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn h2_client_to_h1_upstream_and_h1_client_to_h2_upstream() {
    let pki = Pki::new(&[HOST]);
    let up1 = upstream(
        pki.chain(),
        pki.leaf.key_der(),
        UpstreamOpts::new("h1").h1_only(),
    )
    .await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up1.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let stream = tunnel(&p, &[b"h2"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut s, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::get(format!("https://{HOST}/h2-{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("version=HTTP/1.1") && body.contains(&format!("path=/h2-{i}")),
            "{body}"
        );
    }

    let up2 = upstream(
        pki.chain(),
        pki.leaf.key_der(),
        UpstreamOpts::new("h2").h2_only(),
    )
    .await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up2.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let stream = tunnel(&p, &[b"http/1.1"]).await;
    let (status, _, body) = h1_get(stream, "/h1").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("version=HTTP/2.0") && body.contains("upstream=h2"),
        "{body}"
    );
}

#[tokio::test]
async fn grpc_call_with_trailers_through_the_tunnel() {
    let (_pki, _up, p) = setup(&[], UpstreamOpts::new("grpc").h2_only()).await;
    let stream = tunnel(&p, &[b"h2"]).await;
    let (mut s, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // A gRPC frame: uncompressed flag + length + message.
    let msg = b"\x00\x00\x00\x00\x05hello";
    let req = Request::post(format!("https://{HOST}/grpc"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(msg)))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/grpc"
    );
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(collected.to_bytes().as_ref(), msg);
}

#[tokio::test]
async fn websocket_echo_through_the_tunnel() {
    for opts in [UpstreamOpts::new("ws"), UpstreamOpts::new("ws").h1_only()] {
        let (_pki, _up, p) = setup(&[], opts).await;
        let mut stream = tunnel(&p, &[b"http/1.1"]).await;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut b).await.unwrap(), 1);
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        for frame in [&b"ping"[..], b"\x81\x05hello", b"binary\x00\xff"] {
            stream.write_all(frame).await.unwrap();
            let mut echo = vec![0u8; frame.len()];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(echo, frame);
        }
    }
}

/// Issue 24 item 2, inside an intercepted tunnel: `Upgrade: h2c` is served
/// as plain HTTP/1.1 (the upstream sees neither header), and an upstream's
/// `101` to h2c never becomes a tunnel.
#[tokio::test]
async fn only_websocket_upgrades_are_relayed_in_the_tunnel() {
    let (_pki, _up, p) = setup(&[], UpstreamOpts::new("up").h1_only()).await;
    let mut stream = tunnel(&p, &[b"http/1.1"]).await;
    let req = format!(
        "GET /hop HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await.unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let want = "upgrade=[] connection=[] http2-settings=[]";
    let mut body = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&body).contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the body arrives")
            .unwrap();
        assert!(n > 0, "{head}{}", String::from_utf8_lossy(&body));
        body.extend_from_slice(&buf[..n]);
    }
    // Same connection: an upstream that switches to h2c anyway.
    let req = format!(
        "GET /switch HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await.unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(
        head.contains("x-pinproxy-error: upstream-tls-error"),
        "{head}"
    );
    let _ = stream.write_all(b"PRI-smuggled-bytes\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("PRI-smuggled-bytes"), "{rest}");
}

#[tokio::test]
async fn minted_leaves_are_reused() {
    let (_pki, _up, p) = setup(&[], UpstreamOpts::new("real")).await;
    for _ in 0..3 {
        let stream = tunnel(&p, &[b"http/1.1"]).await;
        assert_eq!(h1_get(stream, "/").await.0, 200);
    }
    let m = &p.metrics.minted_leaves;
    assert_eq!(m.with_label_values(&["minted"]).get(), 1);
    assert_eq!(m.with_label_values(&["cached"]).get(), 2);
    assert_eq!(p.intercept.cached_leaves(), 1);
}

#[tokio::test]
async fn unlisted_allow_tunnels_bytes_unchanged() {
    let pki = Pki::new(&["127.0.0.1"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("direct")).await;
    let port = up.addr.port();
    let yaml = format!("version: 1\ndefaults:\n  unlisted: allow\n  ports: [{port}]\n  allow_private: true\nhosts: {{}}\n");
    let p = TestProxy::builder().pinset(&yaml).run().await;
    let (status, head, tcp) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(status, 200, "{head}");
    // The client trusts only the upstream's own root: no interception.
    let cfg = client_config(&pki.root.pem(), &[b"http/1.1"]);
    let stream = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into()),
            tcp,
        )
        .await
        .unwrap();
    let peer = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(peer, pki.leaf.cert);
    assert_eq!(p.requests("unlisted", "tunnel"), 1);
    // Loopback without allow_private: refused before 200.
    let p = TestProxy::builder()
        .pinset(&yaml.replace("  allow_private: true\n", ""))
        .run()
        .await;
    let (status, head, _) = connect_status(p.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("x-pinproxy-error: private-address"), "{head}");
}

#[tokio::test]
async fn ca_is_written_before_readyz_turns_ready() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&[HOST]);
    let pins = write(
        dir.path(),
        "pins.yaml",
        &pinset(HOST, &[pki.int.pin()], "", "127.0.0.1:9".parse().unwrap()),
    );
    write(dir.path(), "ca.pem", &pki.root.pem());
    let ca_out = dir.path().join("ca-out");
    let (mut child, _, admin) = spawn_binary(&pins, &["--ca-out", ca_out.to_str().unwrap()]);
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(admin).await {
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            if out.starts_with("HTTP/1.1 200") {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "readyz never turned 200");
    let pem = std::fs::read(ca_out.join("ca.crt")).expect("ca.crt exists once ready");
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    assert!(cert.is_ca(), "ca.crt is a CA certificate");
    let _ = child.start_kill();
}

/// A CA made elsewhere (openssl, as an operator would for a shared Secret)
/// is loaded with --ca-cert/--ca-key, and curl (OpenSSL, which matches
/// issuers by key identifier) accepts the leaves minted from it.
#[tokio::test]
async fn a_loaded_ca_signs_leaves_that_curl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ca.key");
    let cert = dir.path().join("ca.crt");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=operator CA",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let mut p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .args(&[
            "--ca-cert",
            cert.to_str().unwrap(),
            "--ca-key",
            key.to_str().unwrap(),
        ])
        .stderr_uncaptured()
        .spawn()
        .await;
    let listen = p.listen;
    let args: Vec<String> = [
        "-sS",
        "--max-time",
        "10",
        "-x",
        &format!("http://{listen}"),
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://{HOST}/ca"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("path=/ca"), "{stdout}");
    let _ = p.child.start_kill();
}

/// An h2 request inside an intercepted tunnel whose `host` names another
/// host than its `:authority` is refused 421 (RFC 9113 §8.3.1: a server
/// should treat it as malformed): it used to be served on `:authority`,
/// the two names disagreeing unnoticed. The same host in both is served.
#[tokio::test]
async fn an_h2_host_header_naming_another_host_is_misdirected() {
    let (_pki, up, p) = setup(&[], UpstreamOpts::new("h2").h2_only()).await;
    let stream = tunnel(&p, &[b"h2"]).await;
    let (mut s, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = |host: &str| {
        Request::get(format!("https://{HOST}/x"))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let resp = s.send_request(req("other.pinned.test")).await.unwrap();
    assert_eq!(resp.status(), 421);
    assert_eq!(
        resp.headers().get("x-pinproxy-error").unwrap(),
        "misdirected-request"
    );
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    let resp = s.send_request(req(HOST)).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// `--tunnel-idle-timeout` on an intercepted h2 connection is judged by its
/// requests, not its bytes: PINGs (pinproxy's every 30 s and the client's
/// answers, or a client's own) kept a connection that sent no request
/// open for good, holding its slot (the seventh review's F4). A response
/// streaming longer than the timeout is not cut; once it is done and
/// nothing more is asked, the connection closes although the client keeps
/// pinging.
#[tokio::test]
async fn an_intercepted_h2_connection_idles_out_while_it_only_pings() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("h2")).await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .limits(|l| l.tunnel_idle = Duration::from_millis(1000))
        .run()
        .await;
    let stream = tunnel(&p, &[b"h2"]).await;
    let (mut s, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    // 50 chunks over 5 s: longer than the timeout, never idle.
    let req = Request::get(format!("https://{HOST}/stream"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 50);
    // Now only PINGs: closed within the timeout and a margin.
    let closed = tokio::time::timeout(Duration::from_secs(4), conn).await;
    assert!(
        closed.is_ok(),
        "an h2 connection that only pinged stayed open past --tunnel-idle-timeout"
    );
}

/// Reads one h2 frame: (type, flags, stream, payload).
async fn h2_frame(s: &mut TlsStream<TcpStream>) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.expect("an h2 frame header");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)
        .await
        .expect("an h2 frame payload");
    (head[3], head[4], stream, payload)
}

/// The h2 server inside a tunnel (review 9): windows for request bodies of
/// 1 MiB (stream and connection, stated, not left to hyper); the header
/// list limit of HTTP/1.1 (64 KiB + 4 KiB of slack), not hyper's 16 KiB.
#[tokio::test]
async fn the_tunnels_h2_server_advertises_bounded_windows_and_the_head_limit() {
    let (_pki, _up, p) = setup(&[], UpstreamOpts::new("h2").h2_only()).await;
    let mut s = tunnel(&p, &[b"h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface and an empty SETTINGS.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface written");
    let mut settings = std::collections::HashMap::new();
    let mut conn_window: u64 = 65_535;
    let read = async {
        // The server's SETTINGS come first; its connection WINDOW_UPDATE
        // and the ACK of ours follow.
        let mut acked = false;
        while settings.is_empty() || conn_window == 65_535 || !acked {
            let (kind, flags, stream, payload) = h2_frame(&mut s).await;
            match kind {
                0x4 if flags & 0x1 == 0 => {
                    for e in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([e[0], e[1]]);
                        let v = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
                        settings.insert(id, v);
                    }
                }
                0x4 => acked = true,
                0x8 if stream == 0 => {
                    let [a, b, c, d] = payload[..] else {
                        panic!("a WINDOW_UPDATE of {} bytes", payload.len());
                    };
                    conn_window += u64::from(u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("SETTINGS, a WINDOW_UPDATE and an ACK within 5 s");
    // 0x3 MAX_CONCURRENT_STREAMS, 0x4 INITIAL_WINDOW_SIZE, 0x6 MAX_HEADER_LIST_SIZE.
    assert_eq!(settings.get(&0x3), Some(&100), "{settings:?}");
    assert_eq!(settings.get(&0x4), Some(&(1024 * 1024)), "{settings:?}");
    assert_eq!(settings.get(&0x6), Some(&(68 * 1024)), "{settings:?}");
    assert_eq!(conn_window, 1024 * 1024);
}
