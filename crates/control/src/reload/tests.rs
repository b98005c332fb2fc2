use super::watch::{changes_content, settle};
use super::*;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;
use pinproxy_upstream::Options;

/// A reloader whose loads of a file containing `# slow` wait until the
/// test releases them.
struct HeldBack {
    reloader: Arc<Reloader>,
    release: std::sync::mpsc::Sender<()>,
    /// A slow load has begun.
    entered: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// Loads started.
    loads: Arc<AtomicU64>,
}

fn held_back(path: &Path) -> HeldBack {
    let now = time::OffsetDateTime::now_utc();
    let parse = move |text: &str| policy::parse(text.as_bytes(), Path::new("."), now);
    let telemetry = Telemetry::new(Metrics::new());
    let shared = Shared::new(Arc::new(telemetry.clone()), Options::default(), Vec::new());
    let first = parse("version: 1\nhosts: {}\n").unwrap();
    let (_, publisher) = Live::new(
        Snapshot::build(first, LogListInForce::builtin(), 1, &shared).unwrap(),
        &telemetry,
    );
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let (enter, entered) = tokio::sync::mpsc::unbounded_channel();
    let mut reloader = Reloader::new(publisher, shared, path.to_path_buf(), 1 << 20);
    let loads = Arc::new(AtomicU64::new(0));
    let counter = loads.clone();
    Arc::get_mut(&mut reloader).unwrap().load = Arc::new(move |path: &Path, _| {
        counter.fetch_add(1, Ordering::AcqRel);
        let text = std::fs::read_to_string(path).unwrap();
        if text.contains("# slow") {
            let _ = enter.send(());
            let _ = released.lock().unwrap().recv();
        }
        parse(&text).map_err(|problems| policy::Error::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    });
    HeldBack {
        reloader,
        release,
        entered,
        loads,
    }
}

/// A file written while an older one is still loading applies without
/// waiting for it; the older result, coming back later, is dropped.
#[tokio::test]
async fn a_newer_file_supersedes_a_load_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins.yaml");
    let HeldBack {
        reloader,
        release,
        mut entered,
        ..
    } = held_back(&path);
    let unlisted = |r: &Reloader| r.live().load().policy.defaults.unlisted;
    std::fs::write(
        &path,
        "version: 1\ndefaults: {unlisted: allow}\nhosts: {}\n# slow\n",
    )
    .unwrap();
    let older = tokio::spawn({
        let reloader = reloader.clone();
        async move { reloader.reload().await }
    });
    entered.recv().await.unwrap();
    std::fs::write(
        &path,
        "version: 1\ndefaults: {unlisted: deny}\nhosts: {}\n# newer\n",
    )
    .unwrap();
    assert_eq!(reloader.reload().await.unwrap(), Reloaded::Swapped(2));
    release.send(()).unwrap();
    assert_eq!(older.await.unwrap().unwrap(), Reloaded::Superseded);
    assert_eq!(reloader.live().load().generation, 2);
    assert_eq!(
        unlisted(&reloader),
        Unlisted::Deny,
        "the older file was published"
    );
}

/// With two loads in flight, a third request waits for a slot — and
/// skips its load when a fourth came meanwhile: memory stays bounded
/// and the newest file is still the one read.
#[tokio::test]
async fn at_most_two_loads_run_and_a_superseded_waiting_one_skips_its_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins.yaml");
    let HeldBack {
        reloader,
        release,
        mut entered,
        loads,
    } = held_back(&path);
    std::fs::write(&path, "version: 1\nhosts: {}\n# slow\n").unwrap();
    let spawn = || {
        let reloader = reloader.clone();
        tokio::spawn(async move { reloader.reload().await.unwrap() })
    };
    let (a, b) = (spawn(), spawn());
    entered.recv().await.unwrap();
    entered.recv().await.unwrap();
    let (c, d) = (spawn(), spawn());
    while reloader.requested.load(Ordering::Acquire) < 4 {
        tokio::task::yield_now().await;
    }
    assert!(!c.is_finished() && !d.is_finished());
    let newest = "version: 1\ndefaults: {unlisted: allow}\nhosts: {}\n";
    std::fs::write(&path, newest).unwrap();
    release.send(()).unwrap();
    release.send(()).unwrap();
    // The two slow loads end in either order, before or after the
    // newest is judged; whichever way, the newest file is in force.
    let (_, _) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(c.await.unwrap(), Reloaded::Superseded);
    assert!(matches!(d.await.unwrap(), Reloaded::Swapped(_)));
    let live = reloader.live().load();
    assert_eq!(live.policy.defaults.unlisted, Unlisted::Allow);
    assert_eq!(
        loads.load(Ordering::Acquire),
        3,
        "a superseded request loaded"
    );
}

