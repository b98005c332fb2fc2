//! Certificate Transparency and stapled OCSP through the proxy, end to end
//! (docs/reference.md, "Certificate Transparency and OCSP"): `openssl
//! s_server` presents certificates the test issues, with SCTs from CT logs
//! of our own (the CT crate's test log, `crates/ct/tests/support/pki.rs`,
//! in a log list mounted with `--ct-log-list`) and OCSP responses made by
//! `openssl ocsp` (a real responder) stapled with `-status_file`.
//!
//! The pure checks — real SCTs from Chrome's logs, a flipped byte, a log
//! missing from the list, every OCSP responder rule — are tested in
//! `crates/ct/tests`; here it is what the proxy does with them.

mod support;

#[path = "../crates/ct/tests/support/pki.rs"]
#[allow(dead_code)]
mod pki;
#[path = "../crates/ct/tests/support/responder.rs"]
#[allow(dead_code)]
mod responder;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pki::{days, list_json, now_ms, usable_since, Ca, Entry, TestLog};
use rcgen::{CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, KeyPair, SanType};
use support::proxy::TestProxy;
use support::{get, wait_listening, write, Proxy, Reply};

/// `openssl s_server -www` on loopback, stapling `-status_file` when
/// given; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Held open: s_server reads commands from its stdin.
    _stdin: Option<ChildStdin>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

async fn s_server(
    dir: &Path,
    name: &str,
    cert: &[u8],
    key: &KeyPair,
    staple: Option<&[u8]>,
) -> Server {
    s_server_with(dir, name, cert, key, staple, &[]).await
}

/// [`s_server`] with more of its options (`-tls1_2`).
async fn s_server_with(
    dir: &Path,
    name: &str,
    cert: &[u8],
    key: &KeyPair,
    staple: Option<&[u8]>,
    extra: &[&str],
) -> Server {
    let cert_path = write(dir, &format!("{name}.crt"), &pem("CERTIFICATE", cert));
    let key_path = write(dir, &format!("{name}.key"), &key.serialize_pem());
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut args: Vec<String> = vec![
        "s_server".into(),
        "-accept".into(),
        addr.to_string(),
        "-cert".into(),
        cert_path.display().to_string(),
        "-key".into(),
        key_path.display().to_string(),
        "-www".into(),
        "-quiet".into(),
    ];
    if let Some(response) = staple {
        let status = dir.join(format!("{name}.ocsp.der"));
        std::fs::write(&status, response).unwrap();
        args.extend(["-status_file".into(), status.display().to_string()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut child = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed (scripts/test.sh)");
    let stdin = child.stdin.take();
    let server = Server {
        child,
        addr,
        _stdin: stdin,
    };
    wait_listening(addr).await;
    server
}

fn pin_of(spki: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, spki);
    format!("sha256/{}", B64.encode(d.as_ref()))
}

/// A leaf for `name`, 90 days, serial `0x10 serial`.
fn params(ca: &Ca, name: &str, serial: u8) -> CertificateParams {
    let mut p = ca.leaf_params(serial, 90);
    p.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p
}

/// One pinset entry, flow style: the CA's pin, trust in its bundle.
fn entry(name: &str, pin: &str, addr: SocketAddr, ct: &str) -> String {
    format!("  {name}: {{pins: [{pin}], trust: ca.pem, address: \"{addr}\"{ct}}}\n")
}

fn ct(p: &Proxy, host: &str, result: &str) -> u64 {
    p.metrics
        .ct_verdicts
        .with_label_values(&[host, result])
        .get()
}

fn staples(p: &Proxy, result: &str) -> u64 {
    p.metrics.ocsp_staples.with_label_values(&[result]).get()
}

async fn fetch(p: &Proxy, host: &str) -> Reply {
    get(p.addr, &format!("http://{host}/")).await
}

/// A report collector: each POSTed body, as JSON, on the channel.
async fn collector() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = support::raw_tcp_upstream(move |mut tcp| {
        let tx = tx.clone();
        async move {
            let Some(head) = support::read_head(&mut tcp).await else {
                return;
            };
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            if tcp.read_exact(&mut body).await.is_ok() {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
            }
            let _ = tcp
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await;
        }
    })
    .await;
    (addr, rx)
}

#[track_caller]
fn refused(r: &Reply, why: &str) {
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (502, Some("untrusted-certificate")),
        "{r:?}"
    );
    assert!(r.body.contains(why), "{why} not in {:?}", r.body);
}

