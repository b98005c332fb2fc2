//! `pinproxy inject`: add the pinproxy sidecar to Kubernetes manifests.
//!
//! The input is a multi-document YAML stream (`kubectl get -o yaml`, a Helm
//! rendering, a kustomize build). Every Pod template in it — Deployment,
//! StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob,
//! Pod, and the items of a `List` — gets:
//!
//! - the `pinproxy` container: a native sidecar (first init container with
//!   `restartPolicy: Always`, Kubernetes ≥ 1.29) or, with
//!   [`InjectOptions::native_sidecar`] off, the first regular container;
//! - the volumes `pinproxy-pins` (the pins Secret, mounted as a directory so
//!   kubelet propagates edits — never `subPath`) and `pinproxy-ca` (an
//!   in-memory emptyDir where the proxy writes its per-pod CA);
//! - in every app container, `HTTP(S)_PROXY` / `NO_PROXY` and the CA trust
//!   variables, plus a read-only mount of the CA directory;
//! - the label `pinproxy.io/injected: "true"`, which the PodMonitor selects.
//!
//! Documents are split on their `---` lines and handled one by one. A
//! document that injection leaves unchanged (not a workload, opted out with
//! `pinproxy.io/inject: "false"`, or already injected with the same options)
//! is copied byte for byte; only changed documents are re-emitted, without
//! their comments. Injection is an upsert keyed by names (container
//! `pinproxy`, the two volumes, env names), so running it twice equals
//! running it once, and re-running it with new options updates the sidecar.
//!
//! The webhook ([`crate::k8s::webhook`]) calls [`inject_pod`] on the Pod of an
//! AdmissionReview, so both paths produce the same pod.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

/// Annotation (or pod label) that opts a workload in (`"true"`) or out (`"false"`).
pub const INJECT_ANNOTATION: &str = "pinproxy.io/inject";
/// Pod-template annotation naming a pins Secret other than [`InjectOptions::pins_secret`].
pub const PINS_SECRET_ANNOTATION: &str = "pinproxy.io/pins-secret";
/// Label set on injected pod templates; the PodMonitor selects it.
pub const INJECTED_LABEL: &str = "pinproxy.io/injected";
/// Name of the injected container.
pub const CONTAINER_NAME: &str = "pinproxy";
/// Volume holding the pins Secret.
pub const PINS_VOLUME: &str = "pinproxy-pins";
/// emptyDir shared with the app containers, holding `ca.crt`.
pub const CA_VOLUME: &str = "pinproxy-ca";
/// Name of the admin container port (Prometheus scrapes it by name).
pub const ADMIN_PORT_NAME: &str = "pinproxy-admin";

/// Kinds whose Pod template is `spec.template`.
const TEMPLATE_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
];

/// Hosts the app reaches directly: loopback, in-cluster Services and the
/// Kubernetes API (by name and, through kubelet's `$(VAR)` expansion of the
/// service env var, by the IP that in-cluster clients dial).
const DEFAULT_NO_PROXY: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    ".svc",
    ".svc.cluster.local",
    ".cluster.local",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "$(KUBERNETES_SERVICE_HOST)",
];

// === types ===

/// What to inject. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOptions {
    /// Sidecar image reference.
    pub image: String,
    /// `imagePullPolicy` of the sidecar; omitted when `None`.
    pub image_pull_policy: Option<String>,
    /// Secret holding `pins.yaml` (in the workload's namespace).
    pub pins_secret: String,
    /// Proxy port on 127.0.0.1 (`--listen`).
    pub proxy_port: u16,
    /// Admin port on 0.0.0.0 (`--admin`): probes and Prometheus.
    pub admin_port: u16,
    pub cpu_request: String,
    pub memory_request: String,
    /// `None` leaves the limit unset.
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    /// Where the pins Secret is mounted; the proxy reads `<pins_dir>/pins.yaml`.
    pub pins_dir: String,
    /// Shared emptyDir where the proxy writes `ca.crt` for the app.
    pub ca_dir: String,
    /// Native sidecar (init container with `restartPolicy: Always`, Kubernetes
    /// ≥ 1.29) when true; a regular second container otherwise.
    pub native_sidecar: bool,
    /// Extra `NO_PROXY` entries (pod/service CIDRs, internal domains).
    pub no_proxy: Vec<String>,
    /// `--log-format` of the sidecar.
    pub log_format: String,
    /// UID/GID the sidecar runs as (the image's non-root user).
    pub run_as_user: i64,
}

