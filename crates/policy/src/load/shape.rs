//! The shape of a pinset's YAML, checked event by event before serde_yaml
//! parses the text.
//!
//! libyaml's handling of flow collections is quadratic in their depth (a
//! 400 KB file of `[` parses for minutes), and aliases can expand a small
//! file into a huge value ("billion laughs"): serde_yaml parses the whole
//! document before anything can look at it. A pinset needs neither: its
//! deepest value is a pin list inside a host entry inside `hosts:`, and an
//! anchor saves nothing an operator cannot write out. So this reads the
//! text with libyaml's own parser (libyaml-safer, a safe Rust port of the
//! libyaml serde_yaml runs) and stops at the first anchor, alias or
//! nesting deeper than [`MAX_DEPTH`], at the line and column where it is —
//! before serde_yaml is given the text at all.
//!
//! The same parser, because two readings of one text are the hole: a
//! hand-written outline of YAML's rules missed a value right after a
//! quoted key's `:` and a block scalar in a compact `- a: |` entry, and a
//! YAML 1.2 parser tried next read a leading BOM, `[?&a x]` and an empty
//! block scalar before `---` differently from libyaml — each let an alias
//! bomb or a deep nesting through. Text the parser cannot read is left to
//! serde_yaml, which stops at the same place with its own message; nothing
//! before that place was refused, so nothing dangerous precedes it.

use libyaml_safer::{EventData, Mark, Parser};

use super::Problem;

/// How deep a pinset may nest (mappings and sequences, block or flow).
/// A pinset needs four; anything near this is not a pinset.
pub(super) const MAX_DEPTH: usize = 32;

/// Why the text was refused before parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    TooDeep,
    Anchor,
    Alias,
    /// A line break YAML knows and a pinset has no use for.
    Break(&'static str),
    /// The check's parser failed on the text (a panic): not vouched for.
    Unreadable,
}

/// `Ok` if the text is shallow enough and has no anchor or alias (as far
/// as it parses: serde_yaml reports the rest).
pub(super) fn check(text: &str) -> Result<(), Problem> {
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((col, what)) = foreign_break(line) {
            let col = line[..col].chars().count();
            return Err(problem(Refusal::Break(what), i + 1, col, line));
        }
    }
    // libyaml-safer keeps libyaml's assertions as panics, and one input
    // class reaches an unported branch (`panic!("TODO…")`: a tag right
    // before `,` in a flow collection). What it cannot read to the end
    // cannot be vouched for: refused, never a crash of the reload. Two
    // more panic where the input ends without a line break (a block
    // scalar's last line, a quoted scalar's final `\`): it gets one, which
    // changes no node, anchor or depth.
    let ended: std::borrow::Cow<'_, str> = if text.ends_with('\n') {
        text.into()
    } else {
        format!("{text}\n").into()
    };
    let read = std::panic::catch_unwind(|| events(&ended))
        .unwrap_or(Err((Refusal::Unreadable, Mark::default())));
    read.map_err(|(refusal, at)| {
        let line_no = usize::try_from(at.line).unwrap_or(usize::MAX);
        let line = text.split('\n').nth(line_no).unwrap_or("");
        let mut col = usize::try_from(at.column).unwrap_or(0);
        if refusal == Refusal::Anchor {
            // The event starts at the node; its anchor is the last `&`
            // before it on the line (a tag may stand between them).
            let before: Vec<char> = line.chars().take(col).collect();
            if let Some(amp) = before.iter().rposition(|&c| c == '&') {
                col = amp;
            }
        }
        problem(refusal, line_no.saturating_add(1), col, line)
    })
}

