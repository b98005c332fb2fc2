//! docs/reference.md is the contract users read: these tests fail when a
//! name the code defines — a refusal reason, a metric and its label values,
//! a command or flag of the command line — is missing from it, and when a
//! source file or document sends its reader outside the repository.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::control::drift::ChainOutcome;
use crate::control::metrics::Metrics;
use crate::reason::{
    Delivery, LeafResult, Position, Reason, ReloadResult, ReportType, RequestOutcome,
    TransparentOutcome, TransparentProtocol,
};
use crate::tls::verify::Outcome;

const REFERENCE: &str = include_str!("../docs/reference.md");

/// The text under `heading` (a whole heading line, `## …` or `### …`), up
/// to the next heading of the same or a higher level.
fn section(heading: &str) -> &'static str {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = REFERENCE
        .lines()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("docs/reference.md has no heading {heading:?}"));
    let mut offset = 0;
    let mut body = None;
    for (i, line) in REFERENCE.lines().enumerate() {
        let next = offset + line.len() + 1;
        if i == start {
            body = Some(next);
        } else if let Some(from) = body {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            if (1..=level).contains(&hashes) && line[hashes..].starts_with(' ') {
                return &REFERENCE[from..offset];
            }
        }
        offset = next;
    }
    &REFERENCE[body.unwrap_or(REFERENCE.len()).min(REFERENCE.len())..]
}

/// The row of the Metrics table for `metric`.
fn metric_row(metric: &str) -> &'static str {
    let start = format!("| `{metric}` |");
    section("## Metrics")
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("docs/reference.md, Metrics: no row for {metric}"))
}

/// Every value in `values` is written as `` `value` `` in `text`.
fn all_quoted<'a>(
    text: &str,
    values: impl IntoIterator<Item = &'a str>,
    r#where: &str,
) -> Vec<String> {
    values
        .into_iter()
        .filter(|v| !text.contains(&format!("`{v}`")))
        .map(|v| format!("{where}: `{v}`"))
        .collect()
}

fn assert_none_missing(missing: Vec<String>) {
    assert!(
        missing.is_empty(),
        "docs/reference.md is missing:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_reason_is_in_the_reference() {
    let refusals = section("## Refusals");
    let mut missing = all_quoted(refusals, Reason::ALL.iter().map(|r| r.as_str()), "Refusals");
    // Each answer's status, on its reason's row.
    for r in Reason::ALL {
        if let Some(status) = r.status() {
            let row = format!("| `{}` | {} |", r.as_str(), status.as_u16());
            if !refusals.contains(&row) {
                missing.push(format!("Refusals: a row `{row}`"));
            }
        }
    }
    assert_none_missing(missing);
}

#[test]
fn every_metric_and_label_value_is_in_the_reference() {
    let metrics = Metrics::new();
    let names: Vec<&str> = metrics.names().collect();
    assert!(names.len() > 15, "{names:?}");
    let mut missing = Vec::new();
    for name in &names {
        if !section("## Metrics").contains(&format!("| `{name}` |")) {
            missing.push(format!("Metrics: a row for `{name}`"));
        }
    }
    let labels: [(&str, Vec<&str>); 9] = [
        (
            "pinproxy_requests_total",
            RequestOutcome::labels().collect(),
        ),
        ("pinproxy_denied_total", Reason::denied().collect()),
        (
            "pinproxy_config_reloads_total",
            ReloadResult::ALL.iter().map(|v| v.as_str()).collect(),
        ),
        (
            "pinproxy_reports_total",
            Delivery::ALL.iter().map(|v| v.as_str()).collect(),
        ),
        (
            "pinproxy_upstream_chain_changes_total",
            Position::ALL.iter().map(|v| v.as_str()).collect(),
        ),
        (
            "pinproxy_intercept_leaf_certificates_total",
            LeafResult::ALL.iter().map(|v| v.as_str()).collect(),
        ),
        (
            "pinproxy_transparent_connections_total",
            TransparentProtocol::ALL
                .iter()
                .map(|v| v.as_str())
                .collect(),
        ),
        (
            "pinproxy_transparent_connections_total",
            TransparentOutcome::ALL.iter().map(|v| v.as_str()).collect(),
        ),
        (
            "pinproxy_pin_mismatch_total",
            [crate::policy::Mode::Enforce, crate::policy::Mode::Report]
                .iter()
                .map(|m| m.as_str())
                .collect(),
        ),
    ];
    for (metric, values) in labels {
        assert!(names.contains(&metric), "{metric} is not registered");
        missing.extend(all_quoted(metric_row(metric), values, metric));
    }
    // The handshake failure reasons are listed under Refusals, and the
    // metric's row says how many there are.
    let tls: Vec<&str> = Reason::tls_failures().collect();
    let row = metric_row("pinproxy_tls_verify_failures_total");
    if !row.contains(&format!("the {} values", tls.len())) {
        missing.push(format!(
            "pinproxy_tls_verify_failures_total: \"the {} values\"",
            tls.len()
        ));
    }
    missing.extend(all_quoted(
        section("## Refusals"),
        tls,
        "Refusals, handshake failures",
    ));
    assert_none_missing(missing);
}

#[test]
fn every_chain_outcome_and_report_type_is_in_the_reference() {
    let outcomes = ChainOutcome::ALL.iter().map(|o| o.as_str());
    let mut missing = all_quoted(section("## Admin endpoints"), outcomes, "/pins outcome");
    // A report is made for a chain that failed: never a passing verdict.
    let failed = ChainOutcome::ALL
        .iter()
        .filter(|o| {
            !matches!(
                o,
                ChainOutcome::Judged(
                    Outcome::Pass | Outcome::PassPinsExpired | Outcome::PassUnpinned
                ) | ChainOutcome::HandshakeFailed
            )
        })
        .map(|o| o.as_str());
    let reports = section("## Failure reports");
    missing.extend(all_quoted(reports, failed, "report outcome"));
    let kind = format!("\"type\": \"{}\"", ReportType::PinFailure.as_str());
    if !reports.contains(&kind) {
        missing.push(format!("Failure reports: {kind}"));
    }
    assert_none_missing(missing);
}

/// Every field of the `/learned` document (and of the learn file, the
/// same document) is in the schema under "Learning".
#[test]
fn every_learned_field_is_in_the_reference() {
    use crate::control::learn::{Doc, LearnedCert, LearnedHost, LearnedPath};
    let cert = LearnedCert {
        pin: String::new(),
        position: String::new(),
        subject: None,
        not_after: None,
    };
    let path = LearnedPath {
        pins: Vec::new(),
        certs: vec![cert],
        seen: 0,
        first_seen: String::new(),
        last_seen: String::new(),
        ct: Some(String::new()),
    };
    let host = LearnedHost {
        host: String::new(),
        port: 0,
        trust: String::new(),
        seen: 0,
        first_seen: String::new(),
        last_seen: String::new(),
        paths: vec![path],
    };
    let doc = Doc {
        hosts: vec![host],
        ..Doc::default()
    };
    let json = serde_json::to_value(&doc).expect("a Doc serializes");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    };
    let mut all = keys(&json);
    all.extend(keys(&json["hosts"][0]));
    all.extend(keys(&json["hosts"][0]["paths"][0]));
    all.extend(keys(&json["hosts"][0]["paths"][0]["certs"][0]));
    let learning = section("## Learning");
    let missing: Vec<String> = all
        .iter()
        .filter(|k| !learning.contains(&format!("\"{k}\"")))
        .map(|k| format!("Learning, /learned schema: \"{k}\""))
        .collect();
    assert_none_missing(missing);
}

