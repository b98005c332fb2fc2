//! The memory guard (`run --max-memory`; the ninth review): past the
//! limit the built binary refuses new connections and new requests on
//! connections already open `503 overloaded`, keeps `/readyz` 200 and the
//! admin port answering, and serves again once the memory that pushed it
//! over is released. A connection opened before the guard tripped, silent
//! or parked between requests, is refused when it speaks, before any of
//! its request is buffered, and closed (the tenth review's F1).
//!
//! Nor do unfinished heads that all arrive within one of the guard's
//! samples: each woken connection's head is charged against the headroom
//! the last sample left, and past it the connection is refused the same
//! way (the rest of the tenth review's F1).
//!
//! The binary, not an in-process proxy: the guard judges the process's
//! resident set, which a proxy inside the test process would share with
//! the test. What pushes it over here is a pinset reload that grows the
//! working set (each host's metric series); reloading the small pinset
//! again gives the memory back. Unfinished request heads (the ninth
//! review's F3) no longer can: they are refused before the guard trips.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const HOST: &str = "api.memguard.test";

/// Bytes of one unfinished head: under the 64 KiB head limit, so it is
/// held, not refused.
const HEAD_BYTES: usize = 60 * 1024;

/// How far above the idle resident set the limit is set.
const MARGIN: u64 = 12 << 20;

/// The same, where a reload of [`BIG_PINSET_HOSTS`] (~36 MiB) trips the
/// guard: far enough that the small pinset reloaded again (~7 MiB over
/// idle) is under 90 % of the limit, and the guard clears.
const RELOAD_MARGIN: u64 = 20 << 20;

/// Connections opened while memory is low that then all send unfinished
/// heads at once: ~50 MiB of heads if all were let in, four times
/// `MARGIN`.
const WOKEN: usize = 800;

/// A metric's value on the admin port, if it has a sample.
async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let r = get(admin, &format!("http://{admin}/metrics")).await;
    assert_eq!(r.status, 200, "/metrics answers");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls (bounded) until `name` reads `want`.
