//! `pinproxy status` output: a table (text) or the report as JSON.
//!
//! Every string in a [`Report`] came from the cluster (pod names, images,
//! phases, what a pod's `/metrics` served, error bodies), and a pod may put
//! terminal escape sequences in some of them: both formats escape what a
//! terminal would act on ([`needs_escape`]) — the text visibly (`\u{1b}`),
//! JSON as `\u001b`, which keeps the value exact for whatever parses it.

use std::borrow::Cow;
use std::fmt::Write;

use super::{Report, SidecarRow, State};

/// Whether `c` must not reach a terminal raw: control characters (C0,
/// DEL, C1, newlines included) and the bidirectional marks, embeddings,
/// overrides and isolates, which reorder what follows them on screen.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with each character of [`needs_escape`] written as `\u{hex}`.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn short(sha: &Option<String>) -> String {
    match sha.as_deref() {
        // None, or "": a sidecar with no pinset in force.
        None | Some("") => "-".into(),
        Some(s) => s.chars().take(12).collect(),
    }
}

/// `shown` of column `column`, or `invalid` when `/metrics` gave it malformed.
fn cell(r: &SidecarRow, column: &str, shown: String) -> String {
    if r.invalid.contains(&column) {
        "invalid".into()
    } else {
        shown
    }
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

/// The report as a table, every value from the cluster passed through
/// [`visible`].
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
            format!("{}/{}", visible(&r.namespace), visible(&r.pod)),
            state_name(&r.state).into(),
            cell(r, "generation", or_dash(&r.generation)),
            cell(r, "pins_sha256", visible(&short(&r.pins_sha256)).into()),
            match (&r.secret, &r.secret_sha256) {
                (Some(s), Some(_)) => format!("{}@{}", visible(s), short(&r.secret_sha256)),
                (Some(s), None) => format!("{}@?", visible(s)),
                (None, _) => "-".into(),
            },
            cell(r, "last_reload", or_dash(&r.last_reload)),
            cell(r, "mismatches", or_dash(&r.mismatches)),
            cell(
                r,
                "nearest_expiry",
                visible(&or_dash(&r.nearest_expiry)).into(),
            ),
            cell(
                r,
                "version",
                visible(r.version.as_ref().unwrap_or(&r.image)).into(),
            ),
        ]);
    }
    let mut out = table(&rows);
    for r in report.sidecars.iter().filter(|r| r.detail.is_some()) {
        let _ = writeln!(
            out,
            "  {}/{}: {}",
            visible(&r.namespace),
            visible(&r.pod),
            visible(&or_dash(&r.detail))
        );
    }
    if !report.without_sidecar.is_empty() {
        let _ = writeln!(out, "\nAsked for injection, running WITHOUT the sidecar:");
        let mut rows = vec![["POD", "PHASE", "ASKED BY"].map(String::from).to_vec()];
        for m in &report.without_sidecar {
            rows.push(vec![
                format!("{}/{}", visible(&m.namespace), visible(&m.pod)),
                visible(&m.phase).into(),
                visible(&m.asked_by).into(),
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

/// The report as JSON. serde_json escapes C0 controls only; DEL, C1 and
/// the bidirectional controls ([`needs_escape`]) would go out raw, so
/// they are written as `\uXXXX` too (all lie in the BMP). Outside strings
/// serde_json writes ASCII only, with `\n` between lines: every other such
/// character is inside a string, where the escape is the same value.
pub fn render_json(report: &Report) -> String {
    let json =
        serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    if !json.chars().any(|c| c != '\n' && needs_escape(c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && needs_escape(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MissingRow;

    #[test]
    fn visible_shows_every_control_and_bidi_character() {
        assert_eq!(visible("reg/pinproxy:0.1.0"), "reg/pinproxy:0.1.0");
        assert_eq!(
            visible("a\u{1b}[2J\r\n\u{7}\u{7f}\u{9b}\u{202e}\u{2066}\u{200f}b\\u{1b}"),
            "a\\u{1b}[2J\\u{d}\\u{a}\\u{7}\\u{7f}\\u{9b}\\u{202e}\\u{2066}\\u{200f}b\\u{1b}"
        );
    }

    #[test]
    fn json_escapes_what_serde_json_leaves_raw_and_keeps_the_value() {
        let phase = "P\u{1b}\u{7f}\u{9b}\u{202e}\u{2069}é";
        let report = Report {
            sidecars: vec![],
            without_sidecar: vec![MissingRow {
                namespace: "ns".into(),
                pod: "p".into(),
                asked_by: "x".into(),
                phase: phase.into(),
            }],
        };
        let json = render_json(&report);
        assert!(
            json.contains(r#""phase": "P\u001b\u007f\u009b\u202e\u2069é""#),
            "{json}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(back["without_sidecar"][0]["phase"], phase);
    }
}
