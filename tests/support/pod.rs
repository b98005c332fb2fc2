//! pinproxy as a pod runs it, inside a test network namespace: the built
//! binary as its own UID, TLS upstreams in the "world" namespace, and
//! clients (curl, Python) as the app's UID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::netns::{self, check, Netns};
use super::{upstream_at, Pki, UpstreamOpts};

pub const BIN: &str = env!("CARGO_BIN_EXE_pinproxy");
pub const PROXY_UID: u32 = 65532;
pub const APP_UID: u32 = 1000;

/// A directory every UID can read and write (pinproxy runs as another UID).
pub fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    dir
}

/// Runs a TLS upstream (answering `upstream=NAME path=…`) on `addr` inside
/// `ns`, on its own thread, for the rest of the test.
pub fn tls_upstream_in(ns: &Netns, addr: SocketAddr, pki: &Pki, name: &'static str) {
    let (chain, key) = (pki.chain(), pki.leaf.key_der());
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let up = upstream_at(addr, chain, key, UpstreamOpts::new(name)).await;
            tx.send(up.addr).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the upstream started");
}

/// The `redirect` rules in `ns` (as root), with `args` after
/// `--proxy-uid PROXY_UID --port 15001`; returns what it printed.
pub fn redirect(ns: &Netns, args: &[&str]) -> String {
    let out = check(
        ns.command(BIN)
            .args(["redirect", "--proxy-uid", &PROXY_UID.to_string()])
            .args(["--port", "15001"])
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pinproxy running in a pod's namespace; killed on drop.
pub struct PodProxy {
    child: Child,
    /// The pod CA the app trusts (`--ca-out`).
    pub ca: PathBuf,
    /// `http://127.0.0.1:PORT`: the admin listener, from inside the pod.
    pub admin: String,
}

impl Drop for PodProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PodProxy {
    /// `run --pins DIR/pins.yaml --ca-out DIR/ca-out` as [`PROXY_UID`] in
    /// `ns`, listening on 127.0.0.1:3128, the transparent listener on
    /// 127.0.0.1:15001, the admin on `admin`; ready before it returns.
    #[allow(clippy::zombie_processes)] // Drop kills and waits for it
    pub fn start(ns: &Netns, dir: &Path, admin: &str) -> PodProxy {
        let out = dir.join("ca-out");
        let child = ns
            .command_as(PROXY_UID, BIN)
            .args(["run", "--pins"])
            .arg(dir.join("pins.yaml"))
            .args(["--listen", "127.0.0.1:3128", "--admin", admin])
            .args(["--transparent", "127.0.0.1:15001", "--ca-out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port = admin.rsplit(':').next().unwrap();
        let admin = format!("http://127.0.0.1:{port}");
        assert!(
            netns::wait_ready(ns, &format!("{admin}/readyz")),
            "pinproxy never became ready"
        );
        PodProxy {
            child,
            ca: out.join("ca.crt"),
            admin,
        }
    }

    /// The value of the first metric line starting with `name` (0 when
    /// there is none).
    pub fn metric(&self, ns: &Netns, name: &str) -> f64 {
        let out = check(
            ns.command("curl")
                .args(["-s", &format!("{}/metrics", self.admin)]),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// curl as `uid` in `ns`: (exit code, stdout+stderr).
pub fn curl_as(ns: &Netns, uid: u32, args: &[&str]) -> (i32, String) {
    let out = ns
        .command_as(uid, "curl")
        .args(["-sS", "--max-time", "10"])
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

/// Runs `script` with python3 (`-I -c`) as `uid` in `ns`: its stdout.
pub fn python_as(ns: &Netns, uid: u32, script: &str, args: &[&str]) -> String {
    let out = check(
        ns.command_as(uid, netns::python())
            .args(["-I", "-c", script])
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
