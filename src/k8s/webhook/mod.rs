//! `pinproxy webhook`: a mutating admission webhook that injects the sidecar.
//!
//! The API server POSTs an `AdmissionReview` (`admission.k8s.io/v1`) for each
//! Pod CREATE that the chart's MutatingWebhookConfiguration selects. The Pod
//! goes through [`crate::k8s::inject::inject_pod`] — the code behind
//! `pinproxy inject` — and the difference comes back as a base64 JSONPatch.
//!
//! Two paths, one per webhook entry in the chart:
//! - `POST /inject`: opt-in. Pods annotated (or labelled)
//!   `pinproxy.io/inject: "true"` are injected, others pass untouched.
//! - `POST /inject-namespace`: for namespaces labelled
//!   `pinproxy.io/inject=enabled`; every Pod is injected unless it says
//!   `pinproxy.io/inject: "false"`.
//! - `GET /healthz` for probes.
//!
//! A review that cannot be read at all gets HTTP 400 with an explanation
//! (the API server then applies the webhook's `failurePolicy`); a readable
//! review whose Pod cannot be injected is denied with the reason, which
//! `kubectl` shows to the user. Nothing in a request can panic the server.
//!
//! TLS: the serving certificate and key are re-read every
//! `--cert-reload-interval` seconds and swapped in when their bytes change
//! (cert-manager renewals, Secret volume updates); new handshakes use the new
//! pair, a broken pair keeps the old one in force.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;

use crate::k8s::inject::{self, InjectError, InjectOptions, SidecarArgs};

/// Largest AdmissionReview body accepted (a Pod is at most ~1.5 MB in etcd).
const MAX_BODY: usize = 8 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

// === types ===

/// `pinproxy webhook --tls-cert F --tls-key F [--listen ADDR] [sidecar options]`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, env = "PINPROXY_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain presented to the API server.
    #[arg(long, env = "PINPROXY_WEBHOOK_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PINPROXY_WEBHOOK_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Seconds between checks of the certificate files for a renewal.
    #[arg(
        long,
        env = "PINPROXY_WEBHOOK_CERT_RELOAD_INTERVAL",
        default_value_t = 10
    )]
    pub cert_reload_interval: u64,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Which pods a path injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only pods that say `pinproxy.io/inject: "true"`.
    OptIn,
    /// Every pod except those that say `pinproxy.io/inject: "false"`.
    OptOut,
}

/// Errors that stop the webhook from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("TLS {path}: {reason}")]
    Tls { path: String, reason: String },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Options(#[from] InjectError),
}

/// The answer to one HTTP request: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Json,
}

/// Serving certificate that follows its files.
#[derive(Debug)]
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

// === impl CertReloader ===

impl CertReloader {
    /// Load the pair; fails when either file is missing or unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, WebhookError> {
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        let key = certified_key(&cert_pem, &key_pem, cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Loaded {
                cert_pem,
                key_pem,
                key,
            }),
        })
    }

    /// Re-read both files; swap in the pair when it changed and is valid.
    /// `Ok(true)` when a new pair is now served. Blocking file I/O: call it
    /// from `spawn_blocking`.
    pub fn reload_if_changed(&self) -> Result<bool, WebhookError> {
        let (cert_pem, key_pem) = read_pair(&self.cert_path, &self.key_path)?;
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.cert_pem == cert_pem && cur.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = certified_key(&cert_pem, &key_pem, &self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            cert_pem,
            key_pem,
            key,
        };
        Ok(true)
    }

    /// The certificate chain currently served (DER, leaf first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .key
            .cert
            .clone()
    }

    /// A rustls server config that resolves every handshake through `self`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls {
            path: "<config>".into(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), WebhookError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| WebhookError::Tls {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, WebhookError> {
    let tls_err = |p: &Path, reason: String| WebhookError::Tls {
        path: p.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert_path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(tls_err(cert_path, "no CERTIFICATE block".into()));
    }
    // Never print the key's parse error detail: it could echo key bytes.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| tls_err(key_path, "no usable PRIVATE KEY block".into()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| tls_err(key_path, format!("unsupported key: {e}")))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        // Key types whose public key rustls cannot extract: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
        Err(e) => Err(tls_err(
            key_path,
            format!("key does not match certificate: {e}"),
        )),
    }
}

// === serving ===

/// `pinproxy webhook`: serve until SIGTERM or Ctrl-C.
pub async fn run(args: &WebhookArgs) -> Result<(), WebhookError> {
    let opts = InjectOptions::from(&args.sidecar);
    opts.validate()?;
    let certs = Arc::new(CertReloader::load(&args.tls_cert, &args.tls_key)?);
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, "webhook listening");
    let every = Duration::from_secs(args.cert_reload_interval.max(1));
    serve(listener, certs, Arc::new(opts), every, shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Serve HTTPS on `listener` until `shutdown` completes, then drain.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<CertReloader>,
    opts: Arc<InjectOptions>,
    reload_every: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    opts.validate()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config()?);
    let reloader = tokio::spawn(reload_loop(certs.clone(), reload_every));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin or die.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let opts = opts.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| handle(req, opts.clone()));
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    reloader.abort();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
    Ok(())
}

