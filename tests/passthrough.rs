//! `passthrough:` (docs/reference.md, "Passthrough"): in-cluster traffic
//! relayed as it came — plain HTTP stays plain, CONNECT is a byte tunnel
//! without interception — never pinned, exempt from the private-address rule
//! only when listed.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::proxy::TestProxy;
use support::*;

/// A plain-HTTP server that answers with the request line and Host it saw
/// and, like nginx on a plain port, with a 400 to bytes that aren't HTTP
/// (a TLS ClientHello).
async fn plain_http() -> SocketAddr {
    raw_tcp_upstream(|mut s: TcpStream| async move {
        let mut first = [0u8; 1];
        if s.peek(&mut first).await.unwrap_or(0) == 0 || !first[0].is_ascii_uppercase() {
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        while let Some(head) = read_head(&mut s).await {
            let first = head.lines().next().unwrap_or_default().to_string();
            let host = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Host: ")
                        .or_else(|| l.strip_prefix("host: "))
                })
                .unwrap_or("-")
                .to_string();
            let body = format!("plain saw [{first}] host={host}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

fn resolver(names: &[&str]) -> Arc<StaticResolver> {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    Arc::new(StaticResolver(
        names
            .iter()
            .map(|n| (n.to_string(), vec![lo]))
            .collect::<HashMap<_, _>>(),
    ))
}

async fn proxy_with(yaml: &str, names: &[&str]) -> Proxy {
    let r = resolver(names);
    TestProxy::builder().pinset(yaml).resolver(r).run().await
}

#[tokio::test]
async fn plain_http_by_name_pattern_is_relayed_plain_and_uncounted_as_pinned() {
    let up = plain_http().await;
    let name = "orders.shop.svc.cluster.local";
    let yaml = "version: 1\ndefaults:\n  unlisted: deny\npassthrough:\n  - \"**.svc.cluster.local\"\nhosts: {}\n";
    let p = proxy_with(yaml, &[name]).await;
    let url = format!("http://{name}:{}/v1/items?x=1", up.port());
    let r = get(p.addr, &url).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.error().is_none());
    // Plain, origin-form, the client's own Host.
    assert_eq!(
        r.body,
        format!(
            "plain saw [GET /v1/items?x=1 HTTP/1.1] host={name}:{}",
            up.port()
        )
    );
    assert_eq!(p.requests("**.svc.cluster.local", "passthrough"), 1);
    assert_eq!(p.requests("unlisted", "ok"), 0);
    assert_eq!(p.denied("private-address"), 0, "exempt when listed");
}

/// Finding 3: a short name got 403 host-not-allowed. Listing its Service
/// CIDR passes it (by the address it resolves to).
#[tokio::test]
async fn a_short_name_passes_by_its_resolved_cidr() {
    let up = plain_http().await;
    let url = format!("http://orders:{}/", up.port());
    let deny = "version: 1\nhosts: {}\n";
    let p = proxy_with(deny, &["orders"]).await;
    let r = get(p.addr, &url).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.error(), Some("host-not-allowed"));

    let listed = "version: 1\npassthrough: [127.0.0.0/8]\nhosts: {}\n";
    let p = proxy_with(listed, &["orders"]).await;
    let r = get(p.addr, &url).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.starts_with("plain saw [GET / HTTP/1.1]"),
        "{}",
        r.body
    );
    assert_eq!(p.requests("127.0.0.0/8", "passthrough"), 1);
}

/// Issue 20, item 2: with `unlisted: allow` an unlisted `http://` URL is
/// relayed as plain HTTP to the port it names (it used to meet a TLS
/// upgrade and fail); only a listed host is upgraded, and its failure on a
/// plain server names the fix. The private-address rule still applies to
/// what isn't listed, and `deny` still refuses.
#[tokio::test]
async fn unlisted_plain_http_stays_plain_and_private_addresses_stay_refused() {
    let up = plain_http().await;
    let url = format!("http://orders:{}/x?y=1", up.port());
    let allow = format!(
        "version: 1\ndefaults:\n  unlisted: allow\n  allow_private: true\n  ports: [{}]\nhosts: {{}}\n",
        up.port()
    );
    let p = proxy_with(&allow, &["orders"]).await;
    let r = get(p.addr, &url).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        format!("plain saw [GET /x?y=1 HTTP/1.1] host=orders:{}", up.port())
    );
    assert_eq!(p.requests("unlisted", "plain-http"), 1);
    assert_eq!(p.requests("unlisted", "ok"), 0);

    // A listed host is upgraded; a plain server there is named as such.
    let listed = format!(
        "{allow}  orders:\n    pins: [{}]\n    ports: [{}]\n",
        pinproxy::policy::pin::Pin::from_bytes([7; 32]),
        up.port()
    )
    .replace("hosts: {}\n", "hosts:\n");
    let p = proxy_with(&listed, &["orders"]).await;
    let r = get(p.addr, &url).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.error(), Some("upstream-tls-error"));
    assert!(r.body.contains("passthrough:"), "{}", r.body);
    assert!(r.body.contains("NO_PROXY"), "{}", r.body);

    // Without allow_private and without passthrough: refused as private,
    // before any byte is sent.
    let strict = allow.replace("  allow_private: true\n", "");
    let p = proxy_with(&strict, &["orders"]).await;
    let r = get(p.addr, &url).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.error(), Some("private-address"));
    assert_eq!(p.denied("private-address"), 1);
    assert_eq!(p.requests("unlisted", "plain-http"), 0);

    // deny: refused before anything is dialed.
    let deny = allow.replace("unlisted: allow", "unlisted: deny");
    let p = proxy_with(&deny, &["orders"]).await;
    let r = get(p.addr, &url).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (403, Some("host-not-allowed"))
    );
}

