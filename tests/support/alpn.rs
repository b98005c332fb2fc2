//! An upstream whose ALPN offer can be switched from h2 to HTTP/1.1 only,
//! as when a server is redeployed behind another front end: the switch
//! also closes the connections it has open, gracefully (GOAWAY). It
//! answers each handshake after a delay (a distant server), so requests
//! that race for a first connection reliably overlap.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::upstream::upstream_handler;
use super::Pki;

pub struct AlpnSwitch {
    pub addr: std::net::SocketAddr,
    /// Connections accepted so far, each a TLS handshake begun.
    pub handshakes: Arc<AtomicUsize>,
    h1_only: Arc<AtomicBool>,
    restarts: watch::Sender<u64>,
}

impl AlpnSwitch {
    /// From now on, offer only HTTP/1.1; close the open connections.
    pub fn stop_offering_h2(&self) {
        self.h1_only.store(true, Ordering::SeqCst);
        self.restarts.send_modify(|n| *n += 1);
    }
}

fn config(pki: &Pki, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    let (count, only) = (handshakes.clone(), h1_only.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
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
    }
}
