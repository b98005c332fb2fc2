//! Server-first protocols in transparent mode (issue 20, item 5), with real
//! kernel rules in throwaway network namespaces: MySQL, SSH and SMTP
//! clients wait for the server's banner and send nothing, so pinproxy
//! decides after `--transparent-first-byte-timeout` (1 s) instead of the
//! 30 s header timeout — spliced when the destination is a `passthrough:`
//! CIDR, else closed and counted as `silent`.
//!
//! The server is `support::netns::serve`, a Python socket server that
//! greets every connection first (`world ADDR:PORT`); the client is a
//! Python socket that only reads, with a 5 s timeout: before this fix it
//! timed out waiting.

mod support;

use std::process::{Child, Stdio};

use support::netns::{self, check, Netns, Pod, WORLD_V4};

const PROXY_UID: u32 = 65532;
const APP_UID: u32 = 1000;
const BIN: &str = env!("CARGO_BIN_EXE_pinproxy");
/// A database port: redirected like every other (no --ports).
const DB_PORT: u16 = 3306;

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(clippy::zombie_processes)] // Proxy's Drop kills and waits for it
fn start_proxy(ns: &Netns, pins: &std::path::Path) -> Proxy {
    let child = ns
        .command_as(PROXY_UID, BIN)
        .args(["run", "--pins"])
        .arg(pins)
        .args(["--listen", "127.0.0.1:3128", "--admin", "127.0.0.1:9901"])
        .args(["--transparent", "127.0.0.1:15001"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        netns::wait_ready(ns, "http://127.0.0.1:9901/readyz"),
        "pinproxy never became ready"
    );
    Proxy(child)
}

fn metrics(ns: &Netns) -> String {
    let out = check(
        ns.command("curl")
            .args(["-s", "http://127.0.0.1:9901/metrics"]),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn server_first_protocols_are_spliced_by_passthrough_cidr_or_closed_at_once() {
    if netns::skip("server_first_protocols_are_spliced_by_passthrough_cidr_or_closed_at_once") {
        return;
    }
    let pod = Pod::new("tp-first");
    let _db = netns::serve(&pod.world, "world", &[DB_PORT]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // WORLD_V4[1] is an in-cluster database; WORLD_V4[0] is not listed.
    let pins = dir.path().join("pins.yaml");
    std::fs::write(
        &pins,
        format!(
            "version: 1\ndefaults:\n  unlisted: allow\npassthrough: [\"{}/32\"]\nhosts: {{}}\n",
            WORLD_V4[1]
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pins, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    check(pod.app.command(BIN).args([
        "redirect",
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--port",
        "15001",
    ]));
    let _proxy = start_proxy(&pod.app, &pins);

    // In a passthrough CIDR: spliced, and the app reads the server's
    // banner well within its 5 s timeout.
    let greeting = netns::connect(&pod.app, APP_UID, WORLD_V4[1], DB_PORT);
    assert_eq!(greeting, format!("world {}:{DB_PORT}", WORLD_V4[1]));

    // Not listed: closed after the first-byte timeout, never held for the
    // header timeout (the client would report `error timeout`).
    let closed = netns::connect(&pod.app, APP_UID, WORLD_V4[0], DB_PORT);
    assert_eq!(closed, "closed");

    let text = metrics(&pod.app);
    for want in [
        "pinproxy_transparent_connections_total{outcome=\"spliced\",protocol=\"other\"} 1",
        "pinproxy_transparent_connections_total{outcome=\"silent\",protocol=\"other\"} 1",
        &format!(
            "pinproxy_requests_total{{host=\"{}/32\",outcome=\"passthrough\"}} 1",
            WORLD_V4[1]
        ),
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
}
