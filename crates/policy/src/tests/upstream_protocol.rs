use super::{PIN_A, PIN_B};
use crate::{parse, Policy, Problem, UpstreamProtocol};

fn load(yaml: &str) -> Result<Policy, Vec<Problem>> {
    let dir = tempfile::tempdir().unwrap();
    parse(yaml.as_bytes(), dir.path(), time::OffsetDateTime::now_utc())
}

fn entry(name: &str, extra: &str) -> String {
    format!("  {name}:\n    pins: [{PIN_A}, {PIN_B}]\n{extra}")
}

#[test]
fn auto_unless_written_and_entries_inherit_the_defaults() {
    let yaml = format!("version: 1\nhosts:\n{}", entry("a.test", ""));
    let p = load(&yaml).unwrap();
    assert_eq!(p.defaults.upstream_protocol, UpstreamProtocol::Auto);
    assert_eq!(p.hosts[0].upstream_protocol, UpstreamProtocol::Auto);

    let yaml = format!(
        "version: 1\ndefaults:\n  upstream_protocol: h1\nhosts:\n{}{}{}",
        entry("inherits.test", ""),
        entry("h2.test", "    upstream_protocol: h2\n"),
        entry("auto.test", "    upstream_protocol: auto\n"),
    );
    let p = load(&yaml).unwrap();
    assert_eq!(p.defaults.upstream_protocol, UpstreamProtocol::H1);
    let got: Vec<_> = p.hosts.iter().map(|h| h.upstream_protocol).collect();
    assert_eq!(
        got,
        [
            UpstreamProtocol::H1,
            UpstreamProtocol::H2,
            UpstreamProtocol::Auto
        ]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn an_unknown_value_is_a_load_error_at_its_line() {
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry("a.test", "    upstream_protocol: http3\n")
    );
    let problems = load(&yaml).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 1, "{text:?}");
    assert!(text[0].contains("http3"), "{text:?}");
    assert!(
        text[0].contains("auto") && text[0].contains("h1"),
        "{text:?}"
    );
    assert_eq!(problems[0].line, Some(5), "{text:?}");
}
