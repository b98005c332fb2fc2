//! Live pins: Secret volumes swapped the way the kubelet swaps them,
//! SIGHUP, connection hygiene after a swap, `/pins`, metrics.

mod support;

use std::time::{Duration, Instant};

use pinproxy::policy::pin::Pin;
use support::proxy::TestProxy;
use support::*;

const HOST: &str = "api.pinned.test";

fn pins_yaml(pins: &[Pin], addr: std::net::SocketAddr, extra: &str) -> String {
    pinset(HOST, pins, extra, addr)
}

/// Polls `f` every 25 ms until it returns true or `limit` passes.
async fn within<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

async fn watched(files: &[(&str, &str)]) -> (Proxy, SecretVolume) {
    let dir = tempfile::tempdir().unwrap();
    let vol = SecretVolume::new(dir.path(), files);
    let p = TestProxy::builder()
        .dir(dir)
        .pins_path(vol.path("pins.yaml"))
        .watch()
        .run()
        .await;
    (p, vol)
}

#[tokio::test]
async fn pin_removed_is_refused_on_the_next_request_and_restored_passes() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let root = pki.root.pem();
    let good = pins_yaml(&[pki.int.pin(), Pin::from_bytes([1; 32])], up.addr, "");
    let (p, mut vol) = watched(&[("pins.yaml", &good), ("ca.pem", &root)]).await;
    // A keep-alive client and a pooled, resumable upstream connection.
    let mut c = ProxyConn::open(p.addr).await;
    for _ in 0..3 {
        assert_eq!(c.get(&format!("http://{HOST}/"), &[]).await.status, 200);
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Remove the matching pin, keep the backup.
    let removed = pins_yaml(&[Pin::from_bytes([1; 32])], up.addr, "");
    vol.update(&[("pins.yaml", &removed), ("ca.pem", &root)]);
    let start = Instant::now();
    let mut took = None;
    while start.elapsed() < Duration::from_secs(2) {
        if c.get(&format!("http://{HOST}/"), &[]).await.error() == Some("pin-mismatch") {
            took = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        took.is_some(),
        "the removed pin was still accepted after 2 s"
    );
    assert_eq!(
        p.metrics
            .config_reloads
            .with_label_values(&["success"])
            .get(),
        1
    );
    assert_eq!(p.metrics.config_generation.get(), 2);
    assert_eq!(p.live.load().generation, 2);
    // The old pooled connection (and its TLS session) was not reused: the
    // refusal came from a fresh, fully verified handshake.
    assert!(up.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2);

    vol.update(&[("pins.yaml", &good), ("ca.pem", &root)]);
    let start = Instant::now();
    let mut took = None;
    while start.elapsed() < Duration::from_secs(2) {
        if c.get(&format!("http://{HOST}/"), &[]).await.status == 200 {
            took = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        took.is_some(),
        "the restored pin was not accepted within 2 s"
    );
    assert_eq!(p.metrics.config_generation.get(), 3);
}

#[tokio::test]
async fn invalid_or_deleted_file_keeps_the_last_good_pinset() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let root = pki.root.pem();
    let good = pins_yaml(&[pki.int.pin()], up.addr, "");
    let (p, mut vol) = watched(&[("pins.yaml", &good), ("ca.pem", &root)]).await;
    let failures = || {
        p.metrics
            .config_reloads
            .with_label_values(&["failure"])
            .get()
    };

    for (what, bad) in [
        (
            "invalid YAML",
            "version: 1\nhosts:\n  api.pinned.test:\n    pins: [".to_string(),
        ),
        (
            "empty pins",
            "version: 1\nhosts:\n  api.pinned.test:\n    pins: []\n".to_string(),
        ),
        ("truncated to nothing", String::new()),
        ("unknown field", good.replace("    trust:", "    trsut:")),
    ] {
        let before = failures();
        vol.update(&[("pins.yaml", &bad), ("ca.pem", &root)]);
        assert!(
            within(Duration::from_secs(2), || async { failures() > before })
                .await
                .is_some(),
            "{what}: no failure counted"
        );
        assert_eq!(p.live.load().generation, 1, "{what}");
        assert_eq!(
            get(p.addr, &format!("http://{HOST}/")).await.status,
            200,
            "{what}: last good pinset in force"
        );
        assert_eq!(
            p.admin_get("/readyz").await.status,
            200,
            "{what}: still ready"
        );
    }

    // Deleted: the ..data directory loses the file.
    let before = failures();
    vol.update(&[("ca.pem", &root)]);
    assert!(
        within(Duration::from_secs(2), || async { failures() > before })
            .await
            .is_some(),
        "deletion: no failure counted"
    );
    assert_eq!(get(p.addr, &format!("http://{HOST}/")).await.status, 200);

    // And a good file again is picked up.
    let newer = pins_yaml(&[pki.int.pin(), pki.root.pin()], up.addr, "");
    vol.update(&[("pins.yaml", &newer), ("ca.pem", &root)]);
    assert!(within(Duration::from_secs(2), || async {
        p.live.load().generation == 2
    })
    .await
    .is_some());
}

#[tokio::test]
async fn rotated_ca_bundle_is_used() {
    let old_ca = Pki::new(&[HOST]);
    let new_ca = Pki::new(&[HOST]);
    // The server moved to the new CA; the pin is on its leaf key.
    let up = upstream(
        new_ca.chain(),
        new_ca.leaf.key_der(),
        UpstreamOpts::new("new"),
    )
    .await;
    let yaml = pins_yaml(&[new_ca.leaf.pin()], up.addr, "");
    let (p, mut vol) = watched(&[("pins.yaml", &yaml), ("ca.pem", &old_ca.root.pem())]).await;
    assert_eq!(
        get(p.addr, &format!("http://{HOST}/")).await.error(),
        Some("untrusted-certificate")
    );
    // Only the bundle changes; pins.yaml is byte-identical.
    vol.update(&[("pins.yaml", &yaml), ("ca.pem", &new_ca.root.pem())]);
    let ok = within(Duration::from_secs(2), || async {
        get(p.addr, &format!("http://{HOST}/")).await.status == 200
    })
    .await;
    assert!(ok.is_some(), "the rotated CA bundle was not picked up");
}

#[tokio::test]
async fn unchanged_content_is_not_a_new_generation() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let yaml = pins_yaml(&[pki.int.pin()], up.addr, "");
    let root = pki.root.pem();
    let (p, mut vol) = watched(&[("pins.yaml", &yaml), ("ca.pem", &root)]).await;
    vol.update(&[("pins.yaml", &yaml), ("ca.pem", &root)]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(p.live.load().generation, 1);
    assert_eq!(
        p.metrics
            .config_reloads
            .with_label_values(&["success"])
            .get(),
        0
    );
}

#[tokio::test]
async fn next_pins_are_checked_and_counted_never_enforced() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let next_bad = format!("    next_pins: [{}]\n", Pin::from_bytes([4; 32]));
    let p = TestProxy::builder()
        .pinset(&pins_yaml(&[pki.int.pin()], up.addr, &next_bad))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    assert_eq!(get(p.addr, &format!("http://{HOST}/")).await.status, 200);
    assert_eq!(
        p.metrics
            .next_pins_mismatch
            .with_label_values(&[HOST])
            .get(),
        1
    );
    assert_eq!(p.mismatches(HOST, "enforce"), 0);

    let next_good = format!("    next_pins: [{}]\n", pki.root.pin());
    let p = TestProxy::builder()
        .pinset(&pins_yaml(&[pki.int.pin()], up.addr, &next_good))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    assert_eq!(get(p.addr, &format!("http://{HOST}/")).await.status, 200);
    assert_eq!(
        p.metrics
            .next_pins_mismatch
            .with_label_values(&[HOST])
            .get(),
        0
    );
}

