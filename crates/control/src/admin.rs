//! The admin listener: `/healthz`, `/readyz`, `/metrics` for probes and
//! Prometheus, and `/pins`, `/learned` for the operator.
//!
//! Who sees what: `/pins` and `/learned` show hosts, addresses, chains and
//! the traffic learned, so they are served to **loopback** clients only —
//! the pod itself, `kubectl port-forward` (which connects inside the pod's
//! network namespace), `kubectl exec` — unless [`Options::expose_all`].
//! Everyone who can reach the port gets the three public endpoints; this
//! is linkerd2-proxy's admin rule, and Istio's split of Envoy's admin
//! (localhost) from its metrics and health ports. One port, so an
//! existing `--admin 0.0.0.0:9901` keeps serving Prometheus and the probes
//! unchanged, and a remote `/pins` gets a 403 that says why.
//!
//! What it may cost: at most [`Options::max_connections`] at once — a
//! connection past that waits in the kernel's accept queue, holding no
//! descriptor of ours — each with a header timeout and a lifetime, so
//! half-open or slow clients can never take the descriptors the proxy
//! and the reloader need. `/learned` is streamed a few hosts at a time.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::continuity::History;
use super::drift::Drift;
use super::learn::Chunks;
use super::metrics::Metrics;
use super::telemetry::Sinks;
use super::{Live, Readiness};
use pinproxy_policy::Unlisted;

/// What the admin listener reports on.
#[derive(Clone)]
pub struct Admin {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub drift: Arc<Drift>,
    pub sinks: Sinks,
    pub readiness: Arc<Readiness>,
}

/// Who may see what, and what the listener may cost.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Serve `/pins` and `/learned` to non-loopback clients too.
    pub expose_all: bool,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Time a client may take to send a request head (idle keep-alive
    /// included).
    pub header_timeout: Duration,
    /// A connection is closed (gracefully, then for good 5 s later) this
    /// long after it was accepted, however busy: a slow reader cannot keep
    /// a slot.
    pub lifetime: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            expose_all: false,
            max_connections: 32,
            header_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(120),
        }
    }
}

/// The endpoints every client gets.
pub const PUBLIC: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

type Body = Either<Full<Bytes>, LearnedBody>;

pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    loop {
        // A slot first: past the cap, connections wait in the accept
        // queue instead of costing a descriptor each.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let local = is_local(peer) || opts.expose_all;
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, local, req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tokio::time::sleep(opts.lifetime) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        });
    }
}

