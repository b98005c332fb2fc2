//! A multi-document YAML stream as byte ranges, so that documents injection
//! leaves alone are copied back byte for byte, and the one fix-up a
//! re-emitted document needs for Kubernetes' YAML 1.1 reader.

use serde_yaml::Value;

/// One document of a stream, as byte ranges into the input: its `---` line
/// (empty for a leading document without one) and the rest.
pub(super) struct Doc {
    pub(super) separator: std::ops::Range<usize>,
    pub(super) body: std::ops::Range<usize>,
    /// 1-based line of the document's first line, for errors.
    pub(super) line: usize,
}

fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line == "---" || (line.starts_with("---") && line[3..].starts_with([' ', '\t']))
}

pub(super) fn split_documents(input: &str) -> Vec<Doc> {
    // A `---` at column 0 always starts a document: YAML forbids it inside
    // quoted or block scalars at that indentation.
    let mut docs = Vec::new();
    let mut cur = Doc {
        separator: 0..0,
        body: 0..0,
        line: 1,
    };
    let (mut pos, mut line_no) = (0, 1);
    while pos < input.len() {
        let end = input[pos..].find('\n').map_or(input.len(), |i| pos + i + 1);
        let line = &input[pos..end];
        if is_separator(line) {
            cur.body.end = pos;
            if cur.separator.start < cur.body.end {
                docs.push(cur);
            }
            // Content after `--- ` on the same line belongs to the document.
            let rest = line[3..].trim();
            cur = if rest.is_empty() || rest.starts_with('#') {
                Doc {
                    separator: pos..end,
                    body: end..end,
                    line: line_no,
                }
            } else {
                Doc {
                    separator: pos..pos,
                    body: pos..pos,
                    line: line_no,
                }
            };
        }
        pos = end;
        line_no += 1;
    }
    cur.body.end = input.len();
    if cur.separator.start < cur.body.end || docs.is_empty() {
        docs.push(cur);
    }
    docs
}

/// serde_yaml reads YAML 1.2, where `0644` is a string; Kubernetes reads
/// YAML 1.1, where it is octal 420. File modes are the one place manifests
/// write such numbers, so convert them back before re-emitting a document.
pub(super) fn fix_octal_modes(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                if matches!(k.as_str(), Some("defaultMode" | "mode")) {
                    if let Value::String(text) = val {
                        if text.len() > 1
                            && text.starts_with('0')
                            && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
                        {
                            if let Ok(n) = i64::from_str_radix(text, 8) {
                                *val = Value::from(n);
                                continue;
                            }
                        }
                    }
                }
                fix_octal_modes(val);
            }
        }
        Value::Sequence(seq) => seq.iter_mut().for_each(fix_octal_modes),
        Value::Tagged(t) => fix_octal_modes(&mut t.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes_become_numbers() {
        let mut v: Value = serde_yaml::from_str("defaultMode: 0644\nother: 0644\n").unwrap();
        fix_octal_modes(&mut v);
        assert_eq!(v.get("defaultMode"), Some(&Value::from(420)));
        assert_eq!(v.get("other"), Some(&Value::String("0644".into())));
    }

    #[test]
    fn split_keeps_every_byte() {
        for input in [
            "",
            "a: 1\n",
            "---\na: 1\n---\nb: 2",
            "# c\n---\n---\na: 1\n--- # x\nb: 2\n...\n",
            "--- {a: 1}\n---\n",
        ] {
            let docs = split_documents(input);
            let joined: String = docs
                .iter()
                .map(|d| format!("{}{}", &input[d.separator.clone()], &input[d.body.clone()]))
                .collect();
            assert_eq!(joined, input);
        }
    }
}
