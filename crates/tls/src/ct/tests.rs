//! The path checks over real data nobody here wrote (`crates/ct/tests/data`:
//! `www.google.com`'s 2023 leaf, its issuer GTS CA 1C3, two real SCTs) and
//! Chrome's real log list: issuer as a certificate and as a trust anchor,
//! the cache, staleness, and `off`.

use super::*;

const ARGON2023: &str = "6D7Q2j71BjUy51covIlryQPTy9ERa+zraeF3fW0GvW4=";
const NIMBUS2023: &str = "ejKMVNi3LbYg6jjgUh7phBZwMhOFTTvSK8E6V6NS61I=";

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/../ct/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    rustls_pki_types::pem::PemObject::from_pem_slice(text.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap()
}

fn at(rfc3339: &str) -> UnixTime {
    pinproxy_ct::Instant::parse_rfc3339(rfc3339)
        .unwrap()
        .as_unix()
}

/// The built-in list with both 2023 logs in the state they had in 2023.
fn list_of_2023(timestamp: &str) -> LogListInForce {
    let path = format!("{}/../ct/data/log_list.json", env!("CARGO_MANIFEST_DIR"));
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["log_list_timestamp"] = timestamp.into();
    for op in v["operators"].as_array_mut().unwrap() {
        for log in op["logs"].as_array_mut().unwrap() {
            let id = log["log_id"].as_str().unwrap_or_default();
            if id == ARGON2023 || id == NIMBUS2023 {
                log["state"] = serde_json::json!({"usable": {"timestamp": "2022-02-01T00:00:00Z"}});
            }
        }
    }
    LogListInForce::from_bytes(v.to_string().as_bytes(), ListSource::Builtin).unwrap()
}

#[test]
fn real_scts_pass_with_the_issuer_as_certificate_or_as_trust_anchor() {
    let (leaf, ca) = (data("google-leaf-2023.pem"), data("gts-ca-1c3.pem"));
    let list = list_of_2023("2023-01-05T00:00:00Z");
    let now = at("2023-01-10T00:00:00Z");
    let c = check_path(
        &list,
        CtMode::Enforce,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        now,
        None,
    );
    assert_eq!(c.ct_verdict(), Some(Verdict::Ok), "{c}");
    assert!(c.refusal().is_none());
    assert_eq!(c.staple_verdict(), StapleVerdict::Absent);
    assert!(!c.must_staple);
    assert_eq!(c.scts().len(), 2);
    assert!(
        c.ct_line().starts_with("ok, 2 SCTs from 2 operators"),
        "{c}"
    );
    // The same CA as a trust anchor: webpki keeps its subject and key
    // without their SEQUENCE; rebuilt, the issuer key hash is the same.
    let der = rustls_pki_types::CertificateDer::from(ca.clone());
    let anchor = webpki::anchor_from_trusted_cert(&der).unwrap();
    let c = check_path(
        &list,
        CtMode::Enforce,
        &leaf,
        IssuerOf::Anchor(&anchor),
        &[],
        now,
        None,
    );
    assert_eq!(c.ct_verdict(), Some(Verdict::Ok), "{c}");
    // Another issuer's key: the embedded SCTs sign a hash of the real one.
    let root = data("gts-root-r1.pem");
    let c = check_path(
        &list,
        CtMode::Enforce,
        &leaf,
        IssuerOf::Cert(&root),
        &[],
        now,
        None,
    );
    assert_eq!(c.ct_verdict(), Some(Verdict::BadSignature), "{c}");
    assert!(matches!(c.refusal(), Some(Refused::CtPolicy(_))));
}

#[test]
fn logs_chrome_no_longer_recognises_are_too_few_and_report_refuses_nothing() {
    let (leaf, ca) = (data("google-leaf-2023.pem"), data("gts-ca-1c3.pem"));
    // The real 2025 list: both logs rejected. Checked as of the list's own
    // date, so it is fresh.
    let list = LogListInForce::builtin();
    let now = at(BUILTIN_TIMESTAMP);
    let c = check_path(
        &list,
        CtMode::Enforce,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        now,
        None,
    );
    assert_eq!(c.ct_verdict(), Some(Verdict::TooFewScts), "{c}");
    let refused = c.refusal().expect("refused under enforce");
    assert_eq!(refused.reason(), Reason::CtPolicy);
    assert!(refused.to_string().contains("too-few-scts"), "{refused}");
    let c = check_path(
        &list,
        CtMode::Report,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        now,
        None,
    );
    assert_eq!(c.ct_verdict(), Some(Verdict::TooFewScts));
    assert!(c.refusal().is_none());
    let c = check_path(
        &list,
        CtMode::Off,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        now,
        None,
    );
    assert_eq!((c.ct_verdict(), c.ct.is_none()), (None, true));
}

#[test]
fn a_stale_list_turns_enforce_into_report_and_is_never_cached() {
    let (leaf, ca) = (data("google-leaf-2023.pem"), data("gts-ca-1c3.pem"));
    let list = LogListInForce::builtin();
    let cache = CtCache::default();
    let fresh = at(BUILTIN_TIMESTAMP);
    let c = check_path(
        &list,
        CtMode::Enforce,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        fresh,
        Some(&cache),
    );
    assert!(!c.cached && c.refusal().is_some());
    let c = check_path(
        &list,
        CtMode::Enforce,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        fresh,
        Some(&cache),
    );
    assert!(c.cached, "the second handshake reuses the verdict");
    assert_eq!(cache.len(), 1);
    // 70 days later the same cached report is stale: counted as such, and
    // enforce refuses nothing.
    let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        fresh.as_secs() + 70 * 86_400,
    ));
    let c = check_path(
        &list,
        CtMode::Enforce,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        later,
        Some(&cache),
    );
    assert_eq!(c.ct_verdict(), Some(Verdict::StaleList));
    assert!(c.degraded() && !c.enforced());
    assert!(c.refusal().is_none());
    assert!(
        list.describe(later).contains("stale"),
        "{}",
        list.describe(later)
    );
}

