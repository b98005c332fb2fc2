//! Learn mode against a hostile upstream (issue 21, attack 1): `suggest`
//! must print a pinset with exactly the hosts learned and exactly their
//! pins, whatever the servers put into their certificates.
//!
//! The attack: a server with an ordinary valid chain also sends one extra
//! certificate that carries the trust anchor's public key (public, so
//! anyone can put it into a certificate) and a subject full of newlines.
//! The learned anchor was described from the first *presented*
//! certificate with the anchor's key, and `suggest` copied subjects into
//! comments unescaped: the newlines closed the comment and wrote a new
//! entry — `api.victim.test` with the attacker's address and pins — that
//! `check` accepted.

mod support;

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use serde_json::Value;
use support::proxy::TestProxy;
use support::*;

const LEARNED: &str = "learned.test";
const VICTIM: &str = "api.victim.test";

fn resolver() -> Arc<StaticResolver> {
    Arc::new(StaticResolver(
        [(LEARNED.to_string(), vec!["127.0.0.1".parse().unwrap()])]
            .into_iter()
            .collect(),
    ))
}

async fn learning_proxy(bundle: &Path, port: u16) -> Proxy {
    let yaml = format!(
        "version: 1\ndefaults:\n  unlisted: learn\n  allow_private: true\n  trust: {}\n  ports: [{port}]\nhosts: {{}}\n",
        bundle.display()
    );
    TestProxy::builder()
        .pinset(&yaml)
        .resolver(resolver())
        .run()
        .await
}

/// A certificate that merely *carries* `key`'s public key, with subject
/// CN `cn`, signed by a key of the attacker's own: it validates nowhere.
fn carrying(key: &KeyPair, cn: &str) -> rustls_pki_types::CertificateDer<'static> {
    let attacker = root("Attacker");
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.signed_by(key, &attacker.cert, &attacker.key)
        .unwrap()
        .der()
        .clone()
}

fn suggest(admin: std::net::SocketAddr) -> String {
    let (code, out, err) = run_pinproxy(&["suggest", "--admin", &format!("http://{admin}")]);
    assert_eq!(code, 0, "suggest failed:\n{out}{err}");
    eprintln!("pinproxy suggest:\n{out}");
    out
}

/// The hosts of a suggested pinset and their pins, as a YAML parser reads
/// them — and `check` must accept the file.
fn entries(suggested: &str) -> Vec<(String, Vec<String>, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "suggested.yaml", suggested);
    let (code, out, err) = run_pinproxy(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "check:\n{out}{err}");
    let doc: serde_yaml::Value = serde_yaml::from_str(suggested).unwrap();
    let doc: Value = serde_json::to_value(doc).unwrap();
    doc["hosts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(host, e)| {
            let pins = e["pins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            (host.clone(), pins, e.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_certificate_with_the_anchors_key_cannot_write_an_entry() {
    let pki = Pki::new(&[LEARNED]);
    let keep = tempfile::tempdir().unwrap();
    let bundle = write(keep.path(), "ca.pem", &pki.root.pem());
    // What the attacker wants in the operator's pinset: its own pins and
    // address for a host it does not serve.
    let evil = root("Evil");
    let int_pin = pki.int.pin();
    let subject = format!(
        "x\n    pins: [{int_pin}]\n  \"{VICTIM}\": {{pins: [{}], address: \"127.0.0.1:9\"}}\n  \"zz.evil.test\":\n    #",
        evil.pin()
    );
    let mut chain = pki.chain();
    chain.push(carrying(&pki.root.key, &subject));
    let up = upstream(chain, pki.leaf.key_der(), UpstreamOpts::new("hostile")).await;
    let p = learning_proxy(&bundle, up.addr.port()).await;
    let r = get(p.addr, &format!("https://{LEARNED}:{}/", up.addr.port())).await;
    assert_eq!(r.status, 200, "learn admits as allow: {r:?}");

    let suggested = suggest(p.admin);
    let got = entries(&suggested);
    let hosts: Vec<&str> = got.iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(hosts, [LEARNED], "exactly the learned hosts");
    assert_eq!(
        got[0].1,
        [int_pin.to_string(), pki.root.pin().to_string()],
        "exactly their pins"
    );
    assert!(got[0].2.get("address").is_none(), "{suggested}");

    // The anchor is described from the trust store, never from a
    // certificate the server merely sent along.
    let learned: Value = serde_json::from_str(&p.admin_get("/learned").await.body).unwrap();
    let certs = &learned["hosts"][0]["paths"][0]["certs"];
    assert_eq!(certs[2]["pin"], pki.root.pin().to_string());
    assert_eq!(certs[2]["subject"], "O=pinproxy tests, CN=Test Root");
}

/// A CA the operator trusts (an internal one) may itself put newlines in
/// the subjects it issues: on the validated path, they are learned — and
/// printed as comments with every control character escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newlines_in_validated_subjects_stay_inside_their_comment() {
    let r = root("Internal Root");
    let hostile = "Ops\n  \"api.victim.test\": {pins: [sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=]}\r\n#\u{85}x\u{2028}y";
    let int = intermediate(hostile, &r, None);
    let l = leaf(&[LEARNED], &int);
    let keep = tempfile::tempdir().unwrap();
    let bundle = write(keep.path(), "ca.pem", &r.pem());
    let up = upstream(
        vec![l.cert.clone(), int.der()],
        l.key_der(),
        UpstreamOpts::new("internal"),
    )
    .await;
    let p = learning_proxy(&bundle, up.addr.port()).await;
    let resp = get(p.addr, &format!("https://{LEARNED}:{}/", up.addr.port())).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let suggested = suggest(p.admin);
    let got = entries(&suggested);
    let hosts: Vec<&str> = got.iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(hosts, [LEARNED], "exactly the learned hosts");
    assert_eq!(got[0].1, [int.pin().to_string(), r.pin().to_string()]);
    assert!(
        suggested.contains("CN=Ops\\n  \"api.victim.test\""),
        "the subject is shown, escaped:\n{suggested}"
    );
}

