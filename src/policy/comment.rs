//! Text inside a YAML `#` comment that stays inside it.
//!
//! pinproxy writes pinsets for people to paste or apply (`suggest`, `pin
//! --connect`), with comments describing certificates: subjects and names a
//! server chose. A line break in such text would end the comment and what
//! follows would be YAML — an entry the server wrote into the operator's
//! pinset. [`escape`] is the one way such text enters a comment.

/// `text` safe inside a `#` comment: every character YAML (1.1 or 1.2)
/// could take for a line break (`\n`, `\r`, NEL, LS, PS), every other
/// control character, and the invisible ones that change how a reviewer
/// reads a line (bidi overrides and isolates, zero-width characters, BOM)
/// are written as escapes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || invisible(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    out
}

fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_server_writes_leaves_the_comment() {
        let hostile =
            "CN=a\n  evil.test: {pins: [x]}\r\u{85}\u{2028}\u{2029}\u{202e}\u{feff}\u{7}\tZürich";
        let out = escape(hostile);
        assert_eq!(
            out,
            "CN=a\\n  evil.test: {pins: [x]}\\r\\u{85}\\u{2028}\\u{2029}\\u{202e}\\u{feff}\\u{7}\\tZürich"
        );
        let doc = format!("a: 1 # {out}\nb: 2\n");
        let v: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap();
        assert_eq!(v.as_mapping().unwrap().len(), 2);
    }
}