#[tokio::test]
async fn pins_endpoint_shows_the_drift_view() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let extra = format!(
        "    expires: 2099-01-31\n    next_pins: [{}]\n",
        Pin::from_bytes([4; 32])
    );
    let p = TestProxy::builder()
        .pinset(&pins_yaml(
            &[pki.int.pin(), Pin::from_bytes([2; 32])],
            up.addr,
            &extra,
        ))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    assert_eq!(get(p.addr, &format!("http://{HOST}/")).await.status, 200);
    let r = p.admin_get("/pins").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["source_hash"].as_str().unwrap().len(), 64);
    let h = &v["hosts"][0];
    assert_eq!(h["host"], HOST);
    assert_eq!(h["pins"][0], pki.int.pin().to_string());
    assert_eq!(h["mode"], "enforce");
    assert!(h["trust"].as_str().unwrap().ends_with("ca.pem"));
    assert_eq!(h["expires"], "2099-01-31");
    let seen = &h["last_seen"];
    assert_eq!(seen["outcome"], "pass");
    assert_eq!(seen["matched_pin"], pki.int.pin().to_string());
    assert_eq!(seen["next_pins_matched"], false);
    let chain = seen["chain"].as_array().unwrap();
    assert_eq!(
        chain.len(),
        3,
        "leaf, intermediate, trust anchor: {chain:?}"
    );
    assert_eq!(chain[0]["pin"], pki.leaf.pin().to_string());
    assert!(chain[0]["subject"].as_str().unwrap().contains(HOST));
    assert!(chain[0]["not_after"].as_str().unwrap().len() >= 20);
    assert_eq!(chain[1]["matches_pin"], true);
    assert_eq!(chain[2]["pin"], pki.root.pin().to_string());
    assert!(chain.iter().all(|c| c["on_validated_path"] == true));
}

