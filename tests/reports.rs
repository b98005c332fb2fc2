//! Failure reports (docs/reference.md, "Failure reports") against a real
//! collector on 127.0.0.1: one well-formed report per refused handshake within
//! the rate limit, a PEM chain that parses and whose pins match, and a
//! collector that hangs or refuses never slowing or failing a request.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pinproxy::control::reports::{Options, Pod};
use pinproxy::policy::pin::Pin;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use support::proxy::TestProxy;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How the test collector behaves.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers 204 and hands each report to the test.
    Accept,
    /// Reads the request and never answers.
    Hang,
}

struct Collector {
    addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<(http::HeaderMap, Bytes)>,
    /// Connections accepted.
    hits: Arc<AtomicUsize>,
}

async fn collector(behaviour: Behaviour, tls: Option<rustls::ServerConfig>) -> Collector {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, reports) = mpsc::unbounded_channel();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        if let Behaviour::Hang = behaviour {
                            std::future::pending::<()>().await;
                        }
                        let _ = tx.send((parts.headers, body));
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    Collector {
        addr,
        reports,
        hits,
    }
}

fn pod() -> Pod {
    Pod {
        name: Some("web-7d9f".into()),
        namespace: Some("shop".into()),
    }
}

/// A proxy on `yaml` whose reports are tuned by `tune`.
async fn proxy_reporting(
    yaml: &str,
    files: &[(&str, String)],
    tune: impl FnOnce(&mut Options) + Send + 'static,
) -> Proxy {
    TestProxy::builder()
        .pinset(yaml)
        .files(files)
        .reports(|o| {
            o.pod = pod();
            tune(o)
        })
        .run()
        .await
}

