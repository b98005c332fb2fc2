//! Chrome's Certificate Transparency policy, evaluated over checked SCTs.
//!
//! Implemented from the policy text at
//! <https://googlechrome.github.io/CertificateTransparency/ct_policy.html>
//! as of its revision of 2026-04-15 (GoogleChrome/CertificateTransparency
//! `ct_policy.md`, commit 5ee521b, "Remove newly outdated one-6962-log
//! language"), read alongside Chromium's `ChromeCTPolicyEnforcer`:
//!
//! **Embedded SCTs** — compliant when
//! 1. at least one embedded SCT is from a log `Qualified`, `Usable` or
//!    `ReadOnly` at the time of check; and
//! 2. embedded SCTs come from at least N distinct logs that were
//!    `Qualified`, `Usable`, `ReadOnly` or `Retired` at the time of check —
//!    N = 2 for a certificate lifetime of 180 days or less, 3 above; and
//! 3. among those, at least two distinct log operators.
//!
//! An SCT from a `Retired` log counts only if it, and the earliest SCT
//! presented, were issued before the log's retirement ("Chrome uses the
//! earliest SCT among all SCTs presented to evaluate CT compliance against
//! CT log Retired timestamps"; Chromium computes that earliest SCT over
//! logs not retired at the time of check).
//!
//! **SCTs delivered via TLS** — compliant when at least two SCTs are from
//! logs `Qualified`, `Usable` or `ReadOnly` at the time of check, from at
//! least two distinct operators. SCTs from a stapled OCSP response are held
//! to the same criterion (the policy text: "In versions prior to version
//! 148, Chrome also accepts SCTs embedded in stapled OCSP responses ... these
//! SCTs must meet the same criteria as SCTs delivered via TLS"); this crate
//! still accepts them, and TLS and OCSP SCTs may be counted together, as
//! Chromium did. Embedded SCTs are never mixed with the others: the policy
//! defines the criteria per delivery method.
//!
//! A log operator is the operator at the SCT's timestamp
//! (`previous_operators`). Only SCTs whose signatures verify count; "so
//! long as one of the criteria is met ... additional SCTs, regardless of
//! their status, will not affect" compliance.
//!
//! The list's age is checked separately: a list 70 days old or older makes
//! the verdict `stale-list` whatever the SCTs say (the evaluation is still
//! reported, for operators to see what enforcing would do).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use rustls_pki_types::UnixTime;

use crate::cert::{Issuer, Leaf};
use crate::loglist::{LogId, LogList, Standing};
use crate::time::Instant;
use crate::verify::{self, CheckedSct, Delivery, SctStatus};

/// The policy's lifetime threshold for 2 vs 3 embedded SCTs.
const LONG_LIFETIME: Duration = Duration::from_secs(180 * 86_400);

/// The CT verdict for one certificate: the `result` label of
/// `pinproxy_ct_verdicts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Chrome's policy is met.
    Ok,
    /// SCTs were presented and verified, but too few count (too few logs,
    /// one operator only, logs not recognised, timestamps in the future).
    TooFewScts,
    /// Not compliant, and at least one SCT names a log the list lacks.
    UnknownLog,
    /// Not compliant, and at least one SCT's signature does not verify or
    /// cannot be read.
    BadSignature,
    /// The log list is 70 days old or older: the policy is not enforced.
    StaleList,
    /// No SCTs at all.
    None,
}

/// SCT lists that arrived outside the certificate, TLS-encoded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delivered<'a> {
    /// The TLS `signed_certificate_timestamp` extension's contents.
    pub tls: Option<&'a [u8]>,
    /// The SCT list of a stapled OCSP response
    /// ([`crate::ocsp::StapleReport::sct_list`]).
    pub ocsp: Option<&'a [u8]>,
}

/// Which of the policy's criteria an outcome is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    Embedded,
    /// TLS extension and/or OCSP staple.
    Delivered,
}

impl Criterion {
    fn as_str(self) -> &'static str {
        match self {
            Criterion::Embedded => "embedded",
            Criterion::Delivered => "TLS/OCSP",
        }
    }
}

