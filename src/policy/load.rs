//! The pinset file: YAML wire types, one validation step, and the compiled
//! [`Policy`] the proxy consults.
//!
//! `check`, `run` and the live reloader all call [`load`]; it reads the file
//! (and any CA bundles it names), collects *every* problem with host, field
//! and line before failing, and never yields a half-valid policy.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::policy::host::Host;
use crate::policy::pin::Pin;

// === wire types ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    version: u32,
    #[serde(default)]
    defaults: DefaultsWire,
    #[serde(default)]
    hosts: HostsWire,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsWire {
    unlisted: Option<Unlisted>,
    mode: Option<Mode>,
    trust: Option<String>,
    ports: Option<Vec<u16>>,
    allow_private: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostWire {
    pins: Option<Vec<String>>,
    mode: Option<Mode>,
    expires: Option<String>,
    ports: Option<Vec<u16>>,
    trust: Option<String>,
    address: Option<String>,
    next_pins: Option<Vec<String>>,
}

/// `hosts:` keeps its entries in file order and keeps duplicates, so that
/// validation can report them (a plain map would silently keep the last).
#[derive(Default)]
struct HostsWire(Vec<(String, HostWire)>);

impl<'de> Deserialize<'de> for HostsWire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HostsWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of host name to host entry")
            }
            fn visit_unit<E>(self) -> Result<HostsWire, E> {
                Ok(HostsWire::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HostsWire, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Option<HostWire>>()? {
                    out.push((k, v.unwrap_or_default()));
                }
                Ok(HostsWire(out))
            }
        }
        d.deserialize_any(V)
    }
}

// === domain types ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    Deny,
    Allow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Report,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// Which roots a host's chain must lead to.
#[derive(Clone)]
pub enum Trust {
    /// Mozilla's roots from webpki-roots.
    WebPki,
    /// No CA validation; only the leaf key can satisfy a pin.
    PinOnly,
    /// A PEM bundle of internal CAs, read when the pinset was loaded.
    Bundle {
        path: PathBuf,
        anchors: Arc<[TrustAnchor<'static>]>,
    },
}

impl Trust {
    pub fn describe(&self) -> String {
        match self {
            Trust::WebPki => "webpki".into(),
            Trust::PinOnly => "pin-only".into(),
            Trust::Bundle { path, .. } => path.display().to_string(),
        }
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[derive(Clone, Debug)]
pub struct Defaults {
    pub unlisted: Unlisted,
    pub mode: Mode,
    pub trust: Trust,
    pub ports: Vec<u16>,
    pub allow_private: bool,
}

/// One `hosts:` entry after validation.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    /// Position in `Policy::hosts` (file order).
    pub index: usize,
    /// The key as written in the file: the metric label and log name.
    pub name: String,
    pub pins: Vec<Pin>,
    pub next_pins: Vec<Pin>,
    pub mode: Mode,
    /// Pins are enforced until this instant (the end of the `expires` day, UTC).
    pub expires: Option<OffsetDateTime>,
    pub ports: Vec<u16>,
    pub trust: Trust,
    pub address: Option<SocketAddr>,
}

impl HostPolicy {
    pub fn pins_expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// The `expires` date as written (the day before the instant we store).
    pub fn expires_date(&self) -> Option<time::Date> {
        self.expires
            .map(|e| e.date().previous_day().unwrap_or(e.date()))
    }
}

/// A validated pinset.
#[derive(Debug)]
pub struct Policy {
    pub defaults: Defaults,
    /// Entries in file order.
    pub hosts: Vec<Arc<HostPolicy>>,
    exact: HashMap<Host, Arc<HostPolicy>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<HostPolicy>>,
    /// SHA-256 of the file bytes, hex.
    pub source_hash: String,
    pub warnings: Vec<Problem>,
}

/// What a lookup found for a requested host.
#[derive(Clone, Debug)]
pub enum Decision<'a> {
    Listed(&'a Arc<HostPolicy>),
    Unlisted,
}

// === problems ===

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub host: Option<String>,
    pub field: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(host) = &self.host {
            write!(f, "host {host:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Read { .. } => &[],
            Error::Invalid { problems, .. } => problems,
        }
    }
}

// === loading ===

/// Reads and validates a pinset file.
pub fn load(path: &Path) -> Result<Policy, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    // Resolve the kubelet's `..data` symlink once: the pinset and the CA
    // bundles beside it are then read from one version of the Secret, even
    // if the kubelet swaps in another between the reads.
    let real = std::fs::canonicalize(path).map_err(read_err)?;
    let bytes = std::fs::read(&real).map_err(read_err)?;
    let shown = path.parent().unwrap_or(Path::new("."));
    let read_from = real.parent().unwrap_or(shown);
    parse_in(&bytes, shown, read_from, OffsetDateTime::now_utc()).map_err(|problems| {
        Error::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    })
}

