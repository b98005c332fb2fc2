//! (A module of tests/redirect.rs: one test binary fewer.)
//!
//! The lock (`pinproxy redirect --lock`) against the ways around it, with
//! real kernel rules in throwaway network namespaces (`support::netns`):
//! the rules installed as the init container installs them (the pod's
//! `/etc/resolv.conf` naming a resolver in the "world"), pinproxy running
//! as its UID, and attackers' clients running as the app's — an HTTP/3
//! client (aioquic), raw UDP, DNS to another resolver, a root process
//! switching to pinproxy's UID.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::support::netns::{self, check, spawn_ready, Pod, WORLD_V4, WORLD_V6};
use crate::support::pod::{python_as, redirect, shared_dir, tls_upstream_in, PodProxy};
use crate::support::pod::{APP_UID, PROXY_UID};
use crate::support::{udp, Pki};
use serde_json::Value;

const PINNED: &str = "quic.pinned.test";
const SINK_PORT: u16 = 9999;
/// What `sendto` says when OUTPUT drops the datagram.
const DROPPED: &str = "error [Errno 1] Operation not permitted";

/// The Python that has aioquic: scripts/test.sh installs it (pinned) into
/// `target/py-venv` and names it in `PINPROXY_TEST_PYTHON`.
fn quic_python() -> String {
    let path = std::env::var("PINPROXY_TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/target/py-venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let ok = std::process::Command::new(&path)
        .args(["-c", "import aioquic"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{path} cannot import aioquic: run scripts/test.sh, which installs it \
         (or set PINPROXY_TEST_PYTHON)"
    );
    path
}

fn quic_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/quic.py")
}

/// The pinned host's certificate for its HTTP/3 endpoint, from the same
/// intermediate, as PEM (leaf, key). Unlike the support PKI's leaves it
/// leaves BasicConstraints out: an explicit `cA: FALSE` is a DER encoding
/// error the Python `cryptography` package refuses.
fn quic_leaf(pki: &Pki) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![PINNED.to_string()]).unwrap();
    p.is_ca = rcgen::IsCa::NoCa;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
    let cert = p.signed_by(&key, &pki.int.cert, &pki.int.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Sends one datagram from inside the pod; "sent" or the error.
const SEND_UDP: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
try:
    s.sendto(b"bypass?", (host, port))
    print("sent")
except OSError as e:
    print("error", e)
"#;

/// One DNS A query for argv[2] to argv[1]:53: "answer IP", "nxdomain",
/// "timeout" or "refused EPERM" (the kernel dropped it).
const DNS_QUERY: &str = r#"
import random, socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
qid = random.randrange(65536)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.5)
try:
    s.sendto(q, (server, 53))
except PermissionError:
    print("refused EPERM"); sys.exit()
try:
    r, _ = s.recvfrom(2048)
except socket.timeout:
    print("timeout"); sys.exit()
answers = struct.unpack(">H", r[6:8])[0]
print("answer " + socket.inet_ntoa(r[-4:]) if answers else "nxdomain")
"#;

/// A connected UDP socket sends once (ignoring a send error) and listens:
/// "ECONNREFUSED" when an ICMP port-unreachable came back, "silent" when
/// nothing did within a second.
const ICMP_PROBE: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.connect((host, port))
s.settimeout(1)
try:
    s.send(b"quic?")
except PermissionError:
    pass
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("ECONNREFUSED")
except socket.timeout:
    print("silent")
"#;

fn icmp_probe(pod: &Pod, host: &str, port: u16) -> String {
    python_as(&pod.app, APP_UID, ICMP_PROBE, &[host, &port.to_string()])
}

fn send_udp(pod: &Pod, uid: u32, host: &str, port: u16) -> String {
    python_as(&pod.app, uid, SEND_UDP, &[host, &port.to_string()])
}

fn dns_query(pod: &Pod, uid: u32, server: &str, name: &str) -> String {
    python_as(&pod.app, uid, DNS_QUERY, &[server, name])
}

