//! Learn mode (`defaults.unlisted: learn`): trust on first use, done
//! safely. Unlisted hosts pass exactly as under `allow`; the paths webpki
//! validated for them are recorded here — in memory, bounded, optionally
//! persisted to `--learn-file` — for `GET /learned` and `pinproxy
//! suggest`, which turns them into a pinset a person reviews. Nothing
//! learned is ever enforced by itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::pin::Pin;
use crate::policy::Trust;
use crate::tls::cert::{self, CertInfo};

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
    /// Paths not recorded because a host already had [`Limits::paths`].
    #[serde(default)]
    pub dropped_paths: u64,
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
/// that names thousands must not grow the proxy.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// host:port pairs.
    pub hosts: usize,
    /// Distinct validated paths per host:port (load-balanced backends on
    /// several CAs, cross-signed roots).
    pub paths: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hosts: 1024,
            paths: 8,
        }
    }
}

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
}

struct PathRec {
    pins: Vec<Pin>,
    certs: Vec<LearnedCert>,
    seen: u64,
    first: i64,
    last: i64,
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
    dropped_hosts: u64,
    dropped_paths: u64,
    /// When each host:port was last probed (bounded with `hosts`).
    probed: HashMap<(String, u16), tokio::time::Instant>,
}

/// The learned chains, shared by every generation.
pub struct Learned {
    limits: Limits,
    state: Mutex<State>,
    dirty: AtomicBool,
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
            probes: Arc::default(),
            hosts_gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one validated `path` (leaf first) of `host:port`, validated
    /// under `trust`, at `now` (Unix time). `certs` describes the path; it
    /// is called only for a path not seen before.
    pub fn record(
        &self,
        host: &str,
        port: u16,
        trust: &str,
        path: &[Pin],
        now: i64,
        certs: impl FnOnce() -> Vec<LearnedCert>,
    ) {
        let mut state = self.lock();
        let key = (host.to_string(), port);
        if !state.hosts.contains_key(&key) {
            if state.hosts.len() >= self.limits.hosts {
                state.dropped_hosts += 1;
                return;
            }
            state.hosts.insert(
                key.clone(),
                HostRec {
                    trust: trust.to_string(),
                    seen: 0,
                    first: now,
                    last: now,
                    paths: Vec::new(),
                },
            );
            self.hosts_gauge.set(state.hosts.len() as i64);
        }
        let limit = self.limits.paths;
        let mut dropped_path = false;
        if let Some(h) = state.hosts.get_mut(&key) {
            h.seen += 1;
            h.last = now;
            h.trust = trust.to_string();
            if let Some(p) = h.paths.iter_mut().find(|p| p.pins == path) {
                p.seen += 1;
                p.last = now;
            } else if h.paths.len() < limit {
                h.paths.push(PathRec {
                    pins: path.to_vec(),
                    certs: certs(),
                    seen: 1,
                    first: now,
                    last: now,
                });
            } else {
                dropped_path = true;
            }
        }
        state.dropped_paths += u64::from(dropped_path);
        self.dirty.store(true, Ordering::Release);
    }