/// The count behind a verdict, for one criterion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    pub criterion: Criterion,
    /// Distinct logs whose SCTs count.
    pub logs: usize,
    /// Distinct operators among them.
    pub operators: Vec<String>,
    /// Distinct logs the criterion needs (operators: always 2).
    pub needed: usize,
    /// Embedded criterion's rule 1 (always true for the other).
    pub has_current_log: bool,
}

/// Everything found about a certificate's SCTs.
#[derive(Clone, Debug)]
pub struct CtReport {
    verdict: Verdict,
    policy: Verdict,
    tally: Option<Tally>,
    scts: Vec<CheckedSct>,
    list_timestamp: Instant,
    list_age_days: u64,
}

// === impl Verdict ===

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Ok,
        Verdict::TooFewScts,
        Verdict::UnknownLog,
        Verdict::BadSignature,
        Verdict::StaleList,
        Verdict::None,
    ];

    /// The metric label and the word `check --live` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::TooFewScts => "too-few-scts",
            Verdict::UnknownLog => "unknown-log",
            Verdict::BadSignature => "bad-signature",
            Verdict::StaleList => "stale-list",
            Verdict::None => "none",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl CtReport ===

impl CtReport {
    /// The verdict to count and act on: `stale-list` when the list is too
    /// old, else the policy's.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// The policy's verdict, ignoring the list's age.
    pub fn policy_verdict(&self) -> Verdict {
        self.policy
    }

    /// Whether the SCTs satisfy the policy (whatever the list's age).
    pub fn is_compliant(&self) -> bool {
        self.policy == Verdict::Ok
    }

    pub fn is_stale(&self) -> bool {
        self.verdict == Verdict::StaleList
    }

    /// Every SCT seen, in the order: embedded, TLS, OCSP.
    pub fn scts(&self) -> &[CheckedSct] {
        &self.scts
    }

    /// The count for the criterion that was met, or else the one closest to
    /// it (embedded when the certificate has SCTs, else TLS/OCSP).
    pub fn tally(&self) -> Option<&Tally> {
        self.tally.as_ref()
    }
}

/// Checks all SCTs of `leaf` — embedded, and those `delivered` by TLS or
/// OCSP — and evaluates Chrome's policy at `now`.
///
/// `issuer` must be the issuer on the validated path: an embedded SCT
/// signs the hash of its key.
pub fn check(
    list: &LogList,
    leaf: &Leaf,
    issuer: &Issuer,
    delivered: Delivered<'_>,
    now: UnixTime,
) -> CtReport {
    let at = Instant::from_unix(now);
    let mut scts = verify::check_embedded(list, leaf, issuer, at);
    if let Some(b) = delivered.tls {
        scts.extend(verify::check_delivered(list, leaf, b, Delivery::Tls, at));
    }
    if let Some(b) = delivered.ocsp {
        scts.extend(verify::check_delivered(list, leaf, b, Delivery::Ocsp, at));
    }
    evaluate(list, leaf.lifetime(), scts, now)
}

/// Evaluates the policy over SCTs already checked.
pub(crate) fn evaluate(
    list: &LogList,
    lifetime: Duration,
    scts: Vec<CheckedSct>,
    now: UnixTime,
) -> CtReport {
    let embedded = embedded_tally(&scts, lifetime);
    let others = delivered_tally(&scts);
    let met = |t: &Tally| t.has_current_log && t.logs >= t.needed && t.operators.len() >= 2;
    let has_embedded = scts.iter().any(|s| s.delivery == Delivery::Embedded);
    let tally = match (met(&embedded), met(&others)) {
        (true, _) => Some(embedded),
        (false, true) => Some(others),
        _ if has_embedded => Some(embedded),
        _ if !scts.is_empty() => Some(others),
        _ => None,
    };
    let policy = if tally.as_ref().is_some_and(met) {
        Verdict::Ok
    } else if scts.is_empty() {
        Verdict::None
    } else if scts.iter().any(|s| {
        matches!(
            s.status,
            SctStatus::BadSignature(_) | SctStatus::Malformed(_)
        )
    }) {
        Verdict::BadSignature
    } else if scts.iter().any(|s| s.status == SctStatus::UnknownLog) {
        Verdict::UnknownLog
    } else {
        Verdict::TooFewScts
    };
    let stale = list.is_stale(now);
    CtReport {
        verdict: if stale { Verdict::StaleList } else { policy },
        policy,
        tally,
        scts,
        list_timestamp: list.timestamp_instant(),
        list_age_days: list.age_days(now),
    }
}

