//! serde stops at the first unknown field (`deny_unknown_fields`), but
//! `check` promises every problem. An unknown key written in block style
//! on its own line is blanked out — with everything indented under it —
//! keeping every line number, and the text is parsed again, so the rest of
//! the file is still validated. Anything else (a type error, an unknown key
//! inside a flow mapping or a list item) ends the search: that error is
//! the last problem reported.

use std::borrow::Cow;

use super::super::wire::FileWire;

/// At most this many unknown keys are blanked out: each is another parse
/// of the whole text (the reloader and the webhook use this loader too),
/// so a file full of them costs at most 9 parses.
const MAX_PRUNED: usize = 8;

/// What the parser made of `text` after blanking out unknown keys: the
/// wire shape (or the error that ended the search), the unknown-key
/// errors seen on the way, and the text that was parsed last.
pub(super) struct Pruned<'a> {
    pub parsed: Result<FileWire, serde_yaml::Error>,
    pub unknown: Vec<serde_yaml::Error>,
    pub text: Cow<'a, str>,
}

pub(super) fn parse(text: &str) -> Pruned<'_> {
    let mut text = Cow::Borrowed(text);
    let mut unknown = Vec::new();
    loop {
        let e = match serde_yaml::from_str::<FileWire>(&text) {
            Ok(wire) => {
                return Pruned {
                    parsed: Ok(wire),
                    unknown,
                    text,
                }
            }
            Err(e) => e,
        };
        // Every text the parser sees passes the shape check first: blanking
        // a line can end a quoted scalar early and turn its contents into
        // structure (an anchor, a deep nesting) the check never saw.
        let blanked = (unknown.len() < MAX_PRUNED)
            .then(|| blank_unknown_key(&text, &e))
            .flatten()
            .filter(|next| super::shape::check(next).is_ok());
        match blanked {
            Some(next) => {
                unknown.push(e);
                text = Cow::Owned(next);
            }
            None => {
                return Pruned {
                    parsed: Err(e),
                    unknown,
                    text,
                }
            }
        }
    }
}

/// `text` with the unknown key `e` names blanked out, if `e` is an
/// unknown field whose key starts its own line in block style.
fn blank_unknown_key(text: &str, e: &serde_yaml::Error) -> Option<String> {
    let message = e.to_string();
    let field = message.split_once("unknown field `")?.1.split_once('`')?.0;
    let at = e.location()?;
    let lines: Vec<&str> = text.split('\n').collect();
    let index = at.line().checked_sub(1)?;
    let indent = at.column().checked_sub(1)?;
    let line = lines.get(index)?;
    let (lead, rest) = (line.get(..indent)?, line.get(indent..)?);
    if !lead.bytes().all(|b| b == b' ') || !rest.starts_with(&format!("{field}:")) {
        return None;
    }
    // The key's line, then every line indented deeper (or a block list at
    // the key's own indentation), blank lines and comments among them.
    let mut end = index + 1;
    while let Some(l) = lines.get(end) {
        let trimmed = l.trim_start_matches(' ');
        let depth = l.len() - trimmed.len();
        let inside = trimmed.is_empty()
            || trimmed == "\r"
            || trimmed.starts_with('#')
            || depth > indent
            || (depth == indent && (trimmed == "-" || trimmed.starts_with("- ")));
        if !inside {
            break;
        }
        end += 1;
    }
    let blanked: Vec<&str> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| if (index..end).contains(&i) { "" } else { l })
        .collect();
    Some(blanked.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_block_key_is_blanked_and_lines_are_kept() {
        let text = "version: 1\nhosts:\n  a.test:\n    pins: [x]\n    bogus: 1\n    mode: enforce\n  b.test:\n    pins: [y]\n    also:\n    - 1\n      # note\n    - 2\n";
        let p = parse(text);
        assert!(p.parsed.is_ok(), "{:?}", p.parsed.err());
        let found: Vec<String> = p.unknown.iter().map(|e| e.to_string()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("unknown field `bogus`"), "{found:?}");
        assert!(found[1].contains("unknown field `also`"), "{found:?}");
        assert_eq!(p.text.lines().count(), text.lines().count());
        assert_eq!(p.text.lines().nth(5), Some("    mode: enforce"));
        assert_eq!(p.text.lines().nth(4), Some(""));
        assert!(!p.text.contains("- 2"), "{}", p.text);
    }

    #[test]
    fn blanking_never_hands_the_parser_what_the_shape_check_refuses() {
        // The unknown key opens a quoted scalar that runs to the end of the
        // file (libyaml: an error there, so the shape check has nothing to
        // refuse); blanking its line would turn the rest into an anchor and
        // its aliases ("billion laughs").
        let text = "bogus: \"\nversion: 1\npassthrough: [&s 'AAAA', *s, *s, *s]\n";
        assert!(super::super::shape::check(text).is_ok());
        let p = parse(text);
        assert!(p.unknown.is_empty(), "blanked: {}", p.text);
        let e = p.parsed.err().expect("refused");
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        assert_eq!(p.text, text);
    }

    #[test]
    fn a_crlf_blank_line_stays_inside_the_unknown_block() {
        let text = "version: 1\r\nbogus:\r\n  a: 1\r\n\r\n  b: 2\r\nhosts: {}\r\n";
        let p = parse(text);
        assert!(p.parsed.is_ok(), "{:?}\n{}", p.parsed.err(), p.text);
        assert_eq!(p.unknown.len(), 1);
        assert!(!p.text.contains("b: 2"), "{}", p.text);
    }

    #[test]
    fn an_unknown_key_in_a_flow_mapping_ends_the_search() {
        let p = parse("version: 1\nhosts: {a.test: {pins: [x], bogus: 1}}\n");
        assert!(p.unknown.is_empty());
        let e = p.parsed.err().expect("refused");
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    }
}
