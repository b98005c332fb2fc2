//! Learn mode end to end: traffic to three unlisted hosts (two sharing a
//! chain) → `GET /learned` → `pinproxy suggest` (the built binary) →
//! `pinproxy check` passes → a proxy on the suggested file with
//! `unlisted: deny` lets the same traffic through with zero refusals and
//! refuses a fourth host. Plus: learned chains survive a restart through
//! `--learn-file`, unlisted tunnels are learned by a probe, and `--merge`
//! keeps an existing pinset byte-for-byte.

mod support;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::proxy::TestProxy;
use support::*;

const SHARED_A: &str = "a.shop.test";
const SHARED_B: &str = "b.shop.test";
const OTHER: &str = "c.other.test";
const FOURTH: &str = "d.shop.test";

struct World {
    /// Serves a.shop.test and b.shop.test with one chain.
    shop: Upstream,
    /// Serves c.other.test under another CA.
    other: Upstream,
    shop_pki: Pki,
    other_pki: Pki,
    /// Holds the CA bundle (named by absolute path, so a suggested entry's
    /// `trust:` outlives the learning proxy's directory) and learn files.
    keep: tempfile::TempDir,
}

async fn world() -> World {
    let shop_pki = Pki::new(&[SHARED_A, SHARED_B]);
    let other_root = root("Other Root");
    let other_int = intermediate("Other Intermediate", &other_root, None);
    let other_leaf = leaf(&[OTHER], &other_int);
    let other_pki = Pki {
        root: other_root,
        int: other_int,
        leaf: other_leaf,
    };
    let shop = upstream(
        shop_pki.chain(),
        shop_pki.leaf.key_der(),
        UpstreamOpts::new("shop"),
    )
    .await;
    let other = upstream(
        other_pki.chain(),
        other_pki.leaf.key_der(),
        UpstreamOpts::new("other"),
    )
    .await;
    let keep = tempfile::tempdir().unwrap();
    write(
        keep.path(),
        "ca.pem",
        &format!("{}{}", shop_pki.root.pem(), other_pki.root.pem()),
    );
    World {
        shop,
        other,
        shop_pki,
        other_pki,
        keep,
    }
}

fn resolver() -> Arc<StaticResolver> {
    Arc::new(StaticResolver(
        [SHARED_A, SHARED_B, OTHER, FOURTH]
            .into_iter()
            .map(|h| (h.to_string(), vec!["127.0.0.1".parse().unwrap()]))
            .collect(),
    ))
}

impl World {
    fn urls(&self) -> [String; 3] {
        [
            format!("https://{SHARED_A}:{}/", self.shop.addr.port()),
            format!("https://{SHARED_B}:{}/", self.shop.addr.port()),
            format!("https://{OTHER}:{}/", self.other.addr.port()),
        ]
    }

    fn learning_yaml(&self) -> String {
        format!(
            "version: 1\ndefaults:\n  unlisted: learn\n  allow_private: true\n  trust: {}\n  ports: [{}, {}]\nhosts: {{}}\n",
            self.keep.path().join("ca.pem").display(),
            self.shop.addr.port(),
            self.other.addr.port()
        )
    }
}

async fn start(yaml: &str, learn_file: Option<&Path>) -> Proxy {
    let p = TestProxy::builder().pinset(yaml).resolver(resolver());
    match learn_file {
        Some(path) => p.learn_file(path.to_path_buf()),
        None => p,
    }
    .run()
    .await
}

