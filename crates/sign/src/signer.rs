//! Signing a pinset and making key pairs, for users without cosign
//! (`pinproxy sign`, `pinproxy keygen`).
//!
//! The `.sig` written is byte for byte the format `cosign sign-blob --key`
//! prints (base64 of the DER ECDSA signature, no newline), so `cosign
//! verify-blob` accepts it. Private keys are unencrypted PEM: PKCS#8
//! (`PRIVATE KEY`, P-256 or Ed25519, v1 or v2) or SEC1 (`EC PRIVATE KEY`,
//! P-256). cosign's own `cosign.key` is scrypt+secretbox sealed in a format
//! only cosign reads; it is recognised and refused with a pointer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use spki::ObjectIdentifier;
use zeroize::Zeroizing;

use crate::key::{
    algorithm_name, curve_name, Algorithm, KeyError, PublicKey, OID_EC_PUBLIC_KEY, OID_ED25519,
    OID_P256,
};

/// A private key file larger than this is not one of ours (a PKCS#8 P-256
/// PEM is 241 bytes).
const MAX_KEY_FILE: usize = 64 * 1024;

/// A key that can sign pinsets.
pub struct SigningKey {
    pair: Pair,
    public: PublicKey,
}

enum Pair {
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A signature, as the `.sig` file carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

/// A new key pair as PEM text: what `keygen` writes to `PREFIX.key` and
/// `PREFIX.pub`.
pub struct GeneratedPem {
    /// PKCS#8 `PRIVATE KEY` PEM; wiped from memory when dropped.
    pub private_pem: Zeroizing<String>,
    /// SubjectPublicKeyInfo `PUBLIC KEY` PEM.
    pub public_pem: String,
}

/// Why a private key could not be read or used. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error("the private key file is larger than {MAX_KEY_FILE} bytes")]
    TooLarge,
    #[error("the private key file is not PEM: {0}")]
    NotPem(#[source] pem::PemError),
    #[error("the private key file holds no PEM block")]
    NoPem,
    #[error("the private key file holds {0} PEM blocks; give exactly one key")]
    SeveralPem(usize),
    #[error("this is a cosign private key ({label}); sign with `cosign sign-blob --key cosign.key --tlog-upload=false FILE > FILE.sig`, or use a PKCS#8 key (`pinproxy keygen` writes one)")]
    CosignKey { label: String },
    #[error("this is an encrypted PKCS#8 key; pinproxy reads unencrypted PKCS#8 or SEC1 PEM (`openssl pkcs8 -in KEY -out PLAIN.key` decrypts it)")]
    Encrypted,
    #[error("the file holds a public key; signing needs the private key")]
    PublicKeyGiven,
    #[error("a PEM block labelled {label:?} is not a supported private key; expected \"PRIVATE KEY\" (PKCS#8) or \"EC PRIVATE KEY\" (SEC1)")]
    WrongLabel { label: String },
    #[error("the private key is not valid DER: {0}")]
    Der(#[source] der::Error),
    #[error("the EC private key is not a valid SEC1 ECPrivateKey: {0}")]
    Sec1(#[source] sec1::Error),
    #[error("unsupported private key {what}: pinproxy signs with ECDSA P-256 or Ed25519")]
    Unsupported { what: String },
    #[error("the EC private key does not carry its public key, which signing needs; rewrite it with `openssl ec -in KEY -conv_form uncompressed -out FIXED.key`")]
    NoPublicKey,
    #[error("the {algorithm} private key was rejected: {reason}")]
    Rejected {
        algorithm: Algorithm,
        reason: String,
    },
    #[error("the public half of the key is unusable: {0}")]
    Public(#[source] KeyError),
    #[error("the system random number generator failed")]
    Random,
}

// === impl SigningKey ===

impl SigningKey {
    /// Reads an unencrypted PEM private key (see the module docs).
    pub fn from_pem(text: &[u8]) -> Result<Self, SignError> {
        if text.len() > MAX_KEY_FILE {
            return Err(SignError::TooLarge);
        }
        let mut blocks = pem::parse_many(text).map_err(SignError::NotPem)?;
        let block = match blocks.len() {
            0 => return Err(SignError::NoPem),
            1 => blocks.remove(0),
            n => return Err(SignError::SeveralPem(n)),
        };
        let label = block.tag().to_owned();
        let der = Zeroizing::new(block.into_contents());
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => Self::from_sec1_der(&der),
            // cosign ≥ 2 writes the first, cosign 1 wrote the second.
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                Err(SignError::CosignKey { label })
            }
            "ENCRYPTED PRIVATE KEY" => Err(SignError::Encrypted),
            "PUBLIC KEY" => Err(SignError::PublicKeyGiven),
            _ => Err(SignError::WrongLabel { label }),
        }
    }

    /// A PKCS#8 `PrivateKeyInfo` (v1) or `OneAsymmetricKey` (v2), DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignError> {
        let info = pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| match e {
            pkcs8::Error::Asn1(e) => SignError::Der(e),
            other => SignError::Unsupported {
                what: format!("PKCS#8 document ({other})"),
            },
        })?;
        let oid = info.algorithm.oid;
        if oid == OID_ED25519 {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|e| rejected(Algorithm::Ed25519, e))?;
            return Self::from_pair(Pair::Ed25519(pair));
        }
        if oid != OID_EC_PUBLIC_KEY {
            return Err(SignError::Unsupported {
                what: algorithm_name(oid),
            });
        }
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| SignError::Unsupported {
                what: "EC key without a named curve".to_owned(),
            })?;
        check_p256(curve)?;
        // ring needs the public key inside the ECPrivateKey (RFC 5915's
        // optional [1]); name that case rather than "invalid encoding".
        let inner = sec1::EcPrivateKey::try_from(info.private_key).map_err(SignError::Sec1)?;
        if inner.public_key.is_none() {
            return Err(SignError::NoPublicKey);
        }
        let pair = EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|e| rejected(Algorithm::EcdsaP256, e))?;
        Self::from_pair(Pair::P256(pair))
    }

    /// A SEC1 `ECPrivateKey` (what `openssl ecparam -genkey` writes), DER.
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, SignError> {
        let key = sec1::EcPrivateKey::try_from(der).map_err(SignError::Sec1)?;
        let curve = key
            .parameters
            .and_then(|p| p.named_curve())
            .ok_or_else(|| SignError::Unsupported {
                what: "SEC1 EC key without a named curve".to_owned(),
            })?;
        check_p256(curve)?;
        let public = key.public_key.ok_or(SignError::NoPublicKey)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key.private_key,
            public,
            &SystemRandom::new(),
        )
        .map_err(|e| rejected(Algorithm::EcdsaP256, e))?;
        Self::from_pair(Pair::P256(pair))
    }

    /// Makes a new key pair: the key, and its PEM for `keygen` to write.
    pub fn generate(algorithm: Algorithm) -> Result<(Self, GeneratedPem), SignError> {
        let rng = SystemRandom::new();
        let der = match algorithm {
            Algorithm::EcdsaP256 => {
                EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map(|doc| Zeroizing::new(doc.as_ref().to_vec()))
                    .map_err(|_| SignError::Random)?
            }
            Algorithm::Ed25519 => {
                let v2 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SignError::Random)?;
                pkcs8_v1(v2.as_ref())?
            }
        };
        let key = Self::from_pkcs8_der(&der)?;
        let pem = GeneratedPem {
            private_pem: Zeroizing::new(crate::pem_lf("PRIVATE KEY", der.to_vec())),
            public_pem: key.public.to_pem(),
        };
        Ok((key, pem))
    }

    fn from_pair(pair: Pair) -> Result<Self, SignError> {
        let (algorithm, raw) = match &pair {
            Pair::P256(p) => (Algorithm::EcdsaP256, p.public_key().as_ref()),
            Pair::Ed25519(p) => (Algorithm::Ed25519, p.public_key().as_ref()),
        };
        let public = PublicKey::from_raw(algorithm, raw).map_err(SignError::Public)?;
        Ok(SigningKey { pair, public })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs the exact bytes of `file`: ECDSA P-256 over SHA-256 (DER), or
    /// Ed25519 over the bytes themselves.
    pub fn sign(&self, file: &[u8]) -> Result<Signature, SignError> {
        let bytes = match &self.pair {
            Pair::P256(p) => p
                .sign(&SystemRandom::new(), file)
                .map_err(|_| SignError::Random)?
                .as_ref()
                .to_vec(),
            Pair::Ed25519(p) => p.sign(file).as_ref().to_vec(),
        };
        Ok(Signature(bytes))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key);
/// OpenSSL 3.0 cannot read that ("unsupported"). Keep the v1 form that
/// `openssl genpkey -algorithm ed25519` writes: the public key is derived
/// from the seed on load anyway.
fn pkcs8_v1(v2: &[u8]) -> Result<Zeroizing<Vec<u8>>, SignError> {
    use der::Encode as _;
    let mut info = pkcs8::PrivateKeyInfo::try_from(v2).map_err(|e| SignError::Unsupported {
        what: format!("PKCS#8 document from ring ({e})"),
    })?;
    info.public_key = None;
    info.to_der().map(Zeroizing::new).map_err(SignError::Der)
}

fn check_p256(curve: ObjectIdentifier) -> Result<(), SignError> {
    if curve == OID_P256 {
        Ok(())
    } else {
        Err(SignError::Unsupported {
            what: format!("EC key on curve {}", curve_name(curve)),
        })
    }
}

fn rejected(algorithm: Algorithm, e: ring::error::KeyRejected) -> SignError {
    SignError::Rejected {
        algorithm,
        reason: e.to_string(),
    }
}

// === impl Signature ===

impl Signature {
    /// The raw signature: DER for ECDSA, 64 bytes for Ed25519.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `.sig` file's content: one base64 line without a newline, as
    /// cosign prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_read_back_and_keep_their_id() {
        for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
            let (key, pem) = SigningKey::generate(alg).expect("keygen");
            assert!(pem.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert!(!pem.private_pem.contains('\r'));
            let again = SigningKey::from_pem(pem.private_pem.as_bytes()).expect("reads back");
            assert_eq!(again.public_key(), key.public_key());
            let public = PublicKey::from_pem(pem.public_pem.as_bytes()).expect("pub");
            assert_eq!(&public, key.public_key());
            assert_eq!(public.algorithm(), alg);
        }
    }

    #[test]
    fn ed25519_signatures_are_64_raw_bytes_and_deterministic() {
        let (key, _) = SigningKey::generate(Algorithm::Ed25519).expect("keygen");
        let a = key.sign(b"serial: 3\n").expect("sign");
        assert_eq!(a.as_bytes().len(), 64);
        assert_eq!(a, key.sign(b"serial: 3\n").expect("sign"));
    }

    #[test]
    fn cosign_and_encrypted_keys_are_refused_with_a_pointer() {
        let cosign = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(cosign.as_bytes()).unwrap_err();
        assert!(matches!(err, SignError::CosignKey { .. }));
        assert!(err.to_string().contains("cosign sign-blob"), "{err}");
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            SigningKey::from_pem(enc.as_bytes()),
            Err(SignError::Encrypted)
        ));
        let (_, pem) = SigningKey::generate(Algorithm::Ed25519).expect("keygen");
        assert!(matches!(
            SigningKey::from_pem(pem.public_pem.as_bytes()),
            Err(SignError::PublicKeyGiven)
        ));
    }
}
