use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::{PIN_A, PIN_B};
use crate::admission::same_enforcement;
use crate::identity::{CrlPolicy, Name};
use crate::{parse, Policy, Problem};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "client CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A client certificate (PEM) and its key (PKCS#8 PEM).
fn client(ca: &Ca, cn: &str, not_after: OffsetDateTime, client_auth: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = vec![SanType::URI(
        format!("spiffe://example.org/ns/test/sa/{cn}")
            .try_into()
            .unwrap(),
    )];
    p.extended_key_usages = vec![if client_auth {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(30);
    p.not_after = not_after;
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn crl(ca: &Ca, revoked: &[u64], next_update: OffsetDateTime) -> String {
    let now = OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: next_update - Duration::days(7),
        next_update,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|n| RevokedCertParams {
                serial_number: SerialNumber::from(*n),
                revocation_time: now - Duration::days(1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)
    .unwrap()
    .pem()
    .unwrap()
}

fn later() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(60)
}

fn entry(extra: &str) -> String {
    format!("version: 1\nhosts:\n  pay.test:\n    pins: [{PIN_A}, {PIN_B}]\n{extra}")
}

fn load(dir: &Path, yaml: &str) -> Result<Policy, Vec<Problem>> {
    parse(yaml.as_bytes(), dir, OffsetDateTime::now_utc())
}

fn problems(dir: &Path, yaml: &str) -> Vec<String> {
    match load(dir, yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_client_cert_loads_and_its_key_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = client(&ca, "api", later(), true);
    std::fs::create_dir(dir.path().join("id")).unwrap();
    std::fs::write(dir.path().join("id/tls.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("id/tls.key"), &key).unwrap();
    let p = load(
        dir.path(),
        &entry("    client_cert:\n      cert: id/tls.crt\n      key: id/tls.key\n"),
    )
    .unwrap();
    let c = p.hosts[0].client_cert.as_ref().unwrap();
    assert_eq!(c.cert_path, dir.path().join("id/tls.crt"));
    assert_eq!(c.uris, ["spiffe://example.org/ns/test/sa/api"]);
    assert!(c.subject.contains("api"), "{}", c.subject);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // The key's bytes (base64 body) appear in no Debug output.
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let debug = format!("{p:?}");
    assert!(!debug.contains(&body[..40]), "key in Debug output");
    assert!(p.watched_files().contains(&dir.path().join("id/tls.key")));
    // The key's bytes are part of the source hash.
    let same = load(
        dir.path(),
        &entry("    client_cert:\n      cert: id/tls.crt\n      key: id/tls.key\n"),
    )
    .unwrap();
    assert_eq!(p.source_hash, same.source_hash);
    let (cert2, key2) = client(&ca, "api", later(), true);
    std::fs::write(dir.path().join("id/tls.crt"), &cert2).unwrap();
    std::fs::write(dir.path().join("id/tls.key"), &key2).unwrap();
    let rotated = load(
        dir.path(),
        &entry("    client_cert:\n      cert: id/tls.crt\n      key: id/tls.key\n"),
    )
    .unwrap();
    assert_ne!(p.source_hash, rotated.source_hash);
    assert!(
        !same_enforcement(&p.hosts[0], &rotated.hosts[0]),
        "a rotated identity is a change"
    );
    assert!(same_enforcement(&p.hosts[0], &same.hosts[0]));
}

#[test]
fn client_cert_problems_name_the_file_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = client(&ca, "a", later(), true);
    let (_, other_key) = client(&ca, "b", later(), true);
    let (expired, expired_key) = client(
        &ca,
        "old",
        OffsetDateTime::now_utc() - Duration::days(1),
        true,
    );
    let (server_only, server_only_key) = client(&ca, "srv", later(), false);
    for (name, text) in [
        ("a.crt", &cert),
        ("a.key", &key),
        ("b.key", &other_key),
        ("old.crt", &expired),
        ("old.key", &expired_key),
        ("srv.crt", &server_only),
        ("srv.key", &server_only_key),
        (
            "junk.key",
            &"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .to_string(),
        ),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let cc = |c: &str, k: &str| entry(&format!("    client_cert: {{cert: {c}, key: {k}}}\n"));
    let p = problems(dir.path(), &cc("a.crt", "b.key"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("does not match the certificate"), "{p:?}");
    assert!(
        p[0].contains("b.key") && p[0].contains("client_cert"),
        "{p:?}"
    );
    let p = problems(dir.path(), &cc("missing.crt", "a.key"));
    assert!(
        p[0].contains("cannot read") && p[0].contains("missing.crt"),
        "{p:?}"
    );
    let p = problems(dir.path(), &cc("a.key", "a.key"));
    assert!(p[0].contains("no PEM CERTIFICATE"), "{p:?}");
    let p = problems(dir.path(), &cc("a.crt", "a.crt"));
    assert!(p[0].contains("no PRIVATE KEY"), "{p:?}");
    let p = problems(dir.path(), &cc("a.crt", "junk.key"));
    assert!(p[0].contains("encrypted"), "{p:?}");
    let p = problems(dir.path(), &cc("a.crt", "\"\""));
    assert!(p[0].contains("client_cert.key: empty"), "{p:?}");
    let p = problems(dir.path(), &entry("    client_cert: {cert: a.crt}\n"));
    assert!(p[0].contains("missing field `key`"), "{p:?}");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for p in [
        problems(dir.path(), &cc("a.crt", "b.key")),
        problems(dir.path(), &cc("a.key", "a.key")),
    ] {
        assert!(!p.join("\n").contains(&body[..40]));
    }
    // Expired or not a client certificate: warnings, still loaded.
    let ok = load(dir.path(), &cc("old.crt", "old.key")).unwrap();
    assert!(ok.hosts[0].client_cert.is_some());
    let w: Vec<String> = ok.warnings.iter().map(|w| w.to_string()).collect();
    assert!(w.iter().any(|w| w.contains("expired on")), "{w:?}");
    let ok = load(dir.path(), &cc("srv.crt", "srv.key")).unwrap();
    let w: Vec<String> = ok.warnings.iter().map(|w| w.to_string()).collect();
    assert!(w.iter().any(|w| w.contains("clientAuth")), "{w:?}");
}

#[test]
fn names_are_dns_or_uri_and_problems_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let p = load(
        dir.path(),
        &entry("    names: [\"spiffe://example.org/ns/pay/*\", API.pay.test]\n"),
    )
    .unwrap();
    assert_eq!(
        p.hosts[0].names,
        [
            Name::UriPrefix("spiffe://example.org/ns/pay/".into()),
            Name::Dns("api.pay.test".into())
        ]
    );
    let yaml = entry("    names:\n      - \"*.pay.test\"\n      - 10.0.0.1\n      - \"has space\"\n      - \"spiffe://example.org\"\n      - a.test\n      - A.test\n");
    let p = match load(dir.path(), &yaml) {
        Err(p) => p,
        Ok(_) => panic!("accepted"),
    };
    let fields: Vec<_> = p.iter().map(|p| p.field.clone().unwrap()).collect();
    assert_eq!(
        fields,
        ["names[0]", "names[1]", "names[2]", "names[3]", "names[5]"]
    );
    assert!(p.iter().all(|p| p.line == Some(5)), "{p:?}");
    assert!(p[4].message.contains("duplicate"), "{p:?}");
    let p = problems(dir.path(), &entry("    names: []\n"));
    assert!(p[0].contains("names: empty"), "{p:?}");
}

#[test]
fn crls_load_warn_when_expired_and_compare_by_what_they_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("fresh.crl", &crl(&ca, &[7, 9], later()));
    write(
        "reissued.crl",
        &crl(&ca, &[9, 7], later() + Duration::days(1)),
    );
    write("more.crl", &crl(&ca, &[7, 9, 11], later()));
    write(
        "stale.crl",
        &crl(&ca, &[7], OffsetDateTime::now_utc() - Duration::days(1)),
    );
    // DER is accepted as well as PEM.
    let der = pem::parse(crl(&ca, &[], later())).unwrap().into_contents();
    std::fs::write(dir.path().join("empty.der"), der).unwrap();
    write("junk.crl", "not a crl");
    let with = |files: &str, extra: &str| {
        entry(&format!("    trust: ca.pem\n    crls: [{files}]\n{extra}"))
    };
    let load_ok = |yaml: &str| load(dir.path(), yaml).unwrap_or_else(|p| panic!("{p:?}"));
    let fresh = load_ok(&with("fresh.crl", ""));
    let crls = fresh.hosts[0].crls.as_ref().unwrap();
    assert_eq!(
        (crls.files[0].revoked, crls.policy),
        (2, CrlPolicy::UseExpired)
    );
    assert!(fresh.warnings.is_empty(), "{:?}", fresh.warnings);
    assert!(fresh
        .watched_files()
        .contains(&dir.path().join("fresh.crl")));
    let reissued = load_ok(&with("reissued.crl", ""));
    let more = load_ok(&with("more.crl", ""));
    assert!(same_enforcement(&fresh.hosts[0], &reissued.hosts[0]));
    assert!(!same_enforcement(&fresh.hosts[0], &more.hosts[0]));
    let both = load_ok(&with("fresh.crl, empty.der", ""));
    assert_eq!(both.hosts[0].crls.as_ref().unwrap().lists.len(), 2);
    let w = both.warnings[0].to_string();
    assert!(w.contains("only the first listed is consulted"), "{w}");
    // Expired: a warning that says what the policy makes of it.
    let stale = load_ok(&with("stale.crl", ""));
    let w = stale.warnings[0].to_string();
    assert!(w.contains("expired") && w.contains("use-expired"), "{w}");
    let stale = load_ok(&with("stale.crl", "    crl_policy: refuse-expired\n"));
    let w = stale.warnings[0].to_string();
    assert!(w.contains("refuse-expired"), "{w}");
    assert!(!same_enforcement(&fresh.hosts[0], &stale.hosts[0]));
    // Problems.
    let p = problems(dir.path(), &with("junk.crl, missing.crl", ""));
    assert!(
        p[0].contains("crls[0]") && p[0].contains("junk.crl"),
        "{p:?}"
    );
    assert!(
        p[1].contains("crls[1]") && p[1].contains("cannot read"),
        "{p:?}"
    );
    let p = problems(dir.path(), &with("fresh.crl, fresh.crl", ""));
    assert!(p[0].contains("duplicate CRL"), "{p:?}");
    let p = problems(dir.path(), &entry("    crl_policy: refuse-expired\n"));
    assert!(p[0].contains("without crls"), "{p:?}");
    let p = problems(dir.path(), &entry("    crls: []\n"));
    assert!(p[0].contains("crls: empty"), "{p:?}");
    let p = problems(
        dir.path(),
        &entry("    trust: pin-only\n    crls: [fresh.crl]\n"),
    );
    assert!(p[0].contains("pin-only"), "{p:?}");
    let p = problems(
        dir.path(),
        &with("fresh.crl", "    crl_policy: sometimes\n"),
    );
    assert!(p[0].contains("unknown variant"), "{p:?}");
}

/// `../x` climbs out of the pinset's volume: it is read where it is
/// named, not from inside the kubelet's timestamped directory.
#[test]
fn a_path_that_climbs_out_is_read_where_it_is_named() {
    let root = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = client(&ca, "api", later(), true);
    let pins = root.path().join("pins");
    let real = pins.join("..2026_01_01");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(root.path().join("identity")).unwrap();
    std::fs::write(root.path().join("identity/tls.crt"), &cert).unwrap();
    std::fs::write(root.path().join("identity/tls.key"), &key).unwrap();
    let yaml = entry("    client_cert: {cert: ../identity/tls.crt, key: ../identity/tls.key}\n");
    std::fs::write(real.join("pins.yaml"), &yaml).unwrap();
    std::os::unix::fs::symlink("..2026_01_01/pins.yaml", pins.join("pins.yaml")).unwrap();
    let p = crate::load(&pins.join("pins.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let c = p.hosts[0].client_cert.as_ref().unwrap();
    assert_eq!(c.cert_path, pins.join("../identity/tls.crt"));
}
