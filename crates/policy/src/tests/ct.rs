use std::path::Path;

use super::{PIN_A, PIN_B};
use crate::admission::same_enforcement;
use crate::{parse, CtMode, Policy, Problem};

/// A directory with a CA bundle `ca.pem` in it.
fn dir_with_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    dir
}

fn load(dir: &Path, yaml: &str) -> Result<Policy, Vec<Problem>> {
    parse(yaml.as_bytes(), dir, time::OffsetDateTime::now_utc())
}

fn entry(name: &str, extra: &str) -> String {
    format!("  {name}:\n    pins: [{PIN_A}, {PIN_B}]\n{extra}")
}

#[test]
fn defaults_are_report_for_webpki_and_off_for_private_cas_and_pin_only() {
    let dir = dir_with_bundle();
    let yaml = format!(
        "version: 1\ndefaults:\n  unlisted: allow\nhosts:\n{}{}{}",
        entry("web.test", ""),
        entry("private.test", "    trust: ca.pem\n"),
        entry("pinonly.test", "    trust: pin-only\n"),
    );
    let p = load(dir.path(), &yaml).unwrap();
    let modes: Vec<CtMode> = p.hosts.iter().map(|h| h.ct).collect();
    assert_eq!(modes, [CtMode::Report, CtMode::Off, CtMode::Off]);
    assert_eq!(p.defaults.ct, CtMode::Report, "unlisted under webpki");
    // Unlisted hosts under a private default trust: off.
    let yaml = "version: 1\ndefaults:\n  unlisted: allow\n  trust: ca.pem\nhosts: {}\n";
    assert_eq!(load(dir.path(), yaml).unwrap().defaults.ct, CtMode::Off);
}

#[test]
fn defaults_ct_is_inherited_by_webpki_entries_only_and_entries_override() {
    let dir = dir_with_bundle();
    let yaml = format!(
        "version: 1\ndefaults:\n  ct: enforce\nhosts:\n{}{}{}",
        entry("web.test", ""),
        entry("quiet.test", "    ct: off\n"),
        entry("private.test", "    trust: ca.pem\n"),
    );
    let p = load(dir.path(), &yaml).unwrap();
    let modes: Vec<CtMode> = p.hosts.iter().map(|h| h.ct).collect();
    assert_eq!(modes, [CtMode::Enforce, CtMode::Off, CtMode::Off]);
    assert_eq!(
        (p.defaults.ct, p.defaults.ct_written),
        (CtMode::Enforce, Some(CtMode::Enforce))
    );
}

#[test]
fn enforce_under_pin_only_is_a_load_error_and_under_a_private_ca_a_warning() {
    let dir = dir_with_bundle();
    let yaml = format!(
        "version: 1\nhosts:\n{}{}",
        entry("other.test", ""),
        entry("pinonly.test", "    trust: pin-only\n    ct: enforce\n"),
    );
    let problems = load(dir.path(), &yaml).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 1, "{text:?}");
    assert_eq!(problems[0].field.as_deref(), Some("ct"));
    assert_eq!(problems[0].line, Some(8), "{text:?}");
    assert!(text[0].contains("pin-only"), "{text:?}");
    // A private CA with its own logs (--ct-log-list) may enforce: it loads,
    // with a warning at the line, in an entry and in the defaults.
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry("private.test", "    trust: ca.pem\n    ct: enforce\n"),
    );
    let p = load(dir.path(), &yaml).unwrap();
    assert_eq!(p.hosts[0].ct, CtMode::Enforce);
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert!(w.iter().any(|w| w.contains("--ct-log-list")), "{w:?}");
    let yaml = "version: 1\ndefaults:\n  trust: ca.pem\n  ct: enforce\nhosts: {}\n";
    let p = load(dir.path(), yaml).unwrap();
    assert_eq!(p.defaults.ct, CtMode::Enforce);
    assert_eq!(p.warnings[0].field.as_deref(), Some("defaults.ct"));
    assert_eq!(p.warnings[0].line, Some(4));
    // Report there loads, with a warning.
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry("private.test", "    trust: ca.pem\n    ct: report\n")
    );
    let p = load(dir.path(), &yaml).unwrap();
    assert_eq!(p.hosts[0].ct, CtMode::Report);
    assert!(p.warnings.iter().any(|w| w.to_string().contains("none")));
}

/// `defaults.ct: enforce` reads as if it held every unlisted host, but an
/// unlisted CONNECT and a transparent splice are byte tunnels pinproxy
/// never judges: with `unlisted: allow` or `learn` the pinset loads with a
/// warning saying so; with `deny` there is no unlisted traffic to mislead.
#[test]
fn defaults_ct_enforce_with_unlisted_traffic_warns_that_tunnels_are_not_judged() {
    let dir = dir_with_bundle();
    for unlisted in ["allow", "learn"] {
        let yaml =
            format!("version: 1\ndefaults:\n  unlisted: {unlisted}\n  ct: enforce\nhosts: {{}}\n");
        let p = load(dir.path(), &yaml).unwrap();
        assert_eq!(p.defaults.ct, CtMode::Enforce);
        let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 1, "{unlisted}: {w:?}");
        assert_eq!(p.warnings[0].field.as_deref(), Some("defaults.ct"));
        assert_eq!(p.warnings[0].line, Some(4), "{w:?}");
        assert!(w[0].contains("byte tunnels"), "{w:?}");
    }
    for yaml in [
        "version: 1\ndefaults:\n  unlisted: deny\n  ct: enforce\nhosts: {}\n",
        "version: 1\ndefaults:\n  unlisted: allow\n  ct: report\nhosts: {}\n",
    ] {
        let p = load(dir.path(), yaml).unwrap();
        assert!(
            !p.warnings
                .iter()
                .any(|w| w.to_string().contains("byte tunnels")),
            "{yaml}: {:?}",
            p.warnings
        );
    }
}

#[test]
fn an_unknown_ct_value_is_refused_and_a_ct_change_is_a_change_of_enforcement() {
    let dir = dir_with_bundle();
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry("a.test", "    ct: strict\n")
    );
    assert!(load(dir.path(), &yaml).is_err());
    let a = load(
        dir.path(),
        &format!(
            "version: 1\nhosts:\n{}",
            entry("a.test", "    ct: report\n")
        ),
    )
    .unwrap();
    let b = load(
        dir.path(),
        &format!(
            "version: 1\nhosts:\n{}",
            entry("a.test", "    ct: enforce\n")
        ),
    )
    .unwrap();
    assert!(same_enforcement(&a.hosts[0], &a.hosts[0]));
    assert!(!same_enforcement(&a.hosts[0], &b.hosts[0]));
}
