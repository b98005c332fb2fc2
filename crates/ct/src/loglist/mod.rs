//! Chrome's v3 CT log list: which logs exist, their keys, who operates
//! them, and the state Chrome holds each in — the facts Chrome's CT policy
//! is evaluated against.
//!
//! The list records each log's *current* state and when it entered it.
//! "The state at time of check" is read the way Chromium reads it: a log
//! the list calls `qualified`, `usable` or `readonly` counts; a `retired`
//! log counts only for SCTs issued before its retirement (and not at all
//! for TLS- or OCSP-delivered SCTs once retired); `pending`, `rejected` and
//! logs without a state are not in Chrome's `log_list.json` at all and
//! never count. A state whose timestamp is after the time of check has not
//! begun yet: the log is taken to be in the state before it (`qualified`
//! before `usable`, `pending` before `qualified`, counting before
//! `retired`).

mod wire;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls_pki_types::UnixTime;

use crate::key::{KeyError, PublicKey};
use crate::time::Instant;

/// Chrome stops enforcing CT when its newest log list is this old
/// (ct_policy.md, "CT Enforcement Timeout": 70 days, 10 weeks).
pub const MAX_AGE: Duration = Duration::from_secs(70 * 86_400);

/// How far ahead of this machine's clock a list's `log_list_timestamp` may
/// be. A list from the future would never turn stale and, installed, would
/// make every real newer list look like a rollback; a day covers clocks
/// that are merely wrong by a time zone.
pub const MAX_FUTURE: Duration = Duration::from_secs(86_400);

/// A log's id: SHA-256 of its DER SubjectPublicKeyInfo (RFC 6962 §3.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(pub [u8; 32]);

/// What is wrong with a log list.
#[derive(Debug, thiserror::Error)]
pub enum LogListError {
    #[error("not a v3 log list: {0}")]
    Json(#[from] serde_json::Error),
    #[error("log_list_timestamp {0:?} is not an RFC 3339 time")]
    Timestamp(String),
    #[error("the list names no logs")]
    Empty,
    #[error(
        "log_list_timestamp {timestamp} is more than a day ahead of this machine's clock \
         ({now}): a list from the future would never turn stale; check the clock, or the list"
    )]
    FromTheFuture { timestamp: Instant, now: Instant },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Logs(Vec<LogIssue>),
}

/// One log's problem, named by its description (or id).
#[derive(Debug, thiserror::Error)]
#[error("log {log}: {problem}")]
pub struct LogIssue {
    pub log: String,
    pub problem: LogProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum LogProblem {
    #[error("log_id is not base64 of 32 bytes")]
    Id,
    #[error("key is not base64")]
    KeyBase64,
    #[error("key: {0}")]
    Key(#[from] KeyError),
    #[error("log_id is not the SHA-256 of its key")]
    IdMismatch,
    #[error("the same log_id appears twice")]
    Duplicate,
    #[error(
        "state must name exactly one of pending, qualified, usable, readonly, retired, rejected"
    )]
    State,
    #[error("{field} {value:?} is not an RFC 3339 time")]
    Time { field: &'static str, value: String },
}

/// The states of Chrome's log lifecycle (log_states.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    Pending,
    Qualified,
    Usable,
    ReadOnly,
    Retired,
    Rejected,
}

/// A log's state and when it entered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    pub kind: StateKind,
    pub since: Instant,
}

/// Whether SCTs from a log count towards Chrome's policy at a time of check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// `Qualified`, `Usable` or `ReadOnly` at the time of check.
    Counts,
    /// `Retired` at the time of check: counts only for embedded SCTs issued
    /// before `since`.
    Retired { since: Instant },
    /// Pending, rejected, or no state: not a log Chrome recognises.
    NotRecognised,
}

/// A log operator, by its position in the list.
#[derive(Clone, Debug)]
pub struct Operator {
    pub name: String,
    pub email: Vec<String>,
}

/// One log of the list.
#[derive(Clone, Debug)]
pub struct Log {
    pub id: LogId,
    pub description: String,
    pub key: PublicKey,
    /// `url` for RFC 6962 logs, `submission_url` for tiled logs.
    pub url: Option<String>,
    /// Maximum merge delay, seconds.
    pub mmd: Option<u64>,
    pub state: Option<LogState>,
    /// Certificates whose notAfter falls in [start, end) are accepted.
    pub temporal_interval: Option<(Instant, Instant)>,
    /// `"test"` for test logs; `None` for production ones.
    pub log_type: Option<String>,
    /// A Static CT API (tiled) log.
    pub tiled: bool,
    operator: usize,
    /// Earlier operators, oldest first: (operator name, last instant).
    previous_operators: Vec<(String, Instant)>,
}

