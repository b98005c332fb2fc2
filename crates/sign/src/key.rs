//! Public keys: PEM SubjectPublicKeyInfo in, a verifier and a key id out.
//!
//! Two algorithms, the two a signed pinset may use: ECDSA P-256 (what
//! `cosign generate-key-pair` writes as `cosign.pub`) and Ed25519. The key id
//! is `sha256/<base64 SHA-256 of the DER SPKI>`, the same spelling as a pin,
//! so `openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary |
//! base64` names it too.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier};
use der::{Decode as _, Encode as _};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

/// id-ecPublicKey (RFC 5480).
pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / prime256v1 (RFC 5480).
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// id-Ed25519 (RFC 8410).
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// rsaEncryption, only to name it in an error.
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// secp384r1 and secp521r1, only to name them in an error.
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// A key file larger than this is not a public key (a P-256 `cosign.pub` is
/// 178 bytes); refusing early keeps a mounted junk file from being parsed.
pub(crate) const MAX_KEY_FILE: usize = 64 * 1024;

/// The signature algorithms a pinset key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256, DER signatures (cosign's default).
    EcdsaP256,
    /// Ed25519 (RFC 8032, pure, over the message itself).
    Ed25519,
}

impl Algorithm {
    /// The name used in messages and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `sha256/<base64>` of a key's DER SubjectPublicKeyInfo.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    pub(crate) fn of_spki(spki_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        KeyId(out)
    }

    /// The raw SHA-256 of the SPKI.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256/{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a public key file was refused. Messages name the PEM label or the
/// algorithm, never the file's bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("the public key file is larger than {MAX_KEY_FILE} bytes")]
    TooLarge,
    #[error("the public key file is not PEM: {0}")]
    NotPem(#[source] pem::PemError),
    #[error("the public key file holds no PEM block")]
    NoPem,
    #[error("the public key file holds {0} PEM blocks; give one key per file (repeat the option for more keys)")]
    SeveralPem(usize),
    #[error("the file holds a private key ({label}); give the public key (cosign.pub, or the .pub that `pinproxy keygen` writes)")]
    PrivateKey { label: String },
    #[error("the file holds a certificate; give its public key (`openssl x509 -pubkey -noout -in CERT`)")]
    Certificate,
    #[error("a PEM block labelled {label:?} is not a public key; expected \"PUBLIC KEY\" (SubjectPublicKeyInfo)")]
    WrongLabel { label: String },
    #[error("the PUBLIC KEY block is not a valid SubjectPublicKeyInfo: {0}")]
    Der(#[source] der::Error),
    #[error(
        "unsupported key type {what}: a pinset key is ECDSA P-256 (cosign's default) or Ed25519"
    )]
    Unsupported { what: String },
    #[error("the {algorithm} public key is malformed: {detail}")]
    Malformed {
        algorithm: Algorithm,
        detail: &'static str,
    },
}

/// A public key that may have signed a pinset.
#[derive(Clone)]
pub struct PublicKey {
    id: KeyId,
    algorithm: Algorithm,
    /// The uncompressed point (P-256) or the 32 raw bytes (Ed25519), as
    /// `ring::signature::UnparsedPublicKey` wants them.
    raw: Vec<u8>,
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// Reads one `-----BEGIN PUBLIC KEY-----` block (SubjectPublicKeyInfo).
    pub fn from_pem(text: &[u8]) -> Result<Self, KeyError> {
        if text.len() > MAX_KEY_FILE {
            return Err(KeyError::TooLarge);
        }
        let mut blocks = pem::parse_many(text).map_err(KeyError::NotPem)?;
        let block = match blocks.len() {
            0 => return Err(KeyError::NoPem),
            1 => blocks.remove(0),
            n => return Err(KeyError::SeveralPem(n)),
        };
        Self::from_block(&block)
    }

    /// One PEM block, which must be a `PUBLIC KEY`.
    pub(crate) fn from_block(block: &pem::Pem) -> Result<Self, KeyError> {
        match block.tag() {
            "PUBLIC KEY" => Self::from_spki_der(block.contents()),
            "CERTIFICATE" => Err(KeyError::Certificate),
            label if label.contains("PRIVATE KEY") => Err(KeyError::PrivateKey {
                label: label.to_owned(),
            }),
            label => Err(KeyError::WrongLabel {
                label: label.to_owned(),
            }),
        }
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(KeyError::Der)?;
        let algorithm = algorithm_of(&spki.algorithm)?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or(KeyError::Malformed {
                algorithm,
                detail: "the key's BIT STRING has unused bits",
            })?;
        check_raw(algorithm, raw)?;
        Ok(PublicKey {
            id: KeyId::of_spki(der),
            algorithm,
            raw: raw.to_vec(),
            spki_der: der.to_vec(),
        })
    }

