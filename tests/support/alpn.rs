//! An upstream whose ALPN offer can be switched from h2 to HTTP/1.1 only,
//! as when a server is redeployed behind another front end: the switch
//! also closes the connections it has open, gracefully (GOAWAY). It
//! answers each handshake after a delay (a distant server), so requests
//! that race for a first connection reliably overlap. It can also stop
//! answering connects altogether, as a host gone dark behind a firewall.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};

use super::upstream::upstream_handler;
use super::Pki;

pub struct AlpnSwitch {
    pub addr: std::net::SocketAddr,
    /// Connections accepted so far, each a TLS handshake begun.
    pub handshakes: Arc<AtomicUsize>,
    h1_only: Arc<AtomicBool>,
    restarts: watch::Sender<u64>,
    go_dark: std::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

impl AlpnSwitch {
    /// From now on, offer only HTTP/1.1; close the open connections.
    pub fn stop_offering_h2(&self) {
        self.h1_only.store(true, Ordering::SeqCst);
        self.restarts.send_modify(|n| *n += 1);
    }

    /// From now on, connects to `addr` are never answered (the SYN is
    /// dropped, the client's connect waits until its own timeout): the
    /// listener is replaced by one whose accept queue is full and never
    /// drained. Open connections close gracefully (GOAWAY).
    pub async fn stop_answering_connects(&self) {
        let (done, dark) = oneshot::channel();
        let go = self.go_dark.lock().unwrap().take();
        go.expect("not dark yet").send(done).unwrap();
        dark.await.unwrap();
        self.restarts.send_modify(|n| *n += 1);
    }
}

/// A listener on `addr` (the port just released) whose accept queue is
/// full: with a backlog of 0 the kernel queues one connection, and drops
/// every later SYN while that one waits to be accepted, which it never is.
/// Returned to be kept open; checked dark before it is.
async fn full_backlog(addr: std::net::SocketAddr) -> (TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(0).unwrap();
    let mut queued = Vec::new();
    loop {
        let connect = TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(Ok(tcp)) => queued.push(tcp),
            Ok(Err(e)) => panic!("connect to the full listener: {e}"),
            // Dark: this SYN was dropped.
            Err(_) => break,
        }
        assert!(queued.len() < 16, "the accept queue never filled");
    }
    (listener, queued)
}

fn config(pki: &Pki, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let provider = pinproxy::tls::provider();
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain(), pki.leaf.key_der())
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Serves `pki`'s chain on 127.0.0.1, offering h2 (if `h2`) and HTTP/1.1
/// until [`AlpnSwitch::stop_offering_h2`]; each TLS handshake starts
/// `delay` after its connection was accepted.
pub async fn alpn_upstream(pki: &Pki, h2: bool, delay: Duration) -> AlpnSwitch {
    let both = tokio_rustls::TlsAcceptor::from(config(pki, &[b"h2", b"http/1.1"]));
    let h1 = tokio_rustls::TlsAcceptor::from(config(pki, &[b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let h1_only = Arc::new(AtomicBool::new(!h2));
    let (restarts, restarted) = watch::channel(0u64);
    let (go_dark, mut dark) = oneshot::channel::<oneshot::Sender<()>>();
    let (count, only) = (handshakes.clone(), h1_only.clone());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                done = &mut dark => {
                    let Ok(done) = done else {
                        return;
                    };
                    drop(listener);
                    let _dark = full_backlog(addr).await;
                    let _ = done.send(());
                    // Kept (dark) for the rest of the test.
                    std::future::pending::<()>().await;
                    return;
                }
            };
            let Ok((tcp, _)) = accepted else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = if only.load(Ordering::SeqCst) {
                h1.clone()
            } else {
                both.clone()
            };
            let mut restarted = restarted.clone();
            restarted.borrow_and_update();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req| upstream_handler("switch", req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serve = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                tokio::pin!(serve);
                tokio::select! {
                    _ = serve.as_mut() => return,
                    _ = restarted.changed() => {}
                }
                serve.as_mut().graceful_shutdown();
                let _ = serve.await;
            });
        }
    });
    AlpnSwitch {
        addr,
        handshakes,
        h1_only,
        restarts,
        go_dark: std::sync::Mutex::new(Some(go_dark)),
    }
}
