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
                            routes
                                .lock()
                                .unwrap()
                                .get(req.uri().path())
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

fn cluster(routes: &Routes, sidecar_pins: &str) {
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
    let metrics = format!(
        "pinproxy_pin_mismatch_total{{host=\"a.test\",mode=\"enforce\"}} 5\n\
         pinproxy_config_last_reload_successful 1\n\
         pinproxy_config_generation 3\n\
         pinproxy_pinset_info{{sha256=\"{}\"}} 1\n\
         pinproxy_pinset_expiry_timestamp_seconds{{host=\"a.test\"}} 1814313600\n\
         pinproxy_build_info{{version=\"0.1.0\"}} 1\n",
        sha256_hex(sidecar_pins.as_bytes())
    );
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
    let routes: Routes = Arc::default();
    let (addr, ca) = fake_api(routes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), addr, &ca, TOKEN, "");
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
