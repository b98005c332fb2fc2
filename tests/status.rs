//! `pinproxy status` against a fake API server on 127.0.0.1: real TLS
//! (a CA and a leaf for 127.0.0.1 made here), bearer-token auth, the
//! Kubernetes paths status reads (pods, namespaces, a Secret, a sidecar's
//! /metrics through pods/proxy),
//! and the built binary run the way an operator runs it.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use support::{leaf, root, run_pinproxy};

const TOKEN: &str = "s3cr3t-t0ken-value";

type Routes = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// Serves `routes` (path → status, body) over TLS; 401 without the token.
async fn fake_api(routes: Routes) -> (std::net::SocketAddr, String) {
    let ca = root("fake API CA");
    let server = leaf(&["127.0.0.1"], &ca);
    let provider = pinproxy::tls::provider();
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.cert.clone()], server.key_der())
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let routes = routes.clone();
                    async move {
                        let authed = req
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v == format!("Bearer {TOKEN}").as_str());
                        let (status, body) = if !authed {
                            (
                                401,
                                r#"{"kind":"Status","message":"Unauthorized"}"#.to_string(),
                            )
                        } else {
                            // `path?query` first (pages of a list), then the path.
                            let routes = routes.lock().unwrap();
                            req.uri()
                                .path_and_query()
                                .and_then(|pq| routes.get(pq.as_str()))
                                .or_else(|| routes.get(req.uri().path()))
                                .cloned()
                                .unwrap_or((
                                    404,
                                    r#"{"kind":"Status","message":"not found"}"#.into(),
                                ))
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca.pem())
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

const PINS: &str = "version: 1\nhosts: {}\n";

/// A fake API server with no routes yet, and a kubeconfig for it (in
/// the returned directory, which must live as long as the test).
async fn fake_cluster() -> (Routes, tempfile::TempDir, String) {
    let routes: Routes = Arc::default();
    let (addr, ca) = fake_api(routes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), addr, &ca, TOKEN, "");
    (routes, dir, kc)
}
fn cluster(routes: &Routes, sidecar_pins: &str) {
    let metrics = format!(
        "pinproxy_pin_mismatch_total{{host=\"a.test\",mode=\"enforce\"}} 5\n\
         pinproxy_config_last_reload_successful 1\n\
         pinproxy_config_generation 3\n\
         pinproxy_pinset_info{{sha256=\"{}\"}} 1\n\
         pinproxy_pinset_expiry_timestamp_seconds{{host=\"a.test\"}} 1814313600\n\
         pinproxy_build_info{{version=\"0.1.0\"}} 1\n",
        sha256_hex(sidecar_pins.as_bytes())
    );
    cluster_with_metrics(routes, metrics);
}

/// The cluster of [`cluster`], its sidecar answering `metrics`.
fn cluster_with_metrics(routes: &Routes, metrics: String) {
    let pods = json!({"items": [
        {"metadata": {"name": "app-1", "namespace": "shop", "labels": {"pinproxy.io/injected": "true"}},
         "spec": {"initContainers": [{"name": "pinproxy", "image": "reg/pinproxy:0.1.0",
                   "ports": [{"name": "pinproxy-admin", "containerPort": 9901}]}],
                  "containers": [{"name": "app"}],
                  "volumes": [{"name": "pinproxy-pins", "secret": {"secretName": "pinproxy-pins"}}]},
         "status": {"phase": "Running"}},
        {"metadata": {"name": "unpinned", "namespace": "shop", "labels": {"pinproxy.io/inject": "true"}},
         "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Running"}},
        {"metadata": {"name": "other", "namespace": "plain"},
         "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Running"}}
    ]});
    let namespaces = json!({"items": [
        {"metadata": {"name": "shop", "labels": {"pinproxy.io/inject": "enabled"}}},
        {"metadata": {"name": "plain"}}
    ]});
    let mut r = routes.lock().unwrap();
    r.insert("/api/v1/pods".into(), (200, pods.to_string()));
    r.insert("/api/v1/namespaces".into(), (200, namespaces.to_string()));
    r.insert(
        "/api/v1/namespaces/shop/secrets/pinproxy-pins".into(),
        (
            200,
            json!({"data": {"pins.yaml": b64(PINS.as_bytes())}}).to_string(),
        ),
    );
    r.insert(
        "/api/v1/namespaces/shop/pods/app-1:9901/proxy/metrics".into(),
        (200, metrics),
    );
}

