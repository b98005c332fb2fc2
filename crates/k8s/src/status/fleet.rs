//! What `pinproxy status` reads out of API objects and a sidecar's
//! `/metrics`, as pure functions of JSON and text (tested without a cluster).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::inject::{ADMIN_PORT_NAME, CONTAINER_NAME, INJECT_ANNOTATION, PINS_VOLUME};

/// The documented admin port, when the container names none.
const DEFAULT_ADMIN_PORT: u16 = 9901;

/// A pod's pinproxy container, as its spec describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    pub admin_port: u16,
    pub image: String,
    /// The Secret behind the `pinproxy-pins` volume, if it is one.
    pub pins_secret: Option<String>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    let spec = pod.get("spec");
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(move |k| spec.and_then(|s| s.get(k)).and_then(Value::as_array))
        .flatten()
}

/// The pinproxy sidecar of `pod` (native or legacy), if it has one.
pub fn sidecar_of(pod: &Value) -> Option<Sidecar> {
    let c = containers(pod).find(|c| str_at(c, &["name"]) == Some(CONTAINER_NAME))?;
    let admin_port = c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| str_at(p, &["name"]) == Some(ADMIN_PORT_NAME))
        .and_then(|p| p.get("containerPort")?.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_ADMIN_PORT);
    let pins_secret = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| str_at(v, &["name"]) == Some(PINS_VOLUME))
        .and_then(|v| str_at(v, &["secret", "secretName"]))
        .map(str::to_owned);
    Some(Sidecar {
        admin_port,
        image: str_at(c, &["image"]).unwrap_or("").to_owned(),
        pins_secret,
    })
}

/// Why `pod` should have the sidecar (it asked for injection and did not
/// opt out), or `None`. `ns_labels`: its namespace's labels.
pub fn asked_for_injection(pod: &Value, ns_labels: &BTreeMap<String, String>) -> Option<String> {
    let meta = pod.get("metadata")?;
    let label = str_at(meta, &["labels", INJECT_ANNOTATION]);
    let annotation = str_at(meta, &["annotations", INJECT_ANNOTATION]);
    if label == Some("false") || annotation == Some("false") {
        return None;
    }
    if label == Some("true") {
        return Some(format!("pod label {INJECT_ANNOTATION}=true"));
    }
    if annotation == Some("true") {
        return Some(format!(
            "pod annotation {INJECT_ANNOTATION}: \"true\" (deprecated: the chart selects the label)"
        ));
    }
    match ns_labels.get(INJECT_ANNOTATION).map(String::as_str) {
        Some("enabled") => Some(format!("namespace label {INJECT_ANNOTATION}=enabled")),
        _ => None,
    }
}

/// What a sidecar's `/metrics` says about it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MetricFacts {
    /// Sum of `pinproxy_pin_mismatch_total` over hosts and modes.
    pub mismatches: f64,
    pub reload_successes: f64,
    pub reload_failures: f64,
    /// `pinproxy_config_last_reload_successful` (1/0), when the sidecar has it.
    pub last_reload_ok: Option<bool>,
    /// `pinproxy_build_info{version}`.
    pub version: Option<String>,
    /// `pinproxy_config_generation`.
    pub generation: Option<u64>,
    /// `pinproxy_pinset_info{sha256}`: the pins file in force.
    pub pins_sha256: Option<String>,
    /// The smallest `pinproxy_pinset_expiry_timestamp_seconds` and its host.
    pub nearest_expiry: Option<(i64, String)>,
}

/// Parses the Prometheus text format far enough for [`MetricFacts`].
pub fn parse_metrics(text: &str) -> MetricFacts {
    let mut f = MetricFacts::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        match name {
            "pinproxy_pin_mismatch_total" => f.mismatches += value,
            "pinproxy_config_reloads_total" if labels.contains("result=\"success\"") => {
                f.reload_successes += value
            }
            "pinproxy_config_reloads_total" if labels.contains("result=\"failure\"") => {
                f.reload_failures += value
            }
            "pinproxy_config_last_reload_successful" => f.last_reload_ok = Some(value == 1.0),
            "pinproxy_build_info" => f.version = label(labels, "version"),
            "pinproxy_config_generation" if value >= 0.0 => f.generation = Some(value as u64),
            "pinproxy_pinset_info" if value == 1.0 => f.pins_sha256 = label(labels, "sha256"),
            "pinproxy_pinset_expiry_timestamp_seconds" => {
                if let Some(host) = label(labels, "host") {
                    let t = value as i64;
                    if f.nearest_expiry.as_ref().is_none_or(|(n, _)| t < *n) {
                        f.nearest_expiry = Some((t, host));
                    }
                }
            }
            _ => {}
        }
    }
    f
}

/// The value of `name="…"` in a label list (no escapes in our values).
fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let len = labels[start..].find('"')?;
    Some(labels[start..start + len].to_owned())
}

/// The SHA-256 (hex) of `pins.yaml` in a Secret object, as the sidecar
/// hashes the file the kubelet writes from it.
pub fn secret_pins_sha256(secret: &Value) -> Option<String> {
    use base64::Engine;
    let b64 = str_at(secret, &["data", "pins.yaml"])?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(hex(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