/// The embedded criterion's count.
fn embedded_tally(scts: &[CheckedSct], lifetime: Duration) -> Tally {
    let valid: Vec<(&CheckedSct, Standing)> = scts
        .iter()
        .filter(|s| s.delivery == Delivery::Embedded && s.is_valid())
        .filter_map(|s| s.log.as_ref().map(|l| (s, l.standing)))
        .collect();
    // The issuance date: the earliest SCT from a log not retired now.
    let issuance = valid
        .iter()
        .filter(|(_, st)| *st == Standing::Counts)
        .filter_map(|(s, _)| s.timestamp())
        .min();
    let eligible = valid.iter().filter(|(s, st)| match st {
        Standing::Counts => true,
        Standing::Retired { since } => {
            s.timestamp().is_some_and(|t| t < *since) && issuance.is_some_and(|i| i < *since)
        }
        Standing::NotRecognised => false,
    });
    let mut t = tally(Criterion::Embedded, eligible.map(|(s, _)| *s));
    t.needed = if lifetime > LONG_LIFETIME { 3 } else { 2 };
    t.has_current_log = issuance.is_some();
    t
}

/// The TLS/OCSP criterion's count: only logs that count now.
fn delivered_tally(scts: &[CheckedSct]) -> Tally {
    let eligible = scts.iter().filter(|s| {
        s.delivery != Delivery::Embedded
            && s.is_valid()
            && s.log
                .as_ref()
                .is_some_and(|l| l.standing == Standing::Counts)
    });
    tally(Criterion::Delivered, eligible)
}

fn tally<'a>(criterion: Criterion, eligible: impl Iterator<Item = &'a CheckedSct>) -> Tally {
    let mut logs: BTreeSet<LogId> = BTreeSet::new();
    let mut operators: BTreeSet<String> = BTreeSet::new();
    for s in eligible {
        if let (Some(id), Some(log)) = (s.log_id(), s.log.as_ref()) {
            logs.insert(id);
            operators.insert(log.operator.clone());
        }
    }
    Tally {
        criterion,
        logs: logs.len(),
        operators: operators.into_iter().collect(),
        needed: 2,
        has_current_log: true,
    }
}

