//! Workload identity upstream (docs/reference.md, "Host fields"; issue 13):
//! client certificates presented to servers that *require* them and report the
//! identity they saw; `names:` (DNS and SPIFFE URI SANs) instead of the host
//! name; CRLs on the validated path; `**.` entries. Every case through the
//! forward path and through CONNECT interception.
//!
//! One test binary: main.rs holds the workload PKI and the clients;
//! client_certs.rs, names.rs, crls.rs and check.rs the cases.

#[path = "../support/mod.rs"]
mod support;

mod check;
mod client_certs;
mod crls;
mod names;

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
use support::proxy::TestProxy;
use support::*;

/// The host whose entry presents a client certificate.
const PAY: &str = "pay.mtls.test";

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
    let mut cfg = ClientConfig::builder_with_provider(pinproxy::tls::provider())
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
