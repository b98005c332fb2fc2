//! Chrome's policy against logs of our own: SCTs the tests' logs sign for
//! certificates the tests issue through the real precertificate flow, and
//! SCTs delivered by TLS and in OCSP staples.

mod support;

use pinproxy_ct::cert::{Issuer, Leaf};
use pinproxy_ct::policy::{self, Criterion, Delivered};
use pinproxy_ct::verify::SctStatus;
use pinproxy_ct::{LogList, Verdict};
use rcgen::KeyPair;
use support::pki::{
    days, list_json, retired_since, tls_list, unix, usable_since, Ca, Entry, TestLog,
};

/// Three logs: A1 and A2 run by operator A (ECDSA), B by operator B (RSA).
struct World {
    ca: Ca,
    a1: TestLog,
    a2: TestLog,
    b: TestLog,
    now: u64,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        World {
            ca: Ca::new("CT Test CA"),
            a1: TestLog::ecdsa(),
            a2: TestLog::ecdsa(),
            b: TestLog::rsa(dir.path()),
            now: support::pki::now_ms(),
            _dir: dir,
        }
    }

    /// The list, generated a day ago, all logs usable for a year; `b_state`
    /// overrides B's state.
    fn list(&self, b_state: Option<String>) -> LogList {
        self.list_at(self.now - days(1), b_state)
    }

    fn list_at(&self, timestamp: u64, b_state: Option<String>) -> LogList {
        let usable = usable_since(self.now - days(365));
        let entries = [
            Entry {
                operator: "Operator A",
                description: "A1",
                log: &self.a1,
                state: usable.clone(),
            },
            Entry {
                operator: "Operator A",
                description: "A2",
                log: &self.a2,
                state: usable.clone(),
            },
            Entry {
                operator: "Operator B",
                description: "B",
                log: &self.b,
                state: b_state.unwrap_or(usable),
            },
        ];
        LogList::from_json(list_json(timestamp, &entries).as_bytes()).expect("test list parses")
    }

    fn issuer(&self) -> Issuer {
        Issuer::from_cert_der(&self.ca.der()).expect("issuer")
    }

    /// A leaf (lifetime in days) with embedded SCTs from `logs`, each
    /// `age` ms before now.
    fn leaf(&self, lifetime: i64, scts: &[(&TestLog, u64)]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let stamped: Vec<(&TestLog, u64)> =
            scts.iter().map(|(l, age)| (*l, self.now - age)).collect();
        let der = self
            .ca
            .issue_with_scts(&self.ca.leaf_params(1, lifetime), &key, &stamped);
        Leaf::parse(&der).expect("leaf parses")
    }

    fn check(
        &self,
        list: &LogList,
        leaf: &Leaf,
        delivered: Delivered<'_>,
    ) -> pinproxy_ct::CtReport {
        policy::check(list, leaf, &self.issuer(), delivered, unix(self.now))
    }
}

const HOUR: u64 = 3_600_000;

#[test]
fn precert_scts_from_two_operators_are_ok() {
    let w = World::new();
    let leaf = w.leaf(90, &[(&w.a1, HOUR), (&w.b, HOUR)]);
    let report = w.check(&w.list(None), &leaf, Delivered::default());
    assert!(
        report
            .scts()
            .iter()
            .all(|s| *s.status() == SctStatus::Valid),
        "{report}"
    );
    assert_eq!(report.verdict(), Verdict::Ok, "{report}");
    assert_eq!(report.to_string(), "ok, 2 SCTs from 2 operators (embedded)");
    // Each SCT names its log and operator, for `pin --connect`.
    let lines: Vec<String> = report.scts().iter().map(ToString::to_string).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&w.b.id_b64()) && l.contains("B (Operator B) [embedded]: valid")),
        "{lines:?}"
    );
}

