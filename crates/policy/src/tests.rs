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

/// For a connection that names no host: the entries whose `address:` it
/// dialed, IPv4-mapped IPv6 read as IPv4, the port compared too.
#[test]
fn entries_by_address() {
    let p = ok(&format!(
        "version: 1\nhosts:\n  a.test:\n    pins: [{PIN_A}]\n    address: 203.0.113.5:443\n  b.test:\n    pins: [{PIN_A}]\n    address: 203.0.113.5:443\n  c.test:\n    pins: [{PIN_A}]\n    address: 203.0.113.5:8443\n  d.test:\n    pins: [{PIN_A}]\n"
    ));
    let names = |a: &str| -> Vec<String> {
        p.by_address(a.parse().unwrap())
            .map(|e| e.name.clone())
            .collect()
    };
    assert_eq!(names("203.0.113.5:443"), ["a.test", "b.test"]);
    assert_eq!(names("[::ffff:203.0.113.5]:443"), ["a.test", "b.test"]);
    assert_eq!(names("203.0.113.5:8443"), ["c.test"]);
    assert!(names("203.0.113.6:443").is_empty());
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

/// One question, answered once: the addresses complete an unlisted name's
/// answer when `passthrough:` lists CIDRs, and change nothing else.
#[test]
fn an_answer_is_completed_by_the_addresses_only_where_they_can_decide() {
    use super::admission::{decide, Target};
    let p = ok(&format!(
        "version: 1\ndefaults:\n  unlisted: deny\npassthrough: [10.96.0.0/12, \"**.svc.test\"]\nhosts:\n  a.test:\n    pins: [{PIN_A}, {PIN_B}]\n"
    ));
    let target = |h: &str| Target {
        host: host(h),
        port: 443,
    };
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let inside = [ip("10.96.0.10"), ip("10.100.0.1")];

    // An unlisted name: refused unless every address is in one CIDR.
    let orders = target("orders");
    let answer = decide(&p, &orders, now());
    assert!(answer.wants_addresses());
    let a = answer.finish(&p, &inside).unwrap();
    assert_eq!(a.passthrough(), Some("10.96.0.0/12"));
    let mixed = decide(&p, &orders, now()).finish(&p, &[inside[0], ip("192.0.2.1")]);
    assert_eq!(
        mixed.err().map(|r| r.reason),
        Some(pinproxy_reason::Reason::HostNotAllowed)
    );
    let none = decide(&p, &orders, now()).finish(&p, &[]);
    assert!(none.is_err());

    // A listed name never passes, whatever it resolves to.
    let listed = target("a.test");
    let answer = decide(&p, &listed, now());
    assert!(!answer.wants_addresses());
    assert!(answer.finish(&p, &inside).unwrap().entry().is_some());

    // An IP literal was judged by its own address already; a passthrough
    // name by its name.
    let literal = target("10.96.0.10");
    let answer = decide(&p, &literal, now());
    assert!(!answer.wants_addresses());
    assert_eq!(
        answer.finish(&p, &[]).unwrap().passthrough(),
        Some("10.96.0.0/12")
    );
    let named = decide(&p, &target("x.svc.test"), now()).finish(&p, &inside);
    assert_eq!(named.unwrap().passthrough(), Some("**.svc.test"));

    // No CIDRs: the addresses are never wanted.
    let q = ok(&format!(
        "version: 1\ndefaults:\n  unlisted: allow\nhosts:\n  a.test:\n    pins: [{PIN_A}, {PIN_B}]\n"
    ));
    assert!(!decide(&q, &orders, now()).wants_addresses());
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
    let decided = |t: &Target| decide(&p, t, now()).finish(&p, &[]);
    assert!(decided(&target("other.test", 443)).is_ok_and(|a| a.is_unlisted()));
    let refused = decided(&target("other.test", 8443)).err();
    assert_eq!(
        refused.map(|r| r.reason),
        Some(pinproxy_reason::Reason::PortNotAllowed)
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

// === identity and revocation (docs/reference.md, "Host fields") ===

mod identity;

// === Certificate Transparency (docs/reference.md, "Certificate Transparency and OCSP") ===

mod ct;
mod upstream_protocol;

#[test]
fn serial_is_a_positive_integer_read_by_the_loader_and_by_serial() {
    use super::load::{serial, SerialError};
    let p = ok("version: 1\nserial: 42\nhosts: {}\n");
    assert_eq!(p.serial, Some(42));
    assert_eq!(
        ok("version: 1\nhosts: {}\n").serial,
        None,
        "optional unsigned"
    );
    let problems = bad("version: 1\nserial: 0\nhosts: {}\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field.as_deref(), Some("serial"));
    assert_eq!(problems[0].line, Some(2));
    for wrong in ["-1", "1.5", "\"3\"", "99999999999999999999", "[1]"] {
        bad(&format!("version: 1\nserial: {wrong}\nhosts: {{}}\n"));
        assert!(
            matches!(
                serial(format!("version: 1\nserial: {wrong}\nhosts: {{}}\n").as_bytes()),
                Err(SerialError::Invalid(_))
            ),
            "{wrong}"
        );
    }
    assert_eq!(serial(b"version: 1\nserial: 7\nhosts: {}\n").unwrap(), 7);
    assert!(matches!(
        serial(b"version: 1\nhosts: {}\n"),
        Err(SerialError::Missing)
    ));
    assert!(matches!(
        serial(b"version: 1\nserial: 0\nhosts: {}\n"),
        Err(SerialError::Zero)
    ));
    // The loader's own parser: a duplicate key, an alias or a typo is what
    // the loader refuses too, never a second reading of the serial.
    for hostile in [
        "version: 1\nserial: 1\nserial: 9\nhosts: {}\n",
        "version: 1\nserial: &s 5\nhosts: {}\n",
        "version: 1\nserail: 5\nhosts: {}\n",
    ] {
        assert!(
            matches!(serial(hostile.as_bytes()), Err(SerialError::Invalid(_))),
            "{hostile}"
        );
        bad(hostile);
    }
}

#[test]
fn a_pending_policy_refuses_every_target() {
    use super::admission::{by_address, decide, Target};
    let p = Policy::pending();
    for (h, port) in [("api.example.test", 443), ("127.0.0.1", 80)] {
        let target = Target {
            host: host(h),
            port,
        };
        let answer = decide(&p, &target, now());
        assert!(
            !answer.wants_addresses(),
            "addresses asked for while pending"
        );
        let refused = answer
            .finish(&p, &["10.0.0.1".parse().unwrap()])
            .unwrap_err();
        assert_eq!(refused.reason, pinproxy_reason::Reason::NoPinset);
        assert!(refused.message.contains("no pinset is in force"));
        assert!(by_address(&p, "10.0.0.1".parse().unwrap()).is_none());
    }
}
