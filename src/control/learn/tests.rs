use super::*;

fn pin(n: u8) -> Pin {
    Pin::from_bytes([n; 32])
}

fn store(hosts: usize, paths: usize) -> Learned {
    Learned::new(
        Limits { hosts, paths },
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
        10,
        certs,
    );
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(1), pin(2), pin(3)],
        20,
        certs,
    );
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(4), pin(2), pin(3)],
        30,
        certs,
    );
    l.record(
        "a.test",
        443,
        "webpki",
        &[pin(5), pin(2), pin(3)],
        40,
        certs,
    );
    l.record("b.test", 8443, "webpki", &[pin(1)], 10, certs);
    l.record("c.test", 443, "webpki", &[pin(1)], 10, certs);
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
    let l = store(8, 8);
    l.record("a.test", 443, "webpki", &[pin(1), pin(2)], 10, Vec::new);
    assert!(l.take_dirty());
    assert!(!l.take_dirty());
    write(&path, &l.doc(true)).unwrap();
    let restored = store(8, 8);
    restored.record("b.test", 443, "webpki", &[pin(3), pin(4)], 50, Vec::new);
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
    l.record("a.test", 443, "webpki", &[pin(1)], 1, Vec::new);
    tx.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(read(&path).unwrap().unwrap().hosts.len(), 1);
}