fn reports(p: &Proxy, result: &str) -> u64 {
    p.metrics.reports.with_label_values(&[result]).get()
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

fn pins_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn one_report_per_refused_handshake_within_the_rate_limit() {
    let pki = Pki::new(&["api.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let mut c = collector(Behaviour::Accept, None).await;
    // The server's real intermediate is only in next_pins: pins fail.
    let wrong = root("Somebody Else").pin();
    let yaml = pinset(
        "api.test",
        &[wrong],
        &format!(
            "    next_pins: [{}]\n    report_uri: http://{}/pin-failures?token=t\n",
            pki.int.pin(),
            c.addr
        ),
        up.addr,
    );
    let p = proxy_reporting(&yaml, &[("ca.pem", pki.root.pem())], |o| {
        o.burst = 3;
        o.window = Duration::from_secs(3600);
    })
    .await;
    for _ in 0..5 {
        let r = get(p.addr, "http://api.test/x").await;
        assert_eq!((r.status.as_u16(), r.error()), (502, Some("pin-mismatch")));
    }
    assert_eq!(p.mismatches("api.test", "enforce"), 5);
    eventually("3 reports sent", || reports(&p, "sent") == 3).await;
    assert_eq!(
        reports(&p, "limited"),
        2,
        "over the limit of 3 per host+outcome"
    );
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(c.reports.recv().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        c.reports.try_recv().is_err(),
        "exactly one report per refusal within the limit"
    );

    let chain = pki.chain();
    for (headers, body) in &got {
        assert_eq!(headers["content-type"], "application/json");
        let r: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(r["type"], "pin-failure");
        assert_eq!(r["host"], "api.test");
        assert_eq!(r["port"], 443);
        assert_eq!(r["entry"], "api.test");
        assert_eq!(r["mode"], "enforce");
        assert_eq!(r["outcome"], "mismatch");
        assert_eq!(r["reason"], "pin-mismatch");
        assert_eq!(pins_of(&r["expected_pins"]), [wrong.to_string()]);
        assert_eq!(pins_of(&r["next_pins"]), [pki.int.pin().to_string()]);
        assert_eq!(
            pins_of(&r["validated_path_pins"]),
            [pki.leaf.pin(), pki.int.pin(), pki.root.pin()].map(|p| p.to_string())
        );
        assert_eq!(r["pod"]["name"], "web-7d9f");
        assert_eq!(r["pod"]["namespace"], "shop");
        assert_eq!(r["generation"], 1);
        assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
        assert!(time::OffsetDateTime::parse(
            r["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
        // The PEM parses back to exactly the chain the server sent, and
        // its pins are the ones reported.
        let pem: Vec<CertificateDer<'static>> = r["presented_chain_pem"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| CertificateDer::from_pem_slice(b.as_str().unwrap().as_bytes()).unwrap())
            .collect();
        assert_eq!(pem, chain);
        let pem_pins: Vec<String> = pem
            .iter()
            .map(|c| Pin::of_certificate(c).unwrap().to_string())
            .collect();
        assert_eq!(pem_pins, pins_of(&r["validated_path_pins"])[..2]);
    }
    if let Some((_, body)) = got.first() {
        let pretty: Value = serde_json::from_slice(body).unwrap();
        eprintln!(
            "a report as received:\n{}",
            serde_json::to_string_pretty(&pretty).unwrap()
        );
    }
}

#[tokio::test]
async fn untrusted_chains_and_report_mode_mismatches_are_reported_over_verified_https() {
    // The collector speaks HTTPS with a certificate from the test CA, which
    // defaults.trust names: reports validate it as any client would.
    let pki = Pki::new(&["api.test"]);
    let collector_leaf = leaf(&["127.0.0.1"], &pki.int);
    let tls = rustls::ServerConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![collector_leaf.cert.clone(), pki.int.der()],
            collector_leaf.key_der(),
        )
        .unwrap();
    let mut c = collector(Behaviour::Accept, Some(tls)).await;
    let audit = leaf(&["audit.test"], &pki.int);
    let up = upstream(
        vec![audit.cert.clone(), pki.int.der()],
        audit.key_der(),
        UpstreamOpts::new("audit"),
    )
    .await;
    // Another CA altogether (distinct names, so webpki finds no issuer).
    let rogue_root = root("Rogue Root");
    let rogue_int = intermediate("Rogue Intermediate", &rogue_root, None);
    let rogue_leaf = leaf(&["rogue.test"], &rogue_int);
    let bad = upstream(
        vec![rogue_leaf.cert.clone(), rogue_int.der()],
        rogue_leaf.key_der(),
        UpstreamOpts::new("rogue"),
    )
    .await;
    let yaml = format!(
        "version: 1\ndefaults:\n  trust: ca.pem\n  report_uri: https://{}/r\nhosts:\n  audit.test:\n    pins: [{}]\n    mode: report\n    address: {}\n  rogue.test:\n    pins: [{}]\n    address: {}\n",
        c.addr,
        root("Other").pin(),
        up.addr,
        rogue_int.pin(),
        bad.addr
    );
    let p = proxy_reporting(&yaml, &[("ca.pem", pki.root.pem())], |_| {}).await;
    let r = get(p.addr, "http://audit.test/").await;
    assert_eq!(r.status, 200, "report mode lets it through");
    let r = get(p.addr, "http://rogue.test/").await;
    assert_eq!(r.error(), Some("untrusted-certificate"));
    let mut by_host = std::collections::HashMap::new();
    for _ in 0..2 {
        let (_, body) = tokio::time::timeout(Duration::from_secs(10), c.reports.recv())
            .await
            .expect("a report in time")
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        by_host.insert(v["host"].as_str().unwrap().to_string(), v);
    }
    let audit = &by_host["audit.test"];
    assert_eq!(
        (&audit["mode"], &audit["outcome"], &audit["reason"]),
        (
            &Value::from("report"),
            &Value::from("reported-mismatch"),
            &Value::from("pin-mismatch")
        )
    );
    let rogue_report = &by_host["rogue.test"];
    assert_eq!(rogue_report["outcome"], "untrusted");
    assert_eq!(rogue_report["reason"], "unknown-issuer");
    assert_eq!(
        pins_of(&rogue_report["validated_path_pins"]),
        Vec::<String>::new()
    );
    assert_eq!(
        pins_of(&rogue_report["expected_pins"]),
        [rogue_int.pin().to_string()]
    );
    assert_eq!(
        rogue_report["presented_chain_pem"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    eventually("both counted as sent", || reports(&p, "sent") == 2).await;
}

/// The latencies of `n` refused requests, each on a new connection.
async fn refused_latencies(p: &Proxy, n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        let r = get(p.addr, &format!("http://api.test/{i}")).await;
        out.push(start.elapsed());
        assert_eq!(r.error(), Some("pin-mismatch"), "every request is answered");
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `with` is no more than the median of `without` plus
/// noise: three times it, plus 50 ms.
fn assert_within_noise(without: &[Duration], with: &[Duration]) {
    let (base, seen) = (median(without.to_vec()), median(with.to_vec()));
    assert!(
        seen <= base * 3 + Duration::from_millis(50),
        "median latency {seen:?} with the collector, {base:?} without"
    );
}

#[tokio::test]
async fn a_hanging_collector_never_holds_a_request() {
    let pki = Pki::new(&["api.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let c = collector(Behaviour::Hang, None).await;
    let files = [("ca.pem", pki.root.pem())];
    let wrong = [root("Other").pin()];
    let baseline = TestProxy::builder()
        .pinset(&pinset("api.test", &wrong, "", up.addr))
        .files(&files)
        .run()
        .await;
    // One worker, a queue of two and a 60 s attempt timeout: were a request
    // to wait for its report, it would wait past the client's 20 s limit.
    let extra = format!("    report_uri: http://{}/r\n", c.addr);
    let p = proxy_reporting(&pinset("api.test", &wrong, &extra, up.addr), &files, |o| {
        o.queue = 2;
        o.workers = 1;
        o.timeout = Duration::from_secs(60);
        o.attempts = 1;
        o.burst = 1000;
    })
    .await;
    let without = refused_latencies(&baseline, 20).await;
    let with = refused_latencies(&p, 20).await;
    eprintln!(
        "refused request latency, median (max): no collector {:?} ({:?}), hanging collector {:?} ({:?})",
        median(without.clone()),
        without.iter().max().unwrap(),
        median(with.clone()),
        with.iter().max().unwrap()
    );
    // Far below the collector's hang: no request waited for its report.
    assert!(with.iter().all(|d| *d < Duration::from_secs(10)));
    // And no slower than without a collector, beyond noise (this machine
    // runs other builds: a generous margin, still far below one attempt).
    assert_within_noise(&without, &with);
    eventually("the collector got its first report", || {
        c.hits.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(reports(&p, "sent"), 0);
    assert_eq!(
        c.hits.load(Ordering::SeqCst),
        1,
        "one worker, stuck on its one delivery"
    );
    // 20 offered: one in flight, at most one held by the worker waiting
    // for a slot, two queued; the rest dropped.
    let dropped = reports(&p, "dropped");
    assert!((16..=18).contains(&dropped), "dropped {dropped}");
}

#[tokio::test]
async fn a_refusing_collector_counts_failures_after_bounded_retries() {
    let pki = Pki::new(&["api.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    // A port nothing listens on: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let files = [("ca.pem", pki.root.pem())];
    let wrong = [root("Other").pin()];
    let baseline = TestProxy::builder()
        .pinset(&pinset("api.test", &wrong, "", up.addr))
        .files(&files)
        .run()
        .await;
    let extra = format!("    report_uri: http://{closed}/r\n");
    let p = proxy_reporting(&pinset("api.test", &wrong, &extra, up.addr), &files, |o| {
        o.attempts = 3;
        o.backoff = Duration::from_millis(20);
    })
    .await;
    let without = refused_latencies(&baseline, 4).await;
    let with = refused_latencies(&p, 4).await;
    assert_within_noise(&without, &with);
    eventually("4 reports failed", || reports(&p, "failed") == 4).await;
    assert_eq!(reports(&p, "sent"), 0);
    assert_eq!(reports(&p, "limited"), 0);
}

/// A collector that answers as Python's `http.server` does: HTTP/1.0,
/// then closes the connection. Hands each body to the test.
async fn closing_collector() -> Collector {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, reports) = mpsc::unbounded_channel();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, length) = loop {
                    let n = tcp.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head + length {
                    let n = tcp.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the body ended early");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = Bytes::copy_from_slice(&buf[head..head + length]);
                let _ = tx.send((http::HeaderMap::new(), body));
                tcp.write_all(
                    b"HTTP/1.0 204 No Content\r\nServer: BaseHTTP/0.6 Python/3.12\r\n\r\n",
                )
                .await
                .unwrap();
                let _ = tcp.shutdown().await;
            });
        }
    });
    Collector {
        addr,
        reports,
        hits,
    }
}

#[tokio::test]
async fn a_collector_that_answers_and_closes_gets_each_report_once() {
    let pki = Pki::new(&["api.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let mut c = closing_collector().await;
    let extra = format!("    report_uri: http://{}/r\n", c.addr);
    let p = proxy_reporting(
        &pinset("api.test", &[root("Other").pin()], &extra, up.addr),
        &[("ca.pem", pki.root.pem())],
        |o| o.backoff = Duration::from_millis(20),
    )
    .await;
    refused_latencies(&p, 3).await;
    eventually("3 reports sent", || reports(&p, "sent") == 3).await;
    for _ in 0..3 {
        let (_, body) = c.reports.recv().await.unwrap();
        let r: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(r["type"], "pin-failure");
    }
    assert_eq!(reports(&p, "failed"), 0);
    assert_eq!(
        c.hits.load(Ordering::SeqCst),
        3,
        "a delivered report is not retried"
    );
}

#[tokio::test]
async fn a_report_is_never_sent_through_pinproxy_itself() {
    let pki = Pki::new(&["api.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!("    report_uri: http://{listen}/r\n");
    let p = TestProxy::builder()
        .pinset(&pinset("api.test", &[root("Other").pin()], &extra, up.addr))
        .file("ca.pem", pki.root.pem())
        .listen(listen)
        .reports(|o| o.backoff = Duration::from_millis(10))
        .run()
        .await;
    assert_eq!(p.addr, listen);
    refused_latencies(&p, 1).await;
    eventually("the report failed", || reports(&p, "failed") == 1).await;
    // Had it reached the proxy listener, it would be a refused request.
    assert_eq!(p.denied("bad-request"), 0);
}
