//! Property tests for host normalization and pattern matching.

use std::path::Path;

use proptest::prelude::*;

use pinproxy::policy::host::Host;
use pinproxy::policy::{self, Decision};

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5).prop_map(|l| l.join("."))
}

fn wildcard_policy() -> policy::Policy {
    let yaml = "version: 1\nhosts:\n  \"*.example.test\":\n    pins: [sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=]\n  exact.example.test:\n    pins: [sha256/YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=]\n";
    policy::parse(
        yaml.as_bytes(),
        Path::new("."),
        time::OffsetDateTime::UNIX_EPOCH,
    )
    .unwrap()
}

fn entry(p: &policy::Policy, host: &str) -> Option<String> {
    let host = Host::parse(host).ok()?;
    match p.lookup(&host) {
        Decision::Listed(e) => Some(e.name.clone()),
        Decision::Unlisted => None,
    }
}

proptest! {
    #[test]
    fn normalization_is_idempotent(n in name(), dot in any::<bool>()) {
        let raw = if dot { format!("{n}.") } else { n };
        if let Ok(h) = Host::parse(&raw) {
            prop_assert_eq!(Host::parse(&h.authority_form()).unwrap(), h);
        }
    }

    #[test]
    fn case_and_trailing_dot_spellings_are_one_host(n in name()) {
        // Same entry or same refusal (error texts keep the raw spelling).
        let lower = Host::parse(&n.to_ascii_lowercase()).ok();
        prop_assert_eq!(Host::parse(&n.to_ascii_uppercase()).ok(), lower.clone());
        prop_assert_eq!(Host::parse(&format!("{n}.")).ok(), lower);
    }

    #[test]
    fn a_wildcard_matches_exactly_one_label(labels in prop::collection::vec(label(), 0..4), upper in any::<bool>(), dot in any::<bool>()) {
        let p = wildcard_policy();
        let mut host = labels.iter().map(|l| format!("{l}.")).collect::<String>() + "example.test";
        if upper { host = host.to_ascii_uppercase(); }
        if dot { host.push('.'); }
        let got = entry(&p, &host);
        let is_exact = labels.len() == 1 && labels[0].eq_ignore_ascii_case("exact");
        let want = match labels.len() {
            1 if is_exact => Some("exact.example.test".to_string()),
            1 => Some("*.example.test".to_string()),
            _ => None, // zero labels (the base itself) or two and more
        };
        // A numeric last label would be an IP, but ours ends in "test".
        prop_assert_eq!(got, want, "{}", host);
    }

    #[test]
    fn lookalike_suffixes_never_match(prefix in "[a-z0-9-]{1,10}", suffix in "[a-z]{1,6}") {
        let p = wildcard_policy();
        prop_assert_eq!(entry(&p, &format!("{prefix}example.test")), None);
        prop_assert_eq!(entry(&p, &format!("a.example.test.{suffix}")), None);
    }
}
