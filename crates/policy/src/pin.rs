//! SPKI SHA-256 pins in the HPKP / OkHttp `sha256/<base64>` form.
//!
//! A pin is the SHA-256 of a certificate's whole DER `SubjectPublicKeyInfo`
//! (outer SEQUENCE included), exactly what
//! `openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256`
//! hashes.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest;
use rustls_pki_types::CertificateDer;

/// The only algorithm prefix we accept.
const PREFIX: &str = "sha256/";

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pin([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unsupported pin algorithm {0:?}: only sha256/<base64 of 32 bytes> is accepted")]
    Algorithm(String),
    #[error("pin has no algorithm prefix: expected sha256/<base64 of 32 bytes>")]
    NoPrefix,
    #[error("pin is not valid base64")]
    Base64,
    #[error("pin decodes to {0} bytes; a SHA-256 pin is 32 bytes")]
    Length(usize),
    #[error("certificate could not be parsed: {0}")]
    Certificate(String),
}

// === impl Pin ===

impl Pin {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Pin of a complete DER SubjectPublicKeyInfo (with its SEQUENCE header).
    pub fn of_spki_der(spki: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, spki);
        Self(to_array(d.as_ref()))
    }

    /// Pin of an SPKI given only its *contents*, as webpki's `TrustAnchor`
    /// keeps it: the SEQUENCE header is rebuilt and hashed first, so root pins
    /// agree with what `openssl` prints for the same certificate.
    pub fn of_spki_contents(contents: &[u8]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut header = [0u8; 6];
        let n = der_sequence_header(contents.len(), &mut header);
        ctx.update(&header[..n]);
        ctx.update(contents);
        Self(to_array(ctx.finish().as_ref()))
    }

    /// Pin of a DER certificate's public key.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Result<Self, Error> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| Error::Certificate(format!("{e:?}")))?;
        Ok(Self::of_spki_der(parsed.subject_public_key_info().as_ref()))
    }
}

fn to_array(d: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d);
    out
}

/// Writes a DER SEQUENCE tag and length for `len` content bytes into `out`,
/// returning how many bytes were written.
fn der_sequence_header(len: usize, out: &mut [u8; 6]) -> usize {
    out[0] = 0x30;
    if len < 0x80 {
        out[1] = len as u8;
        return 2;
    }
    let bytes = (len as u32).to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = &bytes[skip..];
    out[1] = 0x80 | significant.len() as u8;
    out[2..2 + significant.len()].copy_from_slice(significant);
    2 + significant.len()
}

impl FromStr for Pin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let Some(b64) = s.strip_prefix(PREFIX) else {
            return match s.split_once('/') {
                Some((alg, _))
                    if !alg.is_empty()
                        && alg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
                {
                    Err(Error::Algorithm(alg.to_string()))
                }
                _ => Err(Error::NoPrefix),
            };
        };
        let raw = STANDARD.decode(b64).map_err(|_| Error::Base64)?;
        if raw.len() != 32 {
            return Err(Error::Length(raw.len()));
        }
        Ok(Self(to_array(&raw)))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let s = "sha256/r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=";
        let pin: Pin = s.parse().unwrap();
        assert_eq!(pin.to_string(), s);
    }

    #[test]
    fn rejects_other_algorithms_and_lengths() {
        assert_eq!(
            "sha1/AAAAAAAAAAAAAAAAAAAAAAAAAAA=".parse::<Pin>(),
            Err(Error::Algorithm("sha1".into()))
        );
        assert_eq!(
            "sha384/AAAA".parse::<Pin>(),
            Err(Error::Algorithm("sha384".into()))
        );
        // 31 bytes: a truncated digest is never a prefix match.
        let short = format!("sha256/{}", STANDARD.encode([1u8; 31]));
        assert_eq!(short.parse::<Pin>(), Err(Error::Length(31)));
        let long = format!("sha256/{}", STANDARD.encode([1u8; 48]));
        assert_eq!(long.parse::<Pin>(), Err(Error::Length(48)));
        assert_eq!("sha256/!!!".parse::<Pin>(), Err(Error::Base64));
        // A hex digest is not base64 of 32 bytes.
        let hex = "sha256/aebe8c906de1e1295d99fbaefe8fe8fdcc31ccce328d5b9384f23214872689b8";
        assert!(hex.parse::<Pin>().is_err());
        assert_eq!(
            "r/mIkG3eEpVdm+u/ko/cwxzOMo1bk4TyHIlByibiA5E=".parse::<Pin>(),
            Err(Error::Algorithm("r".into()))
        );
        assert_eq!("".parse::<Pin>(), Err(Error::NoPrefix));
    }

    #[test]
    fn sequence_header_matches_der_rules() {
        let header = |len: usize| {
            let mut h = [0u8; 6];
            let n = der_sequence_header(len, &mut h);
            h[..n].to_vec()
        };
        assert_eq!(header(0x10), [0x30, 0x10]);
        assert_eq!(header(0x7f), [0x30, 0x7f]);
        assert_eq!(header(0x80), [0x30, 0x81, 0x80]);
        assert_eq!(header(0x122), [0x30, 0x82, 0x01, 0x22]);
    }

    #[test]
    fn contents_pin_equals_whole_spki_pin() {
        let key = rcgen::KeyPair::generate().unwrap();
        let spki = key.public_key_der();
        // Strip the SEQUENCE header the way webpki's TrustAnchor does.
        let contents = &spki[2..];
        assert_eq!(spki[1] as usize, contents.len());
        assert_eq!(Pin::of_spki_contents(contents), Pin::of_spki_der(&spki));
    }
}
