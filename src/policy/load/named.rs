//! The files a pinset's text names — CA bundles, client certificates and
//! keys, CRLs — read from the text alone, without validating anything.
//!
//! The reloader fingerprints one version of a pinset's inputs (the file
//! and every file it names) *before* it loads them, so that a version that
//! failed is retried only when one of those files changes again. A pinset
//! that does not validate still names its files, so this is a lenient read
//! of the YAML, never the loader's.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The files `bytes` (the pinset at `path`) names, as the loader names
/// them: relative paths under the pinset's directory. Text that is not a
/// pinset's shape names nothing.
pub fn named_files(path: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    // The same guard as the loader's: no anchors, no deep nesting.
    if super::shape::check(text).is_err() {
        return Vec::new();
    }
    let Ok(doc) = serde_yaml::from_str::<Value>(text) else {
        return Vec::new();
    };
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut raw: Vec<&str> = Vec::new();
    trust_file(doc.get("defaults").and_then(|d| d.get("trust")), &mut raw);
    if let Some(Value::Mapping(hosts)) = doc.get("hosts") {
        for entry in hosts.values() {
            trust_file(entry.get("trust"), &mut raw);
            if let Some(c) = entry.get("client_cert") {
                raw.extend(["cert", "key"].iter().filter_map(|k| c.get(k)?.as_str()));
            }
            if let Some(Value::Sequence(crls)) = entry.get("crls") {
                raw.extend(crls.iter().filter_map(Value::as_str));
            }
        }
    }
    let mut out: Vec<PathBuf> = raw
        .into_iter()
        .filter(|r| !r.trim().is_empty())
        .map(|r| base.join(r))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A `trust:` value that names a file (not `webpki` or `pin-only`).
fn trust_file<'a>(trust: Option<&'a Value>, out: &mut Vec<&'a str>) {
    match trust.and_then(Value::as_str) {
        None | Some("webpki" | "pin-only" | "") => {}
        Some(file) => out.push(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_named_file_is_found_relative_to_the_pinset() {
        let text = "version: 1\n\
            defaults: {trust: ca/default.pem}\n\
            hosts:\n  \
              a.example:\n    pins: [x]\n    trust: pin-only\n  \
              b.example:\n    pins: [x]\n    trust: ca/internal.pem\n    \
                client_cert: {cert: id/tls.crt, key: /abs/tls.key}\n    \
                crls: [ca/one.crl, ca/two.crl]\n  \
              c.example:\n    pins: [x]\n    trust: ca/internal.pem\n";
        let got = named_files(Path::new("/etc/pins/pins.yaml"), text.as_bytes());
        let want: Vec<PathBuf> = [
            "/abs/tls.key",
            "/etc/pins/ca/default.pem",
            "/etc/pins/ca/internal.pem",
            "/etc/pins/ca/one.crl",
            "/etc/pins/ca/two.crl",
            "/etc/pins/id/tls.crt",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn text_that_is_not_a_pinset_names_nothing() {
        for text in ["", "[[[", "a: &x 1\nb: *x\n", "hosts: 3\n", "\u{0}\u{ff}"] {
            assert!(named_files(Path::new("p.yaml"), text.as_bytes()).is_empty());
        }
        assert!(named_files(Path::new("p.yaml"), &[0xff, 0xfe]).is_empty());
    }
}
