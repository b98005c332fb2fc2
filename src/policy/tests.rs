//! Tests of the pinset as a whole: parsing, validation and lookup.

use std::path::Path;

use time::OffsetDateTime;

use super::host::Host;
use super::pattern::is_public_suffix;
use super::{parse, Decision, Mode, Policy, Problem, Unlisted};

const PIN_A: &str = "sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=";
const PIN_B: &str = "sha256/YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=";

fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-11-24 12:00 UTC)
}

fn ok(yaml: &str) -> Policy {
    parse(yaml.as_bytes(), Path::new("."), now()).unwrap_or_else(|p| panic!("{p:?}"))
}

fn bad(yaml: &str) -> Vec<Problem> {
    match parse(yaml.as_bytes(), Path::new("."), now()) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(p) => p,
    }
}

fn host(s: &str) -> Host {
    Host::parse(s).unwrap()
}

fn name_of(p: &Policy, h: &str) -> Option<String> {
    match p.lookup(&host(h)) {
        Decision::Listed(e) => Some(e.name.clone()),
        Decision::Unlisted => None,
    }
}

#[test]
fn wildcard_matches_exactly_one_label_and_exact_wins() {
    let p = ok(&format!(
        "version: 1\nhosts:\n  \"*.example.test\":\n    pins: [{PIN_A}, {PIN_B}]\n  special.example.test:\n    pins: [{PIN_B}, {PIN_A}]\n"
    ));
    assert_eq!(
        name_of(&p, "a.example.test").as_deref(),
        Some("*.example.test")
    );
    assert_eq!(
        name_of(&p, "A.EXAMPLE.TEST.").as_deref(),
        Some("*.example.test")
    );
    assert_eq!(
        name_of(&p, "special.example.test").as_deref(),
        Some("special.example.test")
    );
    for miss in [
        "example.test",
        "a.b.example.test",
        "evil-example.test",
        "xexample.test",
        "example.test.attacker.test",
        "a.example.test.attacker.test",
    ] {
        assert_eq!(name_of(&p, miss), None, "{miss} must not match");
    }
}

/// `**.` host entries (OkHttp's): the apex and any depth; exact, then
/// `*.`, then `**.` from the longest suffix; the public-suffix rule and
/// duplicate detection as for `*.`.
#[test]
fn any_depth_entries_cover_the_apex_and_every_depth_with_precedence() {
    let e = |k: &str| format!("  \"{k}\":\n    pins: [{PIN_A}, {PIN_B}]\n");
    let p = ok(&format!(
        "version: 1\nhosts:\n{}{}{}{}",
        e("**.cdn.example.com"),
        e("**.b.cdn.example.com"),
        e("*.cdn.example.com"),
        e("x.cdn.example.com")
    ));
    for (host, entry) in [
        ("cdn.example.com", "**.cdn.example.com"),
        ("CDN.example.com.", "**.cdn.example.com"),
        ("m.n.cdn.example.com", "**.cdn.example.com"),
        ("y.cdn.example.com", "*.cdn.example.com"),
        ("b.cdn.example.com", "*.cdn.example.com"),
        ("x.cdn.example.com", "x.cdn.example.com"),
        ("q.b.cdn.example.com", "**.b.cdn.example.com"),
        ("r.q.b.cdn.example.com", "**.b.cdn.example.com"),
    ] {
        assert_eq!(name_of(&p, host).as_deref(), Some(entry), "{host}");
    }
    for miss in [
        "example.com",
        "xcdn.example.com",
        "cdn.example.com.evil.test",
        "cdn-example.com",
    ] {
        assert_eq!(name_of(&p, miss), None, "{miss}");
    }
    for suffix in ["**.com", "**.co.uk", "**.github.io"] {
        let problems = bad(&format!("version: 1\nhosts:\n{}", e(suffix)));
        assert!(
            problems[0].message.contains("public suffix"),
            "{problems:?}"
        );
    }
    let problems = bad(&format!(
        "version: 1\nhosts:\n{}{}",
        e("**.cdn.example.com"),
        e("**.CDN.example.com.")
    ));
    assert!(
        problems[0].message.contains("duplicate host"),
        "{problems:?}"
    );
    // `*.x` and `**.x` are two entries, not duplicates.
    ok(&format!(
        "version: 1\nhosts:\n{}{}",
        e("*.a.example.com"),
        e("**.a.example.com")
    ));
    let problems = bad(&format!("version: 1\nhosts:\n{}", e("**.*.example.com")));
    assert!(
        problems[0].message.contains("whole first label"),
        "{problems:?}"
    );
}

