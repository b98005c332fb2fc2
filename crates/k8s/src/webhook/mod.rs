//! `pinproxy webhook`: a mutating admission webhook that injects the sidecar.
//!
//! The API server POSTs an `AdmissionReview` (`admission.k8s.io/v1`) for each
//! Pod CREATE that the chart's MutatingWebhookConfiguration selects. The Pod
//! goes through [`crate::inject::inject_pod`] — the code behind
//! `pinproxy inject` — and the difference comes back as a base64 JSONPatch.
//!
//! The paths (the chart's webhook entries call the first two):
//! - `POST /inject`: opt-in. Pods labelled `pinproxy.io/inject: "true"`
//!   are injected, others pass untouched. The chart's `objectSelector`
//!   sends this path labelled pods only, so it can fail closed without
//!   standing between the API server and any other pod; the annotation of
//!   the same name is honoured too (a deprecated alias the API server
//!   cannot select on).
//! - `POST /inject-namespace`: for namespaces labelled
//!   `pinproxy.io/inject=enabled`; every Pod is injected unless it says
//!   `pinproxy.io/inject: "false"` — or, with `--pod-opt-out refuse`
//!   ([`PodOptOut`]), a Pod that says so is denied.
//! - UPDATEs of injected Pods arrive on `/inject` (the chart's third entry,
//!   selected by the label injection sets) and are judged the same on
//!   either path ([`update`]).
//! - `POST /validate` (with `--pinset-key`): a validating webhook for
//!   Secrets/ConfigMaps labelled `pinproxy.io/pinset: "true"`; an unsigned,
//!   badly signed or rolled-back pinset is denied with a message `kubectl`
//!   prints ([`pinset`]).
//! - `GET /healthz` for probes.
//!
//! A review that cannot be read at all gets HTTP 400 with an explanation
//! (the API server then applies the webhook's `failurePolicy`); a readable
//! review whose Pod cannot be injected is denied with the reason, which
//! `kubectl` shows to the user. Nothing in a request can panic the server.
//!
//! What a client may cost is bounded ([`Limits`]): bodies over 3.5 MiB get
//! `413` before they are buffered, heads and bodies have timeouts, and
//! connections and reviews in flight are capped — on every path; a pod
//! with more than [`MAX_CONTAINERS`] containers, or whose patch would pass
//! [`MAX_PATCH_BYTES`], is denied. When every connection slot is taken, the
//! connection idle the longest (no request in flight) is closed to make room
//! ([`slots`]).
//!
//! TLS: the serving certificate and key are re-read every
//! `--cert-reload-interval` seconds and swapped in when their bytes change
//! (cert-manager renewals, Secret volume updates); new handshakes use the new
//! pair, a broken pair keeps the old one in force.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::inject::{InjectError, InjectOptions, SidecarArgs};

mod answer;
mod cert;
mod limits;
pub mod pinset;
mod review;
mod slots;
mod update;

use answer::error_reply;
pub use cert::CertReloader;
pub use limits::{Limits, DEFAULT_MAX_BODY};
pub use pinset::{validate, Pinsets, SerialReader};
pub use review::{review, MAX_CONTAINERS, MAX_PATCH_BYTES};
use slots::Slots;

/// Time a client has to complete its TLS handshake. The API server does it
/// in milliseconds; every second allowed here is a second an idle client
/// holds a connection slot (it was 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
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
    /// Largest request body accepted, bytes; larger ones get 413 before
    /// they are read (the API server sends at most 3 MiB).
    #[arg(long, env = "PINPROXY_WEBHOOK_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request head, and again its body.
    #[arg(long, env = "PINPROXY_WEBHOOK_REQUEST_TIMEOUT", default_value_t = 10)]
    pub request_timeout: u64,
    /// Connections served at once (more wait to be accepted).
    #[arg(long, env = "PINPROXY_WEBHOOK_MAX_CONNECTIONS", default_value_t = 128)]
    pub max_connections: usize,
    /// A public key pinset objects must be signed with (PEM, as `run
    /// --pinset-key`; repeatable). Enables `POST /validate`, which refuses
    /// Secrets/ConfigMaps labelled `pinproxy.io/pinset: "true"` whose
    /// pins.yaml is unsigned, badly signed or rolled back.
    #[arg(
        long,
        env = "PINPROXY_WEBHOOK_PINSET_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub pinset_key: Vec<PathBuf>,
    /// What `POST /inject-namespace` does with a pod that opts out
    /// (`pinproxy.io/inject: "false"`, label or annotation): `allow` lets
    /// it through without the sidecar, `refuse` denies its creation.
    #[arg(
        long,
        env = "PINPROXY_WEBHOOK_POD_OPT_OUT",
        value_enum,
        default_value_t = PodOptOut::Allow
    )]
    pub pod_opt_out: PodOptOut,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// `--pod-opt-out`: whether a pod in a namespace labelled