#[test]
fn one_operator_only_is_too_few_scts() {
    let w = World::new();
    let leaf = w.leaf(90, &[(&w.a1, HOUR), (&w.a2, HOUR)]);
    let report = w.check(&w.list(None), &leaf, Delivered::default());
    assert_eq!(report.verdict(), Verdict::TooFewScts, "{report}");
    let t = report.tally().expect("tally");
    assert_eq!(
        (t.logs, t.operators.clone()),
        (2, vec!["Operator A".to_string()])
    );
    assert_eq!(
        report.to_string(),
        "too-few-scts: 2 embedded SCTs from 1 operator count, 2 logs and 2 operators needed"
    );
}

#[test]
fn a_future_timestamp_is_refused_and_small_skew_is_not() {
    let w = World::new();
    let list = w.list(None);
    // An hour ahead: the SCT does not count.
    let key = KeyPair::generate().expect("key");
    let der = w.ca.issue_with_scts(
        &w.ca.leaf_params(2, 90),
        &key,
        &[(&w.a1, w.now - HOUR), (&w.b, w.now + HOUR)],
    );
    let report = w.check(
        &list,
        &Leaf::parse(&der).expect("leaf"),
        Delivered::default(),
    );
    let statuses: Vec<_> = report.scts().iter().map(|s| s.status().clone()).collect();
    assert_eq!(statuses, vec![SctStatus::Valid, SctStatus::FutureTimestamp]);
    assert_eq!(report.verdict(), Verdict::TooFewScts, "{report}");
    assert!(
        report.to_string().contains("timestamp in the future"),
        "{report}"
    );
    // A minute ahead is within the tolerated clock skew.
    let der = w.ca.issue_with_scts(
        &w.ca.leaf_params(3, 90),
        &key,
        &[(&w.a1, w.now - HOUR), (&w.b, w.now + 60_000)],
    );
    let report = w.check(
        &list,
        &Leaf::parse(&der).expect("leaf"),
        Delivered::default(),
    );
    assert_eq!(report.verdict(), Verdict::Ok, "{report}");
}

#[test]
fn a_list_seventy_days_old_is_stale() {
    let w = World::new();
    let leaf = w.leaf(90, &[(&w.a1, HOUR), (&w.b, HOUR)]);
    let report = w.check(
        &w.list_at(w.now - days(70), None),
        &leaf,
        Delivered::default(),
    );
    assert_eq!(report.verdict(), Verdict::StaleList, "{report}");
    assert_eq!(report.policy_verdict(), Verdict::Ok);
    let report = w.check(
        &w.list_at(w.now - days(69), None),
        &leaf,
        Delivered::default(),
    );
    assert_eq!(report.verdict(), Verdict::Ok, "{report}");
}

#[test]
fn a_certificate_over_180_days_needs_three_logs() {
    let w = World::new();
    let list = w.list(None);
    let two = w.leaf(181, &[(&w.a1, HOUR), (&w.b, HOUR)]);
    let report = w.check(&list, &two, Delivered::default());
    assert_eq!(report.verdict(), Verdict::TooFewScts, "{report}");
    assert_eq!(report.tally().map(|t| t.needed), Some(3));
    let three = w.leaf(181, &[(&w.a1, HOUR), (&w.a2, HOUR), (&w.b, HOUR)]);
    assert_eq!(
        w.check(&list, &three, Delivered::default()).verdict(),
        Verdict::Ok
    );
    // 180 days exactly is still "180 days or less".
    let edge = w.leaf(180, &[(&w.a1, HOUR), (&w.b, HOUR)]);
    assert_eq!(
        w.check(&list, &edge, Delivered::default()).verdict(),
        Verdict::Ok
    );
}

#[test]
fn a_retired_log_counts_only_for_scts_before_its_retirement() {
    let w = World::new();
    let retired = Some(retired_since(w.now - days(10)));
    let list = w.list(retired);
    let before = w.leaf(90, &[(&w.a1, days(20)), (&w.b, days(20))]);
    assert_eq!(
        w.check(&list, &before, Delivered::default()).verdict(),
        Verdict::Ok
    );
    let after = w.leaf(90, &[(&w.a1, days(5)), (&w.b, days(5))]);
    assert_eq!(
        w.check(&list, &after, Delivered::default()).verdict(),
        Verdict::TooFewScts
    );
    // The earliest SCT decides too: B's SCT predates the retirement, but
    // the one from a current log does not, so the certificate was issued
    // after B retired.
    let late = w.leaf(90, &[(&w.a1, days(5)), (&w.b, days(20))]);
    assert_eq!(
        w.check(&list, &late, Delivered::default()).verdict(),
        Verdict::TooFewScts
    );
    // Only a retired log: rule 1 (one log not retired) fails.
    let only = w.leaf(90, &[(&w.b, days(20))]);
    let report = w.check(&list, &only, Delivered::default());
    assert!(
        report
            .to_string()
            .contains("one of them qualified, usable or read-only now"),
        "{report}"
    );
}

