//! What one client may cost the webhook (issue 21, attack 3): one 8 MB
//! POST took its RSS from 8.5 MB to 289 MB, and half-sent requests stayed
//! open for ever. Each test talks TLS to a real server on 127.0.0.1 and
//! asserts what it does — refuses before reading, closes after the
//! timeout — not how long it takes.

use std::sync::Arc;
use std::time::Duration;

use pinproxy::k8s::inject::InjectOptions;
use pinproxy::k8s::webhook::{serve, serve_with, CertReloader, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const NAME: &str = "pinproxy-webhook.pinproxy-system.svc";

struct Server {
    addr: std::net::SocketAddr,
    ca: rustls_pki_types::CertificateDer<'static>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A webhook server with `limits` (`None`: `serve`'s defaults).
async fn server(limits: Option<Limits>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![NAME.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let certs = Arc::new(CertReloader::load(&cert_path, &key_path).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = Arc::new(InjectOptions {
        image: "ghcr.io/pinproxy/pinproxy:test".into(),
        ..InjectOptions::default()
    });
    let every = Duration::from_secs(3600);
    let shutdown = async {
        let _ = stopped.await;
    };
    match limits {
        Some(l) => tokio::spawn(serve_with(listener, certs, opts, every, l, shutdown)),
        None => tokio::spawn(serve(listener, certs, opts, every, shutdown)),
    };
    Server {
        addr,
        ca: ca.der().clone(),
        _dir: dir,
        _stop: stop,
    }
}

async fn tls(s: &Server) -> TlsStream<TcpStream> {
    tls_to(s.addr, s.ca.clone()).await
}

async fn tls_to(
    addr: std::net::SocketAddr,
    ca: rustls_pki_types::CertificateDer<'static>,
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(NAME.try_into().unwrap(), tcp)
        .await
        .unwrap()
}

fn head(extra: &str) -> String {
    format!(
        "POST /inject HTTP/1.1\r\nHost: {NAME}\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

/// Reads what the server sends until it closes (or `wait` passes):
/// (the text, whether it closed).
async fn read_until_closed(s: &mut TlsStream<TcpStream>, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut b = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&b[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

/// An 8 MB POST announced by Content-Length is refused with 413 before one
/// byte of it is sent: the server cannot have buffered it.
#[tokio::test]
async fn a_declared_8_mb_body_is_refused_unread() {
    let s = server(None).await;
    let mut c = tls(&s).await;
    c.write_all(head("Content-Length: 8000000\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "413 before the body: {answer:?}"
    );
    assert!(answer.contains("3 MiB"), "{answer}");
    assert!(closed, "and the connection is closed");
}

/// A chunked body (no length announced) is counted while it streams: 413
/// as soon as it passes 3.5 MiB, while the client has not finished —
/// the rest is never waited for, let alone buffered.
#[tokio::test]
async fn a_streamed_body_is_refused_once_it_passes_the_limit() {
    let s = server(None).await;
    let mut c = tls(&s).await;
    c.write_all(head("Transfer-Encoding: chunked\r\n").as_bytes())
        .await
        .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0usize;
    // 4 MiB, then the client stalls with 4 MB still to send.
    while sent < 4 * 1024 * 1024 {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if c.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let (answer, _) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "413 while the body streams: {answer:?}"
    );
}

/// Half-sent heads and bodies are closed after the timeout.
#[tokio::test]
async fn slow_heads_and_bodies_are_closed_after_the_timeout() {
    let s = server(Some(Limits {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        ..Limits::default()
    }))
    .await;
    let mut slow_head = tls(&s).await;
    slow_head
        .write_all(b"POST /inject HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut slow_body = tls(&s).await;
    slow_body
        .write_all(format!("{}{{\"apiVer", head("Content-Length: 1000\r\n")).as_bytes())
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow_head, Duration::from_secs(10)).await;
    assert!(closed, "a head that never ends is closed");
    let (answer, closed) = read_until_closed(&mut slow_body, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 408") && closed,
        "a body that never ends gets 408 and a close: {answer:?}"
    );
}

/// Past the connection cap, connections wait in the kernel's queue: a
/// client is not served while stalled ones hold every slot, and is once
/// they are gone.
#[tokio::test]
async fn the_connection_cap_holds_and_frees() {
    let s = server(Some(Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(60),
        ..Limits::default()
    }))
    .await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = tls(&s).await;
        c.write_all(b"POST /inject HTTP/1.1\r\n").await.unwrap();
        stalled.push(c);
    }
    let (addr, ca) = (s.addr, s.ca.clone());
    let third = tokio::spawn(async move {
        let mut c = tls_to(addr, ca).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut c, Duration::from_secs(5)).await.0
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "served past the cap");
    drop(stalled);
    let answer = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// 3.5 MiB of `[0,0,0,…]` is under the size limit but would parse into
/// ~150 MB: refused unparsed for its value count.
#[tokio::test]
async fn a_body_of_a_million_tiny_values_is_not_parsed() {
    let s = server(None).await;
    let mut c = tls(&s).await;
    let mut body = b"{\"request\":{\"object\":[0".to_vec();
    while body.len() < 3 * 1024 * 1024 {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(b"]}}");
    c.write_all(head(&format!("Content-Length: {}\r\n", body.len())).as_bytes())
        .await
        .unwrap();
    c.write_all(&body).await.unwrap();
    let (answer, _) = read_until_closed(&mut c, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("JSON values"), "{answer}");
}

/// A review the API server would send (a small Pod, opted in).
fn small_review() -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "annotations": {"pinproxy.io/inject": "true"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}
            }
        }
    })
    .to_string()
    .into_bytes()
}

async fn post_review(s: &Server) -> String {
    let mut c = tls(s).await;
    let body = small_review();
    c.write_all(
        head(&format!(
            "Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        ))
        .as_bytes(),
    )
    .await
    .unwrap();
    c.write_all(&body).await.unwrap();
    read_until_closed(&mut c, Duration::from_secs(10)).await.0
}

/// Clients that send their bodies slowly hold only what they sent: they
/// never keep the API server's reviews waiting.
#[tokio::test]
async fn slow_bodies_do_not_hold_up_other_reviews() {
    let s = server(Some(Limits {
        body_timeout: Duration::from_secs(60),
        ..Limits::default()
    }))
    .await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut c = tls(&s).await;
        c.write_all(format!("{}{{\"api", head("Content-Length: 1000\r\n")).as_bytes())
            .await
            .unwrap();
        slow.push(c);
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), post_review(&s))
        .await
        .expect("a review is answered while 20 bodies trickle in");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"allowed\":true"), "{answer}");
}

/// Bodies in flight share a byte budget: when stalled clients hold it all,
/// the next body gets 503 at once — memory, not the webhook, is what runs
/// out — and once they are gone, reviews pass again.
#[tokio::test]
async fn bodies_in_flight_share_a_byte_budget() {
    let s = server(Some(Limits {
        max_body: 512 * 1024,
        body_budget: 1024 * 1024,
        body_timeout: Duration::from_secs(60),
        ..Limits::default()
    }))
    .await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = tls(&s).await;
        c.write_all(head("Content-Length: 524288\r\n").as_bytes())
            .await
            .unwrap();
        c.write_all(&vec![b' '; 512 * 1024 - 1]).await.unwrap();
        holders.push(c);
    }
    // Until the two hold their share, the next body may still fit.
    let mut busy = String::new();
    for _ in 0..50 {
        busy = post_review(&s).await;
        if busy.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.contains("budget"), "{busy}");
    drop(holders);
    let mut answer = String::new();
    for _ in 0..50 {
        answer = post_review(&s).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
