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
//!   kubelet propagates edits — never `subPath`), `pinproxy-ca` (an
//!   in-memory emptyDir where the proxy writes its per-pod CA and the
//!   app's trust bundle) and, given extra CAs, `pinproxy-ca-extra`, given
//!   `--learn-file`, `pinproxy-learn`;
//! - in every app container, `HTTP(S)_PROXY` / `NO_PROXY`, the CA trust
//!   variables, `NODE_USE_ENV_PROXY` and the JVM's proxy properties
//!   (appended to `JAVA_TOOL_OPTIONS`), plus a read-only mount of the CA
//!   directory;
//! - the label `pinproxy.io/injected: "true"`, which the PodMonitor selects.
//!
//! Injection refuses to guess (docs/reference.md, "pinproxy inject"): an app
//! container that already sends its traffic to another proxy is an error unless
//! [`InjectOptions::override_proxy`]; so is a container port that pinproxy's
//! listener or admin port would collide with. A `hostNetwork` pod is left alone
//! with a [`Warning`]: its loopback is the node's.
//!
//! Documents are split on their `---` lines and handled one by one. A
//! document that injection leaves unchanged (not a workload, opted out with
//! `pinproxy.io/inject: "false"`, or already injected with the same options)
//! is copied byte for byte; only changed documents are re-emitted, without
//! their comments. Injection is an upsert keyed by names (container
//! `pinproxy`, the volumes, env names; our block of `JAVA_TOOL_OPTIONS`), so
//! running it twice equals running it once, and re-running it with new
//! options updates the sidecar.
//!
//! The steps live in their own files: `documents` splits the
//! stream, `checks` refuses what it must, `template` places everything in a
//! pod template, `sidecar`, `env` and `trust` build the container, the app
//! environment and the extra-CA volume as values, `yaml` writes the result.
//!
//! The webhook ([`crate::webhook`]) calls [`inject_pod`] on the Pod of an
//! AdmissionReview, so both paths produce the same pod.

use std::io::{Read, Write};

use serde_yaml::Value;

mod args;
mod checks;
mod documents;
mod env;
mod identity;
mod init;
mod learn;
mod options;
mod sidecar;
mod signing;
mod subject;
mod template;
mod trust;
mod uid_lock;
mod yaml;

pub use args::{InjectArgs, SidecarArgs};
pub use identity::{IDENTITY_ANNOTATION, IDENTITY_DIR};
pub use learn::LEARN_VOLUME;
pub use signing::{
    InlineKey, PinsetKey, KEY_DIR, KEY_PEM_ENV, KEY_VOLUME, STATE_DIR, STATE_VOLUME,
};
pub use trust::{ExtraCa, ExtraCaError, ExtraCaKind, CA_EXTRA_DIR, CA_EXTRA_VOLUME};
pub use uid_lock::{lock_added, ALLOW_SETUID_ANNOTATION, RECORD_ANNOTATION as UID_LOCK_ANNOTATION};

use documents::{fix_octal_modes, split_documents};
use template::{inject_document, inject_template};

/// Pod label that opts a workload in (`"true"`: the webhook's
/// `objectSelector` matches it) or out (`"false"`). Also read as an
/// annotation, a deprecated alias the API server cannot select on.
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
/// Pod-template annotation turning transparent mode on (`"true"`) or off
/// (`"false"`) for that pod, whatever [`InjectOptions::transparent`] says.
pub const TRANSPARENT_ANNOTATION: &str = "pinproxy.io/transparent";
/// Name of transparent mode's init container.
pub const REDIRECT_CONTAINER_NAME: &str = "pinproxy-redirect";

/// Whether container `c` is the pinproxy sidecar.
fn is_sidecar(c: &Value) -> bool {
    c.get("name").and_then(Value::as_str) == Some(CONTAINER_NAME)
}

