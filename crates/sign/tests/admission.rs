//! The admission rule: what `kubectl apply` prints for each bad pinset
//! object, and which updates pass.

mod support;

use pinproxy_sign::admission::{review, Admission, Object};
use pinproxy_sign::{Algorithm, KeyRing, SigningKey};
use support::{pinset, serial_of};

struct World {
    key: SigningKey,
    keys: KeyRing,
}

impl World {
    fn new() -> Self {
        let (key, _) = SigningKey::generate(Algorithm::EcdsaP256).expect("keygen");
        let keys = KeyRing::new([key.public_key().clone()]).expect("one key");
        World { key, keys }
    }

    fn sig(&self, pins: &[u8]) -> Vec<u8> {
        self.key.sign(pins).expect("sign").to_base64().into_bytes()
    }

    fn id(&self) -> String {
        self.key.public_key().id().to_string()
    }

    fn deny(&self, new: Object<'_>, old: Option<Object<'_>>) -> (String, &'static str) {
        match review(&self.keys, &new, old.as_ref(), serial_of) {
            Admission::Deny(d) => (d.message().to_owned(), d.reason()),
            Admission::Allow(a) => panic!("admitted: {a:?}"),
        }
    }

    fn allow(&self, new: Object<'_>, old: Option<Object<'_>>) -> u64 {
        match review(&self.keys, &new, old.as_ref(), serial_of) {
            Admission::Allow(a) => a.serial().get(),
            Admission::Deny(d) => panic!("denied: {}", d.message()),
        }
    }
}

fn object<'a>(pins: &'a [u8], sig: &'a [u8]) -> Object<'a> {
    Object {
        pins: Some(pins),
        signature: Some(sig),
    }
}

#[test]
fn a_signed_create_is_allowed_and_reports_key_and_hash() {
    let w = World::new();
    let pins = pinset(1, "");
    let sig = w.sig(&pins);
    match review(&w.keys, &object(&pins, &sig), None, serial_of) {
        Admission::Allow(a) => {
            assert_eq!(a.serial().get(), 1);
            assert_eq!(a.key().to_string(), w.id());
            assert_eq!(a.sha256(), &pinproxy_sign::Sha256::of(&pins));
        }
        Admission::Deny(d) => panic!("{}", d.message()),
    }
}

#[test]
fn an_unsigned_object_is_denied_with_how_to_sign() {
    let w = World::new();
    let pins = pinset(2, "");
    let (message, reason) = w.deny(
        Object {
            pins: Some(&pins),
            signature: None,
        },
        None,
    );
    assert_eq!(reason, "bad-signature");
    assert_eq!(
        message,
        "pinproxy: pins.yaml is not signed: the object has no pins.yaml.sig entry \
         (cosign sign-blob --key cosign.key --tlog-upload=false pins.yaml > pins.yaml.sig, \
         or pinproxy sign --key KEY pins.yaml)"
    );
}

#[test]
fn an_edited_pinset_is_denied_naming_the_tried_keys() {
    let w = World::new();
    let pins = pinset(3, "");
    let sig = w.sig(&pins);
    let edited = pinset(3, "  evil.example.com:\n    mode: report\n");
    let (message, reason) = w.deny(object(&edited, &sig), None);
    assert_eq!(reason, "bad-signature");
    assert_eq!(
        message,
        format!(
            "pinproxy: pins.yaml is not signed by a trusted key (tried {}): signature does not verify",
            w.id()
        )
    );
    assert!(
        !message.contains("evil"),
        "the file's bytes are never echoed"
    );
}

#[test]
fn a_stranger_key_and_broken_sig_files_are_denied() {
    let w = World::new();
    let stranger = World::new();
    let pins = pinset(4, "");
    let (message, _) = w.deny(object(&pins, &stranger.sig(&pins)), None);
    assert!(message.ends_with("signature does not verify"), "{message}");
    assert!(
        message.contains(&w.id()) && !message.contains(&stranger.id()),
        "{message}"
    );

    let (message, reason) = w.deny(object(&pins, b" \n"), None);
    assert_eq!(reason, "bad-signature");
    assert!(message.ends_with(": pins.yaml.sig is empty"), "{message}");
    let (message, _) = w.deny(object(&pins, b"%%%"), None);
    assert!(message.contains("pins.yaml.sig is not base64"), "{message}");

    // An Ed25519 signature when only a P-256 key is configured says so.
    let (ed, _) = SigningKey::generate(Algorithm::Ed25519).expect("keygen");
    let ed_sig = ed.sign(&pins).expect("sign").to_base64();
    let (message, _) = w.deny(object(&pins, ed_sig.as_bytes()), None);
    assert!(
        message.ends_with("; it is a 64-byte Ed25519 signature and no Ed25519 key is configured"),
        "{message}"
    );
}

#[test]
fn rollback_and_equal_serial_updates_are_denied() {
    let w = World::new();
    let v7 = pinset(7, "");
    let s7 = w.sig(&v7);
    let v6 = pinset(6, "");
    let s6 = w.sig(&v6);
    let (message, reason) = w.deny(object(&v6, &s6), Some(object(&v7, &s7)));
    assert_eq!(reason, "rollback");
    assert_eq!(
        message,
        "pinproxy: serial 6 is lower than the serial in force (7): a rollback is refused"
    );

    let v7b = pinset(7, "  other.example.com:\n    mode: report\n");
    let s7b = w.sig(&v7b);
    let (message, reason) = w.deny(object(&v7b, &s7b), Some(object(&v7, &s7)));
    assert_eq!(reason, "rollback");
    assert!(
        message.starts_with("pinproxy: serial 7 is the serial in force but the content differs"),
        "{message}"
    );
    assert!(
        message.ends_with("a changed pinset needs a higher serial"),
        "{message}"
    );
}

