//! Encrypted Client Hello (draft-ietf-tls-esni): whether a first flight
//! offers it.
//!
//! With ECH the name the app means travels encrypted inside the
//! ClientHello; pinproxy holds no ECH keys, so it sees only the outer
//! ClientHello, whose SNI is the provider's public name. That outer SNI is
//! what decides, like any SNI: a pinned public name is intercepted (the
//! client then gets no ECH acceptance and, per the draft, fails or retries
//! without ECH — it never reaches the inner name unpinned), an unlisted one
//! is spliced or refused by `unlisted:`. Nothing here decides; it tells the
//! counters (`protocol="tls-ech"`) and the logs that ECH was offered.

/// The `encrypted_client_hello` extension's code point.
pub const EXTENSION: u16 = 0xfe0d;

/// Whether the ClientHello in `flight` (TLS records as read from the
/// client, possibly spanning several) carries `encrypted_client_hello`.
/// Anything malformed or cut short is `false`: the hello was judged as TLS
/// by rustls already; this only labels it.
pub fn offered(flight: &[u8]) -> bool {
    extensions(&handshake(flight)).is_some_and(|exts| exts.contains(&EXTENSION))
}

/// The handshake bytes of the leading handshake records (type 22).
fn handshake(mut flight: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [0x16, _, _, hi, lo, rest @ ..] = flight {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(fragment) = rest.get(..len) else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(fragment);
        flight = &rest[len..];
    }
    out
}

/// The extension types of the ClientHello at the start of `hs`.
fn extensions(hs: &[u8]) -> Option<Vec<u16>> {
    let mut r = Reader(hs);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // legacy_version, random
    let n = usize::from(body.u8()?);
    body.take(n)?; // legacy_session_id
    let n = body.u16()?;
    body.take(n)?; // cipher_suites
    let n = usize::from(body.u8()?);
    body.take(n)?; // legacy_compression_methods
    let n = body.u16()?;
    let mut exts = Reader(body.take(n)?);
    let mut types = Vec::new();
    while !exts.0.is_empty() {
        types.push(exts.u16().map(u16::try_from)?.ok()?);
        let n = exts.u16()?;
        exts.take(n)?;
    }
    Some(types)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// A minimal TLS 1.3 ClientHello naming `sni`, with an
/// `encrypted_client_hello` (outer) extension when `ech`, as one record.
#[cfg(test)]
pub(crate) fn client_hello(sni: &str, ech: bool) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, ty: u16, body: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut exts = Vec::new();
    let name = sni.as_bytes();
    let mut sn = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    sn.push(0);
    sn.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sn.extend_from_slice(name);
    ext(&mut exts, 0x0000, &sn);
    ext(&mut exts, 0x002b, &[2, 3, 4]); // supported_versions: TLS 1.3
    ext(&mut exts, 0x000a, &[0, 2, 0, 0x1d]); // supported_groups: x25519
    ext(&mut exts, 0x000d, &[0, 2, 8, 4]); // signature_algorithms
    let mut share = vec![0, 36, 0, 0x1d, 0, 32];
    share.extend_from_slice(&[7; 32]);
    ext(&mut exts, 0x0033, &share); // key_share
    if ech {
        // outer; HPKE suite (HKDF-SHA256, AES-128-GCM); config_id; enc; payload
        let mut e = vec![0, 0, 1, 0, 1, 42, 0, 32];
        e.extend_from_slice(&[9; 32]);
        e.extend_from_slice(&[0, 64]);
        e.extend_from_slice(&[5; 64]);
        ext(&mut exts, EXTENSION, &e);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[1; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::{Hello, HelloReader};

    #[test]
    fn ech_is_seen_in_one_record_or_across_several() {
        let with = client_hello("public.example", true);
        let without = client_hello("public.example", false);
        assert!(offered(&with));
        assert!(!offered(&without));
        // rustls reads both as ClientHellos naming the outer SNI.
        for hello in [&with, &without] {
            let mut reader = HelloReader::new();
            let got = reader.feed(hello);
            assert_eq!(got, Some(Hello::Tls(Some("public.example".into()))));
        }
        // The same handshake split over three records.
        let hs = &with[5..];
        let mut split = Vec::new();
        for part in [&hs[..10], &hs[10..100], &hs[100..]] {
            split.extend_from_slice(&[0x16, 3, 3]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert!(offered(&split));
        // Cut short, garbage, not a handshake: not ECH, and no panic.
        for bad in [
            &with[..with.len() - 3],
            &with[..40],
            b"GET / HTTP/1.1",
            &[][..],
        ] {
            assert!(!offered(bad), "{bad:?}");
        }
        for n in 0..with.len() {
            let mut broken = with.clone();
            broken[n] ^= 0xff;
            let _ = offered(&broken);
        }
    }
}
