//! Signed Certificate Timestamps on the wire (RFC 6962 §3.2–3.3), and the
//! bytes a log signs for one.
//!
//! A `SignedCertificateTimestampList` is `opaque SerializedSCT<1..2^16-1>`
//! inside `<1..2^16-1>`. Each entry starts with its version: v1 (0) is
//! parsed; any other version is kept as [`Entry::Unsupported`] and skipped,
//! as RFC 6962 §3.2 asks of clients ("SCTs with a version they do not
//! understand MUST be ignored"). RFC 9162 (CT v2) does not put v2 SCTs in
//! this list at all — it carries `TransItem`s in its own extension and TLS
//! extension, which no log in Chrome's list issues; those are ignored.

use crate::loglist::LogId;
use crate::time::Instant;

/// Why an SCT list could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SctError {
    #[error("SCT list truncated: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("SCT list has {0} trailing bytes")]
    Trailing(usize),
    #[error("SCT list is empty")]
    Empty,
    #[error("SCT entry {index}: {len} bytes left over after the signature")]
    EntryTrailing { index: usize, len: usize },
}

/// One entry of an SCT list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    V1(Sct),
    /// An SCT of a version this crate does not know; ignored.
    Unsupported {
        version: u8,
    },
    /// A v1 SCT whose body could not be read.
    Malformed(SctError),
}

/// A v1 SCT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sct {
    pub log_id: LogId,
    /// Milliseconds since the epoch, as the log wrote it.
    pub timestamp: u64,
    pub extensions: Vec<u8>,
    /// TLS HashAlgorithm and SignatureAlgorithm code points.
    pub hash_alg: u8,
    pub sig_alg: u8,
    pub signature: Vec<u8>,
}

/// What the SCT was issued for (RFC 6962 §3.2 `signed_entry`).
pub enum SignedEntry<'a> {
    /// The certificate itself: SCTs from the TLS extension or OCSP.
    X509(&'a [u8]),
    /// A precertificate: SCTs embedded in the certificate.
    Precert {
        issuer_key_hash: &'a [u8; 32],
        tbs: &'a [u8],
    },
}

/// Bounds-checked reading of TLS-encoded bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

// === impl Cursor ===

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SctError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(SctError::Truncated {
                at: self.at,
                needed: n - (self.bytes.len() - self.at),
            });
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, SctError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, SctError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u64(&mut self) -> Result<u64, SctError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn vec16(&mut self) -> Result<&'a [u8], SctError> {
        let n = self.u16()?;
        self.take(n)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}

// === impl Sct ===

impl Sct {
    /// Milliseconds are the SCT's unit; so is [`Instant`]'s.
    pub fn instant(&self) -> Instant {
        Instant(self.timestamp)
    }

    /// The bytes the log signed (RFC 6962 §3.2, `digitally-signed struct`).
    pub fn signed_data(&self, entry: &SignedEntry<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.extensions.len());
        out.push(0); // sct_version v1
        out.push(0); // signature_type certificate_timestamp
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        match entry {
            SignedEntry::X509(cert) => {
                out.extend_from_slice(&0u16.to_be_bytes());
                push_u24(&mut out, cert);
            }
            SignedEntry::Precert {
                issuer_key_hash,
                tbs,
            } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&issuer_key_hash[..]);
                push_u24(&mut out, tbs);
            }
        }
        // Extensions are at most 2^16-1 bytes: the parser read them so.
        out.extend_from_slice(
            &u16::try_from(self.extensions.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.extensions);
        out
    }

    /// The SCT's own encoding (`SerializedSCT`'s contents).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&self.log_id.0);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        push_u16(&mut out, &self.extensions);
        out.push(self.hash_alg);
        out.push(self.sig_alg);
        push_u16(&mut out, &self.signature);
        out
    }

    fn parse_v1(body: &[u8], index: usize) -> Result<Self, SctError> {
        let mut c = Cursor { bytes: body, at: 1 };
        let mut log_id = [0u8; 32];
        log_id.copy_from_slice(c.take(32)?);
        let timestamp = c.u64()?;
        let extensions = c.vec16()?.to_vec();
        let hash_alg = c.u8()?;
        let sig_alg = c.u8()?;
        let signature = c.vec16()?.to_vec();
        if c.remaining() != 0 {
            return Err(SctError::EntryTrailing {
                index,
                len: c.remaining(),
            });
        }
        Ok(Sct {
            log_id: LogId(log_id),
            timestamp,
            extensions,
            hash_alg,
            sig_alg,
            signature,
        })
    }
}

