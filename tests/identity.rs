//! Workload identity upstream (docs/reference.md, "Host fields"; issue 13):
//! client certificates presented to servers that *require* them and report the
//! identity they saw; `names:` (DNS and SPIFFE URI SANs) instead of the host
//! name; CRLs on the validated path; `**.` entries. Every case through the
//! forward path and through CONNECT interception.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber,
};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use pinproxy::policy::pin::Pin;
use support::*;

// === PKI for workloads ===

/// A CA made here (not support's) so tests can set serial numbers, which
/// CRLs name.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn root(cn: &str, serial: u64) -> Self {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(cn, serial).self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn intermediate(&self, cn: &str, serial: u64) -> Self {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(cn, serial)
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        Self { cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn pin(&self) -> Pin {
        Pin::of_certificate(self.cert.der()).unwrap()
    }

    /// A CRL signed by this CA revoking `serials`, valid until `next_update`.
    fn crl(&self, serials: &[u64], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: next_update - time::Duration::days(7),
            next_update,
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - time::Duration::hours(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }
}

fn ca_params(cn: &str, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(SerialNumber::from(serial));
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365);
    p
}

/// A certificate for `sans` (DNS names, or URIs when they contain `://`)
/// with `eku`, signed by `issuer` with `key`.
fn cert(
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
    serial: u64,
    issuer: &Authority,
    key: &KeyPair,
) -> CertificateDer<'static> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans
        .iter()
        .map(|s| {
            if s.contains("://") {
                SanType::URI((*s).try_into().unwrap())
            } else {
                SanType::DnsName((*s).try_into().unwrap())
            }
        })
        .collect();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    p.serial_number = Some(SerialNumber::from(serial));
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(90);
    p.signed_by(key, &issuer.cert, &issuer.key)
        .unwrap()
        .der()
        .clone()
}

/// A workload's client identity: PEM chain and key as cert-manager writes
/// them, and the leaf's pin (what the server reports it saw).
struct Identity {
    cert_pem: String,
    key_pem: String,
    pin: Pin,
}

fn identity(ca: &Authority, cn: &str) -> Identity {
    let key = KeyPair::generate().unwrap();
    let spiffe = format!("spiffe://example.org/ns/test/sa/{cn}");
    let leaf = cert(
        cn,
        &[spiffe.as_str()],
        ExtendedKeyUsagePurpose::ClientAuth,
        rand_serial(),
        ca,
        &key,
    );
    Identity {
        cert_pem: pem(&leaf),
        key_pem: key.serialize_pem(),
        pin: Pin::of_certificate(&leaf).unwrap(),
    }
}

fn rand_serial() -> u64 {
    let key = KeyPair::generate().unwrap();
    let der = key.public_key_der();
    u64::from_be_bytes(der[der.len() - 8..].try_into().unwrap()) >> 1
}

fn pem(der: &CertificateDer<'_>) -> String {
    ::pem::encode(&::pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
}

/// A server PKI: root → intermediate (serial 0x1001) → leaf (0x2002) for
/// `sans`.
struct ServerPki {
    root: Authority,
    int: Authority,
    leaf: CertificateDer<'static>,
    key: KeyPair,
}

const INT_SERIAL: u64 = 0x1001;
const LEAF_SERIAL: u64 = 0x2002;

fn server_pki(sans: &[&str]) -> ServerPki {
    let root = Authority::root("Server Root", 0x0101);
    let int = root.intermediate("Server Intermediate", INT_SERIAL);
    let key = KeyPair::generate().unwrap();
    let leaf = cert(
        sans[0],
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        LEAF_SERIAL,
        &int,
        &key,
    );
    ServerPki {
        root,
        int,
        leaf,
        key,
    }
}

impl ServerPki {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.leaf.clone(), self.int.der()]
    }

    fn key_der(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        rustls_pki_types::PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }

    fn root_pem(&self) -> String {
        self.root.cert.pem()
    }
}

/// One pinset entry pinning `pins`, trusting `ca.pem`, dialing `addr`.
fn entry(host: &str, pins: &[Pin], addr: std::net::SocketAddr, extra: &str) -> String {
    let pins: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
    format!(
        "  {host:?}:\n    pins: [{}]\n    trust: ca.pem\n    address: {addr}\n{extra}",
        pins.join(", ")
    )
}

fn client_cert(dir: &str) -> String {
    format!("    client_cert:\n      cert: {dir}/tls.crt\n      key: {dir}/tls.key\n")
}

// === clients ===

/// What one request saw: status, `x-pinproxy-error`, the identity the
/// upstream reported, the body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    error: Option<String>,
    client_pin: Option<String>,
    body: String,
}

