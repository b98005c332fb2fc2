//! A small HTTP client of the proxy: GET, POST, raw bytes, a kept connection.

use super::*;

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn error(&self) -> Option<&str> {
        self.headers
            .get("x-pinproxy-error")
            .and_then(|v| v.to_str().ok())
    }
}

/// Sends `GET url` in absolute form through the proxy on a new connection.
pub async fn get(proxy: SocketAddr, url: &str) -> Reply {
    get_with(proxy, url, &[]).await
}

pub async fn get_with(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut conn = ProxyConn::open(proxy).await;
    conn.get(url, headers).await
}

/// Sends `POST url` with `body`, in absolute form, on a new connection.
pub async fn post(proxy: SocketAddr, url: &str, body: &str) -> Reply {
    let mut conn = ProxyConn::open(proxy).await;
    conn.post(url, &[], body).await
}

/// One keep-alive client connection to the proxy.
pub struct ProxyConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl ProxyConn {
    pub async fn open(proxy: SocketAddr) -> Self {
        let tcp = TcpStream::connect(proxy).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Self { sender }
    }

    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(http::Method::GET, url, headers, Bytes::new())
            .await
    }

    pub async fn post(&mut self, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let body = Bytes::from(body.to_string());
        self.send(http::Method::POST, url, headers, body).await
    }

    async fn send(
        &mut self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let uri: http::Uri = url.parse().unwrap();
        let mut req = Request::builder().method(method).uri(uri.clone());
        let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !has_host {
            if let Some(a) = uri.authority() {
                req = req.header(http::header::HOST, a.as_str());
            }
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).unwrap();
        self.sender.ready().await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.sender.send_request(req))
            .await
            .expect("proxy answered in time")
            .expect("proxy answered");
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// Sends raw bytes to the proxy and reads until it closes (or 5 s).
pub async fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