/// The parser's events, until the first refused one or the first error.
fn events(text: &str) -> Result<(), (Refusal, Mark)> {
    let mut input = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut depth = 0usize;
    loop {
        let event = match parser.parse() {
            Ok(event) => event,
            Err(e) => return wildcard_key(text, &e).map_or(Ok(()), Err),
        };
        let at = event.start_mark;
        match event.data {
            EventData::Alias { .. } => return Err((Refusal::Alias, at)),
            EventData::Scalar {
                anchor: Some(_), ..
            } => return Err((Refusal::Anchor, at)),
            EventData::SequenceStart { anchor, .. } | EventData::MappingStart { anchor, .. } => {
                if anchor.is_some() {
                    return Err((Refusal::Anchor, at));
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err((Refusal::TooDeep, at));
                }
            }
            EventData::SequenceEnd | EventData::MappingEnd => depth = depth.saturating_sub(1),
            EventData::StreamEnd => return Ok(()),
            _ => {}
        }
    }
}

/// An unquoted wildcard host key (`*.a.test:`) is an alias to libyaml,
/// and one whose name it cannot scan: the error's line, where a node
/// starts with `*.`, gets the hint to quote it. Any other error is
/// serde_yaml's to report.
fn wildcard_key(text: &str, e: &libyaml_safer::Error) -> Option<(Refusal, Mark)> {
    let mark = e.problem_mark()?;
    let line = text.split('\n').nth(usize::try_from(mark.line).ok()?)?;
    let chars: Vec<char> = line.chars().collect();
    let column = (0..chars.len()).find(|&i| {
        chars[i..].starts_with(&['*', '.'])
            && chars[..i]
                .iter()
                .rev()
                .find(|c| **c != ' ')
                .is_none_or(|c| matches!(c, ':' | '-' | '[' | '{' | ','))
    })?;
    let mut at = mark;
    at.column = u64::try_from(column).ok()?;
    Some((Refusal::Alias, at))
}

/// The first line break inside `line` (split at `\n`, a final `\r`
/// removed) that YAML 1.1 ends a line at: a lone CR, NEL, LS or PS. YAML
/// 1.2 readers do not (a comment would run on past one of them), so a
/// pinset that holds one reads two ways to two tools. A pinset has no use
/// for them: refused, with the (0-based, byte) column.
fn foreign_break(line: &str) -> Option<(usize, &'static str)> {
    line.char_indices().find_map(|(i, c)| {
        let what = match c {
            '\r' => "a carriage return not followed by a line feed",
            '\u{85}' => "U+0085 (next line)",
            '\u{2028}' => "U+2028 (line separator)",
            '\u{2029}' => "U+2029 (paragraph separator)",
            _ => return None,
        };
        Some((i, what))
    })
}

