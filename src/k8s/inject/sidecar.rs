//! What injection adds, as values: the `pinproxy` container and the
//! environment every app container gets. Where they go in a pod template is
//! [`super::template`]'s business.

use serde_yaml::{Mapping, Value};

use super::template::{map, s};
use super::{InjectOptions, ADMIN_PORT_NAME, CA_VOLUME, CONTAINER_NAME, PINS_VOLUME};

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

// === impl InjectOptions: the app's environment ===

impl InjectOptions {
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
    pub(super) fn app_env(&self) -> Vec<(&'static str, String)> {
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
}

// === impl InjectOptions: the sidecar container ===

impl InjectOptions {
    /// The `pinproxy` container, its keys in kubectl's usual order.
    pub(super) fn sidecar(&self, pins_secret_dir: &str) -> Value {
        let mut c = Mapping::new();
        c.insert(s("name"), s(CONTAINER_NAME));
        c.insert(s("image"), s(&self.image));
        if let Some(p) = &self.image_pull_policy {
            c.insert(s("imagePullPolicy"), s(p));
        }
        if self.native_sidecar {
            c.insert(s("restartPolicy"), s("Always"));
        }
        c.insert(s("args"), self.sidecar_args(pins_secret_dir));
        c.insert(s("ports"), self.sidecar_ports());
        // startupProbe holds the app back (native sidecar) until the pinset
        // is loaded and ca.crt written; it allows 60 s for that.
        c.insert(s("startupProbe"), admin_probe("/readyz", 1, 60));
        c.insert(s("readinessProbe"), admin_probe("/readyz", 5, 3));
        c.insert(s("livenessProbe"), admin_probe("/healthz", 10, 3));
        c.insert(s("resources"), self.sidecar_resources());
        c.insert(s("securityContext"), self.sidecar_security_context());
        c.insert(s("volumeMounts"), self.sidecar_mounts(pins_secret_dir));
        Value::Mapping(c)
    }

    /// `pinproxy run …`: the proxy on loopback only, the admin port on all
    /// interfaces for kubelet and Prometheus.
    fn sidecar_args(&self, pins_secret_dir: &str) -> Value {
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
        Value::Sequence(args.iter().map(|a| s(a)).collect())
    }

    fn sidecar_ports(&self) -> Value {
        Value::Sequence(vec![map([
            ("name", s(ADMIN_PORT_NAME)),
            ("containerPort", Value::from(i64::from(self.admin_port))),
            ("protocol", s("TCP")),
        ])])
    }

    fn sidecar_resources(&self) -> Value {
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
        Value::Mapping(resources)
    }

    /// What the restricted Pod Security Standard asks of a container.
    fn sidecar_security_context(&self) -> Value {
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
        ])
    }

    /// The pins Secret as a directory (a `subPath` mount never updates) and
    /// the CA directory the proxy writes.
    fn sidecar_mounts(&self, pins_secret_dir: &str) -> Value {
        Value::Sequence(vec![
            map([
                ("name", s(PINS_VOLUME)),
                ("mountPath", s(pins_secret_dir)),
                ("readOnly", Value::Bool(true)),
            ]),
            map([("name", s(CA_VOLUME)), ("mountPath", s(&self.ca_dir))]),
        ])
    }
}

fn admin_probe(path: &str, period: i64, failures: i64) -> Value {
    map([
        (
            "httpGet",
            map([("path", s(path)), ("port", s(ADMIN_PORT_NAME))]),
        ),
        ("periodSeconds", Value::from(period)),
        ("timeoutSeconds", Value::from(1)),
        ("failureThreshold", Value::from(failures)),
    ])
}
