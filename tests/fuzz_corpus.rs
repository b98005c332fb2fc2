//! Replays the committed fuzz corpora (fuzz/corpus/<target>/*) through the
//! same entry points the fuzzers use — fast, on stable, in every CI run.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| f(&data));
        assert!(outcome.is_ok(), "{} panicked", path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus for {target}");
}

#[test]
fn pinset_corpus() {
    replay("pinset", pinproxy::fuzzing::pinset);
}

#[test]
fn pin_corpus() {
    replay("pin", pinproxy::fuzzing::pin);
}

#[test]
fn host_match_corpus() {
    replay("host_match", pinproxy::fuzzing::host_match);
}

#[test]
fn request_target_corpus() {
    replay("request_target", pinproxy::fuzzing::request_target);
}