/// Whether container `c` is transparent mode's init container.
fn is_redirect(c: &Value) -> bool {
    c.get("name").and_then(Value::as_str) == Some(REDIRECT_CONTAINER_NAME)
}
/// Name of the admin container port (Prometheus scrapes it by name).
pub const ADMIN_PORT_NAME: &str = "pinproxy-admin";

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
    /// When a template already carries a `pinproxy` container, keep it a
    /// native sidecar or a regular container as it is, whatever
    /// `native_sidecar` says. The CLI and the webhook set it unless
    /// `--native-sidecar` or `--legacy-sidecar` is given, so that a manifest
    /// written for a cluster without native sidecars is never turned into
    /// one; `Default` leaves it off and `native_sidecar` is obeyed.
    pub keep_layout: bool,
    /// Replace the proxy an app container already names (`HTTP_PROXY`, …,
    /// `-Dhttps.proxyHost` in `JAVA_TOOL_OPTIONS`) instead of refusing.
    pub override_proxy: bool,
    /// ConfigMaps or Secrets whose PEM the proxy adds to `ca-bundle.crt`.
    pub ca_bundle_extra: Vec<ExtraCa>,
    /// Extra `NO_PROXY` entries (pod/service CIDRs, internal domains).
    pub no_proxy: Vec<String>,
    /// `--log-format` of the sidecar.
    pub log_format: String,
    /// UID/GID the sidecar runs as (the image's non-root user).
    pub run_as_user: i64,
    /// Transparent mode (docs/reference.md) for every template, unless one says
    /// otherwise with [`TRANSPARENT_ANNOTATION`].
    pub transparent: bool,
    /// How transparent mode is set up where it is on.
    pub redirect: Transparent,
    /// Secrets with a client certificate and key (mTLS upstream), mounted
    /// into the sidecar only, at `/etc/pinproxy-identity/NAME/`.
    pub identity_secrets: Vec<String>,
    /// The sidecar's `--learn-file`, its directory an emptyDir of its own.
    pub learn_file: Option<String>,
    /// Public keys the pinset must be signed with (`run --pinset-key`),
    /// from ConfigMaps/Secrets; with any, `--state-dir` on an emptyDir.
    pub pinset_key_from: Vec<PinsetKey>,
    /// Public keys given to the sidecar in its env (`run
    /// --pinset-key-pem`), read from the injector's own files; with any,
    /// `--state-dir` on an emptyDir. Refused together with
    /// `pinset_key_from`.
    pub pinset_key_inline: Vec<pinproxy_sign::PublicKey>,
    /// The sidecar's `--pinset-min-serial` (with keys only).
    pub pinset_min_serial: Option<pinproxy_sign::Serial>,
}

/// Transparent mode's settings: the init container's `pinproxy redirect`
/// and the sidecar's `--transparent` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transparent {
    /// Transparent listener port, on 127.0.0.1 and ::1.
    pub port: u16,
    /// UID the sidecar runs as; the rules let its connections through.
    pub uid: u32,
    /// Image with `pinproxy redirect` and iptables.
    pub init_image: String,
    /// Destination ports to redirect; empty: all TCP.
    pub ports: Vec<u16>,
    /// Destinations never redirected.
    pub exclude_cidr: Vec<String>,
    /// `redirect --lock`: reset what is not redirected, lock UDP.
    pub lock: bool,
    /// `redirect --allow-udp`: UDP destinations (`CIDR:PORT`) the lock lets through.
    pub allow_udp: Vec<String>,
    /// `redirect --log-drops`: log what the lock refuses (rate-limited).
    pub log_drops: bool,
    /// Set the proxy variables too.
    pub proxy_env: bool,
}

impl Default for Transparent {
    fn default() -> Self {
        Self {
            port: 15001,
            uid: 1337,
            init_image: default_init_image(),
            ports: Vec::new(),
            exclude_cidr: Vec::new(),
            lock: false,
            allow_udp: Vec::new(),
            log_drops: false,
            proxy_env: false,
        }
    }
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
    #[error(
        "{at}: container {container:?} already sets {variable}={value}; pinproxy would \
         replace it. Remove it, or pass --override-proxy to replace it"
    )]
    ProxyConflict {
        at: Box<TemplateRef>,
        container: String,
        variable: String,
        value: String,
    },
    #[error(
        "{at}: container {container:?} sets {variable} from valueFrom, so pinproxy cannot \
         append its proxy properties; set it as a value"
    )]
    NotAppendable {
        at: Box<TemplateRef>,
        container: String,
        variable: String,
    },
    #[error(
        "{at}: container {container:?} uses port {port}, which is pinproxy's {role} port in \
         the same pod; choose another with {flag}"
    )]
    PortConflict {
        at: Box<TemplateRef>,
        container: String,
        port: u16,
        role: &'static str,
        flag: &'static str,
    },
    #[error(
        "{at}: {who} runs as UID {uid}, the UID transparent mode lets through unredirected: \
         its traffic would bypass pinproxy. Run it as another UID, or choose another with \
         --transparent-uid"
    )]
    UidConflict {
        at: Box<TemplateRef>,
        who: String,
        uid: u32,
    },
    #[error(
        "{at}: container {container:?} can change its UID ({why}): in transparent mode it could \
         become UID {uid}, which the rules let through unredirected, and bypass pinproxy. Drop \
         that from its securityContext, or set the pod annotation pinproxy.io/allow-setuid: \
         \"true\" to accept the bypass"
    )]
    UidChange {
        at: Box<TemplateRef>,
        container: String,
        why: String,
        uid: u32,
    },
    #[error(
        "{at}: container {container:?} adds the capability {cap}: in transparent mode it could \
         {does}, and bypass pinproxy. Drop it from its securityContext, or set the pod annotation \
         pinproxy.io/allow-setuid: \"true\" to accept the bypass"
    )]
    RuleChange {
        at: Box<TemplateRef>,
        container: String,
        cap: String,
        does: String,
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

/// The pod template an error is about: the document's place in the stream,
/// and the template's name (or its workload's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    pub index: usize,
    pub kind: String,
    pub name: String,
}