/// Errors of `inject`, with the document they concern.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {index} (starting at line {line}): invalid YAML: {source}")]
    Parse {
        index: usize,
        line: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {index} ({kind} {name}): {reason}")]
    Malformed {
        index: usize,
        kind: String,
        name: String,
        reason: String,
    },
    #[error("invalid inject option: {0}")]
    Options(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Write(#[source] std::io::Error),
}

/// Sidecar options shared by `pinproxy inject` and `pinproxy webhook`.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// Sidecar image.
    #[arg(long, env = "PINPROXY_INJECT_IMAGE", default_value_t = default_image())]
    pub image: String,
    /// imagePullPolicy of the sidecar (Always, IfNotPresent, Never).
    #[arg(long, env = "PINPROXY_INJECT_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// Secret with the `pins.yaml` key, in the workload's namespace.
    #[arg(
        long = "secret",
        env = "PINPROXY_INJECT_SECRET",
        default_value = "pinproxy-pins"
    )]
    pub secret: String,
    /// Proxy port, bound on 127.0.0.1 inside the pod.
    #[arg(long, env = "PINPROXY_INJECT_PROXY_PORT", default_value_t = 3128)]
    pub proxy_port: u16,
    /// Admin port (/metrics, /healthz, /readyz), bound on 0.0.0.0.
    #[arg(long, env = "PINPROXY_INJECT_ADMIN_PORT", default_value_t = 9901)]
    pub admin_port: u16,
    #[arg(long, env = "PINPROXY_INJECT_CPU_REQUEST", default_value = "50m")]
    pub cpu_request: String,
    #[arg(long, env = "PINPROXY_INJECT_MEMORY_REQUEST", default_value = "32Mi")]
    pub memory_request: String,
    /// CPU limit; an empty string sets none.
    #[arg(long, env = "PINPROXY_INJECT_CPU_LIMIT", default_value = "500m")]
    pub cpu_limit: String,
    /// Memory limit; an empty string sets none.
    #[arg(long, env = "PINPROXY_INJECT_MEMORY_LIMIT", default_value = "128Mi")]
    pub memory_limit: String,
    /// Mount point of the pins Secret (a directory: never subPath).
    #[arg(
        long,
        env = "PINPROXY_INJECT_PINS_DIR",
        default_value = "/etc/pinproxy"
    )]
    pub pins_dir: String,
    /// Shared emptyDir where the sidecar writes ca.crt for the app.
    #[arg(
        long,
        env = "PINPROXY_INJECT_CA_DIR",
        default_value = "/var/run/pinproxy"
    )]
    pub ca_dir: String,
    /// Add pinproxy as a regular container (Kubernetes < 1.29) instead of a
    /// native sidecar. The app may then start before the proxy is ready.
    #[arg(long, env = "PINPROXY_INJECT_LEGACY_SIDECAR")]
    pub legacy_sidecar: bool,
    /// Extra NO_PROXY entry (repeatable or comma-separated), e.g. a pod CIDR.
    #[arg(long, env = "PINPROXY_INJECT_NO_PROXY", value_delimiter = ',')]
    pub no_proxy: Vec<String>,
    /// Log format of the sidecar.
    #[arg(long = "sidecar-log-format", env = "PINPROXY_INJECT_LOG_FORMAT", default_value = "json",
          value_parser = ["text", "json"])]
    pub log_format: String,
}

/// `pinproxy inject [-f FILE|-] [options]`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {
    /// Manifest file to read; `-` (the default) reads stdin. Output goes to stdout.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// How a document changed, for the caller's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Injected,
}

// === impl InjectOptions ===

fn default_image() -> String {
    format!("ghcr.io/pinproxy/pinproxy:{}", env!("CARGO_PKG_VERSION"))
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            image: default_image(),
            image_pull_policy: None,
            pins_secret: "pinproxy-pins".into(),
            proxy_port: 3128,
            admin_port: 9901,
            cpu_request: "50m".into(),
            memory_request: "32Mi".into(),
            cpu_limit: Some("500m".into()),
            memory_limit: Some("128Mi".into()),
            pins_dir: "/etc/pinproxy".into(),
            ca_dir: "/var/run/pinproxy".into(),
            native_sidecar: true,
            no_proxy: Vec::new(),
            log_format: "json".into(),
            run_as_user: 65532,
        }
    }
}