    /// Builds the SPKI for a raw key `ring` produced (keygen, signing keys).
    pub(crate) fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Result<Self, KeyError> {
        check_raw(algorithm, raw)?;
        let p256 = AnyRef::from(&OID_P256);
        let alg = match algorithm {
            Algorithm::EcdsaP256 => AlgorithmIdentifierRef {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some(p256),
            },
            Algorithm::Ed25519 => AlgorithmIdentifierRef {
                oid: OID_ED25519,
                parameters: None,
            },
        };
        let spki = SubjectPublicKeyInfoRef {
            algorithm: alg,
            subject_public_key: BitStringRef::from_bytes(raw).map_err(KeyError::Der)?,
        };
        let der = spki.to_der().map_err(KeyError::Der)?;
        Self::from_spki_der(&der)
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM with LF line endings, the form
    /// `cosign generate-key-pair` and `openssl pkey -pubout` write.
    pub fn to_pem(&self) -> String {
        crate::pem_lf("PUBLIC KEY", self.spki_der.clone())
    }

    /// Whether `signature` is this key's signature over `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::EcdsaP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
            Algorithm::Ed25519 => &ring::signature::ED25519,
        };
        ring::signature::UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl Eq for PublicKey {}

fn algorithm_of(alg: &AlgorithmIdentifierRef<'_>) -> Result<Algorithm, KeyError> {
    if alg.oid == OID_ED25519 {
        // RFC 8410 §3: the parameters MUST be absent.
        if alg.parameters.is_some() {
            return Err(KeyError::Malformed {
                algorithm: Algorithm::Ed25519,
                detail: "Ed25519 key with algorithm parameters",
            });
        }
        return Ok(Algorithm::Ed25519);
    }
    if alg.oid == OID_EC_PUBLIC_KEY {
        let curve = alg.parameters_oid().map_err(|_| KeyError::Unsupported {
            what: "EC key without a named curve".to_owned(),
        })?;
        if curve == OID_P256 {
            return Ok(Algorithm::EcdsaP256);
        }
        return Err(KeyError::Unsupported {
            what: format!("EC key on curve {}", curve_name(curve)),
        });
    }
    Err(KeyError::Unsupported {
        what: algorithm_name(alg.oid),
    })
}

fn check_raw(algorithm: Algorithm, raw: &[u8]) -> Result<(), KeyError> {
    let ok = match algorithm {
        // SEC1 uncompressed point: 0x04 || X || Y. ring checks the point is
        // on the curve when it verifies; compressed points it refuses.
        Algorithm::EcdsaP256 => raw.len() == 65 && raw[0] == 0x04,
        Algorithm::Ed25519 => raw.len() == 32,
    };
    if ok {
        Ok(())
    } else {
        Err(KeyError::Malformed {
            algorithm,
            detail: match algorithm {
                Algorithm::EcdsaP256 => "not a 65-byte uncompressed P-256 point",
                Algorithm::Ed25519 => "not 32 bytes",
            },
        })
    }
}

pub(crate) fn curve_name(oid: ObjectIdentifier) -> String {
    match oid {
        o if o == OID_P256 => "P-256".to_owned(),
        o if o == OID_P384 => "P-384".to_owned(),
        o if o == OID_P521 => "P-521".to_owned(),
        o => o.to_string(),
    }
}

pub(crate) fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid {
        o if o == OID_RSA => "RSA".to_owned(),
        o => format!("with algorithm OID {o}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl genpkey -algorithm ed25519 | openssl pkey -pubout`
    const ED25519_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAtOFkWr84KlMal5egV5xY+DKinWZIM/wTqV/m366Yzr4=
-----END PUBLIC KEY-----
";

    #[test]
    fn ed25519_spki_round_trips_and_names_its_id() {
        let key = PublicKey::from_pem(ED25519_PUB.as_bytes()).expect("valid key");
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        assert_eq!(key.to_pem(), ED25519_PUB);
        let expected = format!(
            "sha256/{}",
            STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, key.spki_der()))
        );
        assert_eq!(key.id().to_string(), expected);
        let again = PublicKey::from_raw(Algorithm::Ed25519, &key.raw).expect("raw");
        assert_eq!(again, key);
    }

    #[test]
    fn refusals_name_what_was_given() {
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            PublicKey::from_pem(private.as_bytes()),
            Err(KeyError::PrivateKey { .. })
        ));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            PublicKey::from_pem(cert.as_bytes()),
            Err(KeyError::Certificate)
        ));
        assert!(matches!(
            PublicKey::from_pem(b"not pem at all"),
            Err(KeyError::NoPem) | Err(KeyError::NotPem(_))
        ));
        let two = format!("{ED25519_PUB}{ED25519_PUB}");
        assert!(matches!(
            PublicKey::from_pem(two.as_bytes()),
            Err(KeyError::SeveralPem(2))
        ));
        let junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            PublicKey::from_pem(junk.as_bytes()),
            Err(KeyError::Der(_))
        ));
    }

    #[test]
    fn a_short_ed25519_key_is_malformed() {
        let err = PublicKey::from_raw(Algorithm::Ed25519, &[1u8; 31]).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        let err = PublicKey::from_raw(Algorithm::EcdsaP256, &[4u8; 33]).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
    }
}
