use super::*;

fn pin(n: u8) -> Pin {
    Pin::from_bytes([n; 32])
}

fn store(hosts: usize, paths: usize) -> Learned {
    Learned::new(
        Limits {
            hosts,
            paths,
            ..Limits::default()
        },
        prometheus::IntGauge::new("g", "g").unwrap(),
    )
}

#[test]
fn distinct_paths_are_counted_and_bounded() {
    let l = store(2, 2);
    let certs = || vec![];
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(1), pin(2), pin(3)],
        None,
        10,
        certs,
    );
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(1), pin(2), pin(3)],
        None,
        20,
        certs,
    );
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(4), pin(2), pin(3)],
        None,
        30,
        certs,
    );
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(5), pin(2), pin(3)],
        None,
        40,
        certs,
    );
    l.record("b.test", 8443, "webpki", &[pin(1)], None, 10, certs);
    l.record("c.test", 443, "webpki", &[pin(1)], None, 10, certs);
    let doc = l.doc(true);
    assert_eq!(doc.hosts.len(), 2);
    let a = &doc.hosts[0];
    assert_eq!((a.host.as_str(), a.seen, a.paths.len()), ("a.test", 4, 2));
    assert_eq!(a.paths[0].seen, 2);
    assert_eq!(a.first_seen, "1970-01-01T00:00:10Z");
    assert_eq!(a.last_seen, "1970-01-01T00:00:40Z");
    assert_eq!((doc.dropped_hosts, doc.dropped_paths), (1, 1));
    assert_eq!(l.hosts_gauge.get(), 2);
}

#[test]
fn a_learn_file_round_trips_and_memory_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("learned.json");
    assert!(read(&path).unwrap().is_none());
    let l = Arc::new(store(8, 8));
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(1), pin(2)],
        None,
        10,
        Vec::new,
    );
    assert!(l.take_dirty());
    assert!(!l.take_dirty());
    write(&path, Chunks::new(l.clone(), true), l.file_cap()).unwrap();
    let restored = store(8, 8);
    restored.record(
        "b.test",
        443,
        "webpki",
        &[pin(3), pin(4)],
        None,
        50,
        Vec::new,
    );
    restored.restore(read(&path).unwrap().unwrap());
    let doc = restored.doc(true);
    assert_eq!(doc.hosts.len(), 2);
    assert_eq!(doc.hosts[0], l.doc(true).hosts[0]);
    std::fs::write(&path, b"{not json").unwrap();
    assert!(matches!(read(&path), Err(Error::Parse { .. })));
}

#[tokio::test(start_paused = true)]
async fn probes_are_spaced_and_capped() {
    let l = store(8, 8);
    let now = tokio::time::Instant::now();
    let first = l.probe_due("a.test", 443, now);
    assert!(first.is_some());
    assert!(l.probe_due("a.test", 443, now).is_none(), "just probed");
    let held: Vec<_> = (0..10)
        .filter_map(|i| l.probe_due(&format!("h{i}.test"), 443, now))
        .collect();
    assert_eq!(held.len(), MAX_PROBES - 1, "one slot is still taken");
    drop(first);
    drop(held);
    tokio::time::advance(PROBE_EVERY).await;
    assert!(l
        .probe_due("a.test", 443, tokio::time::Instant::now())
        .is_some());
}

#[tokio::test(start_paused = true)]
async fn persist_writes_only_when_something_was_learned_and_once_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("learned.json");
    let l = Arc::new(store(8, 8));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(persist(
        l.clone(),
        path.clone(),
        Duration::from_secs(10),
        async {
            let _ = rx.await;
        },
    ));
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(!path.exists(), "nothing learned, nothing written");
    l.record("a.test", 443, "webpki", &[pin(1)], None, 1, Vec::new);
    tx.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(read(&path).unwrap().unwrap().hosts.len(), 1);
}

// === bounded in bytes (issue 21, attack 5) ===

