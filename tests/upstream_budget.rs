//! The upstream connection budget (the seventh review's F1): upstream
//! sockets count against one process-wide limit sized with the client
//! connections to the open-files limit, so neither idle pooled
//! connections to many names (F1a) nor h2 streams inside an intercepted
//! tunnel, each on an HTTP/1.1 upstream connection of its own (F1b), can
//! take the descriptors `/readyz`, accept and reloads need. A dial beyond
//! the budget is `503 overloaded` at once.
//!
//! Both tests run the built binary under `prlimit --nofile`: running out
//! of descriptors is a process's fate, which an in-process proxy would
//! share with the test. The limit leaves 12 client connections (and so a
//! budget of 12 upstream sockets): the reserve (192) + 4 admin + 2 × 12.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// The reserve (128 + 64 refusals), 4 admin connections, 2 × 12 clients.
const NOFILE: u64 = 192 + 4 + 2 * BUDGET as u64;
const BUDGET: usize = 12;

/// The binary under `prlimit`, its stderr collected line by line.
struct Limited {
    child: tokio::process::Child,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Limited {
    async fn start(pinset: &str, files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            write(dir.path(), name, contents);
        }
        let pins = write(dir.path(), "pins.yaml", pinset);
        let ca_out = dir.path().join("ca-out");
        let (listen, admin) = (free(), free());
        let mut child = tokio::process::Command::new("prlimit")
            .arg(format!("--nofile={NOFILE}"))
            .arg(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["run", "--no-watch", "--admin-max-connections", "4"])
            .args(["--pins", pins.to_str().unwrap()])
            .args(["--ca-out", ca_out.to_str().unwrap()])
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string()])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("prlimit (util-linux) is installed");
        // Drained all along: a full pipe would stall the proxy's logging.
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let seen = lines.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut stderr = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                seen.lock().unwrap().push(line);
            }
        });
        wait_listening(listen).await;
        let p = Self {
            child,
            listen,
            admin,
            lines,
            dir,
        };
        assert_eq!(p.readyz().await, Some(200), "ready at start");
        p
    }

    /// `/readyz`'s status, `None` when the admin listener does not answer
    /// within 3 s.
    async fn readyz(&self) -> Option<u16> {
        let ask = async {
            let mut tcp = TcpStream::connect(self.admin).await.ok()?;
            tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            tcp.read_to_end(&mut out).await.ok()?;
            status_of(&out)
        };
        tokio::time::timeout(Duration::from_secs(3), ask)
            .await
            .ok()
            .flatten()
    }

    /// Touches the pinset and sends SIGHUP: whether the reload's line
    /// shows up within 5 s.
    async fn reload(&self, pinset: &str, n: usize) -> bool {
        write(
            self.dir.path(),
            "pins.yaml",
            &format!("{pinset}# touched {n}\n"),
        );
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let seen = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("SIGHUP: new pinset in force"))
                .count();
            if seen >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A sample of `/metrics` (a metric without labels), `None` when
    /// absent or the admin listener does not answer within 3 s.
    async fn metric(&self, name: &str) -> Option<f64> {
        let ask = async {
            let mut tcp = TcpStream::connect(self.admin).await.ok()?;
            tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            tcp.read_to_end(&mut out).await.ok()?;
            let text = String::from_utf8_lossy(&out).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        tokio::time::timeout(Duration::from_secs(3), ask)
            .await
            .ok()
            .flatten()
    }

    fn log_has(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    fn pod_ca(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca-out/ca.crt")).unwrap()
    }
}

/// The status and `x-pinproxy-error` of a plain `GET http://host/` on a new
/// connection; `None` when no answer came within 5 s.
async fn plain_get(proxy: std::net::SocketAddr, host: &str) -> Option<(u16, String)> {
    let ask = async {
        let mut tcp = TcpStream::connect(proxy).await.ok()?;
        let req =
            format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).to_lowercase();
        let reason = text
            .lines()
            .find_map(|l| l.strip_prefix("x-pinproxy-error: "))
            .unwrap_or_default()
            .trim()
            .to_string();
        Some((status_of(&out)?, reason))
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
}

fn status_of(head: &[u8]) -> Option<u16> {
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

/// F1a: one request at a time, each on a new client connection, to ever
/// new names under one wildcard entry: each leaves an idle pooled upstream
/// connection. Past the budget a new name is `503 overloaded` at once;
/// `/readyz` and reloads keep working; once the upstream closes the idle
/// connections, new names are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pooled_connections_to_many_names_stay_within_the_budget() {
    let pki = Pki::new(&["*.pinned.test"]);
    let up = switchable_upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("wild")).await;
    let pinset = pinset("*.pinned.test", &[pki.int.pin()], "", up.addr);
    let p = Limited::start(&pinset, &[("ca.pem", pki.root.pem())]).await;

    // Enough names to run the old code (no budget) out of descriptors.
    let (mut ok, mut overloaded, mut other) = (0, 0, Vec::new());
    for i in 0..NOFILE + 20 {
        let started = Instant::now();
        match plain_get(p.listen, &format!("h{i}.pinned.test")).await {
            Some((200, _)) => ok += 1,
            Some((503, r)) if r == "overloaded" => {
                overloaded += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "a refusal is prompt"
                );
            }
            answer => {
                other.push((i, answer));
                if other.len() > 3 {
                    break;
                }
            }
        }
    }
    // What an operator sees while it refuses: every upstream socket the
    // budget allows is open (the idle pooled ones).
    let budget = BUDGET as f64;
    let gauges = (
        p.metric("pinproxy_upstream_connections_active").await,
        p.metric("pinproxy_upstream_connections_limit").await,
        p.metric("pinproxy_connections_limit").await,
    );
    let ready = p.readyz().await;
    let reloaded = p.reload(&pinset, 1).await;
    let emfile = p.log_has("Too many open files");
    eprintln!("{ok} served, {overloaded} overloaded, others {other:?}; /readyz {ready:?}, reload {reloaded}");
    assert!(
        !emfile && ready == Some(200) && reloaded,
        "while the budget is spent: EMFILE in the log: {emfile}, /readyz: {ready:?}, \
         SIGHUP reload applied: {reloaded} ({ok} served, {overloaded} overloaded, others: {other:?})"
    );
    assert!(other.is_empty(), "only 200 or 503 overloaded: {other:?}");
    assert_eq!(
        gauges,
        (Some(budget), Some(budget), Some(budget)),
        "upstream sockets open, their limit, the client connections' limit"
    );
    assert!(
        ok <= BUDGET && overloaded > 0,
        "{ok} served (budget {BUDGET}), {overloaded} refused overloaded"
    );

    // The upstream closes its connections (a restart): the idle ones
    // give their permits back and new names are served again.
    up.switch(pki.chain(), pki.leaf.key_der());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    while Instant::now() < deadline {
        last = plain_get(p.listen, "again.pinned.test").await;
        if matches!(last, Some((200, _))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(last, Some((200, _))),
        "served again once idle connections closed: {last:?}"
    );
    let open = p.metric("pinproxy_upstream_connections_active").await;
    assert!(
        matches!(open, Some(n) if n < budget),
        "the closed connections gave their places back: {open:?} open"
    );
}

