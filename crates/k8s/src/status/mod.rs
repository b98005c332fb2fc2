//! `pinproxy status`: the fleet view — every pod with the pinproxy sidecar,
//! whether its pinset is the one its Secret holds now (SYNCED) or an older
//! one (STALE, e.g. while the kubelet has not yet written the edit), and
//! the pods that asked for injection but run without the sidecar.
//!
//! Through the API server only (kubeconfig or in-cluster): it lists pods
//! and namespaces, reads each sidecar's pins Secret, and reads the
//! sidecar's `/metrics` (public, like `/healthz`; `/pins` may be
//! loopback-only) through the `pods/proxy` subresource: the generation,
//! `pinproxy_pinset_info{sha256}`, reloads, mismatches, expiries, version.
//! RBAC needed: `list` pods and namespaces, `get` secrets, `get`
//! pods/proxy (the chart's optional `status` ClusterRole).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

mod client;
mod fleet;
mod kubeconfig;
mod render;

pub use client::{Api, ApiError, Cap};
pub use fleet::{asked_for_injection, parse_metrics, sidecar_of, Sidecar};
pub use kubeconfig::{load as kubeconfig_load, ApiConfig, ConfigError};
pub use render::{needs_escape, render_json, render_text, visible};

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Kubeconfig file (default: $KUBECONFIG's first file, ~/.kube/config,
    /// else the pod's service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig (default: its current-context).
    #[arg(long)]
    pub context: Option<String>,
    /// Only this namespace (default: all).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{what}: unexpected answer from the API server: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
}

/// Whether a sidecar runs the pinset its Secret holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum State {
    /// The sidecar's pins file hash equals the Secret's `pins.yaml`.
    Synced,
    /// It differs: the edit has not reached the sidecar (yet), or a reload failed.
    Stale,
    /// The Secret (or its `pins.yaml`) is missing or unreadable.
    NoSecret,
    /// The pod is not running (phase), or its admin endpoint did not answer.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct SidecarRow {
    pub namespace: String,
    pub pod: String,
    pub state: State,
    /// Why the state is what it is, when that is not obvious.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub generation: Option<u64>,
    pub pins_sha256: Option<String>,
    pub secret: Option<String>,
    pub secret_sha256: Option<String>,
    /// `ok`, `failing`, or what the counters say when the sidecar is older.
    pub last_reload: Option<String>,
    pub mismatches: Option<u64>,
    /// `YYYY-MM-DD host` of the nearest `expires:`.
    pub nearest_expiry: Option<String>,
    pub version: Option<String>,
    pub image: String,
    /// Columns whose value `/metrics` gave malformed (shown `invalid`).
    #[serde(skip)]
    pub invalid: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MissingRow {
    pub namespace: String,
    pub pod: String,
    /// How it asked for injection.
    pub asked_by: String,
    pub phase: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub sidecars: Vec<SidecarRow>,
    pub without_sidecar: Vec<MissingRow>,
}

/// Pods in flight at once when reading sidecars.
const CONCURRENCY: usize = 8;
/// Most of a sidecar's `/metrics` read. It is read a line at a time, never
/// whole, but a pod may serve anything: past this it is an error in its row.
/// A sidecar serves about 10 bytes of `/metrics` per byte of its pinset
/// file with minimal entries (11 series per host: 10.4 MB for a 1 MiB
/// file of 14,320 hosts), so a pinset at the default `--max-pinset-bytes`
/// (4 MiB) fits.
const METRICS_CAP: Cap = Cap(64 << 20);
/// Longest `/metrics` line: a host label is at most 255 characters.
const METRICS_LINE_CAP: Cap = Cap(64 << 10);

/// `YYYY-MM-DD` of a Unix time.
fn date(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(|d| d.date().to_string())
        .unwrap_or_else(|_| t.to_string())
}

