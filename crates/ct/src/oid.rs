//! The object identifiers this crate looks for, in one place.

use der::asn1::ObjectIdentifier as Oid;

/// RFC 6962 §3.3: the SCT list embedded in a certificate.
pub const CT_PRECERT_SCTS: Oid = Oid::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
/// RFC 6962 §3.3: the SCT list in an OCSP SingleResponse's extensions.
pub const CT_OCSP_SCTS: Oid = Oid::new_unwrap("1.3.6.1.4.1.11129.2.4.5");
/// RFC 7633: the TLS Feature extension ("must-staple" when it lists 5).
pub const TLS_FEATURE: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.24");
/// RFC 5280 extended key usage, and RFC 6960's id-kp-OCSPSigning.
pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
pub const KP_OCSP_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.9");
/// RFC 6960 §4.2.1: id-pkix-ocsp-basic.
pub const OCSP_BASIC: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.1");

pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");

pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