/// `check --live`'s CT line: "ok, 3 SCTs from 3 operators", or why not.
impl fmt::Display for CtReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_stale() {
            write!(
                f,
                "stale-list: the CT log list is from {} ({} days old, the limit is 70), so the policy is \
                 not enforced; by that list: ",
                self.list_timestamp, self.list_age_days
            )?;
        }
        f.write_str(self.policy.as_str())?;
        match &self.tally {
            Some(t) if self.policy == Verdict::Ok => {
                let (n, ops) = (t.logs, t.operators.len());
                let how = t.criterion.as_str();
                write!(
                    f,
                    ", {n} SCT{} from {ops} operator{} ({how})",
                    plural(n),
                    plural(ops)
                )?;
            }
            Some(t) => {
                let (n, ops) = (t.logs, t.operators.len());
                let how = t.criterion.as_str();
                write!(
                    f,
                    ": {n} {how} SCT{} from {ops} operator{} count",
                    plural(n),
                    plural(ops)
                )?;
                write!(f, ", {} logs and 2 operators needed", t.needed)?;
                if !t.has_current_log {
                    f.write_str(", one of them qualified, usable or read-only now")?;
                }
            }
            // pinproxy never passes `Delivered::tls` (rustls does not hand
            // the extension over), and this text is what operators read.
            None => f.write_str(
                ": no SCTs in the certificate or a stapled OCSP response \
                 (SCTs in the TLS extension are not read)",
            )?,
        }
        let problems: Vec<String> = self
            .scts
            .iter()
            .filter(|s| !s.is_valid())
            .map(|s| s.status.to_string())
            .collect();
        let uncounted = self
            .scts
            .iter()
            .filter(|s| {
                s.is_valid()
                    && s.log
                        .as_ref()
                        .is_some_and(|l| l.standing == Standing::NotRecognised)
            })
            .count();
        if !problems.is_empty() {
            write!(f, "; {}", problems.join(", "))?;
        }
        if uncounted > 0 {
            let s = plural(uncounted);
            write!(f, "; {uncounted} valid SCT{s} from logs Chrome does not recognise (pending, rejected or without a state)")?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sct::Sct;
    use crate::verify::LogInfo;

    const DAY: u64 = 86_400_000;
    const NOW: u64 = 1_750_000_000_000;

    fn list() -> LogList {
        let json = format!(
            r#"{{"log_list_timestamp": "{}", "operators": [{{"name": "X", "logs": [{{"log_id": "{}",
               "key": "{}"}}]}}]}}"#,
            Instant(NOW - DAY),
            LogId::of_spki(&crate::key::tests_support::p256_spki_of_seed(9)),
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                crate::key::tests_support::p256_spki_of_seed(9)
            ),
        );
        LogList::from_json(json.as_bytes()).expect("list")
    }

    fn sct(
        d: Delivery,
        log: u8,
        operator: &str,
        standing: Standing,
        status: SctStatus,
    ) -> CheckedSct {
        CheckedSct {
            delivery: d,
            status,
            sct: Some(Sct {
                log_id: LogId([log; 32]),
                timestamp: NOW - DAY,
                extensions: vec![],
                hash_alg: 4,
                sig_alg: 3,
                signature: vec![],
            }),
            log: Some(LogInfo {
                description: format!("log {log}"),
                operator: operator.into(),
                standing,
            }),
        }
    }

    fn verdict(scts: Vec<CheckedSct>) -> Verdict {
        evaluate(
            &list(),
            Duration::from_secs(90 * 86_400),
            scts,
            Instant(NOW).as_unix(),
        )
        .verdict()
    }

    use Delivery::{Embedded, Tls};
    use Standing::{Counts, NotRecognised};

    #[test]
    fn two_scts_from_one_log_are_one_log() {
        let v = verdict(vec![
            sct(Embedded, 1, "A", Counts, SctStatus::Valid),
            sct(Embedded, 1, "A", Counts, SctStatus::Valid),
            sct(Embedded, 2, "B", NotRecognised, SctStatus::Valid),
        ]);
        assert_eq!(v, Verdict::TooFewScts);
    }

    #[test]
    fn a_bad_signature_outranks_an_unknown_log_when_not_compliant() {
        let unknown = CheckedSct {
            log: None,
            status: SctStatus::UnknownLog,
            ..sct(Tls, 3, "C", Counts, SctStatus::Valid)
        };
        let bad = sct(
            Tls,
            1,
            "A",
            Counts,
            SctStatus::BadSignature(crate::key::SignatureError::Invalid),
        );
        assert_eq!(
            verdict(vec![unknown.clone(), bad.clone()]),
            Verdict::BadSignature
        );
        assert_eq!(
            verdict(vec![
                unknown.clone(),
                sct(Tls, 1, "A", Counts, SctStatus::Valid)
            ]),
            Verdict::UnknownLog
        );
        // Compliant all the same: extra SCTs do not matter.
        let ok = vec![
            sct(Tls, 1, "A", Counts, SctStatus::Valid),
            sct(Tls, 2, "B", Counts, SctStatus::Valid),
            unknown,
            bad,
        ];
        assert_eq!(verdict(ok), Verdict::Ok);
    }

    #[test]
    fn unsupported_versions_alone_are_too_few() {
        let v2 = CheckedSct {
            delivery: Tls,
            status: SctStatus::UnsupportedVersion(1),
            sct: None,
            log: None,
        };
        assert_eq!(verdict(vec![v2]), Verdict::TooFewScts);
        assert_eq!(verdict(vec![]), Verdict::None);
        let labels: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(
            labels,
            [
                "ok",
                "too-few-scts",
                "unknown-log",
                "bad-signature",
                "stale-list",
                "none"
            ]
        );
    }
}