impl InjectOptions {
    /// Reject options that would produce a pod Kubernetes refuses or a proxy
    /// that cannot start.
    pub fn validate(&self) -> Result<(), InjectError> {
        let bad = |m: String| Err(InjectError::Options(m));
        if self.image.trim().is_empty() {
            return bad("image is empty".into());
        }
        if !is_dns_subdomain(&self.pins_secret) {
            return bad(format!(
                "secret name {:?} is not a valid Kubernetes name",
                self.pins_secret
            ));
        }
        if self.proxy_port == 0 || self.admin_port == 0 || self.proxy_port == self.admin_port {
            return bad(format!(
                "ports must be non-zero and distinct (proxy {}, admin {})",
                self.proxy_port, self.admin_port
            ));
        }
        for (what, dir) in [("pins dir", &self.pins_dir), ("ca dir", &self.ca_dir)] {
            if !dir.starts_with('/') || dir.len() < 2 {
                return bad(format!(
                    "{what} {dir:?} must be an absolute path other than /"
                ));
            }
        }
        if self.pins_dir.trim_end_matches('/') == self.ca_dir.trim_end_matches('/') {
            return bad("pins dir and ca dir must differ".into());
        }
        if let Some(p) = &self.image_pull_policy {
            if !["Always", "IfNotPresent", "Never"].contains(&p.as_str()) {
                return bad(format!(
                    "imagePullPolicy {p:?} is not Always, IfNotPresent or Never"
                ));
            }
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return bad(format!(
                "log format {:?} is not text or json",
                self.log_format
            ));
        }
        Ok(())
    }

    fn ca_file(&self) -> String {
        format!("{}/ca.crt", self.ca_dir.trim_end_matches('/'))
    }

    fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    fn no_proxy_value(&self) -> String {
        let mut all: Vec<&str> = DEFAULT_NO_PROXY.to_vec();
        for extra in &self.no_proxy {
            let extra = extra.trim();
            if !extra.is_empty() && !all.contains(&extra) {
                all.push(extra);
            }
        }
        all.join(",")
    }

    /// The env vars every app container gets, in order.
    fn app_env(&self) -> Vec<(&'static str, String)> {
        let proxy = self.proxy_url();
        let no_proxy = self.no_proxy_value();
        let ca = self.ca_file();
        vec![
            ("HTTP_PROXY", proxy.clone()),
            ("HTTPS_PROXY", proxy.clone()),
            // curl and others read only the lowercase forms (http_proxy in
            // particular, for CGI safety), Go and Python read both.
            ("http_proxy", proxy.clone()),
            ("https_proxy", proxy),
            ("NO_PROXY", no_proxy.clone()),
            ("no_proxy", no_proxy),
            // OpenSSL, Go and Ruby; Python requests; curl (its compiled-in
            // bundle would win over SSL_CERT_FILE); Node (added to its roots).
            ("SSL_CERT_FILE", ca.clone()),
            ("REQUESTS_CA_BUNDLE", ca.clone()),
            ("CURL_CA_BUNDLE", ca.clone()),
            ("NODE_EXTRA_CA_CERTS", ca),
        ]
    }

    fn sidecar(&self, pins_secret_dir: &str) -> Value {
        let admin_probe = |path: &str, period: i64, failures: i64| {
            map([
                (
                    "httpGet",
                    map([("path", s(path)), ("port", s(ADMIN_PORT_NAME))]),
                ),
                ("periodSeconds", Value::from(period)),
                ("timeoutSeconds", Value::from(1)),
                ("failureThreshold", Value::from(failures)),
            ])
        };
        let mut resources = Mapping::new();
        resources.insert(
            s("requests"),
            map([
                ("cpu", s(&self.cpu_request)),
                ("memory", s(&self.memory_request)),
            ]),
        );
        let mut limits = Mapping::new();
        if let Some(cpu) = &self.cpu_limit {
            limits.insert(s("cpu"), s(cpu));
        }
        if let Some(mem) = &self.memory_limit {
            limits.insert(s("memory"), s(mem));
        }
        if !limits.is_empty() {
            resources.insert(s("limits"), Value::Mapping(limits));
        }

        let mut c = Mapping::new();
        c.insert(s("name"), s(CONTAINER_NAME));
        c.insert(s("image"), s(&self.image));
        if let Some(p) = &self.image_pull_policy {
            c.insert(s("imagePullPolicy"), s(p));
        }
        if self.native_sidecar {
            c.insert(s("restartPolicy"), s("Always"));
        }
        let args = [
            "run".to_string(),
            "--pins".into(),
            format!("{}/pins.yaml", pins_secret_dir.trim_end_matches('/')),
            "--listen".into(),
            format!("127.0.0.1:{}", self.proxy_port),
            "--admin".into(),
            format!("0.0.0.0:{}", self.admin_port),
            "--ca-out".into(),
            self.ca_dir.clone(),
            "--log-format".into(),
            self.log_format.clone(),
        ];
        c.insert(
            s("args"),
            Value::Sequence(args.iter().map(|a| s(a)).collect()),
        );
        c.insert(
            s("ports"),
            Value::Sequence(vec![map([
                ("name", s(ADMIN_PORT_NAME)),
                ("containerPort", Value::from(i64::from(self.admin_port))),
                ("protocol", s("TCP")),
            ])]),
        );
        // startupProbe holds the app back (native sidecar) until the pinset
        // is loaded and ca.crt written; it allows 60 s for that.
        c.insert(s("startupProbe"), admin_probe("/readyz", 1, 60));
        c.insert(s("readinessProbe"), admin_probe("/readyz", 5, 3));
        c.insert(s("livenessProbe"), admin_probe("/healthz", 10, 3));
        c.insert(s("resources"), Value::Mapping(resources));
        c.insert(
            s("securityContext"),
            map([
                ("runAsNonRoot", Value::Bool(true)),
                ("runAsUser", Value::from(self.run_as_user)),
                ("runAsGroup", Value::from(self.run_as_user)),
                ("allowPrivilegeEscalation", Value::Bool(false)),
                ("readOnlyRootFilesystem", Value::Bool(true)),
                (
                    "capabilities",
                    map([("drop", Value::Sequence(vec![s("ALL")]))]),
                ),
                ("seccompProfile", map([("type", s("RuntimeDefault"))])),
            ]),
        );
        c.insert(
            s("volumeMounts"),
            Value::Sequence(vec![
                map([
                    ("name", s(PINS_VOLUME)),
                    ("mountPath", s(pins_secret_dir)),
                    ("readOnly", Value::Bool(true)),
                ]),
                map([("name", s(CA_VOLUME)), ("mountPath", s(&self.ca_dir))]),
            ]),
        );
        Value::Mapping(c)
    }
}