fn seen(status: u16, headers: &http::HeaderMap, body: String) -> Seen {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Seen {
        status,
        error: h("x-pinproxy-error"),
        client_pin: h("x-client-pin"),
        body,
    }
}

/// `GET http://host/path` through the proxy (forward path).
async fn forward(p: &Proxy, host: &str, path: &str) -> Seen {
    let r = get(p.addr, &format!("http://{host}{path}")).await;
    seen(r.status.as_u16(), &r.headers, r.body)
}

fn pod_ca_client(p: &Proxy, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(p.intercept.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// An intercepted CONNECT tunnel to `host:443`, TLS with the pod CA.
async fn tunnel(p: &Proxy, host: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let (status, head, tcp) = connect_status(p.addr, &format!("{host}:443")).await;
    assert_eq!(status, 200, "{head}");
    tokio_rustls::TlsConnector::from(pod_ca_client(p, alpn))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .expect("handshake with the pod CA's leaf")
}

/// `GET path` inside an intercepted CONNECT tunnel to `host`.
async fn via_connect(p: &Proxy, host: &str, path: &str) -> Seen {
    let stream = tunnel(p, host, &[b"http/1.1"]).await;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), s.send_request(req))
        .await
        .expect("answered in time")
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    seen(
        status,
        &headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The same request through both paths; both must see the same.
async fn both(p: &Proxy, host: &str) -> Seen {
    let f = forward(p, host, "/who").await;
    let c = via_connect(p, host, "/who").await;
    assert_eq!(
        (f.status, &f.error, &f.client_pin),
        (c.status, &c.error, &c.client_pin),
        "forward and CONNECT disagree for {host}: {f:?} / {c:?}"
    );
    f
}

/// Reads an HTTP/1.1 response head from `s`.
async fn head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("a head in time")
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A WebSocket inside an intercepted tunnel to `host`: the 101 head and
/// the open stream (the upstream echoes).
async fn websocket(p: &Proxy, host: &str) -> (String, TlsStream<TcpStream>) {
    let mut s = tunnel(p, host, &[b"http/1.1"]).await;
    s.write_all(format!("GET /ws HTTP/1.1\r\nHost: {host}\r\n{UPGRADE}").as_bytes())
        .await
        .unwrap();
    let h = head(&mut s).await;
    (h, s)
}

/// A WebSocket on the forward path (absolute-form upgrade).
async fn websocket_forward(p: &Proxy, host: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(format!("GET http://{host}/ws HTTP/1.1\r\nHost: {host}\r\n{UPGRADE}").as_bytes())
        .await
        .unwrap();
    let h = head(&mut s).await;
    (h, s)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} never happened");
}

fn reloads(p: &Proxy, result: &str) -> u64 {
    p.metrics.config_reloads.with_label_values(&[result]).get()
}

// === client certificates ===

const PAY: &str = "pay.mtls.test";
const BARE: &str = "bare.mtls.test";

/// A server that requires a client certificate from the workload CA; the
/// proxy presents one for PAY and none for BARE (same server).
#[tokio::test]
async fn the_server_sees_the_configured_identity_on_every_path_and_refuses_without() {
    let server = server_pki(&[PAY, BARE]);
    let workload_ca = Authority::root("Workload CA", 0x0202);
    let id = identity(&workload_ca, "api");
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let yaml = format!(
        "version: 1\nhosts:\n{}{}",
        entry(PAY, &[server.int.pin()], up.addr, &client_cert("id")),
        entry(BARE, &[server.int.pin()], up.addr, ""),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("id")).unwrap();
    write(dir.path(), "id/tls.crt", &id.cert_pem);
    write(dir.path(), "id/tls.key", &id.key_pem);
    write(dir.path(), "ca.pem", &server.root_pem());
    let pins = write(dir.path(), "pins.yaml", &yaml);
    let p = proxy_at(dir, pins, false).await;

    let want = Some(id.pin.to_string());
    let s = both(&p, PAY).await;
    assert_eq!(
        (s.status, s.client_pin.clone()),
        (200, want.clone()),
        "{s:?}"
    );
    assert!(s.body.contains("upstream=mtls"), "{s:?}");

    // h2 inside the tunnel and the WebSocket paths present it too.
    let (h, mut ws) = websocket(&p, PAY).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    assert_eq!(header(&h, "x-client-pin"), want.as_deref(), "{h}");
    ws.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    let (h, _ws) = websocket_forward(&p, PAY).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    assert_eq!(header(&h, "x-client-pin"), want.as_deref(), "{h}");

    // Without a client certificate the server refuses: a readable 502.
    let refused_before = up.refused.load(Ordering::SeqCst);
    let s = both(&p, BARE).await;
    assert_eq!(
        (s.status, s.error.as_deref(), s.client_pin.as_deref()),
        (502, Some("upstream-tls-error"), None),
        "{s:?}"
    );
    assert!(
        s.body.contains("CertificateRequired") && s.body.contains("client_cert"),
        "{s:?}"
    );
    assert!(up.refused.load(Ordering::SeqCst) > refused_before);
    assert!(p.tls_failures(BARE, "alert-received") >= 2);
    assert_eq!(p.requests(BARE, "upstream-tls-error"), 2);
    // Two requests and two WebSockets.
    assert_eq!(p.requests(PAY, "ok"), 4);

    // The expiry metric; the key nowhere in /pins.
    let expiry = p.metrics.client_cert_expiry.with_label_values(&[PAY]).get();
    let not_after = x509_not_after(&id.cert_pem);
    assert_eq!(expiry as i64, not_after);
    let pins_view = p.admin_get("/pins").await.body;
    assert!(pins_view.contains(&id.pin.to_string()), "{pins_view}");
    assert!(pins_view.contains("spiffe://example.org/ns/test/sa/api"));
    let key_body: String = id
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!pins_view.contains(&key_body[..32]), "the key is in /pins");
    let metrics = p.admin_get("/metrics").await.body;
    assert!(
        metrics.contains(&format!(
            "pinproxy_client_cert_expiry_timestamp_seconds{{host=\"{PAY}\"}} {not_after}"
        )),
        "{metrics}"
    );
}

