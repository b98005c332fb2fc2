//! ECH hellos, passthrough CIDRs and names, private addresses, and
//! upgrades on the transparent paths.

use super::*;

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
    support::pod::tls_upstream_in(
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

/// Connects to argv[1]:443 with SNI argv[2] (none if empty), verifying
/// nothing. Without argv[3]: which server answered ("reached open" /
/// "reached pinned"); with it, sends `GET /` with `Host: argv[3]` and
/// prints the status line. "refused" if the handshake or the connection
/// failed.
const TLS_CLIENT: &str = r#"
import socket, ssl, sys
addr, sni, host = sys.argv[1], sys.argv[2] or None, (sys.argv[3:] or [None])[0]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((addr, 443), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=sni) as t:
            if host is None:
                der = t.getpeercert(binary_form=True)
                who = "open" if b"open.unlisted.test" in der else "pinned" if b"api.pinned.test" in der else "other"
                print("reached", who)
            else:
                t.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                print(t.recv(4096).split(b"\r\n")[0].decode())
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
    let sni = |name: &str, addr: &str| python_in(app, TLS_CLIENT, &[addr, name]);
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

/// A hello without SNI names no host, so it is judged by where it goes:
/// to the `address:` of a pinned entry it is intercepted and pinned as
/// that host (an attack review had it spliced, unpinned, under `unlisted:
/// allow` — a rogue chain there reached the app), elsewhere it is unlisted
/// traffic, spliced as before.
#[test]
fn a_hello_without_sni_to_a_pinned_address_is_pinned() {
    if netns::skip("a_hello_without_sni_to_a_pinned_address_is_pinned") {
        return;
    }
    // Pins the server's chain does not carry: only a pin check refuses it.
    let wrong = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string();
    let s = setup("tp-nosni", |_| pinset(std::slice::from_ref(&wrong)));
    let app = &s.pod.app;
    let _proxy = start_proxy(app, s.dir.path());
    let got = python_in(app, TLS_CLIENT, &[WORLD_V4[0], "", PINNED]);
    assert_eq!(got, "HTTP/1.1 502 Bad Gateway", "{got}");
    assert_eq!(
        metric(
            app,
            &format!("pinproxy_requests_total{{host=\"{PINNED}\",outcome=\"pin-mismatch\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"intercepted\",protocol=\"tls\"}"
        ),
        1.0
    );
    // Another address, named by no entry: unlisted, spliced as before.
    let got = python_in(app, TLS_CLIENT, &[WORLD_V4[1], "", OPEN]);
    assert!(!got.starts_with("refused"), "{got}");
    assert_eq!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"spliced\",protocol=\"tls\"}"
        ),
        1.0
    );
    let _ = (&s.pinned, &s.open);
}

/// Two entries on one `address:` cannot be told apart without SNI: the
/// hello is refused (`misdirected-request`) rather than pinned as either.
#[test]
fn a_hello_without_sni_to_an_address_two_entries_share_is_refused() {
    if netns::skip("a_hello_without_sni_to_an_address_two_entries_share_is_refused") {
        return;
    }
    let s = setup("tp-nosni2", |pki| {
        let pin = pki.int.pin().to_string();
        format!(
            "{}  other.pinned.test:\n    pins: [{pin}]\n    trust: ca.pem\n    address: {}:443\n",
            pinset(std::slice::from_ref(&pin)),
            WORLD_V4[0]
        )
    });
    let app = &s.pod.app;
    let _proxy = start_proxy(app, s.dir.path());
    let misdirected = "pinproxy_denied_total{reason=\"misdirected-request\"}";
    let got = python_in(app, TLS_CLIENT, &[WORLD_V4[0], "", PINNED]);
    assert!(got.starts_with("refused"), "{got}");
    assert_eq!(metric(app, misdirected), 1.0);
    let _ = (&s.pinned, &s.open);
}