fn big_certs(n: u8, subject_bytes: usize) -> Vec<LearnedCert> {
    (0..3)
        .map(|i| LearnedCert {
            pin: pin(n.wrapping_add(i)).to_string(),
            position: "intermediate".into(),
            subject: Some(format!("CN={}", "é".repeat(subject_bytes / 2))),
            not_after: Some("2030-01-01T00:00:00Z".into()),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_probe_schedule_is_capped_inside_its_window() {
    let l = store(8, 8);
    let now = tokio::time::Instant::now();
    // 1,000 distinct names within one window (a client naming random
    // SNIs): each gets its probe slot back at once.
    for i in 0..1000 {
        drop(l.probe_due(&format!("h{i}.test"), 443, now));
    }
    let scheduled = l.lock().probed.len();
    assert!(scheduled <= 16, "{scheduled} names remembered for 600 s");
    // Once the window has passed, new names are probed again.
    tokio::time::advance(PROBE_EVERY).await;
    assert!(l
        .probe_due("late.test", 443, tokio::time::Instant::now())
        .is_some());
}

#[test]
fn stored_strings_are_truncated() {
    let l = store(8, 8);
    // A 57 KB subject, as a hostile server can send.
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(1), pin(2), pin(3)],
        None,
        1,
        || big_certs(1, 57_000),
    );
    let doc = l.doc(true);
    for c in &doc.hosts[0].paths[0].certs {
        let s = c.subject.as_deref().unwrap();
        assert!(s.len() <= MAX_TEXT, "{} bytes kept", s.len());
        assert!(s.starts_with("CN=éé") && s.ends_with('…'), "{s}");
    }
}

#[test]
fn everything_learned_is_bounded_in_bytes() {
    let l = store(1024, 8);
    for h in 0..1024u32 {
        for p in 0..8u8 {
            l.record(
                &format!("host-{h}.example.test"),
                443,
                "webpki",
                &[pin(p), pin(100), pin(200)],
                None,
                1,
                || big_certs(p, 57_000),
            );
        }
    }
    let json = serde_json::to_vec(&l.doc(true)).unwrap();
    // The default budget (4 MiB of learned text) plus the JSON around it.
    assert!(
        json.len() <= 8 << 20,
        "/learned would be {} bytes",
        json.len()
    );
    let doc = l.doc(true);
    assert!(
        doc.dropped_hosts + doc.dropped_paths > 0,
        "the budget said no"
    );
}

#[test]
fn learned_streams_in_chunks_that_make_the_document() {
    let l = Arc::new(store(1024, 8));
    for h in 0..100 {
        l.record(
            &format!("h{h}.test"),
            443,
            "webpki",
            &[pin(1), pin(2)],
            None,
            1,
            || big_certs(1, 100),
        );
    }
    let chunks: Vec<Vec<u8>> = Chunks::new(l.clone(), true).collect();
    assert!(chunks.len() > 5, "{} chunks", chunks.len());
    let biggest = chunks.iter().map(Vec::len).max().unwrap();
    assert!(biggest < 64 * 1024, "a chunk of {biggest} bytes");
    let doc: Doc = serde_json::from_slice(&chunks.concat()).unwrap();
    assert_eq!(doc, l.doc(true));
    // Nothing learned is a document too.
    let empty = Arc::new(store(8, 8));
    let doc: Doc =
        serde_json::from_slice(&Chunks::new(empty, false).collect::<Vec<_>>().concat()).unwrap();
    assert_eq!((doc.hosts.len(), doc.learning), (0, false));
}

#[test]
fn the_learn_file_is_bounded_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("learned.json");
    let l = Arc::new(store(1024, 8));
    for h in 0..100 {
        l.record(
            &format!("h{h}.test"),
            443,
            "webpki",
            &[pin(1), pin(2)],
            None,
            1,
            Vec::new,
        );
    }
    write(&path, Chunks::new(l.clone(), true), l.file_cap()).unwrap();
    let good = std::fs::read(&path).unwrap();
    // A write over its cap is abandoned: the last file stays, no temp file.
    let err = write(&path, Chunks::new(l.clone(), true), 1000).unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1000, .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert!(!dir.path().join("learned.json.tmp").exists());
    // A file over MAX_FILE_BYTES is refused after reading that much.
    let big = dir.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    assert!(matches!(read(&big), Err(Error::TooLarge { .. })));
}

#[test]
fn a_restored_file_is_held_to_the_same_bounds() {
    let big = Arc::new(store(1024, 8));
    big.record(
        "a.test",
        443,
        "webpki",
        &[pin(1), pin(2)],
        None,
        1,
        Vec::new,
    );
    let mut doc = big.doc(true);
    doc.hosts[0].paths[0].certs = big_certs(1, 57_000);
    for h in 0..2000 {
        let mut host = doc.hosts[0].clone();
        host.host = format!("h{h}.test");
        doc.hosts.push(host);
    }
    let l = store(1024, 8);
    l.restore(doc);
    let back = l.doc(true);
    assert_eq!(back.hosts.len(), 1024);
    assert!(
        back.hosts[0].paths[0].certs[0]
            .subject
            .as_ref()
            .unwrap()
            .len()
            <= MAX_TEXT
    );
}
