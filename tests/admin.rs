//! The admin listener: who sees what (issue 20, item 4) and what it may
//! cost (issue 21, attack 4). The built binary.
//!
//! - `/pins` and `/learned` are for loopback clients only: a pod in the
//!   cluster (here: another network namespace) gets `/healthz`, `/readyz`
//!   and `/metrics` and a 403 that says why for the rest; the pod itself
//!   and `kubectl port-forward` (loopback inside the pod) get everything.
//! - Half-open admin connections cannot starve the process of descriptors:
//!   the proxy keeps serving, a reload still reads its files, and `/readyz`
//!   answers a new connection once the half-open ones are timed out or gone.
//! - `/metrics` carries the allocator's own figures, read at each scrape
//!   (issue 27, item 4): they explain a memory figure beside RSS.

mod support;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::netns::{self, Pod, APP_V4, APP_V6};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// === who sees what ===

/// `curl` from inside `ns`: (status, body).
fn curl(ns: &netns::Netns, url: &str) -> (String, String) {
    let out = ns
        .command("curl")
        .args(["-s", "-g", "--max-time", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

struct InPod(std::process::Child);

impl Drop for InPod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_in(pod: &Pod, pins: &std::path::Path, admin: &str, extra: &[&str]) -> InPod {
    let child = pod
        .app
        .command(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["run", "--pins", pins.to_str().unwrap(), "--admin", admin])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pinproxy in the pod");
    assert!(
        netns::wait_ready(&pod.app, "http://127.0.0.1:9901/readyz"),
        "pinproxy never got ready in the pod"
    );
    InPod(child)
}

#[test]
fn pins_and_learned_are_for_loopback_clients_only() {
    if netns::skip("pins_and_learned_are_for_loopback_clients_only") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pins = write(
        dir.path(),
        "pins.yaml",
        "version: 1\ndefaults: {unlisted: learn}\nhosts:\n  api.secret.test:\n    pins: [sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=]\n    address: 10.1.2.3:443\n",
    );
    for bind in ["0.0.0.0:9901", "[::]:9901"] {
        let pod = Pod::new("admin");
        let _p = run_in(&pod, &pins, bind, &[]);
        // From the cluster (another namespace, through the pod's IP).
        for ip in [APP_V4.to_string(), format!("[{APP_V6}]")] {
            if bind.starts_with("0.0.0.0") && ip.starts_with('[') {
                continue;
            }
            for path in ["/healthz", "/readyz", "/metrics"] {
                let (status, _) = curl(&pod.world, &format!("http://{ip}:9901{path}"));
                assert_eq!(status, "200", "{bind}: {path} from the cluster");
            }
            for path in ["/pins", "/learned"] {
                let (status, body) = curl(&pod.world, &format!("http://{ip}:9901{path}"));
                assert_eq!(status, "403", "{bind}: {path} from the cluster: {body}");
                assert!(
                    body.contains("loopback") && body.contains("port-forward"),
                    "{body}"
                );
                assert!(!body.contains("api.secret.test") && !body.contains("10.1.2.3"));
            }
            let (status, _) = curl(&pod.world, &format!("http://{ip}:9901/nope"));
            assert_eq!(status, "404");
        }
        // The pod's own address is not loopback either.
        let (status, _) = curl(&pod.app, &format!("http://{APP_V4}:9901/pins"));
        assert_eq!(status, "403", "{bind}: the pod IP from inside the pod");
        // Loopback — the pod itself, kubectl port-forward — sees everything.
        for url in [
            "http://127.0.0.1:9901/pins",
            "http://127.0.0.1:9901/learned",
        ] {
            let (status, body) = curl(&pod.app, url);
            assert_eq!(status, "200", "{bind}: {url}: {body}");
        }
        let (_, body) = curl(&pod.app, "http://127.0.0.1:9901/pins");
        assert!(body.contains("api.secret.test"), "{body}");
        if bind.starts_with('[') {
            let (status, _) = curl(&pod.app, "http://[::1]:9901/pins");
            assert_eq!(status, "200", "::1 is loopback");
        }
    }
}

#[test]
fn admin_expose_all_serves_everything_to_everyone() {
    if netns::skip("admin_expose_all_serves_everything_to_everyone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pins = write(
        dir.path(),
        "pins.yaml",
        "version: 1\ndefaults: {unlisted: allow}\nhosts: {}\n",
    );
    let pod = Pod::new("expose");
    let _p = run_in(&pod, &pins, "0.0.0.0:9901", &["--admin-expose-all"]);
    for path in ["/pins", "/learned", "/metrics"] {
        let (status, _) = curl(&pod.world, &format!("http://{APP_V4}:9901{path}"));
        assert_eq!(status, "200", "{path} with --admin-expose-all");
    }
}

// === what it may cost ===

/// `n` clients that each open an admin connection, send half a request
/// head and stop, all at once (past the listen backlog, connects wait in
/// SYN retries, as a real flood's would).
struct Flood {
    connected: Arc<AtomicUsize>,
    /// Connections the server closed.
    closed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    fn start(admin: std::net::SocketAddr, n: usize) -> Flood {
        let connected = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (connected, closed) = (connected.clone(), closed.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = tokio::net::TcpStream::connect(admin).await else {
                        return;
                    };
                    if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    connected.fetch_add(1, Ordering::SeqCst);
                    let mut b = [0u8; 256];
                    loop {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => {
                                closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(_) => {}
                        }
                    }
                })
            })
            .collect();
        Flood {
            connected,
            closed,
            tasks,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// 300 half-open admin requests against a 256-descriptor limit: before,
/// each took a descriptor until `accept` failed with EMFILE on every
/// listener and the reload could not open the pinset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admin_connections_starve_nothing() {
    let pki = Pki::new(&["api.pinned.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let dir = tempfile::tempdir().unwrap();
    let good = pinset("api.pinned.test", &[pki.int.pin()], "", up.addr);
    let wrong = pinset("api.pinned.test", &[root("Other").pin()], "", up.addr);
    let mut volume = SecretVolume::new(
        dir.path(),
        &[("pins.yaml", &good), ("ca.pem", &pki.root.pem())],
    );
    let (listen, admin) = (free(), free());
    // A hard limit of 256 descriptors, as a tight container would have.
    let script = format!(
        "ulimit -n 256 && exec {} run --pins {} --listen {listen} --admin {admin} \
         --admin-max-connections 8 --admin-header-timeout 2s",
        env!("CARGO_BIN_EXE_pinproxy"),
        volume.path("pins.yaml").display()
    );
    let _child = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(listen).await;
    let url = "http://api.pinned.test/";
    assert_eq!(get(listen, url).await.status, 200);

    let flood = Flood::start(admin, 300);
    // Until the kernel's queues are full (past the admin cap and the
    // backlog, connects wait), or — before the fix — all were accepted.
    let (mut last, mut stable) = (0, 0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = flood.connected.load(Ordering::SeqCst);
        stable = if now == last { stable + 1 } else { 0 };
        if now == 300 || (now > 100 && stable >= 5) {
            break;
        }
        last = now;
    }
    // The data path still serves, on new connections.
    for _ in 0..5 {
        let r = tokio::time::timeout(Duration::from_secs(10), get(listen, url))
            .await
            .expect("the proxy accepts and answers while the admin port is flooded");
        assert_eq!(r.status, 200, "{r:?}");
    }
    // A reload still reads its files: the new pins are enforced.
    volume.update(&[("pins.yaml", &wrong), ("ca.pem", &pki.root.pem())]);
    let mut enforced = false;
    for _ in 0..100 {
        let r = tokio::time::timeout(Duration::from_secs(10), get(listen, url))
            .await
            .expect("the proxy answers");
        if r.error() == Some("pin-mismatch") {
            enforced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        enforced,
        "the reload happened while the admin port was flooded"
    );

    // Half-open requests are closed after the header timeout: the first
    // eight within a few seconds, then the next eight…
    let mut gone = 0;
    for _ in 0..50 {
        gone = flood.closed.load(Ordering::SeqCst);
        if gone >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone >= 8, "half-open admin requests closed: {gone}");

    // Once the flood is gone, /readyz answers a new connection.
    drop(flood);
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                get(admin, &format!("http://{admin}/readyz")),
            )
            .await;
            if let Ok(r) = r {
                return r.status;
            }
        }
    })
    .await
    .expect("/readyz answered once the half-open connections were gone");
    assert_eq!(ready, 200);
}

// === the allocator's figures ===

/// `pinproxy_allocator_committed_bytes` and `…_committed_peak_bytes` of
/// the binary at `admin`, scraped now.
async fn allocator(admin: std::net::SocketAddr) -> (f64, f64) {
    let r = get(admin, &format!("http://{admin}/metrics")).await;
    assert_eq!(r.status, 200);
    let value = |name: &str| {
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("/metrics has no sample of {name}:\n{}", r.body))
    };
    (
        value("pinproxy_allocator_committed_bytes"),
        value("pinproxy_allocator_committed_peak_bytes"),
    )
}