/// In virtual time: a helper that rewrites a certificate and, later,
/// its key in place holds the reload back until both stopped changing.
#[tokio::test(start_paused = true)]
async fn settle_waits_for_every_file_the_pinset_names() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, "old cert").unwrap();
    std::fs::write(&key, "old key").unwrap();
    let writer = {
        let (cert, key) = (cert.clone(), key.clone());
        tokio::spawn(async move {
            // Two thirds of a debounce apart, straddling the first
            // re-read: settling on one file would stop between them.
            tokio::time::sleep(DEBOUNCE * 2 / 3).await;
            std::fs::write(&cert, "new cert").unwrap();
            tokio::time::sleep(DEBOUNCE * 2 / 3).await;
            std::fs::write(&key, "new key").unwrap();
        })
    };
    let start = tokio::time::Instant::now();
    settle(&[cert, key], 1 << 20).await;
    assert!(writer.is_finished(), "settled between the two writes");
    assert!(start.elapsed() >= DEBOUNCE * 3, "{:?}", start.elapsed());
}

/// In virtual time: an in-place writer that keeps writing holds the
/// reload back until two reads a debounce apart agree.
#[tokio::test(start_paused = true)]
async fn settle_waits_for_a_writer_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins.yaml");
    std::fs::write(&path, "0").unwrap();
    let writer = {
        let path = path.clone();
        tokio::spawn(async move {
            // Every third of a debounce, off the reader's ticks.
            tokio::time::sleep(DEBOUNCE / 6).await;
            for i in 1..=15 {
                std::fs::write(&path, i.to_string()).unwrap();
                tokio::time::sleep(DEBOUNCE / 3).await;
            }
        })
    };
    let start = tokio::time::Instant::now();
    settle(std::slice::from_ref(&path), 1 << 20).await;
    let waited = start.elapsed();
    assert!(writer.is_finished(), "settled while the writer was writing");
    assert!(
        waited >= DEBOUNCE * 5 && waited <= DEBOUNCE * 8,
        "settled after {waited:?}"
    );
}

/// The watcher's reloads: a bad version is loaded, counted and logged
/// once however many events arrive while it stays bad; the version in
/// force is never parsed again; SIGHUP always loads.
#[tokio::test]
async fn a_bad_version_fails_once_and_is_retried_only_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pins.yaml");
    let HeldBack {
        reloader, loads, ..
    } = held_back(&path);
    let failures = || {
        reloader
            .publisher
            .metrics()
            .config_reloads
            .with_label_values(&[ReloadResult::Failure.as_str()])
            .get()
    };
    let loaded = || loads.load(Ordering::Acquire);
    let good = "version: 1\ndefaults: {unlisted: allow}\nhosts: {}\n";
    std::fs::write(&path, good).unwrap();
    assert_eq!(
        reloader.reload_changed().await.unwrap(),
        Reloaded::Swapped(2)
    );
    assert_eq!(
        reloader.reload_changed().await.unwrap(),
        Reloaded::Unchanged(2)
    );
    assert_eq!(loaded(), 1, "the version in force was parsed again");

    std::fs::write(&path, "version: 1\nhosts: [\n").unwrap();
    assert!(reloader.reload_changed().await.is_err());
    for _ in 0..5 {
        assert_eq!(
            reloader.reload_changed().await.unwrap(),
            Reloaded::StillInvalid
        );
    }
    // The same bad bytes written again: the same version.
    std::fs::write(&path, "version: 1\nhosts: [\n").unwrap();
    assert_eq!(
        reloader.reload_changed().await.unwrap(),
        Reloaded::StillInvalid
    );
    assert_eq!((loaded(), failures()), (2, 1));

    std::fs::write(&path, "version: 2\nhosts: {}\n").unwrap();
    assert!(reloader.reload_changed().await.is_err());
    assert_eq!((loaded(), failures()), (3, 2), "a new bad version counts");
    // SIGHUP asks explicitly: it loads and counts.
    assert!(reloader.reload().await.is_err());
    assert_eq!((loaded(), failures()), (4, 3));

    // Back to the version in force: loaded (it says it recovered), and
    // after that skipped again.
    std::fs::write(&path, good).unwrap();
    assert_eq!(
        reloader.reload_changed().await.unwrap(),
        Reloaded::Unchanged(2)
    );
    assert_eq!(
        reloader.reload_changed().await.unwrap(),
        Reloaded::Unchanged(2)
    );
    assert_eq!((loaded(), failures()), (5, 3));
    assert_eq!(reloader.failing.load(Ordering::Acquire), 0);
}

#[test]
fn only_events_that_can_change_content_wake_the_watcher() {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
        RenameMode,
    };
    use notify::EventKind as K;
    for reading in [
        K::Access(AccessKind::Open(AccessMode::Any)),
        K::Access(AccessKind::Read),
        K::Access(AccessKind::Close(AccessMode::Read)),
        K::Access(AccessKind::Any),
    ] {
        assert_eq!(changes_content(&reading), None, "{reading:?}");
    }
    for in_place in [
        K::Access(AccessKind::Close(AccessMode::Write)),
        K::Modify(ModifyKind::Data(DataChange::Content)),
        K::Modify(ModifyKind::Any),
    ] {
        assert_eq!(changes_content(&in_place), Some(true), "{in_place:?}");
    }
    for swap in [
        K::Create(CreateKind::Any),
        K::Remove(RemoveKind::Any),
        K::Modify(ModifyKind::Name(RenameMode::Both)),
        K::Modify(ModifyKind::Metadata(MetadataKind::Any)),
    ] {
        assert_eq!(changes_content(&swap), Some(false), "{swap:?}");
    }
}