    /// Everything learned, sorted by host and port.
    pub fn doc(&self, learning: bool) -> Doc {
        let state = self.lock();
        let mut hosts: Vec<LearnedHost> = state
            .hosts
            .iter()
            .map(|((host, port), h)| LearnedHost {
                host: host.clone(),
                port: *port,
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
                    })
                    .collect(),
            })
            .collect();
        hosts.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        Doc {
            version: 1,
            learning,
            hosts,
            dropped_hosts: state.dropped_hosts,
            dropped_paths: state.dropped_paths,
        }
    }

    /// Adds what a learn file holds (within the limits); what is already
    /// known in memory wins.
    pub fn restore(&self, doc: Doc) {
        let mut state = self.lock();
        for h in doc.hosts {
            let key = (h.host, h.port);
            if state.hosts.contains_key(&key) || state.hosts.len() >= self.limits.hosts {
                continue;
            }
            let paths: Vec<PathRec> = h
                .paths
                .into_iter()
                .filter_map(|p| {
                    let pins: Result<Vec<Pin>, _> = p.pins.iter().map(|s| s.parse()).collect();
                    Some(PathRec {
                        pins: pins.ok().filter(|p| !p.is_empty())?,
                        certs: p.certs,
                        seen: p.seen,
                        first: unix(&p.first_seen),
                        last: unix(&p.last_seen),
                    })
                })
                .take(self.limits.paths)
                .collect();
            if paths.is_empty() {
                continue;
            }
            state.hosts.insert(
                key,
                HostRec {
                    trust: h.trust,
                    seen: h.seen,
                    first: unix(&h.first_seen),
                    last: unix(&h.last_seen),
                    paths,
                },
            );
        }
        state.dropped_hosts += doc.dropped_hosts;
        state.dropped_paths += doc.dropped_paths;
        self.hosts_gauge.set(state.hosts.len() as i64);
    }

    /// Whether something was learned since the last call.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// A slot to probe `host:port` now, if it is due: not probed within
    /// [`PROBE_EVERY`], fewer than [`MAX_PROBES`] in flight, and room to
    /// learn it.
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
        if self.probes.fetch_add(1, Ordering::SeqCst) >= MAX_PROBES {
            self.probes.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        if state.probed.len() >= self.limits.hosts.saturating_mul(2) {
            state
                .probed
                .retain(|_, at| now.duration_since(*at) < PROBE_EVERY);
        }
        state.probed.insert(key, now);
        Some(Probe(self.probes.clone()))
    }
}

/// What is known of a trust anchor, which servers usually don't send.
#[derive(Clone, Debug)]
pub struct AnchorInfo {
    pub subject: String,
    /// RFC 3339, when the anchor's certificate is at hand.
    pub not_after: Option<String>,
}

pub type Anchors = Arc<HashMap<Pin, AnchorInfo>>;

/// The anchors `trust` validates with, by pin: Mozilla's root
/// certificates (parsed once per process), or a CA bundle's certificates
/// (read when a learning generation is built, like the bundle itself).
pub fn anchors(trust: &Trust) -> Anchors {
    static MOZILLA: std::sync::OnceLock<Anchors> = std::sync::OnceLock::new();
    match trust {
        Trust::Bundle { path, anchors } => {
            let mut out: HashMap<Pin, AnchorInfo> = anchors
                .iter()
                .map(|a| {
                    let info = AnchorInfo {
                        subject: cert::anchor_subject(a),
                        not_after: None,
                    };
                    (
                        Pin::of_spki_contents(a.subject_public_key_info.as_ref()),
                        info,
                    )
                })
                .collect();
            let certs = cert::read_certificates(&path.to_string_lossy()).unwrap_or_default();
            out.extend(by_pin(&certs));
            Arc::new(out)
        }
        _ => MOZILLA
            .get_or_init(|| Arc::new(by_pin(webpki_root_certs::TLS_SERVER_ROOT_CERTS)))
            .clone(),
    }
}

fn by_pin(certs: &[rustls_pki_types::CertificateDer<'_>]) -> HashMap<Pin, AnchorInfo> {
    certs
        .iter()
        .filter_map(|c| CertInfo::from_der(c.as_ref()).ok())
        .filter_map(|c| {
            let info = AnchorInfo {
                subject: c.subject,
                not_after: Some(c.not_after),
            };
            Some((c.pin.parse().ok()?, info))
        })
        .collect()
}

// === the learn file ===

/// Reads a learn file (or a saved `GET /learned` answer); `None` when the
/// file does not exist yet.
pub fn read(path: &Path) -> Result<Option<Doc>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `doc` to `path` atomically (a temporary file renamed over it):
/// a crash mid-write never leaves half a file.
pub fn write(path: &Path, doc: &Doc) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec_pretty(doc).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Saves what was learned to `path` every `every` while something new was
/// learned, until `stop` resolves; then once more.
pub async fn persist(
    learned: Arc<Learned>,
    path: PathBuf,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = &mut stop => true,
        };
        if learned.take_dirty() {
            save(&learned, &path).await;
        }
        if stopping {
            return;
        }
    }
}

async fn save(learned: &Arc<Learned>, path: &Path) {
    let doc = learned.doc(true);
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || write(&p, &doc)).await {
        Ok(Ok(())) => tracing::debug!(path = %path.display(), "saved learned chains"),
        Ok(Err(e)) => tracing::warn!(error = %e, "saving learned chains"),
        Err(e) => tracing::warn!(error = %e, "saving learned chains"),
    }
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

#[cfg(test)]
mod tests;
