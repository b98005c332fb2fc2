//! Public keys read from a DER SubjectPublicKeyInfo, and the signature
//! checks this crate needs: a CT log's signature over an SCT (RFC 6962
//! §3.2: ECDSA P-256 or RSA PKCS#1, both with SHA-256 — the only two the
//! logs in Chrome's list use) and an X.509 signature (an OCSP response, a
//! delegated responder's certificate) named by its AlgorithmIdentifier.
//!
//! `ring` does the arithmetic; this module only maps identifiers to
//! `ring` algorithms. Algorithms webpki refuses (SHA-1, RSA-PSS with
//! parameters we would have to match byte for byte) are refused here too.

use der::asn1::ObjectIdentifier as Oid;
use der::Decode;
use ring::signature::{self, VerificationAlgorithm};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};

use crate::oid;

/// What is wrong with a key.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a DER SubjectPublicKeyInfo: {0}")]
    Der(String),
    #[error("unsupported key algorithm {0}")]
    Algorithm(String),
    #[error("unsupported elliptic curve {0}")]
    Curve(String),
    #[error("malformed public key bits")]
    Bits,
}

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature algorithm {0} is not supported with this key")]
    Unsupported(String),
    #[error("signature does not verify")]
    Invalid,
}

/// The kinds of keys the checks accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// A public key, ready for `ring`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    /// The subjectPublicKey BIT STRING's contents: RSAPublicKey DER, an
    /// uncompressed EC point, or the 32 Ed25519 bytes — what `ring` takes.
    bits: Vec<u8>,
}

// === impl PublicKey ===

