//! What is wrong with a PEM file, said without its bytes.
//!
//! The PEM parsers' own messages quote the file: rustls-pki-types prints a
//! block's "label" — for a key pasted onto one line, the whole key — as a
//! list of decimal bytes (`missing section end marker: [80, 82, 73, …]`),
//! and the `pem` crate echoes headers. A certificate file can hold a key
//! too (a combined `tls.pem`). So no parser message about a PEM file is
//! ever shown: [`describe`] names the problem from the error's kind alone,
//! and callers put the file's path in front of it.

use rustls_pki_types::pem;

/// The problem a PEM parse error stands for, in words that quote nothing
/// of the file.
pub fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no -----END line (was it pasted \
             onto one line? every -----BEGIN and -----END line must be a line of its own)"
            .into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed -----BEGIN line".into(),
        pem::Error::Base64Decode(_) => "a PEM block's body is not valid base64".into(),
        // The I/O error says what failed (e.g. permission denied), not
        // what the file holds.
        pem::Error::Io(io) => format!("read error: {io}"),
        pem::Error::NoItemsFound => "no PEM block found".into(),
        pem::Error::SectionTooLarge => "a PEM block over 256 MB".into(),
        _ => "not valid PEM".into(),
    }
}

/// The same for the `pem` crate (`pinproxy pin FILE`), whose messages can
/// echo a header line.
pub fn describe_pem_crate(e: &::pem::PemError) -> String {
    use ::pem::PemError as E;
    match e {
        E::MismatchedTags(..) => "a PEM block's -----BEGIN and -----END labels differ".into(),
        E::MalformedFraming | E::MissingBeginTag | E::MissingEndTag => {
            "a PEM block is not framed by -----BEGIN and -----END lines of their own".into()
        }
        E::MissingData => "a PEM block is empty".into(),
        E::InvalidData(_) => "a PEM block's body is not valid base64".into(),
        E::InvalidHeader(_) => "a PEM block has a malformed header line".into(),
        E::NotUtf8(_) => "not UTF-8 text".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;

    /// A PKCS#8 key as one line of text, the copy-paste accident.
    const ONE_LINE: &str = "-----BEGIN PRIVATE KEY----- MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgbpWMKyDgkmGiGNdK 6xHFS/exkHyREJYV6BCzWr6LohyhRANCAAQvW65EA+lV1FxZI1JVUL95nWf9B/Xu x9RUEjEKyEK3bH8ulZJAMw8A7LExoEUPUT1xdcySQED6ypbZBxmnTQS0 -----END PRIVATE KEY-----\n";

    #[test]
    fn a_one_line_key_is_described_without_its_bytes() {
        let e = PrivateKeyDer::from_pem_slice(ONE_LINE.as_bytes()).unwrap_err();
        let raw = e.to_string();
        assert!(
            raw.contains("[80, 82, 73"),
            "the parser's own text quotes it: {raw}"
        );
        let said = describe(&e);
        assert!(said.contains("one line"), "{said}");
        let base64 = ONE_LINE
            .split_whitespace()
            .filter(|w| w.len() > 8 && !w.starts_with("-----"));
        for word in base64 {
            assert!(!said.contains(word), "{said}");
        }
        assert!(!said.contains("80, 82"), "{said}");
    }
}
