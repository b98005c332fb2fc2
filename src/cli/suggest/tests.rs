use super::*;
use crate::control::learn::LearnedCert;

fn pin(n: u8) -> String {
    crate::policy::pin::Pin::from_bytes([n; 32]).to_string()
}

fn path(pins: &[u8]) -> LearnedPath {
    let last = pins.len() - 1;
    LearnedPath {
        pins: pins.iter().map(|n| pin(*n)).collect(),
        certs: pins
            .iter()
            .enumerate()
            .map(|(i, n)| LearnedCert {
                pin: pin(*n),
                position: match i {
                    0 => "leaf",
                    _ if i == last => "anchor",
                    _ => "intermediate",
                }
                .into(),
                subject: Some(format!("CN=cert {n}")),
                not_after: Some("2030-01-01T00:00:00Z".into()),
            })
            .collect(),
        seen: 1,
        first_seen: String::new(),
        last_seen: String::new(),
        ct: None,
    }
}

fn host(name: &str, port: u16, paths: Vec<LearnedPath>) -> LearnedHost {
    LearnedHost {
        host: name.into(),
        port,
        trust: "webpki".into(),
        seen: paths.len() as u64,
        first_seen: String::new(),
        last_seen: String::new(),
        paths,
    }
}

#[test]
fn leaves_learned_without_valid_scts_are_marked() {
    let mut a = path(&[1, 2, 3]);
    a.ct = Some("none".into());
    let mut b = path(&[4, 2, 3]);
    b.ct = Some("ok".into());
    let mut c = path(&[5, 2, 3]);
    c.ct = Some("\nhosts: {evil: 1}".into());
    let e = entry("a.test", &[&host("a.test", 443, vec![a, b, c])]).unwrap();
    let marked: Vec<&String> = e.notes.iter().filter(|n| n.contains("CT ")).collect();
    assert_eq!(marked.len(), 1, "{:?}", e.notes);
    assert!(
        marked[0].starts_with("warning: CT none: the leaf of 1 of 3 path(s) has no SCTs at all"),
        "{}",
        marked[0]
    );
    let clean = entry("b.test", &[&host("b.test", 443, vec![path(&[1, 2, 3])])]).unwrap();
    assert!(!clean.notes.iter().any(|n| n.contains("CT ")));
}

#[test]
fn keys_common_to_every_path_else_each_paths_intermediate() {
    let rotated = host("a.test", 443, vec![path(&[1, 2, 3]), path(&[4, 2, 3])]);
    let e = entry("a.test", &[&rotated]).unwrap();
    assert_eq!(e.pins, [pin(2), pin(3)]);
    assert!(!e.notes.iter().any(|n| n.starts_with("warning")));
    let two_cas = host("b.test", 443, vec![path(&[1, 2, 3]), path(&[4, 5, 6])]);
    let e = entry("b.test", &[&two_cas]).unwrap();
    assert_eq!(e.pins, [pin(2), pin(5)]);
    let once = host("c.test", 8443, vec![path(&[1, 2, 3])]);
    let e = entry("c.test", &[&once]).unwrap();
    assert!(e.notes.iter().any(|n| n.starts_with("warning")));
    assert!(e.notes.contains(&format!(
        "{}: intermediate CN=cert 2, notAfter 2030-01-01T00:00:00Z",
        pin(2)
    )));
    assert_eq!(e.ports, [8443]);
}

#[test]
fn siblings_group_only_under_a_parent_that_is_not_a_public_suffix() {
    let doc = Doc {
        version: 1,
        hosts: vec![
            host("a.shop.test", 443, vec![path(&[1, 2, 3])]),
            host("b.shop.test", 443, vec![path(&[4, 2, 3])]),
            host("c.shop.test", 443, vec![path(&[5, 6, 7])]),
            host("x.com", 443, vec![path(&[1, 2, 3])]),
            host("y.com", 443, vec![path(&[1, 2, 3])]),
        ],
        ..Doc::default()
    };
    let keys: Vec<String> = group(entries(&doc)).into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["*.shop.test", "c.shop.test", "x.com", "y.com"]);
}

#[test]
fn merge_inserts_at_the_end_of_the_hosts_block() {
    let original = "version: 1\nhosts:\n    old.test:   # keep me\n        pins: [x]\n\n# about passthrough\npassthrough: [a.svc]\n";
    let e = entry(
        "new.test",
        &[&host("new.test", 443, vec![path(&[1, 2, 3])])],
    )
    .unwrap();
    let out = merge(original, &[e], &("webpki".into(), vec![443])).unwrap();
    let (before, after) = out.split_at(out.find("    new.test:").unwrap());
    assert_eq!(
        before,
        "version: 1\nhosts:\n    old.test:   # keep me\n        pins: [x]\n"
    );
    assert!(after.ends_with("\n# about passthrough\npassthrough: [a.svc]\n"));
    assert!(merge(
        "version: 1\nhosts: {a: {}}\n",
        &[entry("n.test", &[&host("n.test", 443, vec![path(&[1, 2])])]).unwrap()],
        &("webpki".into(), vec![443])
    )
    .is_err());
}

