//! Real SCTs, real logs, real list: `www.google.com`'s 2023 certificate
//! (from Go's test data) with its two embedded SCTs, checked against the
//! keys in Chrome's published log list. Nobody here wrote any of it, so a
//! precertificate TBS rebuilt wrongly, a wrong `issuer_key_hash` or a
//! wrong signed-data layout fails here.

mod support;

use pinproxy_ct::cert::{Issuer, Leaf};
use pinproxy_ct::loglist::Standing;
use pinproxy_ct::policy::{self, Criterion, Delivered};
use pinproxy_ct::verify::{Delivery, SctStatus};
use pinproxy_ct::{LogId, LogList, Verdict};
use support::{at, builtin_json, cert_der};

const ARGON2023: &str = "6D7Q2j71BjUy51covIlryQPTy9ERa+zraeF3fW0GvW4=";
const NIMBUS2023: &str = "ejKMVNi3LbYg6jjgUh7phBZwMhOFTTvSK8E6V6NS61I=";

fn leaf_and_issuer() -> (Vec<u8>, Issuer) {
    let issuer = Issuer::from_cert_der(&cert_der("gts-ca-1c3.pem")).expect("issuer parses");
    (cert_der("google-leaf-2023.pem"), issuer)
}

/// The built-in list with both 2023 logs put back in the state they had
/// in 2023 (`usable`), as a list of that year said.
fn list_of_2023() -> LogList {
    let mut v: serde_json::Value = serde_json::from_str(&builtin_json()).expect("json");
    for op in v["operators"].as_array_mut().expect("operators") {
        for log in op["logs"].as_array_mut().expect("logs") {
            let id = log["log_id"].as_str().unwrap_or_default();
            if id == ARGON2023 || id == NIMBUS2023 {
                log["state"] = serde_json::json!({"usable": {"timestamp": "2022-02-01T00:00:00Z"}});
            }
        }
    }
    LogList::from_json(v.to_string().as_bytes()).expect("edited list parses")
}

#[test]
fn both_real_scts_verify_against_the_real_log_keys() {
    let (der, issuer) = leaf_and_issuer();
    let leaf = Leaf::parse(&der).expect("leaf parses");
    let report = policy::check(
        LogList::builtin(),
        &leaf,
        &issuer,
        Delivered::default(),
        at("2023-01-10T00:00:00Z"),
    );
    let scts = report.scts();
    assert_eq!(scts.len(), 2, "{report}");
    let mut seen: Vec<(String, String, String)> = scts
        .iter()
        .map(|s| {
            assert_eq!(*s.status(), SctStatus::Valid, "{s}");
            assert_eq!(s.delivery(), Delivery::Embedded);
            assert_eq!(
                s.timestamp().map(|t| t.to_string()).as_deref(),
                Some("2023-01-02T09:19:20Z")
            );
            let log = s.log().expect("log in the list");
            // In the 2025 list both logs are rejected: Chrome no longer
            // recognises them, so they do not count.
            assert_eq!(log.standing, Standing::NotRecognised);
            (
                s.log_id().expect("id").to_string(),
                log.description.clone(),
                log.operator.clone(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                ARGON2023.into(),
                "Google 'Argon2023' log".into(),
                "Google".into()
            ),
            (
                NIMBUS2023.into(),
                "Cloudflare 'Nimbus2023' Log".into(),
                "Cloudflare".into()
            ),
        ]
        .into_iter()
        .map(|(a, b, c): (String, String, String)| (a, b, c))
        .collect::<Vec<_>>()
        .tap_sort()
    );
    // A list from the check's future is not stale; the rejected logs make
    // the certificate non-compliant by that list.
    assert_eq!(report.verdict(), Verdict::TooFewScts, "{report}");
    assert!(
        report
            .to_string()
            .contains("2 valid SCTs from logs Chrome does not recognise"),
        "{report}"
    );
}

#[test]
fn the_real_leaf_is_compliant_by_a_list_where_its_logs_are_usable() {
    let (der, issuer) = leaf_and_issuer();
    let leaf = Leaf::parse(&der).expect("leaf parses");
    let report = policy::check(
        &list_of_2023(),
        &leaf,
        &issuer,
        Delivered::default(),
        at("2023-01-10T00:00:00Z"),
    );
    assert_eq!(report.verdict(), Verdict::Ok, "{report}");
    let tally = report.tally().expect("tally");
    assert_eq!(
        (tally.criterion, tally.logs, tally.needed),
        (Criterion::Embedded, 2, 2)
    );
    assert_eq!(
        tally.operators,
        vec!["Cloudflare".to_string(), "Google".to_string()]
    );
    assert_eq!(report.to_string(), "ok, 2 SCTs from 2 operators (embedded)");
}

#[test]
fn one_flipped_byte_in_an_sct_is_a_bad_signature() {
    let (mut der, issuer) = leaf_and_issuer();
    // The first SCT's log id is followed by its 8-byte timestamp: change
    // the timestamp's last byte (one millisecond later).
    let id = LogId::from_base64(NIMBUS2023).expect("id").0;
    let pos = der
        .windows(32)
        .position(|w| w == id)
        .expect("Nimbus2023's SCT is in the leaf");
    der[pos + 32 + 7] ^= 0x01;
    let leaf = Leaf::parse(&der).expect("still parses");
    let report = policy::check(
        &list_of_2023(),
        &leaf,
        &issuer,
        Delivered::default(),
        at("2023-01-10T00:00:00Z"),
    );
    let statuses: Vec<_> = report
        .scts()
        .iter()
        .map(|s| (s.log_id().map(|i| i.to_string()), s.status().clone()))
        .collect();
    assert!(
        statuses.contains(&(
            Some(NIMBUS2023.into()),
            SctStatus::BadSignature(pinproxy_ct::key::SignatureError::Invalid)
        )),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&(Some(ARGON2023.into()), SctStatus::Valid)),
        "{statuses:?}"
    );
    assert_eq!(report.verdict(), Verdict::BadSignature, "{report}");
}