/// `pinproxy.io/inject=enabled` may opt out of injection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PodOptOut {
    /// The pod is let through untouched, unpinned.
    #[default]
    Allow,
    /// The pod's creation is denied, naming the namespace rule.
    Refuse,
}

/// Which pods a path injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only pods that say `pinproxy.io/inject: "true"` (the label; the
    /// annotation as a deprecated alias).
    OptIn,
    /// Every pod except those that say `pinproxy.io/inject: "false"`.
    OptOut,
    /// Every pod; one that says `pinproxy.io/inject: "false"` is denied
    /// (`--pod-opt-out refuse`).
    Required,
}

/// What the webhook judges by besides injection's options: the keys of
/// `POST /validate` and whether a labelled namespace's pods may opt out.
#[derive(Debug, Clone, Default)]
pub struct Judging {
    /// Without, `/validate` denies every labelled object: it cannot judge
    /// them.
    pub pinsets: Option<Arc<Pinsets>>,
    pub pod_opt_out: PodOptOut,
}

// === impl PodOptOut ===

impl PodOptOut {
    /// The mode of `POST /inject-namespace`.
    pub fn namespace_mode(self) -> Mode {
        match self {
            PodOptOut::Allow => Mode::OptOut,
            PodOptOut::Refuse => Mode::Required,
        }
    }
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
    #[error(transparent)]
    PinsetKey(#[from] pinproxy_sign::KeyFileError),
}

/// The answer to one HTTP request: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Json,
}

// === serving ===

/// `pinproxy webhook`: serve until SIGTERM or Ctrl-C. `serial_of` reads a
/// pinset's serial (the policy loader's reader) for `POST /validate`.
pub async fn run(args: &WebhookArgs, serial_of: SerialReader) -> Result<(), WebhookError> {
    let opts = InjectOptions::from(&args.sidecar);
    opts.validate()?;
    // Read once, here: a changed key file reaches new pods after a restart
    // (the chart rolls the Deployment when its key values change).
    for key in &args.sidecar.pinset_key_inline {
        tracing::info!(key = %key.key.id(), file = %key.path.display(), "pinset key given to sidecars inline");
    }
    let pinsets = if args.pinset_key.is_empty() {
        None
    } else {
        let keys = pinproxy_sign::read_keys(&args.pinset_key)?;
        for id in keys.ids() {
            tracing::info!(key = %id, "pinset key for POST /validate");
        }
        Some(Arc::new(
            Pinsets::new(keys, serial_of).with_minimum(opts.pinset_min_serial),
        ))
    };
    let certs = Arc::new(CertReloader::load(&args.tls_cert, &args.tls_key)?);
    let listener = listen(args.listen).map_err(|source| WebhookError::Bind {
        addr: args.listen,
        source,
    })?;
    tracing::info!(addr = %args.listen, "webhook listening");
    let every = Duration::from_secs(args.cert_reload_interval.max(1));
    let timeout = Duration::from_secs(args.request_timeout.max(1));
    let limits = Limits {
        max_body: args.max_body_bytes,
        header_timeout: timeout,
        body_timeout: timeout,
        max_connections: args.max_connections.max(1),
        ..Limits::default()
    };
    if args.pod_opt_out == PodOptOut::Refuse {
        tracing::info!("pods in labelled namespaces may not opt out (--pod-opt-out refuse)");
    }
    let judging = Judging {
        pinsets,
        pod_opt_out: args.pod_opt_out,
    };
    serve_all(
        listener,
        certs,
        Arc::new(opts),
        judging,
        every,
        limits,
        shutdown_signal(),
    )
    .await
}

/// Connections the kernel queues until they are accepted. The default (128)
/// overflows under clients that reconnect whenever they are closed; then
/// every client's SYN is dropped and retried only after a second or more.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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

