//! Hostile upstreams (the handler is the test's own code) and a resolver
//! the test controls.

use super::*;

/// A TLS server whose connection handler is the test's own code.
pub async fn raw_tls_upstream<F, Fut>(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    handler: F,
) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let provider = pinproxy::tls::provider();
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handler(tls).await;
                }
            });
        }
    });
    addr
}

/// A plain TCP server whose connection handler is the test's own code.
pub async fn raw_tcp_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move { handler(tcp).await });
        }
    });
    addr
}

/// Reads an HTTP/1.1 request head from `s`.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Answers names from a fixed table; anything else fails like NXDOMAIN.
#[derive(Debug, Default)]
pub struct StaticResolver(pub std::collections::HashMap<String, Vec<std::net::IpAddr>>);

impl pinproxy::upstream::Resolve for StaticResolver {
    fn resolve(
        &self,
        name: &str,
        port: u16,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>,
    > {
        let found = self.0.get(name).cloned();
        let name = name.to_string();
        Box::pin(async move {
            match found {
                Some(ips) => Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                None => Err(std::io::Error::other(format!(
                    "failed to lookup address information: {name}: Name or service not known"
                ))),
            }
        })
    }
}
