//! The README's rotation runbook, followed step by step against a server
//! that switches keys mid-way, with the pinset swapped the way the kubelet
//! swaps a Secret volume, `pinproxy check --live` asked at every step, and
//! four keep-alive clients that must not see one failure. And the old
//! order (new key only in next_pins), which breaks the moment the server
//! switches.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinproxy::policy::pin::Pin;
use support::proxy::TestProxy;
use support::*;

const HOST: &str = "api.rotating.test";

struct Clients {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Four keep-alive clients requesting the pinned host in a loop.
fn clients(proxy: std::net::SocketAddr) -> Clients {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks = (0..4)
        .map(|i| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut c = ProxyConn::open(proxy).await;
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    let r = c.get(&format!("http://{HOST}/c{i}/{n}"), &[]).await;
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::AcqRel);
                    } else {
                        failed.lock().unwrap().push(format!(
                            "{} {:?} {}",
                            r.status,
                            r.error(),
                            r.body.trim()
                        ));
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    Clients {
        stop,
        ok,
        failed,
        tasks,
    }
}

impl Clients {
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            let _ = t.await;
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Acquire), failed)
    }
}

fn yaml(pins: &[Pin], next: &[Pin], addr: std::net::SocketAddr) -> String {
    let list = |p: &[Pin]| {
        p.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let next = if next.is_empty() {
        String::new()
    } else {
        format!("    next_pins: [{}]\n", list(next))
    };
    format!(
        "version: 1\nhosts:\n  {HOST}:\n    pins: [{}]\n{next}    trust: ca.pem\n    address: {addr}\n",
        list(pins)
    )
}

/// `pinproxy check --live` on the mounted pinset: (exit code, stdout).
async fn check_live(path: std::path::PathBuf) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["check", "--live", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn wait_generation(p: &Proxy, generation: u64) {
    for _ in 0..200 {
        if p.live.load().generation >= generation {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("generation {generation} never came");
}

struct Setup {
    pki: Pki,
    next_leaf: Leaf,
    backup: Pin,
    up: SwitchableUpstream,
    vol: SecretVolume,
    p: Proxy,
    _dir: tempfile::TempDir,
}

/// A server on leaf key K1, pinned at [K1, backup]; K2 is its next key.
async fn setup() -> Setup {
    let pki = Pki::new(&[HOST]);
    let next_leaf = leaf(&[HOST], &pki.int);
    let backup = Pin::of_spki_der(&rcgen::KeyPair::generate().unwrap().public_key_der());
    let up = switchable_upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let dir = tempfile::tempdir().unwrap();
    let root = pki.root.pem();
    let first = yaml(&[pki.leaf.pin(), backup], &[], up.addr);
    let vol = SecretVolume::new(dir.path(), &[("pins.yaml", &first), ("ca.pem", &root)]);
    let p = TestProxy::builder()
        .pins_path(vol.path("pins.yaml"))
        .watch()
        .run()
        .await;
    Setup {
        pki,
        next_leaf,
        backup,
        up,
        vol,
        p,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_runbook_rotates_a_key_without_one_failed_request() {
    let Setup {
        pki,
        next_leaf,
        backup,
        up,
        mut vol,
        p,
        _dir,
    } = setup().await;
    let root = pki.root.pem();
    let (k1, k2) = (pki.leaf.pin(), next_leaf.pin());
    let path = vol.path("pins.yaml");
    let load = clients(p.addr);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Step 1: the next key goes into pins beside the current one, and
    // next_pins says what pins will be after the rotation.
    vol.update(&[
        (
            "pins.yaml",
            &yaml(&[k1, k2, backup], &[k2, backup], up.addr),
        ),
        ("ca.pem", &root),
    ]);
    wait_generation(&p, 2).await;
    let (code, out) = check_live(path.clone()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{HOST}: ok, matches {k1}")), "{out}");
    assert!(out.contains("next_pins: MISMATCH"), "{out}");
    assert!(out.contains("safe to promote next_pins now: no"), "{out}");
    assert!(
        out.contains("safe to switch the server to its next key: yes"),
        "{out}"
    );
    let after_step1 = load.ok.load(Ordering::Acquire);

    // Step 2: the server switches keys, while clients keep going.
    up.switch(
        vec![next_leaf.cert.clone(), pki.int.der()],
        next_leaf.key_der(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, out) = check_live(path.clone()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{HOST}: ok, matches {k2}")), "{out}");
    assert!(
        out.contains(&format!("next_pins: ok, matches {k2}")),
        "{out}"
    );
    assert!(out.contains("safe to promote next_pins now: yes"), "{out}");
    let after_step2 = load.ok.load(Ordering::Acquire);

    // Step 3: promote next_pins; the old key leaves.
    vol.update(&[
        ("pins.yaml", &yaml(&[k2, backup], &[], up.addr)),
        ("ca.pem", &root),
    ]);
    wait_generation(&p, 3).await;
    let (code, out) = check_live(path).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{HOST}: ok, matches {k2}")), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ok, failed) = load.finish().await;
    println!(
        "runbook: {ok} requests ok ({after_step1} by step 1, {after_step2} by step 2), {} failed, upstream connections {}",
        failed.len(),
        up.connections.load(Ordering::SeqCst)
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > after_step2 && after_step2 > after_step1 && after_step1 > 0);
    assert_eq!(p.mismatches(HOST, "enforce"), 0);
}

/// The old runbook (finding 2): the next key only in next_pins, promoted
/// "when the new chain is live" — the switch itself refuses the host, and
/// `check --live` said so beforehand.
#[tokio::test]
async fn the_old_order_breaks_when_the_server_switches() {
    let Setup {
        pki,
        next_leaf,
        backup,
        up,
        mut vol,
        p,
        _dir,
    } = setup().await;
    let root = pki.root.pem();
    let (k1, k2) = (pki.leaf.pin(), next_leaf.pin());
    vol.update(&[
        ("pins.yaml", &yaml(&[k1, backup], &[k2], up.addr)),
        ("ca.pem", &root),
    ]);
    wait_generation(&p, 2).await;
    let (code, out) = check_live(vol.path("pins.yaml")).await;
    assert_eq!(code, 0, "nothing enforced breaks yet: {out}");
    assert!(
        out.contains(&format!(
            "safe to switch the server to its next key: no — add {k2} to pins"
        )),
        "{out}"
    );
    let load = clients(p.addr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    up.switch(
        vec![next_leaf.cert.clone(), pki.int.der()],
        next_leaf.key_der(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.finish().await;
    println!(
        "old order: {ok} ok, {} failed, upstream connections {}",
        failed.len(),
        up.connections.load(Ordering::SeqCst)
    );
    assert!(
        !failed.is_empty(),
        "the old order should have failed requests"
    );
    assert!(failed[0].contains("pin-mismatch"), "{failed:?}");
    let (code, out) = check_live(vol.path("pins.yaml")).await;
    assert_eq!(code, 1, "an enforced host breaks now: {out}");
    assert!(out.contains("MISMATCH: requests would be refused"), "{out}");
}
