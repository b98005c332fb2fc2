//! Transparent mode's init container (docs/reference.md, "Transparent mode"):
//! `pinproxy redirect`, run once before everything else in the pod, the only
//! container holding
//! `NET_ADMIN` (and `NET_RAW`, which `iptables-legacy` needs).

use serde_yaml::Value;

use super::yaml::{map, s};
use super::{InjectOptions, REDIRECT_CONTAINER_NAME};

// === impl InjectOptions ===

impl InjectOptions {
    /// The `pinproxy-redirect` init container. It runs to completion before
    /// the sidecar and the app start: the rules are in place before any
    /// app process can open a connection.
    pub(super) fn redirect_container(&self) -> Value {
        let r = &self.redirect;
        let mut args = vec![
            "redirect".to_string(),
            "--proxy-uid".into(),
            r.uid.to_string(),
            "--port".into(),
            r.port.to_string(),
        ];
        if !r.ports.is_empty() {
            let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
            args.extend(["--ports".into(), ports.join(",")]);
        }
        for cidr in &r.exclude_cidr {
            args.extend(["--exclude-cidr".into(), cidr.clone()]);
        }
        if r.lock {
            args.push("--lock".into());
            for allow in &r.allow_udp {
                args.extend(["--allow-udp".into(), allow.clone()]);
            }
            if r.log_drops {
                args.push("--log-drops".into());
            }
        }
        let mut c = serde_yaml::Mapping::new();
        c.insert(s("name"), s(REDIRECT_CONTAINER_NAME));
        c.insert(s("image"), s(&r.init_image));
        if let Some(p) = &self.image_pull_policy {
            c.insert(s("imagePullPolicy"), s(p));
        }
        c.insert(
            s("args"),
            Value::Sequence(args.iter().map(|a| s(a)).collect()),
        );
        c.insert(
            s("resources"),
            map([
                ("requests", map([("cpu", s("10m")), ("memory", s("16Mi"))])),
                ("limits", map([("cpu", s("100m")), ("memory", s("64Mi"))])),
            ]),
        );
        // Root with two capabilities and nothing else: iptables needs both
        // in the pod's network namespace. It cannot escalate, writes
        // nothing (the nft backend takes no lock file) and exits.
        c.insert(
            s("securityContext"),
            map([
                ("runAsNonRoot", Value::Bool(false)),
                ("runAsUser", Value::from(0)),
                ("runAsGroup", Value::from(0)),
                ("allowPrivilegeEscalation", Value::Bool(false)),
                ("readOnlyRootFilesystem", Value::Bool(true)),
                (
                    "capabilities",
                    map([
                        ("add", Value::Sequence(vec![s("NET_ADMIN"), s("NET_RAW")])),
                        ("drop", Value::Sequence(vec![s("ALL")])),
                    ]),
                ),
                ("seccompProfile", map([("type", s("RuntimeDefault"))])),
            ]),
        );
        Value::Mapping(c)
    }
}
