//! The walls between rooms (README "Layout"), checked on the source: each
//! room may name only the rooms and crates its rule allows. Test modules
//! (everything after a file's `#[cfg(test)]`) are exempt.

use std::collections::BTreeSet;
use std::path::Path;

/// (room, crate rooms it may use, external crates it must not use)
const RULES: &[(&str, &[&str], &[&str])] = &[
    ("reason.rs", &[], &["tokio", "hyper", "rustls"]),
    // Pure: no sockets, no async runtime, no HTTP.
    (
        "policy",
        &["policy", "reason"],
        &["tokio", "hyper", "hyper_util", "tokio_rustls", "notify"],
    ),
    // No HTTP, and nothing of the proxy or the control plane.
    (
        "tls",
        &["tls", "policy", "reason"],
        &["hyper", "hyper_util", "http"],
    ),
    // Reports into control's sinks (metrics, drift, telemetry) only.
    (
        "upstream",
        &[
            "upstream",
            "policy",
            "tls",
            "reason",
            "control::metrics",
            "control::drift",
            "control::telemetry",
        ],
        &[],
    ),
    // Reads the live snapshot; never publishes one.
    (
        "proxy",
        &[
            "proxy",
            "policy",
            "tls",
            "upstream",
            "reason",
            "control::Live",
            "control::metrics",
            "control::telemetry",
        ],
        &["notify"],
    ),
    (
        "control",
        &["control", "policy", "tls", "upstream", "reason"],
        &[],
    ),
    // Never on the request path.
    ("k8s", &["k8s"], &[]),
];

fn source(path: &Path, out: &mut Vec<(String, String)>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            source(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        let text = std::fs::read_to_string(path).unwrap();
        let code = match text.find("#[cfg(test)]") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        out.push((path.display().to_string(), code));
    }
}

/// Every `crate::a::b` path named in `code`, as `a::b` (or `a`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.insert(path.trim_end_matches(':').to_string());
    }
    out
}

fn allowed(path: &str, allow: &[&str]) -> bool {
    allow
        .iter()
        .any(|a| path == *a || path.starts_with(&format!("{a}::")))
}

#[test]
fn rooms_only_use_what_their_rule_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (room, allow, banned) in RULES {
        let mut files = Vec::new();
        source(&src.join(room), &mut files);
        assert!(!files.is_empty(), "room {room} has no source");
        for (file, code) in &files {
            for path in crate_paths(code) {
                // `use crate::{a, b}` lists are not used in this crate.
                if !allowed(&path, allow) {
                    broken.push(format!("{file}: uses crate::{path}"));
                }
            }
            for ext in *banned {
                let used = code.lines().any(|l| {
                    let l = l.trim_start();
                    l.starts_with(&format!("use {ext}::"))
                        || l.contains(&format!(" {ext}::"))
                        || l.contains(&format!("({ext}::"))
                });
                if used {
                    broken.push(format!("{file}: uses the {ext} crate"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "walls crossed:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_a_crossing() {
    let paths =
        crate_paths("use crate::proxy::Context;\nlet x = crate::control::reload::Reloader::new();");
    assert!(paths.contains("proxy::Context"));
    assert!(!allowed(
        "control::reload::Reloader",
        &["control::Live", "control::metrics"]
    ));
    assert!(allowed("control::metrics::Metrics", &["control::metrics"]));
}
