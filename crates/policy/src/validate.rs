//! The one validation step: YAML wire types in, a [`Policy`] out — or
//! every problem found, each with host, field and line.
//!
//! The YAML parser gives no positions for values it accepted, so lines come
//! from a [`LineIndex`] built in one pass over the text: looking a field up
//! never rescans the file (operators load thousands of hosts).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::TrustAnchor;
use time::OffsetDateTime;

use super::files::{read_bundle, BundleError, Caps};
use super::identity::{self, ClientCert, FilePath, LoadedCrl};
use super::passthrough::{Item, Passthrough};
use super::pattern::{Pattern, Patterns};
use super::pin::Pin;
use super::problem::Problem;
use super::wire::{ClientCertWire, DefaultsWire, FileWire, HostWire, HostsWire};
use super::{Defaults, HostPolicy, Mode, Policy, ReportUri, Trust, Unlisted};
use lines::LineIndex;

pub(super) struct Validator<'a> {
    lines: LineIndex,
    base: &'a Path,
    read_from: &'a Path,
    now: OffsetDateTime,
    /// How much each named file, and the CRLs together, may weigh.
    caps: Caps,
    /// CRL entries read so far (all files).
    crl_entries: usize,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// CA bundles read, with their bytes: part of the source hash, so a
    /// rotated bundle is a change even when the pinset text is not.
    bundles: Vec<(PathBuf, Vec<u8>)>,
    /// Each bundle's anchors, read once however many entries name it.
    anchors: HashMap<PathBuf, Arc<[TrustAnchor<'static>]>>,
    /// Client certificates (by cert and key path) and CRL files, likewise.
    client_certs: HashMap<(PathBuf, PathBuf), Arc<ClientCert>>,
    crl_files: HashMap<PathBuf, Arc<LoadedCrl>>,
}

/// Why a `trust:` value is unusable.
#[derive(Debug, thiserror::Error)]
enum TrustError {
    #[error("empty: use webpki, pin-only or a path to a PEM CA bundle")]
    Empty,
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Where one host entry's problems are reported.
struct Entry<'k> {
    key: &'k str,
    line: Option<usize>,
    fields: HashMap<String, usize>,
}

impl Entry<'_> {
    /// The line of `field` within this entry, else the entry's own line.
    fn line_of(&self, field: &str) -> Option<usize> {
        self.fields.get(field).copied().or(self.line)
    }
}

// === impl Validator ===

impl<'a> Validator<'a> {
    pub(super) fn new(
        text: &str,
        base: &'a Path,
        read_from: &'a Path,
        now: OffsetDateTime,
        caps: Caps,
    ) -> Self {
        Self {
            lines: LineIndex::new(text),
            base,
            read_from,
            now,
            caps,
            crl_entries: 0,
            problems: Vec::new(),
            warnings: Vec::new(),
            bundles: Vec::new(),
            anchors: HashMap::new(),
            client_certs: HashMap::new(),
            crl_files: HashMap::new(),
        }
    }

    /// A file the pinset names: relative paths are named under the
    /// pinset's directory and read from the version of it the pinset was
    /// read from (one version of a Secret volume). A path that climbs out
    /// (`../identity/tls.crt`, another volume beside this one) is read
    /// where it is named: from inside the kubelet's timestamped directory,
    /// `..` would land back in this volume.
    fn file_path(&self, raw: &str) -> FilePath {
        let raw = Path::new(raw);
        let shown = self.base.join(raw);
        let climbs = raw.components().next() == Some(std::path::Component::ParentDir);
        let read = if raw.is_absolute() || climbs {
            shown.clone()
        } else {
            self.read_from.join(raw)
        };
        FilePath { shown, read }
    }

