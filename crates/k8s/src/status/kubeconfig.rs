//! Where the API server is and how to authenticate to it: a kubeconfig
//! file (`--kubeconfig`, else the first file of `$KUBECONFIG`, else
//! `~/.kube/config`), or the pod's service account when run in-cluster.
//!
//! What is supported is what a static kubeconfig carries: the server URL,
//! its CA (file or data), `tls-server-name`, a client certificate and key
//! (files or data), a bearer `token` or `tokenFile`. Exec and auth-provider
//! plugins are refused with a clear error rather than half-supported; so is
//! `insecure-skip-tls-verify` (status reads Secrets: the server must be
//! authenticated).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// Service-account files of an in-cluster pod.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a kubeconfig: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a pod (no KUBERNETES_SERVICE_HOST)")]
    Nothing,
}

/// Everything needed to talk to the API server. Secret material stays in
/// memory and never reaches an error message.
#[derive(Clone)]
pub struct ApiConfig {
    /// `https://host:port`, no trailing slash, path prefix kept.
    pub server: String,
    /// Name the server's certificate must carry (`tls-server-name`, else the URL's host).
    pub server_name: String,
    /// PEM CA certificates; empty: Mozilla's roots.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate chain and key.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    pub token: Option<String>,
    /// Where this came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("server", &self.server)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KubeConfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    exec: Option<serde_yaml::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

/// The kubeconfig to use: `explicit`, else `$KUBECONFIG`'s first existing
/// file, else `~/.kube/config` if it exists.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        if let Some(p) = std::env::split_paths(&list).find(|p| p.is_file()) {
            return Some(p);
        }
    }
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".kube/config");
    p.is_file().then_some(p)
}

/// Loads the API config: a kubeconfig if one is found, else in-cluster.
pub fn load(explicit: Option<&Path>, context: Option<&str>) -> Result<ApiConfig, ConfigError> {
    match locate(explicit) {
        Some(path) => from_file(&path, context),
        None => in_cluster(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn b64(field: &str, data: &str) -> Result<Vec<u8>, ConfigError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ConfigError::Invalid(format!("{field}: not base64 ({e})")))
}

/// `data` (base64) or `file` (relative to the kubeconfig's directory).
fn inline_or_file(
    dir: &Path,
    field: &str,
    data: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    match (data, file) {
        (Some(d), _) => b64(&format!("{field}-data"), d).map(Some),
        (None, Some(f)) => read(&dir.join(f)).map(Some),
        (None, None) => Ok(None),
    }
}

pub fn from_file(path: &Path, context: Option<&str>) -> Result<ApiConfig, ConfigError> {
    let bytes = read(path)?;
    let cfg: KubeConfig = serde_yaml::from_slice(&bytes).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let want = context.unwrap_or(&cfg.current_context);
    let ctx = cfg
        .contexts
        .iter()
        .find(|c| c.name == want)
        .ok_or_else(|| ConfigError::Invalid(format!("{}: no context {want:?}", path.display())))?;
    let cluster = cfg
        .clusters
        .iter()
        .find(|c| c.name == ctx.context.cluster)
        .map(|c| &c.cluster)
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "{}: context {want:?} names cluster {:?}, which is not defined",
                path.display(),
                ctx.context.cluster
            ))
        })?;
    let user = cfg
        .users
        .iter()
        .find(|u| u.name == ctx.context.user)
        .map(|u| &u.user);
    cluster_config(path, dir, cluster, user)
}

fn cluster_config(
    path: &Path,
    dir: &Path,
    cluster: &Cluster,
    user: Option<&User>,
) -> Result<ApiConfig, ConfigError> {
    if cluster.insecure_skip_tls_verify {
        return Err(ConfigError::Invalid(format!(
            "{}: insecure-skip-tls-verify is not supported: status reads Secrets, the API server must be verified (add certificate-authority)",
            path.display()
        )));
    }
    let ca_pem = inline_or_file(
        dir,
        "certificate-authority",
        cluster.certificate_authority_data.as_deref(),
        cluster.certificate_authority.as_deref(),
    )?
    .unwrap_or_default();
    let (mut client_cert, mut token) = (None, None);
    if let Some(u) = user {
        if u.exec.is_some() || u.auth_provider.is_some() {
            return Err(ConfigError::Invalid(format!(
                "{}: exec and auth-provider credential plugins are not supported; use a kubeconfig with a token or a client certificate",
                path.display()
            )));
        }
        let cert = inline_or_file(
            dir,
            "client-certificate",
            u.client_certificate_data.as_deref(),
            u.client_certificate.as_deref(),
        )?;
        let key = inline_or_file(
            dir,
            "client-key",
            u.client_key_data.as_deref(),
            u.client_key.as_deref(),
        )?;
        client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "{}: a client certificate needs both client-certificate and client-key",
                    path.display()
                )))
            }
        };
        token = match (&u.token, &u.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                String::from_utf8_lossy(&read(&dir.join(f))?)
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
    }
    let (server, host) = server_url(&cluster.server)?;
    Ok(ApiConfig {
        server,
        server_name: cluster.tls_server_name.clone().unwrap_or(host),
        ca_pem,
        client_cert,
        token,
        source: path.display().to_string(),
    })
}

/// `https://host[:port][/prefix]` → (URL without trailing slash, host).
fn server_url(server: &str) -> Result<(String, String), ConfigError> {
    let uri: http::Uri = server
        .parse()
        .map_err(|e| ConfigError::Invalid(format!("server {server:?}: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(ConfigError::Invalid(format!(
            "server {server:?}: only https:// API servers are supported"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| ConfigError::Invalid(format!("server {server:?}: no host")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((server.trim_end_matches('/').to_string(), host))
}

/// The pod's service account: `$KUBERNETES_SERVICE_HOST:PORT`, its token
/// and the cluster CA.
pub fn in_cluster() -> Result<ApiConfig, ConfigError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| ConfigError::Nothing)?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let dir = Path::new(SA_DIR);
    let token = String::from_utf8_lossy(&read(&dir.join("token"))?)
        .trim()
        .to_string();
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(ApiConfig {
        server: format!("https://{bracketed}:{port}"),
        server_name: host,
        ca_pem: read(&dir.join("ca.crt"))?,
        client_cert: None,
        token: Some(token),
        source: "in-cluster service account".into(),
    })
}