/// Validates pinset bytes; relative CA bundle paths resolve against `base`.
pub fn parse(bytes: &[u8], base: &Path, now: OffsetDateTime) -> Result<Policy, Vec<Problem>> {
    parse_in(bytes, base, base, now)
}

/// As [`parse`]; relative bundle paths are *named* under `shown` (what the
/// operator wrote and the watcher watches) and *read* under `read_from`.
fn parse_in(
    bytes: &[u8],
    shown: &Path,
    read_from: &Path,
    now: OffsetDateTime,
) -> Result<Policy, Vec<Problem>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![Problem {
            host: None,
            field: None,
            line: None,
            column: None,
            message: format!("file is not UTF-8: {e}"),
        }]
    })?;
    // A truncated or half-written Secret can be empty or comments only.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(vec![problem(
            None,
            None,
            None,
            "file is empty (no YAML content)".into(),
        )]);
    }
    let wire: FileWire = serde_yaml::from_str(text).map_err(|e| {
        let loc = e.location();
        vec![Problem {
            host: None,
            field: None,
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message: strip_location(&e.to_string()),
        }]
    })?;
    Validator {
        text,
        base: shown,
        read_from,
        now,
        problems: Vec::new(),
        warnings: Vec::new(),
        bundles: Vec::new(),
    }
    .run(wire, bytes)
}

/// serde_yaml appends " at line N column M"; we print the location first.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

fn problem(
    host: Option<&str>,
    field: Option<&str>,
    line: Option<usize>,
    message: String,
) -> Problem {
    Problem {
        host: host.map(str::to_string),
        field: field.map(str::to_string),
        line,
        column: None,
        message,
    }
}

struct Validator<'a> {
    text: &'a str,
    base: &'a Path,
    read_from: &'a Path,
    now: OffsetDateTime,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// CA bundles read, with their bytes: part of the source hash, so a
    /// rotated bundle is a change even when the pinset text is not.
    bundles: Vec<(PathBuf, Vec<u8>)>,
}

