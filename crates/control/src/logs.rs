//! Log lines that cannot flood: [`LogLimiter`] caps lines per key (keys
//! may come from clients), and [`Json`] keeps a structured field
//! structured in JSON logs. Used by verdicts' telemetry, failure reports
//! and the proxy's refusals alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A log field whose value is JSON: the JSON log format embeds it as JSON
/// (an array stays an array); text logs show the JSON text.
pub struct Json<'a, T: serde::Serialize>(pub &'a T);

impl<T: serde::Serialize> std::fmt::Display for Json<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("null"),
        }
    }
}

/// The most keys a [`LogLimiter`] tracks.
pub const MAX_KEYS: usize = 1024;

/// At most `burst` log lines per key (a host label, or host and reason)
/// per `window`; returns how many were suppressed since the last one
/// allowed. Keys may come from clients (requested hosts), so at most
/// [`MAX_KEYS`] are tracked; past that, unknown keys share one budget.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<HashMap<String, (Instant, u32, u64)>>,
}

impl LogLimiter {
    pub fn new(window: Duration, burst: u32) -> Arc<Self> {
        Arc::new(Self {
            window,
            burst,
            state: Mutex::new(HashMap::new()),
        })
    }

    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() >= MAX_KEYS && !state.contains_key(key) {
            // Forget what is quiet before pooling the rest.
            state.retain(|_, slot| now.duration_since(slot.0) < self.window);
        }
        let key = if state.len() >= MAX_KEYS && !state.contains_key(key) {
            "\0overflow"
        } else {
            key
        };
        let slot = state.entry(key.to_string()).or_insert((now, 0, 0));
        if now.duration_since(slot.0) >= self.window {
            *slot = (now, 0, slot.2);
        }
        if slot.1 < self.burst {
            slot.1 += 1;
            let suppressed = std::mem::take(&mut slot.2);
            Some(suppressed)
        } else {
            slot.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_caps_per_host() {
        let l = LogLimiter::new(Duration::from_secs(3600), 2);
        assert_eq!(l.allow("a"), Some(0));
        assert_eq!(l.allow("a"), Some(0));
        assert_eq!(l.allow("a"), None);
        assert_eq!(l.allow("b"), Some(0));
        // Client-chosen keys can't grow it without bound.
        for i in 0..(MAX_KEYS * 3) {
            l.allow(&format!("h{i}"));
        }
        assert!(l.state.lock().unwrap().len() <= MAX_KEYS + 1);
    }
}