/// The problem at `line` (1-based) and `column` (0-based, in characters)
/// of the text, whose line is `text`.
fn problem(refusal: Refusal, line: usize, column: usize, text: &str) -> Problem {
    let token: String = text
        .chars()
        .skip(column)
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
        .take(40)
        .collect();
    let token = token.trim_end_matches(':');
    let message = match refusal {
        Refusal::Break(what) => format!(
            "{what}: YAML ends a line there; a pinset's lines end with \\n (or \\r\\n) only"
        ),
        Refusal::Unreadable => "the YAML check could not read this text (its parser, \
             libyaml-safer, panicked; its own message is on stderr); a pinset \
             written as documented never does this — simplify the YAML around tags and flow \
             collections"
            .to_string(),
        Refusal::TooDeep => format!(
            "nested deeper than {MAX_DEPTH} levels (a pinset needs 4); refused before parsing"
        ),
        Refusal::Anchor => format!(
            "YAML anchor {token:?}: anchors and aliases are not allowed in a pinset; write each value out"
        ),
        Refusal::Alias if token.starts_with("*.") => format!(
            "{token:?} is read as a YAML alias: quote a wildcard host key (\"{token}\")"
        ),
        Refusal::Alias => format!(
            "YAML alias {token:?}: anchors and aliases are not allowed in a pinset; write each value out"
        ),
    };
    // A failed read has no place in the text.
    let place = refusal != Refusal::Unreadable;
    Problem {
        host: None,
        field: None,
        line: place.then_some(line),
        column: place.then_some(column + 1),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Problem {
        match check(text) {
            Ok(()) => panic!("accepted:\n{text}"),
            Err(p) => p,
        }
    }

    const PINSET: &str = "version: 1\ndefaults:\n  unlisted: deny # a comment [[[[ *x &y\n  ports: [443, 8443]\nhosts:\n  \"*.a.test\":\n    pins:\n      - sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=\n      - 'sha256/YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg='\n  b.test: {pins: [\"sha256/x\", 'it''s'], trust: \"ca [1]&*.pem\"}\n  c.test:\n    trust: ca&b*.pem\n    address: |\n      [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n      *alias &anchor\n    mode: report\n";

    #[test]
    fn a_pinset_passes_whatever_its_quotes_comments_and_scalars_hold() {
        assert_eq!(check(PINSET).map_err(|p| p.to_string()), Ok(()));
        assert_eq!(
            check(&PINSET.replace('\n', "\r\n")).map_err(|p| p.to_string()),
            Ok(())
        );
    }

    #[test]
    fn a_line_break_only_yaml_knows_is_refused_where_it_is() {
        // libyaml ends the comment at each of these, so the alias after it
        // would reach the parser as structure.
        for (brk, what) in [
            ("\r", "carriage return"),
            ("\u{85}", "U+0085"),
            ("\u{2028}", "U+2028"),
            ("\u{2029}", "U+2029"),
        ] {
            let text = format!("version: 1\n# trust{brk}x: [&s 'AAAA', *s, *s]\nhosts: {{}}\n");
            let p = refused(&text);
            assert_eq!((p.line, p.column), (Some(2), Some(8)), "{what}: {p}");
            assert!(p.message.contains(what), "{p}");
            // In a quoted value too: a pinset has no use for them.
            let p = refused(&format!("version: 1\nhosts: {{}}\nx: \"a{brk}b\"\n"));
            assert_eq!(p.line, Some(3), "{what}: {p}");
        }
        // \r\n line endings stay fine (the PINSET test above).
    }

    #[test]
    fn deep_flow_collections_are_refused_where_they_pass_the_limit() {
        let p = refused(&format!("version: 1\nhosts: {}\n", "[".repeat(400_000)));
        // Depth 1 is the top mapping; the 32nd `[` (column 39) makes 33.
        assert_eq!((p.line, p.column), (Some(2), Some(7 + MAX_DEPTH)));
        assert!(p.message.contains("nested deeper than 32"), "{p}");
        // Where the nesting closes again, at the 33rd level: 1 for the
        // top mapping, 31 more `[` are fine.
        let ok = format!("hosts: {}{}\n", "[".repeat(31), "]".repeat(31));
        check(&ok).unwrap();
        let p = refused(&format!("hosts: {}{}\n", "[".repeat(32), "]".repeat(32)));
        assert_eq!((p.line, p.column), (Some(1), Some(7 + MAX_DEPTH)), "{p}");
        let p = refused(&format!("version: 1\nhosts: {{a: {}\n", "{b: ".repeat(100)));
        assert_eq!(p.line, Some(2));
        // Flow collections may span lines.
        refused(&format!("hosts:\n{}", "  [\n".repeat(100)));
        // Within the limit: fine (the parser judges the rest).
        check(&format!("hosts: {}{}\n", "[".repeat(20), "]".repeat(20))).unwrap();
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let nested: String = (0..40).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert_eq!(refused(&nested).line, Some(MAX_DEPTH + 1));
        let p = refused(&format!("hosts:\n  {}x\n", "- ".repeat(100)));
        assert_eq!(p.line, Some(2));
        refused(&format!("hosts:\n  {}x\n", "? ".repeat(100)));
    }

    /// What got past the outline this check replaced (an attack review):
    /// an anchor right after a quoted key's `:` in a flow mapping, and
    /// structure after a block scalar in a compact `- a: |` entry, which
    /// YAML ends at the entry's indentation.
    #[test]
    fn what_got_past_the_outline_is_refused() {
        let bomb = format!(
            "version: 1\nhosts: {{\"h0\":&e {{\"pins\":[\"{}\"]}}, \"\":*e, \"\":*e}}\n",
            "A".repeat(1000)
        );
        let p = refused(&bomb);
        assert_eq!((p.line, p.column), (Some(2), Some(14)), "{p}");
        assert!(p.message.contains("anchor \"&e\""), "{p}");
        let hidden = |depth: usize| {
            format!(
                "version: 1\nhosts: {{}}\npassthrough:\n- a: |\n   x\n  b: {}{}\n  c: &anchor 1\n  d: *anchor\n",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let p = refused(&hidden(80_000));
        assert_eq!(p.line, Some(6), "{p}");
        assert!(p.message.contains("nested deeper than 32"), "{p}");
        let p = refused(&hidden(3));
        assert_eq!((p.line, p.column), (Some(7), Some(6)), "{p}");
        assert!(p.message.contains("anchor \"&anchor\""), "{p}");
    }

    /// What a YAML 1.2 parser, tried as this check, read differently from
    /// libyaml (a differential fuzz of the two): a leading BOM, `?` right
    /// before a node in a flow collection, an empty block scalar before
    /// `---`. libyaml saw anchors and aliases in each; so does the check.
    #[test]
    fn what_a_yaml_1_2_parser_read_differently_is_refused() {
        for text in [
            "\u{FEFF}[&a [lol, lol], *a]\n",
            "# c\n\u{FEFF}{\"version\": 1, \"x\": &a [lol], \"y\": *a}\n",
            "version: 1\npassthrough: [?&a lol, ?*a, ?*a]\n",
            "|\n---\nk: &a [x]\nj: [*a, *a]\n",
        ] {
            let p = refused(text);
            assert!(p.message.contains("anchor"), "{text:?}: {p}");
        }
        let deep = format!("\u{FEFF}{{{}", "\"a\":{".repeat(20).repeat(2000));
        assert!(refused(&deep).message.contains("nested deeper than 32"));
        let deep = format!("|\n---\n{}\n", "[".repeat(40_000));
        assert!(refused(&deep).message.contains("nested deeper than 32"));
    }

    /// Where the check's parser panics (libyaml-safer 0.3: a tag right
    /// before `,` in a flow collection), the text is refused, not a crash
    /// (a fuzz corpus input found it).
    #[test]
    fn where_the_checks_parser_fails_the_text_is_refused() {
        let p = refused("hosts:\n  api.test:\n    pins: [a, !tag, b]\n");
        assert!(p.message.contains("could not read"), "{p}");
        assert_eq!(p.line, None);
        // Its other panics, at the end of an input without a final line
        // break, never reach it: a pinset saved without one still loads.
        check("hosts:\n  a.test:\n    address: |\n      foo").unwrap();
        check("version: 1\nhosts: {}\nx: >\n  y").unwrap();
        check("k: \"x\\").unwrap();
    }

    /// Text libyaml cannot read is serde_yaml's to report, with its own
    /// message; the check refuses only what came before the error.
    #[test]
    fn a_syntax_error_is_left_to_the_parser_unless_something_came_first() {
        check("version: 1\nhosts:\n  a.test: b: c\n").unwrap();
        check("version: 1\nhosts: [[[\n").unwrap();
        let p = refused("version: 1\nx: &a 1\nhosts:\n  a.test: b: c\n");
        assert_eq!(p.line, Some(2), "{p}");
    }

    #[test]
    fn anchors_and_aliases_are_refused() {
        let laughs = "version: 1\nhosts:\n  a.test: &a {pins: [x]}\n  b.test: *a\n";
        let p = refused(laughs);
        assert_eq!((p.line, p.column), (Some(3), Some(11)));
        assert!(p.message.contains("anchor \"&a\""), "{p}");
        let p = refused("version: 1\nhosts:\n  b.test:\n    pins: [*a, x]\n");
        assert_eq!((p.line, p.column), (Some(4), Some(12)));
        assert!(p.message.contains("alias \"*a\""), "{p}");
        let p = refused("hosts:\n  *.a.test:\n    pins: [x]\n");
        assert!(p.message.contains("quote a wildcard host key"), "{p}");
        refused("hosts:\n  - &x a\n");
        refused("hosts: !!map &x {}\n");
    }
}
