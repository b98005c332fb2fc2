//! Key continuity against a server that moves to a new intermediate under
//! the same pinned root: the chain-change counter moves for
//! `intermediate` (not `anchor`, not `leaf` — the leaf keeps its key), the
//! handshakes keep passing, and `/pins` says when and from what to what.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::proxy::TestProxy;
use support::*;

const HOST: &str = "api.moving.test";

fn changes(p: &Proxy, position: &str) -> u64 {
    p.metrics
        .chain_changes
        .with_label_values(&[HOST, position])
        .get()
}

#[tokio::test]
async fn a_new_intermediate_under_the_pinned_root_counts_as_an_intermediate_change() {
    let pki = Pki::new(&[HOST]);
    let up =
        switchable_upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("moving")).await;
    // Pinned at the root: the move is legitimate and must keep passing.
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.root.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    let metrics_before = p.admin_get("/metrics").await.body;
    assert!(
        metrics_before.contains(&format!(
            "pinproxy_upstream_chain_changes_total{{host=\"{HOST}\",position=\"anchor\"}} 0"
        )),
        "series exist from load, so increase() alerts see the first change"
    );
    for _ in 0..2 {
        assert_eq!(get(p.addr, &format!("http://{HOST}/")).await.status, 200);
    }
    // The same leaf key, re-issued by a new intermediate of the same root.
    let int2 = intermediate("Test Intermediate G2", &pki.root, None);
    let leaf2 = leaf_with(
        &[HOST],
        &int2,
        LeafOpts { expired: false },
        Some(rcgen::KeyPair::from_pem(&pki.leaf.key.serialize_pem()).unwrap()),
    );
    up.switch(vec![leaf2.cert.clone(), int2.der()], leaf2.key_der());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        assert_eq!(get(p.addr, &format!("http://{HOST}/")).await.status, 200);
    }
    assert_eq!(changes(&p, "intermediate"), 1);
    assert_eq!(changes(&p, "anchor"), 0);
    assert_eq!(changes(&p, "leaf"), 0);
    assert_eq!(p.mismatches(HOST, "enforce"), 0);

    let pins: Value = serde_json::from_str(&p.admin_get("/pins").await.body).unwrap();
    let chain = &pins["hosts"][0]["chains"][HOST];
    assert_eq!(chain["entry"], HOST);
    assert_eq!(chain["intermediate"]["from"][0], pki.int.pin().to_string());
    assert_eq!(chain["intermediate"]["to"][0], int2.pin().to_string());
    assert!(chain["intermediate"]["at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(chain["anchor"], Value::Null);
    assert_eq!(chain["leaf"], Value::Null);
    assert_eq!(chain["path"][2], pki.root.pin().to_string());
    let text = p.admin_get("/metrics").await.body;
    assert!(text.contains(&format!(
        "pinproxy_upstream_chain_changes_total{{host=\"{HOST}\",position=\"intermediate\"}} 1"
    )));
}

#[tokio::test]
async fn unlisted_hosts_share_one_label_and_keep_their_detail_in_pins() {
    let pki = Pki::new(&["a.free.test", "b.free.test"]);
    let up = switchable_upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("free")).await;
    let yaml = format!(
        "version: 1\ndefaults:\n  unlisted: allow\n  allow_private: true\n  trust: ca.pem\n  ports: [{}]\nhosts: {{}}\n",
        up.addr.port()
    );
    let resolver = StaticResolver(
        [("a.free.test", "127.0.0.1"), ("b.free.test", "127.0.0.1")]
            .into_iter()
            .map(|(h, ip)| (h.to_string(), vec![ip.parse().unwrap()]))
            .collect(),
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", pki.root.pem())
        .resolver(std::sync::Arc::new(resolver))
        .run()
        .await;
    // https: an unlisted host's http:// URL is relayed plain.
    let url = |h: &str| format!("https://{h}:{}/", up.addr.port());
    for h in ["a.free.test", "b.free.test"] {
        assert_eq!(get(p.addr, &url(h)).await.status, 200);
    }
    // A new leaf key: both names change, both counted under `unlisted`.
    let leaf2 = leaf(&["a.free.test", "b.free.test"], &pki.int);
    up.switch(vec![leaf2.cert.clone(), pki.int.der()], leaf2.key_der());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for h in ["a.free.test", "b.free.test"] {
        assert_eq!(get(p.addr, &url(h)).await.status, 200);
    }
    let unlisted = |pos: &str| {
        p.metrics
            .chain_changes
            .with_label_values(&["unlisted", pos])
            .get()
    };
    assert_eq!((unlisted("leaf"), unlisted("intermediate")), (2, 0));
    let pins: Value = serde_json::from_str(&p.admin_get("/pins").await.body).unwrap();
    let detail = pins["unlisted_chains"].as_object().unwrap();
    assert_eq!(detail.len(), 2);
    assert_eq!(
        detail["a.free.test"]["leaf"]["to"][0],
        leaf2.pin().to_string()
    );
}
