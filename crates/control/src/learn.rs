//! Learn mode (`defaults.unlisted: learn`): trust on first use, done
//! safely. Unlisted hosts pass exactly as under `allow`; the paths webpki
//! validated for them are recorded here — in memory, bounded, optionally
//! persisted to `--learn-file` — for `GET /learned` and `pinproxy
//! suggest`, which turns them into a pinset a person reviews. Nothing
//! learned is ever enforced by itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use pinproxy_policy::pin::Pin;

/// The document `GET /learned` returns, the learn file holds and `suggest`
/// reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub version: u32,
    /// Whether the pinset in force learns (`unlisted: learn`).
    #[serde(default)]
    pub learning: bool,
    /// Sorted by host, then port.
    pub hosts: Vec<LearnedHost>,
    /// Hosts not recorded because [`Limits::hosts`] were already known.
    #[serde(default)]
    pub dropped_hosts: u64,
    /// Paths not recorded because a host already had [`Limits::paths`],
    /// or [`Limits::bytes`] were spent.
    #[serde(default)]
    pub dropped_paths: u64,
    /// Unlisted tunnels not probed because the probe schedule was full of
    /// names probed within [`PROBE_EVERY`].
    #[serde(default)]
    pub dropped_probes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedHost {
    pub host: String,
    pub port: u16,
    /// The trust that validated the paths: `webpki` or a CA bundle path
    /// (`defaults.trust`), so a suggested entry validates the same way.
    pub trust: String,
    pub seen: u64,
    /// RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    /// Each distinct validated path, in the order first seen.
    pub paths: Vec<LearnedPath>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedPath {
    /// Leaf first, trust anchor last.
    pub pins: Vec<String>,
    pub certs: Vec<LearnedCert>,
    pub seen: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// The Certificate Transparency verdict on the leaf last seen on this
    /// path, by the log list in force whatever its age (`ok`, `none`,
    /// `too-few-scts`, `unknown-log`, `bad-signature`: the `result` labels
    /// of `pinproxy_ct_verdicts_total`): `suggest` marks a leaf without
    /// valid SCTs. Absent when CT was not checked (`ct: off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedCert {
    pub pin: String,
    /// `leaf`, `intermediate` or `anchor`.
    pub position: String,
    pub subject: Option<String>,
    /// RFC 3339; unknown for an anchor known only by its key.
    pub not_after: Option<String>,
}

/// How much is learned: a workload talks to a few dozen hosts; a client
/// that names thousands, or a server that sends 57 KB subjects, must not
/// grow the proxy. Counts bound the number of things, [`Limits::bytes`]
/// and [`MAX_TEXT`] what they weigh.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// host:port pairs.
    pub hosts: usize,
    /// Distinct validated paths per host:port (load-balanced backends on
    /// several CAs, cross-signed roots).
    pub paths: usize,
    /// What everything learned may weigh, in bytes of text and pins (the
    /// JSON of `/learned` is about twice that). A host or path that would
    /// exceed it is dropped and counted.
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hosts: 1024,
            paths: 8,
            bytes: 4 << 20,
        }
    }
}

/// The longest string kept from a certificate (a subject, a date), bytes;
/// longer ones are cut at a character boundary and end in `…`. A
/// distinguished name a person can review fits easily.
pub const MAX_TEXT: usize = 256;

/// What a record costs beyond its strings and pins (allocations, numbers).
const HOST_OVERHEAD: usize = 128;
const PATH_OVERHEAD: usize = 96;
const CERT_OVERHEAD: usize = 96;

/// An unlisted CONNECT tunnel carries the client's own TLS, which pinproxy
/// cannot read: learn mode dials such a host once more itself, at most this
/// often per host:port, to see its chain.
pub const PROBE_EVERY: Duration = Duration::from_secs(600);
/// Probes in flight at once.
pub const MAX_PROBES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the learn file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the learn file {path} is not a learned-chains document: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the learn file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the learn file {path} is over its {limit}-byte limit")]
    TooLarge { path: PathBuf, limit: u64 },
}

