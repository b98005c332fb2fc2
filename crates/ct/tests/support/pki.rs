//! A CA, CT logs of our own and their log list, made by the tests.
//!
//! The test logs do what a real log does, written here independently of
//! the crate: a log strips the poison extension from the precertificate it
//! is sent, re-encodes the TBSCertificate and signs the RFC 6962 §3.2
//! structure; the CA then issues the final certificate with the SCT list
//! extension where the poison was.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use der::asn1::OctetString;
use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, IsCa, KeyPair, SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, RSA_PKCS1_SHA256};

const SCT_EXT: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];
const POISON_EXT: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 3];

pub fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(d.as_millis()).expect("ms fit")
}

pub fn rfc3339(ms: u64) -> String {
    pinproxy_ct::Instant(ms).to_string()
}

/// A CA: its certificate and key.
pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA cert");
        Ca { cert, key }
    }

    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    pub fn spki(&self) -> Vec<u8> {
        self.key.public_key_der()
    }

    /// The leaf's parameters: serial, validity, name fixed so that the
    /// precertificate and the final certificate share their TBS.
    pub fn leaf_params(&self, serial: u8, lifetime_days: i64) -> CertificateParams {
        let mut params = CertificateParams::new(vec!["ct.test".to_string()]).expect("params");
        params.serial_number = Some(SerialNumber::from_slice(&[0x10, serial]));
        let start = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_before = start;
        params.not_after = start + time::Duration::days(lifetime_days);
        params
    }

    pub fn issue(&self, params: CertificateParams, key: &KeyPair) -> Vec<u8> {
        params
            .signed_by(key, &self.cert, &self.key)
            .expect("issue")
            .der()
            .to_vec()
    }

    /// RFC 6962's flow: precertificate (poisoned) → SCTs from `logs` at
    /// `timestamps` → final certificate with the SCT list extension.
    pub fn issue_with_scts(
        &self,
        params: &CertificateParams,
        key: &KeyPair,
        scts: &[(&TestLog, u64)],
    ) -> Vec<u8> {
        let mut pre = params.clone();
        let mut poison = CustomExtension::from_oid_content(POISON_EXT, vec![0x05, 0x00]);
        poison.set_criticality(true);
        pre.custom_extensions.push(poison);
        let precert = self.issue(pre, key);
        let list: Vec<Vec<u8>> = scts
            .iter()
            .map(|(log, ts)| log.sign_precert(&precert, &self.spki(), *ts))
            .collect();
        let mut fin = params.clone();
        fin.custom_extensions.push(sct_extension(&list));
        self.issue(fin, key)
    }
}

/// The embedded SCT list extension: the TLS list in an OCTET STRING.
pub fn sct_extension(scts: &[Vec<u8>]) -> CustomExtension {
    let inner = OctetString::new(tls_list(scts))
        .expect("octets")
        .to_der()
        .expect("der");
    CustomExtension::from_oid_content(SCT_EXT, inner)
}

/// A `SignedCertificateTimestampList` of serialized SCTs.
pub fn tls_list(scts: &[Vec<u8>]) -> Vec<u8> {
    let mut inner = Vec::new();
    for s in scts {
        inner.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
        inner.extend_from_slice(s);
    }
    let mut out = u16::try_from(inner.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&inner);
    out
}

enum LogKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A CT log of our own.
pub struct TestLog {
    key: LogKey,
    pub spki: Vec<u8>,
    pub id: [u8; 32],
}