/// CONNECT to a passthrough host is a byte tunnel: the client's TLS meets
/// the server's own certificate, not the pod CA's.
#[tokio::test]
async fn connect_is_tunnelled_without_interception() {
    let name = "vault.security.svc.cluster.local";
    let pki = Pki::new(&[name]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("svc")).await;
    let yaml = "version: 1\npassthrough: [\"**.svc.cluster.local\"]\nhosts: {}\n";
    let p = proxy_with(yaml, &[name]).await;
    let (status, head, tcp) = connect_status(p.addr, &format!("{name}:{}", up.addr.port())).await;
    assert_eq!(status, 200, "{head}");
    // Trust only the upstream's own root: handshake succeeds only if the
    // bytes reach the real server.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.der()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("the real server's certificate, end to end");
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().unwrap()[0].clone();
    assert_eq!(leaf, pki.leaf.cert, "no interception leaf");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: vault\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    assert!(String::from_utf8_lossy(&out).contains("upstream=svc"));
    assert_eq!(p.requests("**.svc.cluster.local", "passthrough"), 1);
    assert_eq!(p.intercept.cached_leaves(), 0, "nothing was minted");
}

/// An entry wins over a passthrough pattern: a pinned in-cluster service
/// is pinned.
#[tokio::test]
async fn an_entry_beats_passthrough() {
    let name = "vault.security.svc.cluster.local";
    let pki = Pki::new(&[name]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("pinned")).await;
    let yaml = format!(
        "version: 1\npassthrough: [\"**.svc.cluster.local\"]\n{}",
        pinset(name, &[policy_pin()], "", up.addr).trim_start_matches("version: 1\n")
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let r = get(p.addr, &format!("http://{name}/")).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.error(), Some("pin-mismatch"));
}

fn policy_pin() -> pinproxy::policy::pin::Pin {
    pinproxy::policy::pin::Pin::from_bytes([7; 32])
}

/// The fifth review's F2: a pinned entry whose `address:` lies in a
/// passthrough CIDR was reachable unpinned through that CIDR — `CONNECT`
/// to the address, or a short alias resolving to it, got a raw tunnel or
/// a plain relay. The address is kept out of every CIDR (with a load
/// warning): only the entry's name reaches it, pinned.
#[tokio::test]
async fn a_pinned_address_inside_a_passthrough_cidr_is_not_passed_through() {
    let name = "vault.security.svc.cluster.local";
    let pki = Pki::new(&[name]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("pinned")).await;
    let yaml = format!(
        "version: 1\npassthrough: [127.0.0.0/8]\n{}",
        pinset(name, &[policy_pin()], "", up.addr).trim_start_matches("version: 1\n")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.root.pem()).unwrap();
    let policy =
        pinproxy::policy::load::parse(yaml.as_bytes(), dir.path(), time::OffsetDateTime::now_utc())
            .unwrap();
    assert!(
        policy.warnings.iter().any(|w| w
            .to_string()
            .contains("lies in passthrough CIDR 127.0.0.0/8")),
        "{:?}",
        policy.warnings
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .resolver(resolver(&["vault"]))
        .run()
        .await;
    // By its name: pinned (and the pin is wrong).
    let r = get(p.addr, &format!("http://{name}/")).await;
    assert_eq!(r.error(), Some("pin-mismatch"), "{r:?}");
    // By its address, and by an alias resolving to it: not passed through.
    let (status, head, _) = connect_status(p.addr, &up.addr.to_string()).await;
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("host-not-allowed"), "{head}");
    let r = get(p.addr, &format!("http://vault:{}/", up.addr.port())).await;
    assert_eq!(r.error(), Some("host-not-allowed"), "{r:?}");
    assert_eq!(p.requests("127.0.0.0/8", "passthrough"), 0);
    // Every other address in the CIDR still passes.
    assert_eq!(
        policy.passthrough.by_address("127.0.0.2".parse().unwrap()),
        Some("127.0.0.0/8")
    );
    assert_eq!(policy.passthrough.by_address(up.addr.ip()), None);
}