impl From<&SidecarArgs> for InjectOptions {
    fn from(a: &SidecarArgs) -> Self {
        let opt = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        Self {
            image: a.image.clone(),
            image_pull_policy: a.image_pull_policy.clone(),
            pins_secret: a.secret.clone(),
            proxy_port: a.proxy_port,
            admin_port: a.admin_port,
            cpu_request: a.cpu_request.clone(),
            memory_request: a.memory_request.clone(),
            cpu_limit: opt(&a.cpu_limit),
            memory_limit: opt(&a.memory_limit),
            pins_dir: a.pins_dir.clone(),
            ca_dir: a.ca_dir.clone(),
            native_sidecar: !a.legacy_sidecar,
            no_proxy: a.no_proxy.clone(),
            log_format: a.log_format.clone(),
            run_as_user: InjectOptions::default().run_as_user,
        }
    }
}

// === entry points ===

/// `pinproxy inject`: read the file (or stdin), write the injected stream to stdout.
pub fn run(args: &InjectArgs) -> Result<(), InjectError> {
    let opts = InjectOptions::from(&args.sidecar);
    let input = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| InjectError::Read {
                path: "<stdin>".into(),
                source,
            })?;
        s
    } else {
        std::fs::read_to_string(&args.file).map_err(|source| InjectError::Read {
            path: args.file.display().to_string(),
            source,
        })?
    };
    let out = inject_stream(&input, &opts)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(InjectError::Write)
}

/// Inject every Pod template of a multi-document YAML stream.
///
/// Documents that are not workloads, are opted out, or are already injected
/// with these options come back byte for byte.
pub fn inject_stream(input: &str, opts: &InjectOptions) -> Result<String, InjectError> {
    opts.validate()?;
    let mut out = String::with_capacity(input.len() + 2048);
    for (index, doc) in split_documents(input).into_iter().enumerate() {
        let body = &input[doc.body.clone()];
        let mut value: Value = serde_yaml::from_str(body).map_err(|source| InjectError::Parse {
            index,
            line: doc.line,
            source,
        })?;
        let before = value.clone();
        let outcome = inject_document(&mut value, opts, index)?;
        out.push_str(&input[doc.separator.clone()]);
        if outcome == Outcome::Unchanged || value == before {
            out.push_str(body);
        } else {
            fix_octal_modes(&mut value);
            if doc.separator.is_empty() && body.starts_with("---") {
                out.push_str("---\n");
            }
            out.push_str(&yaml::to_string(&value));
        }
    }
    Ok(out)
}

/// Inject one Pod object (as the webhook receives it). Returns whether the
/// pod changed. Opt-out and the "already injected" case leave it alone; the
/// caller decides whether the pod opted in.
pub fn inject_pod(pod: &mut Value, opts: &InjectOptions) -> Result<bool, InjectError> {
    opts.validate()?;
    let before = pod.clone();
    inject_template(pod, opts, 0, "Pod")?;
    Ok(*pod != before)
}

/// Whether the object (a Pod or a workload) carries `pinproxy.io/inject`
/// with this value, as an annotation or a label.
pub fn has_inject_marker(obj: &Value, wanted: bool) -> bool {
    let meta = obj.get("metadata");
    ["annotations", "labels"].iter().any(|field| {
        meta.and_then(|m| m.get(*field))
            .and_then(|a| a.get(INJECT_ANNOTATION))
            .map(|v| marker_is(v, wanted))
            .unwrap_or(false)
    })
}