#[test]
fn updates_that_pass() {
    let w = World::new();
    let v7 = pinset(7, "");
    let s7 = w.sig(&v7);
    let v8 = pinset(8, "");
    let s8 = w.sig(&v8);
    assert_eq!(w.allow(object(&v8, &s8), Some(object(&v7, &s7))), 8);
    // A label-only update: same bytes, same serial.
    assert_eq!(w.allow(object(&v7, &s7), Some(object(&v7, &s7))), 7);
    // Re-signed by a new key during a rotation: same pinset, new .sig.
    let (new_key, _) = SigningKey::generate(Algorithm::Ed25519).expect("keygen");
    let keys =
        KeyRing::new([w.key.public_key().clone(), new_key.public_key().clone()]).expect("two keys");
    let resigned = new_key.sign(&v7).expect("sign").to_base64();
    match review(
        &keys,
        &object(&v7, resigned.as_bytes()),
        Some(&object(&v7, &s7)),
        serial_of,
    ) {
        Admission::Allow(a) => assert_eq!(a.key(), new_key.public_key().id()),
        Admission::Deny(d) => panic!("{}", d.message()),
    }
}

#[test]
fn only_a_verified_old_object_sets_the_floor() {
    let w = World::new();
    let v3 = pinset(3, "");
    let s3 = w.sig(&v3);
    // Someone wrote serial 999 past the webhook, unsigned or signed by a
    // stranger: it must not block the real serial 3.
    let v999 = pinset(999, "");
    let unsigned = Object {
        pins: Some(&v999),
        signature: None,
    };
    assert_eq!(w.allow(object(&v3, &s3), Some(unsigned)), 3);
    let stranger = World::new();
    let s999 = stranger.sig(&v999);
    assert_eq!(w.allow(object(&v3, &s3), Some(object(&v999, &s999))), 3);
    // An old object without pins.yaml sets no floor either.
    assert_eq!(w.allow(object(&v3, &s3), Some(Object::default())), 3);
}

#[test]
fn objects_without_a_pinset_or_a_serial_are_denied() {
    let w = World::new();
    let (message, reason) = w.deny(Object::default(), None);
    assert_eq!(reason, "failure");
    assert_eq!(
        message,
        "pinproxy: the object is labelled as a pinset but has no pins.yaml entry"
    );

    let no_serial = b"version: 1\nhosts: {}\n".to_vec();
    let sig = w.sig(&no_serial);
    let (message, reason) = w.deny(object(&no_serial, &sig), None);
    assert_eq!(reason, "failure");
    assert!(
        message.starts_with(&format!(
            "pinproxy: pins.yaml (signed by {}) has no valid serial: ",
            w.id()
        )),
        "{message}"
    );
    assert!(message.contains("missing field `serial`"), "{message}");

    let zero = pinset(0, "");
    let sig = w.sig(&zero);
    let (message, _) = w.deny(object(&zero, &sig), None);
    assert!(
        message.ends_with("has no valid serial: serial must be a positive integer, not 0"),
        "{message}"
    );
}

/// The old object is no floor for a CREATE: deleting the object and
/// creating it with an old serial passed. The webhook's minimum serial is
/// a floor for every CREATE and UPDATE.
#[test]
fn a_create_below_the_minimum_serial_is_a_rollback() {
    use pinproxy_sign::admission::review_with_minimum;
    use pinproxy_sign::Serial;
    let w = World::new();
    let min = Some(Serial::new(3).expect("positive"));
    let (old1, v3) = (pinset(1, ""), pinset(3, ""));
    let (s1, s3) = (w.sig(&old1), w.sig(&v3));
    // Without a minimum, the CREATE of serial 1 passes: the gap closed here.
    assert_eq!(w.allow(object(&old1, &s1), None), 1);
    let judge = |new: Object<'_>, old: Option<Object<'_>>| {
        review_with_minimum(&w.keys, &new, old.as_ref(), min, serial_of)
    };
    match judge(object(&old1, &s1), None) {
        Admission::Deny(d) => {
            assert_eq!(d.reason(), "rollback");
            assert_eq!(
                d.message(),
                "pinproxy: serial 1 is lower than the minimum serial (3, --pinset-min-serial): \
                 a rollback is refused"
            );
        }
        Admission::Allow(a) => panic!("admitted: {a:?}"),
    }
    // An UPDATE from an old object below the minimum too.
    let old2 = pinset(2, "");
    let s2 = w.sig(&old2);
    assert!(matches!(
        judge(object(&old1, &s1), Some(object(&old2, &s2))),
        Admission::Deny(_)
    ));
    // The minimum itself, and above it, pass.
    for (pins, sig, n) in [(&v3, &s3, 3), (&pinset(4, ""), &w.sig(&pinset(4, "")), 4)] {
        match judge(object(pins, sig), None) {
            Admission::Allow(a) => assert_eq!(a.serial().get(), n),
            Admission::Deny(d) => panic!("denied: {}", d.message()),
        }
    }
    // An old object above the minimum is still the floor.
    let v5 = pinset(5, "");
    let s5 = w.sig(&v5);
    assert!(matches!(
        judge(object(&v3, &s3), Some(object(&v5, &s5))),
        Admission::Deny(_)
    ));
}
