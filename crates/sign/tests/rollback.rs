//! Rollback across reloads and restarts: the floor in `--state-dir`, read
//! the way a restarted sidecar reads it, and what a damaged state file does.

mod support;

use std::fs;

use pinproxy_sign::{
    check, Algorithm, Floor, KeyRing, Refusal, RollbackError, Serial, Sha256, SigningKey, StateDir,
    StateError,
};
use support::{pinset, serial_of};

struct Signer {
    key: SigningKey,
    keys: KeyRing,
}

impl Signer {
    fn new() -> Self {
        let (key, _) = SigningKey::generate(Algorithm::EcdsaP256).expect("keygen");
        let keys = KeyRing::new([key.public_key().clone()]).expect("one key");
        Signer { key, keys }
    }

    fn sig(&self, pins: &[u8]) -> Vec<u8> {
        self.key.sign(pins).expect("sign").to_base64().into_bytes()
    }

    /// One reload: check against `floor`, and on success the new floor.
    fn reload(&self, pins: &[u8], floor: Option<&Floor>) -> Result<Floor, Refusal> {
        check(&self.keys, pins, Some(&self.sig(pins)), floor, serial_of).map(|a| a.floor())
    }
}

#[test]
fn reloads_only_move_the_serial_up() {
    let s = Signer::new();
    let v7 = pinset(7, "");
    let floor = s.reload(&v7, None).expect("first pinset");
    assert_eq!(floor.serial().get(), 7);

    let v6 = pinset(6, "");
    match s.reload(&v6, Some(&floor)) {
        Err(Refusal::Rollback {
            source: RollbackError::Lower { serial, in_force },
            ..
        }) => {
            assert_eq!((serial.get(), in_force.get()), (6, 7));
        }
        other => panic!("serial 6 over 7: {other:?}"),
    }
    let v7b = pinset(7, "  other.example.com:\n    mode: report\n");
    let err = s.reload(&v7b, Some(&floor)).unwrap_err();
    assert!(
        matches!(
            err,
            Refusal::Rollback {
                source: RollbackError::SameSerialDifferentContent { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.result_label(), "rollback");
    assert_eq!(
        s.reload(&v7, Some(&floor)).expect("the same file again"),
        floor
    );
    let v8 = pinset(8, "");
    assert_eq!(
        s.reload(&v8, Some(&floor)).expect("higher").serial().get(),
        8
    );
}

#[test]
fn the_floor_survives_a_restart_in_the_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    assert_eq!(state.load().expect("fresh emptyDir"), None);

    // First life: serial 7 applied and kept.
    let s = Signer::new();
    let v7 = pinset(7, "");
    let floor = s
        .reload(&v7, state.load().expect("load").as_ref())
        .expect("v7");
    state.store(&floor).expect("store");
    let text = fs::read_to_string(state.path()).expect("state file");
    assert_eq!(text, format!("7 {}\n", Sha256::of(&v7).to_hex()));
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["serial"], "no temporary file is left behind");

    // Second life: a fresh process reads the floor back.
    let restarted = StateDir::new(dir.path());
    let floor = restarted.load().expect("load").expect("a floor");
    assert_eq!(floor.serial().get(), 7);
    // Nothing is in force yet after the restart: the refusals name the
    // state directory the floor came from, not "the serial in force".
    match s.reload(&pinset(6, ""), Some(&floor)) {
        Err(Refusal::Rollback {
            source: RollbackError::LowerThanKept { serial, kept },
            ..
        }) => assert_eq!((serial.get(), kept.get()), (6, 7)),
        other => panic!("replay after restart: {other:?}"),
    }
    let err = s
        .reload(&pinset(7, "# edited\n"), Some(&floor))
        .expect_err("same serial, other bytes, after restart");
    assert!(
        matches!(
            err,
            Refusal::Rollback {
                source: RollbackError::KeptSerialDifferentContent { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("kept in --state-dir"), "{err}");
    s.reload(&v7, Some(&floor))
        .expect("the same pinset re-delivered");
    let v9 = pinset(9, "");
    let floor = s.reload(&v9, Some(&floor)).expect("v9");
    restarted.store(&floor).expect("store over the old floor");
    assert_eq!(restarted.load().expect("load"), Some(floor.kept()));
}

#[test]
fn a_corrupt_state_file_is_an_error_never_no_floor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let floor = Floor::new(Serial::new(7).expect("positive"), Sha256::of(b"v7"));
    state.store(&floor).expect("store");

    for junk in [
        &b""[..],
        b"seven\n",
        b"0\n",
        b"7 not-a-hash\n",
        &[0xff; 2000],
    ] {
        fs::write(state.path(), junk).expect("damage");
        match state.load() {
            Err(StateError::Corrupt { path, .. }) => assert_eq!(path, state.path()),
            other => panic!("{junk:?} read as {other:?}"),
        }
    }
    let err = state.load().unwrap_err().to_string();
    assert!(err.contains(&state.path().display().to_string()), "{err}");
    assert!(
        err.contains("no pinset is applied until it is repaired or deleted"),
        "{err}"
    );

    // The running process still holds its floor and writes it back whole.
    state.store(&floor).expect("store over the damaged file");
    assert_eq!(state.load().expect("load"), Some(floor.kept()));

    // An operator may set a floor by hand with the serial alone.
    fs::write(state.path(), "12\n").expect("hand-written");
    let hand = state.load().expect("load").expect("a floor");
    assert_eq!(
        hand,
        Floor::serial_only(Serial::new(12).expect("positive")).kept()
    );
}

#[test]
fn a_missing_state_dir_or_an_unwritable_state_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = StateDir::new(dir.path().join("not-mounted"));
    assert!(matches!(gone.load(), Err(StateError::Dir { .. })));
    let file = dir.path().join("a-file");
    fs::write(&file, "x").expect("file");
    assert!(matches!(
        StateDir::new(&file).load(),
        Err(StateError::NotDir { .. })
    ));

    // `serial` is a directory: the rename cannot replace it. The error
    // names the path and nothing is left behind.
    let state = StateDir::new(dir.path());
    fs::create_dir(state.path()).expect("a directory in the way");
    let floor = Floor::new(Serial::new(3).expect("positive"), Sha256::of(b"v3"));
    match state.store(&floor) {
        Err(StateError::Write { path, .. }) => assert_eq!(path, state.path()),
        other => panic!("store over a directory: {other:?}"),
    }
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
    assert!(matches!(state.load(), Err(StateError::Read { .. })));
}