#[tokio::test]
async fn metrics_pass_promtool_and_cover_the_table() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let extra = format!(
        "    expires: 2099-01-31\n    next_pins: [{}]\n",
        Pin::from_bytes([4; 32])
    );
    let p = TestProxy::builder()
        .pinset(&pins_yaml(&[pki.int.pin()], up.addr, &extra))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    assert_eq!(get(p.addr, &format!("http://{HOST}/")).await.status, 200);
    assert_eq!(get(p.addr, "http://unlisted.test/").await.status, 403);
    // A mismatch, a failed reload, a successful reload.
    std::fs::write(
        &p.pins_path,
        pins_yaml(&[Pin::from_bytes([9; 32])], up.addr, ""),
    )
    .unwrap();
    p.reloader.reload().await.unwrap();
    assert_eq!(
        get(p.addr, &format!("http://{HOST}/")).await.error(),
        Some("pin-mismatch")
    );
    std::fs::write(&p.pins_path, "version: 1\nhosts: [").unwrap();
    assert!(p.reloader.reload().await.is_err());

    let r = p.admin_get("/metrics").await;
    assert_eq!(r.status, 200);
    for name in [
        "pinproxy_pin_mismatch_total{host=\"api.pinned.test\",mode=\"enforce\"} 1",
        "pinproxy_next_pins_mismatch_total{host=\"api.pinned.test\"} 1",
        "pinproxy_tls_verify_failures_total{host=\"api.pinned.test\",reason=\"pin-mismatch\"} 1",
        "pinproxy_requests_total{host=\"api.pinned.test\",outcome=\"ok\"} 1",
        "pinproxy_denied_total{reason=\"host-not-allowed\"} 1",
        "pinproxy_upstream_handshake_seconds_bucket{host=\"api.pinned.test\",le=\"0.0005\"}",
        "pinproxy_connections_active ",
        "pinproxy_config_reloads_total{result=\"success\"} 1",
        "pinproxy_config_reloads_total{result=\"failure\"} 1",
        "pinproxy_config_generation 2",
        "pinproxy_upstream_cert_expiry_timestamp_seconds{host=\"api.pinned.test\"}",
    ] {
        assert!(r.body.contains(name), "missing {name:?} in\n{}", r.body);
    }
    // Generation 1's expiry gauge was replaced when generation 2 (no
    // `expires`) came in.
    assert!(
        !r.body.contains("pinproxy_pinset_expiry_timestamp_seconds{"),
        "{}",
        r.body
    );

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "metrics.txt", &r.body);
    let out = std::process::Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pinset_expiry_gauge_is_exposed() {
    let pki = Pki::new(&[HOST]);
    let p = TestProxy::builder()
        .pinset(&pins_yaml(
            &[pki.int.pin()],
            "127.0.0.1:9".parse().unwrap(),
            "    expires: 2099-01-31\n",
        ))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let g = p.metrics.pinset_expiry.with_label_values(&[HOST]).get();
    // The end of 2099-01-31 UTC.
    assert_eq!(g as i64, 4_073_587_200, "2099-02-01T00:00:00Z");
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    // The single-threaded runtime: signals and reloads work there too.
    let mut p = TestProxy::builder()
        .pinset(&pins_yaml(&[pki.int.pin()], up.addr, ""))
        .file("ca.pem", pki.root.pem())
        .args(&["--workers", "1", "--no-watch"])
        .stderr_uncaptured()
        .spawn()
        .await;
    let listen = p.listen;
    assert_eq!(get(listen, &format!("http://{HOST}/")).await.status, 200);
    write(
        p.dir.path(),
        "pins.yaml",
        &pins_yaml(&[Pin::from_bytes([3; 32])], up.addr, ""),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(listen, &format!("http://{HOST}/")).await.status,
        200,
        "--no-watch: no reload without SIGHUP"
    );
    let pid = p.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let refused = within(Duration::from_secs(2), || async {
        get(listen, &format!("http://{HOST}/")).await.error() == Some("pin-mismatch")
    })
    .await;
    assert!(refused.is_some(), "SIGHUP did not reload");
    // SIGTERM: drains and exits 0.
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Issue 4: in-flight requests finish across a reload that removes their pin.
#[tokio::test]
async fn in_flight_requests_finish_across_a_reload() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let p = TestProxy::builder()
        .pinset(&pins_yaml(&[pki.int.pin()], up.addr, ""))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let addr = p.addr;
    let slow = tokio::spawn(async move { get(addr, &format!("http://{HOST}/slow")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        &p.pins_path,
        pins_yaml(&[Pin::from_bytes([2; 32])], up.addr, ""),
    )
    .unwrap();
    p.reloader.reload().await.unwrap();
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("path=/slow"));
    assert_eq!(
        get(p.addr, &format!("http://{HOST}/")).await.error(),
        Some("pin-mismatch")
    );
}

/// A CA bundle mounted from its own Secret/ConfigMap (another directory) is
/// watched too.
#[tokio::test]
async fn a_ca_bundle_in_another_mounted_directory_is_watched() {
    let old_ca = Pki::new(&[HOST]);
    let new_ca = Pki::new(&[HOST]);
    let up = upstream(
        new_ca.chain(),
        new_ca.leaf.key_der(),
        UpstreamOpts::new("new"),
    )
    .await;
    let bundles = tempfile::tempdir().unwrap();
    let mut bundle_vol = SecretVolume::new(bundles.path(), &[("ca.pem", &old_ca.root.pem())]);
    let trust = bundle_vol.path("ca.pem").display().to_string();
    let yaml = format!(
        "version: 1\nhosts:\n  {HOST}:\n    pins: [{}]\n    trust: {trust}\n    address: {}\n",
        new_ca.leaf.pin(),
        up.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let vol = SecretVolume::new(dir.path(), &[("pins.yaml", &yaml)]);
    let p = TestProxy::builder()
        .dir(dir)
        .pins_path(vol.path("pins.yaml"))
        .watch()
        .run()
        .await;
    assert_eq!(
        get(p.addr, &format!("http://{HOST}/")).await.error(),
        Some("untrusted-certificate")
    );
    bundle_vol.update(&[("ca.pem", &new_ca.root.pem())]);
    let ok = within(Duration::from_secs(2), || async {
        get(p.addr, &format!("http://{HOST}/")).await.status == 200
    })
    .await;
    assert!(ok.is_some(), "the bundle's own directory was not watched");
}

/// Mismatches are logged as one structured JSON event each, with what was
/// presented and expected, and rate-limited per host.
#[tokio::test]
async fn mismatch_logs_are_structured_and_rate_limited() {
    use tokio::io::AsyncBufReadExt;
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &pki.root.pem());
    let pins = write(
        dir.path(),
        "pins.yaml",
        &pins_yaml(&[Pin::from_bytes([5; 32])], up.addr, ""),
    );
    let (listen, admin) = (free(), free());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args([
            "run",
            "--log-format",
            "json",
            "--pins",
            pins.to_str().unwrap(),
        ])
        .args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(listen).await;
    for _ in 0..20 {
        assert_eq!(
            get(listen, &format!("http://{HOST}/")).await.error(),
            Some("pin-mismatch")
        );
    }
    let _ = child.start_kill();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut events = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
    {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "pin mismatch" {
            events.push(v);
        }
    }
    assert!(
        !events.is_empty() && events.len() <= 5,
        "{} mismatch events for 20 mismatches",
        events.len()
    );
    let e = &events[0];
    assert_eq!(e["host"], HOST);
    assert_eq!(e["mode"], "enforce");
    assert_eq!(e["generation"], 1);
    // Arrays are JSON arrays (they were strings holding Rust Debug text).
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let presented = strings(&e["presented"]);
    assert_eq!(
        presented,
        [pki.leaf.pin(), pki.int.pin(), pki.root.pin()].map(|p| p.to_string()),
        "the validated path, leaf to anchor"
    );
    assert_eq!(
        strings(&e["expected"]),
        [Pin::from_bytes([5; 32]).to_string()]
    );
    let subjects = strings(&e["subjects"]);
    assert!(subjects[0].contains("CN=api.pinned.test"), "{subjects:?}");
    // The anchor, which the server never sends, is named too.
    assert!(
        subjects
            .last()
            .is_some_and(|s| s.contains("CN=Test Root") && s.ends_with("(trust anchor)")),
        "{subjects:?}"
    );
}