/// A parsed, validated log list.
#[derive(Clone, Debug)]
pub struct LogList {
    version: Option<String>,
    timestamp: Instant,
    is_all_logs: bool,
    operators: Vec<Operator>,
    logs: Vec<Log>,
    by_id: HashMap<LogId, usize>,
}

// === impl LogId ===

impl LogId {
    pub fn from_base64(s: &str) -> Option<Self> {
        let v = B64.decode(s).ok()?;
        <[u8; 32]>::try_from(v.as_slice()).ok().map(LogId)
    }

    pub fn of_spki(spki_der: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut id = [0u8; 32];
        id.copy_from_slice(d.as_ref());
        LogId(id)
    }
}

/// Base64, as the list and every CT tool print a log id.
impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogId({self})")
    }
}

// === impl Log ===

impl Log {
    /// Whether its SCTs count at `check` (see the module doc).
    pub fn standing_at(&self, check: Instant) -> Standing {
        let Some(state) = self.state else {
            return Standing::NotRecognised;
        };
        let begun = state.since <= check;
        match state.kind {
            StateKind::Pending | StateKind::Rejected => Standing::NotRecognised,
            // Before it became qualified it was pending.
            StateKind::Qualified if !begun => Standing::NotRecognised,
            StateKind::Qualified | StateKind::Usable | StateKind::ReadOnly => Standing::Counts,
            StateKind::Retired if begun => Standing::Retired { since: state.since },
            StateKind::Retired => Standing::Counts,
        }
    }
}

// === impl LogList ===

impl LogList {
    /// Parses and validates a v3 `log_list.json` (or `all_logs_list.json`).
    /// Every log is checked (id, key, id = SHA-256 of key, state, times)
    /// and every problem is reported, not only the first.
    pub fn from_json(json: &[u8]) -> Result<Self, LogListError> {
        let wire: wire::List = serde_json::from_slice(json)?;
        let timestamp = Instant::parse_rfc3339(&wire.log_list_timestamp)
            .ok_or_else(|| LogListError::Timestamp(wire.log_list_timestamp.clone()))?;
        let mut list = LogList {
            version: wire.version,
            timestamp,
            is_all_logs: wire.is_all_logs,
            operators: Vec::new(),
            logs: Vec::new(),
            by_id: HashMap::new(),
        };
        let mut issues = Vec::new();
        for op in wire.operators {
            let index = list.operators.len();
            list.operators.push(Operator {
                name: op.name,
                email: op.email,
            });
            let all = op
                .logs
                .into_iter()
                .map(|l| (l, false))
                .chain(op.tiled_logs.into_iter().map(|l| (l, true)));
            for (wire_log, tiled) in all {
                let name = wire_log
                    .description
                    .clone()
                    .unwrap_or_else(|| wire_log.log_id.clone());
                match convert_log(wire_log, tiled, index) {
                    Ok(log) if list.by_id.contains_key(&log.id) => issues.push(LogIssue {
                        log: name,
                        problem: LogProblem::Duplicate,
                    }),
                    Ok(log) => {
                        list.by_id.insert(log.id, list.logs.len());
                        list.logs.push(log);
                    }
                    Err(problem) => issues.push(LogIssue { log: name, problem }),
                }
            }
        }
        if !issues.is_empty() {
            return Err(LogListError::Logs(issues));
        }
        if list.logs.is_empty() {
            return Err(LogListError::Empty);
        }
        Ok(list)
    }

    /// The list's `version` field, e.g. `"53.34"`.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// `log_list_timestamp`: when Google generated the list.
    pub fn timestamp(&self) -> UnixTime {
        self.timestamp.as_unix()
    }

    pub(crate) fn timestamp_instant(&self) -> Instant {
        self.timestamp
    }

    /// `all_logs_list.json` (every known log) rather than `log_list.json`.
    pub fn is_all_logs(&self) -> bool {
        self.is_all_logs
    }

    /// Refuses a list whose timestamp is more than [`MAX_FUTURE`] ahead of
    /// `now`. Not part of [`LogList::from_json`], which knows no clock:
    /// whoever takes a list into force calls this too.
    pub fn check_not_future(&self, now: UnixTime) -> Result<(), LogListError> {
        let now = Instant::from_unix(now);
        if self.timestamp > now.plus(MAX_FUTURE) {
            return Err(LogListError::FromTheFuture {
                timestamp: self.timestamp,
                now,
            });
        }
        Ok(())
    }

    /// Whole days from the list's timestamp to `now` (0 for a list from
    /// `now`'s future).
    pub fn age_days(&self, now: UnixTime) -> u64 {
        self.timestamp.days_until(Instant::from_unix(now))
    }

