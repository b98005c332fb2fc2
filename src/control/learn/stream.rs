//! The learned document as a sequence of small chunks, for `GET /learned`
//! and the learn file: no answer or save ever holds the whole document in
//! one buffer, and the lock is held only while one host is copied out.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Learned;

/// Hosts serialized per chunk.
const HOSTS_PER_CHUNK: usize = 16;

/// The JSON of [`super::Doc`], a few hosts at a time: the hosts learned
/// when it was made, as they are when their turn comes.
pub struct Chunks {
    learned: Arc<Learned>,
    learning: bool,
    keys: VecDeque<(String, u16)>,
    state: Part,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Head,
    Hosts { first: bool },
    Done,
}

impl Chunks {
    pub fn new(learned: Arc<Learned>, learning: bool) -> Self {
        let keys = learned.keys().into();
        Self {
            learned,
            learning,
            keys,
            state: Part::Head,
        }
    }
}

impl Iterator for Chunks {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        match self.state {
            Part::Done => None,
            Part::Head => {
                self.state = Part::Hosts { first: true };
                Some(
                    format!("{{\"version\":1,\"learning\":{},\"hosts\":[", self.learning)
                        .into_bytes(),
                )
            }
            Part::Hosts { mut first } => {
                let mut out = Vec::new();
                let mut taken = 0;
                while taken < HOSTS_PER_CHUNK {
                    let Some(key) = self.keys.pop_front() else {
                        break;
                    };
                    // Forgotten since the keys were taken: skipped.
                    let Some(host) = self.learned.host(&key) else {
                        continue;
                    };
                    out.extend_from_slice(if first { b"\n" } else { b",\n" });
                    first = false;
                    // A LearnedHost is strings, numbers and lists: it
                    // always serializes.
                    let _ = serde_json::to_writer(&mut out, &host);
                    taken += 1;
                }
                if self.keys.is_empty() {
                    let [hosts, paths, probes] = self.learned.dropped();
                    out.extend_from_slice(
                        format!(
                            "\n],\"dropped_hosts\":{hosts},\"dropped_paths\":{paths},\"dropped_probes\":{probes}}}\n"
                        )
                        .as_bytes(),
                    );
                    self.state = Part::Done;
                } else {
                    self.state = Part::Hosts { first };
                }
                Some(out)
            }
        }
    }
}
