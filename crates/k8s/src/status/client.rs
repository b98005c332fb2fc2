//! A small Kubernetes API client for `pinproxy status`: GETs over
//! HTTP/1.1 + rustls, one connection per request, with the CA and the
//! credentials of an [`ApiConfig`].
//!
//! Why not the `kube` crate: status needs four GETs (pods, namespaces, a
//! Secret, the pods/proxy subresource) and a kubeconfig reader; `kube` +
//! `k8s-openapi` would add a large dependency tree and compile time to a
//! sidecar binary for that. The stack here (hyper, tokio-rustls, serde) is
//! the one the proxy already uses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::kubeconfig::ApiConfig;

/// Per request: connect, TLS, headers and body.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Most of an error answer read for its message (a Kubernetes Status is a
/// few hundred bytes; the message shown is cut at 300 characters anyway).
const MAX_ERROR_BODY: usize = 64 << 10;

/// How much of a body [`Api::get`] reads before giving up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub usize);

impl Cap {
    /// One page of a list (`limit=`[`PAGE_ITEMS`]): 250 pods average 20–40
    /// KiB; 64 MiB leaves room for pods with large specs or annotations.
    pub const LIST_PAGE: Cap = Cap(64 << 20);
    /// One object (a Secret holds at most 1 MiB of data, base64 in JSON).
    pub const OBJECT: Cap = Cap(4 << 20);
}

impl std::fmt::Display for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= 1 << 20 && self.0 % (1 << 20) == 0 {
            write!(f, "{} MiB", self.0 >> 20)
        } else if self.0 >= 1 << 10 && self.0 % (1 << 10) == 0 {
            write!(f, "{} KiB", self.0 >> 10)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

/// Items per page of a list ([`Api::list`]), as `kubectl`'s `--chunk-size`.
pub const PAGE_ITEMS: usize = 250;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API server TLS setup: {0}")]
    Tls(String),
    #[error("{server}: {message}")]
    Connect { server: String, message: String },
    #[error("GET {path}: {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        path: String,
        status: StatusCode,
        detail: Option<String>,
    },
    #[error("GET {path}: timed out after {}s", TIMEOUT.as_secs())]
    Timeout { path: String },
    #[error("GET {path}: answer larger than {cap}")]
    TooLarge { path: String, cap: Cap },
    #[error("GET {path}: a line longer than {cap}")]
    LineTooLong { path: String, cap: Cap },
    #[error("GET {path}: reading the answer: {message}")]
    Read { path: String, message: String },
}

pub struct Api {
    cfg: ApiConfig,
    tls: Arc<ClientConfig>,
    authority: String,
}

