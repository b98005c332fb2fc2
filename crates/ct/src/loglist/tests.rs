use super::*;
use crate::key::tests_support::p256_spki_of_seed;

/// A one-operator list with one log in `state` (JSON text, or none).
fn list_with(state: Option<&str>, extra: &str) -> String {
    let spki = p256_spki_of_seed(1);
    let id = LogId::of_spki(&spki);
    let state = state
        .map(|s| format!(r#","state": {s}"#))
        .unwrap_or_default();
    format!(
        r#"{{"version": "1.2", "log_list_timestamp": "2025-01-01T00:00:00Z", "operators": [
            {{"name": "Op", "email": ["op@example.test"], "logs": [
              {{"description": "Log", "log_id": "{id}", "key": "{key}", "url": "https://log.example.test/",
                "mmd": 86400 {state} {extra}}}], "tiled_logs": []}}]}}"#,
        key = B64.encode(spki)
    )
}

fn at(s: &str) -> Instant {
    Instant::parse_rfc3339(s).expect("test time")
}

fn only_log(list: &LogList) -> &Log {
    list.logs().next().expect("one log")
}

#[test]
fn standing_follows_chromes_reading_of_states() {
    let cases = [
        // (state, check time, standing)
        (
            r#"{"usable": {"timestamp": "2024-01-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::Counts,
        ),
        // Usable from the future: it was qualified before, which counts.
        (
            r#"{"usable": {"timestamp": "2026-01-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::Counts,
        ),
        (
            r#"{"qualified": {"timestamp": "2024-01-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::Counts,
        ),
        // Qualified from the future: pending before, which does not.
        (
            r#"{"qualified": {"timestamp": "2026-01-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::NotRecognised,
        ),
        (
            r#"{"readonly": {"timestamp": "2024-01-01T00:00:00Z", "final_tree_head": {"sha256_root_hash": "AA==", "tree_size": 3}}}"#,
            "2025-01-01T00:00:00Z",
            Standing::Counts,
        ),
        (
            r#"{"retired": {"timestamp": "2024-06-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::Retired {
                since: Instant(1_717_200_000_000),
            },
        ),
        (
            r#"{"retired": {"timestamp": "2026-06-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::Counts,
        ),
        (
            r#"{"rejected": {"timestamp": "2024-01-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::NotRecognised,
        ),
        (
            r#"{"pending": {"timestamp": "2024-01-01T00:00:00Z"}}"#,
            "2025-01-01T00:00:00Z",
            Standing::NotRecognised,
        ),
    ];
    for (state, check, want) in cases {
        let list = LogList::from_json(list_with(Some(state), "").as_bytes()).expect(state);
        assert_eq!(
            only_log(&list).standing_at(at(check)),
            want,
            "{state} at {check}"
        );
    }
    let list = LogList::from_json(list_with(None, "").as_bytes()).expect("no state");
    assert_eq!(
        only_log(&list).standing_at(at("2025-01-01T00:00:00Z")),
        Standing::NotRecognised
    );
}

#[test]
fn previous_operators_decide_the_operator_at_the_sct_time() {
    let extra = r#", "previous_operators": [
        {"name": "Second", "end_time": "2024-01-01T00:00:00Z"},
        {"name": "First", "end_time": "2023-01-01T00:00:00Z"}]"#;
    let list = LogList::from_json(list_with(None, extra).as_bytes()).expect("parses");
    let log = only_log(&list);
    assert_eq!(list.operator_at(log, at("2022-06-01T00:00:00Z")), "First");
    assert_eq!(list.operator_at(log, at("2023-06-01T00:00:00Z")), "Second");
    assert_eq!(list.operator_at(log, at("2024-01-01T00:00:00Z")), "Op");
    assert_eq!(list.operator(log), "Op");
}

#[test]
fn staleness_is_seventy_days_as_chromium_counts_them() {
    let list = LogList::from_json(list_with(None, "").as_bytes()).expect("parses");
    let t = |s: &str| at(s).as_unix();
    assert!(!list.is_stale(t("2025-03-11T23:59:59Z"))); // 69 days and change
    assert!(list.is_stale(t("2025-03-12T00:00:00Z"))); // 70 days
    assert!(!list.is_stale(t("2024-01-01T00:00:00Z"))); // a list from the future
    assert_eq!(list.age_days(t("2025-03-12T00:00:00Z")), 70);
}

