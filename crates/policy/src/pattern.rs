//! Host patterns as pinset keys and `passthrough:` items write them, and
//! the one lookup both use.
//!
//! - `api.example.com` (or an IP literal): that host exactly;
//! - `*.example.com`: exactly one label more (`a.example.com`, not
//!   `example.com`, not `a.b.example.com` — TrustKit #156, curl
//!   CVE-2016-9952);
//! - `**.example.com` (OkHttp's): `example.com` itself and any depth below.
//!
//! Precedence: exact, then `*.`, then `**.` with the longest suffix first.
//! A wildcard over a public suffix (`*.com`, `**.co.uk`, `*.github.io`, by
//! the Public Suffix List) would cover every registrant's hosts and is
//! refused, as are partial wildcards (`a*.x`, `a.*.x`).

use std::collections::HashMap;

use super::host::{self, Host};

/// A parsed host pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Exact(Host),
    /// `*.base`: one extra label.
    OneLabel(String),
    /// `**.base`: the base and any depth below.
    AnyDepth(String),
}

/// Why a pattern was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("a wildcard may only be a whole first label (*.example.com or **.example.com)")]
    MiddleWildcard,
    #[error("partial wildcard: only *.example.com (one whole first label) or **.example.com (any depth) is allowed")]
    PartialWildcard,
    #[error("wildcard covers the public suffix {0:?}")]
    PublicSuffix(String),
    #[error("a wildcard cannot cover an IP address")]
    CoversIp,
    #[error("invalid host name: {0}")]
    Host(#[from] host::Error),
}

// === impl Pattern ===

impl Pattern {
    pub fn parse(key: &str) -> Result<Self, PatternError> {
        let (base, deep) = match key.strip_prefix("**.") {
            Some(base) => (Some(base), true),
            None => (key.strip_prefix("*."), false),
        };
        let Some(base) = base else {
            if key.contains('*') {
                return Err(PatternError::PartialWildcard);
            }
            return Ok(Pattern::Exact(Host::parse(key)?));
        };
        if base.contains('*') {
            return Err(PatternError::MiddleWildcard);
        }
        match Host::parse(base)? {
            Host::Ip(_) => Err(PatternError::CoversIp),
            Host::Name(base) if is_public_suffix(&base) => Err(PatternError::PublicSuffix(base)),
            Host::Name(base) if deep => Ok(Pattern::AnyDepth(base)),
            Host::Name(base) => Ok(Pattern::OneLabel(base)),
        }
    }

    /// The normalized spelling: two keys that spell the same pattern are
    /// one entry (a duplicate).
    pub fn canonical(&self) -> String {
        match self {
            Pattern::Exact(h) => h.to_string(),
            Pattern::OneLabel(base) => format!("*.{base}"),
            Pattern::AnyDepth(base) => format!("**.{base}"),
        }
    }
}

/// Whether a wildcard's base is itself a public suffix (`com`, `co.uk`,
/// `github.io`), by the Public Suffix List (ICANN and private sections).
pub(crate) fn is_public_suffix(base: &str) -> bool {
    !base.contains('.') || psl::suffix_str(base) == Some(base)
}

/// Values keyed by pattern, looked up by host with the precedence above.
#[derive(Clone, Debug)]
pub(crate) struct Patterns<T> {
    exact: HashMap<Host, T>,
    one_label: HashMap<String, T>,
    any_depth: HashMap<String, T>,
}

impl<T> Default for Patterns<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            one_label: HashMap::new(),
            any_depth: HashMap::new(),
        }
    }
}

impl<T> Patterns<T> {
    /// Adds `value` under `pattern`; returns the value it replaced.
    pub fn insert(&mut self, pattern: Pattern, value: T) -> Option<T> {
        match pattern {
            Pattern::Exact(h) => self.exact.insert(h, value),
            Pattern::OneLabel(base) => self.one_label.insert(base, value),
            Pattern::AnyDepth(base) => self.any_depth.insert(base, value),
        }
    }

    /// The value for a normalized host: exact, then `*.` one label up,
    /// then `**.` from the longest suffix (the host itself) to the
    /// shortest. IPs only ever match exact patterns.
    pub fn get(&self, host: &Host) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        let Host::Name(name) = host else {
            return None;
        };
        if let Some((first, rest)) = name.split_once('.') {
            if !first.is_empty() {
                if let Some(v) = self.one_label.get(rest) {
                    return Some(v);
                }
            }
        }
        if self.any_depth.is_empty() {
            return None;
        }
        let mut suffix = name.as_str();
        loop {
            if let Some(v) = self.any_depth.get(suffix) {
                return Some(v);
            }
            suffix = suffix.split_once('.')?.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[&str]) -> Patterns<String> {
        let mut p = Patterns::default();
        for k in keys {
            p.insert(Pattern::parse(k).unwrap(), k.to_string());
        }
        p
    }

    fn get<'a>(p: &'a Patterns<String>, host: &str) -> Option<&'a str> {
        p.get(&Host::parse(host).unwrap()).map(String::as_str)
    }

    #[test]
    fn any_depth_covers_the_apex_and_every_depth() {
        let p = set(&["**.example.com"]);
        for hit in [
            "example.com",
            "a.example.com",
            "a.b.c.example.com",
            "EXAMPLE.com.",
        ] {
            assert_eq!(get(&p, hit), Some("**.example.com"), "{hit}");
        }
        for miss in [
            "xexample.com",
            "example.com.evil.test",
            "com",
            "example.org",
        ] {
            assert_eq!(get(&p, miss), None, "{miss}");
        }
    }

    #[test]
    fn precedence_is_exact_then_one_label_then_longest_any_depth() {
        let p = set(&[
            "**.example.com",
            "**.b.example.com",
            "*.b.example.com",
            "x.b.example.com",
        ]);
        assert_eq!(get(&p, "x.b.example.com"), Some("x.b.example.com"));
        assert_eq!(get(&p, "y.b.example.com"), Some("*.b.example.com"));
        assert_eq!(get(&p, "z.y.b.example.com"), Some("**.b.example.com"));
        assert_eq!(get(&p, "b.example.com"), Some("**.b.example.com"));
        assert_eq!(get(&p, "c.example.com"), Some("**.example.com"));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Pattern::parse("**.com"),
            Err(PatternError::PublicSuffix("com".into()))
        );
        assert_eq!(
            Pattern::parse("**.co.uk"),
            Err(PatternError::PublicSuffix("co.uk".into()))
        );
        assert_eq!(
            Pattern::parse("a*.x.test"),
            Err(PatternError::PartialWildcard)
        );
        assert_eq!(
            Pattern::parse("***.x.test"),
            Err(PatternError::PartialWildcard)
        );
        assert_eq!(
            Pattern::parse("*.*.x.test"),
            Err(PatternError::MiddleWildcard)
        );
        assert_eq!(Pattern::parse("**.10.0.0.1"), Err(PatternError::CoversIp));
        assert_eq!(
            Pattern::parse("**.svc.cluster.local").map(|p| p.canonical()),
            Ok("**.svc.cluster.local".into())
        );
    }
}
