use super::lines::key_of;
use super::*;

#[test]
fn index_finds_hosts_fields_and_duplicates() {
    let text = "version: 1\ndefaults:\n  trust: ca.pem\nhosts:\n  a.test:\n    pins: [x]\n\n    # c\n    mode: report\n  \"*.b.test\":\n    pins:\n      - y\n  a.test:\n    trust: pin-only\n";
    let mut idx = LineIndex::new(text);
    assert_eq!(idx.top("version"), Some(1));
    assert_eq!(idx.default_field("trust"), Some(3));
    let (line, fields) = idx.host("a.test");
    assert_eq!(line, Some(5));
    assert_eq!(fields.get("pins"), Some(&6));
    assert_eq!(fields.get("mode"), Some(&9));
    let (line, fields) = idx.host("*.b.test");
    assert_eq!((line, fields.get("pins")), (Some(10), Some(&11)));
    let (line, fields) = idx.host("a.test");
    assert_eq!((line, fields.get("trust")), (Some(13), Some(&14)));
    assert_eq!(idx.host("a.test").0, None);
}

/// A bundle named by every entry is read (and hashed, and held) once.
#[test]
fn a_bundle_named_by_many_entries_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let pin = "sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=";
    let entry = |h: &str| format!("  {h}:\n    pins: [{pin}]\n    trust: ca.pem\n");
    let yaml = format!("version: 1\nhosts:\n{}{}", entry("a.test"), entry("b.test"));
    let now = OffsetDateTime::now_utc();
    let policy = super::super::parse(yaml.as_bytes(), dir.path(), now).unwrap();
    let anchors: Vec<_> = policy
        .hosts
        .iter()
        .map(|h| match &h.trust {
            Trust::Bundle { anchors, .. } => anchors.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(Arc::ptr_eq(&anchors[0], &anchors[1]), "read twice");
}

#[test]
fn keys() {
    assert_eq!(key_of("a.test:").as_deref(), Some("a.test"));
    assert_eq!(key_of("\"*.x\": {pins: []}").as_deref(), Some("*.x"));
    assert_eq!(key_of("'q': 1").as_deref(), Some("q"));
    assert_eq!(key_of("- sha256/x"), None);
    assert_eq!(key_of("{a: b}"), None);
}
