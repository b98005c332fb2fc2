//! Text inside a YAML `#` comment that stays inside it, and values written
//! so that YAML reads them back as they are.
//!
//! pinproxy writes pinsets for people to paste or apply (`suggest`, `pin
//! --connect`), with comments describing certificates: subjects and names a
//! server chose. A line break in such text would end the comment and what
//! follows would be YAML — an entry the server wrote into the operator's
//! pinset. [`escape`] is the one way such text enters a comment;
//! [`double_quoted`] writes a value the plain form cannot hold.

/// `text` safe inside a `#` comment: every character YAML (1.1 or 1.2)
/// could take for a line break (`\n`, `\r`, NEL, LS, PS), every other
/// control character, every character a YAML reader refuses anywhere in a
/// document (outside YAML 1.2's `c-printable`: the noncharacters U+FFFE and
/// U+FFFF), and the invisible ones that change how a reviewer reads a line
/// (bidi overrides and isolates, zero-width characters, BOM) are written as
/// escapes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a YAML double-quoted scalar that reads back as exactly `text`:
/// `"` and `\` escaped, and every character [`escape`] would escape written
/// as a YAML escape (`\uXXXX`, `\UXXXXXXXX`). For values pinproxy writes
/// into a snippet that the plain form could not hold (a path with ` #` or
/// `: `, a name with a quote).
pub fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if hidden(c) => match u32::from(c) {
                n @ 0..=0xffff => out.push_str(&format!("\\u{n:04X}")),
                n => out.push_str(&format!("\\U{n:08X}")),
            },
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What both [`escape`] and [`double_quoted`] write as an escape: controls
/// (line breaks among them), what a YAML reader refuses, and what a reader
/// of the text would not see.
fn hidden(c: char) -> bool {
    c.is_control() || !printable(c) || invisible(c)
}

/// YAML 1.2's `c-printable`, the characters a document may hold at all: a
/// reader stops at any other (libyaml: "control characters are not
/// allowed"), so one such character in a comment would make the whole
/// pinset unreadable.
fn printable(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..
    )
}

/// Characters that show nothing, or reorder what follows (the "Trojan
/// Source" list and Unicode's other default-ignorable format characters):
/// soft hyphen, Arabic letter mark, Mongolian vowel separator, zero-width
/// characters and marks, bidi embeddings, overrides and isolates, invisible
/// operators, deprecated format characters, BOM, interlinear annotation
/// characters and tag characters.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
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

    /// Found by `suggest`'s property test: a certificate's notAfter text
    /// holding U+FFFE made the suggested pinset unreadable ("control
    /// characters are not allowed"), though U+FFFE is no control character.
    #[test]
    fn every_character_stays_readable_yaml() {
        let all: String = (0..=0x10ffff).filter_map(char::from_u32).collect();
        let doc = format!("a: 1 # {}\nb: 2\n", escape(&all));
        let v: serde_yaml::Value =
            serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("not YAML: {e}"));
        assert_eq!(v.as_mapping().map(|m| m.len()), Some(2));
        assert_eq!(
            escape("\u{fffe}\u{ffff}\u{fffd}"),
            "\\u{fffe}\\u{ffff}\u{fffd}"
        );
    }

    #[test]
    fn double_quoted_reads_back_as_every_character() {
        let all: String = (0..=0x10ffff).filter_map(char::from_u32).collect();
        for text in [
            all.as_str(),
            "/etc/my #certs/ca: x.pem",
            "a\"b\\c",
            "",
            "true",
            "1.5",
        ] {
            let doc = format!("k: {}   # a comment\nb: 2\n", double_quoted(text));
            let v: serde_yaml::Value =
                serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("not YAML: {e}"));
            assert_eq!(v["k"].as_str(), Some(text));
            assert_eq!(v["b"].as_u64(), Some(2));
        }
        assert_eq!(
            double_quoted("a\"\u{202e}\u{1f600}"),
            "\"a\\\"\\u202E\u{1f600}\""
        );
    }

    /// Text that shows nothing or reorders what follows is shown as escapes.
    #[test]
    fn invisible_characters_are_shown() {
        assert_eq!(
            escape("a\u{ad}\u{61c}\u{180e}\u{206a}\u{fff9}\u{e0041}b"),
            "a\\u{ad}\\u{61c}\\u{180e}\\u{206a}\\u{fff9}\\u{e0041}b"
        );
    }
}
