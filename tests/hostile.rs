//! Hostile pinset files (issue 12, items 1–4 and 9): thousands of hosts,
//! files that cost more than they weigh, a file without `hosts:`, and a
//! wildcard entry that names an `address`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pinproxy::policy::pin::Pin;
use support::proxy::TestProxy;
use support::*;

const HOST: &str = "api.pinned.test";

/// Polls `f` every 25 ms until it returns true or `limit` passes.
async fn within<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// `n` host entries; the first and the last are `first` and `last`, pinned
/// to `pins` and dialed at `addr`; the others are never dialed.
fn many_hosts(n: usize, first: &str, last: &str, pins: &[Pin], addr: SocketAddr) -> String {
    let pins: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
    let pins = pins.join(", ");
    let mut out = String::from("version: 1\nhosts:\n");
    for i in 0..n {
        let (name, entry_pins, at) = match i {
            0 => (first.to_string(), pins.clone(), addr.to_string()),
            i if i == n - 1 => (last.to_string(), pins.clone(), addr.to_string()),
            i => (
                format!("h{i}.many.test"),
                format!("{}, {}", fake_pin(i, 1), fake_pin(i, 2)),
                format!("10.0.{}.{}:443", i / 256 % 256, i % 256),
            ),
        };
        out.push_str(&format!(
            "  {name}:\n    pins: [{entry_pins}]\n    trust: ca.pem\n    address: {at}\n"
        ));
    }
    out
}