impl Api {
    pub fn new(cfg: ApiConfig) -> Result<Self, ApiError> {
        let tls = tls_config(&cfg)?;
        let uri: http::Uri = cfg
            .server
            .parse()
            .map_err(|e| ApiError::Tls(format!("server URL: {e}")))?;
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| ApiError::Tls("server URL has no host".into()))?;
        Ok(Self {
            cfg,
            tls,
            authority,
        })
    }

    pub fn source(&self) -> &str {
        &self.cfg.source
    }

    /// GET `path` (under the server URL), its body whole if it is at most
    /// `cap`; a non-2xx answer is an error carrying the Status message the
    /// API server sent.
    pub async fn get(&self, path: &str, cap: Cap) -> Result<Bytes, ApiError> {
        self.timed(path, async {
            let mut body = self.send(path).await?;
            let mut out = Vec::new();
            while let Some(chunk) = next_chunk(&mut body, path).await? {
                if chunk.len() > cap.0 - out.len() {
                    return Err(ApiError::TooLarge {
                        path: path.into(),
                        cap,
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(out))
        })
        .await
    }

    /// GET `path` and hand its body to `line` one line at a time (without
    /// its `\n`, decoded lossily), holding at most one line in memory: an
    /// answer larger than `cap`, or a line longer than `max_line`, is an
    /// error.
    pub async fn get_lines(
        &self,
        path: &str,
        cap: Cap,
        max_line: Cap,
        mut line: impl FnMut(&str),
    ) -> Result<(), ApiError> {
        self.timed(path, async {
            let mut body = self.send(path).await?;
            let (mut read, mut partial) = (0usize, Vec::new());
            while let Some(chunk) = next_chunk(&mut body, path).await? {
                read += chunk.len();
                if read > cap.0 {
                    return Err(ApiError::TooLarge {
                        path: path.into(),
                        cap,
                    });
                }
                let mut rest = &chunk[..];
                while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    if partial.len() + nl > max_line.0 {
                        break;
                    }
                    partial.extend_from_slice(&rest[..nl]);
                    line(&String::from_utf8_lossy(&partial));
                    partial.clear();
                    rest = &rest[nl + 1..];
                }
                if partial.len() + rest.len() > max_line.0 {
                    return Err(ApiError::LineTooLong {
                        path: path.into(),
                        cap: max_line,
                    });
                }
                partial.extend_from_slice(rest);
            }
            if !partial.is_empty() {
                line(&String::from_utf8_lossy(&partial));
            }
            Ok(())
        })
        .await
    }

    /// Every item of the list at `path`, one page (`limit`/`continue`) of
    /// at most `Cap::LIST_PAGE` at a time, handed to `page` as it comes.
    pub async fn list(
        &self,
        path: &str,
        mut page: impl FnMut(Vec<serde_json::Value>),
    ) -> Result<(), ApiError> {
        let mut next: Option<String> = None;
        loop {
            let mut url = format!("{path}?limit={PAGE_ITEMS}");
            if let Some(token) = &next {
                url.push_str("&continue=");
                url.push_str(&query_escape(token));
            }
            let body = self.get(&url, Cap::LIST_PAGE).await?;
            let mut v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ApiError::Read {
                    path: url.clone(),
                    message: format!("unexpected answer from the API server: {e}"),
                })?;
            drop(body);
            let token = v
                .pointer("/metadata/continue")
                .and_then(|c| c.as_str())
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            // The same token again would ask for the same page for ever.
            if token.is_some() && token == next {
                return Err(ApiError::Read {
                    path: url,
                    message: "the API server sent the same continue token again".into(),
                });
            }
            next = token;
            match v.get_mut("items").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(items)) => page(items),
                Some(serde_json::Value::Null) | None => {}
                Some(_) => {
                    return Err(ApiError::Read {
                        path: url,
                        message: "unexpected answer from the API server: items is not a list"
                            .into(),
                    })
                }
            }
            if next.is_none() {
                return Ok(());
            }
        }
    }

    async fn timed<T>(
        &self,
        path: &str,
        work: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Timeout { path: path.into() }),
        }
    }

    /// Sends GET `path`: the body of a 2xx answer, else the error with
    /// the message of the (first [`MAX_ERROR_BODY`] bytes of the) body.
    async fn send(&self, path: &str) -> Result<hyper::body::Incoming, ApiError> {
        let connect_err = |message: String| ApiError::Connect {
            server: self.cfg.server.clone(),
            message,
        };
        let tcp = TcpStream::connect(host_port(&self.authority))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let name = ServerName::try_from(self.cfg.server_name.clone())
            .map_err(|e| connect_err(format!("server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let prefix = self
            .cfg
            .server
            .split_once(&self.authority)
            .map_or("", |(_, p)| p);
        let mut req = Request::get(format!("{prefix}{path}"))
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json, */*")
            .header(
                header::USER_AGENT,
                concat!("pinproxy-status/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = &self.cfg.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| connect_err(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if status.is_success() {
            return Ok(body);
        }
        let mut text = Vec::new();
        while text.len() < MAX_ERROR_BODY {
            match next_chunk(&mut body, path).await {
                Ok(Some(chunk)) => {
                    let room = MAX_ERROR_BODY - text.len();
                    text.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Err(ApiError::Status {
            path: path.into(),
            status,
            detail: status_message(&text),
        })
    }
}

/// The next chunk of data of `body`, `None` at its end.
async fn next_chunk(
    body: &mut hyper::body::Incoming,
    path: &str,
) -> Result<Option<Bytes>, ApiError> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(ApiError::Read {
                    path: path.into(),
                    message: e.to_string(),
                })
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// `s` for a query string: everything but unreserved characters
/// percent-encoded (a `continue` token is opaque).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `host:port` for connecting: the authority, with port 443 added when
/// it has none (`[v6]` literals keep their brackets).
fn host_port(authority: &str) -> String {
    if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:443")
    } else {
        authority.to_string()
    }
}

/// The `message` of a Kubernetes Status body, or the first line of a
/// text body, shortened.
fn status_message(body: &[u8]) -> Option<String> {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        });
    let text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    (!text.is_empty()).then_some(text)
}

fn tls_config(cfg: &ApiConfig) -> Result<Arc<ClientConfig>, ApiError> {
    let mut roots = RootCertStore::empty();
    if cfg.ca_pem.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for cert in CertificateDer::pem_slice_iter(&cfg.ca_pem) {
            let cert = cert.map_err(|e| ApiError::Tls(format!("certificate-authority: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ApiError::Tls(format!("certificate-authority: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ApiError::Tls(
                "certificate-authority holds no PEM certificate".into(),
            ));
        }
    }
    let provider = crate::provider();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &cfg.client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::Tls(format!("client-certificate: {e}")))?;
            // The key's bytes never reach a message: only whether it parsed.
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
                ApiError::Tls("client-key: no PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ApiError::Tls(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_defaults_and_ipv6() {
        assert_eq!(host_port("198.18.0.1:6443"), "198.18.0.1:6443");
        assert_eq!(host_port("api.example.com"), "api.example.com:443");
        assert_eq!(host_port("[::1]:6443"), "[::1]:6443");
        assert_eq!(host_port("[::1]"), "[::1]:443");
    }

    #[test]
    fn status_message_from_a_status_body() {
        let body = br#"{"kind":"Status","message":"pods is forbidden: User \"x\" cannot list"}"#;
        assert_eq!(
            status_message(body).as_deref(),
            Some("pods is forbidden: User \"x\" cannot list")
        );
        assert_eq!(status_message(b"").as_deref(), None);
    }
}