/// `pin --connect` prints a snippet to paste: the same hostile chain must
/// not write an entry there either, nor describe the anchor's pin with
/// the extra certificate's subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_connect_snippets_hold_only_the_host_dialled() {
    let pki = Pki::new(&[LEARNED]);
    let keep = tempfile::tempdir().unwrap();
    let bundle = write(keep.path(), "ca.pem", &pki.root.pem());
    let subject = format!(
        "x\n  \"{VICTIM}\": {{pins: [{}], address: \"127.0.0.1:9\"}}\n  #",
        root("Evil").pin()
    );
    let mut chain = pki.chain();
    chain.push(carrying(&pki.root.key, &subject));
    chain.push(carrying(&pki.int.key, &subject));
    let up = upstream(chain, pki.leaf.key_der(), UpstreamOpts::new("hostile")).await;
    let target = format!("{LEARNED}:{}", up.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        run_pinproxy(&[
            "pin",
            "--connect",
            &target,
            "--address",
            &up.addr.to_string(),
            "--ca-file",
            bundle.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let (code, out, err) = out;
    assert_eq!(code, 0, "{out}{err}");
    let snippet = out
        .split_once("# pinset snippet")
        .map(|(_, s)| s)
        .expect("a snippet");
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&format!("hosts:\n{}", snippet.split_once('\n').unwrap().1))
            .unwrap_or_else(|e| panic!("{e}:\n{out}"));
    let hosts: Vec<&str> = doc["hosts"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(hosts, [LEARNED], "{out}");
    let pins: Vec<&str> = doc["hosts"][LEARNED]["pins"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        pins,
        [
            pki.leaf.pin().to_string(),
            pki.int.pin().to_string(),
            pki.root.pin().to_string()
        ],
        "{out}"
    );
    assert!(
        !snippet.contains("CN=x"),
        "the extra certificates describe nothing:\n{out}"
    );
}

/// A server sending 57 KB subjects, named under 64 host names (attack 5):
/// what is learned is cut to size, and `/learned` is streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_subjects_are_cut_and_learned_is_streamed() {
    let r = root("Big Root");
    let int = intermediate("Big Intermediate", &r, None);
    // The biggest a certificate message lets through (rustls takes 64 KiB).
    let l = {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["*.many.test".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Ops {}", "x".repeat(57_000)));
        p.distinguished_name = dn;
        let cert = p.signed_by(&key, &int.cert, &int.key).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key,
        }
    };
    let keep = tempfile::tempdir().unwrap();
    let bundle = write(keep.path(), "ca.pem", &r.pem());
    let up = upstream(
        vec![l.cert.clone(), int.der()],
        l.key_der(),
        UpstreamOpts::new("big"),
    )
    .await;
    let names: Vec<String> = (0..64).map(|i| format!("h{i}.many.test")).collect();
    let yaml = format!(
        "version: 1\ndefaults:\n  unlisted: learn\n  allow_private: true\n  trust: {}\n  ports: [{}]\nhosts: {{}}\n",
        bundle.display(),
        up.addr.port()
    );
    let table = names
        .iter()
        .map(|n| (n.clone(), vec!["127.0.0.1".parse().unwrap()]))
        .collect();
    let p = TestProxy::builder()
        .pinset(&yaml)
        .resolver(Arc::new(StaticResolver(table)))
        .run()
        .await;
    for n in &names {
        let resp = get(p.addr, &format!("https://{n}:{}/", up.addr.port())).await;
        assert_eq!(resp.status, 200, "{n}: {resp:?}");
    }
    let raw = raw(
        p.admin,
        format!(
            "GET /learned HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            p.admin
        )
        .as_bytes(),
    )
    .await;
    let (head, _) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("transfer-encoding: chunked") && !head.contains("content-length"),
        "streamed, not one buffer:\n{head}"
    );
    let body = p.admin_get("/learned").await.body;
    assert!(body.len() < 512 * 1024, "/learned is {} bytes", body.len());
    let learned: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(learned["hosts"].as_array().unwrap().len(), 64);
    for h in learned["hosts"].as_array().unwrap() {
        for c in h["paths"][0]["certs"].as_array().unwrap() {
            let s = c["subject"].as_str().unwrap();
            assert!(s.len() <= 256, "a subject of {} bytes kept", s.len());
        }
    }
}