fn x509_not_after(pem_text: &str) -> i64 {
    let der = CertificateDer::from_pem_slice(pem_text.as_bytes()).unwrap();
    pinproxy::tls::cert::CertInfo::from_der(der.as_ref())
        .unwrap()
        .not_after_unix
}

/// RSA and ECDSA keys as PKCS#8, PKCS#1 and SEC1 (openssl writes them as
/// operators will have them), each presented to the same strict server.
#[tokio::test]
async fn rsa_and_ecdsa_keys_in_pkcs8_pkcs1_and_sec1_are_all_presented() {
    let server = server_pki(&["keys.mtls.test"]);
    let workload_ca = Authority::root("Workload CA", 0x0303);
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa8.key",
    ]);
    openssl(&[
        "pkey",
        "-in",
        "rsa8.key",
        "-traditional",
        "-out",
        "rsa1.key",
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ec8.key",
    ]);
    openssl(&["pkey", "-in", "ec8.key", "-traditional", "-out", "ec1.key"]);
    // `ecparam -genkey` writes EC PARAMETERS before the SEC1 key.
    openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-out",
        "p384.key",
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "p384.key",
        "-out",
        "p384-8.key",
    ]);
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    let cases = [
        ("rsa8.key", "rsa8.key", "-----BEGIN PRIVATE KEY-----"),
        ("rsa1.key", "rsa8.key", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ec8.key", "ec8.key", "-----BEGIN PRIVATE KEY-----"),
        ("ec1.key", "ec8.key", "-----BEGIN EC PRIVATE KEY-----"),
        ("p384.key", "p384-8.key", "-----BEGIN EC PARAMETERS-----"),
    ];
    let mut yaml = String::from("version: 1\nhosts:\n");
    let mut want = Vec::new();
    for (i, (key_file, pkcs8, label)) in cases.iter().enumerate() {
        assert!(
            read(key_file).starts_with(label),
            "{key_file}: {}",
            read(key_file)
        );
        let key = KeyPair::from_pem(&read(pkcs8)).unwrap();
        let leaf = cert(
            &format!("workload-{i}"),
            &["spiffe://example.org/ns/keys/sa/w"],
            ExtendedKeyUsagePurpose::ClientAuth,
            100 + i as u64,
            &workload_ca,
            &key,
        );
        write(dir.path(), &format!("{i}.crt"), &pem(&leaf));
        let host = format!("k{i}.keys.mtls.test");
        yaml.push_str(&entry(
            &host,
            &[server.int.pin()],
            up.addr,
            &format!("    client_cert: {{cert: {i}.crt, key: {key_file}}}\n"),
        ));
        want.push((host, Pin::of_certificate(&leaf).unwrap()));
    }
    write(dir.path(), "ca.pem", &server.root_pem());
    let pins = write(dir.path(), "pins.yaml", &yaml);
    // The server's certificate names keys.mtls.test: accept it for all.
    let yaml = yaml.replace(
        "    trust: ca.pem\n",
        "    trust: ca.pem\n    names: [keys.mtls.test]\n",
    );
    std::fs::write(&pins, yaml).unwrap();
    let p = proxy_at(dir, pins, false).await;
    for (host, pin) in &want {
        let s = both(&p, host).await;
        assert_eq!(
            (s.status, s.client_pin.as_deref()),
            (200, Some(pin.to_string().as_str())),
            "{host}: {s:?}"
        );
    }
}