/// A list dated 2036 once passed as "0 days old", never turned stale and
/// made every real list after it a rollback: more than a day ahead of the
/// clock is refused.
#[test]
fn a_list_more_than_a_day_ahead_of_the_clock_is_refused() {
    let list = LogList::from_json(list_with(None, "").as_bytes()).expect("parses");
    let t = |s: &str| at(s).as_unix();
    assert!(list.check_not_future(t("2025-06-01T00:00:00Z")).is_ok());
    assert!(list.check_not_future(t("2024-12-31T00:00:00Z")).is_ok()); // exactly a day
    let err = list
        .check_not_future(t("2024-12-30T23:59:59Z"))
        .expect_err("a day and a second ahead");
    assert!(matches!(err, LogListError::FromTheFuture { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("log_list_timestamp 2025-01-01T00:00:00Z is more than a day ahead"),
        "{err}"
    );
}

#[test]
fn every_bad_log_is_reported() {
    let good = list_with(None, "");
    let bad_id = good.replacen(r#""log_id": ""#, r#""log_id": "AAAA"#, 1);
    let err = LogList::from_json(bad_id.as_bytes()).expect_err("bad id");
    assert!(
        err.to_string()
            .contains("log Log: log_id is not base64 of 32 bytes"),
        "{err}"
    );

    // The id of another key: the list contradicts itself.
    let other = LogId::of_spki(&p256_spki_of_seed(2));
    let mismatch = good.replace(
        &LogId::of_spki(&p256_spki_of_seed(1)).to_string(),
        &other.to_string(),
    );
    let err = LogList::from_json(mismatch.as_bytes()).expect_err("mismatch");
    assert!(
        err.to_string()
            .contains("log_id is not the SHA-256 of its key"),
        "{err}"
    );

    let two_states = list_with(
        Some(
            r#"{"usable": {"timestamp": "2024-01-01T00:00:00Z"}, "retired": {"timestamp": "2024-02-01T00:00:00Z"}}"#,
        ),
        "",
    );
    let err = LogList::from_json(two_states.as_bytes()).expect_err("two states");
    assert!(err.to_string().contains("exactly one of"), "{err}");

    let bad_time = list_with(Some(r#"{"usable": {"timestamp": "last tuesday"}}"#), "");
    let err = LogList::from_json(bad_time.as_bytes()).expect_err("bad time");
    assert!(err.to_string().contains("\"last tuesday\""), "{err}");

    // The same log twice, and a second bad log: both reported.
    let v: serde_json::Value = serde_json::from_str(&good).expect("json");
    let log = v["operators"][0]["logs"][0].clone();
    let mut broken = log.clone();
    broken["description"] = "Broken".into();
    broken["key"] = "!!".into();
    let mut doubled = v.clone();
    doubled["operators"][0]["logs"] = serde_json::json!([log, log, broken]);
    let err = LogList::from_json(doubled.to_string().as_bytes()).expect_err("duplicate");
    let text = err.to_string();
    assert!(
        text.contains("log Log: the same log_id appears twice"),
        "{text}"
    );
    assert!(text.contains("log Broken: key is not base64"), "{text}");

    assert!(matches!(
        LogList::from_json(b"{}"),
        Err(LogListError::Json(_))
    ));
    let empty = r#"{"log_list_timestamp": "2025-01-01T00:00:00Z", "operators": []}"#;
    assert!(matches!(
        LogList::from_json(empty.as_bytes()),
        Err(LogListError::Empty)
    ));
    let no_time = good.replace("2025-01-01T00:00:00Z\", \"operators", "soon\", \"operators");
    assert!(matches!(
        LogList::from_json(no_time.as_bytes()),
        Err(LogListError::Timestamp(_))
    ));
}

#[test]
fn lookups_and_removal() {
    let list = LogList::from_json(list_with(None, "").as_bytes()).expect("parses");
    let id = LogId::of_spki(&p256_spki_of_seed(1));
    assert_eq!(list.log(&id).map(|l| l.description.as_str()), Some("Log"));
    assert_eq!(list.version(), Some("1.2"));
    assert!(list.without(&id).log(&id).is_none());
    assert_eq!(LogId::from_base64(&id.to_string()), Some(id));
}