#[test]
fn tls_delivered_scts_sign_the_certificate_itself() {
    let w = World::new();
    let list = w.list(None);
    let key = KeyPair::generate().expect("key");
    let der = w.ca.issue(w.ca.leaf_params(4, 90), &key);
    let leaf = Leaf::parse(&der).expect("leaf");
    let tls = tls_list(&[
        w.a1.sign_cert(&der, w.now - HOUR),
        w.b.sign_cert(&der, w.now - HOUR),
    ]);
    let report = w.check(
        &list,
        &leaf,
        Delivered {
            tls: Some(&tls),
            ocsp: None,
        },
    );
    assert_eq!(report.verdict(), Verdict::Ok, "{report}");
    assert_eq!(
        report.tally().map(|t| t.criterion),
        Some(Criterion::Delivered)
    );
    assert_eq!(report.to_string(), "ok, 2 SCTs from 2 operators (TLS/OCSP)");

    // Precertificate SCTs presented in TLS do not verify as x509 entries.
    let other = w.leaf(90, &[(&w.a1, HOUR), (&w.b, HOUR)]);
    let list_bytes = embedded_list_of(&other);
    let report = w.check(
        &list,
        &leaf,
        Delivered {
            tls: Some(&list_bytes),
            ocsp: None,
        },
    );
    assert_eq!(report.verdict(), Verdict::BadSignature, "{report}");

    // A retired log's TLS SCT never counts, even from before retirement.
    let retired = w.list(Some(retired_since(w.now - days(10))));
    let old = tls_list(&[
        w.a1.sign_cert(&der, w.now - days(20)),
        w.b.sign_cert(&der, w.now - days(20)),
    ]);
    let report = w.check(
        &retired,
        &leaf,
        Delivered {
            tls: Some(&old),
            ocsp: None,
        },
    );
    assert_eq!(report.verdict(), Verdict::TooFewScts, "{report}");
}

#[test]
fn embedded_and_tls_scts_are_not_mixed() {
    let w = World::new();
    let list = w.list(None);
    let leaf = w.leaf(90, &[(&w.a1, HOUR)]);
    let tls = tls_list(&[w.b.sign_cert(leaf.der(), w.now - HOUR)]);
    let report = w.check(
        &list,
        &leaf,
        Delivered {
            tls: Some(&tls),
            ocsp: None,
        },
    );
    assert!(
        report
            .scts()
            .iter()
            .all(|s| *s.status() == SctStatus::Valid),
        "{report}"
    );
    assert_eq!(report.verdict(), Verdict::TooFewScts, "{report}");
}

#[test]
fn no_scts_at_all_is_none() {
    let w = World::new();
    let key = KeyPair::generate().expect("key");
    let leaf = Leaf::parse(&w.ca.issue(w.ca.leaf_params(5, 90), &key)).expect("leaf");
    let report = w.check(&w.list(None), &leaf, Delivered::default());
    assert_eq!(report.verdict(), Verdict::None);
    assert_eq!(
        report.to_string(),
        "none: no SCTs in the certificate or a stapled OCSP response \
         (SCTs in the TLS extension are not read)"
    );
}