/// The identity Secret is rotated the way the kubelet does it (a projected
/// volume holding the pins and `id/tls.{crt,key}`): the next connection
/// presents the new certificate without a restart, the old pooled
/// connection is not reused, a WebSocket opened with the old identity
/// ends after the grace period, a mismatched pair keeps the last good one
/// (a failed reload), and fixing it recovers.
#[tokio::test]
async fn a_kubelet_rotation_of_the_identity_changes_what_the_server_sees() {
    let server = server_pki(&[PAY]);
    let workload_ca = Authority::root("Workload CA", 0x0404);
    let (one, two, three) = (
        identity(&workload_ca, "one"),
        identity(&workload_ca, "two"),
        identity(&workload_ca, "three"),
    );
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry(PAY, &[server.int.pin()], up.addr, &client_cert("id"))
    );
    let root = server.root_pem();
    let files = |id: (&str, &str)| {
        vec![
            ("pins.yaml", yaml.clone()),
            ("ca.pem", root.clone()),
            ("id/tls.crt", id.0.to_string()),
            ("id/tls.key", id.1.to_string()),
        ]
    };
    let vol_dir = tempfile::tempdir().unwrap();
    let first = files((&one.cert_pem, &one.key_pem));
    let refs: Vec<(&str, &str)> = first.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let mut vol = SecretVolume::new(vol_dir.path(), &refs);
    let p = proxy_full(
        tempfile::tempdir().unwrap(),
        vol.path("pins.yaml"),
        true,
        |_, limits| limits.revoke_grace = Duration::from_millis(300),
    )
    .await;
    let mut update = |v: Vec<(&'static str, String)>| {
        let refs: Vec<(&str, &str)> = v.iter().map(|(n, c)| (*n, c.as_str())).collect();
        vol.update(&refs);
    };

    let mut keep_alive = ProxyConn::open(p.addr).await;
    let r = keep_alive.get(&format!("http://{PAY}/a"), &[]).await;
    let pin_of = |r: &Reply| {
        r.headers
            .get("x-client-pin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(pin_of(&r), Some(one.pin.to_string()), "{r:?}");
    let again = keep_alive.get(&format!("http://{PAY}/b"), &[]).await;
    assert_eq!(pin_of(&again), Some(one.pin.to_string()));
    let conns = up.connections.load(Ordering::SeqCst);
    let (h, mut old_ws) = websocket(&p, PAY).await;
    assert_eq!(
        header(&h, "x-client-pin"),
        Some(one.pin.to_string().as_str())
    );

    // Rotate: cert-manager renewed the Secret.
    update(files((&two.cert_pem, &two.key_pem)));
    let live = p.live.clone();
    wait_for("generation 2", || live.load().generation == 2).await;
    let r = keep_alive.get(&format!("http://{PAY}/c"), &[]).await;
    assert_eq!(pin_of(&r), Some(two.pin.to_string()), "{r:?}");
    assert!(
        up.connections.load(Ordering::SeqCst) > conns + 1,
        "the pooled connection made with the old certificate was reused"
    );
    assert_eq!(
        via_connect(&p, PAY, "/d").await.client_pin,
        Some(two.pin.to_string())
    );
    // The WebSocket made with the old identity ends after the grace.
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(5), old_ws.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "the old identity's WebSocket is still open: {end:?}"
    );

    // A certificate with another rotation's key: refused, last good kept.
    let failures = reloads(&p, "failure");
    update(files((&three.cert_pem, &two.key_pem)));
    let metrics = p.metrics.clone();
    wait_for("a failed reload", || {
        metrics.config_reloads.with_label_values(&["failure"]).get() > failures
    })
    .await;
    assert_eq!(p.live.load().generation, 2);
    let r = forward(&p, PAY, "/e").await;
    assert_eq!((r.status, r.client_pin), (200, Some(two.pin.to_string())));

    // Fixed: the matching pair applies.
    update(files((&three.cert_pem, &three.key_pem)));
    wait_for("generation 3", || live.load().generation == 3).await;
    let s = both(&p, PAY).await;
    assert_eq!(s.client_pin, Some(three.pin.to_string()), "{s:?}");
    assert_eq!(reloads(&p, "failure"), failures + 1);
    assert_eq!(reloads(&p, "success"), 2);
}