/// A pin nothing presents, different for every `(i, k)`.
fn fake_pin(i: usize, k: u8) -> Pin {
    let mut bytes = [k; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Pin::from_bytes(bytes)
}

fn reloads(p: &Proxy, result: &str) -> u64 {
    p.metrics.config_reloads.with_label_values(&[result]).get()
}

fn series(p: &Proxy, host: &str) -> bool {
    let text = String::from_utf8(p.metrics.render()).unwrap();
    text.contains(&format!("host=\"{host}\""))
}

/// Item 1: 5,000 entries load, the first and the last are enforced, and a
/// reload that drops one forgets its series and keeps every other.
#[tokio::test]
async fn five_thousand_hosts_load_and_the_first_and_last_are_enforced() {
    let (first, last) = ("first.many.test", "last.many.test");
    let pki = Pki::new(&[first, last]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let yaml = many_hosts(5000, first, last, &[pki.int.pin()], up.addr);
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    assert_eq!(p.live.load().policy.hosts.len(), 5000);
    for host in [first, last] {
        let r = get(p.addr, &format!("http://{host}/")).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
        assert!(r.body.contains(&format!("host={host}")), "{}", r.body);
    }
    let r = get(p.addr, "http://unlisted.many.test/").await;
    assert_eq!(r.error(), Some("host-not-allowed"), "{r:?}");

    // The same file with another pin for the last host and without h17.
    let next = many_hosts(5000, first, last, &[Pin::from_bytes([9; 32])], up.addr)
        .replace("  h17.many.test:\n", "  h17b.many.test:\n");
    assert!(series(&p, "h17.many.test") && series(&p, "h4998.many.test"));
    std::fs::write(&p.pins_path, next).unwrap();
    p.reloader.reload().await.unwrap();
    assert_eq!(p.live.load().generation, 2);
    assert!(
        !series(&p, "h17.many.test"),
        "a removed host kept its series"
    );
    assert!(series(&p, "h17b.many.test") && series(&p, "h4998.many.test"));
    let r = get(p.addr, &format!("http://{last}/")).await;
    assert_eq!(r.error(), Some("pin-mismatch"), "{r:?}");
}

fn nested_brackets() -> String {
    // 400 KB fits in a Secret; libyaml took minutes on it.
    format!("version: 1\nhosts: {}\n", "[".repeat(400_000))
}

/// Item 2: a file of nested `[` is refused at once and counted; a good
/// file written a second later applies — nothing waits on the bad one.
#[tokio::test]
async fn nested_brackets_are_refused_and_a_good_file_after_them_applies() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let root = pki.root.pem();
    let good = pinset(HOST, &[pki.int.pin()], "", up.addr);
    let dir = tempfile::tempdir().unwrap();
    let mut vol = SecretVolume::new(dir.path(), &[("pins.yaml", &good), ("ca.pem", &root)]);
    let p = TestProxy::builder()
        .dir(dir)
        .pins_path(vol.path("pins.yaml"))
        .watch()
        .run()
        .await;
    let url = format!("http://{HOST}/");
    assert_eq!(get(p.addr, &url).await.status, 200);

    vol.update(&[("pins.yaml", &nested_brackets()), ("ca.pem", &root)]);
    let counted = within(Duration::from_secs(2), || async {
        reloads(&p, "failure") == 1
    })
    .await;
    assert!(counted, "the nested file was not refused and counted");
    assert_eq!(get(p.addr, &url).await.status, 200, "the last good pinset");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let other = pinset(HOST, &[Pin::from_bytes([5; 32])], "", up.addr);
    vol.update(&[("pins.yaml", &other), ("ca.pem", &root)]);
    let applied = within(Duration::from_secs(2), || async {
        get(p.addr, &url).await.error() == Some("pin-mismatch")
    })
    .await;
    assert!(
        applied,
        "the good file after the nested one was not applied within 2 s"
    );
    assert_eq!((reloads(&p, "failure"), reloads(&p, "success")), (1, 1));
}

/// The built binary's peak resident memory, MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

async fn metric(admin: SocketAddr, line: &str) -> bool {
    let r = get(admin, &format!("http://{admin}/metrics")).await;
    r.body.lines().any(|l| l == line)
}

fn kill(pid: u32, signal: &str) {
    let pid = pid.to_string();
    let ok = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// The built binary serving a good pinset for `HOST`.
struct Running {
    proxy: Spawned,
    pid: u32,
    listen: SocketAddr,
    admin: SocketAddr,
    pins: std::path::PathBuf,
    _upstream: Upstream,
}

/// The binary on a good pinset for `HOST`, reloading on SIGHUP only and
/// exiting at once on SIGTERM.
async fn binary_on_a_good_pinset(dir: &Path) -> Running {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    write(dir, "ca.pem", &pki.root.pem());
    let pins = write(
        dir,
        "pins.yaml",
        &pinset(HOST, &[pki.int.pin()], "", up.addr),
    );
    let quick_exit = [
        "--no-watch",
        "--shutdown-grace",
        "0",
        "--drain-timeout",
        "1",
    ];
    let proxy = TestProxy::builder()
        .pins_path(pins.clone())
        .args(&quick_exit)
        .stderr_uncaptured()
        .spawn()
        .await;
    let pid = proxy.child.id().unwrap();
    let (listen, admin) = (proxy.listen, proxy.admin);
    assert_eq!(get(listen, &format!("http://{HOST}/")).await.status, 200);
    Running {
        proxy,
        pid,
        listen,
        admin,
        pins,
        _upstream: up,
    }
}

/// Item 3 in the binary: a 50 MB file is refused without being read
/// whole — peak memory stays bounded, the last good pinset stays.
#[tokio::test]
async fn the_binary_refuses_a_50_mb_file_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Bound, not `..`: a dropped child is killed.
    let Running {
        proxy: _proxy,
        pid,
        listen,
        admin,
        pins,
        _upstream,
    } = binary_on_a_good_pinset(dir.path()).await;
    // 50 MB of YAML-like lines: host entries over and over.
    let entry = format!("  h.big.test:\n    pins: [{}]\n", Pin::from_bytes([1; 32]));
    let big = format!(
        "version: 1\nhosts:\n{}",
        entry.repeat(50_000_000 / entry.len())
    );
    std::fs::write(&pins, big).unwrap();
    kill(pid, "-HUP");
    let refused = within(Duration::from_secs(5), || {
        metric(admin, "pinproxy_config_reloads_total{result=\"failure\"} 1")
    })
    .await;
    let rss = peak_rss_mib(pid);
    assert!(
        refused,
        "the 50 MB file was not refused (peak RSS {rss} MiB)"
    );
    assert!(rss < 48, "peak RSS {rss} MiB while refusing a 50 MB file");
    let r = get(listen, &format!("http://{HOST}/")).await;
    assert_eq!(r.status, 200, "the last good pinset: {r:?}");
}

/// Item 2 in the binary: the nested file is refused and counted, and
/// SIGTERM exits promptly — no parse is left for shutdown to wait on.
#[tokio::test]
async fn the_binary_exits_promptly_on_sigterm_after_a_nested_file() {
    let dir = tempfile::tempdir().unwrap();
    let Running {
        mut proxy,
        pid,
        admin,
        pins,
        _upstream,
        ..
    } = binary_on_a_good_pinset(dir.path()).await;
    std::fs::write(&pins, nested_brackets()).unwrap();
    kill(pid, "-HUP");
    let refused = within(Duration::from_secs(2), || {
        metric(admin, "pinproxy_config_reloads_total{result=\"failure\"} 1")
    })
    .await;
    kill(pid, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(5), proxy.child.wait()).await;
    let status = status.expect("exited within 5 s of SIGTERM").unwrap();
    assert!(status.success(), "{status:?}");
    assert!(refused, "the nested file was not refused and counted");
}

/// Item 3: the size limit is the operator's (`--max-pinset-bytes`, or its
/// environment variable), named in the error, and `check` applies the
/// default one.
#[tokio::test]
async fn the_size_limit_is_configurable_and_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "version: 1\nhosts:\n  a.test:\n    pins: [{}, {}]\n",
        Pin::from_bytes([1; 32]),
        Pin::from_bytes([2; 32])
    );
    let pins = write(dir.path(), "pins.yaml", &good);
    let bin = env!("CARGO_BIN_EXE_pinproxy");
    for (args, env) in [
        (&["--max-pinset-bytes", "100"][..], None),
        (&[][..], Some("100")),
    ] {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["run", "--pins", pins.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .kill_on_drop(true);
        if let Some(v) = env {
            cmd.env("PINPROXY_MAX_PINSET_BYTES", v);
        }
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await;
        let out = out.expect("refused at start, not served").unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {err}");
        assert!(err.contains("larger than the 100-byte limit"), "{err}");
    }
    let huge = "#".repeat(5 * 1024 * 1024);
    let big = write(dir.path(), "big.yaml", &format!("{good}{huge}\n"));
    let out = std::process::Command::new(bin)
        .args(["check", big.to_str().unwrap()])
        .output()
        .unwrap();
    // Not read at all: the command failed, on stderr (reference.md, "Exit codes").
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("pinproxy: ") && text.contains("larger than the 4194304-byte limit"),
        "{text}"
    );
}

