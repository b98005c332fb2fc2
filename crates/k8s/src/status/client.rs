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
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::kubeconfig::ApiConfig;

/// Per request: connect, TLS, headers and body.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest body read (a pod list of a big cluster).
const MAX_BODY: usize = 256 << 20;

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

    /// GET `path` (under the server URL); a non-2xx answer is an error
    /// carrying the Status message the API server sent.
    pub async fn get(&self, path: &str) -> Result<Bytes, ApiError> {
        match tokio::time::timeout(TIMEOUT, self.get_inner(path)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Timeout { path: path.into() }),
        }
    }

    async fn get_inner(&self, path: &str) -> Result<Bytes, ApiError> {
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
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| connect_err(format!("reading {path}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(ApiError::Status {
                path: path.into(),
                status,
                detail: status_message(&body),
            });
        }
        Ok(body)
    }
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