fn decode(what: &str, body: &[u8]) -> Result<Value, StatusError> {
    serde_json::from_slice(body).map_err(|source| StatusError::Decode {
        what: what.into(),
        source,
    })
}

/// What a pod list says about one pod, kept once its page is dropped.
struct PodFacts {
    namespace: String,
    name: String,
    phase: String,
    sidecar: Option<Sidecar>,
    /// Why it should have the sidecar, when it has none.
    asked_by: Option<String>,
}

/// Builds the report through `api`.
pub async fn collect(api: Arc<Api>, namespace: Option<&str>) -> Result<Report, StatusError> {
    let pods_path = match namespace {
        Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
        None => "/api/v1/pods".to_string(),
    };
    let ns_labels = namespace_labels(&api, namespace).await?;
    let mut pods = Vec::new();
    api.list(&pods_path, |items| {
        for pod in &items {
            pods.push(pod_facts(pod, &ns_labels));
        }
    })
    .await?;
    let mut report = Report::default();
    let mut secrets: HashMap<(String, String), Result<String, String>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    for pod in pods {
        let PodFacts {
            namespace: ns,
            name,
            phase,
            sidecar,
            asked_by,
        } = pod;
        let Some(sidecar) = sidecar else {
            if let Some(asked_by) = asked_by {
                if !matches!(phase.as_str(), "Succeeded" | "Failed") {
                    report.without_sidecar.push(MissingRow {
                        namespace: ns,
                        pod: name,
                        asked_by,
                        phase,
                    });
                }
            }
            continue;
        };
        let secret_sha = match &sidecar.pins_secret {
            Some(s) => {
                let key = (ns.clone(), s.clone());
                if !secrets.contains_key(&key) {
                    let sha = secret_hash(&api, &ns, s).await;
                    secrets.insert(key.clone(), sha);
                }
                secrets[&key].clone()
            }
            None => Err("the pinproxy-pins volume is not a Secret".into()),
        };
        let (api, gate) = (api.clone(), gate.clone());
        tasks.spawn(async move {
            let _slot = gate.acquire_owned().await;
            row(&api, ns, name, phase, sidecar, secret_sha).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            report.sidecars.push(r);
        }
    }
    report
        .sidecars
        .sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    report
        .without_sidecar
        .sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    Ok(report)
}

fn pod_facts(pod: &Value, ns_labels: &BTreeMap<String, BTreeMap<String, String>>) -> PodFacts {
    let text = |p: &str, default: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let namespace = text("/metadata/namespace", "");
    let sidecar = sidecar_of(pod);
    let asked_by = match sidecar {
        Some(_) => None,
        None => asked_for_injection(pod, ns_labels.get(&namespace).unwrap_or(&BTreeMap::new())),
    };
    PodFacts {
        name: text("/metadata/name", ""),
        phase: text("/status/phase", "Unknown"),
        namespace,
        sidecar,
        asked_by,
    }
}

/// The SHA-256 of `pins.yaml` in Secret `ns/name`, or why there is none.
async fn secret_hash(api: &Api, ns: &str, name: &str) -> Result<String, String> {
    let body = api
        .get(
            &format!("/api/v1/namespaces/{ns}/secrets/{name}"),
            Cap::OBJECT,
        )
        .await
        .map_err(|e| format!("secret {name}: {e}"))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("secret {name}: {e}"))?;
    fleet::secret_pins_sha256(&v).ok_or_else(|| format!("secret {name}: no pins.yaml key"))
}

