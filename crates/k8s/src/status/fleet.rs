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

/// What a sidecar's `/metrics` says about it. A value that is not what
/// pinproxy serves there (a `sha256` that is not 64 lowercase hex digits, a
/// counter that is not a whole number, …) is left out and its series named
/// in `invalid`: a pod with a container named `pinproxy` may serve anything.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MetricFacts {
    /// Sum of `pinproxy_pin_mismatch_total` over hosts and modes.
    pub mismatches: u64,
    pub reload_successes: u64,
    /// `pinproxy_config_reloads_total` of every refusal: `failure`,
    /// `bad-signature` and `rollback`.
    pub reload_failures: u64,
    /// `pinproxy_config_last_reload_successful` (1/0), when the sidecar has it.
    pub last_reload_ok: Option<bool>,
    /// `pinproxy_build_info{version}`.
    pub version: Option<String>,
    /// `pinproxy_config_generation`.
    pub generation: Option<u64>,
    /// `pinproxy_pinset_info{sha256}`: the pins file in force (64
    /// lowercase hex digits).
    pub pins_sha256: Option<String>,
    /// The smallest `pinproxy_pinset_expiry_timestamp_seconds` and its host.
    pub nearest_expiry: Option<(i64, String)>,
    /// The series whose values were malformed, each once, as first met.
    pub invalid: Vec<&'static str>,
}

pub const SHA256: &str = "pinproxy_pinset_info{sha256}";
pub const VERSION: &str = "pinproxy_build_info{version}";
pub const GENERATION: &str = "pinproxy_config_generation";
pub const MISMATCHES: &str = "pinproxy_pin_mismatch_total";
pub const RELOADS: &str = "pinproxy_config_reloads_total";
pub const LAST_RELOAD: &str = "pinproxy_config_last_reload_successful";
pub const EXPIRY: &str = "pinproxy_pinset_expiry_timestamp_seconds";

/// Parses the Prometheus text format far enough for [`MetricFacts`].
pub fn parse_metrics(text: &str) -> MetricFacts {
    let mut p = MetricsParser::default();
    text.lines().for_each(|l| p.line(l));
    p.finish()
}

/// [`parse_metrics`] a line at a time, for a body read as it comes.
#[derive(Debug, Default)]
pub struct MetricsParser {
    f: MetricFacts,
}