impl Validator<'_> {
    fn run(mut self, wire: FileWire, bytes: &[u8]) -> Result<Policy, Vec<Problem>> {
        if wire.version != 1 {
            let line = self.key_line("version", 0);
            self.err(
                None,
                Some("version"),
                line,
                format!("unsupported version {}; expected 1", wire.version),
            );
        }
        let defaults = self.defaults(wire.defaults);
        let mut exact: HashMap<Host, Arc<HostPolicy>> = HashMap::new();
        let mut wildcard: HashMap<String, Arc<HostPolicy>> = HashMap::new();
        let mut hosts = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (key, entry) in wire.hosts.0 {
            let line = self.host_line(&key);
            let Some(pattern) = self.pattern(&key, line) else {
                continue;
            };
            let canonical = match &pattern {
                Pattern::Exact(h) => h.to_string(),
                Pattern::Wildcard(base) => format!("*.{base}"),
            };
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
            let Some(mut policy) = self.host(&key, entry, &defaults, line) else {
                continue;
            };
            policy.index = hosts.len();
            let policy = Arc::new(policy);
            match pattern {
                Pattern::Exact(h) => exact.insert(h, policy.clone()),
                Pattern::Wildcard(base) => wildcard.insert(base, policy.clone()),
            };
            hosts.push(policy);
        }
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        Ok(Policy {
            defaults,
            hosts,
            exact,
            wildcard,
            source_hash: self.source_hash(bytes),
            warnings: self.warnings,
        })
    }

    fn source_hash(&self, bytes: &[u8]) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(bytes);
        for (path, contents) in &self.bundles {
            ctx.update(path.as_os_str().as_encoded_bytes());
            ctx.update(&(contents.len() as u64).to_be_bytes());
            ctx.update(contents);
        }
        hex(ctx.finish().as_ref())
    }

    fn err(
        &mut self,
        host: Option<&str>,
        field: Option<&str>,
        line: Option<usize>,
        message: String,
    ) {
        self.problems.push(problem(host, field, line, message));
    }

    fn warn(
        &mut self,
        host: Option<&str>,
        field: Option<&str>,
        line: Option<usize>,
        message: String,
    ) {
        self.warnings.push(problem(host, field, line, message));
    }

    fn defaults(&mut self, d: DefaultsWire) -> Defaults {
        let trust = match d.trust.as_deref() {
            None => Trust::WebPki,
            Some("pin-only") => {
                let line = self.key_line("trust", 0);
                self.err(
                    None,
                    Some("defaults.trust"),
                    line,
                    "pin-only cannot be a default: set it on the hosts whose leaf keys you pin"
                        .into(),
                );
                Trust::WebPki
            }
            Some(t) => self
                .trust(t, None, "defaults.trust", None)
                .unwrap_or(Trust::WebPki),
        };
        let ports = match d.ports {
            Some(p) => self.ports(p, None, "defaults.ports", None),
            None => vec![443],
        };
        Defaults {
            unlisted: d.unlisted.unwrap_or(Unlisted::Deny),
            mode: d.mode.unwrap_or(Mode::Enforce),
            trust,
            ports,
            allow_private: d.allow_private.unwrap_or(false),
        }
    }

    fn pattern(&mut self, key: &str, line: Option<usize>) -> Option<Pattern> {
        if let Some(base) = key.strip_prefix("*.") {
            if base.contains('*') {
                self.err(
                    Some(key),
                    None,
                    line,
                    "a wildcard may only be a whole first label (*.example.com)".into(),
                );
                return None;
            }
            return match Host::parse(base) {
                Ok(Host::Name(base)) => {
                    if is_public_suffix(&base) {
                        self.err(
                            Some(key),
                            None,
                            line,
                            format!("wildcard covers the public suffix {base:?}"),
                        );
                        None
                    } else {
                        Some(Pattern::Wildcard(base))
                    }
                }
                Ok(Host::Ip(_)) => {
                    self.err(
                        Some(key),
                        None,
                        line,
                        "a wildcard cannot cover an IP address".into(),
                    );
                    None
                }
                Err(e) => {
                    self.err(Some(key), None, line, format!("invalid host name: {e}"));
                    None
                }
            };
        }
        if key.contains('*') {
            self.err(
                Some(key),
                None,
                line,
                "partial wildcard: only *.example.com (one whole first label) is allowed".into(),
            );
            return None;
        }
        match Host::parse(key) {
            Ok(h) => Some(Pattern::Exact(h)),
            Err(e) => {
                self.err(Some(key), None, line, format!("invalid host name: {e}"));
                None
            }
        }
    }

    fn host(
        &mut self,
        key: &str,
        w: HostWire,
        d: &Defaults,
        line: Option<usize>,
    ) -> Option<HostPolicy> {
        let before = self.problems.len();
        let field_line = |s: &Self, f: &str| s.field_line(line, f).or(line);
        let pins = match w.pins {
            None => {
                self.err(
                    Some(key),
                    Some("pins"),
                    line,
                    "missing: at least one pin is required".into(),
                );
                Vec::new()
            }
            Some(p) if p.is_empty() => {
                let l = field_line(self, "pins");
                self.err(
                    Some(key),
                    Some("pins"),
                    l,
                    "empty: at least one pin is required (an empty pinset would pin nothing)"
                        .into(),
                );
                Vec::new()
            }
            Some(p) => self.pins(key, "pins", p, field_line(self, "pins")),
        };
        let next_pins = match w.next_pins {
            None => Vec::new(),
            Some(p) if p.is_empty() => {
                let l = field_line(self, "next_pins");
                self.err(
                    Some(key),
                    Some("next_pins"),
                    l,
                    "empty: omit next_pins or list the pins about to roll out".into(),
                );
                Vec::new()
            }
            Some(p) => self.pins(key, "next_pins", p, field_line(self, "next_pins")),
        };
        let mode = w.mode.unwrap_or(d.mode);
        let trust = match w.trust.as_deref() {
            None => d.trust.clone(),
            Some(t) => {
                let l = field_line(self, "trust");
                self.trust(t, Some(key), "trust", l)
                    .unwrap_or(Trust::WebPki)
            }
        };
        if matches!(trust, Trust::PinOnly) && mode == Mode::Report {
            let l = field_line(self, "mode");
            self.err(
                Some(key),
                Some("mode"),
                l,
                "trust: pin-only with mode: report would authenticate nothing; use enforce".into(),
            );
        }
        let expires = match w.expires {
            None => None,
            Some(s) => {
                let l = field_line(self, "expires");
                match parse_date(&s) {
                    Ok(date) => {
                        let end = date.next_day().unwrap_or(date).midnight().assume_utc();
                        if end <= self.now {
                            let what = if matches!(trust, Trust::PinOnly) {
                                "pinset expired; with trust: pin-only nothing is left to validate, so connections fail closed"
                            } else {
                                "pinset expired: pins are no longer enforced (CA validation still is)"
                            };
                            self.warn(Some(key), Some("expires"), l, what.into());
                        } else if end - self.now < time::Duration::days(30) {
                            self.warn(
                                Some(key),
                                Some("expires"),
                                l,
                                format!("pinset expires within 30 days ({s})"),
                            );
                        }
                        Some(end)
                    }
                    Err(()) => {
                        self.err(
                            Some(key),
                            Some("expires"),
                            l,
                            format!("invalid date {s:?}: expected YYYY-MM-DD"),
                        );
                        None
                    }
                }
            }
        };
        let ports = match w.ports {
            Some(p) => {
                let l = field_line(self, "ports");
                self.ports(p, Some(key), "ports", l)
            }
            None => d.ports.clone(),
        };
        let address = match w.address {
            None => None,
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    let l = field_line(self, "address");
                    self.err(
                        Some(key),
                        Some("address"),
                        l,
                        format!("{a:?} is not IP:port (e.g. 10.0.0.7:8443 or [fd00::7]:443)"),
                    );
                    None
                }
            },
        };
        if address.is_some() && key.starts_with("*.") {
            let l = field_line(self, "address");
            self.err(
                Some(key),
                Some("address"),
                l,
                "a wildcard entry cannot name one address".into(),
            );
        }
        if self.problems.len() != before {
            return None;
        }
        if pins.len() == 1 {
            let l = field_line(self, "pins");
            self.warn(
                Some(key),
                Some("pins"),
                l,
                "only one pin: add a backup pin (a key you hold in reserve) so a key rotation cannot brick this host".into(),
            );
        }
        Some(HostPolicy {
            index: 0,
            name: key.to_string(),
            pins,
            next_pins,
            mode,
            expires,
            ports,
            trust,
            address,
        })
    }

    fn pins(&mut self, key: &str, field: &str, raw: Vec<String>, line: Option<usize>) -> Vec<Pin> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, p) in raw.iter().enumerate() {
            match p.parse::<Pin>() {
                Ok(pin) if out.contains(&pin) => {
                    self.err(
                        Some(key),
                        Some(&format!("{field}[{i}]")),
                        line,
                        format!("duplicate pin {pin}"),
                    );
                }
                Ok(pin) => out.push(pin),
                Err(e) => self.err(
                    Some(key),
                    Some(&format!("{field}[{i}]")),
                    line,
                    e.to_string(),
                ),
            }
        }
        out
    }

    fn ports(
        &mut self,
        raw: Vec<u16>,
        host: Option<&str>,
        field: &str,
        line: Option<usize>,
    ) -> Vec<u16> {
        if raw.is_empty() {
            self.err(
                host,
                Some(field),
                line,
                "empty: list at least one port".into(),
            );
        }
        if raw.contains(&0) {
            self.err(host, Some(field), line, "port 0 is not a port".into());
        }
        raw
    }

    fn trust(
        &mut self,
        raw: &str,
        host: Option<&str>,
        field: &str,
        line: Option<usize>,
    ) -> Option<Trust> {
        match raw {
            "webpki" => Some(Trust::WebPki),
            "pin-only" => Some(Trust::PinOnly),
            "" => {
                self.err(
                    host,
                    Some(field),
                    line,
                    "empty: use webpki, pin-only or a path to a PEM CA bundle".into(),
                );
                None
            }
            raw => {
                let path = self.base.join(raw);
                match read_bundle(&self.read_from.join(raw)) {
                    Ok((anchors, contents)) => {
                        self.bundles.push((path.clone(), contents));
                        Some(Trust::Bundle { path, anchors })
                    }
                    Err(e) => {
                        self.err(host, Some(field), line, e);
                        None
                    }
                }
            }
        }
    }

    /// Line (1-based) of a top-level or nested key, searched textually: the
    /// YAML parser does not give positions for values it accepted.
    fn key_line(&self, key: &str, from: usize) -> Option<usize> {
        self.text.lines().enumerate().skip(from).find_map(|(i, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            let t = t.trim_start_matches(['"', '\'']);
            t.strip_prefix(key)
                .map(|rest| rest.trim_start_matches(['"', '\'']))
                .filter(|rest| rest.trim_start().starts_with(':'))
                .map(|_| i + 1)
        })
    }

    fn host_line(&self, key: &str) -> Option<usize> {
        let hosts = self.key_line("hosts", 0)?;
        self.key_line(key, hosts)
    }

    fn field_line(&self, host_line: Option<usize>, field: &str) -> Option<usize> {
        let start = host_line?;
        let lines: Vec<&str> = self.text.lines().collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        let host_indent = indent(lines.get(start - 1)?);
        for (i, l) in lines.iter().enumerate().skip(start) {
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                continue;
            }
            if indent(l) <= host_indent {
                return None;
            }
            if l.trim_start()
                .strip_prefix(field)
                .is_some_and(|r| r.starts_with(':'))
            {
                return Some(i + 1);
            }
        }
        None
    }
}

