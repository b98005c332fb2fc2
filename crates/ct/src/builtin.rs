//! The log list built into the binary, as webpki-roots builds in its
//! roots: Chrome's v3 `all_logs_list.json`, version 53.34, generated
//! 2025-05-05T12:54:12Z, byte for byte (`data/log_list.json`, sources in
//! `data/README.md`). No newer copy is distributed through a package
//! registry this project can use, so the snapshot is older than Chrome's
//! 70-day enforcement timeout: with it, `enforce` acts as `report` until an
//! operator mounts a fresh list.

use std::sync::OnceLock;

use crate::loglist::LogList;

/// The built-in list's `log_list_timestamp`.
pub const BUILTIN_TIMESTAMP: &str = "2025-05-05T12:54:12Z";
/// The built-in list's `version`.
pub const BUILTIN_VERSION: &str = "53.34";

const JSON: &str = include_str!("../data/log_list.json");

impl LogList {
    /// The built-in snapshot, parsed once.
    pub fn builtin() -> &'static LogList {
        static LIST: OnceLock<LogList> = OnceLock::new();
        LIST.get_or_init(|| {
            // The embedded file is fixed at compile time and parsed by the
            // `builtin_list_parses` test, so this cannot fail at run time.
            LogList::from_json(JSON.as_bytes()).expect("the built-in log list is valid (tested)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;

    #[test]
    fn builtin_list_parses_and_matches_its_recorded_date() {
        let list = LogList::builtin();
        assert_eq!(list.version(), Some(BUILTIN_VERSION));
        let t = Instant::parse_rfc3339(BUILTIN_TIMESTAMP).expect("constant parses");
        assert_eq!(list.timestamp(), t.as_unix());
        assert!(list.is_all_logs());
        assert_eq!(list.operators().len(), 21);
        assert_eq!(list.logs().count(), 181);
    }
}