/// Whether a client connected over loopback: the pod itself, or `kubectl
/// port-forward`/`exec`. The kernel never routes a packet from outside
/// with a loopback source to a socket (martian), so this cannot be
/// claimed from the network.
fn is_local(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

fn route(admin: &Admin, local: bool, req: Request<Incoming>) -> Response<Body> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let path = req.uri().path();
    if !local && !PUBLIC.contains(&path) {
        let status = match path {
            "/pins" | "/learned" => StatusCode::FORBIDDEN,
            _ => StatusCode::NOT_FOUND,
        };
        return text(
            status,
            "pinproxy admin: /pins and /learned are served to loopback clients only \
             (kubectl port-forward, or from inside the pod); --admin-expose-all serves them \
             to every client. Here: /healthz /readyz /metrics\n",
        );
    }
    match path {
        "/healthz" => match admin.metrics.unhealthy() {
            None => text(StatusCode::OK, "ok\n"),
            Some(why) => owned_text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {why}\n"),
            ),
        },
        "/readyz" => {
            if admin.readiness.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if admin.readiness.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if let Some(why) = admin.readiness.waiting_for_pinset() {
                owned_text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: no pinset in force: {why}\n"),
                )
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut r = Response::new(Either::Left(Full::new(Bytes::from(admin.metrics.render()))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/pins" => json(&pins_view(admin)),
        "/learned" => {
            let learning = admin.live.load().policy.defaults.unlisted == Unlisted::Learn;
            let chunks = Chunks::new(admin.sinks.learned.clone(), learning);
            let mut r = Response::new(Either::Right(LearnedBody(chunks)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz /readyz /metrics /pins /learned\n",
        ),
    }
}

/// `/learned`, a few hosts per frame ([`Chunks`]).
pub struct LearnedBody(Chunks);

impl hyper::body::Body for LearnedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .0
                .next()
                .map(|c| Ok(Frame::data(Bytes::from(c)))),
        )
    }
}

fn json(value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    owned_text(status, body.to_owned())
}

fn owned_text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[derive(Serialize)]
struct PinsView {
    generation: u64,
    source_hash: String,
    /// SHA-256 of the pins file alone (the Secret's `pins.yaml`).
    pins_sha256: String,
    /// The file's `serial:`, if it has one.
    serial: Option<u64>,
    /// With `--pinset-key`: the key that verified the pinset in force, its
    /// serial and the SHA-256 of the signed bytes; `null` when unsigned.
    signature: Option<SignatureView>,
    defaults: DefaultsView,
    hosts: Vec<HostView>,
    /// `passthrough:` items as written.
    passthrough: Vec<String>,
    /// Key continuity of unlisted hosts, by name (bounded): the metric
    /// counts them all under `unlisted`.
    unlisted_chains: BTreeMap<String, History>,
    /// The Certificate Transparency log list in force.
    ct_log_list: CtListView,
}

#[derive(Serialize)]
struct CtListView {
    /// `built-in`, or the file `--ct-log-list` names.
    source: String,
    version: Option<String>,
    /// `log_list_timestamp`, RFC 3339.
    timestamp: String,
    age_days: u64,
    /// 70 days old or older: `ct: enforce` acts as `report`.
    stale: bool,
    logs: usize,
    operators: usize,
}

#[derive(Serialize)]
struct SignatureView {
    key: String,
    serial: u64,
    sha256: String,
}

#[derive(Serialize)]
struct DefaultsView {
    unlisted: pinproxy_policy::Unlisted,
    mode: pinproxy_policy::Mode,
    trust: String,
    ports: Vec<u16>,
    allow_private: bool,
    /// CT for unlisted hosts.
    ct: pinproxy_policy::CtMode,
}

#[derive(Serialize)]
struct HostView {
    host: String,
    pins: Vec<String>,
    next_pins: Vec<String>,
    mode: pinproxy_policy::Mode,
    trust: String,
    expires: Option<String>,
    ports: Vec<u16>,
    address: Option<String>,
    /// The identity presented upstream: files and the leaf's public facts,
    /// never the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert: Option<ClientCertView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crls: Option<CrlsView>,
    ct: pinproxy_policy::CtMode,
    last_seen: Option<crate::drift::LastSeen>,
    /// Key continuity per name dialed under this entry: the path last
    /// seen, and when each position last changed, from what to what.
    chains: BTreeMap<String, History>,
}

#[derive(Serialize)]
struct ClientCertView {
    cert: String,
    key: String,
    subject: String,
    pin: String,
    uris: Vec<String>,
    /// RFC 3339.
    not_after: String,
}

#[derive(Serialize)]
struct CrlsView {
    policy: &'static str,
    files: Vec<CrlFileView>,
}

#[derive(Serialize)]
struct CrlFileView {
    path: String,
    issuers: Vec<String>,
    /// RFC 3339.
    next_update: String,
    revoked: usize,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn client_cert_view(c: &pinproxy_policy::identity::ClientCert) -> ClientCertView {
    ClientCertView {
        cert: c.cert_path.display().to_string(),
        key: c.key_path.display().to_string(),
        subject: c.subject.clone(),
        pin: c.pin.to_string(),
        uris: c.uris.clone(),
        not_after: rfc3339(c.not_after),
    }
}

fn crls_view(c: &pinproxy_policy::identity::Crls) -> CrlsView {
    CrlsView {
        policy: c.policy.as_str(),
        files: c
            .files
            .iter()
            .map(|f| CrlFileView {
                path: f.path.display().to_string(),
                issuers: f.issuers.clone(),
                next_update: rfc3339(f.next_update),
                revoked: f.revoked,
            })
            .collect(),
    }
}

fn pins_view(admin: &Admin) -> PinsView {
    let snap = admin.live.load();
    let p = &snap.policy;
    PinsView {
        generation: snap.generation,
        source_hash: p.source_hash.clone(),
        pins_sha256: p.pins_sha256.clone(),
        serial: p.serial,
        signature: p.signature.as_ref().map(|s| SignatureView {
            key: s.key.clone(),
            serial: s.serial,
            sha256: s.sha256.clone(),
        }),
        defaults: DefaultsView {
            unlisted: p.defaults.unlisted,
            mode: p.defaults.mode,
            trust: p.defaults.trust.describe(),
            ports: p.defaults.ports.clone(),
            allow_private: p.defaults.allow_private,
            ct: p.defaults.ct,
        },
        hosts: p
            .hosts
            .iter()
            .map(|h| HostView {
                host: h.name.clone(),
                pins: h.pins.iter().map(|p| p.to_string()).collect(),
                next_pins: h.next_pins.iter().map(|p| p.to_string()).collect(),
                mode: h.mode,
                trust: h.trust.describe(),
                expires: h.expires_date().map(|d| d.to_string()),
                ports: h.ports.clone(),
                address: h.address.map(|a| a.to_string()),
                client_cert: h.client_cert.as_deref().map(client_cert_view),
                names: h.names.iter().map(|n| n.to_string()).collect(),
                crls: h.crls.as_deref().map(crls_view),
                ct: h.ct,
                last_seen: admin.drift.get(&h.name),
                chains: admin.sinks.continuity.under(&h.name),
            })
            .collect(),
        passthrough: p.passthrough.items().to_vec(),
        unlisted_chains: admin.sinks.continuity.under("unlisted"),
        ct_log_list: ct_list_view(&snap.ct_list),
    }
}

fn ct_list_view(l: &pinproxy_tls::ct::LogListInForce) -> CtListView {
    let now = rustls_pki_types::UnixTime::now();
    CtListView {
        source: match l.path() {
            Some(p) => p.display().to_string(),
            None => "built-in".into(),
        },
        version: l.version().map(str::to_string),
        timestamp: l.timestamp_rfc3339(),
        age_days: l.age_days(now),
        stale: l.is_stale(now),
        logs: l.list().logs().count(),
        operators: l.list().operators().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_every_spelling_and_nothing_else() {
        for local in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(is_local(local.parse().unwrap()), "{local}");
        }
        for remote in [
            "10.0.0.1:1",
            "192.0.2.1:1",
            "[::ffff:10.0.0.1]:1",
            "[2001:db8::1]:1",
            "0.0.0.0:1",
        ] {
            assert!(!is_local(remote.parse().unwrap()), "{remote}");
        }
    }
}
