//! Shared by the crate's integration tests: fixtures, PEM, time.
#![allow(dead_code)]

pub mod pki;
pub mod responder;

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls_pki_types::UnixTime;

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The DER of every block labelled `label` in a PEM text.
pub fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&begin) {
        let body = &rest[i + begin.len()..];
        let j = body.find(&end).expect("PEM block has an end");
        let b64: String = body[..j].chars().filter(|c| !c.is_whitespace()).collect();
        out.push(B64.decode(b64).expect("PEM base64"));
        rest = &body[j..];
    }
    out
}

pub fn cert_der(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(data(name)).expect("fixture");
    pem_blocks(&text, "CERTIFICATE")
        .into_iter()
        .next()
        .expect("a certificate")
}

pub fn at(rfc3339: &str) -> UnixTime {
    pinproxy_ct::Instant::parse_rfc3339(rfc3339)
        .expect("test time")
        .as_unix()
}

pub fn builtin_json() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/log_list.json"))
        .expect("list")
}

/// DER as a PEM block.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