/// Parses a TLS-encoded `SignedCertificateTimestampList`. The list's own
/// framing must be right (else `Err`); an entry that is framed right but
/// unreadable inside is kept as [`Entry::Malformed`], so one bad SCT does
/// not hide the good ones.
pub fn parse_list(bytes: &[u8]) -> Result<Vec<Entry>, SctError> {
    let mut outer = Cursor { bytes, at: 0 };
    let list = outer.vec16()?;
    if outer.remaining() != 0 {
        return Err(SctError::Trailing(outer.remaining()));
    }
    if list.is_empty() {
        return Err(SctError::Empty);
    }
    let mut c = Cursor { bytes: list, at: 0 };
    let mut entries = Vec::new();
    while c.remaining() > 0 {
        let body = c.vec16()?;
        let entry = match body.first() {
            None => Entry::Malformed(SctError::Truncated { at: 0, needed: 1 }),
            Some(0) => Sct::parse_v1(body, entries.len()).map_or_else(Entry::Malformed, Entry::V1),
            Some(&version) => Entry::Unsupported { version },
        };
        entries.push(entry);
    }
    Ok(entries)
}

/// Encodes SCTs as a `SignedCertificateTimestampList` (for tests and for
/// tools that build fixtures).
pub fn encode_list(scts: &[Sct]) -> Vec<u8> {
    let mut inner = Vec::new();
    for s in scts {
        push_u16(&mut inner, &s.encode());
    }
    let mut out = Vec::new();
    push_u16(&mut out, &inner);
    out
}

fn push_u16(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&u16::try_from(v.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(v);
}

fn push_u24(out: &mut Vec<u8>, v: &[u8]) {
    let n = u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&n[1..]);
    out.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts: u64) -> Sct {
        Sct {
            log_id: LogId([7; 32]),
            timestamp: ts,
            extensions: vec![],
            hash_alg: 4,
            sig_alg: 3,
            signature: vec![1, 2, 3],
        }
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let list = encode_list(&[sample(1), sample(2)]);
        assert_eq!(
            parse_list(&list),
            Ok(vec![Entry::V1(sample(1)), Entry::V1(sample(2))])
        );
    }

    #[test]
    fn unknown_versions_are_skipped_and_bad_entries_kept_apart() {
        let good = sample(5).encode();
        let mut v2 = vec![1u8, 9, 9, 9];
        let mut short = good.clone();
        short.truncate(20);
        let mut inner = Vec::new();
        push_u16(&mut inner, &v2);
        push_u16(&mut inner, &short);
        push_u16(&mut inner, &good);
        let mut list = Vec::new();
        push_u16(&mut list, &inner);
        let parsed = parse_list(&list).expect("framing is fine");
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], Entry::Unsupported { version: 1 });
        assert!(matches!(
            parsed[1],
            Entry::Malformed(SctError::Truncated { .. })
        ));
        assert_eq!(parsed[2], Entry::V1(sample(5)));
        v2.clear();
    }

    #[test]
    fn framing_errors() {
        assert_eq!(
            parse_list(&[]),
            Err(SctError::Truncated { at: 0, needed: 2 })
        );
        assert_eq!(parse_list(&[0, 0]), Err(SctError::Empty));
        assert_eq!(
            parse_list(&[0, 5, 0]),
            Err(SctError::Truncated { at: 2, needed: 4 })
        );
        let mut list = encode_list(&[sample(1)]);
        list.push(0);
        assert_eq!(parse_list(&list), Err(SctError::Trailing(1)));
    }

    #[test]
    fn signed_data_layout() {
        let s = sample(0x0102030405060708);
        let d = s.signed_data(&SignedEntry::X509(&[0xAA, 0xBB]));
        assert_eq!(
            d,
            vec![0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 2, 0xAA, 0xBB, 0, 0]
        );
        let d = s.signed_data(&SignedEntry::Precert {
            issuer_key_hash: &[9; 32],
            tbs: &[0xCC],
        });
        assert_eq!(&d[10..12], &[0, 1]);
        assert_eq!(&d[12..44], &[9; 32]);
        assert_eq!(&d[44..], &[0, 0, 1, 0xCC, 0, 0]);
    }
}