/// The built binary reports mimalloc's committed bytes and their peak,
/// read at scrape time: present at start, peak ≥ current > 0, and the
/// peak rises while 2,000 client connections have a request in flight at
/// once (each holds its read and write buffers then), so the figure is
/// the allocator's, read live, not one taken at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_allocators_figures_read_at_each_scrape() {
    const CLIENTS: usize = 2_000;
    let pki = Pki::new(&["api.pinned.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let proxy = TestProxy::builder()
        .pinset(&pinset("api.pinned.test", &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .spawn()
        .await;
    let (committed, peak) = allocator(proxy.admin).await;
    assert!(committed > 0.0, "committed at start: {committed}");
    assert!(peak >= committed, "peak {peak} below current {committed}");

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(tokio::net::TcpStream::connect(proxy.listen).await.unwrap());
    }
    let request = b"GET http://api.pinned.test/ HTTP/1.1\r\nHost: api.pinned.test\r\n\r\n";
    for c in &mut clients {
        c.write_all(request).await.unwrap();
    }
    for c in &mut clients {
        let head = tokio::time::timeout(Duration::from_secs(30), read_head(c))
            .await
            .expect("the proxy answered every client")
            .expect("a response head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let (held, peak_after) = allocator(proxy.admin).await;
    assert!(held > 0.0, "committed with {CLIENTS} connections: {held}");
    assert!(peak_after >= held, "peak {peak_after} below current {held}");
    assert!(
        peak_after > peak,
        "{CLIENTS} requests in flight at once did not raise the allocator's \
         peak ({peak} before, {peak_after} after): the figure is not read live"
    );
    drop(clients);
}
