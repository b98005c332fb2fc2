//! Compatibility with the real cosign (built by scripts/tools/cosign.sh):
//! its keys and signatures verify here, ours verify there, and every
//! tampering is refused on both sides.

mod support;

use pinproxy_sign::admission::{review, Admission, Object};
use pinproxy_sign::{Algorithm, KeyRing, PublicKey, SignError, SigningKey, VerifyError};
use support::{pinset, serial_of, Scratch};

fn public(scratch: &Scratch, name: &str) -> PublicKey {
    PublicKey::from_pem(&scratch.read(name)).expect("a cosign.pub parses")
}

#[test]
fn a_cosign_signature_verifies_with_cosign_pub() {
    let s = Scratch::new();
    s.cosign_keypair("cosign");
    let pins = pinset(3, "");
    s.write("pins.yaml", &pins);
    let sig = s.cosign_sign("cosign", "pins.yaml");
    // cosign prints the signature with a newline: the whitespace rule.
    assert_eq!(sig.last(), Some(&b'\n'));

    let key = public(&s, "cosign.pub");
    assert_eq!(key.algorithm(), Algorithm::EcdsaP256);
    let keys = KeyRing::new([key.clone()]).expect("one key");
    let verified = keys
        .verify(&pins, &sig)
        .expect("cosign's signature verifies");
    assert_eq!(verified.key(), key.id());
    assert_eq!(verified.algorithm(), Algorithm::EcdsaP256);

    // The key id is the pin spelling of the SPKI hash, as openssl computes it.
    s.openssl(&[
        "pkey",
        "-pubin",
        "-in",
        "cosign.pub",
        "-outform",
        "DER",
        "-out",
        "spki.der",
    ]);
    let digest = s
        .openssl(&["dgst", "-sha256", "-binary", "spki.der"])
        .stdout;
    use base64::Engine as _;
    let expected = format!(
        "sha256/{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    assert_eq!(key.id().to_string(), expected);

    // `--output-signature` writes the same bytes without the newline.
    s.cosign_ok(&[
        "sign-blob",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        "--yes",
        "--output-signature",
        "out.sig",
        "pins.yaml",
    ]);
    let file_sig = s.read("out.sig");
    assert_ne!(file_sig.last(), Some(&b'\n'));
    keys.verify(&pins, &file_sig)
        .expect("cosign's --output-signature verifies");
}

#[test]
fn one_byte_changed_is_refused() {
    let s = Scratch::new();
    s.cosign_keypair("cosign");
    let pins = pinset(3, "");
    s.write("pins.yaml", &pins);
    let sig = s.cosign_sign("cosign", "pins.yaml");
    let keys = KeyRing::new([public(&s, "cosign.pub")]).expect("one key");
    keys.verify(&pins, &sig)
        .expect("the untouched file verifies");

    for at in [0, pins.len() / 2, pins.len() - 1] {
        let mut edited = pins.clone();
        edited[at] ^= 0x01;
        let err = keys.verify(&edited, &sig).unwrap_err();
        assert!(
            matches!(err, VerifyError::NoKeyVerifies { .. }),
            "byte {at}: {err}"
        );
        assert_eq!(err.tried(), keys.ids().as_slice());
    }
    let mut longer = pins.clone();
    longer.push(b'\n');
    assert!(keys.verify(&longer, &sig).is_err(), "a trailing newline");
    // cosign agrees: the same edit fails its own verify-blob.
    let mut edited = pins.clone();
    edited[pins.len() / 2] ^= 0x01;
    s.write("edited.yaml", &edited);
    s.write("pins.yaml.sig", &sig);
    assert!(!s
        .cosign_verify("cosign.pub", "pins.yaml.sig", "edited.yaml")
        .status
        .success());

    // A flipped bit in the signature itself.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(sig.trim_ascii()).expect("base64");
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    assert!(keys.verify(&pins, b64.encode(&raw).as_bytes()).is_err());
}

#[test]
fn a_signature_by_another_key_is_refused_and_names_the_tried_key() {
    let s = Scratch::new();
    s.cosign_keypair("trusted");
    s.cosign_keypair("other");
    let pins = pinset(4, "");
    s.write("pins.yaml", &pins);
    let sig = s.cosign_sign("other", "pins.yaml");
    let trusted = public(&s, "trusted.pub");
    let keys = KeyRing::new([trusted.clone()]).expect("one key");
    let err = keys.verify(&pins, &sig).unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "signature does not verify with any trusted key (tried {})",
            trusted.id()
        )
    );
    // The refusal carries no byte of the file.
    assert!(!text.contains("api.example.com"), "{text}");
}

#[test]
fn two_keys_signed_by_the_second_reports_the_second() {
    let s = Scratch::new();
    s.cosign_keypair("old");
    s.cosign_keypair("new");
    let pins = pinset(5, "");
    s.write("pins.yaml", &pins);
    let sig = s.cosign_sign("new", "pins.yaml");
    let old = public(&s, "old.pub");
    let new = public(&s, "new.pub");
    assert_ne!(old.id(), new.id());
    let keys = KeyRing::new([old, new.clone()]).expect("two keys");
    let verified = keys.verify(&pins, &sig).expect("the second key verifies");
    assert_eq!(verified.key(), new.id());
}