fn marker_is(v: &Value, wanted: bool) -> bool {
    let text = match v {
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Bool(b) => b.to_string(),
        _ => return false,
    };
    if wanted {
        matches!(text.as_str(), "true" | "enabled")
    } else {
        matches!(text.as_str(), "false" | "disabled")
    }
}

// === documents ===

/// One document of a stream, as byte ranges into the input: its `---` line
/// (empty for a leading document without one) and the rest.
struct Doc {
    separator: std::ops::Range<usize>,
    body: std::ops::Range<usize>,
    /// 1-based line of the document's first line, for errors.
    line: usize,
}

fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line == "---" || (line.starts_with("---") && line[3..].starts_with([' ', '\t']))
}

fn split_documents(input: &str) -> Vec<Doc> {
    // A `---` at column 0 always starts a document: YAML forbids it inside
    // quoted or block scalars at that indentation.
    let mut docs = Vec::new();
    let mut cur = Doc {
        separator: 0..0,
        body: 0..0,
        line: 1,
    };
    let (mut pos, mut line_no) = (0, 1);
    while pos < input.len() {
        let end = input[pos..].find('\n').map_or(input.len(), |i| pos + i + 1);
        let line = &input[pos..end];
        if is_separator(line) {
            cur.body.end = pos;
            if cur.separator.start < cur.body.end {
                docs.push(cur);
            }
            // Content after `--- ` on the same line belongs to the document.
            let rest = line[3..].trim();
            cur = if rest.is_empty() || rest.starts_with('#') {
                Doc {
                    separator: pos..end,
                    body: end..end,
                    line: line_no,
                }
            } else {
                Doc {
                    separator: pos..pos,
                    body: pos..pos,
                    line: line_no,
                }
            };
        }
        pos = end;
        line_no += 1;
    }
    cur.body.end = input.len();
    if cur.separator.start < cur.body.end || docs.is_empty() {
        docs.push(cur);
    }
    docs
}

// === injection ===

fn inject_document(
    doc: &mut Value,
    opts: &InjectOptions,
    index: usize,
) -> Result<Outcome, InjectError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind == "List" {
        let mut outcome = Outcome::Unchanged;
        if let Some(Value::Sequence(items)) = doc.get_mut("items") {
            for item in items {
                if inject_document(item, opts, index)? == Outcome::Injected {
                    outcome = Outcome::Injected;
                }
            }
        }
        return Ok(outcome);
    }
    if has_inject_marker(doc, false) {
        return Ok(Outcome::Unchanged);
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let template = if TEMPLATE_KINDS.contains(&kind.as_str()) {
        doc.get_mut("spec").and_then(|s| s.get_mut("template"))
    } else if kind == "CronJob" {
        doc.get_mut("spec")
            .and_then(|s| s.get_mut("jobTemplate"))
            .and_then(|j| j.get_mut("spec"))
            .and_then(|s| s.get_mut("template"))
    } else if kind == "Pod" {
        Some(doc)
    } else {
        None
    };
    // A workload without a pod template with containers is a patch or a
    // fragment (kustomize); leave it alone.
    let Some(template) = template else {
        return Ok(Outcome::Unchanged);
    };
    let has_containers = matches!(
        template.get("spec").and_then(|s| s.get("containers")),
        Some(Value::Sequence(_))
    );
    if !has_containers {
        return Ok(Outcome::Unchanged);
    }
    if !opts.native_sidecar && (kind == "Job" || kind == "CronJob") {
        tracing::warn!(
            kind = %kind,
            name = %name,
            "legacy (non-native) sidecar in a Job never exits, so the Job never completes"
        );
    }
    let changed = {
        let before = template.clone();
        inject_template(template, opts, index, &kind)?;
        *template != before
    };
    Ok(if changed {
        Outcome::Injected
    } else {
        Outcome::Unchanged
    })
}

