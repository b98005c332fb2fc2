//! The watcher at rest (issue 20, item 1): the built binary on plain
//! files — not a Secret volume, where the kubelet's `..data` swap hides
//! the problem — reads nothing while nothing changes, and a bad version of
//! the pinset or of a file it names is counted and logged once.
//!
//! Opens are counted with inotify from the test (`IN_OPEN` on each file):
//! the kernel sees every open, whoever makes it.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::AccessKind;
use notify::{EventKind, RecursiveMode, Watcher as _};
use support::*;

const HOST: &str = "api.pinned.test";
/// How long each proxy is left alone.
const IDLE: Duration = Duration::from_secs(10);

/// Counts `IN_OPEN` events per file in one directory.
struct Opens {
    _watcher: notify::RecommendedWatcher,
    counts: Arc<Mutex<HashMap<PathBuf, usize>>>,
}

impl Opens {
    fn start(dir: &Path) -> Opens {
        let counts: Arc<Mutex<HashMap<PathBuf, usize>>> = Arc::default();
        let sink = counts.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, EventKind::Access(AccessKind::Open(_))) {
                let mut counts = sink.lock().unwrap();
                for path in event.paths {
                    *counts.entry(path).or_default() += 1;
                }
            }
        })
        .unwrap();
        watcher.watch(dir, RecursiveMode::NonRecursive).unwrap();
        Opens {
            _watcher: watcher,
            counts,
        }
    }

    fn of(&self, file: &Path) -> usize {
        self.counts.lock().unwrap().get(file).copied().unwrap_or(0)
    }
}

async fn reloads(admin: SocketAddr, result: &str) -> u64 {
    let r = get(admin, &format!("http://{admin}/metrics")).await;
    let prefix = format!("pinproxy_config_reloads_total{{result=\"{result}\"}} ");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

async fn last_reload_successful(admin: SocketAddr) -> Option<u64> {
    let r = get(admin, &format!("http://{admin}/metrics")).await;
    r.body.lines().find_map(|l| {
        l.strip_prefix("pinproxy_config_last_reload_successful ")
            .map(|v| v.parse().unwrap())
    })
}

/// Polls until the failure count reaches `n` (bounded).
async fn failures_reach(admin: SocketAddr, n: u64) {
    let start = Instant::now();
    while reloads(admin, "failure").await < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the bad version was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Running {
    _child: tokio::process::Child,
    admin: SocketAddr,
    pins: PathBuf,
    ca: PathBuf,
    ca_pem: String,
    /// The binary's stderr.
    log: tempfile::NamedTempFile,
}

impl Running {
    fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.log.path())
            .unwrap()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A pinset naming a CA bundle, on plain files (in `dir`); the binary
/// started on it, its log in a file outside `dir`.
async fn binary_on_plain_files(dir: &Path) -> Running {
    let pki = Pki::new(&[HOST]);
    let ca = write(dir, "ca.pem", &pki.root.pem());
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let pins = write(dir, "pins.yaml", &pinset(HOST, &[pki.int.pin()], "", addr));
    let (listen, admin) = (free(), free());
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["run", "--pins", pins.to_str().unwrap()])
        .args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(listen).await;
    wait_listening(admin).await;
    Running {
        _child: child,
        admin,
        pins,
        ca,
        ca_pem: pki.root.pem(),
        log,
    }
}

#[tokio::test]
async fn an_idle_proxy_does_not_reread_its_plain_files() {
    let dir = tempfile::tempdir().unwrap();
    let Running {
        admin, pins, ca, ..
    } = &binary_on_plain_files(dir.path()).await;
    let (admin, pins, ca) = (*admin, pins.clone(), ca.clone());
    let opens = Opens::start(dir.path());
    tokio::time::sleep(IDLE).await;
    assert!(
        opens.of(&pins) <= 1 && opens.of(&ca) <= 1,
        "opened while idle: pins.yaml {} times, ca.pem {} times",
        opens.of(&pins),
        opens.of(&ca)
    );
    assert_eq!(reloads(admin, "failure").await, 0);
    assert_eq!(reloads(admin, "success").await, 0, "reloaded while idle");
    assert_eq!(last_reload_successful(admin).await, Some(1));
}

#[tokio::test]
async fn a_bad_version_is_counted_once_and_retried_only_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = binary_on_plain_files(dir.path()).await;
    let (admin, pins, ca) = (proxy.admin, proxy.pins.clone(), proxy.ca.clone());
    let good_pins = std::fs::read_to_string(&pins).unwrap();
    const FAILED: &str = "pinset reload failed";

    // A file the pinset names goes bad, in place.
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    failures_reach(admin, 1).await;
    let opens = Opens::start(dir.path());
    tokio::time::sleep(IDLE).await;
    assert!(
        opens.of(&pins) <= 1 && opens.of(&ca) <= 1,
        "opened while idle on a bad CA bundle: pins.yaml {} times, ca.pem {} times",
        opens.of(&pins),
        opens.of(&ca)
    );
    assert_eq!(reloads(admin, "failure").await, 1);
    assert_eq!(proxy.log_lines(FAILED), 1);
    // Counted once, but still failing: what keeps the alert firing.
    assert_eq!(last_reload_successful(admin).await, Some(0));

    // The same bad bytes written again: an event, the same version.
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        reloads(admin, "failure").await,
        1,
        "the same version counted twice"
    );

    // A new bad version (the pinset itself) counts once more.
    std::fs::write(&pins, "version: 1\nhosts: [\n").unwrap();
    failures_reach(admin, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reloads(admin, "failure").await, 2);
    assert_eq!(proxy.log_lines(FAILED), 2);

    // Both fixed: back to the version in force. The recovery is logged,
    // never counted as a failure.
    std::fs::write(&ca, &proxy.ca_pem).unwrap();
    std::fs::write(&pins, &good_pins).unwrap();
    let start = Instant::now();
    while proxy.log_lines("pinset reload recovered") == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloads(admin, "failure").await, 2);
    assert_eq!(proxy.log_lines(FAILED), 2);
    assert_eq!(last_reload_successful(admin).await, Some(1));
}
