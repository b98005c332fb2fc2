//! Checking each SCT on its own: is its log in the list, does the log's
//! signature cover this certificate (or its precertificate), is its
//! timestamp not in the future. Whether the SCTs together satisfy Chrome's
//! policy is [`crate::policy`]'s question.

use std::fmt;

use crate::cert::{Issuer, Leaf};
use crate::key::SignatureError;
use crate::loglist::{Log, LogId, LogList, Standing};
use crate::sct::{self, Entry, Sct, SignedEntry};
use crate::time::{Instant, CLOCK_SKEW};

/// At most this many SCTs of one list are checked; the rest are ignored.
/// Each costs a signature verification on a runtime thread, and a staple
/// (which the server chooses) can carry hundreds. Ignoring SCTs can only
/// lower the count of valid ones, so this fails closed; Chrome's policy
/// needs 3 at most, and real certificates carry 2 to 5.
pub const MAX_SCTS_PER_LIST: usize = 32;

/// How an SCT reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// In the certificate's SCT list extension (precertificate entry).
    Embedded,
    /// In the TLS `signed_certificate_timestamp` extension (x509 entry).
    Tls,
    /// In a stapled OCSP response's SCT extension (x509 entry).
    Ocsp,
}

/// One SCT's own verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SctStatus {
    /// The log's signature verifies and the timestamp is not in the future.
    Valid,
    /// No log with this id in the list.
    UnknownLog,
    /// The log's signature does not verify (or uses an algorithm other than
    /// the log's key allows).
    BadSignature(SignatureError),
    /// Signed, but with a timestamp later than now plus [`CLOCK_SKEW`].
    FutureTimestamp,
    /// An SCT version other than v1: ignored (RFC 6962 §3.2).
    UnsupportedVersion(u8),
    /// This many more SCTs in the list, past [`MAX_SCTS_PER_LIST`], were
    /// not looked at.
    OverLimit(usize),
    /// The SCT, its list, or the certificate it is about cannot be read.
    Malformed(String),
}

/// An SCT and what was found about it. Made only by this crate's checks,
/// so a `CheckedSct` with a `Valid` status is one whose signature verified.
#[derive(Clone, Debug)]
pub struct CheckedSct {
    pub(crate) delivery: Delivery,
    pub(crate) status: SctStatus,
    /// `None` when nothing could be parsed.
    pub(crate) sct: Option<Sct>,
    /// The log's description and its operator at the SCT's time, when the
    /// log is in the list.
    pub(crate) log: Option<LogInfo>,
}

/// What the list says about the log that issued an SCT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    pub description: String,
    pub operator: String,
    /// Whether the log counts at the time of check.
    pub standing: Standing,
}

// === impl CheckedSct ===

impl CheckedSct {
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    pub fn status(&self) -> &SctStatus {
        &self.status
    }

    /// The SCT as parsed (`None` when it could not be).
    pub fn sct(&self) -> Option<&Sct> {
        self.sct.as_ref()
    }

    /// What the list says about its log (`None` for a log not in it).
    pub fn log(&self) -> Option<&LogInfo> {
        self.log.as_ref()
    }

    pub fn log_id(&self) -> Option<LogId> {
        self.sct.as_ref().map(|s| s.log_id)
    }

    pub fn timestamp(&self) -> Option<Instant> {
        self.sct.as_ref().map(Sct::instant)
    }

    pub fn is_valid(&self) -> bool {
        self.status == SctStatus::Valid
    }

    fn unreadable(delivery: Delivery, why: impl fmt::Display) -> Self {
        CheckedSct {
            delivery,
            status: SctStatus::Malformed(why.to_string()),
            sct: None,
            log: None,
        }
    }
}

/// Checks every SCT embedded in `leaf` against the precertificate it was
/// issued for.
pub fn check_embedded(
    list: &LogList,
    leaf: &Leaf,
    issuer: &Issuer,
    now: Instant,
) -> Vec<CheckedSct> {
    let d = Delivery::Embedded;
    let bytes = match leaf.embedded_sct_list() {
        Ok(Some(b)) => b,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![CheckedSct::unreadable(d, e)],
    };
    let tbs = match leaf.precert_tbs() {
        Ok(t) => t,
        Err(e) => return vec![CheckedSct::unreadable(d, e)],
    };
    let hash = issuer.spki_sha256();
    check_list(
        list,
        &bytes,
        &SignedEntry::Precert {
            issuer_key_hash: &hash,
            tbs: &tbs,
        },
        d,
        now,
    )
}

