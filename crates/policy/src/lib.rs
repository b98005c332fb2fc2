//! The policy room: what the pinset allows, as pure data and pure answers.
//!
//! - [`host`] normalizes every spelling of a host; [`pin`] parses and
//!   computes SPKI pins.
//! - [`load()`] reads the pinset file; `wire` is its YAML shape and
//!   `validate` turns that into a [`Policy`], collecting every problem.
//! - [`identity`]: an entry's client certificate (mTLS), the SANs its
//!   server must carry (`names:`) and its CRLs.
//! - [`admission`] answers "may this target be dialed, and under which
//!   entry?"; an [`Admission`] can only be made there.
//!
//! No sockets, no tokio, no HTTP: the data path asks this room questions.

#![forbid(unsafe_code)]

pub mod admission;
pub mod comment;
mod files;
pub mod host;
pub mod identity;
pub mod load;
pub mod passthrough;
pub mod pattern;
pub mod pemfile;
pub mod pin;
mod problem;
#[cfg(test)]
mod tests;
mod validate;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::TrustAnchor;
use serde::Deserialize;
use time::OffsetDateTime;

pub use admission::{Admission, Refusal, Target};
pub use load::{load, load_bundle, parse, BundleError, Error, Problem};

use host::Host;
use identity::{ClientCert, Crls, Name};
use passthrough::Passthrough;
use pattern::Patterns;
use pin::Pin;

// === domain types ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    Deny,
    Allow,
    /// As `allow` for admission and egress rules; the validated chains of
    /// unlisted hosts are also recorded, for `pinproxy suggest`.
    Learn,
}

impl Unlisted {
    /// Whether unlisted hosts may be dialed at all.
    pub fn admits(self) -> bool {
        self != Unlisted::Deny
    }
}

/// Where failure reports are POSTed: an `http://` or `https://` URL with a
/// host, checked at load (docs/reference.md, "Failure reports").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportUri(String);

impl ReportUri {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .ok_or("must start with http:// or https://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() {
            return Err("names no host");
        }
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not supported; put a token in the path or query",
            );
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) || !raw.is_ascii() {
            return Err("contains whitespace, control or non-ASCII characters");
        }
        let port = match authority.strip_prefix('[') {
            Some(v6) => v6
                .split_once(']')
                .ok_or("has an unclosed [")?
                .1
                .strip_prefix(':'),
            None => authority.split_once(':').map(|(_, p)| p),
        };
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err("has an invalid port");
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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

/// Certificate Transparency on a host's validated path (docs/reference.md,
/// "Certificate Transparency and OCSP"): whether a leaf without enough
/// valid SCTs is refused (`enforce`), only counted (`report`), or not
/// checked (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtMode {
    Enforce,
    Report,
    Off,
}

/// `upstream_protocol:` (docs/reference.md, "Host fields"): which HTTP
/// version a forwarded request goes upstream in. `auto` offers h2 and
/// HTTP/1.1 by ALPN and uses what the upstream chooses; `h1` offers only
/// HTTP/1.1 (a keep-alive pool, one request per connection at a time — what
/// nginx, haproxy and Envoy do by default; more CPU under concurrent load
/// than h2, docs/benchmarks.md); `h2` offers only h2 and speaks it by prior
/// knowledge, even if the upstream names no protocol in ALPN. Upgrades
/// (WebSocket) are HTTP/1.1 whatever this says; CONNECT tunnels to
/// unlisted hosts carry what the app speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Auto,
    H1,
    H2,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::H1 => "h1",
            UpstreamProtocol::H2 => "h2",
        }
    }
}

