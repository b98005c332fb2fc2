//! Key continuity: per upstream host, the keys its validated path carried
//! at each position (leaf, intermediates, trust anchor) in the previous
//! handshake. A handshake that brings another key at a position is a
//! change — `pinproxy_upstream_chain_changes_total{host,position}` counts
//! it and `/pins` shows when and from what to what. A CA move (a new
//! intermediate or anchor) is visible here before any pin fails.
//!
//! Keyed by the name dialed, not the entry: a `*.` entry covers names
//! whose chains differ, and comparing them with each other would count
//! changes that never happened. The metric is labelled by entry (or
//! `unlisted`), so its cardinality stays bounded by the file; how many
//! names are remembered is bounded here ([`Limits`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use pinproxy_policy::pin::Pin;
use pinproxy_reason::Position;

/// How many host names are remembered; past that, the one seen least
/// recently (of the same kind) is forgotten.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Names dialed under a pinset entry (more than the entries: `*.`).
    pub listed: usize,
    /// Unlisted names: the client chooses them, so fewer.
    pub unlisted: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            listed: 4096,
            unlisted: 256,
        }
    }
}

/// The last change at one position, as `/pins` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// RFC 3339.
    pub at: String,
    /// The keys before and after (one for leaf and anchor; the
    /// intermediates in path order).
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// One host's history, as `/pins` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct History {
    /// The entry the host was last dialed under, or `unlisted`.
    pub entry: String,
    pub first_seen: String,
    pub last_seen: String,
    /// The validated path last seen, leaf first.
    pub path: Vec<String>,
    pub leaf: Option<Change>,
    pub intermediate: Option<Change>,
    pub anchor: Option<Change>,
}

/// A change at one position: when (Unix time), from which keys, to which.
type Moved = (i64, Vec<Pin>, Vec<Pin>);

#[derive(Debug)]
struct Record {
    entry: String,
    unlisted: bool,
    first_seen: i64,
    last_seen: i64,
    /// Recency, for eviction.
    tick: u64,
    path: Vec<Pin>,
    changes: [Option<Moved>; 3],
}

#[derive(Debug, Default)]
struct State {
    hosts: HashMap<String, Record>,
    tick: u64,
    unlisted: usize,
}

#[derive(Debug, Default)]
pub struct Continuity {
    limits: Limits,
    state: Mutex<State>,
}

// === impl Continuity ===

impl Continuity {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::default(),
        }
    }

    /// Records the validated `path` (leaf first, anchor last; the leaf
    /// alone under pin-only) of a handshake with `host` under `entry` at
    /// `now` (Unix time); returns the positions whose keys changed since
    /// the host's previous handshake (none the first time).
    pub fn observe(&self, entry: &str, host: &str, path: &[Pin], now: i64) -> Vec<Position> {
        if path.is_empty() {
            return Vec::new();
        }
        let unlisted = entry == "unlisted";
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.tick += 1;
        let tick = state.tick;
        if let Some(r) = state.hosts.get_mut(host) {
            r.last_seen = now;
            r.tick = tick;
            if r.entry != entry {
                r.entry = entry.to_string();
            }
            if r.path == path {
                return Vec::new();
            }
            let before = split(&r.path);
            let after = split(path);
            let mut changed = Vec::new();
            for (i, position) in Position::ALL.iter().enumerate() {
                if before[i] != after[i] {
                    r.changes[i] = Some((now, before[i].to_vec(), after[i].to_vec()));
                    changed.push(*position);
                }
            }
            r.path = path.to_vec();
            return changed;
        }
        self.make_room(&mut state, unlisted);
        state.unlisted += usize::from(unlisted);
        state.hosts.insert(
            host.to_string(),
            Record {
                entry: entry.to_string(),
                unlisted,
                first_seen: now,
                last_seen: now,
                tick,
                path: path.to_vec(),
                changes: [None, None, None],
            },
        );
        Vec::new()
    }

    /// Forgets the least recently seen host of the kind about to be added
    /// when that kind is at its limit.
    fn make_room(&self, state: &mut State, unlisted: bool) {
        let (limit, count) = if unlisted {
            (self.limits.unlisted, state.unlisted)
        } else {
            (
                self.limits.listed,
                state.hosts.len().saturating_sub(state.unlisted),
            )
        };
        if count < limit.max(1) {
            return;
        }
        let oldest = state
            .hosts
            .iter()
            .filter(|(_, r)| r.unlisted == unlisted)
            .min_by_key(|(_, r)| r.tick)
            .map(|(h, _)| h.clone());
        if let Some(h) = oldest {
            state.hosts.remove(&h);
            state.unlisted -= usize::from(unlisted);
        }
    }

    /// Every host last dialed under `entry` (`unlisted` for unlisted hosts).
    pub fn under(&self, entry: &str) -> BTreeMap<String, History> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .hosts
            .iter()
            .filter(|(_, r)| r.entry == entry)
            .map(|(h, r)| (h.clone(), history(r)))
            .collect()
    }
}