    pub(super) fn run(mut self, wire: FileWire, bytes: &[u8]) -> Result<Policy, Vec<Problem>> {
        if wire.version != 1 {
            let line = self.lines.top("version");
            self.err(
                None,
                Some("version"),
                line,
                format!("unsupported version {}; expected 1", wire.version),
            );
        }
        let serial = self.serial(wire.serial);
        let defaults = self.defaults(wire.defaults);
        let mut passthrough = self.passthrough(wire.passthrough.unwrap_or_default());
        let mut entries: Patterns<Arc<HostPolicy>> = Patterns::default();
        let mut hosts = Vec::new();
        let mut report_uris = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (key, mut wire) in self.hosts_key(wire.hosts) {
            let (line, fields) = self.lines.host(&key);
            let entry = Entry {
                key: &key,
                line,
                fields,
            };
            let Some(pattern) = self.pattern(&key, line) else {
                continue;
            };
            let canonical = pattern.canonical();
            if let Some(first) = seen.get(&canonical) {
                self.err(
                    Some(&key),
                    None,
                    line,
                    format!("duplicate host: the same entry as {first:?}"),
                );
                continue;
            }
            seen.insert(canonical, key.clone());
            let report_uri = wire.report_uri.take().and_then(|raw| {
                ReportUri::parse(&raw)
                    .map_err(|e| self.field_err(&entry, "report_uri", e))
                    .ok()
            });
            let Some(mut policy) = self.host(&entry, wire, &defaults) else {
                continue;
            };
            if let Some(cidr) = policy.address.and_then(|a| passthrough.keep_out(a.ip())) {
                let ip = policy.address.map(|a| a.ip().to_canonical());
                self.warn(
                    Some(&key),
                    Some("address"),
                    line,
                    format!(
                        "{} lies in passthrough CIDR {cidr}; it is not passed through \
                         (by IP or by another name resolving to it): only {key:?} reaches it, pinned",
                        ip.map(|i| i.to_string()).unwrap_or_default()
                    ),
                );
            }
            policy.index = hosts.len();
            report_uris.push(report_uri);
            let policy = Arc::new(policy);
            entries.insert(pattern, policy.clone());
            hosts.push(policy);
        }
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        if hosts.is_empty() && defaults.unlisted == Unlisted::Deny && passthrough.is_empty() {
            self.warn(
                None,
                Some("hosts"),
                self.lines.top("hosts"),
                "no hosts and unlisted: deny — this pinset refuses all egress; \
                 list hosts, or set defaults.unlisted: allow to observe first"
                    .into(),
            );
        }
        Ok(Policy {
            defaults,
            hosts,
            entries,
            passthrough,
            source_hash: self.source_hash(bytes),
            pins_sha256: hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()),
            named_sha256: self.named_hash(),
            warnings: self.warnings,
            report_uris,
            serial,
            signature: None,
            pending: false,
        })
    }

    /// `serial:` is a positive integer where present (required only in a
    /// signed pinset, which the reloader checks).
    fn serial(&mut self, serial: Option<u64>) -> Option<u64> {
        if serial == Some(0) {
            let line = self.lines.top("serial");
            self.err(
                None,
                Some("serial"),
                line,
                "must be a positive integer (raise it with every change), not 0".into(),
            );
        }
        serial.filter(|&n| n > 0)
    }

    /// The entries of `hosts:`; a file without the key is a problem, not
    /// an empty pinset.
    fn hosts_key(&mut self, hosts: Option<HostsWire>) -> Vec<(String, HostWire)> {
        if hosts.is_none() {
            self.err(
                None,
                Some("hosts"),
                None,
                "missing: list the pinned hosts (or write `hosts: {}` for none)".into(),
            );
        }
        hosts.map_or_else(Vec::new, |h| h.0)
    }

    fn source_hash(&self, bytes: &[u8]) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(bytes);
        self.hash_named(&mut ctx);
        hex(ctx.finish().as_ref())
    }

    /// Of the files the pinset names alone.
    fn named_hash(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        self.hash_named(&mut ctx);
        hex(ctx.finish().as_ref())
    }

    fn hash_named(&self, ctx: &mut ring::digest::Context) {
        for (path, contents) in &self.bundles {
            ctx.update(path.as_os_str().as_encoded_bytes());
            ctx.update(&(contents.len() as u64).to_be_bytes());
            ctx.update(contents);
        }
    }

    fn err(&mut self, host: Option<&str>, field: Option<&str>, line: Option<usize>, msg: String) {
        self.problems.push(Problem::new(host, field, line, msg));
    }

    fn warn(&mut self, host: Option<&str>, field: Option<&str>, line: Option<usize>, msg: String) {
        self.warnings.push(Problem::new(host, field, line, msg));
    }

    /// A problem with one field of a host entry, at that field's line.
    fn field_err(&mut self, e: &Entry<'_>, field: &str, msg: impl Into<String>) {
        let line = e.line_of(field.split(['[', '.']).next().unwrap_or(field));
        self.err(Some(e.key), Some(field), line, msg.into());
    }

    fn field_warn(&mut self, e: &Entry<'_>, field: &str, msg: impl Into<String>) {
        let line = e.line_of(field.split(['[', '.']).next().unwrap_or(field));
        self.warn(Some(e.key), Some(field), line, msg.into());
    }

    fn defaults(&mut self, d: DefaultsWire) -> Defaults {
        let trust = match d.trust.as_deref() {
            None => Trust::WebPki,
            Some("pin-only") => {
                let line = self.lines.default_field("trust");
                self.err(
                    None,
                    Some("defaults.trust"),
                    line,
                    "pin-only cannot be a default: set it on the hosts whose leaf keys you pin"
                        .into(),
                );
                Trust::WebPki
            }
            Some(t) => {
                let line = self.lines.default_field("trust");
                self.trust(t).unwrap_or_else(|e| {
                    self.err(None, Some("defaults.trust"), line, e.to_string());
                    Trust::WebPki
                })
            }
        };
        let ports = match d.ports {
            Some(p) => {
                let line = self.lines.default_field("ports");
                for msg in port_problems(&p) {
                    self.err(None, Some("defaults.ports"), line, msg.into());
                }
                p
            }
            None => vec![443],
        };
        let report_uri = d.report_uri.and_then(|raw| {
            let line = self.lines.default_field("report_uri");
            ReportUri::parse(&raw)
                .map_err(|e| self.err(None, Some("defaults.report_uri"), line, e.into()))
                .ok()
        });
        let unlisted = d.unlisted.unwrap_or(Unlisted::Deny);
        let ct = self.ct_defaults(d.ct, &trust, unlisted);
        Defaults {
            report_uri,
            ct,
            ct_written: d.ct,
            upstream_protocol: d.upstream_protocol.unwrap_or_default(),
            unlisted,
            mode: d.mode.unwrap_or(Mode::Enforce),
            trust,
            ports,
            allow_private: d.allow_private.unwrap_or(false),
        }
    }

    fn pattern(&mut self, key: &str, line: Option<usize>) -> Option<Pattern> {
        Pattern::parse(key)
            .map_err(|e| self.err(Some(key), None, line, e.to_string()))
            .ok()
    }

    /// The `passthrough:` list: host patterns and CIDRs.
    fn passthrough(&mut self, raw: Vec<String>) -> Passthrough {
        let mut out = Passthrough::default();
        let mut seen = std::collections::HashSet::new();
        let line = self.lines.top("passthrough");
        for (i, item) in raw.iter().enumerate() {
            let field = format!("passthrough[{i}]");
            match Item::parse(item) {
                Ok(parsed) if !seen.insert(format!("{parsed:?}")) => self.err(
                    None,
                    Some(&field),
                    line,
                    format!("duplicate passthrough item {item:?}"),
                ),
                Ok(parsed) => out.push(parsed, item),
                Err(e) => self.err(None, Some(&field), line, e.to_string()),
            }
        }
        out
    }

    /// One `hosts:` entry: each field checked in turn, every problem kept.
    fn host(&mut self, e: &Entry<'_>, w: HostWire, d: &Defaults) -> Option<HostPolicy> {
        let before = self.problems.len();
        let pins = self.required_pins(e, w.pins);
        let next_pins = self.next_pins(e, w.next_pins);
        let mode = w.mode.unwrap_or(d.mode);
        let trust = match w.trust.as_deref() {
            None => d.trust.clone(),
            Some(t) => match self.trust(t) {
                Ok(t) => t,
                Err(err) => {
                    self.field_err(e, "trust", err.to_string());
                    Trust::WebPki
                }
            },
        };
        if matches!(trust, Trust::PinOnly) && mode == Mode::Report {
            self.field_err(
                e,
                "mode",
                "trust: pin-only with mode: report would authenticate nothing; use enforce",
            );
        }
        let expires = w.expires.and_then(|s| self.expires(e, &s, &trust));
        let ports = match w.ports {
            Some(p) => {
                for msg in port_problems(&p) {
                    self.field_err(e, "ports", msg);
                }
                p
            }
            None => d.ports.clone(),
        };
        let address = w.address.and_then(|a| self.address(e, &a));
        let client_cert = w.client_cert.and_then(|c| self.client_cert(e, c));
        let names = self.names(e, w.names);
        let crls = self.crls(e, w.crls, w.crl_policy, &trust);
        let ct = self.ct_entry(e, w.ct, &trust, d.ct_written);
        if self.problems.len() != before {
            return None;
        }
        if pins.len() == 1 {
            self.field_warn(
                e,
                "pins",
                "only one pin: add a backup pin (a key you hold in reserve) so a key rotation cannot brick this host",
            );
        }
        Some(HostPolicy {
            index: 0,
            name: e.key.to_string(),
            pins,
            next_pins,
            mode,
            expires,
            ports,
            trust,
            address,
            client_cert,
            names,
            crls,
            ct,
            upstream_protocol: w.upstream_protocol.unwrap_or(d.upstream_protocol),
        })
    }

    fn required_pins(&mut self, e: &Entry<'_>, raw: Option<Vec<String>>) -> Vec<Pin> {
        match raw {
            None => {
                // Reported at the host's line: the field is not there.
                self.err(
                    Some(e.key),
                    Some("pins"),
                    e.line,
                    "missing: at least one pin is required".into(),
                );
                Vec::new()
            }
            Some(p) if p.is_empty() => {
                self.field_err(
                    e,
                    "pins",
                    "empty: at least one pin is required (an empty pinset would pin nothing)",
                );
                Vec::new()
            }
            Some(p) => self.pins(e, "pins", p),
        }
    }

    fn next_pins(&mut self, e: &Entry<'_>, raw: Option<Vec<String>>) -> Vec<Pin> {
        match raw {
            None => Vec::new(),
            Some(p) if p.is_empty() => {
                self.field_err(
                    e,
                    "next_pins",
                    "empty: omit next_pins or list the pins about to roll out",
                );
                Vec::new()
            }
            Some(p) => self.pins(e, "next_pins", p),
        }
    }

    fn pins(&mut self, e: &Entry<'_>, field: &str, raw: Vec<String>) -> Vec<Pin> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, p) in raw.iter().enumerate() {
            match p.parse::<Pin>() {
                Ok(pin) if out.contains(&pin) => {
                    self.field_err(e, &format!("{field}[{i}]"), format!("duplicate pin {pin}"))
                }
                Ok(pin) => out.push(pin),
                Err(err) => self.field_err(e, &format!("{field}[{i}]"), err.to_string()),
            }
        }
        out
    }

    /// The end of the `expires` day (UTC); warns when it is past or near.
    fn expires(&mut self, e: &Entry<'_>, s: &str, trust: &Trust) -> Option<OffsetDateTime> {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let Ok(date) = time::Date::parse(s.trim(), &fmt) else {
            self.field_err(
                e,
                "expires",
                format!("invalid date {s:?}: expected YYYY-MM-DD"),
            );
            return None;
        };
        let end = date.next_day().unwrap_or(date).midnight().assume_utc();
        if end <= self.now {
            let what = if matches!(trust, Trust::PinOnly) {
                "pinset expired; with trust: pin-only nothing is left to validate, so connections fail closed"
            } else {
                "pinset expired: pins are no longer enforced (CA validation still is)"
            };
            self.field_warn(e, "expires", what);
        } else if end - self.now < time::Duration::days(30) {
            self.field_warn(e, "expires", format!("pinset expires within 30 days ({s})"));
        }
        Some(end)
    }

    /// A wildcard entry may name one too (docs/reference.md: one gateway serving
    /// many names); SNI and the name check stay the requested host.
    fn address(&mut self, e: &Entry<'_>, a: &str) -> Option<SocketAddr> {
        match a.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.field_err(
                    e,
                    "address",
                    format!("{a:?} is not IP:port (e.g. 10.0.0.7:8443 or [fd00::7]:443)"),
                );
                None
            }
        }
    }

    /// `Err`: for the caller to report at the right field.
    fn trust(&mut self, raw: &str) -> Result<Trust, TrustError> {
        match raw {
            "webpki" => Ok(Trust::WebPki),
            "pin-only" => Ok(Trust::PinOnly),
            "" => Err(TrustError::Empty),
            raw => {
                let FilePath { shown: path, read } = self.file_path(raw);
                if let Some(anchors) = self.anchors.get(&path) {
                    let anchors = anchors.clone();
                    return Ok(Trust::Bundle { path, anchors });
                }
                let (anchors, contents) = read_bundle(&read, self.caps.file)?;
                self.bundles.push((path.clone(), contents));
                self.anchors.insert(path.clone(), anchors.clone());
                Ok(Trust::Bundle { path, anchors })
            }
        }
    }
}

fn port_problems(raw: &[u16]) -> Vec<&'static str> {
    let mut out = Vec::new();
    if raw.is_empty() {
        out.push("empty: list at least one port");
    }
    if raw.contains(&0) {
        out.push("port 0 is not a port");
    }
    out
}

mod fields_ct;
mod fields_identity;
mod lines;
#[cfg(test)]
mod tests;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