/// Inject a Pod template (a mapping with `metadata` and `spec`).
fn inject_template(
    template: &mut Value,
    opts: &InjectOptions,
    index: usize,
    kind: &str,
) -> Result<(), InjectError> {
    if has_inject_marker(template, false) {
        return Ok(());
    }
    let malformed = |template: &Value, reason: &str| InjectError::Malformed {
        index,
        kind: kind.to_string(),
        name: template
            .get("metadata")
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_string(),
        reason: reason.to_string(),
    };
    let Value::Mapping(tmpl) = template else {
        return Err(malformed(template, "pod template is not a mapping"));
    };
    let probe = Value::Mapping(tmpl.clone());

    // metadata: the label the PodMonitor selects; the Secret override.
    let meta = child_mapping(tmpl, "metadata")
        .ok_or_else(|| malformed(&probe, "metadata is not a mapping"))?;
    let secret = meta
        .get("annotations")
        .and_then(|a| a.get(PINS_SECRET_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| opts.pins_secret.clone());
    if !is_dns_subdomain(&secret) {
        return Err(malformed(
            &probe,
            &format!("annotation {PINS_SECRET_ANNOTATION}: {secret:?} is not a valid Secret name"),
        ));
    }
    child_mapping(meta, "labels")
        .ok_or_else(|| malformed(&probe, "metadata.labels is not a mapping"))?
        .insert(s(INJECTED_LABEL), s("true"));
    let first_app = tmpl
        .get("spec")
        .and_then(|sp| sp.get("containers"))
        .and_then(Value::as_sequence)
        .and_then(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .find(|n| *n != CONTAINER_NAME)
                .map(str::to_string)
        });

    let spec =
        child_mapping(tmpl, "spec").ok_or_else(|| malformed(&probe, "spec is not a mapping"))?;

    // The sidecar: take out any earlier copy (either list), put the new one
    // where the old one was, else first, so it starts before everything else.
    let mut old_slot: Option<(bool, usize)> = None;
    for (field, native) in [("initContainers", true), ("containers", false)] {
        if let Some(list) = spec.get_mut(field) {
            let Value::Sequence(list) = list else {
                return Err(malformed(&probe, &format!("spec.{field} is not a list")));
            };
            if let Some(i) = list.iter().position(is_sidecar) {
                list.remove(i);
                old_slot.get_or_insert((native, i));
            }
        }
    }
    if let Some(Value::Sequence(list)) = spec.get("initContainers") {
        if list.is_empty() {
            spec.remove("initContainers");
        }
    }
    let field = if opts.native_sidecar {
        "initContainers"
    } else {
        "containers"
    };
    let at = match old_slot {
        Some((native, i)) if native == opts.native_sidecar => i,
        _ => 0,
    };
    let list = spec
        .entry(s(field))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Value::Sequence(list) = list else {
        return Err(malformed(&probe, &format!("spec.{field} is not a list")));
    };
    list.insert(at.min(list.len()), opts.sidecar(&opts.pins_dir));

    // Volumes, replaced in place by name.
    let volumes = spec
        .entry(s("volumes"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Value::Sequence(volumes) = volumes else {
        return Err(malformed(&probe, "spec.volumes is not a list"));
    };
    upsert_named(
        volumes,
        map([
            ("name", s(PINS_VOLUME)),
            ("secret", map([("secretName", s(&secret))])),
        ]),
    );
    upsert_named(
        volumes,
        map([
            ("name", s(CA_VOLUME)),
            (
                "emptyDir",
                map([("medium", s("Memory")), ("sizeLimit", s("1Mi"))]),
            ),
        ]),
    );

    // App containers: proxy env, CA trust, read-only CA mount.
    let env = opts.app_env();
    let Some(Value::Sequence(containers)) = spec.get_mut("containers") else {
        return Err(malformed(&probe, "spec.containers is not a list"));
    };
    for c in containers.iter_mut().filter(|c| !is_sidecar(c)) {
        let Value::Mapping(c) = c else {
            return Err(malformed(&probe, "a container is not a mapping"));
        };
        let Value::Sequence(list) = c
            .entry(s("env"))
            .or_insert_with(|| Value::Sequence(Vec::new()))
        else {
            return Err(malformed(&probe, "a container's env is not a list"));
        };
        for (name, value) in &env {
            upsert_named(list, map([("name", s(name)), ("value", s(value))]));
        }
        let Value::Sequence(mounts) = c
            .entry(s("volumeMounts"))
            .or_insert_with(|| Value::Sequence(Vec::new()))
        else {
            return Err(malformed(
                &probe,
                "a container's volumeMounts is not a list",
            ));
        };
        upsert_named(
            mounts,
            map([
                ("name", s(CA_VOLUME)),
                ("mountPath", s(&opts.ca_dir)),
                ("readOnly", Value::Bool(true)),
            ]),
        );
    }

    // With a regular sidecar first in the list, kubectl logs/exec would
    // default to it; point them at the app.
    if !opts.native_sidecar {
        if let (Some(app), Some(meta)) = (first_app, child_mapping(tmpl, "metadata")) {
            if let Some(ann) = child_mapping(meta, "annotations") {
                ann.entry(s("kubectl.kubernetes.io/default-container"))
                    .or_insert_with(|| s(&app));
            }
        }
    }
    Ok(())
}

fn is_sidecar(c: &Value) -> bool {
    c.get("name").and_then(Value::as_str) == Some(CONTAINER_NAME)
}

/// Replace the entry with the same `name`, else append.
fn upsert_named(list: &mut Vec<Value>, item: Value) {
    let name = item.get("name").cloned();
    match list.iter_mut().find(|v| v.get("name") == name.as_ref()) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

/// The mapping under `key`, created when absent or null. `None` when the key
/// holds something else.
fn child_mapping<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let v = m.entry(s(key)).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut()
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// serde_yaml reads YAML 1.2, where `0644` is a string; Kubernetes reads
/// YAML 1.1, where it is octal 420. File modes are the one place manifests
/// write such numbers, so convert them back before re-emitting a document.
fn fix_octal_modes(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                if matches!(k.as_str(), Some("defaultMode" | "mode")) {
                    if let Value::String(text) = val {
                        if text.len() > 1
                            && text.starts_with('0')
                            && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
                        {
                            if let Ok(n) = i64::from_str_radix(text, 8) {
                                *val = Value::from(n);
                                continue;
                            }
                        }
                    }
                }
                fix_octal_modes(val);
            }
        }
        Value::Sequence(seq) => seq.iter_mut().for_each(fix_octal_modes),
        Value::Tagged(t) => fix_octal_modes(&mut t.value),
        _ => {}
    }
}