#[test]
fn an_sct_for_another_precertificate_fails() {
    let w = World::new();
    let list = w.list(None);
    // SCTs issued for serial 7's precertificate, embedded in serial 8.
    let key = KeyPair::generate().expect("key");
    let donor = w.ca.issue_with_scts(
        &w.ca.leaf_params(7, 90),
        &key,
        &[(&w.a1, w.now), (&w.b, w.now)],
    );
    let scts = embedded_list_of(&Leaf::parse(&donor).expect("donor"));
    let mut params = w.ca.leaf_params(8, 90);
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2],
            der::Encode::to_der(&der::asn1::OctetString::new(scts).expect("octets")).expect("der"),
        ));
    let leaf = Leaf::parse(&w.ca.issue(params, &key)).expect("leaf");
    let report = w.check(&list, &leaf, Delivered::default());
    assert_eq!(report.verdict(), Verdict::BadSignature, "{report}");
    assert!(report
        .scts()
        .iter()
        .all(|s| matches!(s.status(), SctStatus::BadSignature(_))));
}

/// The TLS-encoded SCT list inside a leaf's extension.
fn embedded_list_of(leaf: &Leaf) -> Vec<u8> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf.der()).expect("cert");
    let oid = der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
    let exts = cert.tbs_certificate.extensions.expect("extensions");
    let ext = exts
        .iter()
        .find(|e| e.extn_id == oid)
        .expect("SCT extension");
    der::asn1::OctetString::from_der(ext.extn_value.as_bytes())
        .expect("inner")
        .as_bytes()
        .to_vec()
}

#[test]
fn scts_in_an_ocsp_staple_count_like_tls_ones() {
    use pinproxy_ct::ocsp::{self, StapleVerdict};
    let w = World::new();
    let list = w.list(None);
    let key = KeyPair::generate().expect("key");
    let der = w.ca.issue(w.ca.leaf_params(9, 90), &key);
    let leaf = Leaf::parse(&der).expect("leaf");
    let scts = tls_list(&[
        w.a1.sign_cert(&der, w.now - HOUR),
        w.b.sign_cert(&der, w.now - HOUR),
    ]);
    let staple =
        support::responder::good_with_scts(&w.ca, &der, w.now - HOUR, w.now + days(3), Some(&scts));
    let report = ocsp::check_staple(&leaf, &w.issuer(), Some(&staple), unix(w.now));
    assert_eq!(report.verdict(), StapleVerdict::Good, "{report}");
    assert_eq!(report.sct_list(), Some(&scts[..]));
    let ct = w.check(
        &list,
        &leaf,
        Delivered {
            tls: None,
            ocsp: report.sct_list(),
        },
    );
    assert_eq!(ct.verdict(), Verdict::Ok, "{ct}");
    assert!(ct
        .scts()
        .iter()
        .all(|s| s.delivery() == pinproxy_ct::verify::Delivery::Ocsp));
    // One operator's SCT only: too few.
    let one = tls_list(&[w.a1.sign_cert(&der, w.now - HOUR)]);
    let staple =
        support::responder::good_with_scts(&w.ca, &der, w.now - HOUR, w.now + days(3), Some(&one));
    let report = ocsp::check_staple(&leaf, &w.issuer(), Some(&staple), unix(w.now));
    let ct = w.check(
        &list,
        &leaf,
        Delivered {
            tls: None,
            ocsp: report.sct_list(),
        },
    );
    assert_eq!(ct.verdict(), Verdict::TooFewScts, "{ct}");
}