/// Checks a TLS-encoded SCT list delivered outside the certificate (TLS
/// extension or OCSP staple): those SCTs sign the certificate itself.
pub fn check_delivered(
    list: &LogList,
    leaf: &Leaf,
    bytes: &[u8],
    delivery: Delivery,
    now: Instant,
) -> Vec<CheckedSct> {
    check_list(list, bytes, &SignedEntry::X509(leaf.der()), delivery, now)
}

fn check_list(
    list: &LogList,
    bytes: &[u8],
    entry: &SignedEntry<'_>,
    d: Delivery,
    now: Instant,
) -> Vec<CheckedSct> {
    let mut entries = match sct::parse_list(bytes) {
        Ok(e) => e,
        Err(e) => return vec![CheckedSct::unreadable(d, e)],
    };
    let over = entries.len().saturating_sub(MAX_SCTS_PER_LIST);
    entries.truncate(MAX_SCTS_PER_LIST);
    // Every SCT under the cap is verified, a log's second one too: an
    // embedded SCT's eligibility depends on its own timestamp (a retired
    // log counts only before its retirement, and the earliest timestamp
    // is the issuance), so skipping one could refuse a compliant leaf.
    let mut out: Vec<CheckedSct> = entries
        .into_iter()
        .map(|e| match e {
            Entry::V1(s) => check_one(list, s, entry, d, now),
            Entry::Unsupported { version } => CheckedSct {
                delivery: d,
                status: SctStatus::UnsupportedVersion(version),
                sct: None,
                log: None,
            },
            Entry::Malformed(err) => CheckedSct::unreadable(d, err),
        })
        .collect();
    if over > 0 {
        out.push(CheckedSct {
            delivery: d,
            status: SctStatus::OverLimit(over),
            sct: None,
            log: None,
        });
    }
    out
}

fn check_one(
    list: &LogList,
    sct: Sct,
    entry: &SignedEntry<'_>,
    d: Delivery,
    now: Instant,
) -> CheckedSct {
    let Some(log) = list.log(&sct.log_id) else {
        return CheckedSct {
            delivery: d,
            status: SctStatus::UnknownLog,
            sct: Some(sct),
            log: None,
        };
    };
    let info = info_of(list, log, &sct, now);
    let signed = sct.signed_data(entry);
    let status = match log
        .key
        .verify_tls(sct.hash_alg, sct.sig_alg, &signed, &sct.signature)
    {
        Err(e) => SctStatus::BadSignature(e),
        Ok(()) if sct.instant() > now.plus(CLOCK_SKEW) => SctStatus::FutureTimestamp,
        Ok(()) => SctStatus::Valid,
    };
    CheckedSct {
        delivery: d,
        status,
        sct: Some(sct),
        log: Some(info),
    }
}

fn info_of(list: &LogList, log: &Log, sct: &Sct, now: Instant) -> LogInfo {
    LogInfo {
        description: log.description.clone(),
        operator: list.operator_at(log, sct.instant()).to_string(),
        standing: log.standing_at(now),
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Delivery::Embedded => "embedded",
            Delivery::Tls => "tls",
            Delivery::Ocsp => "ocsp",
        })
    }
}

impl fmt::Display for SctStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SctStatus::Valid => f.write_str("valid"),
            SctStatus::UnknownLog => f.write_str("unknown log"),
            SctStatus::BadSignature(e) => write!(f, "bad signature ({e})"),
            SctStatus::FutureTimestamp => f.write_str("timestamp in the future"),
            SctStatus::UnsupportedVersion(v) => write!(f, "unsupported SCT version {v}, ignored"),
            SctStatus::OverLimit(n) => write!(
                f,
                "{n} more SCT{} in the list not checked (at most {MAX_SCTS_PER_LIST} per list)",
                if *n == 1 { "" } else { "s" }
            ),
            SctStatus::Malformed(why) => write!(f, "malformed ({why})"),
        }
    }
}

/// One line per SCT, for `pin --connect`: log id, log, operator,
/// timestamp, delivery, verdict.
impl fmt::Display for CheckedSct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sct {
            Some(s) => write!(f, "{} {} ", s.log_id, s.instant())?,
            None if matches!(self.status, SctStatus::OverLimit(_)) => {}
            None => f.write_str("(unreadable) ")?,
        }
        match &self.log {
            Some(l) => write!(f, "{} ({}) ", l.description, l.operator)?,
            None if self.sct.is_some() => f.write_str("(not in the log list) ")?,
            None => {}
        }
        write!(f, "[{}]: {}", self.delivery, self.status)
    }
}