// === YAML output ===

/// A block-style YAML emitter in kubectl's layout. serde_yaml's own emitter
/// quotes for YAML 1.2 only: it would write the string `"on"` or `"yes"` as
/// a plain scalar, which Kubernetes (YAML 1.1) reads as a boolean. This one
/// writes a scalar plain only when every YAML version reads it back as the
/// same string.
mod yaml {
    use serde_yaml::Value;
    use std::fmt::Write;

    pub fn to_string(v: &Value) -> String {
        let mut out = String::new();
        match v {
            Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0, false),
            Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0, false),
            other => {
                scalar(&mut out, other, 0);
                out.push('\n');
            }
        }
        out
    }

    fn is_block(v: &Value) -> bool {
        match v {
            Value::Mapping(m) => !m.is_empty(),
            Value::Sequence(s) => !s.is_empty(),
            Value::Tagged(t) => is_block(&t.value),
            _ => false,
        }
    }

    fn mapping(out: &mut String, m: &serde_yaml::Mapping, indent: usize, inline_first: bool) {
        for (i, (k, v)) in m.iter().enumerate() {
            if i > 0 || !inline_first {
                pad(out, indent);
            }
            scalar(out, k, indent);
            out.push(':');
            value_after_key(out, v, indent);
        }
    }

    fn value_after_key(out: &mut String, v: &Value, indent: usize) {
        match v {
            Value::Mapping(m) if !m.is_empty() => {
                out.push('\n');
                mapping(out, m, indent + 2, false);
            }
            Value::Sequence(s) if !s.is_empty() => {
                out.push('\n');
                sequence(out, s, indent, false);
            }
            Value::Tagged(t) if is_block(&t.value) => {
                let _ = write!(out, " {}", t.tag);
                value_after_key(out, &t.value, indent);
            }
            _ => {
                out.push(' ');
                scalar(out, v, indent + 2);
                out.push('\n');
            }
        }
    }

    fn sequence(out: &mut String, seq: &[Value], indent: usize, inline_first: bool) {
        for (i, v) in seq.iter().enumerate() {
            if i > 0 || !inline_first {
                pad(out, indent);
            }
            out.push_str("- ");
            item(out, v, indent);
        }
    }

    fn item(out: &mut String, v: &Value, indent: usize) {
        match v {
            Value::Mapping(m) if !m.is_empty() => mapping(out, m, indent + 2, true),
            Value::Sequence(s) if !s.is_empty() => sequence(out, s, indent + 2, true),
            Value::Tagged(t) if is_block(&t.value) => {
                let _ = writeln!(out, "{}", t.tag);
                pad(out, indent + 2);
                item(out, &t.value, indent + 2);
            }
            _ => {
                scalar(out, v, indent + 2);
                out.push('\n');
            }
        }
    }

    fn pad(out: &mut String, n: usize) {
        out.extend(std::iter::repeat_n(' ', n));
    }

    /// A scalar (or empty collection) in flow position; `indent` is the
    /// indentation of block-scalar content lines.
    fn scalar(out: &mut String, v: &Value, indent: usize) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Value::String(s) => string(out, s, indent),
            Value::Sequence(_) => out.push_str("[]"),
            Value::Mapping(_) => out.push_str("{}"),
            Value::Tagged(t) => {
                let _ = write!(out, "{} ", t.tag);
                scalar(out, &t.value, indent);
            }
        }
    }

    fn string(out: &mut String, s: &str, indent: usize) {
        if is_plain_safe(s) {
            out.push_str(s);
        } else if literal_ok(s) {
            let chomp = if !s.ends_with('\n') {
                "-"
            } else if s.ends_with("\n\n") {
                "+"
            } else {
                ""
            };
            let _ = write!(out, "|{chomp}");
            for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                out.push('\n');
                if !line.is_empty() {
                    pad(out, indent);
                    out.push_str(line);
                }
            }
        } else {
            double_quoted(out, s);
        }
    }

    /// Plain only when YAML 1.1 and 1.2 both read it back as this string:
    /// no indicator at the start, nothing that resolves to a bool, null or
    /// number in either version, no `: ` or ` #`.
    fn is_plain_safe(s: &str) -> bool {
        const WORDS: &[&str] = &["y", "n", "yes", "no", "true", "false", "on", "off", "null"];
        let Some(first) = s.chars().next() else {
            return false;
        };
        let second = s.chars().nth(1);
        let dash_word =
            first == '-' && matches!(second, Some(c) if c == '-' || c.is_ascii_alphabetic());
        if !(first.is_ascii_alphabetic() || first == '/' || first == '_' || dash_word) {
            return false;
        }
        if WORDS.contains(&s.to_ascii_lowercase().as_str()) || s.ends_with(' ') || s.ends_with(':')
        {
            return false;
        }
        if s.contains(": ") || s.contains(" #") {
            return false;
        }
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _./-:@+=,()".contains(c))
    }

    fn literal_ok(s: &str) -> bool {
        s.contains('\n')
            && !s.starts_with([' ', '\n'])
            && !s
                .chars()
                .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{feff}')
            && !s.split('\n').any(|l| l.ends_with(' ') || l.ends_with('\t'))
    }

    fn double_quoted(out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || c == '\u{feff}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

// === tests ===

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &Value) -> Value {
        serde_yaml::from_str(&yaml::to_string(v)).unwrap()
    }

    #[test]
    fn emitter_round_trips_tricky_scalars() {
        let src = "a: 'on'\nb: 'yes'\nc: '0644'\nd: 'true'\ne: ''\nf: \"x: y\"\ng: \"a #b\"\n\
                   h: \"line1\\nline2\\n\"\ni: \"no-nl\\nend\"\nj: \"two\\n\\n\"\nk: \" lead\\nx\"\n\
                   l: '-x'\nm: '1.5'\nn: \"tab\\tx\"\no: [1, {}, []]\np: {q: ~, r: 1.5}\n\
                   s: '@x'\nt: '*x'\nu: '~'\nv: 'Y'\nw: 'null'\nx: [[1, 2], [a]]\n";
        let v: Value = serde_yaml::from_str(src).unwrap();
        assert_eq!(roundtrip(&v), v, "{}", yaml::to_string(&v));
        let out = yaml::to_string(&v);
        assert!(out.contains("a: \"on\""), "{out}");
        assert!(out.contains("h: |\n  line1\n  line2\n"), "{out}");
    }

    #[test]
    fn octal_modes_become_numbers() {
        let mut v: Value = serde_yaml::from_str("defaultMode: 0644\nother: 0644\n").unwrap();
        fix_octal_modes(&mut v);
        assert_eq!(v.get("defaultMode"), Some(&Value::from(420)));
        assert_eq!(v.get("other"), Some(&s("0644")));
    }

    #[test]
    fn split_keeps_every_byte() {
        for input in [
            "",
            "a: 1\n",
            "---\na: 1\n---\nb: 2",
            "# c\n---\n---\na: 1\n--- # x\nb: 2\n...\n",
            "--- {a: 1}\n---\n",
        ] {
            let docs = split_documents(input);
            let joined: String = docs
                .iter()
                .map(|d| format!("{}{}", &input[d.separator.clone()], &input[d.body.clone()]))
                .collect();
            assert_eq!(joined, input);
        }
    }

    #[test]
    fn options_are_validated() {
        let mut o = InjectOptions::default();
        assert!(o.validate().is_ok());
        o.pins_secret = "Bad_Name".into();
        assert!(o.validate().is_err());
        let o = InjectOptions {
            admin_port: 3128,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        let o = InjectOptions {
            ca_dir: "rel".into(),
            ..Default::default()
        };
        assert!(o.validate().is_err());
    }

    #[test]
    fn markers() {
        let v: Value = serde_yaml::from_str(
            "metadata: {annotations: {pinproxy.io/inject: 'false'}, labels: {pinproxy.io/inject: 'true'}}",
        )
        .unwrap();
        assert!(has_inject_marker(&v, false));
        assert!(has_inject_marker(&v, true));
    }
}