fn pinproxy(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_traffic_becomes_a_pinset_that_passes_it_and_nothing_else() {
    let w = world().await;
    let learn_file = w.keep.path().join("learned.json");
    let learning = start(&w.learning_yaml(), Some(&learn_file)).await;
    for _ in 0..2 {
        for url in w.urls() {
            let r = get(learning.addr, &url).await;
            assert_eq!(r.status, 200, "{url}: learn admits as allow: {r:?}");
        }
    }
    let learned: Value = serde_json::from_str(&learning.admin_get("/learned").await.body).unwrap();
    assert_eq!(learned["learning"], true);
    let hosts = learned["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, [SHARED_A, SHARED_B, OTHER]);
    let a = &hosts[0];
    assert_eq!(a["port"], w.shop.addr.port());
    assert!(a["seen"].as_u64().unwrap() >= 1);
    let path = &a["paths"][0];
    assert_eq!(
        path["pins"],
        serde_json::json!([
            w.shop_pki.leaf.pin().to_string(),
            w.shop_pki.int.pin().to_string(),
            w.shop_pki.root.pin().to_string()
        ])
    );
    assert_eq!(
        path["certs"][1]["subject"],
        "O=pinproxy tests, CN=Test Intermediate"
    );
    assert_eq!(path["certs"][2]["position"], "anchor");
    assert_eq!(
        path["certs"][2]["subject"],
        "O=pinproxy tests, CN=Test Root"
    );
    assert!(
        path["certs"][2]["not_after"].as_str().is_some(),
        "from the bundle's certificate"
    );
    assert_eq!(
        hosts[2]["paths"][0]["pins"][1],
        w.other_pki.int.pin().to_string()
    );

    let admin = format!("http://{}", learning.admin);
    let suggested = stdout(&pinproxy(&["suggest", "--admin", &admin]));
    eprintln!("pinproxy suggest --admin {admin}:\n{suggested}");
    assert!(suggested.contains("unlisted: deny"));
    assert!(suggested.contains("# warning: only one validated path"));
    let out = tempfile::tempdir().unwrap();
    let suggested_path = write(out.path(), "suggested.yaml", &suggested);
    let check = pinproxy(&["check", suggested_path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "check: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    // The learn file holds the same, saved at shutdown at the latest.
    drop(learning);
    for _ in 0..200 {
        if learn_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let from_file = stdout(&pinproxy(&[
        "suggest",
        "--from",
        learn_file.to_str().unwrap(),
    ]));
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("# Suggested"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&from_file), body(&suggested));

    // Enforcing the suggestion: the same traffic passes, nothing else does.
    let enforcing = start(&suggested, None).await;
    for url in w.urls() {
        let r = get(enforcing.addr, &url).await;
        assert_eq!(r.status, 200, "{url}: {r:?}");
    }
    for h in [SHARED_A, SHARED_B, OTHER] {
        assert_eq!(enforcing.mismatches(h, "enforce"), 0);
        assert_eq!(enforcing.requests(h, "ok"), 1);
    }
    let r = get(
        enforcing.addr,
        &format!("http://{FOURTH}:{}/", w.shop.addr.port()),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (403, Some("host-not-allowed"))
    );
    assert_eq!(enforcing.denied("host-not-allowed"), 1);
}

#[tokio::test]
async fn a_restart_keeps_what_was_learned() {
    let w = world().await;
    // In a directory that does not exist yet (issue 20): made at start.
    let learn_file = w.keep.path().join("state/learn/learned.json");
    let first = start(&w.learning_yaml(), Some(&learn_file)).await;
    assert_eq!(get(first.addr, &w.urls()[2]).await.status, 200);
    drop(first);
    for _ in 0..200 {
        if learn_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let second = start(&w.learning_yaml(), Some(&learn_file)).await;
    let learned: Value = serde_json::from_str(&second.admin_get("/learned").await.body).unwrap();
    assert_eq!(
        learned["hosts"][0]["host"], OTHER,
        "known without new traffic"
    );
    assert_eq!(
        second.metrics.learned_hosts.get(),
        1,
        "pinproxy_learned_hosts counts restored hosts"
    );
    // A file that is not a learned document is moved aside, not fatal.
    std::fs::write(&learn_file, b"{not json").unwrap();
    let third = start(&w.learning_yaml(), Some(&learn_file)).await;
    assert_eq!(get(third.addr, &w.urls()[0]).await.status, 200);
    assert!(w
        .keep
        .path()
        .join("state/learn/learned.json.corrupt")
        .exists());
}

#[tokio::test]
async fn an_unlisted_tunnel_is_learned_by_a_probe_and_allow_learns_nothing() {
    let w = world().await;
    let target = format!("{OTHER}:{}", w.other.addr.port());
    let allow = w
        .learning_yaml()
        .replace("unlisted: learn", "unlisted: allow");
    let allowing = start(&allow, None).await;
    let learning = start(&w.learning_yaml(), None).await;
    for p in [&allowing, &learning] {
        let (status, _, _tunnel) = connect_status(p.addr, &target).await;
        assert_eq!(status, 200, "tunnelled as under allow");
    }
    let mut hosts = Value::Null;
    for _ in 0..200 {
        let learned: Value =
            serde_json::from_str(&learning.admin_get("/learned").await.body).unwrap();
        hosts = learned["hosts"].clone();
        if hosts.as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(hosts[0]["host"], OTHER);
    assert_eq!(
        hosts[0]["paths"][0]["pins"][1],
        w.other_pki.int.pin().to_string()
    );
    let allowed: Value = serde_json::from_str(&allowing.admin_get("/learned").await.body).unwrap();
    assert_eq!(allowed["learning"], false);
    assert_eq!(allowed["hosts"], serde_json::json!([]));
}

/// A learned document with `hosts`, each one path (leaf, int, root).
fn learned_doc(hosts: &[(&str, [&str; 3])]) -> String {
    let pin = |s: &str| {
        use base64::Engine;
        let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        format!(
            "sha256/{}",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        )
    };
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|(h, keys)| {
            serde_json::json!({
                "host": h, "port": 443, "trust": "webpki", "seen": 3,
                "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-02T00:00:00Z",
                "paths": [{
                    "pins": keys.iter().map(|k| pin(k)).collect::<Vec<_>>(),
                    "certs": keys.iter().zip(["leaf", "intermediate", "anchor"]).map(|(k, pos)| serde_json::json!({
                        "pin": pin(k), "position": pos, "subject": format!("CN={k}"), "not_after": "2030-01-01T00:00:00Z"
                    })).collect::<Vec<_>>(),
                    "seen": 3, "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-02T00:00:00Z"
                }]
            })
        })
        .collect();
    serde_json::json!({"version": 1, "hosts": hosts}).to_string()
}

#[test]
fn merge_keeps_existing_entries_byte_for_byte_and_adds_only_new_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let doc = write(
        dir.path(),
        "learned.json",
        &learned_doc(&[
            ("api.known.test", ["l1", "i1", "r1"]),
            ("x.grp.test", ["l2", "i2", "r2"]),
            ("y.grp.test", ["l3", "i2", "r2"]),
        ]),
    );
    let existing = "# our pinset — hand-written\nversion: 1\ndefaults:\n  unlisted: learn   # for now\nhosts:\n    api.known.test:     # payments API\n        pins: [sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=, \"sha256/YLh1dUR9y6Kja30RrAn7JKnbQG/uEtLMkBgFF2Fuihg=\"]\n        mode: report\n\n# in-cluster\npassthrough: [\"*.svc.cluster.local\"]\n";
    let pins = write(dir.path(), "pins.yaml", existing);
    let out = pinproxy(&[
        "suggest",
        "--from",
        doc.to_str().unwrap(),
        "--merge",
        pins.to_str().unwrap(),
    ]);
    let merged = stdout(&out);
    eprintln!("pinproxy suggest --merge:\n{merged}");
    // It keeps `unlisted: learn` as written, and says so.
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("warning:") && warned.contains("keeps `defaults.unlisted: learn`"),
        "{warned}"
    );
    // The existing file is a prefix and a suffix of the output; only new
    // entries come between, inside the hosts: block.
    let split = existing.find("\n# in-cluster").unwrap() + 1;
    let (head, tail) = existing.split_at(split);
    assert!(merged.starts_with(head.trim_end_matches('\n')), "{merged}");
    assert!(merged.ends_with(tail));
    let added = &merged[head.len() - 1..merged.len() - tail.len()];
    assert!(
        !added.contains("api.known.test"),
        "covered hosts are not added again"
    );
    assert!(added.contains("    x.grp.test:\n") && added.contains("    y.grp.test:\n"));
    let merged_path = write(dir.path(), "merged.yaml", &merged);
    assert!(pinproxy(&["check", merged_path.to_str().unwrap()])
        .status
        .success());

    // Grouping only when asked, and only siblings with the same pins.
    let grouped = stdout(&pinproxy(&[
        "suggest",
        "--from",
        doc.to_str().unwrap(),
        "--group-wildcards",
    ]));
    assert!(grouped.contains("  '*.grp.test':\n"), "{grouped}");
    assert!(grouped.contains("# grouped: x.grp.test, y.grp.test"));
    assert!(grouped.contains("  api.known.test:\n"));
    let grouped_path = write(dir.path(), "grouped.yaml", &grouped);
    assert!(pinproxy(&["check", grouped_path.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn nothing_learned_prints_no_pinset_that_would_deny_everything() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(
        dir.path(),
        "learned.json",
        r#"{"version": 1, "learning": false, "hosts": []}"#,
    );
    let out = pinproxy(&["suggest", "--from", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("defaults.unlisted: learn"), "{err}");
    // With --merge the given pinset is printed as it is.
    let existing = "version: 1\nhosts:\n  a.test:\n    pins: [sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=]\n";
    let pins = write(dir.path(), "pins.yaml", existing);
    let out = pinproxy(&[
        "suggest",
        "--from",
        empty.to_str().unwrap(),
        "--merge",
        pins.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&out), existing);
    // Not learning: nothing to warn about.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unlisted: learn`, which"));
}