/// F1b: h2 streams inside intercepted tunnels to an HTTP/1.1 upstream,
/// each on an upstream connection of its own, held open by the upstream.
/// Streams past the budget are `503 overloaded` at once; `/readyz` and
/// reloads keep working; once the held responses are let go, the tunnel
/// serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_in_a_tunnel_stay_within_the_budget() {
    const HOST: &str = "held.pinned.test";
    let pki = Pki::new(&[HOST]);
    let (release, released) = tokio::sync::watch::channel(false);
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = held.clone();
    let up = raw_tls_upstream(pki.chain(), pki.leaf.key_der(), move |mut tls| {
        let mut released = released.clone();
        let counter = counter.clone();
        async move {
            if read_head(&mut tls).await.is_none() {
                return;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = released.wait_for(|r| *r).await;
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            let _ = tls.shutdown().await;
        }
    })
    .await;
    let pinset = pinset(HOST, &[pki.int.pin()], "", up);
    let p = Limited::start(&pinset, &[("ca.pem", pki.root.pem())]).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(p.pod_ca().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let cfg = Arc::new(cfg);

    // Two tunnels of 150 streams each: more upstream connections than the
    // old code had descriptors.
    let mut senders = Vec::new();
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (status, head, tcp) = connect_status(p.listen, &format!("{HOST}:443")).await;
        assert_eq!(status, 200, "{head}");
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .expect("handshake with the pod CA's leaf");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        for j in 0..150 {
            let mut sender = sender.clone();
            streams.spawn(async move {
                let req = http::Request::get(format!("https://{HOST}/s{j}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let started = Instant::now();
                let resp = sender.send_request(req).await.ok()?;
                let reason = resp
                    .headers()
                    .get("x-pinproxy-error")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                Some((status, reason, started.elapsed()))
            });
        }
        senders.push(sender);
    }
    // Wait for the upstream to hold what it will get.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = usize::MAX;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = held.load(std::sync::atomic::Ordering::SeqCst);
        if now == before {
            break;
        }
        before = now;
    }
    let holding = held.load(std::sync::atomic::Ordering::SeqCst);
    let ready = p.readyz().await;
    let reloaded = p.reload(&pinset, 1).await;
    let emfile = p.log_has("Too many open files");
    assert!(
        !emfile && ready == Some(200) && reloaded,
        "while the budget is spent: EMFILE in the log: {emfile}, /readyz: {ready:?}, \
         SIGHUP reload applied: {reloaded} (the upstream holds {holding} requests)"
    );
    assert!(
        holding <= BUDGET,
        "the upstream holds {holding} connections (budget {BUDGET})"
    );
    // Every stream not held was refused, promptly.
    let mut refused = 0;
    while let Ok(Some(done)) =
        tokio::time::timeout(Duration::from_millis(200), streams.join_next()).await
    {
        match done {
            Ok(Some((503, reason, took))) if reason == "overloaded" => {
                assert!(took < Duration::from_secs(5), "refused promptly: {took:?}");
                refused += 1;
            }
            other => panic!("only held streams and 503 overloaded: {other:?}"),
        }
    }
    eprintln!("{refused} streams refused overloaded, {holding} held; /readyz {ready:?}, reload {reloaded}");
    assert_eq!(refused + holding, 300, "{refused} refused, {holding} held");

    // Let go: the held streams are answered, and the tunnel serves again.
    release.send_replace(true);
    while let Some(done) = streams.join_next().await {
        assert!(
            matches!(done, Ok(Some((200, _, _)))),
            "a held stream is answered: {done:?}"
        );
    }
    let mut sender = senders.pop().unwrap();
    let req = http::Request::get(format!("https://{HOST}/after"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(resp.status(), 200, "served again once connections closed");
}
