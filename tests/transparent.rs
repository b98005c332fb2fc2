//! Transparent mode end to end, with real kernel rules in throwaway network
//! namespaces (see `support::netns`): `pinproxy redirect` installs the nat
//! rules in the pod's namespace, pinproxy runs as its own UID with
//! `--transparent`, and clients running as the app's UID — curl, and a
//! Python client that knows nothing of proxies — connect straight to the
//! servers' addresses in the "world" namespace.

mod support;

use std::net::SocketAddr;
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

/// Runs a TLS upstream on `addr` inside `ns`, on its own thread.
fn upstream_in(ns: &Netns, addr: SocketAddr, pki: &Pki, name: &'static str) {
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
    let out = ns
        .command_as(APP_UID, "curl")
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
    upstream_in(
        &pod.world,
        format!("{}:443", WORLD_V4[0]).parse().unwrap(),
        &pinned,
        "pinned",
    );
    upstream_in(
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

#[test]
fn pinned_hosts_are_intercepted_and_checked_without_proxy_settings() {
    if netns::skip("pinned_hosts_are_intercepted_and_checked_without_proxy_settings") {
        return;
    }
    let s = setup("tp-pin", |pki| pinset(&[pki.int.pin().to_string()]));
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());
    let ca = proxy.ca.to_str().unwrap();
    let resolve = format!("{PINNED}:443:{}", WORLD_V4[0]);

    // curl with no proxy variable at all: the kernel sends it to pinproxy,
    // which intercepts (the client sees the pod CA) and pins upstream.
    let (code, out) = curl(
        app,
        &[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &format!("https://{PINNED}/x"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream=pinned"), "{out}");
    assert!(out.contains("path=/x"), "{out}");

    // The same through a client that ignores proxy settings by construction.
    let py = check(app.command_as(APP_UID, netns::python()).args([
        "-I",
        "-c",
        RAW_TLS_CLIENT,
        PINNED,
        WORLD_V4[0],
        ca,
    ]));
    let text = String::from_utf8_lossy(&py.stdout);
    assert!(
        text.contains("200 OK") && text.contains("upstream=pinned"),
        "{text}"
    );

    // Plain HTTP to port 80 follows the forward rules: upgraded to TLS and
    // pinned.
    let resolve80 = format!("{PINNED}:80:{}", WORLD_V4[0]);
    let (code, out) = curl(
        app,
        &["--resolve", &resolve80, &format!("http://{PINNED}/plain")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("upstream=pinned") && out.contains("path=/plain"),
        "{out}"
    );

    assert!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"intercepted\",protocol=\"tls\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"loop\""
        ),
        0.0,
        "no loop"
    );
    drop(proxy);
}

#[test]
fn a_pin_mismatch_is_a_502_inside_tls() {
    if netns::skip("a_pin_mismatch_is_a_502_inside_tls") {
        return;
    }
    let wrong = pinproxy::policy::pin::Pin::from_bytes([9; 32]).to_string();
    let s = setup("tp-mis", |_| pinset(std::slice::from_ref(&wrong)));
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());
    let resolve = format!("{PINNED}:443:{}", WORLD_V4[0]);
    let (code, out) = curl(
        app,
        &[
            "--cacert",
            proxy.ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-D",
            "-",
            &format!("https://{PINNED}/"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 502"), "{out}");
    assert!(out.contains("x-pinproxy-error: pin-mismatch"), "{out}");
    assert!(
        metric(
            app,
            &format!("pinproxy_pin_mismatch_total{{host=\"{PINNED}\",mode=\"enforce\"}}")
        ) >= 1.0
    );
    let _ = &s.pinned;
}

#[test]
fn unlisted_is_spliced_denied_is_refused_and_the_lock_holds() {
    if netns::skip("unlisted_is_spliced_denied_is_refused_and_the_lock_holds") {
        return;
    }
    let s = setup("tp-open", |pki| pinset(&[pki.int.pin().to_string()]));
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());

    // Unlisted and allowed: spliced to the address the app dialed, so the
    // app sees the real server's certificate (and trusts its own root).
    let (code, out) = curl_open(&s);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream=open"), "{out}");
    assert_eq!(
        metric(
            app,
            "pinproxy_requests_total{host=\"unlisted\",outcome=\"tunnel\"}"
        ),
        1.0
    );

    // A listed host on a port its entry doesn't allow: a TLS alert, counted.
    let before = metric(app, "pinproxy_denied_total{reason=\"port-not-allowed\"}");
    let resolve = format!("denied.pinned.test:443:{}", WORLD_V4[0]);
    let (code, out) = curl(
        app,
        &[
            "--cacert",
            proxy.ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "https://denied.pinned.test/",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("alert") || out.contains("handshake"),
        "a TLS error: {out}"
    );
    assert_eq!(
        metric(app, "pinproxy_denied_total{reason=\"port-not-allowed\"}"),
        before + 1.0
    );

    // An unlisted name the app dials at a private address: refused as on
    // the forward and CONNECT paths, and counted the same way — in
    // `denied_total` and under `unlisted` — over TLS (an alert) and over
    // plain HTTP to that address (the forward path's 403).
    app.ip(&["route", "add", "10.9.9.9/32", "dev", "eth0"]);
    let denied = || metric(app, "pinproxy_denied_total{reason=\"private-address\"}");
    let refused = || {
        metric(
            app,
            "pinproxy_requests_total{host=\"unlisted\",outcome=\"private-address\"}",
        )
    };
    assert_eq!((denied(), refused()), (0.0, 0.0));
    let resolve = "inside.test:443:10.9.9.9";
    let (code, out) = curl(app, &["--resolve", resolve, "https://inside.test/"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("alert") || out.contains("handshake"),
        "a TLS error: {out}"
    );
    assert_eq!((denied(), refused()), (1.0, 1.0));
    let (_, out) = curl(app, &["-i", "http://10.9.9.9/"]);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("x-pinproxy-error: private-address"), "{out}");
    assert_eq!((denied(), refused()), (2.0, 2.0));

    // A client that sends nothing (it waits for a banner) to an unlisted
    // destination: closed after the first-byte timeout, and counted.
    let silent = netns::connect(app, APP_UID, WORLD_V4[1], 443);
    assert_eq!(silent, "closed");
    assert_eq!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"silent\",protocol=\"other\"}"
        ),
        1.0
    );

    // --lock: a port that isn't redirected is refused outright, not
    // silently reachable around pinproxy.
    let direct = netns::connect(app, APP_UID, WORLD_V4[1], 8443);
    assert!(direct.starts_with("error"), "{direct}");
    let _ = &s.open;
    drop(proxy);
}

#[test]
fn pinproxys_own_connections_are_not_redirected() {
    if netns::skip("pinproxys_own_connections_are_not_redirected") {
        return;
    }
    // A server in the world that reports the address a connection came
    // from, reached by pinproxy's UID directly and by the app's through
    // the redirect.
    let pod = Pod::new("tp-loop");
    let _server = netns::serve(&pod.world, "world", &[443]);
    check(pod.app.command(BIN).args([
        "redirect",
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--port",
        "15001",
    ]));
    let from_proxy = netns::connect(&pod.app, PROXY_UID, WORLD_V4[0], 443);
    assert_eq!(
        from_proxy,
        format!("world {}:443", WORLD_V4[0]),
        "pinproxy's UID goes direct"
    );
    let from_app = netns::connect(&pod.app, APP_UID, WORLD_V4[0], 443);
    assert!(
        !from_app.starts_with("world"),
        "the app is redirected: {from_app}"
    );
}

/// The operator's path: `pinproxy inject --transparent` on a Deployment,
/// then the pod run exactly as the manifest says — the init container's
/// args as root, the sidecar's args as the UID its securityContext names,
/// and the app as another UID with the env the manifest gives it (no proxy
/// variable at all). The pinned host is intercepted and pinned; the app
/// trusts the interception through the injected SSL_CERT_FILE alone.
#[test]
fn an_injected_pod_runs_as_its_manifest_says() {
    if netns::skip("an_injected_pod_runs_as_its_manifest_says") {
        return;
    }
    let pod = Pod::new("tp-inj");
    let pinned = Pki::new(&[PINNED]);
    upstream_in(
        &pod.world,
        format!("{}:443", WORLD_V4[0]).parse().unwrap(),
        &pinned,
        "pinned",
    );
    let dir = shared_dir();
    let (pins_dir, ca_dir) = (dir.path().join("pins"), dir.path().join("ca"));
    for d in [&pins_dir, &ca_dir] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    std::fs::write(pins_dir.join("ca.pem"), pinned.root.pem()).unwrap();
    std::fs::write(
        pins_dir.join("pins.yaml"),
        format!(
            // A pinned host is dialed as on every path: its `address`, else
            // the pod's DNS (none in this namespace).
            "version: 1\nhosts:\n  {PINNED}:\n    pins: [{}]\n    trust: ca.pem\n    address: {}:443\n",
            pinned.int.pin(),
            WORLD_V4[0]
        ),
    )
    .unwrap();

    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  \
        selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    \
        spec:\n      containers:\n        - name: app\n          image: app:1\n          \
        securityContext: {runAsUser: 1000}\n";
    let mut inject = std::process::Command::new(BIN)
        .args([
            "inject",
            "--transparent",
            "--transparent-lock",
            "--pins-dir",
        ])
        .arg(&pins_dir)
        .arg("--ca-dir")
        .arg(&ca_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    inject
        .stdin
        .take()
        .unwrap()
        .write_all(deployment.as_bytes())
        .unwrap();
    let out = inject.wait_with_output().unwrap();
    assert!(out.status.success(), "inject failed");
    let manifest: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let spec = &manifest["spec"]["template"]["spec"];
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let init = &spec["initContainers"][0];
    let sidecar = &spec["initContainers"][1];
    let app = &spec["containers"][0];
    assert_eq!(init["name"].as_str(), Some("pinproxy-redirect"));
    assert_eq!(sidecar["name"].as_str(), Some("pinproxy"));

    // The init container, as root, to completion.
    assert_eq!(init["securityContext"]["runAsUser"].as_i64(), Some(0));
    let installed = check(pod.app.command(BIN).args(strings(&init["args"])));
    let installed = String::from_utf8_lossy(&installed.stdout).to_string();
    assert!(installed.contains("PINPROXY_REDIRECT"), "{installed}");

    // The sidecar, as its UID, until ready.
    let uid = sidecar["securityContext"]["runAsUser"].as_i64().unwrap() as u32;
    let mut child = pod
        .app
        .command_as(uid, BIN)
        .args(strings(&sidecar["args"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        netns::wait_ready(&pod.app, "http://127.0.0.1:9901/readyz"),
        "the sidecar never became ready"
    );

    // The app, with the manifest's env and nothing else but PATH.
    let env: Vec<(String, String)> = app["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        env.iter().all(|(n, _)| !n.to_lowercase().contains("proxy")),
        "{env:?}"
    );
    let app_uid = app["securityContext"]["runAsUser"].as_i64().unwrap() as u32;
    let run_app = |program: &str, args: &[&str]| {
        let out = pod
            .app
            .command_as(app_uid, program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let resolve = format!("{PINNED}:443:{}", WORLD_V4[0]);
    let url = format!("https://{PINNED}/injected");
    let (code, text) = run_app(
        "curl",
        &["-sS", "--max-time", "10", "--resolve", &resolve, &url],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("upstream=pinned") && text.contains("path=/injected"),
        "{text}"
    );

    // Python's ssl with its default context: trusts what SSL_CERT_FILE names.
    let script = format!(
        "import socket, ssl\nctx = ssl.create_default_context()\n\
         s = ctx.wrap_socket(socket.create_connection(('{}', 443), timeout=10), server_hostname='{PINNED}')\n\
         s.sendall(b'GET /py HTTP/1.1\\r\\nHost: {PINNED}\\r\\nConnection: close\\r\\n\\r\\n')\n\
         print(s.recv(4096).decode(errors='replace'))\n",
        WORLD_V4[0]
    );
    let (code, text) = run_app(netns::python(), &["-c", &script]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("200 OK"), "{text}");

    // The rules the init container installed: the sidecar's UID exempt,
    // and (--transparent-lock) the lock chain in the filter table.
    let nat = check(pod.app.command("iptables-save").args(["-t", "nat"]));
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(
        nat.contains(&format!("--uid-owner {uid} -j RETURN")),
        "the sidecar's UID is exempt: {nat}"
    );
    let filter = check(pod.app.command("iptables-save").args(["-t", "filter"]));
    assert!(String::from_utf8_lossy(&filter.stdout).contains("PINPROXY_LOCK"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn learn_mode_learns_a_spliced_host_at_the_address_the_app_dialed() {
    if netns::skip("learn_mode_learns_a_spliced_host_at_the_address_the_app_dialed") {
        return;
    }
    // No DNS for OPEN in the pod: the probe must dial where the app did.
    let s = setup("tp-learn", |_| {
        "version: 1\ndefaults:\n  unlisted: learn\n  trust: open-root.pem\nhosts: {}\n".into()
    });
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());
    let (code, out) = curl_open(&s);
    assert_eq!(code, 0, "spliced as under allow: {out}");
    let mut learned = serde_json::Value::Null;
    for _ in 0..100 {
        let out = check(
            app.command("curl")
                .args(["-s", "http://127.0.0.1:9901/learned"]),
        );
        learned = serde_json::from_slice(&out.stdout).unwrap();
        if learned["hosts"].as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let host = &learned["hosts"][0];
    assert_eq!(host["host"], OPEN, "{learned}");
    assert_eq!(host["port"], 443);
    assert_eq!(
        host["paths"][0]["pins"],
        serde_json::json!([
            s.open.leaf.pin().to_string(),
            s.open.int.pin().to_string(),
            s.open.root.pin().to_string()
        ])
    );
    let _ = &s.pinned;
    drop(proxy);
}

/// A minimal TLS 1.3 ClientHello naming `sni`, carrying an
/// `encrypted_client_hello` (0xfe0d) outer extension, as one record: what
/// an ECH client sends, the inner hello sealed to a key pinproxy lacks.
fn ech_client_hello(sni: &str) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, ty: u16, body: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let name = sni.as_bytes();
    let mut sn = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    sn.push(0);
    sn.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sn.extend_from_slice(name);
    let mut exts = Vec::new();
    ext(&mut exts, 0x0000, &sn);
    ext(&mut exts, 0x002b, &[2, 3, 4]);
    ext(&mut exts, 0x000a, &[0, 2, 0, 0x1d]);
    ext(&mut exts, 0x000d, &[0, 2, 8, 4]);
    let mut share = vec![0, 36, 0, 0x1d, 0, 32];
    share.extend_from_slice(&[7; 32]);
    ext(&mut exts, 0x0033, &share);
    // outer; HKDF-SHA256, AES-128-GCM; config_id 42; enc; sealed inner hello
    let mut ech = vec![0, 0, 1, 0, 1, 42, 0, 32];
    ech.extend_from_slice(&[9; 32]);
    ech.extend_from_slice(&[0, 128]);
    ech.extend_from_slice(&[5; 128]);
    ext(&mut exts, 0xfe0d, &ech);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[1; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Sends the hex bytes argv[3] to argv[1]:argv[2] and prints what came
/// back: "alert" (a TLS alert record), "handshake" (the server answered),
/// or "closed".
const RAW_HELLO: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(bytes.fromhex(sys.argv[3]))
try:
    r = s.recv(5)
except ConnectionResetError:
    r = b""
print({0x15: "alert", 0x16: "handshake"}.get(r[0], "other") if r else "closed")
"#;

/// Issue 24 item 3: a ClientHello offering Encrypted Client Hello is
/// judged by its outer SNI (the only name pinproxy can read): an unlisted
/// outer name under `unlisted: deny` is refused with a TLS alert and
/// counted; a pinned outer name is intercepted (the client then gets no
/// ECH acceptance). Both are counted as `protocol="tls-ech"`.
#[test]
fn ech_is_judged_by_its_outer_sni_and_counted() {
    if netns::skip("ech_is_judged_by_its_outer_sni_and_counted") {
        return;
    }
    let s = setup("tp-ech", |pki| {
        pinset(&[pki.int.pin().to_string()]).replace("unlisted: allow", "unlisted: deny")
    });
    let app = &s.pod.app;
    let _proxy = start_proxy(app, s.dir.path());
    let send = |sni: &str, addr: &str| {
        let hello: String = ech_client_hello(sni)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let out = check(
            app.command_as(APP_UID, netns::python())
                .args(["-I", "-c", RAW_HELLO, addr, "443", &hello]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ech = |outcome: &str| {
        metric(
            app,
            &format!(
                "pinproxy_transparent_connections_total{{outcome=\"{outcome}\",protocol=\"tls-ech\"}}"
            ),
        )
    };
    let denied = "pinproxy_denied_total{reason=\"host-not-allowed\"}";
    let before = metric(app, denied);
    assert_eq!(send("public.ech-provider.test", WORLD_V4[1]), "alert");
    assert_eq!(metric(app, denied), before + 1.0);
    assert_eq!(ech("refused"), 1.0);
    assert_eq!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"refused\",protocol=\"tls\"}"
        ),
        0.0,
        "counted as ECH, not as plain TLS"
    );
    // A pinned outer name: intercepted, as any hello naming it.
    let got = send(PINNED, WORLD_V4[0]);
    assert!(got == "handshake" || got == "alert", "{got}");
    assert_eq!(ech("intercepted"), 1.0);
    let _ = (&s.open, &s.pinned);
}

/// A world address in a private (special-purpose) range, 198.18.0.0/15:
/// where `allow_private` and passthrough CIDRs make the difference.
const PRIVATE: &str = "198.18.0.9";

/// A plain HTTP server answering every GET with 200 `plain world`, on
/// port 80 of every address of its namespace.
const PLAIN_HTTP: &str = r#"
import http.server, socket
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"plain world\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = S(("::", 80), H)
print("ready", flush=True)
srv.serve_forever()
"#;

/// [`PRIVATE`] in the world, routed from the pod: the unlisted TLS server
/// on :443 and a plain HTTP server on :80.
fn private_world(s: &Setup) -> netns::Proc {
    s.pod
        .world
        .ip(&["addr", "add", &format!("{PRIVATE}/24"), "dev", "eth0"]);
    s.pod
        .app
        .ip(&["route", "add", "198.18.0.0/24", "dev", "eth0"]);
    upstream_in(
        &s.pod.world,
        format!("{PRIVATE}:443").parse().unwrap(),
        &s.open,
        "private",
    );
    netns::spawn_ready(
        s.pod
            .world
            .command(netns::python())
            .args(["-I", "-c", PLAIN_HTTP]),
        "the plain HTTP server",
    )
}

/// Issue 24 item 5: `passthrough:` CIDRs and `allow_private` decide the
/// same on all four paths — forward (`HTTP_PROXY`), CONNECT
/// (`HTTPS_PROXY`), transparent TLS, transparent plain HTTP — for a
/// destination in a private range.
#[test]
fn passthrough_cidrs_and_allow_private_are_the_same_on_every_path() {
    if netns::skip("passthrough_cidrs_and_allow_private_are_the_same_on_every_path") {
        return;
    }
    let configs = [
        // (what, defaults and passthrough, expected on every path)
        (
            "private refused",
            "defaults:\n  unlisted: allow\n",
            "refused",
        ),
        (
            "allow_private",
            "defaults:\n  unlisted: allow\n  allow_private: true\n",
            "ok",
        ),
        (
            "passthrough CIDR",
            "defaults:\n  unlisted: deny\npassthrough: [\"198.18.0.0/24\"]\n",
            "ok",
        ),
    ];
    let paths: [(&str, Vec<String>); 4] = [
        (
            "forward",
            vec![
                "-x".into(),
                "http://127.0.0.1:3128".into(),
                format!("http://{PRIVATE}/"),
            ],
        ),
        (
            "connect",
            vec![
                "-x".into(),
                "http://127.0.0.1:3128".into(),
                "-p".into(),
                "-k".into(),
                format!("https://{PRIVATE}/"),
            ],
        ),
        (
            "transparent-tls",
            vec!["-k".into(), format!("https://{PRIVATE}/")],
        ),
        ("transparent-http", vec![format!("http://{PRIVATE}/")]),
    ];
    for (what, policy, want) in configs {
        let s = setup("tp-paths", |_| format!("version: 1\nhosts: {{}}\n{policy}"));
        let _http = private_world(&s);
        let app = &s.pod.app;
        let _proxy = start_proxy(app, s.dir.path());
        let private_refusals = || {
            metric(app, "pinproxy_denied_total{reason=\"private-address\"}")
                + metric(
                    app,
                    "pinproxy_requests_total{host=\"unlisted\",outcome=\"private-address\"}",
                )
        };
        for (path, args) in &paths {
            let before = private_refusals();
            let mut all: Vec<&str> = vec!["-o", "/dev/null", "-w", "%{http_code}"];
            all.extend(args.iter().map(String::as_str));
            let (code, out) = curl(app, &all);
            let got = if code == 0 && out.starts_with("200") {
                "ok"
            } else {
                "refused"
            };
            assert_eq!(got, want, "{what}, {path}: curl {code}: {out}");
            if want == "refused" {
                assert!(
                    private_refusals() > before,
                    "{what}, {path}: refused but not counted as private-address"
                );
            }
        }
    }
}

/// Connects to argv[2]:443 with SNI argv[1], verifying nothing: which
/// server answered ("reached open"/"reached pinned"), or "refused".
const SNI_CLIENT: &str = r#"
import socket, ssl, sys
sni, addr = sys.argv[1], sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((addr, 443), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=sni) as t:
            der = t.getpeercert(binary_form=True)
            who = "open" if b"open.unlisted.test" in der else "pinned" if b"api.pinned.test" in der else "other"
            print("reached", who)
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__)
"#;

/// Issue 24 item 5: the SNI is the app's claim, the destination the fact.
/// A passthrough name (the chart's default `**.cluster.local`) is spliced
/// only to an address it resolves to; to any other address it is refused
/// with a TLS alert and counted (`misdirected-request`), and the server
/// there never hears from it.
#[test]
fn a_passthrough_name_is_spliced_only_to_where_it_resolves() {
    if netns::skip("a_passthrough_name_is_spliced_only_to_where_it_resolves") {
        return;
    }
    let s = setup("tp-ptname", |pki| {
        pinset(&[pki.int.pin().to_string()]).replace(
            "defaults:\n  unlisted: allow\n",
            "defaults:\n  unlisted: deny\npassthrough: [\"**.cluster.local\"]\n",
        )
    });
    let app = &s.pod.app;
    // pinproxy's resolver (and everyone's in the pod) reads this.
    app.etc(
        "hosts",
        &format!("127.0.0.1 localhost\n{} svc.cluster.local\n", WORLD_V4[1]),
    );
    let _proxy = start_proxy(app, s.dir.path());
    let sni = |name: &str, addr: &str| python_in(app, SNI_CLIENT, &[name, addr]);
    let misdirected = "pinproxy_denied_total{reason=\"misdirected-request\"}";
    // The name where it resolves: spliced to that server.
    assert_eq!(sni("svc.cluster.local", WORLD_V4[1]), "reached open");
    assert_eq!(
        metric(
            app,
            "pinproxy_requests_total{host=\"**.cluster.local\",outcome=\"passthrough\"}"
        ),
        1.0
    );
    // The same name, or one that resolves nowhere, to another server:
    // refused before anything is dialed.
    for name in ["svc.cluster.local", "x.cluster.local"] {
        let before = metric(app, misdirected);
        let got = sni(name, WORLD_V4[0]);
        assert!(got.starts_with("refused"), "{name}: {got}");
        assert_eq!(metric(app, misdirected), before + 1.0, "{name}");
    }
    assert_eq!(
        metric(
            app,
            "pinproxy_requests_total{host=\"**.cluster.local\",outcome=\"passthrough\"}"
        ),
        1.0,
        "nothing more was spliced"
    );
    let _ = &s.pinned;
}

/// Runs `script` with python3 as the app in `ns`: its stdout, trimmed.
fn python_in(ns: &Netns, script: &str, args: &[&str]) -> String {
    let out = check(
        ns.command_as(APP_UID, netns::python())
            .args(["-I", "-c", script])
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A WebSocket through the redirect, as an app that knows nothing of
/// proxies: over TLS (argv[4] = "tls", trusting argv[3]) or plain, to
/// argv[2]:port with Host/SNI argv[1]. Prints the status line, then the
/// echo of a frame.
const WS_CLIENT: &str = r#"
import socket, ssl, sys
host, addr, ca, mode = sys.argv[1:5]
port = 443 if mode == "tls" else 80
s = socket.create_connection((addr, port), timeout=10)
if mode == "tls":
    s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=host)
s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
print(head.split(b"\r\n")[0].decode())
s.sendall(b"\x81\x05hello")
echo = b""
while len(echo) < 7:
    chunk = s.recv(7 - len(echo))
    if not chunk:
        break
    echo += chunk
print(echo.hex())
"#;

/// `GET /hop` with `Upgrade: h2c` over plain HTTP to argv[2]:80, Host
/// argv[1]: what the upstream says it saw.
const H2C_CLIENT: &str = r#"
import socket, sys
host, addr = sys.argv[1], sys.argv[2]
s = socket.create_connection((addr, 80), timeout=10)
s.sendall((f"GET /hop HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
           "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n").encode())
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace"))
"#;

/// Issue 24 item 2 on the transparent paths: a WebSocket still works
/// through interception (TLS) and the plain-HTTP path; `Upgrade: h2c` on
/// the plain path reaches the upstream as a plain request, neither header
/// left.
#[test]
fn upgrades_on_the_transparent_paths() {
    if netns::skip("upgrades_on_the_transparent_paths") {
        return;
    }
    let s = setup("tp-upgrade", |pki| pinset(&[pki.int.pin().to_string()]));
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());
    let ca = proxy.ca.to_str().unwrap();
    for mode in ["tls", "plain"] {
        let out = python_in(app, WS_CLIENT, &[PINNED, WORLD_V4[0], ca, mode]);
        assert_eq!(
            out,
            format!("HTTP/1.1 101 Switching Protocols\n{}", "810568656c6c6f"),
            "{mode}"
        );
    }
    let out = python_in(app, H2C_CLIENT, &[PINNED, WORLD_V4[0]]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.ends_with("upgrade=[] connection=[] http2-settings=[]"),
        "{out}"
    );
    drop(proxy);
}