/// A path's keys by position: leaf, intermediates, anchor.
fn split(path: &[Pin]) -> [&[Pin]; 3] {
    match path {
        [] => [&[], &[], &[]],
        [leaf] => [std::slice::from_ref(leaf), &[], &[]],
        [leaf, middle @ .., anchor] => [
            std::slice::from_ref(leaf),
            middle,
            std::slice::from_ref(anchor),
        ],
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn strings(pins: &[Pin]) -> Vec<String> {
    pins.iter().map(Pin::to_string).collect()
}

fn history(r: &Record) -> History {
    let change = |i: usize| {
        r.changes[i].as_ref().map(|(at, from, to)| Change {
            at: rfc3339(*at),
            from: strings(from),
            to: strings(to),
        })
    };
    History {
        entry: r.entry.clone(),
        first_seen: rfc3339(r.first_seen),
        last_seen: rfc3339(r.last_seen),
        path: strings(&r.path),
        leaf: change(0),
        intermediate: change(1),
        anchor: change(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(n: u8) -> Pin {
        Pin::from_bytes([n; 32])
    }

    #[test]
    fn counts_each_position_that_moved_and_remembers_from_what_to_what() {
        let c = Continuity::default();
        assert!(c
            .observe("a.test", "a.test", &[pin(1), pin(2), pin(3)], 10)
            .is_empty());
        assert!(c
            .observe("a.test", "a.test", &[pin(1), pin(2), pin(3)], 11)
            .is_empty());
        // Leaf rotation.
        assert_eq!(
            c.observe("a.test", "a.test", &[pin(4), pin(2), pin(3)], 12),
            [Position::Leaf]
        );
        // New intermediate under the same root.
        assert_eq!(
            c.observe("a.test", "a.test", &[pin(4), pin(5), pin(3)], 13),
            [Position::Intermediate]
        );
        // Another CA altogether.
        assert_eq!(
            c.observe("a.test", "a.test", &[pin(6), pin(7), pin(8), pin(9)], 14),
            Position::ALL
        );
        let h = &c.under("a.test")["a.test"];
        let leaf = h.leaf.as_ref().unwrap();
        assert_eq!(leaf.from, [pin(4).to_string()]);
        assert_eq!(leaf.to, [pin(6).to_string()]);
        let int = h.intermediate.as_ref().unwrap();
        assert_eq!(int.to, [pin(7).to_string(), pin(8).to_string()]);
        assert_eq!(int.at, "1970-01-01T00:00:14Z");
        assert_eq!(h.first_seen, "1970-01-01T00:00:10Z");
    }

    #[test]
    fn names_under_one_wildcard_are_compared_with_themselves_only() {
        let c = Continuity::default();
        c.observe("*.x.test", "a.x.test", &[pin(1), pin(2), pin(3)], 1);
        assert!(c
            .observe("*.x.test", "b.x.test", &[pin(4), pin(5), pin(6)], 2)
            .is_empty());
        assert_eq!(c.under("*.x.test").len(), 2);
    }

    #[test]
    fn unlisted_names_are_bounded_and_the_oldest_goes_first() {
        let c = Continuity::new(Limits {
            listed: 2,
            unlisted: 3,
        });
        for i in 0..10u8 {
            c.observe("unlisted", &format!("h{i}.test"), &[pin(i), pin(100)], 1);
        }
        c.observe("a.test", "a.test", &[pin(1)], 1);
        c.observe("b.test", "b.test", &[pin(1)], 1);
        let unlisted = c.under("unlisted");
        assert_eq!(
            unlisted.keys().collect::<Vec<_>>(),
            ["h7.test", "h8.test", "h9.test"]
        );
        // Listed names have their own budget.
        assert_eq!(c.under("a.test").len() + c.under("b.test").len(), 2);
        c.observe("c.test", "c.test", &[pin(1)], 1);
        assert!(c.under("a.test").is_empty(), "the oldest listed name went");
        assert_eq!(c.under("unlisted").len(), 3);
    }
}