/// Serve HTTPS on `listener` until `shutdown` completes, then drain, with
/// the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    certs: Arc<CertReloader>,
    opts: Arc<InjectOptions>,
    reload_every: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    serve_with(
        listener,
        certs,
        opts,
        reload_every,
        Limits::default(),
        shutdown,
    )
    .await
}

/// As [`serve`], within `limits`.
pub async fn serve_with(
    listener: TcpListener,
    certs: Arc<CertReloader>,
    opts: Arc<InjectOptions>,
    reload_every: Duration,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    serve_all(
        listener,
        certs,
        opts,
        Judging::default(),
        reload_every,
        limits,
        shutdown,
    )
    .await
}

/// As [`serve_with`], also judging by `judging`: pinset objects on `POST
/// /validate`, and pods opting out on `POST /inject-namespace`.
pub async fn serve_all(
    listener: TcpListener,
    certs: Arc<CertReloader>,
    opts: Arc<InjectOptions>,
    judging: Judging,
    reload_every: Duration,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    opts.validate()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config()?);
    let reloader = tokio::spawn(reload_loop(certs.clone(), reload_every));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(8)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let slots = Slots::new(limits.max_connections);
    let gates = Gates {
        reviews: Arc::new(Semaphore::new(limits.reviews.max(1))),
        budget: Arc::new(Semaphore::new(limits.body_budget.max(limits.max_body))),
    };
    tokio::pin!(shutdown);
    loop {
        // Room first (a free slot, or an idle connection to close): until
        // then connections wait in the kernel's accept queue and cost us
        // nothing.
        tokio::select! {
            _ = &mut shutdown => break,
            () = slots.ready() => {}
        }
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
        let (slot, evicted) = tokio::select! {
            _ = &mut shutdown => break,
            s = slots.admit(peer.ip()) => match s {
                Some(s) => s,
                None => {
                    tracing::debug!(%peer, "too many idle connections from this address; closed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let opts = opts.clone();
        let judging = judging.clone();
        let gates = gates.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let slot = Arc::new(slot);
            let serve = async {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
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
                let slot = slot.clone();
                let svc = hyper::service::service_fn(move |req| {
                    // Not closed for room until the answer is ready.
                    let serving = slot.serving();
                    let answer = handle(req, opts.clone(), judging.clone(), limits, gates.clone());
                    async move {
                        let answer = answer.await;
                        drop(serving);
                        answer
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(tls), svc);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            };
            // Dropping the connection closes it.
            tokio::select! {
                () = serve => {}
                () = evicted.wait() => {
                    tracing::debug!(%peer, "idle connection closed to make room");
                }
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

/// What requests share: turns to parse and review, and the bytes of
/// bodies being read.
#[derive(Clone)]
struct Gates {
    reviews: Arc<Semaphore>,
    budget: Arc<Semaphore>,
}

async fn handle(
    req: Request<Incoming>,
    opts: Arc<InjectOptions>,
    judging: Judging,
    limits: Limits,
    gates: Gates,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // `None`: `POST /validate`.
    let mode = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return Ok(respond(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::POST, "/inject") => Some(Mode::OptIn),
        (&Method::POST, "/inject-namespace") => Some(judging.pod_opt_out.namespace_mode()),
        (&Method::POST, "/validate") => None,
        (_, "/inject" | "/inject-namespace" | "/validate") => {
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
    let http1 = req.version() < http::Version::HTTP_2;
    let body = match limits::read_body(req, &limits, &gates.budget).await {
        Ok(b) => b,
        Err(refused) => {
            let reply = error_reply(refused.status, "", &refused.message);
            let mut resp = respond(reply.status, &reply.body);
            if http1 {
                // The rest of the body is never read: the connection
                // cannot carry another request.
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            return Ok(resp);
        }
    };
    // Parsed and reviewed a few at a time (each parse is bounded by
    // `max_json_values`); the wait is for CPU, never for a client.
    let Ok(_turn) = gates.reviews.acquire().await else {
        return Ok(respond(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "shutting down"}),
        ));
    };
    let reply = match mode {
        Some(mode) => review(&body.bytes, mode, &opts),
        None => validate(&body.bytes, judging.pinsets.as_deref()),
    };
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