#[test]
fn defaults_apply_and_entries_override() {
    let p = ok(&format!(
        "version: 1\ndefaults:\n  unlisted: allow\n  mode: report\n  ports: [443, 8443]\nhosts:\n  a.test:\n    pins: [{PIN_A}, {PIN_B}]\n  b.test:\n    pins: [{PIN_A}, {PIN_B}]\n    mode: enforce\n    ports: [9443]\n"
    ));
    assert_eq!(p.defaults.unlisted, Unlisted::Allow);
    let a = &p.hosts[0];
    assert_eq!((a.mode, a.ports.clone()), (Mode::Report, vec![443, 8443]));
    let b = &p.hosts[1];
    assert_eq!((b.mode, b.ports.clone()), (Mode::Enforce, vec![9443]));
}

#[test]
fn ip_literal_entries() {
    let p = ok(&format!("version: 1\nhosts:\n  \"127.0.0.1\":\n    pins: [{PIN_A}]\n  \"[::1]\":\n    pins: [{PIN_A}]\n"));
    assert_eq!(name_of(&p, "127.0.0.1").as_deref(), Some("127.0.0.1"));
    assert_eq!(name_of(&p, "[::1]").as_deref(), Some("[::1]"));
}

#[test]
fn collects_every_problem_with_host_field_and_line() {
    let problems = bad(&format!(
        "version: 1\nhosts:\n  a.test:\n    pins: []\n  b.test:\n    pins: [sha1/AAAA, {PIN_A}]\n  \"x*.test\":\n    pins: [{PIN_A}]\n  \"*.com\":\n    pins: [{PIN_A}]\n"
    ));
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 4, "{text:#?}");
    assert_eq!(problems[0].host.as_deref(), Some("a.test"));
    assert_eq!(problems[0].field.as_deref(), Some("pins"));
    assert_eq!(problems[0].line, Some(4));
    assert_eq!(problems[1].field.as_deref(), Some("pins[0]"));
    assert_eq!(problems[1].line, Some(6));
    assert!(text[2].contains("partial wildcard"), "{}", text[2]);
    assert!(text[3].contains("public suffix"), "{}", text[3]);
}

#[test]
fn duplicate_hosts_after_normalization() {
    let problems = bad(&format!(
        "version: 1\nhosts:\n  api.test:\n    pins: [{PIN_A}]\n  API.test.:\n    pins: [{PIN_B}]\n"
    ));
    assert!(
        problems[0].message.contains("duplicate host"),
        "{problems:?}"
    );
    assert_eq!(problems[0].line, Some(5));
}

#[test]
fn unknown_field_reports_line_and_column() {
    let problems = bad(&format!(
        "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    report_onyl: true\n"
    ));
    assert_eq!(problems[0].line, Some(5), "{problems:?}");
    assert!(problems[0].message.contains("report_onyl"));
}

#[test]
fn pin_only_with_report_is_refused() {
    let problems = bad(&format!(
        "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    trust: pin-only\n    mode: report\n"
    ));
    assert_eq!(problems[0].field.as_deref(), Some("mode"));
}

#[test]
fn expiry_and_warnings() {
    let p = ok(&format!(
        "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    expires: 2026-12-01\n"
    ));
    let h = &p.hosts[0];
    assert!(!h.pins_expired(now()));
    assert!(!h.pins_expired(time::macros::datetime!(2026-12-01 23:59 UTC)));
    assert!(h.pins_expired(time::macros::datetime!(2026-12-02 00:00 UTC)));
    assert_eq!(h.expires_date(), Some(time::macros::date!(2026 - 12 - 01)));
    let w: Vec<_> = p
        .warnings
        .iter()
        .map(|w| w.field.clone().unwrap_or_default())
        .collect();
    assert_eq!(w, vec!["expires", "pins"]);
    let problems = bad(&format!(
        "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    expires: 2026-13-01\n"
    ));
    assert_eq!(problems[0].field.as_deref(), Some("expires"));
}

