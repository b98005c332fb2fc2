//! (A module of tests/redirect.rs: one test binary fewer.)
//!
//! Client-first protocols pinproxy does not speak, on redirected
//! connections (review 10 F5): DNS over TCP to the pod's own resolver is
//! left out of the redirect (and the lock), and any other such protocol to
//! a `passthrough:` CIDR is spliced, as server-first ones are.

use crate::support::netns::{self, spawn_ready, Pod, WORLD_V4};
use crate::support::pod::{python_as, redirect, shared_dir, PodProxy, APP_UID};

/// The pod's resolver: an address of its own in the world, reached
/// through the world's first address.
const RESOLVER: &str = "198.18.0.53";

/// A DNS-over-TCP server on argv[1] at each port of argv[2:]: it reads one
/// length-prefixed message and answers it as a response (the query with
/// QR set), length-prefixed. Its first byte, like PostgreSQL's, is no
/// letter and no TLS record: pinproxy's `First::Other`.
const TCP_DNS: &str = r#"
import socket, struct, sys, threading
def serve(s):
    while True:
        c, _ = s.accept()
        try:
            q = c.recv(4096)[2:]
            a = q[:2] + b"\x81\x80" + q[4:]
            c.sendall(struct.pack(">H", len(a)) + a)
        finally:
            c.close()
for port in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port)))
    s.listen(16)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;

/// One DNS query over TCP to argv[1]:argv[2]: "answer" (a response to the
/// query came back), "closed" (nothing) or the error.
const TCP_QUERY: &str = r#"
import errno, socket, struct, sys
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(struct.pack(">H", len(q)) + q)
    r = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        r += chunk
    ok = len(r) > 4 and r[2:4] == q[:2] and r[4] & 0x80
    print("answer" if ok else "closed")
except OSError as e:
    print("error", errno.errorcode.get(e.errno, str(e)))
"#;

fn query(pod: &Pod, host: &str, port: u16) -> String {
    python_as(&pod.app, APP_UID, TCP_QUERY, &[host, &port.to_string()])
}

/// The pod with [`RESOLVER`] in its resolv.conf and the world answering
/// DNS over TCP there (port 53) and at the world's second address (53,
/// 5432), and pinproxy running with `pins` (`unlisted: deny`).
fn lab(tag: &str, pins: &str) -> (Pod, netns::Proc, netns::Proc, PodProxy, tempfile::TempDir) {
    let pod = Pod::new(tag);
    pod.world
        .ip(&["addr", "add", &format!("{RESOLVER}/32"), "dev", "eth0"]);
    pod.app.ip(&[
        "route",
        "add",
        &format!("{RESOLVER}/32"),
        "via",
        WORLD_V4[0],
    ]);
    pod.app
        .etc("resolv.conf", &format!("nameserver {RESOLVER}\n"));
    let server = |addr: &str, ports: &[&str]| {
        spawn_ready(
            pod.world
                .command(netns::python())
                .args(["-I", "-c", TCP_DNS, addr])
                .args(ports),
            "the DNS-over-TCP server",
        )
    };
    let resolver = server(RESOLVER, &["53", "5432"]);
    let other = server(WORLD_V4[1], &["53", "5432"]);
    let dir = shared_dir();
    std::fs::write(dir.path().join("pins.yaml"), pins).unwrap();
    let proxy = PodProxy::start(&pod.app, dir.path(), "127.0.0.1:9901");
    (pod, resolver, other, proxy, dir)
}

/// Review 10 F5: DNS over TCP (what glibc and Go retry a truncated UDP
/// answer with) to the resolver the lock lets UDP DNS reach was
/// redirected to pinproxy, which closed it: the lookup failed. The rules
/// now leave it out of the redirect, lock or not; DNS over TCP to another
/// server is still redirected (and refused: no passthrough here).
#[test]
fn dns_over_tcp_to_the_pods_resolver_is_answered_with_and_without_the_lock() {
    if netns::skip("dns_over_tcp_to_the_pods_resolver_is_answered_with_and_without_the_lock") {
        return;
    }
    let pins = "version: 1\nhosts: {}\ndefaults:\n  unlisted: deny\n";
    let (pod, _resolver, _other, proxy, _dir) = lab("tcpdns", pins);
    let refused = "pinproxy_transparent_connections_total{outcome=\"refused\",protocol=\"other\"}";
    let rule = format!("-A PINPROXY_OUTPUT -d {RESOLVER}/32 -p tcp -m tcp --dport 53 -j RETURN");

    let out = redirect(&pod.app, &[]);
    assert_eq!(query(&pod, RESOLVER, 53), "answer", "without --lock");
    assert!(out.contains(&rule), "without --lock:\n{out}");

    let out = redirect(&pod.app, &["--lock"]);
    assert_eq!(query(&pod, RESOLVER, 53), "answer", "with --lock");
    let lock_rule = rule.replace("PINPROXY_OUTPUT", "PINPROXY_LOCK");
    assert!(out.contains(&lock_rule), "with --lock:\n{out}");
    assert_eq!(proxy.metric(&pod.app, refused), 0.0);

    // Only the resolver, only port 53: the rest is still redirected, and
    // pinproxy refuses it (unlisted: deny, no passthrough).
    assert_eq!(query(&pod, WORLD_V4[1], 53), "closed");
    assert_eq!(query(&pod, RESOLVER, 5432), "closed");
    assert_eq!(proxy.metric(&pod.app, refused), 2.0);
}

/// Review 10 F5, second part: a client-first protocol pinproxy does not
/// speak (PostgreSQL, Redis; here DNS over TCP to a server that is not the
/// pod's resolver) was closed even to a `passthrough:` CIDR, where a
/// server-first one is spliced. It is spliced now; outside the CIDR it is
/// still refused.
#[test]
fn a_client_first_protocol_to_a_passthrough_cidr_is_spliced() {
    if netns::skip("a_client_first_protocol_to_a_passthrough_cidr_is_spliced") {
        return;
    }
    let pins = format!(
        "version: 1\nhosts: {{}}\npassthrough: [\"{}/32\"]\ndefaults:\n  unlisted: deny\n",
        WORLD_V4[1]
    );
    let (pod, _resolver, _other, proxy, _dir) = lab("clientfirst", &pins);
    redirect(&pod.app, &["--lock"]);
    let metric = |outcome: &str| {
        let name = format!(
            "pinproxy_transparent_connections_total{{outcome=\"{outcome}\",protocol=\"other\"}}"
        );
        proxy.metric(&pod.app, &name)
    };
    assert_eq!(query(&pod, WORLD_V4[1], 5432), "answer");
    assert_eq!(metric("spliced"), 1.0);
    assert_eq!(query(&pod, RESOLVER, 5432), "closed", "outside the CIDR");
    assert_eq!(metric("refused"), 1.0);
}
