//! The Helm chart's default pinset (finding 1: it used to block all egress
//! while the docs said it blocked nothing), run through the built binary in
//! a throwaway network namespace: an unlisted host passes, an in-cluster
//! plain-HTTP service passes, by its cluster name and by a short name
//! resolving to a Service IP. The fixture is the chart's rendering;
//! scripts/k8s-check.sh fails when they differ.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use support::netns::{self, check, Netns, Pod, WORLD_V4};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_pinproxy");
const PARTNER: &str = "api.partner.test";
const SERVICE: &str = "orders.shop.svc.cluster.local";
/// A Service IP, reached by a short name no passthrough pattern matches.
const SERVICE_IP: &str = "10.96.0.10";

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chart/default-pins.yaml")
}

/// Runs `f`'s server on a thread inside `ns`, with its own runtime.
fn in_ns<F, Fut>(ns: &Netns, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let serve = f();
            tx.send(()).unwrap();
            serve.await
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server started");
}

/// `/etc/hosts` inside `ns` (ip netns exec mounts /etc/netns/NAME/hosts):
/// the names resolve to the world's addresses, never to real DNS.
struct Hosts(std::path::PathBuf);

impl Hosts {
    fn new(ns: &Netns, lines: &str) -> Self {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{}", ns.name()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{lines}")).unwrap();
        Self(dir)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(clippy::zombie_processes)] // Running's Drop kills and waits for it
fn run_default_pinset(ns: &Netns) -> Running {
    let child = ns
        .command(BIN)
        .args(["run", "--pins"])
        .arg(fixture())
        .args(["--listen", "127.0.0.1:3128", "--admin", "127.0.0.1:9901"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if netns::wait_ready(ns, "http://127.0.0.1:9901/readyz") {
        return Running(child);
    }
    panic!("pinproxy never became ready on the chart's default pinset");
}

fn curl(ns: &Netns, args: &[&str]) -> (i32, String) {
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "10", "-x", "http://127.0.0.1:3128"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_chart_default_pinset_blocks_nothing() {
    let check_out = check(std::process::Command::new(BIN).arg("check").arg(fixture()));
    let text = String::from_utf8_lossy(&check_out.stdout);
    assert!(!text.contains("refuses all egress"), "{text}");
    if netns::skip("the_chart_default_pinset_blocks_nothing") {
        return;
    }
    let pod = Pod::new("chart");
    // A partner API on the internet (not in the pinset, its own root) and
    // an in-cluster plain-HTTP service.
    let partner = Pki::new(&[PARTNER]);
    let (chain, key) = (partner.chain(), partner.leaf.key_der());
    let partner_addr: SocketAddr = format!("{}:443", WORLD_V4[0]).parse().unwrap();
    in_ns(&pod.world, move || async move {
        upstream_at(partner_addr, chain, key, UpstreamOpts::new("partner")).await;
        std::future::pending::<()>().await
    });
    // The Service IP lives in the world too, routed from the pod.
    pod.world
        .ip(&["addr", "add", &format!("{SERVICE_IP}/32"), "dev", "eth0"]);
    pod.app.ip(&["route", "add", "10.96.0.0/12", "dev", "eth0"]);
    let service_addr: SocketAddr = "0.0.0.0:80".parse().unwrap();
    in_ns(&pod.world, move || async move {
        let l = tokio::net::TcpListener::bind(service_addr).await.unwrap();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if let Some(head) = read_head(&mut s).await {
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let body = format!("service saw [{line}]");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                }
            });
        }
    });
    let _hosts = Hosts::new(
        &pod.app,
        &format!(
            "{} {PARTNER}\n{} {SERVICE}\n{SERVICE_IP} orders\n",
            WORLD_V4[0], WORLD_V4[1]
        ),
    );
    let _proxy = run_default_pinset(&pod.app);

    // The unlisted partner API: tunnelled, its own certificate, not blocked.
    let root_dir = tempfile::tempdir().unwrap();
    let root = write(root_dir.path(), "partner-root.pem", &partner.root.pem());
    let (code, out) = curl(
        &pod.app,
        &[
            "--cacert",
            root.to_str().unwrap(),
            &format!("https://{PARTNER}/v1"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream=partner"), "{out}");

    // The in-cluster service, by its cluster name: plain HTTP, as it came.
    let (code, out) = curl(&pod.app, &[&format!("http://{SERVICE}/orders")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "service saw [GET /orders HTTP/1.1]");

    // A short name, by its Service IP (issue 20: no serviceCIDRs value
    // used to mean 403 private-address here).
    let (code, out) = curl(&pod.app, &["http://orders/orders"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "service saw [GET /orders HTTP/1.1]");

    let metrics = check(
        pod.app
            .command("curl")
            .args(["-s", "http://127.0.0.1:9901/metrics"]),
    );
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for want in [
        "pinproxy_requests_total{host=\"unlisted\",outcome=\"tunnel\"} 1",
        "pinproxy_requests_total{host=\"**.svc.cluster.local\",outcome=\"passthrough\"} 1",
        "pinproxy_requests_total{host=\"10.0.0.0/8\",outcome=\"passthrough\"} 1",
        "pinproxy_denied_total{reason=\"private-address\"} 0",
        "pinproxy_denied_total{reason=\"host-not-allowed\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} not in:\n{metrics}");
    }
}
