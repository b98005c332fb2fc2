//! A minimal OCSP responder of our own, for what `openssl ocsp` cannot
//! make: a response carrying SCTs in its SingleResponse (RFC 6962 §3.3).
//! Built from RustCrypto's `x509-ocsp` types and signed with `ring`.

use std::time::Duration;

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier as Oid, OctetString};
use der::{Decode, Encode};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspResponse, OcspResponseStatus,
    ResponderId, ResponseBytes, ResponseData, SingleResponse, Version,
};

use super::pki::Ca;

fn time(ms: u64) -> OcspGeneralizedTime {
    OcspGeneralizedTime(
        GeneralizedTime::from_unix_duration(Duration::from_millis(ms / 1000 * 1000)).expect("time"),
    )
}

/// A good response for `leaf_der` signed by the CA itself, valid from
/// `this_update` to `next_update` (ms), with `scts` (a TLS-encoded list) in
/// the SingleResponse when given.
pub fn good_with_scts(
    ca: &Ca,
    leaf_der: &[u8],
    this_update: u64,
    next_update: u64,
    scts: Option<&[u8]>,
) -> Vec<u8> {
    respond(
        ca,
        leaf_der,
        this_update,
        next_update,
        &[CertStatus::Good(Null)],
        scts,
    )
}

/// A response for `leaf_der` signed by the CA itself with one
/// SingleResponse per status, all for the leaf, in this order.
pub fn with_statuses(
    ca: &Ca,
    leaf_der: &[u8],
    this_update: u64,
    next_update: u64,
    statuses: &[CertStatus],
) -> Vec<u8> {
    respond(ca, leaf_der, this_update, next_update, statuses, None)
}

/// A revoked status, revoked at `at` (ms).
pub fn revoked_at(at: u64) -> CertStatus {
    CertStatus::Revoked(x509_ocsp::RevokedInfo {
        revocation_time: time(at),
        revocation_reason: None,
    })
}

fn respond(
    ca: &Ca,
    leaf_der: &[u8],
    this_update: u64,
    next_update: u64,
    statuses: &[CertStatus],
    scts: Option<&[u8]>,
) -> Vec<u8> {
    let leaf = Certificate::from_der(leaf_der).expect("leaf");
    let issuer = Certificate::from_der(&ca.der()).expect("issuer");
    let name = leaf.tbs_certificate.issuer.to_der().expect("name");
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let sha1 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
            .as_ref()
            .to_vec()
    };
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: Oid::new_unwrap("1.3.14.3.2.26"),
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(sha1(&name)).expect("octets"),
        issuer_key_hash: OctetString::new(sha1(key)).expect("octets"),
        serial_number: SerialNumber::new(leaf.tbs_certificate.serial_number.as_bytes())
            .expect("serial"),
    };
    let single_extensions = scts.map(|list| {
        let inner = OctetString::new(list.to_vec())
            .expect("octets")
            .to_der()
            .expect("der");
        vec![Extension {
            extn_id: Oid::new_unwrap("1.3.6.1.4.1.11129.2.4.5"),
            critical: false,
            extn_value: OctetString::new(inner).expect("octets"),
        }]
    });
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByName(issuer.tbs_certificate.subject.clone()),
        produced_at: time(this_update),
        responses: statuses
            .iter()
            .map(|status| SingleResponse {
                cert_id: cert_id.clone(),
                cert_status: *status,
                this_update: time(this_update),
                next_update: Some(time(next_update)),
                single_extensions: single_extensions.clone(),
            })
            .collect(),
        response_extensions: None,
    };
    let tbs = data.to_der().expect("tbs");
    let rng = SystemRandom::new();
    let signer = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ca.key.serialize_der(),
        &rng,
    )
    .expect("CA key");
    let signature = signer.sign(&rng, &tbs).expect("sign");
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: Oid::new_unwrap("1.2.840.10045.4.3.2"),
            parameters: None,
        },
        signature: BitString::from_bytes(signature.as_ref()).expect("bits"),
        certs: None,
    };
    OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: Oid::new_unwrap("1.3.6.1.5.5.7.48.1.1"),
            response: OctetString::new(basic.to_der().expect("basic")).expect("octets"),
        }),
    }
    .to_der()
    .expect("response")
}
