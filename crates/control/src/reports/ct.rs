//! What a failure report says about Certificate Transparency and the OCSP
//! staple on the validated path (docs/reference.md, "Failure reports").

use serde::Serialize;

use pinproxy_tls::ct::{CheckedSct, PathChecks};

/// CT as judged on the validated path.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CtView {
    /// The entry's `ct`: `enforce`, `report` (never `off`: then there is
    /// no view).
    pub mode: &'static str,
    /// The `result` label of `pinproxy_ct_verdicts_total`.
    pub verdict: &'static str,
    /// `false` when the log list is stale and `enforce` acted as `report`.
    pub enforced: bool,
    /// As `check --live` prints it.
    pub summary: String,
    pub scts: Vec<SctView>,
}

/// One SCT seen.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SctView {
    /// Base64, as the log list writes it; `None` for an SCT that could not
    /// be read.
    pub log_id: Option<String>,
    /// The log's description and operator, when the list knows the log.
    pub log: Option<String>,
    pub operator: Option<String>,
    /// RFC 3339.
    pub timestamp: Option<String>,
    /// `embedded`, `tls` or `ocsp`.
    pub delivery: String,
    /// `valid`, `unknown log`, `bad signature (…)`, …
    pub status: String,
}

/// The stapled OCSP response's verdict.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OcspView {
    /// The `result` label of `pinproxy_ocsp_staples_total`.
    pub result: &'static str,
    pub detail: String,
    pub must_staple: bool,
}

impl CtView {
    /// `None` under `ct: off`.
    pub fn of(c: &PathChecks) -> Option<Self> {
        let verdict = c.ct_verdict()?;
        Some(Self {
            mode: c.mode.as_str(),
            verdict: verdict.as_str(),
            enforced: c.enforced(),
            summary: c.ct_line(),
            scts: c.scts().iter().map(SctView::of).collect(),
        })
    }
}

impl SctView {
    pub fn of(s: &CheckedSct) -> Self {
        Self {
            log_id: s.log_id().map(|id| id.to_string()),
            log: s.log().map(|l| l.description.clone()),
            operator: s.log().map(|l| l.operator.clone()),
            timestamp: s.timestamp().map(|t| t.to_string()),
            delivery: s.delivery().to_string(),
            status: s.status().to_string(),
        }
    }
}

impl OcspView {
    pub fn of(c: &PathChecks) -> Self {
        Self {
            result: c.staple_verdict().as_str(),
            detail: c.staple_line(),
            must_staple: c.must_staple,
        }
    }
}