/// Item 4: `defaults:` and no `hosts:` is refused at reload (with
/// `unlisted: allow` it would have dropped every pin); `hosts: {}` loads.
#[tokio::test]
async fn a_file_without_hosts_is_refused_and_hosts_empty_loads() {
    let (_pki, _up, p) = pinned(HOST).await;
    std::fs::write(&p.pins_path, "version: 1\ndefaults:\n  unlisted: allow\n").unwrap();
    let e = p.reloader.reload().await.unwrap_err();
    assert!(e.to_string().contains("hosts: missing"), "{e}");
    assert_eq!(reloads(&p, "failure"), 1);
    assert_eq!(p.live.load().policy.hosts.len(), 1, "the last good pinset");
    for empty in ["hosts: {}", "hosts:"] {
        let yaml = format!("version: 1\ndefaults:\n  unlisted: allow\n{empty}\n# {empty}\n");
        std::fs::write(&p.pins_path, yaml).unwrap();
        p.reloader.reload().await.unwrap();
        assert_eq!(p.live.load().policy.hosts.len(), 0, "{empty}");
    }
}

/// Item 9: `address` on a wildcard entry loads; a request through it dials
/// that address with SNI and the name check still the requested host.
#[tokio::test]
async fn a_wildcard_entry_with_an_address_dials_it_and_checks_the_requested_name() {
    let pki = Pki::new(&["a.wild.test"]);
    let up = upstream(
        pki.chain(),
        pki.leaf.key_der(),
        UpstreamOpts::new("gateway"),
    )
    .await;
    let yaml = pinset("*.wild.test", &[pki.int.pin()], "", up.addr);
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, "http://a.wild.test/x").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("upstream=gateway host=a.wild.test path=/x"),
        "{}",
        r.body
    );
    assert_eq!(p.requests("*.wild.test", "ok"), 1);
    // The gateway's certificate does not cover b.wild.test: the name check
    // is the requested host's, not the entry's.
    let r = get(p.addr, "http://b.wild.test/").await;
    assert_eq!(r.error(), Some("untrusted-certificate"), "{r:?}");
    assert_eq!(p.tls_failures("*.wild.test", "wrong-name"), 1);
    // `check` accepts it too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["check", p.pins_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
