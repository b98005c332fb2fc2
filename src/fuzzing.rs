//! Entry points shared by the `cargo fuzz` targets (fuzz/) and the corpus
//! replay test (tests/fuzz_corpus.rs). Each takes arbitrary bytes, must
//! never panic, and checks the invariants that matter for security.

use std::path::Path;
use std::str::FromStr;

use crate::policy::host::Host;
use crate::policy::pin::Pin;
use crate::policy::{self, Decision};

/// The pinset loader and validator: any bytes yield a policy or a list of
/// problems; an accepted policy's entries all have pins.
pub fn pinset(data: &[u8]) {
    let now = time::macros::datetime!(2026-11-24 00:00 UTC);
    if let Ok(policy) = policy::parse(data, Path::new("/nonexistent"), now) {
        for h in &policy.hosts {
            assert!(!h.pins.is_empty(), "an accepted entry without pins");
            assert!(!h.ports.is_empty(), "an accepted entry without ports");
        }
    }
}

/// Pin parsing: only `sha256/` + base64 of exactly 32 bytes is accepted,
/// and an accepted pin prints back to a string that parses to itself.
pub fn pin(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Pin::from_str(s) {
        assert!(s.trim().starts_with("sha256/"));
        assert_eq!(Pin::from_str(&p.to_string()), Ok(p));
    }
}

/// Host normalization and wildcard matching: normalization is idempotent,
/// and a wildcard entry matches exactly one extra label.
pub fn host_match(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(host) = Host::parse(s) else {
        return;
    };
    let again = Host::parse(&host.authority_form()).expect("a normalized host parses again");
    assert_eq!(again, host, "normalization is idempotent");
    let yaml = "version: 1\nhosts:\n  \"*.example.test\":\n    pins: [sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=]\n";
    let policy = policy::parse(
        yaml.as_bytes(),
        Path::new("."),
        time::OffsetDateTime::UNIX_EPOCH,
    )
    .expect("the fixed pinset is valid");
    let matched = matches!(policy.lookup(&host), Decision::Listed(_));
    let expected = match &host {
        Host::Name(n) => n
            .strip_suffix(".example.test")
            .is_some_and(|first| !first.is_empty() && !first.contains('.')),
        Host::Ip(_) => false,
    };
    assert_eq!(matched, expected, "wildcard match for {host}");
}

/// Request targets: absolute-form URLs and CONNECT authorities either
/// parse into a normalized host and a non-zero port, or are refused.
pub fn request_target(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = s.parse::<http::Uri>() {
        if let Ok(t) = crate::proxy::target::parse_absolute(&uri) {
            assert_ne!(t.port, 0);
            assert_eq!(
                Host::parse(&t.host.authority_form()).ok(),
                Some(t.host.clone())
            );
        }
        let req = http::Request::connect(uri)
            .body(())
            .expect("a parsed URI builds a request");
        if let Ok(t) = crate::proxy::target::parse_connect(&req) {
            assert_ne!(t.port, 0);
        }
    }
}