impl CtMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CtMode::Enforce => "enforce",
            CtMode::Report => "report",
            CtMode::Off => "off",
        }
    }

    /// The mode of an entry that does not set `ct:`: `defaults.ct` (else
    /// `report`) under `trust: webpki`, `off` under a private CA bundle or
    /// pin-only — CT logs only publicly-trusted certificates.
    pub(crate) fn default_for(trust: &Trust, defaults_ct: Option<CtMode>) -> CtMode {
        match trust {
            Trust::WebPki => defaults_ct.unwrap_or(CtMode::Report),
            Trust::Bundle { .. } | Trust::PinOnly => CtMode::Off,
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
    /// Where failure reports go for unlisted hosts and entries without
    /// their own `report_uri`.
    pub report_uri: Option<ReportUri>,
    /// CT for unlisted hosts (validated under `trust`).
    pub ct: CtMode,
    /// `defaults.ct` as written: what `trust: webpki` entries without a
    /// `ct:` of their own inherit (`report` when not written).
    pub ct_written: Option<CtMode>,
    /// The HTTP version unlisted hosts and entries without their own
    /// `upstream_protocol:` go upstream in.
    pub upstream_protocol: UpstreamProtocol,
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
    /// Presented on every upstream TLS connection to this entry's hosts.
    pub client_cert: Option<Arc<ClientCert>>,
    /// When non-empty, the certificate must carry one of these SANs
    /// *instead of* the host name (never in addition to nothing: the name
    /// check is replaced, not skipped).
    pub names: Vec<Name>,
    /// CRLs checked on the validated path.
    pub crls: Option<Arc<Crls>>,
    /// Certificate Transparency on the validated path.
    pub ct: CtMode,
    /// The HTTP version forwarded requests go upstream in.
    pub upstream_protocol: UpstreamProtocol,
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
    entries: Patterns<Arc<HostPolicy>>,
    /// Traffic relayed as it came (in-cluster services).
    pub passthrough: Passthrough,
    /// SHA-256 of the file bytes and of every file it names (CA
    /// bundles), hex: what a reload compares.
    pub source_hash: String,
    /// SHA-256 of the pins file's bytes alone, hex: what `pinproxy status`
    /// compares with the Secret's `pins.yaml`.
    pub pins_sha256: String,
    /// SHA-256 of the files it names alone (paths and contents), hex:
    /// what the reload line's `changed` tells apart from the pinset.
    pub named_sha256: String,
    pub warnings: Vec<Problem>,
    /// Per entry (by `index`), its own `report_uri`.
    report_uris: Vec<Option<ReportUri>>,
    /// The file's top-level `serial:` (a positive integer), if it has one.
    pub serial: Option<u64>,
    /// Who signed the file, when the reloader verified its signature
    /// (`run --pinset-key`); `None` for an unsigned pinset.
    pub signature: Option<Signed>,
    /// No pinset is in force yet: every target is refused
    /// (`no-pinset`). Only [`Policy::pending`] makes one.
    pub pending: bool,
}

/// The signature a pinset in force was verified with (`/pins`'
/// `signature`, the `pinproxy_pinset_info` labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The verifying key's id, `sha256/<base64 SHA-256 of its SPKI>`.
    pub key: String,
    pub serial: u64,
    /// SHA-256 of the signed file's bytes, lowercase hex.
    pub sha256: String,
}

/// What a lookup found for a requested host.
#[derive(Clone, Debug)]
pub enum Decision<'a> {
    Listed(&'a Arc<HostPolicy>),
    Unlisted,
}

// === impl Policy ===

impl Policy {
    /// What is in force before any pinset is: nothing is let through.
    /// With `run --pinset-key`, the sidecar starts with this until a
    /// validly signed pinset arrives (and is not ready meanwhile).
    pub fn pending() -> Self {
        Policy {
            defaults: Defaults {
                unlisted: Unlisted::Deny,
                mode: Mode::Enforce,
                trust: Trust::WebPki,
                ports: vec![443],
                allow_private: false,
                report_uri: None,
                // Nothing is admitted: nothing to judge.
                ct: CtMode::Off,
                ct_written: None,
                upstream_protocol: UpstreamProtocol::Auto,
            },
            hosts: Vec::new(),
            entries: Patterns::default(),
            passthrough: Passthrough::default(),
            source_hash: String::new(),
            pins_sha256: String::new(),
            named_sha256: String::new(),
            warnings: Vec::new(),
            report_uris: Vec::new(),
            serial: None,
            signature: None,
            pending: true,
        }
    }

    /// The entries whose `address:` is `addr` (an IPv4-mapped IPv6
    /// address is its IPv4 one), in file order: for a connection that
    /// names no host (a TLS hello without SNI), the hosts it may be for.
    /// Linear in the entries; such connections are rare.
    pub fn by_address(&self, addr: SocketAddr) -> impl Iterator<Item = &Arc<HostPolicy>> {
        let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
        let want = canonical(addr);
        self.hosts
            .iter()
            .filter(move |h| h.address.is_some_and(|a| canonical(a) == want))
    }

    /// Finds the entry for a normalized host: exact first, then `*.` one
    /// label up, then `**.` from the longest suffix. IPs only ever match
    /// exact entries.
    pub fn lookup(&self, host: &Host) -> Decision<'_> {
        match self.entries.get(host) {
            Some(e) => Decision::Listed(e),
            None => Decision::Unlisted,
        }
    }

    /// Where failure reports about `entry` (`None`: an unlisted host) go:
    /// the entry's own `report_uri`, else `defaults.report_uri`.
    pub fn report_uri(&self, entry: Option<&HostPolicy>) -> Option<&ReportUri> {
        entry
            .and_then(|e| self.report_uris.get(e.index))
            .and_then(Option::as_ref)
            .or(self.defaults.report_uri.as_ref())
    }

    /// Every CA bundle file the pinset names, for the reloader to watch.
    pub(crate) fn bundle_paths(&self) -> Vec<PathBuf> {
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

    /// Every file the pinset names besides itself — CA bundles, client
    /// certificates and keys, CRLs — for the reloader to watch.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut out = self.bundle_paths();
        for h in &self.hosts {
            if let Some(c) = &h.client_cert {
                out.push(c.cert_path.clone());
                out.push(c.key_path.clone());
            }
            if let Some(crls) = &h.crls {
                out.extend(crls.files.iter().map(|f| f.path.clone()));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