/// The HTTP/3 client, then (`fallback`) its TCP fallback, as the app.
fn h3_client(pod: &Pod, python: &str, addr: &str, bundle: &str, fallback: bool) -> Value {
    let script = quic_script();
    let mut cmd = pod.app.command_as(APP_UID, python);
    cmd.arg(&script)
        .args(["client", addr, PINNED, bundle])
        .args(fallback.then_some("--fallback"));
    let out = check(&mut cmd);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Packets counted by the lock's rule whose line contains every one of
/// `needles` (`iptables -L -v -n -x`: how an operator sees kernel drops;
/// protocols are numbers there: 6 TCP, 17 UDP).
pub(crate) fn rule_packets(pod: &Pod, program: &str, needles: &[&str]) -> u64 {
    rule_packets_where(pod, program, needles, &[])
}

/// The same, for the first rule with every one of `needles` and none of
/// `not`.
fn rule_packets_where(pod: &Pod, program: &str, needles: &[&str], not: &[&str]) -> u64 {
    let out = check(
        pod.app
            .command(program)
            .args(["-L", "PINPROXY_LOCK", "-v", "-n", "-x"]),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)) && !not.iter().any(|n| l.contains(n)))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule with {needles:?} and without {not:?} in:\n{text}"))
}

#[test]
fn udp_under_the_lock_keeps_dns_and_makes_quic_fall_back_to_pinned_tcp() {
    if netns::skip("udp_under_the_lock_keeps_dns_and_makes_quic_fall_back_to_pinned_tcp") {
        return;
    }
    let python = quic_python();
    let pod = Pod::new("udp");
    let (resolver, other) = (WORLD_V4[0], WORLD_V4[1]);
    // The pod's resolver, as the kubelet writes it.
    pod.app
        .etc("resolv.conf", &format!("nameserver {resolver}\n"));

    // The world: the pinned host over TCP (TLS) and over QUIC (HTTP/3) at
    // the same address, the pod's resolver, another resolver, a UDP sink.
    let pki = Pki::new(&[PINNED]);
    tls_upstream_in(
        &pod.world,
        format!("{resolver}:443").parse().unwrap(),
        &pki,
        "pinned",
    );
    let dir = shared_dir();
    let d = dir.path();
    let (leaf, key) = quic_leaf(&pki);
    std::fs::write(d.join("chain.pem"), leaf + &pki.int.pem()).unwrap();
    std::fs::write(d.join("key.pem"), key).unwrap();
    let _quic = spawn_ready(
        pod.world
            .command(&python)
            .arg(quic_script())
            .arg("server")
            .args([d.join("chain.pem"), d.join("key.pem")])
            .arg("443"),
        "the HTTP/3 server",
    );
    let table = [(PINNED, resolver.parse().unwrap())];
    let pod_dns = udp::dns(
        &pod.world,
        format!("{resolver}:53").parse().unwrap(),
        &table,
    );
    let other_dns = udp::dns(&pod.world, format!("{other}:53").parse().unwrap(), &table);
    let sink = udp::sink(&pod.world, SocketAddr::from(([0u16; 8], SINK_PORT)));

    std::fs::write(d.join("ca.pem"), pki.root.pem()).unwrap();
    std::fs::write(
        d.join("pins.yaml"),
        format!(
            "version: 1\nhosts:\n  {PINNED}:\n    pins: [{}]\n    trust: ca.pem\n    address: {resolver}:443\n",
            pki.int.pin()
        ),
    )
    .unwrap();
    let proxy = PodProxy::start(&pod.app, d, "127.0.0.1:9901");
    // The app trusts the pod CA (interception) and the world's root
    // (what a direct connection shows): it takes whatever it can get.
    let bundle = d.join("bundle.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&proxy.ca).unwrap() + &pki.root.pem(),
    )
    .unwrap();
    let bundle = bundle.to_str().unwrap();

    // Before: TCP redirected, no lock. Everything over UDP goes around
    // pinproxy: HTTP/3 reaches the pinned host unpinned, a datagram
    // reaches any port, DNS any resolver.
    redirect(&pod.app, &[]);
    let got = h3_client(&pod, &python, resolver, bundle, false);
    assert_eq!(got["quic"], "ok", "{got}");
    assert!(
        got["quic_body"].as_str().unwrap().contains("h3 ok"),
        "{got}"
    );
    assert_eq!(send_udp(&pod, APP_UID, other, SINK_PORT), "sent");
    assert_eq!(sink.wait_for(1), 1, "without the lock the datagram arrives");
    assert_eq!(
        dns_query(&pod, APP_UID, other, PINNED),
        format!("answer {resolver}")
    );

    // After: the lock, installed as the init container does.
    let out = redirect(&pod.app, &["--lock"]);
    assert!(
        out.contains(&format!(
            "-A PINPROXY_LOCK -d {resolver}/32 -p udp -m udp --dport 53 -j RETURN"
        )),
        "the resolver of the namespace's resolv.conf is let through:\n{out}"
    );

    // HTTP/3 is refused at once (ICMP port-unreachable: ECONNREFUSED on
    // the client's first read, not its timeout), over IPv4 and IPv6; the
    // client's TCP fallback is redirected, intercepted and pinned.
    let intercepted =
        "pinproxy_transparent_connections_total{outcome=\"intercepted\",protocol=\"tls\"}";
    let before = proxy.metric(&pod.app, intercepted);
    let got = h3_client(&pod, &python, resolver, bundle, true);
    assert_eq!(got["quic"], "refused", "{got}");
    assert_eq!(got["error"], "EPERM", "the first datagram failed: {got}");
    assert_eq!(got["tcp"], "ok", "{got}");
    let body = got["tcp_body"].as_str().unwrap();
    assert!(
        body.contains("upstream=pinned") && body.contains("path=/fallback"),
        "{got}"
    );
    assert_eq!(proxy.metric(&pod.app, intercepted), before + 1.0);
    let got = h3_client(&pod, &python, WORLD_V6[0], bundle, false);
    assert_eq!(got["quic"], "refused", "IPv6: {got}");
    // Beyond the failed send, the socket hears the ICMP error (a client
    // that ignored the send error still stops at once), on 443 only:
    // elsewhere a drop stays silent.
    for host in [resolver, WORLD_V6[0]] {
        assert_eq!(icmp_probe(&pod, host, 443), "ECONNREFUSED", "{host}");
    }
    assert_eq!(icmp_probe(&pod, other, SINK_PORT), "silent");

    // A datagram to any other port never arrives, IPv4 or IPv6, from the
    // app or root (the kernel drops it in OUTPUT, so sendto fails with
    // EPERM); the proxy's own datagram, sent after them, does.
    assert_eq!(send_udp(&pod, APP_UID, other, SINK_PORT), DROPPED);
    assert_eq!(send_udp(&pod, 0, WORLD_V6[1], SINK_PORT), DROPPED);
    assert_eq!(send_udp(&pod, PROXY_UID, other, SINK_PORT), "sent");
    assert_eq!(sink.wait_for(2), 2, "only pinproxy's datagram arrived");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(sink.received(), 2, "only pinproxy's datagram arrived");

    // DNS to the pod's resolver works (libc's resolver, as apps use it);
    // another resolver hears nothing from the app, but from pinproxy.
    let asked = pod_dns.received();
    let out = check(
        pod.app
            .command_as(APP_UID, "getent")
            .args(["ahostsv4", PINNED]),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(resolver),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(pod_dns.received() > asked);
    let heard = other_dns.received();
    assert_eq!(dns_query(&pod, APP_UID, other, PINNED), "refused EPERM");
    assert_eq!(
        other_dns.received(),
        heard,
        "the other resolver heard nothing"
    );
    assert_eq!(
        dns_query(&pod, PROXY_UID, other, PINNED),
        format!("answer {resolver}"),
        "pinproxy's own UID is not locked"
    );

    // What an operator reads: the kernel's per-rule counters.
    assert!(rule_packets(&pod, "iptables", &["DROP"]) >= 1);
    assert!(rule_packets(&pod, "ip6tables", &["DROP"]) >= 1);
    assert!(rule_packets(&pod, "iptables", &["icmp-port-unreachable"]) >= 1);
    assert!(rule_packets(&pod, "ip6tables", &["icmp6-port-unreachable"]) >= 1);

    // --remove takes the UDP lock away with the rest.
    redirect(&pod.app, &["--remove"]);
    assert_eq!(send_udp(&pod, APP_UID, other, SINK_PORT), "sent");
    assert_eq!(sink.wait_for(3), 3);
    drop(proxy);
}

#[test]
fn allow_udp_lets_one_destination_through_and_log_drops_adds_rate_limited_logs() {
    if netns::skip("allow_udp_lets_one_destination_through_and_log_drops_adds_rate_limited_logs") {
        return;
    }
    let pod = Pod::new("allowudp");
    // No resolv.conf in the namespace's view is the host's: give it one
    // without a resolver in the world.
    pod.app.etc("resolv.conf", "nameserver 127.0.0.53\n");
    let sink = udp::sink(&pod.world, SocketAddr::from(([0u16; 8], SINK_PORT)));
    let ntp = udp::sink(&pod.world, SocketAddr::from(([0u16; 8], 123)));
    let out = redirect(
        &pod.app,
        &[
            "--lock",
            "--allow-udp",
            &format!("{}/32:123", WORLD_V4[1]),
            "--allow-udp",
            &format!("[{}]:123", WORLD_V6[1]),
            "--log-drops",
        ],
    );
    assert!(
        out.contains("-j LOG --log-prefix \"pinproxy-lock: \""),
        "{out}"
    );
    assert_eq!(send_udp(&pod, APP_UID, WORLD_V4[1], 123), "sent");
    assert_eq!(send_udp(&pod, APP_UID, WORLD_V6[1], 123), "sent");
    assert_eq!(ntp.wait_for(2), 2, "--allow-udp destinations pass");
    // The same port elsewhere, and another port there, do not.
    assert_eq!(send_udp(&pod, APP_UID, WORLD_V4[0], 123), DROPPED);
    assert_eq!(send_udp(&pod, APP_UID, WORLD_V4[1], SINK_PORT), DROPPED);
    assert_eq!(send_udp(&pod, PROXY_UID, WORLD_V4[1], 123), "sent");
    assert_eq!(ntp.wait_for(3), 3);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(ntp.received(), 3);
    assert_eq!(sink.received(), 0);
    // The log rule before the last refusals (every protocol: the lock is
    // default-deny) saw both refused datagrams (it only logs, at a
    // limited rate); the TCP one before the reset saw none.
    assert!(rule_packets_where(&pod, "iptables", &["LOG"], &["tcp flags"]) >= 2);
    assert_eq!(rule_packets(&pod, "iptables", &["LOG", "tcp flags"]), 0);
}

/// Connects to argv[1]:argv[2] and prints the server's line, or the error.
const TCP_LINE: &str = r#"
import errno, socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print(c.recv(256).decode().strip() or "closed")
except OSError as e:
    print("error", errno.errorcode.get(e.errno, str(e)))
"#;

/// Issue 24 item 6: the rules let pinproxy's UID through, so a root app
/// that can `setuid` to it egresses around the pins. With SETUID/SETGID
/// dropped and no_new_privs (what `inject --transparent` now writes), the
/// switch fails and the world is out of reach.
#[test]
fn without_setuid_a_root_app_cannot_become_pinproxy() {
    if netns::skip("without_setuid_a_root_app_cannot_become_pinproxy") {
        return;
    }
    let pod = Pod::new("setuid");
    pod.app.etc("resolv.conf", "nameserver 127.0.0.53\n");
    let _world = netns::serve(&pod.world, "direct", &[8080]);
    redirect(&pod.app, &["--lock"]);
    let host = WORLD_V4[0];
    let proxy_uid = PROXY_UID.to_string();
    let run = |drop_caps: bool| -> String {
        let mut cmd = pod.app.command("setpriv");
        if drop_caps {
            // capabilities.drop [SETUID, SETGID] + allowPrivilegeEscalation: false
            cmd.args(["--bounding-set", "-setuid,-setgid"]).args([
                "--inh-caps",
                "-setuid,-setgid",
                "--no-new-privs",
            ]);
        }
        cmd.args([
            "--", "setpriv", "--reuid", &proxy_uid, "--regid", &proxy_uid,
        ])
        .args([
            "--clear-groups",
            netns::python(),
            "-I",
            "-c",
            TCP_LINE,
            host,
            "8080",
        ]);
        let out = cmd.output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    };
    // The hole: root with CAP_SETUID becomes pinproxy's UID and goes direct.
    assert_eq!(run(false), format!("direct {host}:8080"));
    // Closed: the switch itself fails.
    let got = run(true);
    assert!(got.contains("Operation not permitted"), "{got}");
    assert!(!got.contains("direct"), "{got}");
}

/// Issue 24 item 7: with the admin bound to the wildcard, only the pod's
/// own addresses on that port are pinproxy's; another host's port is
/// judged like any destination (here: a passthrough CIDR, spliced).
#[test]
fn a_wildcard_admin_bind_owns_only_the_pods_addresses() {
    if netns::skip("a_wildcard_admin_bind_owns_only_the_pods_addresses") {
        return;
    }
    let pod = Pod::new("ownaddr");
    pod.app.etc("resolv.conf", "nameserver 127.0.0.53\n");
    let _world = netns::serve(&pod.world, "direct", &[9901]);
    let dir = shared_dir();
    let d = dir.path();
    std::fs::write(
        d.join("pins.yaml"),
        "version: 1\nhosts: {}\npassthrough: [\"192.0.2.0/24\"]\ndefaults:\n  unlisted: deny\n",
    )
    .unwrap();
    let proxy = PodProxy::start(&pod.app, d, "0.0.0.0:9901");
    redirect(&pod.app, &["--lock"]);
    let world = WORLD_V4[0];
    let line = |host: &str| python_as(&pod.app, APP_UID, TCP_LINE, &[host, "9901"]);
    // Transparent: the world's :9901 is spliced (a server-first protocol
    // to a passthrough CIDR), not dropped as a loop.
    let loops = "pinproxy_transparent_connections_total{outcome=\"loop\",protocol=\"other\"}";
    assert_eq!(line(world), format!("direct {world}:9901"));
    assert_eq!(proxy.metric(&pod.app, loops), 0.0);
    // CONNECT through the forward listener: a tunnel to the world's port;
    // 403 private-address (pinproxy's own listener) for the pod's address
    // and loopback on that port.
    let connect = |host: &str| python_as(&pod.app, APP_UID, CONNECT_LINE, &[host, "9901"]);
    let got = connect(world);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with(&format!("| direct {world}:9901")),
        "{got}"
    );
    for own in [netns::APP_V4, "127.0.0.1"] {
        let got = connect(own);
        assert!(got.starts_with("HTTP/1.1 403"), "{own}: {got}");
    }
    assert_eq!(proxy.metric(&pod.app, loops), 0.0);
}

