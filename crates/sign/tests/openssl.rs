//! Keys users already have, made by OpenSSL: we sign with them, OpenSSL
//! checks our signatures, and our key files read back in OpenSSL.

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pinproxy_sign::{Algorithm, KeyRing, PublicKey, SignError, SigningKey};
use support::{pinset, Scratch};

/// Signs `pins.yaml` with `key_file`, checks the public key against
/// OpenSSL's, and has OpenSSL verify the signature.
fn sign_and_openssl_verifies(s: &Scratch, key_file: &str, algorithm: Algorithm) {
    let key = SigningKey::from_pem(&s.read(key_file)).expect("the OpenSSL key reads");
    assert_eq!(key.public_key().algorithm(), algorithm);
    let openssl_pub = s.openssl(&["pkey", "-in", key_file, "-pubout"]).stdout;
    assert_eq!(
        PublicKey::from_pem(&openssl_pub).expect("openssl's public key"),
        *key.public_key(),
        "{key_file}: our public key differs from OpenSSL's"
    );
    assert_eq!(key.public_key().to_pem().as_bytes(), openssl_pub.as_slice());

    let pins = pinset(1, "");
    s.write("pins.yaml", &pins);
    let sig = key.sign(&pins).expect("sign");
    s.write("sig.bin", sig.as_bytes());
    s.write("key.pub", &openssl_pub);
    let verify: &[&str] = match algorithm {
        Algorithm::EcdsaP256 => &[
            "dgst",
            "-sha256",
            "-verify",
            "key.pub",
            "-signature",
            "sig.bin",
            "pins.yaml",
        ],
        _ => &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "key.pub",
            "-rawin",
            "-in",
            "pins.yaml",
            "-sigfile",
            "sig.bin",
        ],
    };
    let out = s.openssl(verify);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified"),
        "{key_file}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let keys = KeyRing::new([key.public_key().clone()]).expect("one key");
    keys.verify(&pins, sig.to_base64().as_bytes())
        .expect("our own signature verifies");
}

#[test]
fn pkcs8_p256_from_openssl_genpkey() {
    let s = Scratch::new();
    s.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ec.key",
    ]);
    sign_and_openssl_verifies(&s, "ec.key", Algorithm::EcdsaP256);
}

#[test]
fn sec1_p256_from_openssl_ecparam() {
    let s = Scratch::new();
    s.openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "sec1.key",
    ]);
    assert!(
        String::from_utf8_lossy(&s.read("sec1.key")).starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    sign_and_openssl_verifies(&s, "sec1.key", Algorithm::EcdsaP256);
}

#[test]
fn pkcs8_v1_ed25519_from_openssl_genpkey() {
    let s = Scratch::new();
    s.openssl(&["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    sign_and_openssl_verifies(&s, "ed.key", Algorithm::Ed25519);
}

#[test]
fn openssl_ed25519_signatures_verify_here() {
    let s = Scratch::new();
    s.openssl(&["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    s.openssl(&["pkey", "-in", "ed.key", "-pubout", "-out", "ed.pub"]);
    let pins = pinset(2, "");
    s.write("pins.yaml", &pins);
    let raw = s
        .openssl(&[
            "pkeyutl",
            "-sign",
            "-inkey",
            "ed.key",
            "-rawin",
            "-in",
            "pins.yaml",
        ])
        .stdout;
    assert_eq!(raw.len(), 64);
    let keys =
        KeyRing::new([PublicKey::from_pem(&s.read("ed.pub")).expect("ed.pub")]).expect("one key");
    let sig = format!("{}\n", STANDARD.encode(&raw));
    let verified = keys.verify(&pins, sig.as_bytes()).expect("verifies");
    assert_eq!(verified.algorithm(), Algorithm::Ed25519);
    let mut edited = pins.clone();
    edited[0] ^= 1;
    assert!(keys.verify(&edited, sig.as_bytes()).is_err());
}

#[test]
fn our_key_files_read_in_openssl() {
    for algorithm in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
        let s = Scratch::new();
        let (_, pem) = SigningKey::generate(algorithm).expect("keygen");
        s.write("ours.key", pem.private_pem.as_bytes());
        s.write("ours.pub", pem.public_pem.as_bytes());
        let derived = s.openssl(&["pkey", "-in", "ours.key", "-pubout"]).stdout;
        assert_eq!(derived, pem.public_pem.as_bytes(), "{algorithm}");
        s.openssl(&["pkey", "-pubin", "-in", "ours.pub", "-noout"]);
    }
}

#[test]
fn unsupported_keys_are_named() {
    let s = Scratch::new();
    s.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        "p384.key",
    ]);
    let err = SigningKey::from_pem(&s.read("p384.key")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported private key EC key on curve P-384: pinproxy signs with ECDSA P-256 or Ed25519"
    );
    s.openssl(&["pkey", "-in", "p384.key", "-pubout", "-out", "p384.pub"]);
    let err = PublicKey::from_pem(&s.read("p384.pub")).unwrap_err();
    assert!(err.to_string().contains("EC key on curve P-384"), "{err}");

    s.openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa.key",
    ]);
    let err = SigningKey::from_pem(&s.read("rsa.key")).unwrap_err();
    assert!(
        err.to_string().contains("unsupported private key RSA"),
        "{err}"
    );
    s.openssl(&["pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"]);
    let err = PublicKey::from_pem(&s.read("rsa.pub")).unwrap_err();
    assert!(
        err.to_string().contains("unsupported key type RSA"),
        "{err}"
    );

    s.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ec.key",
    ]);
    s.openssl(&[
        "pkcs8", "-topk8", "-in", "ec.key", "-out", "enc.key", "-passout", "pass:x",
    ]);
    assert!(matches!(
        SigningKey::from_pem(&s.read("enc.key")),
        Err(SignError::Encrypted)
    ));
}

#[test]
fn a_sec1_key_without_its_public_key_says_how_to_fix_it() {
    let s = Scratch::new();
    s.openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "full.key",
    ]);
    // `-no_public` drops the optional [1] publicKey from the ECPrivateKey.
    s.openssl(&["ec", "-in", "full.key", "-no_public", "-out", "bare.key"]);
    let err = SigningKey::from_pem(&s.read("bare.key")).unwrap_err();
    assert!(matches!(err, SignError::NoPublicKey), "{err}");
    // The same inside PKCS#8 (OpenSSL keeps the "no public key" flag).
    s.openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "bare.key",
        "-out",
        "bare8.key",
    ]);
    let err = SigningKey::from_pem(&s.read("bare8.key")).unwrap_err();
    assert!(matches!(err, SignError::NoPublicKey), "{err}");
    // The fix the message gives works.
    assert!(
        err.to_string()
            .contains("openssl ec -in KEY -conv_form uncompressed"),
        "{err}"
    );
    s.openssl(&[
        "ec",
        "-in",
        "bare.key",
        "-conv_form",
        "uncompressed",
        "-out",
        "fixed.key",
    ]);
    let fixed = SigningKey::from_pem(&s.read("fixed.key")).expect("the fixed key reads");
    let full = SigningKey::from_pem(&s.read("full.key")).expect("the full key reads");
    assert_eq!(fixed.public_key(), full.public_key());
}