enum Pattern {
    Exact(Host),
    Wildcard(String),
}

fn parse_date(s: &str) -> Result<time::Date, ()> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), &fmt).map_err(|_| ())
}

/// Reads a PEM CA bundle into trust anchors.
pub fn load_bundle(path: &Path) -> Result<Arc<[TrustAnchor<'static>]>, String> {
    read_bundle(path).map(|(anchors, _)| anchors)
}

fn read_bundle(path: &Path) -> Result<(Arc<[TrustAnchor<'static>]>, Vec<u8>), String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
    let mut anchors = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert =
            cert.map_err(|e| format!("CA bundle {}: certificate {i}: {e}", path.display()))?;
        let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|e| {
            format!(
                "CA bundle {}: certificate {i} is not usable as a trust anchor: {e:?}",
                path.display()
            )
        })?;
        anchors.push(anchor.to_owned());
    }
    if anchors.is_empty() {
        return Err(format!(
            "CA bundle {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok((anchors.into(), bytes))
}

/// Whether a wildcard's base is itself a public suffix (`com`, `co.uk`,
/// `github.io`), by the Public Suffix List (ICANN and private sections): a
/// wildcard over it would cover every registrant's hosts.
fn is_public_suffix(base: &str) -> bool {
    !base.contains('.') || psl::suffix_str(base) == Some(base)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// === impl Policy ===

impl Policy {
    /// Finds the entry for a normalized host: exact first, then a wildcard
    /// one label up. IPs only ever match exact entries.
    pub fn lookup(&self, host: &Host) -> Decision<'_> {
        if let Some(p) = self.exact.get(host) {
            return Decision::Listed(p);
        }
        if let Host::Name(name) = host {
            if let Some((first, rest)) = name.split_once('.') {
                if !first.is_empty() {
                    if let Some(p) = self.wildcard.get(rest) {
                        return Decision::Listed(p);
                    }
                }
            }
        }
        Decision::Unlisted
    }

    /// Every CA bundle file the pinset names, for the reloader to watch.
    pub fn bundle_paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::iter::once(&self.defaults.trust)
            .chain(self.hosts.iter().map(|h| &h.trust))
            .filter_map(|t| match t {
                Trust::Bundle { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN_A: &str = "sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=";
    const PIN_B: &str = "sha256/YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=";

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-24 12:00 UTC)
    }

    fn ok(yaml: &str) -> Policy {
        parse(yaml.as_bytes(), Path::new("."), now()).unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn bad(yaml: &str) -> Vec<Problem> {
        match parse(yaml.as_bytes(), Path::new("."), now()) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(p) => p,
        }
    }

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    fn name_of(p: &Policy, h: &str) -> Option<String> {
        match p.lookup(&host(h)) {
            Decision::Listed(e) => Some(e.name.clone()),
            Decision::Unlisted => None,
        }
    }

    #[test]
    fn wildcard_matches_exactly_one_label_and_exact_wins() {
        let p = ok(&format!(
            "version: 1\nhosts:\n  \"*.example.test\":\n    pins: [{PIN_A}, {PIN_B}]\n  special.example.test:\n    pins: [{PIN_B}, {PIN_A}]\n"
        ));
        assert_eq!(
            name_of(&p, "a.example.test").as_deref(),
            Some("*.example.test")
        );
        assert_eq!(
            name_of(&p, "A.EXAMPLE.TEST.").as_deref(),
            Some("*.example.test")
        );
        assert_eq!(
            name_of(&p, "special.example.test").as_deref(),
            Some("special.example.test")
        );
        for miss in [
            "example.test",
            "a.b.example.test",
            "evil-example.test",
            "xexample.test",
            "example.test.attacker.test",
            "a.example.test.attacker.test",
        ] {
            assert_eq!(name_of(&p, miss), None, "{miss} must not match");
        }
    }

    #[test]
    fn defaults_apply_and_entries_override() {
        let p = ok(&format!(
            "version: 1\ndefaults:\n  unlisted: allow\n  mode: report\n  ports: [443, 8443]\nhosts:\n  a.test:\n    pins: [{PIN_A}, {PIN_B}]\n  b.test:\n    pins: [{PIN_A}, {PIN_B}]\n    mode: enforce\n    ports: [9443]\n"
        ));
        assert_eq!(p.defaults.unlisted, Unlisted::Allow);
        let a = &p.hosts[0];
        assert_eq!((a.mode, a.ports.clone()), (Mode::Report, vec![443, 8443]));
        let b = &p.hosts[1];
        assert_eq!((b.mode, b.ports.clone()), (Mode::Enforce, vec![9443]));
    }

    #[test]
    fn ip_literal_entries() {
        let p = ok(&format!("version: 1\nhosts:\n  \"127.0.0.1\":\n    pins: [{PIN_A}]\n  \"[::1]\":\n    pins: [{PIN_A}]\n"));
        assert_eq!(name_of(&p, "127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(name_of(&p, "[::1]").as_deref(), Some("[::1]"));
    }

    #[test]
    fn collects_every_problem_with_host_field_and_line() {
        let problems = bad(&format!(
            "version: 1\nhosts:\n  a.test:\n    pins: []\n  b.test:\n    pins: [sha1/AAAA, {PIN_A}]\n  \"x*.test\":\n    pins: [{PIN_A}]\n  \"*.com\":\n    pins: [{PIN_A}]\n"
        ));
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 4, "{text:#?}");
        assert_eq!(problems[0].host.as_deref(), Some("a.test"));
        assert_eq!(problems[0].field.as_deref(), Some("pins"));
        assert_eq!(problems[0].line, Some(4));
        assert_eq!(problems[1].field.as_deref(), Some("pins[0]"));
        assert_eq!(problems[1].line, Some(6));
        assert!(text[2].contains("partial wildcard"), "{}", text[2]);
        assert!(text[3].contains("public suffix"), "{}", text[3]);
    }

    #[test]
    fn duplicate_hosts_after_normalization() {
        let problems = bad(&format!(
            "version: 1\nhosts:\n  api.test:\n    pins: [{PIN_A}]\n  API.test.:\n    pins: [{PIN_B}]\n"
        ));
        assert!(
            problems[0].message.contains("duplicate host"),
            "{problems:?}"
        );
        assert_eq!(problems[0].line, Some(5));
    }

    #[test]
    fn unknown_field_reports_line_and_column() {
        let problems = bad(&format!(
            "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    report_onyl: true\n"
        ));
        assert_eq!(problems[0].line, Some(5), "{problems:?}");
        assert!(problems[0].message.contains("report_onyl"));
    }

    #[test]
    fn pin_only_with_report_is_refused() {
        let problems = bad(&format!(
            "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    trust: pin-only\n    mode: report\n"
        ));
        assert_eq!(problems[0].field.as_deref(), Some("mode"));
    }

    #[test]
    fn expiry_and_warnings() {
        let p = ok(&format!(
            "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    expires: 2026-12-01\n"
        ));
        let h = &p.hosts[0];
        assert!(!h.pins_expired(now()));
        assert!(!h.pins_expired(time::macros::datetime!(2026-12-01 23:59 UTC)));
        assert!(h.pins_expired(time::macros::datetime!(2026-12-02 00:00 UTC)));
        assert_eq!(h.expires_date(), Some(time::macros::date!(2026 - 12 - 01)));
        let w: Vec<_> = p
            .warnings
            .iter()
            .map(|w| w.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(w, vec!["expires", "pins"]);
        let problems = bad(&format!(
            "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    expires: 2026-13-01\n"
        ));
        assert_eq!(problems[0].field.as_deref(), Some("expires"));
    }

    #[test]
    fn public_suffix_rule() {
        for suffix in [
            "com",
            "test",
            "co.uk",
            "com.au",
            "github.io",
            "herokuapp.com",
            "s3.amazonaws.com",
        ] {
            assert!(is_public_suffix(suffix), "{suffix}");
        }
        for base in [
            "example.com",
            "example.co.uk",
            "pinproxy.github.io",
            "payments.example.test",
        ] {
            assert!(!is_public_suffix(base), "{base}");
        }
    }
}