/// The identity Secret as its own volume beside the pins' (referred to as
/// `../identity/…`): its directory is watched and its swaps reload.
#[tokio::test]
async fn an_identity_volume_beside_the_pins_is_watched_and_read_where_it_is() {
    let server = server_pki(&[PAY]);
    let workload_ca = Authority::root("Workload CA", 0x0505);
    let (one, two) = (identity(&workload_ca, "one"), identity(&workload_ca, "two"));
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let (pins_dir, id_dir) = (root.path().join("pins"), root.path().join("identity"));
    std::fs::create_dir(&pins_dir).unwrap();
    std::fs::create_dir(&id_dir).unwrap();
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry(
            PAY,
            &[server.int.pin()],
            up.addr,
            "    client_cert: {cert: ../identity/tls.crt, key: ../identity/tls.key}\n"
        )
    );
    let ca = server.root_pem();
    let pins = SecretVolume::new(&pins_dir, &[("pins.yaml", &yaml), ("ca.pem", &ca)]);
    let mut id = SecretVolume::new(
        &id_dir,
        &[("tls.crt", &one.cert_pem), ("tls.key", &one.key_pem)],
    );
    let p = proxy_at(tempfile::tempdir().unwrap(), pins.path("pins.yaml"), true).await;
    assert_eq!(both(&p, PAY).await.client_pin, Some(one.pin.to_string()));
    id.update(&[("tls.crt", &two.cert_pem), ("tls.key", &two.key_pem)]);
    let live = p.live.clone();
    wait_for("generation 2", || live.load().generation == 2).await;
    assert_eq!(both(&p, PAY).await.client_pin, Some(two.pin.to_string()));
}

// === names: ===

const SPIFFE_ID: &str = "spiffe://example.org/ns/pay/sa/api";

/// host, pins, names, status, x-pinproxy-error, tls failure reason
type Case<'a> = (
    &'a str,
    &'a [Pin],
    &'a str,
    u16,
    Option<&'a str>,
    Option<&'a str>,
);