/// Waits (bounded, real time: the watcher is a real inotify watch) until
/// `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Three logs of our own, two operators; leaves whose SCTs do and do not
/// satisfy the policy. Enforce refuses (`ct-policy`) what report only
/// counts; SCTs in the stapled OCSP response count; `check --live` says
/// the same. Then the log list, mounted with `--ct-log-list` from a
/// ConfigMap volume of its own and watched:
/// 70 days old → enforce acts as report (`stale-list`); a list without
/// a log → `unknown-log`; a broken list → the last good one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_what_the_ct_policy_refuses_and_the_log_list_reloads() {
    let now = now_ms();
    let (a1, a2, b) = (TestLog::ecdsa(), TestLog::ecdsa(), TestLog::ecdsa());
    let logs = |with_b: bool| {
        let since = usable_since(now - days(30));
        let mut v = vec![
            Entry {
                operator: "Operator A",
                description: "a1",
                log: &a1,
                state: since.clone(),
            },
            Entry {
                operator: "Operator A",
                description: "a2",
                log: &a2,
                state: since.clone(),
            },
        ];
        if with_b {
            v.push(Entry {
                operator: "Operator B",
                description: "b",
                log: &b,
                state: since,
            });
        }
        v
    };
    let ca = Ca::new("CT Test CA");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    write(&d, "ca.pem", &ca.cert.pem());
    // The list is a ConfigMap volume of its own, updated as the kubelet
    // does (a `..data` symlink renamed over a new directory).
    std::fs::create_dir(d.join("ct")).unwrap();
    let first = list_json(now - days(1), &logs(true));
    let mut volume = support::SecretVolume::new(&d.join("ct"), &[("log_list.json", &first)]);
    let list = volume.path("log_list.json");
    let hour_ago = now - 3_600_000;
    let key = KeyPair::generate().unwrap();
    let issue = |name: &str, serial: u8, scts: &[(&TestLog, u64)]| {
        ca.issue_with_scts(&params(&ca, name, serial), &key, scts)
    };
    let ok = issue("ok.test", 1, &[(&a1, hour_ago), (&b, hour_ago)]);
    let one_operator = issue("oneop.test", 2, &[(&a1, hour_ago), (&a2, hour_ago)]);
    let report = issue("report.test", 3, &[(&a1, hour_ago), (&a2, hour_ago)]);
    let future = issue("future.test", 4, &[(&a1, now + days(1)), (&b, hour_ago)]);
    let bare = ca.issue(params(&ca, "bare.test", 5), &key);
    // No embedded SCTs: they come in the stapled OCSP response (RFC 6962
    // §3.3), signed over the certificate itself.
    let stapled = ca.issue(params(&ca, "stapled.test", 6), &key);
    let in_staple = pki::tls_list(&[
        a1.sign_cert(&stapled, hour_ago),
        b.sign_cert(&stapled, hour_ago),
    ]);
    let staple =
        responder::good_with_scts(&ca, &stapled, now - 60_000, now + days(1), Some(&in_staple));
    let servers = [
        s_server(&d, "ok", &ok, &key, None).await,
        s_server(&d, "oneop", &one_operator, &key, None).await,
        s_server(&d, "report", &report, &key, None).await,
        s_server(&d, "future", &future, &key, None).await,
        s_server(&d, "bare", &bare, &key, None).await,
        s_server(&d, "stapled", &stapled, &key, Some(&staple)).await,
    ];
    let pin = pin_of(&ca.spki());
    let modes = [
        ", ct: enforce",
        ", ct: enforce",
        ", ct: report",
        ", ct: enforce",
        ", ct: report",
        ", ct: enforce",
    ];
    let names = [
        "ok.test",
        "oneop.test",
        "report.test",
        "future.test",
        "bare.test",
        "stapled.test",
    ];
    let (reports_at, mut reports) = collector().await;
    let mut yaml =
        format!("version: 1\ndefaults: {{report_uri: \"http://{reports_at}/\"}}\nhosts:\n");
    for ((name, s), mode) in names.iter().zip(&servers).zip(modes) {
        yaml.push_str(&entry(name, &pin, s.addr, mode));
    }
    let pins = write(&d, "pins.yaml", &yaml);
    let list_arg = list.clone();
    let p = TestProxy::builder()
        .dir(dir)
        .pins_path(pins.clone())
        .watch()
        .config(move |c| c.ct_log_list = Some(list_arg))
        .run()
        .await;

    let r = fetch(&p, "ok.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ct(&p, "ok.test", "ok"), 1);
    let r = fetch(&p, "oneop.test").await;
    refused(&r, "Certificate Transparency");
    assert!(r.body.contains("ct-policy") || p.tls_failures("oneop.test", "ct-policy") == 1);
    assert_eq!(p.tls_failures("oneop.test", "ct-policy"), 1);
    assert_eq!(ct(&p, "oneop.test", "too-few-scts"), 1);
    // The failure report carries the verdict and every SCT's log id.
    let report = tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("a report in time")
        .unwrap();
    assert_eq!(
        (&report["entry"], &report["reason"]),
        (&"oneop.test".into(), &"ct-policy".into()),
        "{report}"
    );
    let seen = &report["ct"];
    assert_eq!(
        (&seen["mode"], &seen["verdict"], &seen["enforced"]),
        (&"enforce".into(), &"too-few-scts".into(), &true.into()),
        "{seen}"
    );
    let ids: Vec<&str> = seen["scts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["log_id"].as_str())
        .collect();
    assert_eq!(ids, [a1.id_b64(), a2.id_b64()], "{seen}");
    assert_eq!(report["ocsp"]["result"], "absent", "{report}");
    // The same SCTs under report: counted, not refused.
    let r = fetch(&p, "report.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ct(&p, "report.test", "too-few-scts"), 1);
    // An SCT stamped a day ahead does not count: one valid SCT is too few.
    let r = fetch(&p, "future.test").await;
    refused(&r, "Certificate Transparency");
    assert_eq!(
        (
            p.tls_failures("future.test", "ct-policy"),
            ct(&p, "future.test", "too-few-scts")
        ),
        (1, 1)
    );
    let r = fetch(&p, "bare.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ct(&p, "bare.test", "none"), 1);
    let r = fetch(&p, "stapled.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ct(&p, "stapled.test", "ok"), 1);
    assert!(staples(&p, "good") >= 1);
    let metrics = p.admin_get("/metrics").await.body;
    assert!(
        metrics
            .contains("pinproxy_ct_verdicts_total{host=\"oneop.test\",result=\"too-few-scts\"} 1"),
        "{metrics}"
    );

    // check --live predicts the same, host by host.
    let (code, out, err) = support::run_pinproxy(&[
        "check",
        pins.to_str().unwrap(),
        "--live",
        "--ct-log-list",
        list.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    let line = |host: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{host}: CT: ")))
            .unwrap_or_else(|| panic!("no CT line for {host}:\n{out}"))
            .to_string()
    };
    assert!(
        line("ok.test").starts_with("ok.test: CT: ok, 2 SCTs from 2 operators"),
        "{out}"
    );
    assert!(line("oneop.test").contains("too-few-scts"), "{out}");
    assert!(
        line("oneop.test").contains("requests would be refused (ct-policy)"),
        "{out}"
    );
    assert!(
        line("report.test").contains("counted, not refused"),
        "{out}"
    );
    assert!(
        line("stapled.test").starts_with("stapled.test: CT: ok"),
        "{out}"
    );

    // pin --connect lists the SCTs, log by log.
    let (code, out, err) = support::run_pinproxy(&[
        "pin",
        "--connect",
        "ok.test",
        "--address",
        &servers[0].addr.to_string(),
        "--ca-file",
        d.join("ca.pem").to_str().unwrap(),
        "--ct-log-list",
        list.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("# Certificate Transparency (the CT policy as ct: enforce would judge it): ok, 2 SCTs from 2 operators"),
        "{out}"
    );
    for log in [&a1, &b] {
        assert!(
            out.lines().any(|l| l.starts_with("#   SCT ")
                && l.contains(&log.id_b64())
                && l.contains("valid")),
            "{out}"
        );
    }
    assert!(out.contains("# OCSP staple: absent"), "{out}");

    // ct-update checks a list as run reads it, and installs it without
    // rolling back.
    let installed = d.join("installed.json");
    let (code, out, err) = support::run_pinproxy(&[
        "ct-update",
        "--from",
        list.to_str().unwrap(),
        "--out",
        installed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(": ok: version 0.1 of "), "{out}");
    assert!(out.contains("2 operators, 3 logs (3 usable)"), "{out}");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&list).unwrap()
    );
    // A symlink planted where the temporary file goes is replaced, not
    // followed: the file it points to keeps its contents.
    let victim = write(&d, "victim.txt", "not a log list\n");
    let tmp = d.join("installed.json.tmp");
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let (code, out, err) = support::run_pinproxy(&[
        "ct-update",
        "--from",
        list.to_str().unwrap(),
        "--out",
        installed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "not a log list\n"
    );
    assert!(std::fs::symlink_metadata(&installed).unwrap().is_file());
    assert!(
        std::fs::symlink_metadata(&tmp).is_err(),
        "{tmp:?} left behind"
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&list).unwrap()
    );
    let older = write(&d, "older.json", &list_json(now - days(5), &logs(true)));
    let (code, out, _) = support::run_pinproxy(&[
        "ct-update",
        "--from",
        older.to_str().unwrap(),
        "--out",
        installed.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refusing to roll back"), "{out}");
    // A target in a directory that does not exist: the error says which
    // step failed and names the directory.
    let nowhere = d.join("missing-dir");
    let (code, out, err) = support::run_pinproxy(&[
        "ct-update",
        "--from",
        list.to_str().unwrap(),
        "--out",
        nowhere.join("log_list.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.starts_with(&format!(
            "pinproxy ct-update: cannot write {}: the directory {} does not exist (",
            nowhere.join("log_list.json.tmp").display(),
            nowhere.display()
        )),
        "{err}"
    );
    // A list dated years ahead is refused; one already installed there
    // (written by hand, or by a pinproxy that took such lists) does not
    // make the real list a rollback.
    let future = write(&d, "future.json", &list_json(now + days(3650), &logs(true)));
    let (code, out, _) = support::run_pinproxy(&[
        "ct-update",
        "--from",
        future.to_str().unwrap(),
        "--out",
        installed.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("more than a day ahead of this machine's clock"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&list).unwrap()
    );
    std::fs::copy(&future, &installed).unwrap();
    let (code, out, _) = support::run_pinproxy(&[
        "ct-update",
        "--from",
        list.to_str().unwrap(),
        "--out",
        installed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&list).unwrap()
    );
    let broken = write(&d, "broken.json", "{\"operators\": [");
    let (code, out, _) = support::run_pinproxy(&["ct-update", "--from", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken.json: error: "), "{out}");
    let (code, out, _) = support::run_pinproxy(&["version"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "CT log list built in: Chrome's v3 list version 53.34 of 2025-05-05T12:54:12Z"
        ),
        "{out}"
    );

    // A list 70 days old or older: enforce acts as report.
    let generation = |p: &Proxy| p.live.load().generation;
    let g = generation(&p);
    volume.update(&[("log_list.json", &list_json(now - days(71), &logs(true)))]);
    until("the stale list in force", || generation(&p) > g).await;
    let r = fetch(&p, "oneop.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ct(&p, "oneop.test", "stale-list"), 1);
    assert_eq!(p.tls_failures("oneop.test", "ct-policy"), 1);
    // What the stale-list alert counts: enforce that refused nothing, not
    // a stale list under report (a verdict like any other).
    let degraded = |host: &str| {
        p.metrics
            .ct_enforce_degraded
            .with_label_values(&[host])
            .get()
    };
    assert_eq!(degraded("oneop.test"), 1);
    let r = fetch(&p, "report.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ct(&p, "report.test", "stale-list"), 1);
    // (Read before `degraded` would make the series.)
    let exposed = p.admin_get("/metrics").await.body;
    assert!(
        exposed.contains("pinproxy_ct_enforce_degraded_total{host=\"oneop.test\"} 1")
            && !exposed.contains("pinproxy_ct_enforce_degraded_total{host=\"report.test\"}"),
        "{exposed}"
    );
    let pins_view: serde_json::Value =
        serde_json::from_str(&p.admin_get("/pins").await.body).unwrap();
    let shown = &pins_view["ct_log_list"];
    assert_eq!(shown["stale"], true, "{shown}");
    assert_eq!(shown["age_days"], 71, "{shown}");
    assert_eq!(shown["source"], list.display().to_string(), "{shown}");
    assert_eq!(shown["logs"], 3, "{shown}");

    // A fresh list without operator B's log: ok.test's SCT from it is
    // from an unknown log.
    let g = generation(&p);
    volume.update(&[("log_list.json", &list_json(now - days(1), &logs(false)))]);
    until("the list without b in force", || generation(&p) > g).await;
    let r = fetch(&p, "ok.test").await;
    refused(&r, "unknown-log");
    assert_eq!(ct(&p, "ok.test", "unknown-log"), 1);

    // A broken list: the reload fails, the last good list stays.
    let g = generation(&p);
    let failed = || {
        p.metrics
            .config_reloads
            .with_label_values(&["failure"])
            .get()
    };
    let failures = failed();
    volume.update(&[("log_list.json", "{\"operators\": [")]);
    until("the failed reload", || failed() > failures).await;
    assert_eq!(generation(&p), g);
    let r = fetch(&p, "ok.test").await;
    refused(&r, "unknown-log");
    assert_eq!(ct(&p, "ok.test", "unknown-log"), 2);

    // A list from the future: the reload fails the same way.
    let failures = failed();
    volume.update(&[("log_list.json", &list_json(now + days(3650), &logs(true)))]);
    until("the refused future list", || failed() > failures).await;
    assert_eq!(generation(&p), g);
    let r = fetch(&p, "ok.test").await;
    refused(&r, "unknown-log");
    assert_eq!(ct(&p, "ok.test", "unknown-log"), 3);
    drop(servers);
}

/// An OCSP test PKI on disk: the CA, its responders, an openssl index.
struct Ocsp {
    dir: PathBuf,
    ca: Ca,
}

impl Ocsp {
    fn new(dir: &Path) -> Self {
        let ocsp = Ocsp {
            dir: dir.to_path_buf(),
            ca: Ca::new("OCSP Test CA"),
        };
        write(dir, "ca.pem", &ocsp.ca.cert.pem());
        ocsp.responder("resp", true);
        ocsp.responder("noeku", false);
        // status, expiry, revocation, serial, file, subject.
        let index = "V\t991231235959Z\t\t1001\tunknown\t/CN=good.test\n\
                     R\t991231235959Z\t240101000000Z,keyCompromise\t1002\tunknown\t/CN=revoked.test\n\
                     V\t991231235959Z\t\t1003\tunknown\t/CN=must.test\n";
        write(dir, "index.txt", index);
        ocsp
    }

    fn responder(&self, name: &str, eku: bool) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("OCSP Responder {name}"));
        if eku {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        }
        let cert = params.signed_by(&key, &self.ca.cert, &self.ca.key).unwrap();
        write(&self.dir, &format!("{name}.pem"), &cert.pem());
        write(&self.dir, &format!("{name}.rkey"), &key.serialize_pem());
    }

    /// `openssl ocsp` answering for the certificate `cert` (DER), signed
    /// by the responder `signer`.
    fn respond(&self, signer: &str, name: &str, cert: &[u8]) -> Vec<u8> {
        let cert_path = write(
            &self.dir,
            &format!("{name}-ocsp.pem"),
            &pem("CERTIFICATE", cert),
        );
        let out = self.dir.join(format!("{name}-{signer}.der"));
        let p = |n: &str| self.dir.join(n).display().to_string();
        pki::run(
            "openssl",
            &[
                "ocsp",
                "-index",
                &p("index.txt"),
                "-CA",
                &p("ca.pem"),
                "-issuer",
                &p("ca.pem"),
                "-rsigner",
                &p(&format!("{signer}.pem")),
                "-rkey",
                &p(&format!("{signer}.rkey")),
                "-cert",
                &cert_path.display().to_string(),
                "-respout",
                &out.display().to_string(),
                "-ndays",
                "1",
            ],
        );
        std::fs::read(out).unwrap()
    }
}

/// One OCSP case: the entry, the leaf its server presents, the staple.
type Case<'a> = (&'a str, &'a [u8], Option<Vec<u8>>);

/// The TLS Feature extension (RFC 7633) asking for status_request: the
/// leaf is must-staple.
fn must_staple() -> CustomExtension {
    CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 24],
        vec![0x30, 0x03, 0x02, 0x01, 0x05],
    )
}

/// Staples made by `openssl ocsp` and served by `openssl s_server
/// -status_file`: good passes; revoked refuses (`revoked`); a must-staple
/// leaf refuses without a valid staple (`ocsp-required`) — none, an
/// expired one, one from a responder the CA did not authorise — and
/// passes with a good one; for an ordinary leaf an invalid staple is
/// counted `invalid` and trusted no more than none (soft-fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stapled_ocsp_good_revoked_expired_unauthorised_and_must_staple() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ocsp = Ocsp::new(&d);
    let key = KeyPair::generate().unwrap();
    let good = ocsp.ca.issue(params(&ocsp.ca, "good.test", 1), &key);
    let revoked = ocsp.ca.issue(params(&ocsp.ca, "revoked.test", 2), &key);
    let mut must_params = params(&ocsp.ca, "must.test", 3);
    must_params.custom_extensions.push(must_staple());
    let must = ocsp.ca.issue(must_params, &key);
    let now = now_ms();
    let expired = responder::good_with_scts(&ocsp.ca, &must, now - days(3), now - days(2), None);
    let cases: [Case<'_>; 7] = [
        (
            "good.test",
            &good,
            Some(ocsp.respond("resp", "good", &good)),
        ),
        (
            "revoked.test",
            &revoked,
            Some(ocsp.respond("resp", "revoked", &revoked)),
        ),
        ("must-none.test", &must, None),
        ("must-expired.test", &must, Some(expired)),
        (
            "must-rogue.test",
            &must,
            Some(ocsp.respond("noeku", "must", &must)),
        ),
        (
            "must-good.test",
            &must,
            Some(ocsp.respond("resp", "must", &must)),
        ),
        (
            "soft.test",
            &good,
            Some(ocsp.respond("noeku", "good", &good)),
        ),
    ];
    let pin = pin_of(&ocsp.ca.spki());
    let mut servers = Vec::new();
    let mut yaml = "version: 1\nhosts:\n".to_string();
    for (i, (name, cert, staple)) in cases.iter().enumerate() {
        let s = s_server(&d, &format!("s{i}"), cert, &key, staple.as_deref()).await;
        // The leaves name good/revoked/must.test; the entry names the
        // server and `names:` the leaf's SAN.
        let san = match *name {
            n if n.starts_with("must") => "must.test",
            "soft.test" => "good.test",
            n => n,
        };
        yaml.push_str(&entry(name, &pin, s.addr, &format!(", names: [\"{san}\"]")));
        servers.push(s);
    }
    let pins = write(&d, "pins.yaml", &yaml);
    let p = TestProxy::builder().dir(dir).pins_path(pins).run().await;

    let r = fetch(&p, "good.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(staples(&p, "good"), 1);
    let r = fetch(&p, "revoked.test").await;
    refused(&r, "revoked");
    assert_eq!(p.tls_failures("revoked.test", "revoked"), 1);
    assert_eq!(staples(&p, "revoked"), 1);
    for host in ["must-none.test", "must-expired.test", "must-rogue.test"] {
        let r = fetch(&p, host).await;
        refused(&r, "must-staple");
        assert_eq!(p.tls_failures(host, "ocsp-required"), 1, "{host}");
    }
    assert_eq!((staples(&p, "absent"), staples(&p, "invalid")), (1, 2));
    let r = fetch(&p, "must-good.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(staples(&p, "good"), 2);
    let r = fetch(&p, "soft.test").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(staples(&p, "invalid"), 3);
    // CT is off under a private CA bundle (the default): nothing counted.
    assert_eq!(ct(&p, "good.test", "none"), 0);
    drop(servers);
}

/// Every upstream connection is judged, resumed or not: a server whose
/// staple turns `revoked` is refused on the next connection, though it
/// would resume the session the good staple passed (an attack review had
/// it pass on resumed TLS 1.2 and 1.3 sessions: rustls does not call the
/// verifier when it resumes, so revocation, CT, pin dates and expiry
/// went unchecked for as long as the server kept resuming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_server_is_judged_again_on_every_connection() {
    // TLS 1.3 (tickets) and TLS 1.2 (session ids and tickets).
    for extra in [&[][..], &["-tls1_2"][..]] {
        judged_again(extra).await;
    }
}

async fn judged_again(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ocsp = Ocsp::new(&d);
    let key = KeyPair::generate().unwrap();
    let good = ocsp.ca.issue(params(&ocsp.ca, "good.test", 1), &key);
    // s_server issues session tickets and reads -status_file on every
    // full handshake; -www answers HTTP/1.0 and closes, so every request
    // is a new connection.
    let s = s_server_with(
        &d,
        "s0",
        &good,
        &key,
        Some(&ocsp.respond("resp", "good", &good)),
        extra,
    )
    .await;
    let pin = pin_of(&ocsp.ca.spki());
    let pins = write(
        &d,
        "pins.yaml",
        &format!(
            "version: 1\nhosts:\n{}",
            entry("good.test", &pin, s.addr, "")
        ),
    );
    let p = TestProxy::builder().dir(dir).pins_path(pins).run().await;
    for n in 1..=2 {
        let r = fetch(&p, "good.test").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            staples(&p, "good"),
            n,
            "{extra:?}: connection {n} was not judged"
        );
    }
    // The CA revokes the leaf; the server staples what its responder says.
    let index = std::fs::read_to_string(d.join("index.txt")).unwrap();
    let revoked = index.replacen(
        "V\t991231235959Z\t\t1001",
        "R\t991231235959Z\t240101000000Z,keyCompromise\t1001",
        1,
    );
    assert_ne!(revoked, index);
    write(&d, "index.txt", &revoked);
    let staple = ocsp.respond("resp", "good", &good);
    std::fs::write(d.join("s0.ocsp.der"), staple).unwrap();
    let r = fetch(&p, "good.test").await;
    refused(&r, "revoked");
    assert_eq!(p.tls_failures("good.test", "revoked"), 1);
    drop(s);
}

/// A must-staple leaf whose serial is 25 octets — over RFC 5280's 20, which
/// webpki accepts — under `ct: off` (a private CA): refused without a
/// staple and with one saying `revoked`, as any must-staple leaf is. Such
/// a leaf once went unread by the OCSP checks and passed both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_must_staple_leaf_with_a_long_serial_still_needs_a_good_staple() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ocsp = Ocsp::new(&d);
    let key = KeyPair::generate().unwrap();
    let serial: Vec<u8> = std::iter::once(0x11).chain(1..25).collect();
    let mut p = params(&ocsp.ca, "long.test", 9);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    p.custom_extensions.push(must_staple());
    let leaf = ocsp.ca.issue(p, &key);
    let hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
    write(
        &d,
        "index.txt",
        &format!("R\t991231235959Z\t240101000000Z,keyCompromise\t{hex}\tunknown\t/CN=long.test\n"),
    );
    let revoked = ocsp.respond("resp", "long", &leaf);
    let none = s_server(&d, "none", &leaf, &key, None).await;
    let stapled = s_server(&d, "revoked", &leaf, &key, Some(&revoked)).await;
    let pin = pin_of(&ocsp.ca.spki());
    let names = ", names: [\"long.test\"]";
    let yaml = format!(
        "version: 1\nhosts:\n{}{}",
        entry("long-none.test", &pin, none.addr, names),
        entry("long-revoked.test", &pin, stapled.addr, names),
    );
    let pins = write(&d, "pins.yaml", &yaml);
    let p = TestProxy::builder().dir(dir).pins_path(pins).run().await;
    for host in ["long-none.test", "long-revoked.test"] {
        let r = fetch(&p, host).await;
        refused(&r, "must-staple");
        assert_eq!(p.tls_failures(host, "ocsp-required"), 1, "{host}");
    }
}
