//! YAML values: the shorthand injection builds them with ([`s`], [`map`]),
//! and a block-style emitter in kubectl's layout. serde_yaml's own emitter
//! quotes for YAML 1.2 only: it would write the string `"on"` or `"yes"` as
//! a plain scalar, which Kubernetes (YAML 1.1) reads as a boolean. This one
//! writes a scalar plain only when every YAML version reads it back as the
//! same string.

use serde_yaml::Value;
use std::fmt::Write;

/// A string value.
pub(super) fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// A mapping of `entries`, in order.
pub(super) fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
}

pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0, false),
        Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0, false),
        other => {
            scalar(&mut out, other, 0);
            out.push('\n');
        }
    }
    out
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => !m.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        Value::Tagged(t) => is_block(&t.value),
        _ => false,
    }
}

fn mapping(out: &mut String, m: &serde_yaml::Mapping, indent: usize, inline_first: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        scalar(out, k, indent);
        out.push(':');
        value_after_key(out, v, indent);
    }
}

fn value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            mapping(out, m, indent + 2, false);
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            sequence(out, s, indent, false);
        }
        Value::Tagged(t) if is_block(&t.value) => {
            let _ = write!(out, " {}", t.tag);
            value_after_key(out, &t.value, indent);
        }
        _ => {
            out.push(' ');
            scalar(out, v, indent + 2);
            out.push('\n');
        }
    }
}

fn sequence(out: &mut String, seq: &[Value], indent: usize, inline_first: bool) {
    for (i, v) in seq.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        out.push_str("- ");
        item(out, v, indent);
    }
}

fn item(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Mapping(m) if !m.is_empty() => mapping(out, m, indent + 2, true),
        Value::Sequence(s) if !s.is_empty() => sequence(out, s, indent + 2, true),
        Value::Tagged(t) if is_block(&t.value) => {
            let _ = writeln!(out, "{}", t.tag);
            pad(out, indent + 2);
            item(out, &t.value, indent + 2);
        }
        _ => {
            scalar(out, v, indent + 2);
            out.push('\n');
        }
    }
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// A scalar (or empty collection) in flow position; `indent` is the
/// indentation of block-scalar content lines.
fn scalar(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => string(out, s, indent),
        Value::Sequence(_) => out.push_str("[]"),
        Value::Mapping(_) => out.push_str("{}"),
        Value::Tagged(t) => {
            let _ = write!(out, "{} ", t.tag);
            scalar(out, &t.value, indent);
        }
    }
}

fn string(out: &mut String, s: &str, indent: usize) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if literal_ok(s) {
        let chomp = if !s.ends_with('\n') {
            "-"
        } else if s.ends_with("\n\n") {
            "+"
        } else {
            ""
        };
        let _ = write!(out, "|{chomp}");
        for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
            out.push('\n');
            if !line.is_empty() {
                pad(out, indent);
                out.push_str(line);
            }
        }
    } else {
        double_quoted(out, s);
    }
}

/// Plain only when YAML 1.1 and 1.2 both read it back as this string:
/// no indicator at the start, nothing that resolves to a bool, null or
/// number in either version, no `: ` or ` #`.
fn is_plain_safe(s: &str) -> bool {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "true", "false", "on", "off", "null"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    let second = s.chars().nth(1);
    let dash_word =
        first == '-' && matches!(second, Some(c) if c == '-' || c.is_ascii_alphabetic());
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_' || dash_word) {
        return false;
    }
    if WORDS.contains(&s.to_ascii_lowercase().as_str()) || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " _./-:@+=,()".contains(c))
}

fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{feff}')
        && !s.split('\n').any(|l| l.ends_with(' ') || l.ends_with('\t'))
}

fn double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &Value) -> Value {
        serde_yaml::from_str(&to_string(v)).unwrap()
    }

    #[test]
    fn emitter_round_trips_tricky_scalars() {
        let src = "a: 'on'\nb: 'yes'\nc: '0644'\nd: 'true'\ne: ''\nf: \"x: y\"\ng: \"a #b\"\n\
                   h: \"line1\\nline2\\n\"\ni: \"no-nl\\nend\"\nj: \"two\\n\\n\"\nk: \" lead\\nx\"\n\
                   l: '-x'\nm: '1.5'\nn: \"tab\\tx\"\no: [1, {}, []]\np: {q: ~, r: 1.5}\n\
                   s: '@x'\nt: '*x'\nu: '~'\nv: 'Y'\nw: 'null'\nx: [[1, 2], [a]]\n";
        let v: Value = serde_yaml::from_str(src).unwrap();
        assert_eq!(roundtrip(&v), v, "{}", to_string(&v));
        let out = to_string(&v);
        assert!(out.contains("a: \"on\""), "{out}");
        assert!(out.contains("h: |\n  line1\n  line2\n"), "{out}");
    }
}