/// The server's certificate carries a SPIFFE ID, a DNS wildcard and one
/// host name; `names:` decides, instead of the host name, which it must
/// carry — and pins still apply.
#[tokio::test]
async fn names_match_spiffe_ids_exactly_or_by_prefix_and_replace_the_host_check() {
    let server = server_pki(&[SPIFFE_ID, "*.svc.internal", "carries.names.test"]);
    let up = upstream(server.chain(), server.key_der(), UpstreamOpts::new("named")).await;
    let pin = [server.int.pin()];
    let wrong_pin = [Pin::of_spki_der(
        &KeyPair::generate().unwrap().public_key_der(),
    )];
    let cases: &[Case] = &[
        // host, pins, names, status, x-pinproxy-error, tls failure reason
        (
            "exact.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/sa/api\"]",
            200,
            None,
            None,
        ),
        (
            "prefix.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/*\"]",
            200,
            None,
            None,
        ),
        (
            "domain.names.test",
            &pin,
            "[\"spiffe://example.org/*\"]",
            200,
            None,
            None,
        ),
        (
            "dns.names.test",
            &pin,
            "[api.svc.internal]",
            200,
            None,
            None,
        ),
        (
            "other.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/sa/other\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        (
            "otherns.names.test",
            &pin,
            "[\"spiffe://example.org/ns/payments/*\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        (
            "otherdomain.names.test",
            &pin,
            "[\"spiffe://example.com/*\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        (
            "deep.names.test",
            &pin,
            "[a.b.svc.internal]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        // The certificate carries this host, but names: replaces that check.
        (
            "carries.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/sa/other\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        // Without names: the host name is checked as ever.
        (
            "nonames.names.test",
            &pin,
            "",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        // Names matched, pins do not: still refused.
        (
            "pins.names.test",
            &wrong_pin,
            "[\"spiffe://example.org/ns/pay/sa/api\"]",
            502,
            Some("pin-mismatch"),
            Some("pin-mismatch"),
        ),
    ];
    let mut yaml = String::from("version: 1\nhosts:\n");
    for (host, pins, names, ..) in cases {
        let extra = if names.is_empty() {
            String::new()
        } else {
            format!("    names: {names}\n")
        };
        yaml.push_str(&entry(host, pins, up.addr, &extra));
    }
    let p = proxy(&yaml, &[("ca.pem", server.root_pem())]).await;
    for (host, _, _, status, error, reason) in cases {
        let s = both(&p, host).await;
        assert_eq!(
            (s.status, s.error.as_deref()),
            (*status, *error),
            "{host}: {s:?}"
        );
        if let Some(reason) = reason {
            assert_eq!(p.tls_failures(host, reason), 2, "{host}: {reason}");
        } else {
            assert!(s.body.contains("upstream=named"), "{host}: {s:?}");
        }
        if *error == Some("untrusted-certificate") {
            assert!(
                s.body.contains("not valid for this host's name"),
                "{host}: {s:?}"
            );
        }
    }
}

// === CRLs ===

const CRL_HOST: &str = "api.crl.test";

/// CRLs on the validated path: one revoking the leaf, then one revoking
/// the intermediate, are refused as untrusted-certificate with metric
/// reason revoked; fresh CRLs that revoke neither pass. An expired CRL
/// keeps refusing what it lists (crl_policy: use-expired, the default) and
/// passes the rest; refuse-expired refuses, reason crl-expired.
#[tokio::test]
async fn crls_refuse_a_revoked_leaf_or_intermediate_and_fresh_ones_pass() {
    let server = server_pki(&[CRL_HOST]);
    let up = upstream(server.chain(), server.key_der(), UpstreamOpts::new("crl")).await;
    let later = OffsetDateTime::now_utc() + time::Duration::days(7);
    let earlier = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &server.root_pem());
    let pins_path = dir.path().join("pins.yaml");
    let set = |crls: &[(&str, String)], extra: &str| {
        let mut names = Vec::new();
        for (name, text) in crls {
            write(dir.path(), name, text);
            names.push(name.to_string());
        }
        let yaml = format!(
            "version: 1\nhosts:\n{}",
            entry(
                CRL_HOST,
                &[server.int.pin()],
                up.addr,
                &format!("    crls: [{}]\n{extra}", names.join(", "))
            )
        );
        std::fs::write(&pins_path, yaml).unwrap();
    };
    set(&[("leaf.crl", server.int.crl(&[LEAF_SERIAL], later))], "");
    let p = proxy_at(dir, pins_path.clone(), false).await;
    let revoked = |p: &Proxy| p.tls_failures(CRL_HOST, "revoked");

    let s = both(&p, CRL_HOST).await;
    assert_eq!(
        (s.status, s.error.as_deref()),
        (502, Some("untrusted-certificate")),
        "{s:?}"
    );
    assert!(
        s.body.contains("revoked by one of this host's crls"),
        "{s:?}"
    );
    assert_eq!(revoked(&p), 2);
    assert_eq!(p.requests(CRL_HOST, "untrusted-certificate"), 2);

    let dir = p.dir.path().to_path_buf();
    let set = |crls: &[(&str, String)], extra: &str| {
        let mut names = Vec::new();
        for (name, text) in crls {
            write(&dir, name, text);
            names.push(name.to_string());
        }
        let yaml = format!(
            "version: 1\nhosts:\n{}",
            entry(
                CRL_HOST,
                &[server.int.pin()],
                up.addr,
                &format!("    crls: [{}]\n{extra}", names.join(", "))
            )
        );
        std::fs::write(dir.join("pins.yaml"), yaml).unwrap();
    };
    // The root revokes the intermediate; the intermediate's CRL is clean.
    set(
        &[
            ("int.crl", server.int.crl(&[0x9999], later)),
            ("root.crl", server.root.crl(&[INT_SERIAL], later)),
        ],
        "",
    );
    p.reloader.reload().await.unwrap();
    let s = both(&p, CRL_HOST).await;
    assert_eq!(
        (s.status, s.error.as_deref()),
        (502, Some("untrusted-certificate")),
        "{s:?}"
    );
    assert_eq!(revoked(&p), 4);

    // Fresh CRLs revoking neither: through.
    set(
        &[
            ("int.crl", server.int.crl(&[0x9999], later)),
            ("root.crl", server.root.crl(&[0x8888], later)),
        ],
        "",
    );
    p.reloader.reload().await.unwrap();
    let s = both(&p, CRL_HOST).await;
    assert_eq!((s.status, s.error.as_deref()), (200, None), "{s:?}");
    assert_eq!(revoked(&p), 4);
    let next = p
        .metrics
        .crl_next_update
        .with_label_values(&[CRL_HOST])
        .get();
    assert_eq!(next as i64, later.unix_timestamp());

    // Expired CRLs, default policy: what they list stays refused...
    set(
        &[("stale.crl", server.int.crl(&[LEAF_SERIAL], earlier))],
        "",
    );
    p.reloader.reload().await.unwrap();
    assert!(
        p.live.load().policy.warnings[0]
            .to_string()
            .contains("expired"),
        "{:?}",
        p.live.load().policy.warnings
    );
    assert_eq!(both(&p, CRL_HOST).await.status, 502);
    assert_eq!(revoked(&p), 6);
    // ...and the rest passes.
    set(&[("stale.crl", server.int.crl(&[0x9999], earlier))], "");
    p.reloader.reload().await.unwrap();
    assert_eq!(both(&p, CRL_HOST).await.status, 200);
    // refuse-expired: refused, and said why.
    set(
        &[("stale.crl", server.int.crl(&[0x9999], earlier))],
        "    crl_policy: refuse-expired\n",
    );
    p.reloader.reload().await.unwrap();
    let s = both(&p, CRL_HOST).await;
    assert_eq!(
        (s.status, s.error.as_deref()),
        (502, Some("untrusted-certificate")),
        "{s:?}"
    );
    assert!(s.body.contains("crl_policy: refuse-expired"), "{s:?}");
    assert_eq!(p.tls_failures(CRL_HOST, "crl-expired"), 2);
    assert_eq!(revoked(&p), 6);
}

// === **. entries ===

/// `**.cdn.test` covers the apex and every depth; exact entries win, then
/// `*.` (one label), then `**.` from the longest suffix.
#[tokio::test]
async fn any_depth_entries_cover_the_apex_and_every_depth_after_exact_and_one_label() {
    let sans = [
        "cdn.test",
        "*.cdn.test",
        "*.b.cdn.test",
        "*.q.b.cdn.test",
        "*.n.cdn.test",
    ];
    let server = server_pki(&sans);
    let mut addrs = Vec::new();
    for name in ["deep", "deeper", "one", "exact"] {
        addrs.push(
            upstream(server.chain(), server.key_der(), UpstreamOpts::new(name))
                .await
                .addr,
        );
    }
    let pin = [server.int.pin()];
    let yaml = format!(
        "version: 1\nhosts:\n{}{}{}{}",
        entry("**.cdn.test", &pin, addrs[0], ""),
        entry("**.b.cdn.test", &pin, addrs[1], ""),
        entry("*.cdn.test", &pin, addrs[2], ""),
        entry("x.cdn.test", &pin, addrs[3], ""),
    );
    let p = proxy(&yaml, &[("ca.pem", server.root_pem())]).await;
    for (host, reached, entry) in [
        ("cdn.test", "deep", "**.cdn.test"),
        ("m.n.cdn.test", "deep", "**.cdn.test"),
        ("y.cdn.test", "one", "*.cdn.test"),
        ("b.cdn.test", "one", "*.cdn.test"),
        ("x.cdn.test", "exact", "x.cdn.test"),
        ("q.b.cdn.test", "deeper", "**.b.cdn.test"),
        ("r.q.b.cdn.test", "deeper", "**.b.cdn.test"),
    ] {
        let before = p.requests(entry, "ok");
        let s = both(&p, host).await;
        assert_eq!(s.status, 200, "{host}: {s:?}");
        assert!(
            s.body.contains(&format!("upstream={reached} ")),
            "{host}: {s:?}"
        );
        assert_eq!(
            p.requests(entry, "ok"),
            before + 2,
            "{host} counted under {entry}"
        );
    }
    for miss in ["cdn.test.evil.test", "xcdn.test", "test"] {
        let r = forward(&p, miss, "/").await;
        assert_eq!(
            (r.status, r.error.as_deref()),
            (403, Some("host-not-allowed")),
            "{miss}"
        );
        let (status, _, _) = connect_status(p.addr, &format!("{miss}:443")).await;
        assert_eq!(status, 403, "{miss}");
    }
}

// === pinproxy check ===

fn pinproxy(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(args)
        .output()
        .expect("run pinproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `check` names the host and field of every identity problem, and
/// never prints a key.
#[test]
fn check_reports_identity_problems_by_host_and_field() {
    let server = server_pki(&[PAY]);
    let workload_ca = Authority::root("Workload CA", 0x0606);
    let (a, b) = (identity(&workload_ca, "a"), identity(&workload_ca, "b"));
    let old_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "old");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = OffsetDateTime::now_utc() - time::Duration::days(90);
    p.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let old = p
        .signed_by(&old_key, &workload_ca.cert, &workload_ca.key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("ca.pem", server.root_pem()),
        ("a.crt", a.cert_pem.clone()),
        ("a.key", a.key_pem.clone()),
        ("b.key", b.key_pem.clone()),
        ("old.crt", old.pem()),
        ("old.key", old_key.serialize_pem()),
        (
            "stale.crl",
            server
                .int
                .crl(&[], OffsetDateTime::now_utc() - time::Duration::days(1)),
        ),
    ] {
        write(dir.path(), name, &text);
    }
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let pin = [server.int.pin(), server.root.pin()];
    let bad = format!(
        "version: 1\nhosts:\n{}{}{}{}",
        entry(
            "mismatch.test",
            &pin,
            addr,
            "    client_cert: {cert: a.crt, key: b.key}\n"
        ),
        entry("unreadable.test", &pin, addr, "    crls: [missing.crl]\n"),
        entry(
            "names.test",
            &pin,
            addr,
            "    names: [\"not a name\", \"spiffe://example.org/a/*/b\"]\n"
        ),
        entry(
            "nocert.test",
            &pin,
            addr,
            "    client_cert: {cert: nope.crt, key: a.key}\n"
        ),
    );
    let path = write(dir.path(), "bad.yaml", &bad);
    let (code, out) = pinproxy(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "host \"mismatch.test\": client_cert: the key in",
        "b.key does not match the certificate in",
        "host \"unreadable.test\": crls[0]: cannot read",
        "host \"names.test\": names[0]: \"not a name\" is neither a DNS name nor a URI",
        "host \"names.test\": names[1]:",
        "host \"nocert.test\": client_cert: cannot read",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    for key in [&a.key_pem, &b.key_pem] {
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!out.contains(&body[..32]), "a key in check's output");
    }
    // Expired client certificate and CRL: warnings, exit 0.
    let warn = format!(
        "version: 1\nhosts:\n{}{}",
        entry(
            "old.test",
            &pin,
            addr,
            "    client_cert: {cert: old.crt, key: old.key}\n"
        ),
        entry("stale.test", &pin, addr, "    crls: [stale.crl]\n"),
    );
    let path = write(dir.path(), "warn.yaml", &warn);
    let (code, out) = pinproxy(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: line 7: host \"old.test\": client_cert:")
            && out.contains("the client certificate expired on"),
        "{out}"
    );
    assert!(
        out.contains("host \"stale.test\": crls:") && out.contains("the CRL expired"),
        "{out}"
    );
    assert!(out.contains("ok (2 hosts)"), "{out}");
}

/// `check --live` says per host whether the server asked for a client
/// certificate and whether the handshake with it succeeded.
#[tokio::test]
async fn check_live_reports_whether_a_client_certificate_was_asked_for_and_accepted() {
    let server = server_pki(&["live.mtls.test"]);
    let workload_ca = Authority::root("Workload CA", 0x0707);
    let stranger_ca = Authority::root("Another CA", 0x0808);
    let (good, stranger) = (
        identity(&workload_ca, "good"),
        identity(&stranger_ca, "stranger"),
    );
    let strict = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let plain = upstream(server.chain(), server.key_der(), UpstreamOpts::new("plain")).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("ca.pem", server.root_pem()),
        ("good.crt", good.cert_pem.clone()),
        ("good.key", good.key_pem.clone()),
        ("stranger.crt", stranger.cert_pem.clone()),
        ("stranger.key", stranger.key_pem.clone()),
    ] {
        write(dir.path(), name, &text);
    }
    let pin = [server.int.pin(), server.root.pin()];
    let names = "    names: [live.mtls.test]\n";
    let with = |c: &str| format!("{names}    client_cert: {{cert: {c}.crt, key: {c}.key}}\n");
    let yaml = format!(
        "version: 1\nhosts:\n{}{}{}{}",
        entry("good.test", &pin, strict.addr, &with("good")),
        entry("bare.test", &pin, strict.addr, names),
        entry("stranger.test", &pin, strict.addr, &with("stranger")),
        entry("unasked.test", &pin, plain.addr, &with("good")),
    );
    let path = write(dir.path(), "pins.yaml", &yaml);
    let (code, out) =
        tokio::task::spawn_blocking(move || pinproxy(&["check", "--live", path.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(code, 1, "{out}");
    let line = |host: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{host}: client certificate:")))
            .unwrap_or_else(|| panic!("no client certificate line for {host}:\n{out}"))
            .to_string()
    };
    let l = line("good.test");
    assert!(
        l.contains("the server asked for one; the handshake presenting")
            && l.contains(&good.pin.to_string())
            && l.ends_with("succeeded"),
        "{l}"
    );
    let l = line("bare.test");
    assert!(
        l.contains("REQUIRED") && l.contains("add client_cert"),
        "{l}"
    );
    let l = line("stranger.test");
    assert!(
        l.contains("REFUSED") && l.contains(&stranger.pin.to_string()),
        "{l}"
    );
    let l = line("unasked.test");
    assert!(l.contains("did not ask for one"), "{l}");
    // The chain verdicts are still there.
    assert!(out.contains("good.test: ok, matches"), "{out}");
}
