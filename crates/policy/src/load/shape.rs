//! The shape of a pinset's YAML, checked in one linear pass before the
//! YAML parser sees the text.
//!
//! libyaml's handling of flow collections is quadratic in their depth (a
//! 400 KB file of `[` parses for minutes), and aliases can expand a small
//! file into a huge value ("billion laughs"). A pinset needs neither: its
//! deepest value is a pin list inside a host entry inside `hosts:`, and an
//! anchor saves nothing an operator cannot write out. So this refuses
//! nesting deeper than [`MAX_DEPTH`] and every anchor and alias, at the
//! line and column where they start.
//!
//! The scan is a tokenizer's outline, not a YAML parser: it follows quotes,
//! comments and block scalars well enough never to mistake their contents
//! for structure, and counts an upper bound of the nesting (block
//! indentation levels, `- `/`? ` entries and open `[`/`{`). Whatever it
//! lets through, the real parser still judges.

use super::Problem;

/// How deep a pinset may nest (block levels plus open flow collections).
/// A pinset needs six; anything near this is not a pinset.
pub(super) const MAX_DEPTH: usize = 32;

/// Why the text was refused before parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    TooDeep,
    Anchor,
    Alias,
    /// A line break libyaml knows and this scan does not split at.
    Break(&'static str),
}

/// Where the scan is, across lines.
#[derive(Default)]
struct Scan {
    /// Columns of the open block nodes (indentation and `- ` entries).
    blocks: Vec<usize>,
    /// Open `[` / `{`.
    flow: usize,
    /// Inside a quoted scalar (which may span lines): its quote.
    quote: Option<u8>,
    /// Inside a block scalar (`|`, `>`): the indentation of its parent.
    block_scalar: Option<usize>,
    /// The next non-blank character starts a node.
    node_start: bool,
}

/// `Ok` if the text is shallow enough and has no anchor or alias.
pub(super) fn check(text: &str) -> Result<(), Problem> {
    let mut scan = Scan::default();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((col, what)) = foreign_break(line) {
            return Err(problem(
                Refusal::Break(what),
                i + 1,
                col + 1,
                line.as_bytes(),
            ));
        }
        let line = line.as_bytes();
        if let Err((refusal, col)) = scan.line(line) {
            return Err(problem(refusal, i + 1, col + 1, line));
        }
    }
    Ok(())
}

/// The first line break inside `line` (split at `\n`, a final `\r`
/// removed) that libyaml would end a line at: a lone CR, NEL, LS or PS.
/// This scan splits at `\n` only, so after one of them a comment would end
/// for the parser and not for the scan — and what follows it (an anchor,
/// a deep nesting) would reach the parser unchecked. A pinset has no use
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

fn problem(refusal: Refusal, line: usize, column: usize, text: &[u8]) -> Problem {
    let token: String = String::from_utf8_lossy(&text[column - 1..])
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
        .take(40)
        .collect();
    let token = token.trim_end_matches(':');
    let message = match refusal {
        Refusal::Break(what) => format!(
            "{what}: YAML ends a line there; a pinset's lines end with \\n (or \\r\\n) only"
        ),
        Refusal::TooDeep => format!(
            "nested deeper than {MAX_DEPTH} levels (a pinset needs 6); refused before parsing"
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
    Problem {
        host: None,
        field: None,
        line: Some(line),
        column: Some(column),
        message,
    }
}

// === impl Scan ===

impl Scan {
    /// Scans one line; on refusal, what and at which (0-based) column.
    fn line(&mut self, line: &[u8]) -> Result<(), (Refusal, usize)> {
        let indent = line.iter().take_while(|&&c| c == b' ').count();
        let blank = indent == line.len() || line[indent] == b'#';
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return Ok(());
            }
            self.block_scalar = None;
        }
        let mut start = 0;
        if self.quote.is_none() && self.flow == 0 {
            if blank {
                return Ok(());
            }
            // A new block line: close the nodes it is not inside of.
            while self.blocks.last().is_some_and(|&c| c >= indent) {
                self.blocks.pop();
            }
            self.open_block(indent)?;
            self.node_start = true;
            start = indent;
        }
        self.chars(line, start, indent)
    }

    fn open_block(&mut self, col: usize) -> Result<(), (Refusal, usize)> {
        self.blocks.push(col);
        self.depth_ok(col)
    }

    fn open_flow(&mut self, col: usize) -> Result<(), (Refusal, usize)> {
        self.flow += 1;
        self.depth_ok(col)
    }

    fn depth_ok(&self, col: usize) -> Result<(), (Refusal, usize)> {
        if self.blocks.len() + self.flow > MAX_DEPTH {
            return Err((Refusal::TooDeep, col));
        }
        Ok(())
    }

    fn chars(&mut self, line: &[u8], start: usize, indent: usize) -> Result<(), (Refusal, usize)> {
        let blank_after = |i: usize| line.get(i + 1).is_none_or(|c| matches!(c, b' ' | b'\t'));
        let mut i = start;
        let mut after_space = true;
        while i < line.len() {
            let c = line[i];
            if let Some(q) = self.quote {
                match c {
                    b'\\' if q == b'"' => i += 1,
                    b'\'' if q == b'\'' && line.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if c == q => {
                        self.quote = None;
                        self.node_start = false;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            if matches!(c, b' ' | b'\t') {
                after_space = true;
                i += 1;
                continue;
            }
            if c == b'#' && after_space {
                break; // a comment runs to the end of the line
            }
            after_space = false;
            if self.node_start {
                match c {
                    b'[' | b'{' => self.open_flow(i)?,
                    b'*' => return Err((Refusal::Alias, i)),
                    b'&' => return Err((Refusal::Anchor, i)),
                    b'"' | b'\'' => self.quote = Some(c),
                    b'|' | b'>' if self.flow == 0 => {
                        self.block_scalar = Some(indent);
                        return Ok(());
                    }
                    b'-' | b'?' if self.flow == 0 && blank_after(i) => self.open_block(i + 1)?,
                    b'?' | b':' if blank_after(i) => {}
                    b'!' => {
                        // A tag: skip it; the node follows.
                        while i + 1 < line.len() && !matches!(line[i + 1], b' ' | b'\t') {
                            i += 1;
                        }
                    }
                    b']' | b'}' => self.close_flow(),
                    b',' if self.flow > 0 => {}
                    _ => self.node_start = false,
                }
            } else {
                match c {
                    b':' if blank_after(i)
                        || (self.flow > 0
                            && matches!(
                                line.get(i + 1),
                                Some(b',' | b'[' | b']' | b'{' | b'}')
                            )) =>
                    {
                        self.node_start = true
                    }
                    b',' if self.flow > 0 => self.node_start = true,
                    // Not valid YAML here, but counted: the parser may
                    // still descend into it before it gives up.
                    b'[' | b'{' if self.flow > 0 => {
                        self.open_flow(i)?;
                        self.node_start = true;
                    }
                    b']' | b'}' if self.flow > 0 => self.close_flow(),
                    _ => {}
                }
            }
            i += 1;
        }
        Ok(())
    }

    fn close_flow(&mut self) {
        self.flow = self.flow.saturating_sub(1);
        self.node_start = false;
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
        // Depth 1 is `hosts:`'s line; the 32nd `[` (column 39) makes 33.
        assert_eq!((p.line, p.column), (Some(2), Some(7 + MAX_DEPTH)));
        assert!(p.message.contains("nested deeper than 32"), "{p}");
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