async fn reload_loop(certs: Arc<CertReloader>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let c = certs.clone();
        match tokio::task::spawn_blocking(move || c.reload_if_changed()).await {
            Ok(Ok(true)) => tracing::info!("serving certificate reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "serving certificate not reloaded; keeping the old one")
            }
            Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    opts: Arc<InjectOptions>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mode = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return Ok(respond(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::POST, "/inject") => Mode::OptIn,
        (&Method::POST, "/inject-namespace") => Mode::OptOut,
        (_, "/inject" | "/inject-namespace") => {
            return Ok(respond(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "use POST"}),
            ))
        }
        _ => {
            return Ok(respond(
                StatusCode::NOT_FOUND,
                &json!({"error": "not found"}),
            ))
        }
    };
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let reply = error_reply(
                StatusCode::BAD_REQUEST,
                "",
                &format!("reading request body: {e}"),
            );
            return Ok(respond(reply.status, &reply.body));
        }
    };
    let reply = review(&body, mode, &opts);
    Ok(respond(reply.status, &reply.body))
}

fn respond(status: StatusCode, body: &Json) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

// === the review ===

/// Answer one AdmissionReview body. Pure: no I/O, never panics on input.
pub fn review(body: &[u8], mode: Mode, opts: &InjectOptions) -> Reply {
    let bad = |uid: &str, msg: &str| {
        // Without a uid the API server cannot match an answer: fail the call.
        let status = if uid.is_empty() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        error_reply(status, uid, msg)
    };
    let doc: Json = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad("", &format!("malformed AdmissionReview: not JSON: {e}")),
    };
    if doc.get("apiVersion").and_then(Json::as_str) != Some("admission.k8s.io/v1")
        || doc.get("kind").and_then(Json::as_str) != Some("AdmissionReview")
    {
        return bad("", "malformed AdmissionReview: expected apiVersion admission.k8s.io/v1, kind AdmissionReview");
    }
    let Some(request) = doc.get("request").filter(|r| r.is_object()) else {
        return bad("", "malformed AdmissionReview: no request");
    };
    let uid = match request.get("uid").and_then(Json::as_str) {
        Some(u) if !u.is_empty() => u,
        _ => return bad("", "malformed AdmissionReview: request.uid missing"),
    };
    let kind = request.get("kind");
    let is_pod = kind.and_then(|k| k.get("kind")).and_then(Json::as_str) == Some("Pod")
        && kind
            .and_then(|k| k.get("group"))
            .and_then(Json::as_str)
            .unwrap_or("")
            .is_empty();
    let operation = request
        .get("operation")
        .and_then(Json::as_str)
        .unwrap_or("");
    if !is_pod || operation != "CREATE" {
        // Outside what the webhook is registered for: let it through untouched.
        return allow(uid, None);
    }
    let Some(pod) = request.get("object").filter(|o| o.is_object()) else {
        return bad(
            uid,
            "malformed AdmissionReview: request.object is not a Pod object",
        );
    };
    let mut yaml_pod: serde_yaml::Value = match serde_yaml::to_value(pod) {
        Ok(v) => v,
        Err(e) => return bad(uid, &format!("pod cannot be read: {e}")),
    };
    let wanted = match mode {
        Mode::OptIn => inject::has_inject_marker(&yaml_pod, true),
        Mode::OptOut => true,
    };
    if !wanted || inject::has_inject_marker(&yaml_pod, false) {
        return allow(uid, None);
    }
    match inject::inject_pod(&mut yaml_pod, opts) {
        Ok(false) => allow(uid, None),
        Ok(true) => match serde_json::to_value(&yaml_pod) {
            Ok(new) => {
                let mut ops = Vec::new();
                diff("", pod, &new, &mut ops);
                allow(uid, (!ops.is_empty()).then_some(Json::Array(ops)))
            }
            Err(e) => bad(uid, &format!("injected pod cannot be encoded: {e}")),
        },
        Err(e) => bad(uid, &format!("pinproxy cannot inject this pod: {e}")),
    }
}

fn allow(uid: &str, patch: Option<Json>) -> Reply {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        let bytes = serde_json::to_vec(&patch).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Reply {
        status: StatusCode::OK,
        body: json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response }),
    }
}

fn error_reply(status: StatusCode, uid: &str, message: &str) -> Reply {
    tracing::warn!(uid, message, "admission review refused");
    Reply {
        status,
        body: json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": uid,
                "allowed": false,
                "status": { "code": 400, "reason": "BadRequest", "message": message },
            },
        }),
    }
}

/// RFC 6902 operations turning `old` into `new`: objects are compared key by
/// key, anything else that differs is replaced whole.
fn diff(path: &str, old: &Json, new: &Json, ops: &mut Vec<Json>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                ops.push(json!({ "op": "remove", "path": format!("{path}/{}", escape(key)) }));
            }
            for (key, vb) in b {
                let p = format!("{path}/{}", escape(key));
                match a.get(key) {
                    None => ops.push(json!({ "op": "add", "path": p, "value": vb })),
                    Some(va) => diff(&p, va, vb, ops),
                }
            }
        }
        _ => ops.push(json!({ "op": "replace", "path": path, "value": new })),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_escapes_and_nests() {
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}});
        let new = json!({"metadata": {"labels": {"a": "1", "pinproxy.io/injected": "true"}}, "spec": {"x": [1, 2]}});
        let mut ops = Vec::new();
        diff("", &old, &new, &mut ops);
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/labels/pinproxy.io~1injected", "value": "true"}),
                json!({"op": "replace", "path": "/spec/x", "value": [1, 2]}),
            ]
        );
    }
}