#[test]
fn unreadable_certificates_and_garbage_staples_are_counted_not_trusted() {
    let ca = data("gts-ca-1c3.pem");
    let list = LogListInForce::builtin();
    let now = at(BUILTIN_TIMESTAMP);
    let c = check_path(
        &list,
        CtMode::Enforce,
        b"not DER",
        IssuerOf::Cert(&ca),
        b"junk",
        now,
        None,
    );
    assert_eq!(c.ct_verdict(), Some(Verdict::BadSignature));
    assert_eq!(c.staple_verdict(), StapleVerdict::Invalid);
    let refused = c.refusal().expect("unreadable under enforce refuses");
    assert!(matches!(refused, Refused::Unreadable(_)), "{refused}");
    assert_eq!(refused.reason(), Reason::BadEncoding);
    let leaf = data("google-leaf-2023.pem");
    let c = check_path(
        &list,
        CtMode::Report,
        &leaf,
        IssuerOf::Cert(&ca),
        b"junk",
        now,
        None,
    );
    assert_eq!(c.staple_verdict(), StapleVerdict::Invalid);
    assert!(
        c.staple_line()
            .starts_with("invalid: not a DER OCSP response"),
        "{c}"
    );
    assert!(
        c.refusal().is_none(),
        "an invalid staple on an ordinary leaf is soft-fail"
    );
}

/// webpki accepted the chain, these checks cannot read it: under `off` or
/// `report` that used to skip must-staple and a `revoked` staple silently.
/// Now a staple sent, a leaf that may be must-staple, or `enforce` refuses
/// (`bad-encoding`); with none of them the path passes, counted as before.
#[test]
fn unreadable_certificates_fail_closed_whenever_a_check_applies() {
    let ca = data("gts-ca-1c3.pem");
    let list = LogListInForce::builtin();
    let now = at(BUILTIN_TIMESTAMP);
    // Not parseable, but naming the TLS Feature extension's OID.
    let mut must = b"not DER".to_vec();
    must.extend_from_slice(&[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x18]);
    let cases: [(CtMode, &[u8], &[u8], bool); 6] = [
        (CtMode::Off, b"not DER", b"junk", true),
        (CtMode::Report, b"not DER", b"junk", true),
        (CtMode::Off, &must, b"", true),
        (CtMode::Report, &must, b"", true),
        (CtMode::Off, b"not DER", b"", false),
        (CtMode::Report, b"not DER", b"", false),
    ];
    for (mode, leaf, staple, refuses) in cases {
        let c = check_path(&list, mode, leaf, IssuerOf::Cert(&ca), staple, now, None);
        assert!(c.unreadable.is_some(), "{c}");
        let refused = c.refusal();
        assert_eq!(refused.is_some(), refuses, "{mode:?} {staple:?}: {c}");
        if let Some(r) = refused {
            assert!(matches!(r, Refused::Unreadable(_)), "{r}");
            assert_eq!(r.reason(), Reason::BadEncoding);
        }
    }
    // An unreadable issuer (here: no certificate at all) is the same.
    let leaf = data("google-leaf-2023.pem");
    let c = check_path(
        &list,
        CtMode::Off,
        &leaf,
        IssuerOf::Cert(b"not DER"),
        b"junk",
        now,
        None,
    );
    assert!(matches!(c.refusal(), Some(Refused::Unreadable(_))), "{c}");
}

#[test]
fn the_cache_key_separates_its_parts_and_the_cache_stays_bounded() {
    assert_ne!(
        cache::key(b"ab", &[b"c"], None),
        cache::key(b"a", &[b"bc"], None)
    );
    assert_ne!(
        cache::key(b"a", &[b"b"], None),
        cache::key(b"a", &[b"b"], Some(b"x"))
    );
    let (leaf, ca) = (data("google-leaf-2023.pem"), data("gts-ca-1c3.pem"));
    let now = at(BUILTIN_TIMESTAMP);
    let c = check_path(
        &LogListInForce::builtin(),
        CtMode::Report,
        &leaf,
        IssuerOf::Cert(&ca),
        &[],
        now,
        None,
    );
    let report = (*c.ct.unwrap()).clone();
    let cache = CtCache::default();
    for i in 0..cache::CAPACITY {
        let key = cache::key(&i.to_be_bytes(), &[], None);
        cache.get_or_check(key, now.as_secs(), || report.clone());
    }
    assert_eq!(cache.len(), cache::CAPACITY);
    // Full of fresh entries: cleared rather than grown.
    cache.get_or_check([0xff; 32], now.as_secs(), || report.clone());
    assert_eq!(cache.len(), 1);
    // An entry past its TTL is checked again.
    let (_, hit) = cache.get_or_check([0xff; 32], now.as_secs() + cache::TTL, || report.clone());
    assert!(!hit);
}