/// OpenSSL's own CT code (`s_client -ct`) checks the SCTs our test logs
/// put into a certificate, served by `openssl s_server` on 127.0.0.1: the
/// fixtures the tests above rely on are right by another implementation
/// too, not only by this crate.
#[test]
fn openssl_validates_the_embedded_scts_of_our_test_logs() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use support::pki::path;

    let w = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    let key = KeyPair::generate().expect("key");
    let params = w.ca.leaf_params(11, 90);
    let der = w.ca.issue_with_scts(
        &params,
        &key,
        &[(&w.a1, w.now - HOUR), (&w.b, w.now - HOUR)],
    );
    std::fs::write(p("leaf.pem"), support::to_pem("CERTIFICATE", &der)).expect("write");
    std::fs::write(p("leaf.key"), key.serialize_pem()).expect("write");
    std::fs::write(p("ca.pem"), w.ca.cert.pem()).expect("write");
    let logs = format!(
        "enabled_logs = a1,b\n[a1]\ndescription = A1\nkey = {}\n[b]\ndescription = B\nkey = {}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &w.a1.spki),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &w.b.spki),
    );
    std::fs::write(p("logs.cnf"), logs).expect("write");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &addr,
            "-naccept",
            "1",
            "-cert",
            path(&p("leaf.pem")),
            "-key",
        ])
        .arg(p("leaf.key"))
        .args(["-cert_chain", path(&p("ca.pem"))])
        // s_server stops at the end of its stdin: keep a pipe open.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_server");
    let mut server = KillOnDrop(server);
    // s_server prints ACCEPT once it listens (a probe connection would
    // end it: it stops after a failed handshake).
    let mut stdout = std::io::BufReader::new(server.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.starts_with("ACCEPT") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).expect("s_server output");
        assert!(n > 0, "s_server exited before listening");
    }
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr,
            "-ct",
            "-ctlogfile",
            path(&p("logs.cnf")),
        ])
        .args(["-CAfile", path(&p("ca.pem")), "-verify_return_error"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    drop(stdout);
    let mut err = String::new();
    if let Some(mut e) = server.0.stderr.take() {
        server.stop();
        let _ = e.read_to_string(&mut err);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let cerr = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("SCTs present (2)"), "{text}\n{cerr}\n{err}");
    assert_eq!(
        text.matches("SCT validation status: valid").count(),
        2,
        "{text}\n{err}"
    );
    // And this crate agrees.
    let report = w.check(
        &w.list(None),
        &Leaf::parse(&der).expect("leaf"),
        Delivered::default(),
    );
    assert_eq!(report.verdict(), Verdict::Ok, "{report}");
}

/// The s_server child this test spawned, stopped however the test ends.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A staple is the server's to fill: one with hundreds of SCTs once cost
/// a signature verification each, ~20 ms of a runtime thread per
/// handshake. Only the first `MAX_SCTS_PER_LIST` of a list are looked at,
/// which can only lower the count: B's SCT past the limit does not count,
/// so the list does not comply. Under the limit every SCT is verified, a
/// log's copies too (an embedded SCT's eligibility depends on its own
/// timestamp, so none may be skipped).
#[test]
fn many_scts_in_one_list_are_capped() {
    use pinproxy_ct::verify::MAX_SCTS_PER_LIST;
    let w = World::new();
    let list = w.list(None);
    let key = KeyPair::generate().expect("key");
    let der = w.ca.issue(w.ca.leaf_params(7, 90), &key);
    let leaf = Leaf::parse(&der).expect("leaf");
    let a1 = w.a1.sign_cert(&der, w.now - HOUR);
    let b = w.b.sign_cert(&der, w.now - HOUR);
    let check = |scts: &[Vec<u8>]| {
        let bytes = tls_list(scts);
        w.check(
            &list,
            &leaf,
            Delivered {
                tls: None,
                ocsp: Some(&bytes),
            },
        )
    };

    // Within the limit: every SCT verified, B counts.
    let mut within = vec![a1.clone(); MAX_SCTS_PER_LIST - 1];
    within.push(b.clone());
    let report = check(&within);
    assert_eq!(report.verdict(), Verdict::Ok, "{report}");
    let statuses: Vec<&SctStatus> = report.scts().iter().map(|s| s.status()).collect();
    assert_eq!(statuses.len(), MAX_SCTS_PER_LIST);
    assert!(statuses.iter().all(|s| **s == SctStatus::Valid), "{report}");

    // Past the limit: B is ignored, and the rest are summed up in one entry.
    let mut over = vec![a1; MAX_SCTS_PER_LIST + 10];
    over.push(b);
    let report = check(&over);
    assert_eq!(report.verdict(), Verdict::TooFewScts, "{report}");
    assert_eq!(report.scts().len(), MAX_SCTS_PER_LIST + 1);
    assert_eq!(
        report.scts().last().map(|s| s.status().clone()),
        Some(SctStatus::OverLimit(11))
    );
    assert!(
        report
            .to_string()
            .contains("11 more SCTs in the list not checked (at most 32 per list)"),
        "{report}"
    );
}
