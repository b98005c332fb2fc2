//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/pins`,
//! `/learned`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use super::continuity::History;
use super::drift::Drift;
use super::metrics::Metrics;
use super::telemetry::Sinks;
use super::{Live, Readiness};
use crate::policy::Unlisted;

/// What the admin listener reports on.
#[derive(Clone)]
pub struct Admin {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub drift: Arc<Drift>,
    pub sinks: Sinks,
    pub readiness: Arc<Readiness>,
}

pub async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed; backing off");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if admin.readiness.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if admin.readiness.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(admin.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/pins" => json(&pins_view(admin)),
        "/learned" => {
            let learning = admin.live.load().policy.defaults.unlisted == Unlisted::Learn;
            json(&admin.sinks.learned.doc(learning))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz /readyz /metrics /pins /learned\n",
        ),
    }
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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
    defaults: DefaultsView,
    hosts: Vec<HostView>,
    /// `passthrough:` items as written.
    passthrough: Vec<String>,
    /// Key continuity of unlisted hosts, by name (bounded): the metric
    /// counts them all under `unlisted`.
    unlisted_chains: BTreeMap<String, History>,
}

#[derive(Serialize)]
struct DefaultsView {
    unlisted: crate::policy::Unlisted,
    mode: crate::policy::Mode,
    trust: String,
    ports: Vec<u16>,
    allow_private: bool,
}

#[derive(Serialize)]
struct HostView {
    host: String,
    pins: Vec<String>,
    next_pins: Vec<String>,
    mode: crate::policy::Mode,
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
    last_seen: Option<crate::control::drift::LastSeen>,
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

fn client_cert_view(c: &crate::policy::identity::ClientCert) -> ClientCertView {
    ClientCertView {
        cert: c.cert_path.display().to_string(),
        key: c.key_path.display().to_string(),
        subject: c.subject.clone(),
        pin: c.pin.to_string(),
        uris: c.uris.clone(),
        not_after: rfc3339(c.not_after),
    }
}

fn crls_view(c: &crate::policy::identity::Crls) -> CrlsView {
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
        defaults: DefaultsView {
            unlisted: p.defaults.unlisted,
            mode: p.defaults.mode,
            trust: p.defaults.trust.describe(),
            ports: p.defaults.ports.clone(),
            allow_private: p.defaults.allow_private,
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
                last_seen: admin.drift.get(&h.name),
                chains: admin.sinks.continuity.under(&h.name),
            })
            .collect(),
        passthrough: p.passthrough.items().to_vec(),
        unlisted_chains: admin.sinks.continuity.under("unlisted"),
    }
}
