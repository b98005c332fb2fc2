//! The `pinproxy` container, as a value. Where it goes in a pod template is
//! [`super::template`]'s business; what the app containers get is
//! [`super::env`]'s.

use serde_yaml::{Mapping, Value};

use super::trust::{CA_EXTRA_DIR, CA_EXTRA_VOLUME};
use super::yaml::{map, s};
use super::{InjectOptions, ADMIN_PORT_NAME, CA_VOLUME, CONTAINER_NAME, PINS_VOLUME};

// === impl InjectOptions ===

impl InjectOptions {
    /// The `pinproxy` container, its keys in kubectl's usual order: a native
    /// sidecar (`restartPolicy: Always`) or a regular container.
    pub(super) fn sidecar(&self, pins_secret_dir: &str, native: bool) -> Value {
        let mut c = Mapping::new();
        c.insert(s("name"), s(CONTAINER_NAME));
        c.insert(s("image"), s(&self.image));
        if let Some(p) = &self.image_pull_policy {
            c.insert(s("imagePullPolicy"), s(p));
        }
        if native {
            c.insert(s("restartPolicy"), s("Always"));
        }
        c.insert(s("args"), self.sidecar_args(pins_secret_dir));
        let mut env = pod_identity_env();
        env.extend(self.signing_env());
        c.insert(s("env"), Value::Sequence(env));
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
    /// interfaces for kubelet and Prometheus, one `--ca-bundle-extra` per
    /// extra CA.
    fn sidecar_args(&self, pins_secret_dir: &str) -> Value {
        let mut args = vec![
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
        if self.transparent {
            args.extend([
                "--transparent".to_string(),
                format!("127.0.0.1:{}", self.redirect.port),
            ]);
        }
        for ca in self.extra_cas() {
            args.extend(["--ca-bundle-extra".to_string(), ca.file()]);
        }
        if let Some(file) = &self.learn_file {
            args.extend(["--learn-file".to_string(), file.clone()]);
        }
        args.extend(self.signing_args());
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

    /// The UID the sidecar runs as: in transparent mode the one the rules
    /// exempt, which no app container may share.
    pub(super) fn sidecar_uid(&self) -> i64 {
        if self.transparent {
            i64::from(self.redirect.uid)
        } else {
            self.run_as_user
        }
    }

    /// What the restricted Pod Security Standard asks of a container.
    fn sidecar_security_context(&self) -> Value {
        let uid = self.sidecar_uid();
        map([
            ("runAsNonRoot", Value::Bool(true)),
            ("runAsUser", Value::from(uid)),
            ("runAsGroup", Value::from(uid)),
            ("allowPrivilegeEscalation", Value::Bool(false)),
            ("readOnlyRootFilesystem", Value::Bool(true)),
            (
                "capabilities",
                map([("drop", Value::Sequence(vec![s("ALL")]))]),
            ),
            ("seccompProfile", map([("type", s("RuntimeDefault"))])),
        ])
    }

    /// The pins Secret as a directory (a `subPath` mount never updates), the
    /// CA directory the proxy writes, and the extra CAs if any.
    fn sidecar_mounts(&self, pins_secret_dir: &str) -> Value {
        let mut mounts = vec![
            map([
                ("name", s(PINS_VOLUME)),
                ("mountPath", s(pins_secret_dir)),
                ("readOnly", Value::Bool(true)),
            ]),
            map([("name", s(CA_VOLUME)), ("mountPath", s(&self.ca_dir))]),
        ];
        if !self.extra_cas().is_empty() {
            mounts.push(map([
                ("name", s(CA_EXTRA_VOLUME)),
                ("mountPath", s(CA_EXTRA_DIR)),
                ("readOnly", Value::Bool(true)),
            ]));
        }
        mounts.extend(self.identity_mounts());
        mounts.extend(self.learn_mount());
        mounts.extend(self.signing_mounts());
        Value::Sequence(mounts)
    }
}

/// The pod's name and namespace from the downward API: failure reports
/// say which workload saw the failure.
fn pod_identity_env() -> Vec<Value> {
    let field = |name: &str, path: &str| {
        map([
            ("name", s(name)),
            (
                "valueFrom",
                map([("fieldRef", map([("fieldPath", s(path))]))]),
            ),
        ])
    };
    vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
    ]
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