#[test]
fn our_p256_signature_verifies_with_cosign_verify_blob() {
    let s = Scratch::new();
    let (key, pem) = SigningKey::generate(Algorithm::EcdsaP256).expect("keygen");
    s.write("our.pub", pem.public_pem.as_bytes());
    let pins = pinset(6, "");
    s.write("pins.yaml", &pins);
    s.write(
        "pins.yaml.sig",
        key.sign(&pins).expect("sign").to_base64().as_bytes(),
    );

    let out = s.cosign_verify("our.pub", "pins.yaml.sig", "pins.yaml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cosign verify-blob refused ours: {stderr}"
    );
    assert!(stderr.contains("Verified OK"), "{stderr}");

    // The control: cosign refuses our signature over other bytes.
    s.write("other.yaml", &pinset(7, ""));
    let out = s.cosign_verify("our.pub", "pins.yaml.sig", "other.yaml");
    assert!(
        !out.status.success(),
        "cosign accepted a signature over other bytes"
    );
}

#[test]
fn our_ed25519_signature_verifies_with_cosign_verify_blob() {
    // cosign cannot make Ed25519 keys (generate-key-pair is P-256 only) and
    // its sign-blob panics with an imported Ed25519 key (v2.6.5: "crypto:
    // requested hash function #0 is unavailable"), but verify-blob checks
    // pure Ed25519 signatures with an Ed25519 public key.
    let s = Scratch::new();
    let (key, pem) = SigningKey::generate(Algorithm::Ed25519).expect("keygen");
    s.write("ed.pub", pem.public_pem.as_bytes());
    let pins = pinset(8, "");
    s.write("pins.yaml", &pins);
    s.write(
        "pins.yaml.sig",
        key.sign(&pins).expect("sign").to_base64().as_bytes(),
    );
    let out = s.cosign_verify("ed.pub", "pins.yaml.sig", "pins.yaml");
    assert!(
        out.status.success(),
        "cosign verify-blob refused our Ed25519 signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.write("other.yaml", &pinset(9, ""));
    assert!(!s
        .cosign_verify("ed.pub", "pins.yaml.sig", "other.yaml")
        .status
        .success());
}

#[test]
fn cosign_imports_our_p256_key_and_its_signatures_verify_here() {
    // A team moving from `pinproxy keygen` to cosign keeps its key.
    let s = Scratch::new();
    let (key, pem) = SigningKey::generate(Algorithm::EcdsaP256).expect("keygen");
    s.write("ours.key", pem.private_pem.as_bytes());
    s.cosign_ok(&[
        "import-key-pair",
        "--key",
        "ours.key",
        "--output-key-prefix",
        "imported",
    ]);
    assert_eq!(&public(&s, "imported.pub"), key.public_key());
    let pins = pinset(10, "");
    s.write("pins.yaml", &pins);
    let sig = s.cosign_sign("imported", "pins.yaml");
    let keys = KeyRing::new([key.public_key().clone()]).expect("one key");
    assert_eq!(
        keys.verify(&pins, &sig).expect("verifies").key(),
        key.public_key().id()
    );
}

#[test]
fn a_cosign_private_key_is_refused_with_a_pointer_to_cosign() {
    let s = Scratch::new();
    s.cosign_keypair("cosign");
    let err = SigningKey::from_pem(&s.read("cosign.key")).unwrap_err();
    assert!(matches!(err, SignError::CosignKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "this is a cosign private key (ENCRYPTED SIGSTORE PRIVATE KEY); sign with \
         `cosign sign-blob --key cosign.key --tlog-upload=false FILE > FILE.sig`, or use a PKCS#8 key \
         (`pinproxy keygen` writes one)"
    );
    // And as a public key, a private key file is named for what it is.
    let err = PublicKey::from_pem(&s.read("cosign.key")).unwrap_err();
    assert!(err.to_string().contains("holds a private key"), "{err}");
}

#[test]
fn admission_of_a_cosign_signed_update() {
    let s = Scratch::new();
    s.cosign_keypair("cosign");
    let keys = KeyRing::new([public(&s, "cosign.pub")]).expect("one key");
    let v7 = pinset(7, "");
    s.write("v7.yaml", &v7);
    let sig7 = s.cosign_sign("cosign", "v7.yaml");
    let v6 = pinset(6, "  old.example.com:\n    mode: report\n");
    s.write("v6.yaml", &v6);
    let sig6 = s.cosign_sign("cosign", "v6.yaml");

    let old = Object {
        pins: Some(&v7),
        signature: Some(&sig7),
    };
    let replay = Object {
        pins: Some(&v6),
        signature: Some(&sig6),
    };
    match review(&keys, &replay, Some(&old), serial_of) {
        Admission::Deny(d) => {
            assert_eq!(d.reason(), "rollback");
            assert_eq!(
                d.message(),
                "pinproxy: serial 6 is lower than the serial in force (7): a rollback is refused"
            );
        }
        Admission::Allow(a) => panic!("a replayed serial 6 was admitted: {a:?}"),
    }
    match review(&keys, &old, Some(&replay), serial_of) {
        Admission::Allow(a) => assert_eq!(a.serial().get(), 7),
        Admission::Deny(d) => panic!("7 over 6 was denied: {}", d.message()),
    }
}