#[test]
fn the_list_without_that_log_makes_it_unknown() {
    let (der, issuer) = leaf_and_issuer();
    let leaf = Leaf::parse(&der).expect("leaf parses");
    let list = list_of_2023().without(&LogId::from_base64(ARGON2023).expect("id"));
    let report = policy::check(
        &list,
        &leaf,
        &issuer,
        Delivered::default(),
        at("2023-01-10T00:00:00Z"),
    );
    assert_eq!(report.verdict(), Verdict::UnknownLog, "{report}");
    let unknown: Vec<_> = report
        .scts()
        .iter()
        .filter(|s| *s.status() == SctStatus::UnknownLog)
        .collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        unknown[0].log_id().map(|i| i.to_string()).as_deref(),
        Some(ARGON2023)
    );
}

#[test]
fn the_2025_list_is_stale_in_december_2026() {
    let (der, issuer) = leaf_and_issuer();
    let leaf = Leaf::parse(&der).expect("leaf parses");
    // The SCTs still verify at that time; the list is what is too old.
    let report = policy::check(
        &list_of_2023(),
        &leaf,
        &issuer,
        Delivered::default(),
        at("2026-12-01T00:00:00Z"),
    );
    assert_eq!(report.verdict(), Verdict::StaleList, "{report}");
    assert_eq!(report.policy_verdict(), Verdict::Ok);
    assert!(report.is_compliant());
    assert!(
        report
            .to_string()
            .starts_with("stale-list: the CT log list is from 2025-05-05T12:54:12Z (574 days old"),
        "{report}"
    );
    assert!(LogList::builtin().is_stale(at("2026-12-01T00:00:00Z")));
}

#[test]
fn the_wrong_issuer_breaks_every_precert_sct() {
    // issuer_key_hash is part of what the log signed: the root's key in
    // place of the intermediate's must fail both.
    let der = cert_der("google-leaf-2023.pem");
    let leaf = Leaf::parse(&der).expect("leaf parses");
    let root = Issuer::from_cert_der(&cert_der("gts-root-r1.pem")).expect("root parses");
    let report = policy::check(
        &list_of_2023(),
        &leaf,
        &root,
        Delivered::default(),
        at("2023-01-10T00:00:00Z"),
    );
    assert!(
        report
            .scts()
            .iter()
            .all(|s| matches!(s.status(), SctStatus::BadSignature(_))),
        "{report}"
    );
    assert_eq!(report.verdict(), Verdict::BadSignature);
}

/// Sorting in an expression.
trait TapSort {
    fn tap_sort(self) -> Self;
}

impl<T: Ord> TapSort for Vec<T> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}