async fn wait_metric(admin: SocketAddr, name: &str, want: f64) {
    let mut last = None;
    for _ in 0..400 {
        last = metric(admin, name).await;
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never read {want}: last {last:?}");
}

/// Most of a request head, never ended.
fn unfinished_head() -> Vec<u8> {
    let mut head = format!("GET http://{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\nx-fill: ").into_bytes();
    head.resize(HEAD_BYTES, b'a');
    head
}

/// A pinset of [`BIG_PINSET_HOSTS`] hosts: loaded, it takes
/// the process well over a limit set just above its start figure.
fn big_pinset(pin: impl std::fmt::Display) -> String {
    let hosts: String = (0..BIG_PINSET_HOSTS)
        .map(|i| format!("  h{i}.big.test: {{pins: [\"{pin}\"]}}\n"))
        .collect();
    format!("version: 1\ndefaults:\n  unlisted: allow\nhosts:\n{hosts}")
}

/// The child's peak resident set (`VmHWM`), bytes.
fn peak_resident(p: &Spawned) -> u64 {
    let pid = p.run.child.id().expect("the binary is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("VmHWM in kB")
        * 1024
}

/// Sends `bytes` on `tcp` and reads the answer until the proxy closes
/// (at most 5 s).
async fn answer(tcp: &mut TcpStream, bytes: &[u8]) -> String {
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The binary serving `HOST` (pinned, upstream `up`) with `--max-memory`.
async fn start(pki: &Pki, up: &Upstream, max_memory: &str) -> Spawned {
    TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .args(&["--no-watch", "--header-timeout", "10m"])
        .args(&["--max-memory", max_memory])
        .spawn()
        .await
}

/// The idle resident set of this binary as the guard itself reads it, in
/// an instance of its own: after one request (its pools and code paths
/// warmed) when `warm`.
async fn idle_resident(pki: &Pki, up: &Upstream, warm: bool) -> u64 {
    let p = start(pki, up, "1Gi").await;
    if warm {
        assert_eq!(get(p.listen, &format!("http://{HOST}/")).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    metric(p.admin, "pinproxy_memory_resident_bytes")
        .await
        .expect("the guard samples the resident set") as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_memory_new_work_is_refused_overloaded_until_it_falls_back() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let url = format!("http://{HOST}/");

    let idle = idle_resident(&pki, &up, true).await;
    let limit = idle + RELOAD_MARGIN;
    let mut p = start(&pki, &up, &limit.to_string()).await;
    let (proxy, admin) = (p.listen, p.admin);
    p.until("memory guard on").await;

    // A keep-alive connection opened, and served, before the overload.
    let mut open = ProxyConn::open(proxy).await;
    assert_eq!(open.get(&url, &[]).await.status, 200);
    // Connections opened before the overload that have not spoken yet.
    let mut silent = TcpStream::connect(proxy).await.unwrap();
    let mut silent_after = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(
        metric(admin, "pinproxy_memory_limit_bytes").await,
        Some(limit as f64)
    );
    assert_eq!(metric(admin, "pinproxy_overloaded").await, Some(0.0));
    let refused_before = metric(admin, "pinproxy_denied_total{reason=\"overloaded\"}")
        .await
        .unwrap_or(0.0);

    // A reload that grows the working set over the limit trips the guard.
    let small = std::fs::read_to_string(&p.pins_path).expect("the pinset");
    std::fs::write(&p.pins_path, big_pinset(pki.int.pin())).expect("write the pinset");
    p.signal("-HUP");
    let lines = p
        .until("overloaded: resident memory over --max-memory")
        .await;
    let warn = lines.last().unwrap();
    assert!(
        warn.contains("WARN") && warn.contains(&format!("limit={limit}")),
        "{warn}"
    );
    wait_metric(admin, "pinproxy_overloaded", 1.0).await;
    let resident = metric(admin, "pinproxy_memory_resident_bytes").await;
    eprintln!("idle {idle} B, limit {limit} B: overloaded by the reload, resident {resident:?}");
    assert!(
        resident.is_some_and(|r| r > limit as f64 * 0.9),
        "{resident:?}"
    );

    // A new connection: answered before any request is read (raw, as a
    // client library may see the answer before it has sent its request).
    let req = format!("GET {url} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let fresh = raw(proxy, req.as_bytes()).await;
    assert!(fresh.starts_with("HTTP/1.1 503 "), "{fresh}");
    assert!(fresh.contains("x-pinproxy-error: overloaded"), "{fresh}");
    assert!(fresh.contains("--max-memory"), "{fresh}");
    // A new request on the connection already open (parked by now): the
    // answer, and the connection closed.
    let again = open.get(&url, &[]).await;
    assert_eq!(again.status, 503, "{again:?}");
    assert_eq!(again.error(), Some("overloaded"));
    assert!(again.body.contains("--max-memory"), "{}", again.body);
    // A connection opened before the overload that speaks only now, with
    // a head it never ends: refused at once, not held in hyper's buffer
    // until the header timeout.
    let woken = answer(&mut silent, &unfinished_head()).await;
    assert!(
        woken.starts_with("HTTP/1.1 503 "),
        "a connection opened before the overload, woken by an unfinished head: {woken:?}"
    );
    assert!(woken.contains("x-pinproxy-error: overloaded"), "{woken}");
    assert!(woken.contains("--max-memory"), "{woken}");
    // Shedding load is not a failure: still ready, the admin port answers.
    let ready = get(admin, &format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(metric(admin, "pinproxy_overloaded").await, Some(1.0));
    let refused = metric(admin, "pinproxy_denied_total{reason=\"overloaded\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        refused >= refused_before + 3.0,
        "{refused_before} → {refused}"
    );

    // The big pinset goes; the memory is given back and the guard clears.
    std::fs::write(&p.pins_path, small).expect("write the pinset");
    p.signal("-HUP");
    // Read the log as it comes: the reload's line names every host it
    // removed, more than a pipe holds.
    p.until("no longer overloaded").await;
    wait_metric(admin, "pinproxy_overloaded", 0.0).await;
    let req = format!("GET {url} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let served = answer(&mut silent_after, req.as_bytes()).await;
    assert!(
        served.starts_with("HTTP/1.1 200 "),
        "a connection opened before the overload, speaking after it: {served:?}"
    );
    assert_eq!(get(proxy, &url).await.status, 200, "a new connection");
}

/// Hosts in the pinset a reload brings in: each costs some KiB resident
/// (its metric series above all), so the reload alone takes the process
/// well over a limit set just above its start figure, for good.
const BIG_PINSET_HOSTS: usize = 4000;

/// The tenth review's F2: a guard that cannot clear (here a reload grew
/// the working set over the limit) refused every egress request while
/// `/healthz` stayed 200, so nothing restarted the pod. Now the reload
/// says it left memory over the limit, and after
/// `--overloaded-unhealthy-after` (3 s here) `/healthz` fails with the
/// reason, for the liveness probe; `/readyz` stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_that_cannot_clear_fails_healthz_after_the_bound() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let idle = idle_resident(&pki, &up, false).await;
    let limit = idle + (16 << 20);
    let mut p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .args(&["--no-watch", "--max-memory", &limit.to_string()])
        .args(&["--overloaded-unhealthy-after", "3s"])
        .spawn()
        .await;
    let admin = p.admin;
    p.until("memory guard on").await;
    assert_eq!(
        get(admin, &format!("http://{admin}/healthz")).await.status,
        200
    );

    std::fs::write(&p.pins_path, big_pinset(pki.int.pin())).expect("write the pinset");
    p.signal("-HUP");
    p.until("overloaded: resident memory over --max-memory")
        .await;
    let healthz = get(admin, &format!("http://{admin}/healthz")).await;
    assert_eq!(
        healthz.status, 200,
        "unhealthy before the bound: {}",
        healthz.body
    );
    let reload = p.until("the pinset reload left resident memory over").await;
    assert!(
        reload
            .last()
            .is_some_and(|l| l.contains("WARN") && l.contains("generation=2")),
        "{reload:?}"
    );

    let stuck = p.until("memory guard stuck").await;
    assert!(
        stuck.last().is_some_and(|l| l.contains("WARN")),
        "{stuck:?}"
    );
    let healthz = get(admin, &format!("http://{admin}/healthz")).await;
    assert_eq!(healthz.status, 503, "{}", healthz.body);
    assert!(
        healthz.body.starts_with("unhealthy: overloaded for 3s"),
        "{}",
        healthz.body
    );
    assert_eq!(
        get(admin, &format!("http://{admin}/readyz")).await.status,
        200
    );
    assert_eq!(metric(admin, "pinproxy_overloaded").await, Some(1.0));
}

/// The rest of the tenth review's F1: connections opened while memory
/// was low that all send unfinished heads within one of the guard's
/// samples were all let into the parser, and took the resident set far
/// past the limit before the guard could see it (an OOM kill in a
/// container). Now each is charged its head against the headroom when it
/// wakes: the resident set never passes the limit, the excess is refused
/// `503 overloaded` and closed, and once they close the reservations are
/// given back and new connections, unfinished heads too, are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_heads_arriving_at_once_on_preopened_connections_stay_under_the_limit() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let url = format!("http://{HOST}/");
    let idle = idle_resident(&pki, &up, true).await;
    let limit = idle + MARGIN;
    let mut p = start(&pki, &up, &limit.to_string()).await;
    let (proxy, admin) = (p.listen, p.admin);
    p.until("memory guard on").await;
    assert_eq!(get(proxy, &url).await.status, 200);

    // Opened while memory is low: silent, and cheap.
    let mut conns = Vec::new();
    for _ in 0..WOKEN {
        conns.push(TcpStream::connect(proxy).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(metric(admin, "pinproxy_overloaded").await, Some(0.0));
    let refused_before = metric(admin, "pinproxy_denied_total{reason=\"overloaded\"}")
        .await
        .unwrap_or(0.0);

    // All at once, well within one sample: each sends an unfinished head
    // and reads whatever comes back within 3 s.
    let head = std::sync::Arc::new(unfinished_head());
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut tcp| {
            let head = head.clone();
            tokio::spawn(async move {
                // A refused connection may be closed before all is sent.
                let _ = tcp.write_all(&head).await;
                let mut out = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut out)).await;
                (tcp, String::from_utf8_lossy(&out).into_owned())
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (tcp, answer) = task.await.expect("no panic");
        if answer.is_empty() {
            held.push(tcp);
            continue;
        }
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("x-pinproxy-error: overloaded"), "{answer}");
        assert!(
            answer.contains("unfinished request heads would take memory past --max-memory"),
            "{answer}"
        );
        refused += 1;
    }
    let peak = peak_resident(&p);
    eprintln!(
        "idle {idle} B, limit {limit} B: {} of {WOKEN} unfinished heads held, {refused} refused, \
         peak resident {peak} B",
        held.len()
    );
    assert!(
        peak <= limit,
        "resident set peaked at {peak} B, over --max-memory {limit} B ({:.2}x), with {} of \
         {WOKEN} unfinished heads let in and {refused} refused",
        peak as f64 / limit as f64,
        held.len()
    );
    assert!(refused > 0 && !held.is_empty(), "{refused} refused");
    let counted = metric(admin, "pinproxy_denied_total{reason=\"overloaded\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        counted >= refused_before + refused as f64,
        "{refused_before} → {counted} for {refused} refused"
    );

    // They close: the reservations are given back, and new connections,
    // unfinished heads too, are let in again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(metric(admin, "pinproxy_overloaded").await, Some(0.0));
    assert_eq!(get(proxy, &url).await.status, 200, "a new connection");
    let mut again = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        tcp.write_all(&head).await.unwrap();
        again.push(tcp);
    }
    for tcp in &mut again {
        let mut byte = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut byte)).await;
        assert!(
            r.is_err(),
            "an unfinished head after the burst was answered: {r:?}"
        );
    }
    let req = format!("GET {url} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let served = raw(proxy, req.as_bytes()).await;
    assert!(served.starts_with("HTTP/1.1 200 "), "{served}");
}

/// A limit at or below what the process holds at start would refuse
/// everything from the first sample on, for good: `run` refuses to start
/// and says why, naming the figures.
#[test]
fn a_limit_below_what_pinproxy_holds_at_start_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pins = write(
        dir.path(),
        "pins.yaml",
        "version: 1\ndefaults:\n  unlisted: allow\nhosts: {}\n",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["run", "--no-watch", "--max-memory", "1Mi"])
        .args(["--pins", pins.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Bounded: a binary that starts anyway runs until killed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "still running after 10 s, or: {err}"
    );
    assert!(
        err.contains(
            "--max-memory 1048576 bytes is not above what pinproxy already holds at start"
        ) && err.contains("bytes resident"),
        "{err}"
    );
}