/// A template injection skipped or did with a caveat. The CLI prints it on
/// stderr; the webhook returns its message in the AdmissionReview
/// `warnings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub index: usize,
    pub kind: String,
    pub name: String,
    pub message: String,
}

/// What injecting one template added: what the webhook logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// A native sidecar (true) or a regular container.
    pub native_sidecar: bool,
    /// Transparent mode: the redirect init container and `--transparent`.
    pub transparent: bool,
    /// Volumes added or updated.
    pub volumes: Vec<String>,
    /// App containers given the proxy environment and the CA mount.
    pub app_containers: Vec<String>,
}

/// A stream after injection, with what the caller should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub output: String,
    pub warnings: Vec<Warning>,
}

/// One Pod after injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    /// Whether the pod changed.
    pub changed: bool,
    /// What was added, when it changed.
    pub added: Option<Added>,
    pub warnings: Vec<Warning>,
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

fn default_init_image() -> String {
    format!(
        "ghcr.io/pinproxy/pinproxy-init:{}",
        env!("CARGO_PKG_VERSION")
    )
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
            keep_layout: false,
            override_proxy: false,
            ca_bundle_extra: Vec::new(),
            no_proxy: Vec::new(),
            log_format: "json".into(),
            run_as_user: 65532,
            transparent: false,
            redirect: Transparent::default(),
            identity_secrets: Vec::new(),
            learn_file: None,
            pinset_key_from: Vec::new(),
            pinset_key_inline: Vec::new(),
            pinset_min_serial: None,
        }
    }
}

// === entry points ===

/// `pinproxy inject`: read the file (or stdin), write the injected stream
/// to `out` (the command's stdout).
pub fn run(args: &InjectArgs, out: &mut impl Write) -> Result<(), InjectError> {
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
    let injected = inject_stream_with_warnings(&input, &opts)?;
    for w in &injected.warnings {
        eprintln!("pinproxy inject: warning: {w}");
    }
    out.write_all(injected.output.as_bytes())
        .and_then(|()| out.flush())
        .map_err(InjectError::Write)
}

/// Inject every Pod template of a multi-document YAML stream.
///
/// Documents that are not workloads, are opted out, or are already injected
/// with these options come back byte for byte. Warnings are dropped: see
/// [`inject_stream_with_warnings`].
pub fn inject_stream(input: &str, opts: &InjectOptions) -> Result<String, InjectError> {
    Ok(inject_stream_with_warnings(input, opts)?.output)
}

/// [`inject_stream`], also returning what was skipped or has a caveat.
pub fn inject_stream_with_warnings(
    input: &str,
    opts: &InjectOptions,
) -> Result<Injected, InjectError> {
    opts.validate()?;
    let mut warnings = Vec::new();
    let mut out = String::with_capacity(input.len() + 2048);
    for (index, doc) in split_documents(input).into_iter().enumerate() {
        let body = &input[doc.body.clone()];
        let mut value: Value = serde_yaml::from_str(body).map_err(|source| InjectError::Parse {
            index,
            line: doc.line,
            source,
        })?;
        let before = value.clone();
        let outcome = inject_document(&mut value, opts, index, &mut warnings)?;
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
    Ok(Injected {
        output: out,
        warnings,
    })
}

/// Inject one Pod object (as the webhook receives it). Returns whether the
/// pod changed. Opt-out and the "already injected" case leave it alone; the
/// caller decides whether the pod opted in.
pub fn inject_pod(pod: &mut Value, opts: &InjectOptions) -> Result<bool, InjectError> {
    Ok(inject_pod_report(pod, opts)?.changed)
}

/// [`inject_pod`], also returning what was added and any warning.
pub fn inject_pod_report(pod: &mut Value, opts: &InjectOptions) -> Result<PodReport, InjectError> {
    opts.validate()?;
    let before = pod.clone();
    let mut warnings = Vec::new();
    let added = inject_template(pod, opts, 0, "Pod", "<unnamed>", &mut warnings)?;
    let changed = *pod != before;
    Ok(PodReport {
        changed,
        added: added.filter(|_| changed),
        warnings,
    })
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

// === impl TemplateRef, Warning, Added ===

impl std::fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {} ({} {})", self.index, self.kind, self.name)
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "document {} ({} {}): {}",
            self.index, self.kind, self.name, self.message
        )
    }
}

impl std::fmt::Display for Added {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layout = if self.native_sidecar {
            "native sidecar"
        } else {
            "regular container"
        };
        let mode = if self.transparent {
            format!(" in transparent mode (init container {REDIRECT_CONTAINER_NAME})")
        } else {
            String::new()
        };
        write!(
            f,
            "{CONTAINER_NAME} as a {layout}{mode}; volumes {}; proxy env and CA mount in {}",
            self.volumes.join(", "),
            if self.app_containers.is_empty() {
                "no container".to_string()
            } else {
                self.app_containers.join(", ")
            }
        )
    }
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

#[cfg(test)]
mod tests;