// === the property: nothing learned writes YAML of its own ===

mod hostile {
    use super::*;
    use proptest::prelude::*;

    const HOSTS: [&str; 5] = [
        "a.example.test",
        "b.example.test",
        "api.other.test",
        "10.0.0.1",
        "2001:db8::1",
    ];

    /// Text a server could put anywhere: arbitrary bytes (as the lossy
    /// UTF-8 x509-parser makes of them), laced with every YAML line break,
    /// indicators and quotes.
    fn text() -> impl Strategy<Value = String> {
        let special = prop_oneof![
            Just('\n'),
            Just('\r'),
            Just('\u{85}'),
            Just('\u{2028}'),
            Just('\u{2029}'),
            Just('\u{feff}'),
            // Refused by YAML readers anywhere, comments included: found
            // by this test on a CI run (a notAfter text holding it).
            Just('\u{fffe}'),
            Just('#'),
            Just(':'),
            Just('"'),
            Just('\''),
            Just('{'),
            Just('-'),
            Just(' '),
            any::<char>(),
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..120)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            proptest::collection::vec(special, 0..120).prop_map(|c| c.into_iter().collect()),
            Just("x\n  \"api.victim.test\": {pins: [sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=]}\n  #".to_string()),
        ]
    }

    fn learned_path() -> impl Strategy<Value = LearnedPath> {
        proptest::collection::vec((0u8..8, text(), text(), proptest::option::of(text())), 2..5)
            .prop_map(|certs| LearnedPath {
                pins: certs.iter().map(|c| pin(c.0)).collect(),
                certs: certs
                    .into_iter()
                    .map(|(n, subject, position, not_after)| LearnedCert {
                        pin: pin(n),
                        position,
                        subject: Some(subject),
                        not_after,
                    })
                    .collect(),
                seen: 1,
                first_seen: String::new(),
                last_seen: String::new(),
                ct: None,
            })
    }

    fn learned_host() -> impl Strategy<Value = LearnedHost> {
        (
            0..HOSTS.len(),
            prop_oneof![Just(443u16), 1u16..],
            proptest::collection::vec(learned_path(), 1..3),
        )
            .prop_map(|(h, port, paths)| host(HOSTS[h], port, paths))
    }

    /// The hosts a pinset text holds and each one's pins, as YAML reads it.
    fn parsed(text: &str) -> BTreeMap<String, Vec<String>> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"));
        let hosts = doc["hosts"].as_mapping().expect("a hosts mapping");
        hosts
            .iter()
            .map(|(k, v)| {
                let pins = v["pins"]
                    .as_sequence()
                    .expect("pins")
                    .iter()
                    .map(|p| p.as_str().expect("a pin string").to_string())
                    .collect();
                (k.as_str().expect("a string key").to_string(), pins)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn output_holds_exactly_the_learned_hosts_and_their_pins(
            hosts in proptest::collection::vec(learned_host(), 1..6),
            source in text(),
        ) {
            let doc = Doc { version: 1, hosts, ..Doc::default() };
            let want: BTreeMap<String, Vec<String>> = entries(&doc)
                .into_iter()
                .map(|e| (e.key, e.pins))
                .collect();
            let learned: BTreeSet<&str> = doc.hosts.iter().map(|h| h.host.as_str()).collect();
            prop_assert_eq!(want.keys().map(String::as_str).collect::<BTreeSet<_>>(), learned);

            let text = fresh(&doc, &source, &entries(&doc)).unwrap();
            prop_assert_eq!(&parsed(&text), &want);
            // …and the proxy's own loader agrees.
            let policy = policy::parse(text.as_bytes(), Path::new("."), time::OffsetDateTime::now_utc())
                .map_err(|p| TestCaseError::fail(format!("{p:?}\n{text}")))?;
            let names: BTreeSet<String> = policy.hosts.iter().map(|h| h.name.clone()).collect();
            prop_assert_eq!(names, want.keys().cloned().collect::<BTreeSet<_>>());

            let base = "version: 1\nhosts:\n  base.test:\n    pins: [sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=]\n";
            let merged = merge(base, &entries(&doc), &("webpki".into(), vec![443])).unwrap();
            let mut with_base = want.clone();
            with_base.insert(
                "base.test".into(),
                vec!["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()],
            );
            prop_assert_eq!(parsed(&merged), with_base);
        }
    }
}
