//! What one client may cost the webhook (issue 21, attack 3): one 8 MB
//! POST took its RSS from 8.5 MB to 289 MB, and half-sent requests stayed
//! open for ever. Each test talks TLS to a real server on 127.0.0.1 and
//! asserts what it does — refuses before reading, closes after the
//! timeout — not how long it takes.
//!
//! Then what a client makes the webhook *build* (four 600 KB reviews of
//! 18,000 tiny containers came back as 33 MB patches, 1.4 GB RSS) and
//! connections that never send a byte (400 of them held every slot until
//! the handshake timeout): those tests run the built binary, to read its
//! peak RSS and to hold its sockets in another process.

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

/// A CA and a serving certificate for [`NAME`] it signed, written to `dir`
/// as `tls.crt` and `tls.key`: (the CA, the two paths).
fn serving_cert(
    dir: &std::path::Path,
) -> (rcgen::Certificate, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![NAME.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca, cert_path, key_path)
}

/// A webhook server with `limits` (`None`: `serve`'s defaults).
async fn server(limits: Option<Limits>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert_path, key_path) = serving_cert(dir.path());
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
    tls_over(TcpStream::connect(addr).await.unwrap(), ca).await
}

async fn tls_over(
    tcp: TcpStream,
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
/// client is not served while connections that sent a request (their
/// bodies stalled) hold every slot, and is once they are gone.
#[tokio::test]
async fn the_connection_cap_holds_and_frees() {
    let s = server(Some(Limits {
        max_connections: 2,
        body_timeout: Duration::from_secs(60),
        ..Limits::default()
    }))
    .await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = tls(&s).await;
        c.write_all(format!("{}{{\"api", head("Content-Length: 1000\r\n")).as_bytes())
            .await
            .unwrap();
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

/// When every slot is taken by connections that sent nothing after their
/// handshake (or only part of a head), a new client is served and the
/// oldest idle connection is closed for it.
#[tokio::test]
async fn idle_connections_make_room_for_a_new_one() {
    let s = server(Some(Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(60),
        ..Limits::default()
    }))
    .await;
    let mut oldest = tls(&s).await;
    let mut newer = tls(&s).await;
    newer.write_all(b"POST /inject HTTP/1.1\r\n").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), post_review(&s))
        .await
        .expect("served while idle connections held every slot");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, closed) = read_until_closed(&mut oldest, Duration::from_secs(1)).await;
    assert!(closed, "the oldest idle connection made room");
    let (_, closed) = read_until_closed(&mut newer, Duration::from_millis(100)).await;
    assert!(!closed, "only one was needed");
}

/// A connection kept alive after its answer holds no slot for good: the
/// final review of the eviction above had a client send one `GET /healthz`
/// on each connection and keep them all open — never closable, since a
/// connection that had sent a request was busy for ever — and every slot
/// stayed taken. Once its answer is out (and the grace has passed) it is
/// idle again and makes room; a request still in flight is never cut.
#[tokio::test]
async fn a_connection_kept_alive_after_its_answer_makes_room() {
    let s = server(Some(Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(60),
        ..Limits::default()
    }))
    .await;
    let mut kept = tls(&s).await;
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {NAME}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut kept, Duration::from_millis(300)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && !closed, "{answer}");
    // The other slot: a request in flight (its body still to come).
    let mut in_flight = tls(&s).await;
    in_flight
        .write_all(head("Content-Length: 100\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), post_review(&s))
        .await
        .expect("served while a kept-alive and an in-flight connection held every slot");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, closed) = read_until_closed(&mut kept, Duration::from_secs(1)).await;
    assert!(closed, "the kept-alive connection made room");
    let (_, closed) = read_until_closed(&mut in_flight, Duration::from_millis(100)).await;
    assert!(!closed, "a request in flight is never cut");
}