async fn namespace_labels(
    api: &Api,
    namespace: Option<&str>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, StatusError> {
    let items: Vec<Value> = match namespace {
        Some(ns) => vec![decode(
            "namespace",
            &api.get(&format!("/api/v1/namespaces/{ns}"), Cap::OBJECT)
                .await?,
        )?],
        None => {
            let mut all = Vec::new();
            api.list("/api/v1/namespaces", |items| all.extend(items))
                .await?;
            all
        }
    };
    Ok(items
        .iter()
        .filter_map(|n| {
            let name = n.pointer("/metadata/name")?.as_str()?.to_owned();
            let labels = n
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            Some((name, labels))
        })
        .collect())
}

/// One sidecar's row: its `/metrics` through pods/proxy.
async fn row(
    api: &Api,
    namespace: String,
    pod: String,
    phase: String,
    sidecar: Sidecar,
    secret: Result<String, String>,
) -> SidecarRow {
    let (secret_sha256, secret_problem) = match secret {
        Ok(sha) => (Some(sha), None),
        Err(why) => (None, Some(why)),
    };
    let mut r = SidecarRow {
        state: State::Unknown,
        detail: None,
        generation: None,
        pins_sha256: None,
        secret: sidecar.pins_secret.clone(),
        secret_sha256,
        last_reload: None,
        mismatches: None,
        nearest_expiry: None,
        version: None,
        image: sidecar.image.clone(),
        invalid: Vec::new(),
        namespace,
        pod,
    };
    if phase != "Running" {
        r.detail = Some(format!("pod phase {phase}"));
        return r;
    }
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}:{}/proxy/metrics",
        r.namespace, r.pod, sidecar.admin_port
    );
    let mut parser = fleet::MetricsParser::default();
    match api
        .get_lines(&path, METRICS_CAP, METRICS_LINE_CAP, |l| parser.line(l))
        .await
    {
        Ok(()) => {
            let m = parser.finish();
            let invalid = |what| m.invalid.contains(&what);
            r.generation = m.generation;
            r.pins_sha256 = m.pins_sha256;
            r.nearest_expiry = m.nearest_expiry.map(|(t, h)| format!("{} {h}", date(t)));
            r.mismatches = (!invalid(fleet::MISMATCHES)).then_some(m.mismatches);
            r.version = m.version;
            r.last_reload = (!invalid(fleet::RELOADS) && !invalid(fleet::LAST_RELOAD)).then(|| {
                match m.last_reload_ok {
                    Some(true) => "ok".into(),
                    Some(false) => format!("failing ({} failed)", m.reload_failures),
                    None if m.reload_failures > 0 => format!("{} failed", m.reload_failures),
                    None => "ok".into(),
                }
            });
            for (what, column) in [
                (fleet::SHA256, "pins_sha256"),
                (fleet::GENERATION, "generation"),
                (fleet::MISMATCHES, "mismatches"),
                (fleet::RELOADS, "last_reload"),
                (fleet::LAST_RELOAD, "last_reload"),
                (fleet::EXPIRY, "nearest_expiry"),
                (fleet::VERSION, "version"),
            ] {
                if invalid(what) && !r.invalid.contains(&column) {
                    r.invalid.push(column);
                }
            }
            if !m.invalid.is_empty() {
                r.detail = Some(format!(
                    "/metrics: not what pinproxy serves: {}",
                    m.invalid.join(", ")
                ));
            } else if r.pins_sha256.is_none() {
                r.detail = Some(
                    "/metrics has no pinproxy_pinset_info: a pinproxy older than status".into(),
                );
            } else if r.pins_sha256.as_deref() == Some("") {
                // A signed sidecar that has applied nothing since it started.
                r.detail = Some(
                    "no pinset in force: every request is refused (no-pinset) until a validly \
                     signed pinset is applied; the sidecar's /readyz and log say why"
                        .into(),
                );
            }
        }
        Err(e) => r.detail = Some(format!("/metrics: {e}")),
    }
    // Only a well-formed hash (64 lowercase hex digits, as the Secret's)
    // equal to the Secret's is SYNCED.
    r.state = match (&r.pins_sha256, &r.secret_sha256) {
        (None, _) => State::Unknown,
        (Some(_), None) => {
            r.detail = secret_problem;
            State::NoSecret
        }
        (Some(a), Some(b)) if a == b => State::Synced,
        (Some(_), Some(_)) => State::Stale,
    };
    r
}