#[test]
fn public_suffix_rule() {
    for suffix in [
        "com",
        "test",
        "co.uk",
        "com.au",
        "github.io",
        "herokuapp.com",
        "s3.amazonaws.com",
    ] {
        assert!(is_public_suffix(suffix), "{suffix}");
    }
    for base in [
        "example.com",
        "example.co.uk",
        "pinproxy.github.io",
        "payments.example.test",
    ] {
        assert!(!is_public_suffix(base), "{base}");
    }
}

#[test]
fn learn_admits_as_allow_and_report_uris_resolve_per_entry() {
    use super::admission::{decide, Target};
    let p = ok(&format!(
        "version: 1\ndefaults:\n  unlisted: learn\n  report_uri: https://reports.test/pin\nhosts:\n  a.test:\n    pins: [{PIN_A}, {PIN_B}]\n    report_uri: http://127.0.0.1:9/a\n  b.test:\n    pins: [{PIN_A}, {PIN_B}]\n"
    ));
    assert_eq!(p.defaults.unlisted, Unlisted::Learn);
    let target = |h: &str, port| Target {
        host: host(h),
        port,
    };
    assert!(decide(&p, &target("other.test", 443), now()).is_ok_and(|a| a.is_unlisted()));
    let refused = decide(&p, &target("other.test", 8443), now()).err();
    assert_eq!(
        refused.map(|r| r.reason),
        Some(crate::reason::Reason::PortNotAllowed)
    );
    let uri = |e: Option<&super::HostPolicy>| p.report_uri(e).map(|u| u.as_str().to_string());
    assert_eq!(
        uri(Some(&p.hosts[0])).as_deref(),
        Some("http://127.0.0.1:9/a")
    );
    assert_eq!(
        uri(Some(&p.hosts[1])).as_deref(),
        Some("https://reports.test/pin")
    );
    assert_eq!(uri(None).as_deref(), Some("https://reports.test/pin"));
}

