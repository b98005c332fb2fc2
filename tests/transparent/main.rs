//! Transparent mode end to end, with real kernel rules in throwaway network
//! namespaces (see `support::netns`): `pinproxy redirect` installs the nat
//! rules in the pod's namespace, pinproxy runs as its own UID with
//! `--transparent`, and clients running as the app's UID — curl, and a
//! Python client that knows nothing of proxies — connect straight to the
//! servers' addresses in the "world" namespace.

#[path = "../support/mod.rs"]
mod support;

mod injected;
mod intercept;
mod paths;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use support::netns::{self, check, Netns, Pod, WORLD_V4};
use support::*;

const PROXY_UID: u32 = 65532;
const APP_UID: u32 = 1000;
const BIN: &str = env!("CARGO_BIN_EXE_pinproxy");

/// A pinned host, an unlisted one, a denied one: three names, two servers.
const PINNED: &str = "api.pinned.test";
const OPEN: &str = "open.unlisted.test";

/// A directory other UIDs can read (pinproxy runs as 65532).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    dir
}

struct Proxy {
    child: Child,
    ca: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// pinproxy as its own UID in the pod, with a transparent listener.
#[allow(clippy::zombie_processes)] // Proxy's Drop kills and waits for it
fn start_proxy(ns: &Netns, dir: &Path) -> Proxy {
    let out = dir.join("ca-out");
    let child = ns
        .command_as(PROXY_UID, BIN)
        .args(["run", "--pins"])
        .arg(dir.join("pins.yaml"))
        .args(["--listen", "127.0.0.1:3128", "--admin", "127.0.0.1:9901"])
        .args(["--transparent", "127.0.0.1:15001", "--ca-out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        netns::wait_ready(ns, "http://127.0.0.1:9901/readyz"),
        "pinproxy never became ready"
    );
    Proxy {
        child,
        ca: out.join("ca.crt"),
    }
}

/// curl as the app's UID in the pod: (exit code, stdout+stderr).
fn curl(ns: &Netns, args: &[&str]) -> (i32, String) {
    support::pod::curl_as(ns, APP_UID, args)
}

fn metric(ns: &Netns, name: &str) -> f64 {
    let out = check(
        ns.command("curl")
            .args(["-s", "http://127.0.0.1:9901/metrics"]),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// curl as the app to the unlisted host at the address it dials, trusting
/// that host's own root (a splice shows the real certificate).
fn curl_open(s: &Setup) -> (i32, String) {
    let open_root = s.dir.path().join("open-root.pem");
    let resolve = format!("{OPEN}:443:{}", WORLD_V4[1]);
    curl(
        &s.pod.app,
        &[
            "--cacert",
            open_root.to_str().unwrap(),
            "--resolve",
            &resolve,
            &format!("https://{OPEN}/"),
        ],
    )
}

/// A client that ignores proxy settings by construction: a raw socket and
/// Python's ssl module, trusting `ca`.
const RAW_TLS_CLIENT: &str = r#"
import socket, ssl, sys
host, addr, ca = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((addr, 443), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname=host) as t:
        t.sendall(f"GET /raw HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
print(data.decode(errors="replace"))
"#;

struct Setup {
    pod: Pod,
    pinned: Pki,
    open: Pki,
    dir: tempfile::TempDir,
}

/// Two servers in the world (a pinned host and an unlisted one), rules in
/// the pod redirecting ports 80 and 443, with the lock on.
fn setup(tag: &str, pins: impl Fn(&Pki) -> String) -> Setup {
    let pod = Pod::new(tag);
    let pinned = Pki::new(&[PINNED]);
    let open = Pki::new(&[OPEN]);
    support::pod::tls_upstream_in(
        &pod.world,
        format!("{}:443", WORLD_V4[0]).parse().unwrap(),
        &pinned,
        "pinned",
    );
    support::pod::tls_upstream_in(
        &pod.world,
        format!("{}:443", WORLD_V4[1]).parse().unwrap(),
        &open,
        "open",
    );
    let dir = shared_dir();
    std::fs::write(dir.path().join("ca.pem"), pinned.root.pem()).unwrap();
    std::fs::write(dir.path().join("open-root.pem"), open.root.pem()).unwrap();
    std::fs::write(dir.path().join("pins.yaml"), pins(&pinned)).unwrap();
    check(pod.app.command(BIN).args([
        "redirect",
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--port",
        "15001",
        "--ports",
        "80,443",
        "--lock",
    ]));
    Setup {
        pod,
        pinned,
        open,
        dir,
    }
}

fn pinset(pins: &[String]) -> String {
    format!(
        "version: 1\ndefaults:\n  unlisted: allow\nhosts:\n  {PINNED}:\n    pins: [{}]\n    trust: ca.pem\n    address: {}:443\n  denied.pinned.test:\n    pins: [{}]\n    ports: [8443]\n",
        pins.join(", "),
        WORLD_V4[0],
        pins.join(", ")
    )
}