    /// Chrome's enforcement timeout: a list 70 days old or older at `now`
    /// must not be enforced (ct_policy.md; Chromium's `IsLogDataTimely` is
    /// `(now - list).InDays() < 70`).
    pub fn is_stale(&self, now: UnixTime) -> bool {
        self.age_days(now) >= MAX_AGE.as_secs() / 86_400
    }

    pub fn log(&self, id: &LogId) -> Option<&Log> {
        self.by_id.get(id).and_then(|&i| self.logs.get(i))
    }

    pub fn logs(&self) -> impl Iterator<Item = &Log> {
        self.logs.iter()
    }

    pub fn operators(&self) -> &[Operator] {
        &self.operators
    }

    /// The log's current operator.
    pub fn operator(&self, log: &Log) -> &str {
        self.operators
            .get(log.operator)
            .map_or("", |o| o.name.as_str())
    }

    /// Who operated `log` at `at` (an SCT's timestamp): ct_policy.md counts
    /// an SCT for the operator at the time of issuance, from the log's
    /// `previous_operators` when it changed hands.
    pub fn operator_at<'a>(&'a self, log: &'a Log, at: Instant) -> &'a str {
        for (name, end) in &log.previous_operators {
            if at < *end {
                return name;
            }
        }
        self.operator(log)
    }

    /// The list without the log `id`: what a client that never heard of a
    /// log sees (tests, and `ct-update` diffs).
    pub fn without(&self, id: &LogId) -> Self {
        let mut copy = self.clone();
        copy.logs.retain(|l| l.id != *id);
        copy.by_id = copy
            .logs
            .iter()
            .enumerate()
            .map(|(i, l)| (l.id, i))
            .collect();
        copy
    }
}

fn convert_log(w: wire::Log, tiled: bool, operator: usize) -> Result<Log, LogProblem> {
    let id = LogId::from_base64(&w.log_id).ok_or(LogProblem::Id)?;
    let spki = B64.decode(&w.key).map_err(|_| LogProblem::KeyBase64)?;
    let key = PublicKey::from_spki_der(&spki)?;
    if LogId::of_spki(&spki) != id {
        return Err(LogProblem::IdMismatch);
    }
    let state = w.state.map(convert_state).transpose()?;
    let temporal_interval = match w.temporal_interval {
        Some(t) => Some((
            time("temporal_interval.start_inclusive", &t.start_inclusive)?,
            time("temporal_interval.end_exclusive", &t.end_exclusive)?,
        )),
        None => None,
    };
    let mut previous_operators = w
        .previous_operators
        .into_iter()
        .map(|p| Ok((p.name, time("previous_operators.end_time", &p.end_time)?)))
        .collect::<Result<Vec<_>, LogProblem>>()?;
    previous_operators.sort_by_key(|(_, end)| *end);
    Ok(Log {
        id,
        description: w.description.unwrap_or_default(),
        key,
        url: w.url.or(w.submission_url).or(w.monitoring_url),
        mmd: w.mmd,
        state,
        temporal_interval,
        log_type: w.log_type,
        tiled,
        operator,
        previous_operators,
    })
}

fn convert_state(s: wire::State) -> Result<LogState, LogProblem> {
    let candidates = [
        (StateKind::Pending, s.pending.map(|x| x.timestamp)),
        (StateKind::Qualified, s.qualified.map(|x| x.timestamp)),
        (StateKind::Usable, s.usable.map(|x| x.timestamp)),
        (StateKind::ReadOnly, s.readonly.map(|x| x.timestamp)),
        (StateKind::Retired, s.retired.map(|x| x.timestamp)),
        (StateKind::Rejected, s.rejected.map(|x| x.timestamp)),
    ];
    let mut present = candidates
        .into_iter()
        .filter_map(|(k, t)| t.map(|t| (k, t)));
    let (kind, ts) = present.next().ok_or(LogProblem::State)?;
    if present.next().is_some() {
        return Err(LogProblem::State);
    }
    Ok(LogState {
        kind,
        since: time("state timestamp", &ts)?,
    })
}

fn time(field: &'static str, value: &str) -> Result<Instant, LogProblem> {
    Instant::parse_rfc3339(value).ok_or_else(|| LogProblem::Time {
        field,
        value: value.to_string(),
    })
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateKind::Pending => "pending",
            StateKind::Qualified => "qualified",
            StateKind::Usable => "usable",
            StateKind::ReadOnly => "readonly",
            StateKind::Retired => "retired",
            StateKind::Rejected => "rejected",
        })
    }
}

#[cfg(test)]
mod tests;