fn kubeconfig(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    ca_pem: &str,
    token: &str,
    extra: &str,
) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters:\n- name: c\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\n{extra}contexts:\n- name: t\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    token: {token}\n",
            b64(ca_pem.as_bytes())
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

async fn status(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_pinproxy(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_then_stale_and_the_pod_without_its_sidecar() {
    let (routes, _dir, kc) = fake_cluster().await;
    cluster(&routes, PINS);
    let (code, out, err) = status(vec![
        "status".into(),
        "--kubeconfig".into(),
        kc.clone(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let row = &r["sidecars"][0];
    assert_eq!(r["sidecars"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(row["pod"], "app-1");
    assert_eq!(row["state"], "SYNCED");
    assert_eq!(row["generation"], 3);
    assert_eq!(row["mismatches"], 5);
    assert_eq!(row["last_reload"], "ok");
    assert_eq!(row["version"], "0.1.0");
    assert_eq!(row["nearest_expiry"], "2027-06-30 a.test");
    let missing = r["without_sidecar"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{out}");
    assert_eq!(missing[0]["pod"], "unpinned");

    // The sidecar still runs the old file: STALE, in the table too.
    cluster(&routes, "version: 1\nhosts: {} # old\n");
    let (code, out, err) = status(vec!["status".into(), "--kubeconfig".into(), kc.clone()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shop/app-1") && out.contains("STALE"), "{out}");
    assert!(
        out.contains("WITHOUT the sidecar") && out.contains("shop/unpinned"),
        "{out}"
    );

    // The Secret is gone: NO-SECRET, and why.
    routes
        .lock()
        .unwrap()
        .remove("/api/v1/namespaces/shop/secrets/pinproxy-pins");
    let (code, out, err) = status(vec![
        "status".into(),
        "--kubeconfig".into(),
        kc,
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["sidecars"][0]["state"], "NO-SECRET", "{out}");
    let detail = r["sidecars"][0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("pinproxy-pins") && detail.contains("404"),
        "{out}"
    );
}

/// A signed sidecar that refused the Secret's pinset (`rollback`) and has
/// nothing in force, as its `/metrics` reads then: the refusal counts as a
/// failed reload, and the empty pinset hash reads as none in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_refusing_a_signed_pinset_says_so() {
    let (routes, _dir, kc) = fake_cluster().await;
    cluster_with_metrics(
        &routes,
        "pinproxy_config_last_reload_successful 0\n\
         pinproxy_config_reloads_total{result=\"bad-signature\"} 0\n\
         pinproxy_config_reloads_total{result=\"failure\"} 0\n\
         pinproxy_config_reloads_total{result=\"rollback\"} 1\n\
         pinproxy_config_reloads_total{result=\"success\"} 0\n\
         pinproxy_config_generation 0\n\
         pinproxy_pinset_info{key=\"\",serial=\"\",sha256=\"\"} 1\n\
         pinproxy_build_info{version=\"0.1.0\"} 1\n"
            .into(),
    );
    let (code, out, err) = status(vec![
        "status".into(),
        "--kubeconfig".into(),
        kc.clone(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let row = &r["sidecars"][0];
    assert_eq!(row["state"], "STALE", "{out}");
    assert_eq!(row["last_reload"], "failing (1 failed)", "{out}");
    let detail = row["detail"].as_str().unwrap_or("");
    assert!(detail.starts_with("no pinset in force"), "{out}");

    let (code, out, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("shop/app-1 "))
        .unwrap_or_else(|| panic!("no row: {out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    // POD STATE GEN PINSET SECRET RELOAD…: the pinset in force is "-".
    assert_eq!(&cells[..4], ["shop/app-1", "STALE", "0", "-"], "{out}");
    assert!(line.contains("failing (1 failed)"), "{out}");
    assert!(out.contains("shop/app-1: no pinset in force"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_keep_the_token_out() {
    let routes: Routes = Arc::default();
    let (addr, ca) = fake_api(routes.clone()).await;
    cluster(&routes, PINS);
    let dir = tempfile::tempdir().unwrap();

    let kc = kubeconfig(dir.path(), addr, &ca, "wrong-token-value", "");
    let (code, _, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("Unauthorized"), "{err}");
    assert!(
        !err.contains("wrong-token-value"),
        "the token must not be printed: {err}"
    );

    // A CA that did not sign the server's certificate.
    let other = root("someone else").pem();
    let kc = kubeconfig(dir.path(), addr, &other, TOKEN, "");
    let (code, _, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 1);
    assert!(err.contains("TLS"), "{err}");

    let kc = kubeconfig(
        dir.path(),
        addr,
        &ca,
        TOKEN,
        "    insecure-skip-tls-verify: true\n",
    );
    let (code, _, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("insecure-skip-tls-verify is not supported"),
        "{err}"
    );
}

/// A pod running a container named `pinproxy` with admin port 9901, its
/// pins Secret `pinproxy-pins`.
fn sidecar_pod(ns: &str, name: &str, image: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns},
           "spec": {"initContainers": [{"name": "pinproxy", "image": image,
                     "ports": [{"name": "pinproxy-admin", "containerPort": 9901}]}],
                    "containers": [{"name": "app"}],
                    "volumes": [{"name": "pinproxy-pins", "secret": {"secretName": "pinproxy-pins"}}]},
           "status": {"phase": "Running"}})
}

/// What an honest sidecar running `pins` serves on `/metrics`.
fn honest_metrics(pins: &str) -> String {
    format!(
        "pinproxy_pin_mismatch_total{{host=\"a.test\",mode=\"enforce\"}} 5\n\
         pinproxy_config_last_reload_successful 1\n\
         pinproxy_config_generation 3\n\
         pinproxy_pinset_info{{sha256=\"{}\",serial=\"\",key=\"\"}} 1\n\
         pinproxy_pinset_expiry_timestamp_seconds{{host=\"a.test\"}} 1814313600\n\
         pinproxy_build_info{{version=\"0.1.0\"}} 1\n",
        sha256_hex(pins.as_bytes())
    )
}

/// Characters that must never reach the operator's terminal raw: control
/// characters (C0 but the newlines the output is made of, DEL, C1) and
/// bidirectional overrides and isolates.
fn raw_controls(out: &str) -> Vec<char> {
    out.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

fn line_of<'a>(out: &'a str, pod: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{pod} ")))
        .unwrap_or_else(|| panic!("no row for {pod}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_pods_send_never_reaches_the_terminal_raw_nor_says_synced() {
    let (routes, _dir, kc) = fake_cluster().await;
    cluster(&routes, PINS);
    let evil_image = "\u{1b}]0;owned\u{7}reg/pinproxy:0.1.0\u{202e}";
    let evil_phase = "\u{1b}[2JPending\u{9b}2J";
    let pods = json!({"items": [
        sidecar_pod("shop", "app-1", "reg/pinproxy:0.1.0"),
        sidecar_pod("shop", "evil", "reg/pinproxy:0.1.0"),
        sidecar_pod("shop", "evil-2", evil_image),
        {"metadata": {"name": "unpinned", "namespace": "shop"},
         "spec": {"containers": [{"name": "app"}]}, "status": {"phase": evil_phase}}
    ]});
    // The Secret's own hash, with a bidi override after it: not a SHA-256.
    let fake_sha = format!("{}\u{202e}", sha256_hex(PINS.as_bytes()));
    let evil_metrics = format!(
        "pinproxy_config_generation 3\n\
         pinproxy_pinset_info{{sha256=\"{fake_sha}\",serial=\"\",key=\"\"}} 1\n\
         pinproxy_build_info{{version=\"\u{1b}]0;owned\u{7}\u{1b}[2K\rshop/app-9  SYNCED\u{9b}1A\u{7f}\"}} 1\n\
         pinproxy_pinset_expiry_timestamp_seconds{{host=\"a.test\u{2066}\u{1b}[8m\"}} 1814313600\n\
         pinproxy_pin_mismatch_total{{host=\"a.test\",mode=\"enforce\"}} 1\n"
    );
    {
        let mut r = routes.lock().unwrap();
        r.insert("/api/v1/pods".into(), (200, pods.to_string()));
        r.insert(
            "/api/v1/namespaces/shop/pods/evil:9901/proxy/metrics".into(),
            (200, evil_metrics),
        );
        // An error body through pods/proxy: the API server relays the pod's.
        r.insert(
            "/api/v1/namespaces/shop/pods/evil-2:9901/proxy/metrics".into(),
            (
                500,
                json!({"kind": "Status", "message": "no \u{202e}\u{1b}[31m way\u{2069}"})
                    .to_string(),
            ),
        );
    }

    let (code, out, err) = status(vec!["status".into(), "--kubeconfig".into(), kc.clone()]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        raw_controls(&out),
        Vec::<char>::new(),
        "text output: {out:?}"
    );
    assert!(line_of(&out, "shop/app-1").contains("SYNCED"), "{out}");
    let evil = line_of(&out, "shop/evil");
    assert!(
        evil.contains("UNKNOWN") && evil.contains("invalid") && !evil.contains("SYNCED"),
        "{out}"
    );
    assert!(line_of(&out, "shop/evil-2").contains("UNKNOWN"), "{out}");
    // Shown, visibly.
    assert!(out.contains("\\u{1b}]0;owned"), "{out}");
    assert!(out.contains("no \\u{202e}"), "{out}");
    assert!(
        out.contains("3 sidecars: 1 synced, 0 stale, 0 no secret, 2 unknown"),
        "{out}"
    );

    let (code, out, err) = status(vec![
        "status".into(),
        "--kubeconfig".into(),
        kc,
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        raw_controls(&out),
        Vec::<char>::new(),
        "JSON output: {out:?}"
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    let rows = r["sidecars"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[0]["state"], "SYNCED", "{out}");
    assert_eq!(rows[1]["pod"], "evil", "{out}");
    assert_eq!(rows[1]["state"], "UNKNOWN", "{out}");
    assert_eq!(rows[1]["pins_sha256"], Value::Null, "{out}");
    assert_eq!(rows[1]["version"], Value::Null, "{out}");
    // JSON escapes keep what the cluster said exact.
    assert_eq!(rows[2]["image"], evil_image, "{out}");
    assert_eq!(r["without_sidecar"][0]["phase"], evil_phase, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_whose_metrics_exceed_the_cap_gets_an_error_row_and_the_others_print() {
    let (routes, _dir, kc) = fake_cluster().await;
    cluster(&routes, PINS);
    let pods = json!({"items": [
        sidecar_pod("shop", "app-1", "reg/pinproxy:0.1.0"),
        sidecar_pod("shop", "big", "reg/pinproxy:0.1.0"),
        sidecar_pod("shop", "long-line", "reg/pinproxy:0.1.0"),
    ]});
    // Valid metrics, then comments past the cap (64 MiB).
    let mut big = honest_metrics(PINS);
    let pad = format!("# {}\n", "x".repeat(1022));
    while big.len() < 70 << 20 {
        big.push_str(&pad);
    }
    {
        let mut r = routes.lock().unwrap();
        r.insert("/api/v1/pods".into(), (200, pods.to_string()));
        r.insert(
            "/api/v1/namespaces/shop/pods/big:9901/proxy/metrics".into(),
            (200, big),
        );
        // One line of 1 MiB: read a line at a time, at most 64 KiB each.
        r.insert(
            "/api/v1/namespaces/shop/pods/long-line:9901/proxy/metrics".into(),
            (
                200,
                format!("# {}\n{}", "x".repeat(1 << 20), honest_metrics(PINS)),
            ),
        );
    }
    let (code, out, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 0, "{err}");
    assert!(line_of(&out, "shop/app-1").contains("SYNCED"), "{out}");
    assert!(line_of(&out, "shop/big").contains("UNKNOWN"), "{out}");
    assert!(
        out.contains("  shop/big: /metrics: ") && out.contains("larger than 64 MiB"),
        "{out}"
    );
    assert!(line_of(&out, "shop/long-line").contains("UNKNOWN"), "{out}");
    assert!(
        out.contains("  shop/long-line: /metrics: ") && out.contains("a line longer than 64 KiB"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_listed_in_pages() {
    let (routes, _dir, kc) = fake_cluster().await;
    cluster(&routes, PINS);
    let page1 = json!({"metadata": {"continue": "p2/+="},
                       "items": [sidecar_pod("shop", "app-1", "reg/pinproxy:0.1.0")]});
    let page2 = json!({"metadata": {},
                       "items": [sidecar_pod("shop", "app-2", "reg/pinproxy:0.1.0")]});
    {
        let mut r = routes.lock().unwrap();
        r.insert("/api/v1/pods".into(), (200, page1.to_string()));
        r.insert(
            "/api/v1/pods?limit=250&continue=p2%2F%2B%3D".into(),
            (200, page2.to_string()),
        );
        r.insert(
            "/api/v1/namespaces/shop/pods/app-2:9901/proxy/metrics".into(),
            (200, honest_metrics(PINS)),
        );
    }
    let (code, out, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 0, "{err}");
    assert!(line_of(&out, "shop/app-1").contains("SYNCED"), "{out}");
    assert!(line_of(&out, "shop/app-2").contains("SYNCED"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_sidecars_metrics_are_read_whole_and_valid() {
    let pins = "version: 1\nserial: 7\nhosts:\n  \
        a.test: {pins: [sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=], next_pins: [sha256/AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=], expires: 2027-06-30}\n  \
        \"*.b.test\": {pins: [sha256/AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=]}\n  \
        \"[fd00::7]\": {pins: [sha256/AwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=], expires: 2027-05-01}\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pins.yaml");
    std::fs::write(&file, pins).unwrap();
    let sidecar = support::Run::start(&file, &[]).await;
    let metrics = support::get_with(
        sidecar.admin,
        &format!("http://{}/metrics", sidecar.admin),
        &[],
    )
    .await;
    assert_eq!(metrics.status, 200);

    let routes: Routes = Arc::default();
    let (addr, ca) = fake_api(routes.clone()).await;
    let kc = kubeconfig(dir.path(), addr, &ca, TOKEN, "");
    cluster(&routes, PINS);
    {
        let mut r = routes.lock().unwrap();
        r.insert(
            "/api/v1/namespaces/shop/secrets/pinproxy-pins".into(),
            (
                200,
                json!({"data": {"pins.yaml": b64(pins.as_bytes())}}).to_string(),
            ),
        );
        r.insert(
            "/api/v1/namespaces/shop/pods/app-1:9901/proxy/metrics".into(),
            (200, metrics.body),
        );
    }
    let (code, out, err) = status(vec![
        "status".into(),
        "--kubeconfig".into(),
        kc,
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let row = &r["sidecars"][0];
    assert_eq!(row["state"], "SYNCED", "{out}");
    assert_eq!(row.get("detail"), None, "{out}");
    assert_eq!(row["pins_sha256"], sha256_hex(pins.as_bytes()), "{out}");
    assert_eq!(row["generation"], 1, "{out}");
    assert_eq!(row["mismatches"], 0, "{out}");
    assert_eq!(row["last_reload"], "ok", "{out}");
    // The sidecar's gauge is the end of the `expires:` day (the next
    // midnight, UTC), which status prints as its date: the host is what
    // this test is about.
    let expiry = row["nearest_expiry"].as_str().unwrap_or("");
    assert!(expiry.ends_with(" [fd00::7]"), "{out}");
    assert_eq!(row["version"], env!("CARGO_PKG_VERSION"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_servers_error_message_reaches_stderr_escaped() {
    let (routes, _dir, kc) = fake_cluster().await;
    cluster(&routes, PINS);
    routes.lock().unwrap().insert(
        "/api/v1/pods".into(),
        (
            403,
            json!({"kind": "Status",
                   "message": "pods is forbidden \u{202e}\u{1b}]0;x\u{7}\u{2066}\u{9b}2J done"})
            .to_string(),
        ),
    );
    let (code, out, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(raw_controls(&err), Vec::<char>::new(), "stderr: {err:?}");
    assert!(
        err.contains("403") && err.contains("pods is forbidden \\u{202e}"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continue_token_sent_again_ends_the_listing() {
    let (routes, _dir, kc) = fake_cluster().await;
    cluster(&routes, PINS);
    let page = json!({"metadata": {"continue": "again"},
                      "items": [sidecar_pod("shop", "app-1", "reg/pinproxy:0.1.0")]});
    {
        let mut r = routes.lock().unwrap();
        r.insert("/api/v1/pods".into(), (200, page.to_string()));
        r.insert(
            "/api/v1/pods?limit=250&continue=again".into(),
            (200, page.to_string()),
        );
    }
    let (code, out, err) = status(vec!["status".into(), "--kubeconfig".into(), kc]).await;
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("the same continue token again"), "{err}");
}