struct PathRec {
    pins: Vec<Pin>,
    certs: Vec<LearnedCert>,
    seen: u64,
    first: i64,
    last: i64,
    /// A `ct_verdicts_total` result label (static: never a server's text).
    ct: Option<&'static str>,
}

struct HostRec {
    trust: String,
    seen: u64,
    first: i64,
    last: i64,
    paths: Vec<PathRec>,
}

#[derive(Default)]
struct State {
    hosts: HashMap<(String, u16), HostRec>,
    /// What `hosts` weighs ([`Limits::bytes`]).
    bytes: usize,
    dropped_hosts: u64,
    dropped_paths: u64,
    dropped_probes: u64,
    /// When each host:port was last probed: at most twice
    /// [`Limits::hosts`] names, each at most 253 bytes.
    probed: HashMap<(String, u16), tokio::time::Instant>,
}

/// The learned chains, shared by every generation.
pub struct Learned {
    limits: Limits,
    state: Mutex<State>,
    /// A host or path was added since the last save.
    dirty: AtomicBool,
    /// Only counters moved since the last save.
    touched: AtomicBool,
    probes: Arc<AtomicUsize>,
    hosts_gauge: prometheus::IntGauge,
}

impl std::fmt::Debug for Learned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learned")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A probe slot; freed on drop.
#[derive(Debug)]
pub struct Probe(Arc<AtomicUsize>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

// === impl Learned ===

impl Learned {
    pub fn new(limits: Limits, hosts_gauge: prometheus::IntGauge) -> Self {
        Self {
            limits,
            state: Mutex::default(),
            dirty: AtomicBool::new(false),
            touched: AtomicBool::new(false),
            probes: Arc::default(),
            hosts_gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one validated `path` (leaf first) of `host:port`, validated
    /// under `trust`, at `now` (Unix time), with the CT verdict on its leaf
    /// (`None`: not checked). `certs` describes the path; it is called
    /// only for a path not seen before.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        host: &str,
        port: u16,
        trust: &str,
        path: &[Pin],
        ct: Option<&'static str>,
        now: i64,
        certs: impl FnOnce() -> Vec<LearnedCert>,
    ) {
        let trust = clip(trust, MAX_TRUST);
        let mut state = self.lock();
        let key = (host.to_string(), port);
        if !state.hosts.contains_key(&key) {
            let cost = host_cost(host, &trust);
            if state.hosts.len() >= self.limits.hosts || state.bytes + cost > self.limits.bytes {
                state.dropped_hosts += 1;
                return;
            }
            state.bytes += cost;
            state.hosts.insert(
                key.clone(),
                HostRec {
                    trust: trust.clone(),
                    seen: 0,
                    first: now,
                    last: now,
                    paths: Vec::new(),
                },
            );
            self.hosts_gauge.set(state.hosts.len() as i64);
            self.dirty.store(true, Ordering::Release);
        }
        let State { hosts, bytes, .. } = &mut *state;
        let Some(h) = hosts.get_mut(&key) else {
            return;
        };
        h.seen += 1;
        h.last = now;
        if h.trust != trust {
            *bytes = (*bytes + trust.len()).saturating_sub(h.trust.len());
            h.trust = trust;
        }
        self.touched.store(true, Ordering::Release);
        if let Some(p) = h.paths.iter_mut().find(|p| p.pins == path) {
            p.seen += 1;
            p.last = now;
            if ct.is_some() && p.ct != ct {
                p.ct = ct;
                self.dirty.store(true, Ordering::Release);
            }
            return;
        }
        let added = (h.paths.len() < self.limits.paths)
            .then(|| {
                let certs: Vec<LearnedCert> = certs().into_iter().map(clip_cert).collect();
                let cost = path_cost(path, &certs);
                (*bytes + cost <= self.limits.bytes).then_some((certs, cost))
            })
            .flatten();
        match added {
            Some((certs, cost)) => {
                *bytes += cost;
                h.paths.push(PathRec {
                    pins: path.to_vec(),
                    certs,
                    seen: 1,
                    first: now,
                    last: now,
                    ct,
                });
                self.dirty.store(true, Ordering::Release);
            }
            None => state.dropped_paths += 1,
        }
    }

    /// Everything learned, sorted by host and port (for tests and small
    /// documents; `/learned` and the learn file stream [`Learned::chunks`]).
    pub fn doc(&self, learning: bool) -> Doc {
        let hosts = self.keys().iter().filter_map(|k| self.host(k)).collect();
        let state = self.lock();
        Doc {
            version: 1,
            learning,
            hosts,
            dropped_hosts: state.dropped_hosts,
            dropped_paths: state.dropped_paths,
            dropped_probes: state.dropped_probes,
        }
    }

    /// The host:port pairs learned, sorted.
    pub(crate) fn keys(&self) -> Vec<(String, u16)> {
        let mut keys: Vec<(String, u16)> = self.lock().hosts.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// What was learned of one host:port, if it still is.
    pub(crate) fn host(&self, key: &(String, u16)) -> Option<LearnedHost> {
        let state = self.lock();
        let h = state.hosts.get(key)?;
        Some(LearnedHost {
            host: key.0.clone(),
            port: key.1,
            trust: h.trust.clone(),
            seen: h.seen,
            first_seen: rfc3339(h.first),
            last_seen: rfc3339(h.last),
            paths: h
                .paths
                .iter()
                .map(|p| LearnedPath {
                    pins: p.pins.iter().map(Pin::to_string).collect(),
                    certs: p.certs.clone(),
                    seen: p.seen,
                    first_seen: rfc3339(p.first),
                    last_seen: rfc3339(p.last),
                    ct: p.ct.map(str::to_string),
                })
                .collect(),
        })
    }

    /// The most a learn file of this store may weigh: four times
    /// [`Limits::bytes`] (the JSON around the text), within
    /// [`MAX_FILE_BYTES`].
    pub fn file_cap(&self) -> u64 {
        (self.limits.bytes as u64)
            .saturating_mul(4)
            .min(MAX_FILE_BYTES)
    }

    /// The counters of what was not learned.
    pub(crate) fn dropped(&self) -> [u64; 3] {
        let s = self.lock();
        [s.dropped_hosts, s.dropped_paths, s.dropped_probes]
    }

    /// Adds what a learn file holds, within the limits (counts, bytes,
    /// string lengths: a file can be edited); what is already known in
    /// memory wins.
    pub fn restore(&self, doc: Doc) {
        let mut state = self.lock();
        for h in doc.hosts {
            let key = (h.host, h.port);
            let trust = clip(&h.trust, MAX_TRUST);
            let cost = host_cost(&key.0, &trust);
            if state.hosts.contains_key(&key)
                || state.hosts.len() >= self.limits.hosts
                || key.0.len() > 253
                || state.bytes + cost > self.limits.bytes
            {
                continue;
            }
            let mut bytes = state.bytes + cost;
            let mut paths: Vec<PathRec> = Vec::new();
            for p in h.paths.into_iter().take(self.limits.paths) {
                let Ok(pins) = p
                    .pins
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<Vec<Pin>, _>>()
                else {
                    continue;
                };
                let certs: Vec<LearnedCert> = p.certs.into_iter().map(clip_cert).collect();
                let cost = path_cost(&pins, &certs);
                if pins.is_empty() || bytes + cost > self.limits.bytes {
                    continue;
                }
                bytes += cost;
                paths.push(PathRec {
                    pins,
                    certs,
                    seen: p.seen,
                    first: unix(&p.first_seen),
                    last: unix(&p.last_seen),
                    // Only a label this build knows: a file can be edited.
                    ct: p.ct.as_deref().and_then(ct_label),
                });
            }
            if paths.is_empty() {
                continue;
            }
            state.bytes = bytes;
            state.hosts.insert(
                key,
                HostRec {
                    trust,
                    seen: h.seen,
                    first: unix(&h.first_seen),
                    last: unix(&h.last_seen),
                    paths,
                },
            );
        }
        state.dropped_hosts += doc.dropped_hosts;
        state.dropped_paths += doc.dropped_paths;
        state.dropped_probes += doc.dropped_probes;
        self.hosts_gauge.set(state.hosts.len() as i64);
    }

    /// Whether something new (a host, a path) was learned since the last
    /// call — or, with `counts_too`, only counters moved.
    pub fn take_dirty_or(&self, counts_too: bool) -> bool {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.touched.store(false, Ordering::Release);
            return true;
        }
        counts_too && self.touched.swap(false, Ordering::AcqRel)
    }

    /// Whether something new (a host, a path) was learned since the last call.
    pub fn take_dirty(&self) -> bool {
        self.take_dirty_or(false)
    }

    /// A slot to probe `host:port` now, if it is due: not probed within
    /// [`PROBE_EVERY`], fewer than [`MAX_PROBES`] in flight, room to learn
    /// it, and room in the schedule: it remembers at most twice
    /// [`Limits::hosts`] names inside its window, so a client naming
    /// random SNIs cannot grow it (while it is full of such names, new
    /// names wait, counted in `dropped_probes`).
    pub fn probe_due(&self, host: &str, port: u16, now: tokio::time::Instant) -> Option<Probe> {
        let mut state = self.lock();
        let key = (host.to_string(), port);
        if !state.hosts.contains_key(&key) && state.hosts.len() >= self.limits.hosts {
            return None;
        }
        if state
            .probed
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < PROBE_EVERY)
        {
            return None;
        }
        let cap = self.limits.hosts.saturating_mul(2).max(1);
        if state.probed.len() >= cap {
            state
                .probed
                .retain(|_, at| now.duration_since(*at) < PROBE_EVERY);
        }
        if state.probed.len() >= cap && !state.probed.contains_key(&key) {
            state.dropped_probes += 1;
            return None;
        }
        if self.probes.fetch_add(1, Ordering::SeqCst) >= MAX_PROBES {
            self.probes.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        state.probed.insert(key, now);
        Some(Probe(self.probes.clone()))
    }
}

/// The static label for a CT verdict read back from a learn file.
fn ct_label(s: &str) -> Option<&'static str> {
    pinproxy_tls::ct::Verdict::ALL
        .iter()
        .map(|v| v.as_str())
        .find(|l| *l == s)
}

/// The longest `trust` kept (a CA bundle's path).
const MAX_TRUST: usize = 1024;

/// `s` cut to at most `max` bytes at a character boundary, ending in `…`
/// when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn clip_cert(c: LearnedCert) -> LearnedCert {
    LearnedCert {
        pin: clip(&c.pin, MAX_TEXT),
        position: clip(&c.position, MAX_TEXT),
        subject: c.subject.map(|s| clip(&s, MAX_TEXT)),
        not_after: c.not_after.map(|s| clip(&s, MAX_TEXT)),
    }
}

fn host_cost(host: &str, trust: &str) -> usize {
    HOST_OVERHEAD + host.len() + trust.len()
}

fn path_cost(pins: &[Pin], certs: &[LearnedCert]) -> usize {
    let text = |c: &LearnedCert| {
        c.pin.len()
            + c.position.len()
            + c.subject.as_ref().map_or(0, String::len)
            + c.not_after.as_ref().map_or(0, String::len)
    };
    PATH_OVERHEAD + pins.len() * 32 + certs.iter().map(|c| CERT_OVERHEAD + text(c)).sum::<usize>()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn unix(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| t.unix_timestamp())
}

mod anchors;
mod file;
mod stream;

pub use anchors::{anchors, AnchorInfo, Anchors};
pub use file::{persist, read, write, MAX_FILE_BYTES};
pub use stream::Chunks;

#[cfg(test)]
mod tests;