#[test]
fn bad_report_uris_are_load_errors_at_their_line() {
    let problems = bad(&format!(
        "version: 1\ndefaults:\n  report_uri: ftp://x.test/\nhosts:\n  a.test:\n    pins: [{PIN_A}, {PIN_B}]\n    report_uri: https://user:pw@x.test/\n  b.test:\n    pins: [{PIN_A}, {PIN_B}]\n    report_uri: http://x.test:0/\n"
    ));
    let seen: Vec<_> = problems
        .iter()
        .map(|p| (p.host.clone(), p.field.clone(), p.line))
        .collect();
    assert_eq!(
        seen,
        [
            (None, Some("defaults.report_uri".into()), Some(3)),
            (Some("a.test".into()), Some("report_uri".into()), Some(7)),
            (Some("b.test".into()), Some("report_uri".into()), Some(10)),
        ]
    );
    for good in [
        "http://[::1]:8080/r",
        "https://x.test",
        "http://x.test:9090/r?t=1",
    ] {
        assert!(super::ReportUri::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "http://",
        "https:///x",
        "http://[::1",
        "http://x.test:99999/",
    ] {
        assert!(super::ReportUri::parse(bad).is_err(), "{bad}");
    }
}

// === identity and revocation (DESIGN §9) ===

mod identity {
    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SanType,
        SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    use super::{PIN_A, PIN_B};
    use crate::policy::admission::same_enforcement;
    use crate::policy::identity::{CrlPolicy, Name};
    use crate::policy::{parse, Policy, Problem};

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "client CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A client certificate (PEM) and its key (PKCS#8 PEM).
    fn client(ca: &Ca, cn: &str, not_after: OffsetDateTime, client_auth: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = vec![SanType::URI(
            format!("spiffe://example.org/ns/test/sa/{cn}")
                .try_into()
                .unwrap(),
        )];
        p.extended_key_usages = vec![if client_auth {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        p.not_before = OffsetDateTime::now_utc() - Duration::days(30);
        p.not_after = not_after;
        let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn crl(ca: &Ca, revoked: &[u64], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: next_update - Duration::days(7),
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|n| RevokedCertParams {
                    serial_number: SerialNumber::from(*n),
                    revocation_time: now - Duration::days(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.cert, &ca.key)
        .unwrap()
        .pem()
        .unwrap()
    }

    fn later() -> OffsetDateTime {
        OffsetDateTime::now_utc() + Duration::days(60)
    }

    fn entry(extra: &str) -> String {
        format!("version: 1\nhosts:\n  pay.test:\n    pins: [{PIN_A}, {PIN_B}]\n{extra}")
    }

    fn load(dir: &Path, yaml: &str) -> Result<Policy, Vec<Problem>> {
        parse(yaml.as_bytes(), dir, OffsetDateTime::now_utc())
    }

    fn problems(dir: &Path, yaml: &str) -> Vec<String> {
        match load(dir, yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_client_cert_loads_and_its_key_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let (cert, key) = client(&ca, "api", later(), true);
        std::fs::create_dir(dir.path().join("id")).unwrap();
        std::fs::write(dir.path().join("id/tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("id/tls.key"), &key).unwrap();
        let p = load(
            dir.path(),
            &entry("    client_cert:\n      cert: id/tls.crt\n      key: id/tls.key\n"),
        )
        .unwrap();
        let c = p.hosts[0].client_cert.as_ref().unwrap();
        assert_eq!(c.cert_path, dir.path().join("id/tls.crt"));
        assert_eq!(c.uris, ["spiffe://example.org/ns/test/sa/api"]);
        assert!(c.subject.contains("api"), "{}", c.subject);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // The key's bytes (base64 body) appear in no Debug output.
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let debug = format!("{p:?}");
        assert!(!debug.contains(&body[..40]), "key in Debug output");
        assert!(p.watched_files().contains(&dir.path().join("id/tls.key")));
        // The key's bytes are part of the source hash.
        let same = load(
            dir.path(),
            &entry("    client_cert:\n      cert: id/tls.crt\n      key: id/tls.key\n"),
        )
        .unwrap();
        assert_eq!(p.source_hash, same.source_hash);
        let (cert2, key2) = client(&ca, "api", later(), true);
        std::fs::write(dir.path().join("id/tls.crt"), &cert2).unwrap();
        std::fs::write(dir.path().join("id/tls.key"), &key2).unwrap();
        let rotated = load(
            dir.path(),
            &entry("    client_cert:\n      cert: id/tls.crt\n      key: id/tls.key\n"),
        )
        .unwrap();
        assert_ne!(p.source_hash, rotated.source_hash);
        assert!(
            !same_enforcement(&p.hosts[0], &rotated.hosts[0]),
            "a rotated identity is a change"
        );
        assert!(same_enforcement(&p.hosts[0], &same.hosts[0]));
    }

    #[test]
    fn client_cert_problems_name_the_file_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let (cert, key) = client(&ca, "a", later(), true);
        let (_, other_key) = client(&ca, "b", later(), true);
        let (expired, expired_key) = client(
            &ca,
            "old",
            OffsetDateTime::now_utc() - Duration::days(1),
            true,
        );
        let (server_only, server_only_key) = client(&ca, "srv", later(), false);
        for (name, text) in [
            ("a.crt", &cert),
            ("a.key", &key),
            ("b.key", &other_key),
            ("old.crt", &expired),
            ("old.key", &expired_key),
            ("srv.crt", &server_only),
            ("srv.key", &server_only_key),
            ("junk.key", &"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n".to_string()),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let cc = |c: &str, k: &str| entry(&format!("    client_cert: {{cert: {c}, key: {k}}}\n"));
        let p = problems(dir.path(), &cc("a.crt", "b.key"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("does not match the certificate"), "{p:?}");
        assert!(
            p[0].contains("b.key") && p[0].contains("client_cert"),
            "{p:?}"
        );
        let p = problems(dir.path(), &cc("missing.crt", "a.key"));
        assert!(
            p[0].contains("cannot read") && p[0].contains("missing.crt"),
            "{p:?}"
        );
        let p = problems(dir.path(), &cc("a.key", "a.key"));
        assert!(p[0].contains("no PEM CERTIFICATE"), "{p:?}");
        let p = problems(dir.path(), &cc("a.crt", "a.crt"));
        assert!(p[0].contains("no PRIVATE KEY"), "{p:?}");
        let p = problems(dir.path(), &cc("a.crt", "junk.key"));
        assert!(p[0].contains("encrypted"), "{p:?}");
        let p = problems(dir.path(), &cc("a.crt", "\"\""));
        assert!(p[0].contains("client_cert.key: empty"), "{p:?}");
        let p = problems(dir.path(), &entry("    client_cert: {cert: a.crt}\n"));
        assert!(p[0].contains("missing field `key`"), "{p:?}");
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        for p in [
            problems(dir.path(), &cc("a.crt", "b.key")),
            problems(dir.path(), &cc("a.key", "a.key")),
        ] {
            assert!(!p.join("\n").contains(&body[..40]));
        }
        // Expired or not a client certificate: warnings, still loaded.
        let ok = load(dir.path(), &cc("old.crt", "old.key")).unwrap();
        assert!(ok.hosts[0].client_cert.is_some());
        let w: Vec<String> = ok.warnings.iter().map(|w| w.to_string()).collect();
        assert!(w.iter().any(|w| w.contains("expired on")), "{w:?}");
        let ok = load(dir.path(), &cc("srv.crt", "srv.key")).unwrap();
        let w: Vec<String> = ok.warnings.iter().map(|w| w.to_string()).collect();
        assert!(w.iter().any(|w| w.contains("clientAuth")), "{w:?}");
    }

    #[test]
    fn names_are_dns_or_uri_and_problems_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = load(
            dir.path(),
            &entry("    names: [\"spiffe://example.org/ns/pay/*\", API.pay.test]\n"),
        )
        .unwrap();
        assert_eq!(
            p.hosts[0].names,
            [
                Name::UriPrefix("spiffe://example.org/ns/pay/".into()),
                Name::Dns("api.pay.test".into())
            ]
        );
        let yaml = entry("    names:\n      - \"*.pay.test\"\n      - 10.0.0.1\n      - \"has space\"\n      - \"spiffe://example.org\"\n      - a.test\n      - A.test\n");
        let p = match load(dir.path(), &yaml) {
            Err(p) => p,
            Ok(_) => panic!("accepted"),
        };
        let fields: Vec<_> = p.iter().map(|p| p.field.clone().unwrap()).collect();
        assert_eq!(
            fields,
            ["names[0]", "names[1]", "names[2]", "names[3]", "names[5]"]
        );
        assert!(p.iter().all(|p| p.line == Some(5)), "{p:?}");
        assert!(p[4].message.contains("duplicate"), "{p:?}");
        let p = problems(dir.path(), &entry("    names: []\n"));
        assert!(p[0].contains("names: empty"), "{p:?}");
    }

    #[test]
    fn crls_load_warn_when_expired_and_compare_by_what_they_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("fresh.crl", &crl(&ca, &[7, 9], later()));
        write(
            "reissued.crl",
            &crl(&ca, &[9, 7], later() + Duration::days(1)),
        );
        write("more.crl", &crl(&ca, &[7, 9, 11], later()));
        write(
            "stale.crl",
            &crl(&ca, &[7], OffsetDateTime::now_utc() - Duration::days(1)),
        );
        // DER is accepted as well as PEM.
        let der = pem::parse(crl(&ca, &[], later())).unwrap().into_contents();
        std::fs::write(dir.path().join("empty.der"), der).unwrap();
        write("junk.crl", "not a crl");
        let with = |files: &str, extra: &str| {
            entry(&format!("    trust: ca.pem\n    crls: [{files}]\n{extra}"))
        };
        let load_ok = |yaml: &str| load(dir.path(), yaml).unwrap_or_else(|p| panic!("{p:?}"));
        let fresh = load_ok(&with("fresh.crl", ""));
        let crls = fresh.hosts[0].crls.as_ref().unwrap();
        assert_eq!(
            (crls.files[0].revoked, crls.policy),
            (2, CrlPolicy::UseExpired)
        );
        assert!(fresh.warnings.is_empty(), "{:?}", fresh.warnings);
        assert!(fresh
            .watched_files()
            .contains(&dir.path().join("fresh.crl")));
        let reissued = load_ok(&with("reissued.crl", ""));
        let more = load_ok(&with("more.crl", ""));
        assert!(same_enforcement(&fresh.hosts[0], &reissued.hosts[0]));
        assert!(!same_enforcement(&fresh.hosts[0], &more.hosts[0]));
        let both = load_ok(&with("fresh.crl, empty.der", ""));
        assert_eq!(both.hosts[0].crls.as_ref().unwrap().lists.len(), 2);
        let w = both.warnings[0].to_string();
        assert!(w.contains("only the first listed is consulted"), "{w}");
        // Expired: a warning that says what the policy makes of it.
        let stale = load_ok(&with("stale.crl", ""));
        let w = stale.warnings[0].to_string();
        assert!(w.contains("expired") && w.contains("use-expired"), "{w}");
        let stale = load_ok(&with("stale.crl", "    crl_policy: refuse-expired\n"));
        let w = stale.warnings[0].to_string();
        assert!(w.contains("refuse-expired"), "{w}");
        assert!(!same_enforcement(&fresh.hosts[0], &stale.hosts[0]));
        // Problems.
        let p = problems(dir.path(), &with("junk.crl, missing.crl", ""));
        assert!(
            p[0].contains("crls[0]") && p[0].contains("junk.crl"),
            "{p:?}"
        );
        assert!(
            p[1].contains("crls[1]") && p[1].contains("cannot read"),
            "{p:?}"
        );
        let p = problems(dir.path(), &with("fresh.crl, fresh.crl", ""));
        assert!(p[0].contains("duplicate CRL"), "{p:?}");
        let p = problems(dir.path(), &entry("    crl_policy: refuse-expired\n"));
        assert!(p[0].contains("without crls"), "{p:?}");
        let p = problems(dir.path(), &entry("    crls: []\n"));
        assert!(p[0].contains("crls: empty"), "{p:?}");
        let p = problems(
            dir.path(),
            &entry("    trust: pin-only\n    crls: [fresh.crl]\n"),
        );
        assert!(p[0].contains("pin-only"), "{p:?}");
        let p = problems(
            dir.path(),
            &with("fresh.crl", "    crl_policy: sometimes\n"),
        );
        assert!(p[0].contains("unknown variant"), "{p:?}");
    }

    /// `../x` climbs out of the pinset's volume: it is read where it is
    /// named, not from inside the kubelet's timestamped directory.
    #[test]
    fn a_path_that_climbs_out_is_read_where_it_is_named() {
        let root = tempfile::tempdir().unwrap();
        let ca = ca();
        let (cert, key) = client(&ca, "api", later(), true);
        let pins = root.path().join("pins");
        let real = pins.join("..2026_01_01");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(root.path().join("identity")).unwrap();
        std::fs::write(root.path().join("identity/tls.crt"), &cert).unwrap();
        std::fs::write(root.path().join("identity/tls.key"), &key).unwrap();
        let yaml =
            entry("    client_cert: {cert: ../identity/tls.crt, key: ../identity/tls.key}\n");
        std::fs::write(real.join("pins.yaml"), &yaml).unwrap();
        std::os::unix::fs::symlink("..2026_01_01/pins.yaml", pins.join("pins.yaml")).unwrap();
        let p = crate::policy::load(&pins.join("pins.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let c = p.hosts[0].client_cert.as_ref().unwrap();
        assert_eq!(c.cert_path, pins.join("../identity/tls.crt"));
    }
}
