//! Extra CAs for the app's trust bundle (docs/reference.md, "Kubernetes
//! interface").
//!
//! The proxy writes `<ca dir>/ca-bundle.crt`: the pod CA, Mozilla's roots
//! and every PEM given with `pinproxy run --ca-bundle-extra FILE`. A
//! cluster's internal CA usually lives in a ConfigMap (`kube-root-ca.crt`,
//! which Kubernetes puts in every namespace, or a trust-manager Bundle) or a
//! Secret (cert-manager's `ca.crt`), so `inject --ca-bundle-extra-from
//! configmap/NAME[:KEY]` names one: every source becomes one item of a
//! single projected volume, mounted read-only into the sidecar at
//! [`CA_EXTRA_DIR`] as a directory (never `subPath`, which never updates),
//! and one `--ca-bundle-extra` argument. Like the pins Secret, the object
//! must exist in the workload's namespace, or the pod does not start.

use std::fmt;
use std::str::FromStr;

use serde_yaml::Value;

use super::template::{map, s};
use super::{is_dns_subdomain, InjectOptions};

/// Where the sidecar finds the extra CA files.
pub const CA_EXTRA_DIR: &str = "/etc/pinproxy-ca-extra";
/// The projected volume holding them.
pub const CA_EXTRA_VOLUME: &str = "pinproxy-ca-extra";
/// The key read when a source names none: what cert-manager, trust-manager
/// and `kube-root-ca.crt` use.
const DEFAULT_KEY: &str = "ca.crt";

/// One PEM file, from a ConfigMap or a Secret of the workload's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraCa {
    pub kind: ExtraCaKind,
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraCaKind {
    ConfigMap,
    Secret,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not configmap/NAME[:KEY] or secret/NAME[:KEY]: {reason}")]
pub struct ExtraCaError {
    value: String,
    reason: &'static str,
}

// === impl ExtraCa ===

impl ExtraCa {
    /// Path inside the projected volume (and so under [`CA_EXTRA_DIR`]).
    fn path(&self) -> String {
        format!("{}/{}/{}", self.kind.as_str(), self.name, self.key)
    }

    /// The `--ca-bundle-extra` argument of `pinproxy run`.
    pub fn file(&self) -> String {
        format!("{CA_EXTRA_DIR}/{}", self.path())
    }

    /// One `sources` entry of the projected volume.
    fn projection(&self) -> Value {
        let items = Value::Sequence(vec![map([
            ("key", s(&self.key)),
            ("path", s(&self.path())),
        ])]);
        let field = match self.kind {
            ExtraCaKind::ConfigMap => "configMap",
            ExtraCaKind::Secret => "secret",
        };
        map([(field, map([("name", s(&self.name)), ("items", items)]))])
    }
}

impl FromStr for ExtraCa {
    type Err = ExtraCaError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ExtraCaError {
            value: value.to_string(),
            reason,
        };
        let (kind, rest) = value
            .split_once('/')
            .ok_or_else(|| bad("no KIND/ before the name"))?;
        let kind = match kind.to_ascii_lowercase().as_str() {
            "configmap" => ExtraCaKind::ConfigMap,
            "secret" => ExtraCaKind::Secret,
            _ => return Err(bad("the kind is neither configmap nor secret")),
        };
        let (name, key) = rest.split_once(':').unwrap_or((rest, DEFAULT_KEY));
        if !is_dns_subdomain(name) {
            return Err(bad("the name is not a valid Kubernetes name"));
        }
        // ConfigMap and Secret keys: [-._a-zA-Z0-9]+, and never `.` or `..`.
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !key_ok {
            return Err(bad("the key is not a valid ConfigMap/Secret key"));
        }
        Ok(ExtraCa {
            kind,
            name: name.to_string(),
            key: key.to_string(),
        })
    }
}

impl fmt::Display for ExtraCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.kind.as_str(), self.name, self.key)
    }
}

impl ExtraCaKind {
    fn as_str(self) -> &'static str {
        match self {
            ExtraCaKind::ConfigMap => "configmap",
            ExtraCaKind::Secret => "secret",
        }
    }
}

// === impl InjectOptions ===

impl InjectOptions {
    /// The extra CA sources, each once, in the order given.
    pub(super) fn extra_cas(&self) -> Vec<&ExtraCa> {
        let mut out: Vec<&ExtraCa> = Vec::new();
        for ca in &self.ca_bundle_extra {
            if !out.contains(&ca) {
                out.push(ca);
            }
        }
        out
    }

    /// The projected volume of the extra CAs; `None` when there are none.
    pub(super) fn extra_ca_volume(&self) -> Option<Value> {
        let extras = self.extra_cas();
        if extras.is_empty() {
            return None;
        }
        let sources = extras.iter().map(|ca| ca.projection()).collect();
        Some(map([
            ("name", s(CA_EXTRA_VOLUME)),
            ("projected", map([("sources", Value::Sequence(sources))])),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_a_default_key() {
        let ca: ExtraCa = "configmap/kube-root-ca.crt".parse().unwrap();
        assert_eq!(
            ca,
            ExtraCa {
                kind: ExtraCaKind::ConfigMap,
                name: "kube-root-ca.crt".into(),
                key: "ca.crt".into()
            }
        );
        assert_eq!(
            ca.file(),
            "/etc/pinproxy-ca-extra/configmap/kube-root-ca.crt/ca.crt"
        );
        let ca: ExtraCa = "Secret/internal-ca:root_2024.pem".parse().unwrap();
        assert_eq!(ca.to_string(), "secret/internal-ca:root_2024.pem");
        for bad in [
            "",
            "kube-root-ca.crt",
            "pod/x",
            "configmap/",
            "configmap/Bad_Name",
            "secret/x:",
            "secret/x:..",
            "secret/x:a/b",
        ] {
            assert!(bad.parse::<ExtraCa>().is_err(), "{bad:?} parsed");
        }
    }
}