/// `CONNECT argv[1]:argv[2]` through 127.0.0.1:3128: the status line, and
/// after a 200 the first line through the tunnel.
const CONNECT_LINE: &str = r#"
import socket, sys
target = f"{sys.argv[1]}:{sys.argv[2]}"
c = socket.create_connection(("127.0.0.1", 3128), timeout=5)
c.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
data = b""
while b"\r\n\r\n" not in data:
    chunk = c.recv(1024)
    if not chunk:
        break
    data += chunk
head, _, rest = data.partition(b"\r\n\r\n")
status = head.split(b"\r\n")[0].decode()
if " 200 " in status + " ":
    while not rest.endswith(b"\n"):
        chunk = c.recv(256)
        if not chunk:
            break
        rest += chunk
    print(status, "|", rest.decode().strip())
else:
    print(status)
"#;

/// Sends one datagram of another protocol than UDP from inside the pod and
/// waits 2 s for an answer: argv[1] is `udplite` (IPPROTO_UDPLITE, 136:
/// any process may open it) or `ping` (an ICMP(v6) echo request with a
/// payload, on the unprivileged ICMP socket `ping_group_range` opens).
/// Prints "answered", "silent", "error ERRNO" or "unsupported ERRNO".
const SEND_OTHER: &str = r#"
import errno, socket, struct, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
v6 = ":" in host
family = socket.AF_INET6 if v6 else socket.AF_INET
proto = {"udplite": 136, "ping": socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP}[kind]
name = lambda e: errno.errorcode.get(e.errno, str(e))
try:
    s = socket.socket(family, socket.SOCK_DGRAM, proto)