/// Every subcommand has its section, and every long flag (and the
/// variable that sets it) is in it. `webhook` takes `inject`'s sidecar
/// options, listed once under `inject`.
#[test]
fn every_command_and_flag_is_in_the_reference() {
    let mut missing = Vec::new();
    let cli = Cli::command();
    for cmd in cli.get_subcommands() {
        let name = cmd.get_name();
        let heading = format!("### `pinproxy {name}`");
        if !REFERENCE.lines().any(|l| l == heading) {
            missing.push(format!("a section {heading}"));
            continue;
        }
        let mut text = section(&heading).to_string();
        if name == "webhook" {
            text.push_str(section("### `pinproxy inject`"));
        }
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            if !text.contains(&format!("`--{long}")) && !text.contains(&format!(" --{long}")) {
                missing.push(format!("pinproxy {name}: --{long}"));
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                if !text.contains(env.as_ref()) {
                    missing.push(format!("pinproxy {name}: --{long}'s variable {env}"));
                }
            }
        }
    }
    assert_none_missing(missing);
}

/// Files under `dir` (recursively) whose name ends in one of `exts`.
fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files(&path, exts, out);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e))
        {
            out.push(path);
        }
    }
}

/// The sources and documents send their reader to docs/reference.md, never
/// to a design document outside the repository.
#[test]
fn nothing_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md"), root.join("SECURITY.md")];
    for dir in ["src", "crates", "docs", "charts", "deploy"] {
        files(
            &root.join(dir),
            &["rs", "md", "toml", "yaml", "tpl", "txt"],
            &mut paths,
        );
    }
    assert!(paths.len() > 50, "{} files", paths.len());
    let this = root.join(file!().trim_start_matches("./"));
    let mut found = Vec::new();
    for path in paths.iter().filter(|p| **p != this) {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let lower = text.to_lowercase();
        for needle in [
            "design.md",
            "shared design",
            "design folder",
            "/work/shared",
        ] {
            if lower.contains(needle) {
                found.push(format!("{}: {needle}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
