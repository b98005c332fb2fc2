//! The report collector's client: one HTTP/1.1 POST per attempt on a
//! fresh connection, with ordinary CA validation for `https://`.
//!
//! Deliberately nothing shared with the data path: no pinned verifier, no
//! pooled connection, no proxy listener. Reports are rare (rate-limited),
//! so a connection per report costs nothing that matters, and a collector
//! that hangs holds only its own socket, dropped with the attempt.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{ServerName, TrustAnchor};
use tokio::net::TcpStream;

use super::{Attempt, Route};
use pinproxy_upstream::egress;

/// A client TLS config for collectors: Mozilla's `roots` plus `extra`
/// (`defaults.trust`'s CA bundle), validated by rustls' own verifier.
pub fn tls(
    provider: Arc<CryptoProvider>,
    roots: &[TrustAnchor<'static>],
    extra: Option<&[TrustAnchor<'static>]>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut store = RootCertStore::empty();
    store.roots.extend(roots.iter().cloned());
    store
        .roots
        .extend(extra.unwrap_or_default().iter().cloned());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// POSTs `body` to the route's URL once; a 2xx answer is success. Never
/// dials `own` (pinproxy's listeners).
pub async fn post(route: &Route, body: Bytes, own: &[SocketAddr]) -> Result<(), Attempt> {
    let uri = &route.uri;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(Attempt::Permanent(format!("{uri}: not http(s)"))),
    };
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err(Attempt::Permanent(format!("{uri}: no host")));
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| Attempt::Transient(format!("resolving {bare}: {e}")))?
        .collect();
    if addrs.iter().any(|a| egress::is_own(a, own)) {
        return Err(Attempt::Permanent(format!(
            "{uri} is pinproxy's own listener: reports never go through it"
        )));
    }
    let tcp = dial(&addrs).await?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::post(path)
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("pinproxy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| Attempt::Permanent(e.to_string()))?;
    let status = if https {
        let name = ServerName::try_from(bare.to_string())
            .map_err(|e| Attempt::Permanent(format!("{bare}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(route.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Attempt::Transient(format!("TLS with {bare}: {e}")))?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    match status {
        s if s.is_success() => Ok(()),
        s if s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS =>
        {
            Err(Attempt::Transient(format!("collector answered {s}")))
        }
        s => Err(Attempt::Permanent(format!("collector answered {s}"))),
    }
}

async fn dial(addrs: &[SocketAddr]) -> Result<TcpStream, Attempt> {
    let mut last = Attempt::Transient("no address".into());
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Attempt::Transient(format!("connect to {addr}: {e}")),
        }
    }
    Err(last)
}

/// Sends `request` and waits for the response head only; the connection
/// is driven here and dropped with the future, so a timeout leaves
/// nothing behind.
async fn send<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<StatusCode, Attempt>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let transient = |e: hyper::Error| Attempt::Transient(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(transient)?;
    let response = sender.send_request(request);
    tokio::pin!(conn, response);
    let response = tokio::select! {
        response = &mut response => response,
        closed = &mut conn => match closed {
            // A collector that answers and closes (`Connection: close`,
            // HTTP/1.0) ends the connection as it hands over the
            // response: the response is ready, or the close came first.
            Ok(()) => response.await,
            Err(e) => Err(e),
        },
    };
    response.map(|r| r.status()).map_err(transient)
}
