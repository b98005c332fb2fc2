//! `pinproxy status` output: a table (text) or the report as JSON.

use std::fmt::Write;

use super::{Report, State};

fn short(sha: &Option<String>) -> String {
    sha.as_deref()
        .map_or("-".into(), |s| s.chars().take(12).collect())
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), T::to_string)
}

fn state_name(s: &State) -> &'static str {
    match s {
        State::Synced => "SYNCED",
        State::Stale => "STALE",
        State::NoSecret => "NO-SECRET",
        State::Unknown => "UNKNOWN",
    }
}

/// Column-aligned rows.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

pub fn render_text(report: &Report) -> String {
    let mut rows = vec![[
        "POD",
        "STATE",
        "GEN",
        "PINSET",
        "SECRET",
        "RELOAD",
        "MISMATCHES",
        "NEAREST EXPIRY",
        "VERSION",
    ]
    .map(String::from)
    .to_vec()];
    for r in &report.sidecars {
        rows.push(vec![
            format!("{}/{}", r.namespace, r.pod),
            state_name(&r.state).into(),
            or_dash(&r.generation),
            short(&r.pins_sha256),
            match (&r.secret, &r.secret_sha256) {
                (Some(s), Some(_)) => format!("{s}@{}", short(&r.secret_sha256)),
                (Some(s), None) => format!("{s}@?"),
                (None, _) => "-".into(),
            },
            or_dash(&r.last_reload),
            or_dash(&r.mismatches),
            or_dash(&r.nearest_expiry),
            r.version.clone().unwrap_or_else(|| r.image.clone()),
        ]);
    }
    let mut out = table(&rows);
    for r in report.sidecars.iter().filter(|r| r.detail.is_some()) {
        let _ = writeln!(out, "  {}/{}: {}", r.namespace, r.pod, or_dash(&r.detail));
    }
    if !report.without_sidecar.is_empty() {
        let _ = writeln!(out, "\nAsked for injection, running WITHOUT the sidecar:");
        let mut rows = vec![["POD", "PHASE", "ASKED BY"].map(String::from).to_vec()];
        for m in &report.without_sidecar {
            rows.push(vec![
                format!("{}/{}", m.namespace, m.pod),
                m.phase.clone(),
                m.asked_by.clone(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    let count = |s: State| report.sidecars.iter().filter(|r| r.state == s).count();
    let _ = writeln!(
        out,
        "\n{} sidecars: {} synced, {} stale, {} no secret, {} unknown; {} pods without their sidecar",
        report.sidecars.len(),
        count(State::Synced),
        count(State::Stale),
        count(State::NoSecret),
        count(State::Unknown),
        report.without_sidecar.len()
    );
    out
}

pub fn render_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
