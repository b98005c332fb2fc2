//! Name lookups are bounded (docs/reference.md, `--max-dns-lookups`): under
//! `unlisted: deny` with a passthrough CIDR every unlisted name is resolved
//! before it is refused, and names whose DNS never answers must neither
//! pile up lookups (getaddrinfo holds a thread each) nor delay the lookup
//! of a host the pinset lists.

mod support;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use support::proxy::TestProxy;
use support::*;

/// getaddrinfo as pinproxy meets it: a lookup holds one of `threads`
/// worker threads until the resolver answers (tokio's blocking pool, at a
/// test's scale) — also when the one who asked stopped waiting: it runs on
/// its own task, as on its own thread — and names under `slow.test` are
/// never answered. Counts the lookups asked and not answered.
#[derive(Debug)]
struct BlackHole {
    threads: Arc<Semaphore>,
    answer: IpAddr,
    unanswered: Arc<AtomicUsize>,
}

impl pinproxy::upstream::Resolve for BlackHole {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        let hang = name.ends_with(".slow.test");
        let (threads, answer) = (self.threads.clone(), self.answer);
        let unanswered = self.unanswered.clone();
        unanswered.fetch_add(1, Ordering::SeqCst);
        let thread = tokio::spawn(async move {
            let _thread = threads.acquire_owned().await;
            if hang {
                std::future::pending::<()>().await;
            }
            unanswered.fetch_sub(1, Ordering::SeqCst);
            vec![SocketAddr::new(answer, port)]
        });
        Box::pin(async move { thread.await.map_err(std::io::Error::other) })
    }
}

/// The reviewer's F2 at a test's scale: 300 requests for black-holed
/// names, a pool of 64 threads; then a pinned host without `address:`.
#[tokio::test]
async fn black_holed_unlisted_names_do_not_starve_a_pinned_hosts_lookup() {
    let pki = Pki::new(&["pinned.test"]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let port = up.addr.port();
    let yaml = format!(
        "version: 1\ndefaults:\n  unlisted: deny\npassthrough: [10.96.0.0/12]\nhosts:\n  \
         pinned.test:\n    pins: [{}]\n    trust: ca.pem\n    ports: [{port}]\n",
        pki.int.pin()
    );
    let unanswered = Arc::new(AtomicUsize::new(0));
    let resolver = Arc::new(BlackHole {
        threads: Arc::new(Semaphore::new(64)),
        answer: up.addr.ip(),
        unanswered: unanswered.clone(),
    });
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .resolver(resolver)
        .timeouts(|t| t.connect = Duration::from_secs(2))
        .run()
        .await;

    // Held open, never read: each is refused only after its lookup.
    let mut held = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(p.addr).await.expect("proxy listens");
        let req = format!("GET http://n{i}.slow.test/ HTTP/1.1\r\nHost: n{i}.slow.test\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("sent");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flood = unanswered.load(Ordering::SeqCst);

    let start = Instant::now();
    let r = get(p.addr, &format!("http://pinned.test:{port}/")).await;
    let took = start.elapsed();
    println!("lookups of denied names unanswered: {flood}; pinned.test: {r:?} after {took:?}");
    assert_eq!(r.status, 200, "pinned.test during the flood: {r:?}");
    assert!(took < Duration::from_secs(1), "pinned.test waited {took:?}");
    // The unlisted share of the default cap (32 less a quarter).
    assert!(flood <= 24, "{flood} lookups of unlisted names in flight");
    // What an operator sees: the unlisted share of the slots is taken.
    let metrics = p.admin_get("/metrics").await.body;
    let sample = |name: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    assert_eq!(
        (
            sample("pinproxy_dns_lookups_active"),
            sample("pinproxy_dns_lookups_limit")
        ),
        (Some(24.0), Some(32.0)),
        "lookups holding a slot, and the cap"
    );
    drop(held);
}
