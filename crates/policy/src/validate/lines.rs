//! Where each key of a block-style pinset is, found in one pass over the
//! text: the YAML parser gives no positions for values it accepted.

use std::collections::{HashMap, VecDeque};

/// Lines of one host entry's fields, by field name.
type FieldLines = HashMap<String, usize>;

/// Lines (1-based) of the keys of a block-style pinset, found in one pass:
/// top-level keys, `defaults:` fields, and per host key its line and the
/// first line of each of its fields. Flow-style YAML (`{…}` on one line)
/// simply has fewer entries; problems then point at the nearest known line.
#[derive(Default)]
pub(super) struct LineIndex {
    top: HashMap<String, usize>,
    defaults: HashMap<String, usize>,
    /// Per key as written: each occurrence (duplicates are reported at
    /// their own line), in file order.
    hosts: HashMap<String, VecDeque<(usize, FieldLines)>>,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> Self {
        let mut index = Self::default();
        let mut section: Option<String> = None;
        let mut host_indent: Option<usize> = None;
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = raw.len() - trimmed.len();
            let Some(key) = key_of(trimmed) else {
                continue;
            };
            if indent == 0 {
                index.top.entry(key.clone()).or_insert(line);
                section = Some(key);
                host_indent = None;
                current = None;
                continue;
            }
            match section.as_deref() {
                Some("defaults") => {
                    index.defaults.entry(key).or_insert(line);
                }
                Some("hosts") => {
                    let at = *host_indent.get_or_insert(indent);
                    if indent == at {
                        index
                            .hosts
                            .entry(key.clone())
                            .or_default()
                            .push_back((line, HashMap::new()));
                        current = Some(key);
                    } else if indent > at {
                        if let Some(fields) = current
                            .as_ref()
                            .and_then(|c| index.hosts.get_mut(c))
                            .and_then(|occ| occ.back_mut())
                        {
                            fields.1.entry(key).or_insert(line);
                        }
                    }
                }
                _ => {}
            }
        }
        index
    }

    pub(super) fn top(&self, key: &str) -> Option<usize> {
        self.top.get(key).copied()
    }

    pub(super) fn default_field(&self, key: &str) -> Option<usize> {
        self.defaults.get(key).copied().or(self.top("defaults"))
    }

    /// The next occurrence of host `key`: its line and its fields' lines.
    pub(super) fn host(&mut self, key: &str) -> (Option<usize>, HashMap<String, usize>) {
        match self.hosts.get_mut(key).and_then(VecDeque::pop_front) {
            Some((line, fields)) => (Some(line), fields),
            None => (None, HashMap::new()),
        }
    }
}

/// The key of a `key: value` (or `- key: value`) line, unquoted.
pub(super) fn key_of(line: &str) -> Option<String> {
    let line = line.strip_prefix("- ").unwrap_or(line);
    if let Some(q) = line.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let rest = &line[1..];
        let end = rest.find(q)?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_string());
    }
    let end = line.find(':')?;
    let key = line[..end].trim_end();
    (!key.is_empty() && !key.contains(['{', '[', ' '])).then(|| key.to_string())
}