impl TestLog {
    pub fn ecdsa() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("keygen");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let spki = KeyPair::try_from(pkcs8.as_ref())
            .expect("rcgen reads it")
            .public_key_der();
        Self::with(LogKey::Ecdsa(pair), spki)
    }

    /// An RSA-2048 log; ring cannot make RSA keys, openssl does.
    pub fn rsa(dir: &Path) -> Self {
        let key = dir.join(format!("log-{}.key", now_ms()));
        run(
            "openssl",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-outform",
                "DER",
                "-out",
                path(&key),
            ],
        );
        // OpenSSL 3.0 writes DER RSA keys as PKCS#1 RSAPrivateKey.
        let pkcs1 = std::fs::read(&key).expect("key file");
        let spki = output(
            "openssl",
            &[
                "pkey",
                "-inform",
                "DER",
                "-in",
                path(&key),
                "-pubout",
                "-outform",
                "DER",
            ],
        );
        Self::with(
            LogKey::Rsa(RsaKeyPair::from_der(&pkcs1).expect("rsa key")),
            spki,
        )
    }

    fn with(key: LogKey, spki: Vec<u8>) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, &spki);
        let mut id = [0u8; 32];
        id.copy_from_slice(d.as_ref());
        TestLog { key, spki, id }
    }

    pub fn id_b64(&self) -> String {
        B64.encode(self.id)
    }

    /// An SCT for a precertificate: signed over its TBS without poison.
    pub fn sign_precert(&self, precert_der: &[u8], issuer_spki: &[u8], ts: u64) -> Vec<u8> {
        let cert = x509_cert::Certificate::from_der(precert_der).expect("precert parses");
        let mut tbs = cert.tbs_certificate;
        let poison = der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.3");
        if let Some(exts) = tbs.extensions.as_mut() {
            let before = exts.len();
            exts.retain(|e| e.extn_id != poison);
            assert_eq!(
                exts.len() + 1,
                before,
                "the precertificate carries the poison"
            );
        }
        let tbs = tbs.to_der().expect("tbs");
        let hash = ring::digest::digest(&ring::digest::SHA256, issuer_spki);
        let mut entry = vec![0, 1];
        entry.extend_from_slice(hash.as_ref());
        entry.extend_from_slice(&u24(tbs.len()));
        entry.extend_from_slice(&tbs);
        self.sct_over(&entry, ts)
    }

    /// An SCT for a certificate (TLS extension / OCSP delivery).
    pub fn sign_cert(&self, cert_der: &[u8], ts: u64) -> Vec<u8> {
        let mut entry = vec![0, 0];
        entry.extend_from_slice(&u24(cert_der.len()));
        entry.extend_from_slice(cert_der);
        self.sct_over(&entry, ts)
    }

    /// `entry`: entry_type and signed_entry, as RFC 6962 §3.2 lays them.
    fn sct_over(&self, entry: &[u8], ts: u64) -> Vec<u8> {
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&ts.to_be_bytes());
        signed.extend_from_slice(entry);
        signed.extend_from_slice(&[0, 0]); // no extensions
        let rng = SystemRandom::new();
        let (alg, sig) = match &self.key {
            LogKey::Ecdsa(k) => (3u8, k.sign(&rng, &signed).expect("sign").as_ref().to_vec()),
            LogKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, &signed, &mut sig)
                    .expect("sign");
                (1u8, sig)
            }
        };
        let mut sct = vec![0u8];
        sct.extend_from_slice(&self.id);
        sct.extend_from_slice(&ts.to_be_bytes());
        sct.extend_from_slice(&[0, 0]);
        sct.extend_from_slice(&[4, alg]);
        sct.extend_from_slice(&u16::try_from(sig.len()).expect("short").to_be_bytes());
        sct.extend_from_slice(&sig);
        sct
    }
}

/// One log of a test list: operator, description, log, state JSON.
pub struct Entry<'a> {
    pub operator: &'a str,
    pub description: &'a str,
    pub log: &'a TestLog,
    pub state: String,
}

pub fn usable_since(ms: u64) -> String {
    format!(r#"{{"usable": {{"timestamp": "{}"}}}}"#, rfc3339(ms))
}

pub fn retired_since(ms: u64) -> String {
    format!(r#"{{"retired": {{"timestamp": "{}"}}}}"#, rfc3339(ms))
}

/// A v3 log list, written as Chrome writes it.
pub fn list_json(timestamp_ms: u64, entries: &[Entry<'_>]) -> String {
    let mut operators: Vec<(&str, Vec<serde_json::Value>)> = Vec::new();
    for e in entries {
        let log = serde_json::json!({
            "description": e.description,
            "log_id": e.log.id_b64(),
            "key": B64.encode(&e.log.spki),
            "url": format!("https://{}.log.test/", e.description),
            "mmd": 86400,
            "state": serde_json::from_str::<serde_json::Value>(&e.state).expect("state json"),
        });
        match operators.iter_mut().find(|(name, _)| *name == e.operator) {
            Some((_, logs)) => logs.push(log),
            None => operators.push((e.operator, vec![log])),
        }
    }
    let ops: Vec<serde_json::Value> = operators
        .into_iter()
        .map(|(name, logs)| serde_json::json!({"name": name, "email": [], "logs": logs, "tiled_logs": []}))
        .collect();
    serde_json::json!({"version": "0.1", "log_list_timestamp": rfc3339(timestamp_ms), "operators": ops}).to_string()
}

pub fn days(n: u64) -> u64 {
    n * 86_400_000
}

pub fn unix(ms: u64) -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_millis(ms))
}

fn u24(n: usize) -> [u8; 3] {
    let b = u32::try_from(n).expect("short").to_be_bytes();
    [b[1], b[2], b[3]]
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .expect("openssl is installed (scripts/test.sh)");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn output(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .expect("openssl is installed (scripts/test.sh)");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