impl MetricsParser {
    pub fn line(&mut self, line: &str) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            return;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        let what = match name {
            "pinproxy_pinset_info" => SHA256,
            "pinproxy_build_info" => VERSION,
            "pinproxy_config_generation" => GENERATION,
            "pinproxy_pin_mismatch_total" => MISMATCHES,
            "pinproxy_config_reloads_total" => RELOADS,
            "pinproxy_config_last_reload_successful" => LAST_RELOAD,
            "pinproxy_pinset_expiry_timestamp_seconds" => EXPIRY,
            _ => return,
        };
        match sample(&line[name_end..]) {
            Some((labels, value)) => self.sample(what, &labels, value),
            None => self.invalid(what),
        }
    }

    fn invalid(&mut self, what: &'static str) {
        if !self.f.invalid.contains(&what) {
            self.f.invalid.push(what);
        }
    }

    fn sample(&mut self, what: &'static str, labels: &[(String, String)], value: f64) {
        let label = |name: &str| {
            labels
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let f = &mut self.f;
        let ok = match what {
            MISMATCHES => count(value)
                .and_then(|n| f.mismatches.checked_add(n))
                .map(|sum| f.mismatches = sum)
                .is_some(),
            RELOADS => {
                let total = match label("result") {
                    Some("success") => &mut f.reload_successes,
                    // Every refused version: a pinset that does not load,
                    // and with signed pinsets one refused `bad-signature`
                    // or `rollback`.
                    Some("failure" | "bad-signature" | "rollback") => &mut f.reload_failures,
                    _ => return,
                };
                count(value)
                    .and_then(|n| total.checked_add(n))
                    .map(|sum| *total = sum)
                    .is_some()
            }
            LAST_RELOAD if value == 1.0 => f.last_reload_ok.replace(true) != Some(false),
            LAST_RELOAD if value == 0.0 => f.last_reload_ok.replace(false) != Some(true),
            LAST_RELOAD => false,
            VERSION => match label("version").filter(|v| is_version(v)) {
                Some(v) if f.version.as_deref().is_none_or(|old| old == v) => {
                    f.version = Some(v.to_owned());
                    true
                }
                _ => false,
            },
            GENERATION => match count(value) {
                Some(g) if f.generation.is_none_or(|old| old == g) => {
                    f.generation = Some(g);
                    true
                }
                _ => false,
            },
            // The one series pinproxy keeps at 1; two that disagree say nothing.
            SHA256 if value != 1.0 => true,
            // Empty: a signed sidecar with nothing in force yet serves it so.
            SHA256 => match label("sha256").filter(|v| v.is_empty() || is_sha256(v)) {
                Some(v) if f.pins_sha256.as_deref().is_none_or(|old| old == v) => {
                    f.pins_sha256 = Some(v.to_owned());
                    true
                }
                _ => false,
            },
            EXPIRY => match (label("host").filter(|h| is_host(h)), timestamp(value)) {
                (Some(host), Some(t)) => {
                    if f.nearest_expiry.as_ref().is_none_or(|(n, _)| t < *n) {
                        f.nearest_expiry = Some((t, host.to_owned()));
                    }
                    true
                }
                _ => false,
            },
            _ => true,
        };
        if !ok {
            self.invalid(what);
        }
    }

    /// The facts, with every series found invalid left out.
    pub fn finish(mut self) -> MetricFacts {
        for what in self.f.invalid.clone() {
            match what {
                SHA256 => self.f.pins_sha256 = None,
                VERSION => self.f.version = None,
                GENERATION => self.f.generation = None,
                EXPIRY => self.f.nearest_expiry = None,
                LAST_RELOAD => self.f.last_reload_ok = None,
                _ => {}
            }
        }
        self.f
    }
}

/// A whole, non-negative count that an f64 holds exactly.
fn count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= (1u64 << 53) as f64).then_some(v as u64)
}

/// A Unix time of a day between years 1 and 9999.
fn timestamp(v: f64) -> Option<i64> {
    (v.is_finite() && (-62_135_596_800.0..253_402_300_800.0).contains(&v)).then_some(v as i64)
}

fn is_sha256(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `CARGO_PKG_VERSION`: a semantic version, build metadata included.
fn is_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

/// A pinset entry as written: a name, a wildcard, an IP literal.
fn is_host(v: &str) -> bool {
    (1..=255).contains(&v.len())
        && v.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*' | b':' | b'[' | b']')
        })
}

/// The labels and value of a sample, from just after the metric name:
/// `{name="value",…} value [timestamp]` (label values with the format's
/// `\\`, `\"` and `\n` escapes), or `None` if it is not that.
fn sample(rest: &str) -> Option<(Vec<(String, String)>, f64)> {
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            while chars.next_if(|(_, c)| *c == ' ' || *c == ',').is_some() {}
            let (start, c) = chars.next()?;
            if c == '}' {
                break start + 1;
            }
            if !(c.is_ascii_alphabetic() || c == '_') {
                return None;
            }
            let mut name_end = start + 1;
            while let Some((i, _)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
            {
                name_end = i + 1;
            }
            chars.next_if(|(_, c)| *c == '=')?;
            chars.next_if(|(_, c)| *c == '"')?;
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    c => value.push(c),
                }
            }
            labels.push((inner[start..name_end].to_owned(), value));
            if !matches!(chars.peek(), Some((_, ',' | '}' | ' '))) {
                return None;
            }
        };
        rest = &inner[end..];
    }
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next()?.parse::<f64>().ok()?;
    // An optional timestamp, and nothing after it.
    if fields.next().is_some_and(|t| t.parse::<i64>().is_err()) || fields.next().is_some() {
        return None;
    }
    Some((labels, value))
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