impl PublicKey {
    pub fn from_spki_der(spki: &[u8]) -> Result<Self, KeyError> {
        let info =
            SubjectPublicKeyInfoRef::from_der(spki).map_err(|e| KeyError::Der(e.to_string()))?;
        let bits = info
            .subject_public_key
            .as_bytes()
            .ok_or(KeyError::Bits)?
            .to_vec();
        let (alg, param) = info
            .algorithm
            .oids()
            .map_err(|e| KeyError::Der(e.to_string()))?;
        let kind = match alg {
            oid::RSA_ENCRYPTION => KeyKind::Rsa,
            oid::EC_PUBLIC_KEY => match param {
                Some(oid::SECP256R1) => KeyKind::EcP256,
                Some(oid::SECP384R1) => KeyKind::EcP384,
                Some(other) => return Err(KeyError::Curve(other.to_string())),
                None => return Err(KeyError::Curve("(none)".into())),
            },
            oid::ED25519 => KeyKind::Ed25519,
            other => return Err(KeyError::Algorithm(other.to_string())),
        };
        let ok = match kind {
            KeyKind::EcP256 => bits.len() == 65 && bits[0] == 4,
            KeyKind::EcP384 => bits.len() == 97 && bits[0] == 4,
            KeyKind::Ed25519 => bits.len() == 32,
            KeyKind::Rsa => !bits.is_empty(),
        };
        if !ok {
            return Err(KeyError::Bits);
        }
        Ok(Self { kind, bits })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Checks a CT log's `digitally-signed` signature (RFC 5246 §4.7 as
    /// RFC 6962 uses it): `hash` and `sig` are the TLS
    /// SignatureAndHashAlgorithm code points.
    pub fn verify_tls(
        &self,
        hash: u8,
        sig: u8,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        // RFC 6962 §2.1.4: logs sign with ECDSA NIST P-256 or RSA, SHA-256.
        const SHA256: u8 = 4;
        const RSA: u8 = 1;
        const ECDSA: u8 = 3;
        let alg: &dyn VerificationAlgorithm = match (hash, sig, self.kind) {
            (SHA256, ECDSA, KeyKind::EcP256) => &signature::ECDSA_P256_SHA256_ASN1,
            (SHA256, RSA, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA256,
            _ => {
                return Err(SignatureError::Unsupported(format!(
                    "hash {hash}/signature {sig}"
                )))
            }
        };
        self.verify_with(alg, message, signature)
    }

    /// Checks an X.509-style signature whose algorithm is `alg`.
    pub fn verify_x509(
        &self,
        alg: &AlgorithmIdentifierOwned,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let chosen = x509_algorithm(alg.oid, self.kind)
            .ok_or_else(|| SignatureError::Unsupported(alg.oid.to_string()))?;
        self.verify_with(chosen, message, signature)
    }

    fn verify_with(
        &self,
        alg: &'static dyn VerificationAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        signature::UnparsedPublicKey::new(alg, &self.bits)
            .verify(message, signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

fn x509_algorithm(alg: Oid, key: KeyKind) -> Option<&'static dyn VerificationAlgorithm> {
    use signature as s;
    Some(match (alg, key) {
        (oid::SHA256_WITH_RSA, KeyKind::Rsa) => &s::RSA_PKCS1_2048_8192_SHA256,
        (oid::SHA384_WITH_RSA, KeyKind::Rsa) => &s::RSA_PKCS1_2048_8192_SHA384,
        (oid::SHA512_WITH_RSA, KeyKind::Rsa) => &s::RSA_PKCS1_2048_8192_SHA512,
        (oid::ECDSA_WITH_SHA256, KeyKind::EcP256) => &s::ECDSA_P256_SHA256_ASN1,
        (oid::ECDSA_WITH_SHA384, KeyKind::EcP256) => &s::ECDSA_P256_SHA384_ASN1,
        (oid::ECDSA_WITH_SHA256, KeyKind::EcP384) => &s::ECDSA_P384_SHA256_ASN1,
        (oid::ECDSA_WITH_SHA384, KeyKind::EcP384) => &s::ECDSA_P384_SHA384_ASN1,
        (oid::ED25519, KeyKind::Ed25519) => &s::ED25519,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// The DER SPKI of a P-256 key (RFC 5480 prefix, then the point).
    pub fn p256_spki(point: &[u8]) -> Vec<u8> {
        let mut v = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        v.extend_from_slice(point);
        v
    }

    /// A well-formed P-256 SPKI that differs per `seed` (not a curve
    /// point: for list handling, not for signatures).
    pub fn p256_spki_of_seed(seed: u8) -> Vec<u8> {
        let mut point = [seed; 65];
        point[0] = 4;
        p256_spki(&point)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::p256_spki;
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    #[test]
    fn p256_tls_signature_verifies_and_a_flipped_bit_does_not() {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("keygen");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let key = PublicKey::from_spki_der(&p256_spki(pair.public_key().as_ref())).expect("spki");
        assert_eq!(key.kind(), KeyKind::EcP256);
        let sig = pair.sign(&rng, b"message").expect("sign");
        assert_eq!(key.verify_tls(4, 3, b"message", sig.as_ref()), Ok(()));
        assert_eq!(
            key.verify_tls(4, 3, b"messagE", sig.as_ref()),
            Err(SignatureError::Invalid)
        );
        // RSA code point with an EC key, and SHA-1: refused, not tried.
        assert!(matches!(
            key.verify_tls(4, 1, b"message", sig.as_ref()),
            Err(SignatureError::Unsupported(_))
        ));
        assert!(matches!(
            key.verify_tls(2, 3, b"message", sig.as_ref()),
            Err(SignatureError::Unsupported(_))
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(PublicKey::from_spki_der(b"").is_err());
        assert!(PublicKey::from_spki_der(&[0x30, 0x03, 0x02, 0x01, 0x05]).is_err());
        // A P-256 SPKI whose point is cut short (outer lengths fixed up).
        let mut short = p256_spki(&[4; 10]);
        short[1] = (2 + 0x13) + 2 + 11;
        short[0x18] = 11;
        assert_eq!(PublicKey::from_spki_der(&short), Err(KeyError::Bits));
    }
}