/// The built webhook, on a port of 127.0.0.1, trusting `Server::ca`.
#[cfg(target_os = "linux")]
struct Binary {
    addr: std::net::SocketAddr,
    ca: rustls_pki_types::CertificateDer<'static>,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl Binary {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert_path, key_path) = serving_cert(dir.path());
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["webhook", "--listen", &addr.to_string()])
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .args(["--image", "ghcr.io/pinproxy/pinproxy:test"])
            .env("PINPROXY_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let b = Binary {
            addr,
            ca: ca.der().clone(),
            child,
            _dir: dir,
        };
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the webhook never listened on {addr}");
    }

    /// Peak resident memory so far, bytes (`VmHWM`).
    fn peak_rss(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// POSTs `body` to `/inject` on a fresh connection: the answer's text.
    async fn post(&self, body: &[u8]) -> String {
        let c = tls_to(self.addr, self.ca.clone()).await;
        Self::post_over(c, body).await
    }

    /// As [`Binary::post`], from 127.0.0.2: another address than the
    /// tests' other clients, as the API server's is.
    async fn post_from_elsewhere(&self, body: &[u8]) -> String {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        Self::post_over(tls_over(tcp, self.ca.clone()).await, body).await
    }

    async fn post_over(mut c: TlsStream<TcpStream>, body: &[u8]) -> String {
        let head = head(&format!(
            "Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        ));
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(body).await.unwrap();
        read_until_closed(&mut c, Duration::from_secs(60)).await.0
    }

    /// `copies` POSTs of `body` at once, each on its own connection.
    async fn post_at_once(self: &Arc<Self>, body: &Arc<Vec<u8>>, copies: usize) -> Vec<String> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..copies {
            let (wh, body) = (self.clone(), body.clone());
            set.spawn(async move { wh.post(&body).await });
        }
        set.join_all().await
    }
}

/// An opted-in Pod CREATE review with `n` one-line containers (the
/// review's attack: 18,000 of them is 600 KB, under every input limit).
fn review_of(n: usize) -> Vec<u8> {
    let containers: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("c{i}"), "image": "i"}))
        .collect();
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-many",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "many", "labels": {"pinproxy.io/inject": "true"}},
                "spec": {"containers": containers}
            }
        }
    })
    .to_string()
    .into_bytes()
}

/// The JSON body of an HTTP answer.
fn json_body(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:.300}"))
}

/// Four reviews at once of pods with 18,000 containers are denied with the
/// reason, and the webhook stays far under the chart's 128 MiB limit; pods
/// at the cap (100 containers) are still injected, with patches that hold
/// what was added rather than copies of the pod.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn many_container_pods_are_denied_within_bounded_memory() {
    let wh = Arc::new(Binary::start().await);
    let huge = Arc::new(review_of(18_000));
    assert!(
        huge.len() > 500_000 && huge.len() < 3 << 20,
        "{}",
        huge.len()
    );
    let answers = wh.post_at_once(&huge, 4).await;
    let peak = wh.peak_rss();
    assert!(peak < 128 << 20, "peak RSS {} MiB", peak >> 20);
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.300}");
        let response = &json_body(answer)["response"];
        assert_eq!(
            response["allowed"],
            serde_json::json!(false),
            "{:.300}",
            response.to_string()
        );
        assert_eq!(
            response["status"]["message"],
            serde_json::json!(
                "pinproxy cannot inject this pod: it has 18000 containers and init \
                 containers, over the webhook's limit of 100"
            )
        );
    }
    let answers = wh.post_at_once(&Arc::new(review_of(100)), 4).await;
    for answer in &answers {
        let response = &json_body(answer)["response"];
        assert_eq!(
            response["allowed"],
            serde_json::json!(true),
            "{response:.300}"
        );
        let patch = response["patch"].as_str().expect("a patch");
        // ~2 KB added per container; the old whole-list patch was more.
        assert!(patch.len() < 400_000, "{}", patch.len());
    }
    let peak = wh.peak_rss();
    assert!(peak < 128 << 20, "peak RSS {} MiB", peak >> 20);
    eprintln!("webhook peak RSS: {} MiB", peak >> 20);
}

/// 400 TCP connections from one address that never send a TLS byte, and
/// reconnect the moment they are closed (the review's `slots.py`), do not
/// keep the API server out: reviews over fresh connections from another
/// address are answered within a few seconds. (They held every slot for
/// the 10 s handshake timeout, the API server's call waiting behind them in
/// the accept queue — or its SYN dropped, the queue full.)
#[cfg(target_os = "linux")]
#[tokio::test]
async fn idle_connections_do_not_keep_the_api_server_out() {
    let wh = Binary::start().await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut hogs = tokio::task::JoinSet::new();
    for _ in 0..400 {
        let (addr, stop) = (wh.addr, stop.clone());
        hogs.spawn(async move {
            let hog = async {
                loop {
                    let Ok(mut c) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    // Returns when the server closes it.
                    let _ = c.read(&mut [0u8; 1]).await;
                }
            };
            tokio::select! {
                () = hog => {}
                () = stop.notified() => {}
            }
        });
    }
    // Let them take every slot and fill the accept queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            wh.post_from_elsewhere(&small_review()),
        )
        .await
        .expect("a review answered within 5 s while 400 idle connections come and go");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"allowed\":true"), "{answer}");
        eprintln!("answered in {:?}", started.elapsed());
    }
    stop.notify_waiters();
    hogs.abort_all();
}