except OSError as e:
    print("unsupported", name(e)); sys.exit()
s.settimeout(2)
payload = b"tunnelled past the lock?"
if kind == "ping":
    payload = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0, 1) + payload
try:
    s.sendto(payload, (host, port))
except OSError as e:
    print("error", name(e)); sys.exit()
try:
    s.recv(256)
    print("answered")
except socket.timeout:
    print("silent")
except OSError as e:
    print("error", name(e))
"#;

/// A UDP-Lite echo server on port 443, IPv4 and IPv6, that appends a line
/// to argv[1] for each datagram it hears.
const UDPLITE_ECHO: &str = r#"
import socket, sys, threading
def serve(family, addr):
    s = socket.socket(family, socket.SOCK_DGRAM, 136)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 443))
    while True:
        d, peer = s.recvfrom(256)
        with open(sys.argv[1], "a") as f:
            f.write(f"{peer[0]}\n")
        s.sendto(d, peer)
for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    threading.Thread(target=serve, args=(family, addr), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;

/// [`SEND_OTHER`] as the app.
pub(crate) fn send_other(pod: &Pod, kind: &str, host: &str, port: u16) -> String {
    python_as(
        &pod.app,
        APP_UID,
        SEND_OTHER,
        &[kind, host, &port.to_string()],
    )
}

/// The world's [`UDPLITE_ECHO`]; what it heard is read from `log`.
pub(crate) fn udplite_echo(pod: &Pod, log: &std::path::Path) -> netns::Proc {
    spawn_ready(
        pod.world
            .command(netns::python())
            .args(["-I", "-c", UDPLITE_ECHO])
            .arg(log),
        "the UDP-Lite echo server",
    )
}

/// Lines the UDP-Lite echo server wrote: one per datagram it heard.
pub(crate) fn heard(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Review 8: the lock listed what it refused (TCP SYNs, UDP), so UDP-Lite
/// (protocol 136: no privilege needed) and ICMP echo with a payload (where
/// `ping_group_range` opens it, as Docker and containerd 2.x do for every
/// pod) left a locked pod unpinned. The lock is default-deny now: both are
/// refused over IPv4 and IPv6, while DNS to the pod's resolver, the TCP
/// redirect, pinproxy's own traffic, IPv6 neighbour discovery and the
/// ICMP errors of the pod's kernel still pass.
#[test]
fn the_lock_refuses_every_protocol_it_does_not_let_through() {
    if netns::skip("the_lock_refuses_every_protocol_it_does_not_let_through") {
        return;
    }
    let pod = Pod::new("proto");
    let (resolver, other) = (WORLD_V4[0], WORLD_V4[1]);
    pod.app
        .etc("resolv.conf", &format!("nameserver {resolver}\n"));
    // What Docker and containerd 2.x set in every pod: any GID may open
    // an ICMP echo socket.
    pod.app.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    let dir = shared_dir();
    let log = dir.path().join("udplite.log");
    let _udplite = udplite_echo(&pod, &log);
    let pod_dns = udp::dns(
        &pod.world,
        format!("{resolver}:53").parse().unwrap(),
        &[(PINNED, resolver.parse().unwrap())],
    );
    let _world = netns::serve(&pod.world, "direct", &[443, 8080]);
    let redirected: [SocketAddr; 2] = [
        SocketAddr::from(([127, 0, 0, 1], 15001)),
        "[::1]:15001".parse().unwrap(),
    ];
    let listener = netns::OriginalDstListener::start(&pod.app, &redirected);

    // Without the lock both protocols reach the world and are answered:
    // what follows is not refused for want of a route.
    redirect(&pod.app, &[]);
    for host in [other, WORLD_V6[1]] {
        assert_eq!(send_other(&pod, "udplite", host, 443), "answered", "{host}");
        assert_eq!(send_other(&pod, "ping", host, 0), "answered", "{host}");
    }
    assert_eq!(heard(&log), 2);

    let out = redirect(&pod.app, &["--lock"]);
    // Refused at the sender (the drop in OUTPUT fails sendto), and
    // nothing arrives.
    for host in [other, WORLD_V6[1]] {
        assert_eq!(
            send_other(&pod, "udplite", host, 443),
            DROPPED_ERRNO,
            "{host}"
        );
    }
    assert!(out.contains("-A PINPROXY_LOCK -j DROP"), "{out}");
    assert_eq!(send_other(&pod, "ping", other, 0), DROPPED_ERRNO);
    // The kernel's ICMPv6 echo socket does not report the drop: no answer.
    assert_eq!(send_other(&pod, "ping", WORLD_V6[1], 0), "silent");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(heard(&log), 2, "a UDP-Lite datagram left the locked pod");
    // The lock's last rule counted them, per family.
    assert!(rule_packets(&pod, "iptables", &["DROP", "0.0.0.0/0"]) >= 2);
    assert!(rule_packets(&pod, "ip6tables", &["DROP", "::/0"]) >= 2);

    // Still through: DNS to the pod's resolver, the redirect (IPv4 and
    // IPv6), pinproxy's own connections.
    let asked = pod_dns.received();
    assert_eq!(
        dns_query(&pod, APP_UID, resolver, PINNED),
        format!("answer {resolver}")
    );
    assert_eq!(pod_dns.received(), asked + 1);
    let app = |host, port| netns::connect(&pod.app, APP_UID, host, port);
    assert_eq!(app(other, 443), format!("original {other}:443"));
    assert_eq!(
        app(WORLD_V6[1], 443),
        format!("original [{}]:443", WORLD_V6[1])
    );
    assert_eq!(listener.accepted(), 2);
    // IPv6 needs neighbour discovery, which the kernel sends under no
    // socket's UID: with the neighbour forgotten, pinproxy's own IPv6
    // connection must solicit it again through the lock.
    pod.app.ip(&["-6", "neigh", "flush", "dev", "eth0"]);
    assert_eq!(
        netns::connect(&pod.app, PROXY_UID, WORLD_V6[0], 8080),
        format!("direct [{}]:8080", WORLD_V6[0])
    );
    assert!(
        rule_packets(&pod, "ip6tables", &["RETURN", "ipv6-icmptype 135"]) >= 1,
        "the neighbour solicitation went through its rule"
    );
    // The pod's kernel still answers a datagram to a closed port with
    // ICMP port-unreachable (a client in the world hears ECONNREFUSED).
    assert_eq!(
        python_as(&pod.world, 0, ICMP_PROBE, &[netns::APP_V4, "9"]),
        "ECONNREFUSED"
    );
    assert_eq!(
        python_as(&pod.world, 0, ICMP_PROBE, &[netns::APP_V6, "9"]),
        "ECONNREFUSED"
    );

    // Rerunning with the lock changes nothing; --remove opens it again.
    let v4 = saved_rules(&pod, "iptables-save");
    redirect(&pod.app, &["--lock"]);
    assert_eq!(saved_rules(&pod, "iptables-save"), v4);
    redirect(&pod.app, &["--remove"]);
    assert_eq!(send_other(&pod, "udplite", other, 443), "answered");
    assert_eq!(heard(&log), 3);
}

/// What `send_other` prints when the lock drops the datagram in OUTPUT.
pub(crate) const DROPPED_ERRNO: &str = "error EPERM";

/// `program` (iptables-save…)'s rules without comments and counters.
fn saved_rules(pod: &Pod, program: &str) -> String {
    let out = check(&mut pod.app.command(program));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}
