//! Whatever bytes arrive — an SCT list from a TLS extension, a stapled
//! OCSP response, a certificate, a log list — the parsers answer with a
//! value or an error and never panic.

mod support;

use std::sync::OnceLock;

use pinproxy_ct::cert::{Issuer, Leaf};
use pinproxy_ct::policy::{self, Delivered};
use pinproxy_ct::{ocsp, sct, LogList};
use proptest::prelude::*;
use support::pki::{days, now_ms, unix, Ca};
use support::{at, cert_der};

struct Fixtures {
    leaf_der: Vec<u8>,
    leaf: Leaf,
    issuer: Issuer,
    /// A valid staple for `leaf` with SCTs in it, by our own responder.
    staple: Vec<u8>,
    staple_leaf: Leaf,
    staple_issuer: Issuer,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let leaf_der = cert_der("google-leaf-2023.pem");
        let ca = Ca::new("Fuzz CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let der = ca.issue(ca.leaf_params(1, 90), &key);
        let scts = support::pki::tls_list(&[vec![0; 60], vec![1; 80]]);
        let now = now_ms();
        let staple = support::responder::good_with_scts(&ca, &der, now, now + days(1), Some(&scts));
        Fixtures {
            leaf: Leaf::parse(&leaf_der).expect("leaf"),
            leaf_der,
            issuer: Issuer::from_cert_der(&cert_der("gts-ca-1c3.pem")).expect("issuer"),
            staple,
            staple_leaf: Leaf::parse(&der).expect("leaf"),
            staple_issuer: Issuer::from_cert_der(&ca.der()).expect("issuer"),
        }
    })
}

/// `base` with up to four bytes replaced and perhaps cut short.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    (prop::collection::vec((0..len, any::<u8>()), 1..4), 0..=len).prop_map(move |(edits, cut)| {
        let mut b = base.clone();
        for (i, v) in edits {
            b[i] = v;
        }
        b.truncate(cut.max(len / 2));
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sct_lists_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = sct::parse_list(&bytes);
        let f = fixtures();
        let report = policy::check(
            LogList::builtin(), &f.leaf, &f.issuer,
            Delivered { tls: Some(&bytes), ocsp: Some(&bytes) }, at("2023-01-10T00:00:00Z"),
        );
        prop_assert!(!report.to_string().is_empty());
    }

    #[test]
    fn framed_sct_lists_of_random_entries_never_panic(
        entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..140), 1..5),
        first in 0u8..3,
    ) {
        let mut entries = entries;
        if let Some(e) = entries.first_mut().filter(|e| !e.is_empty()) {
            e[0] = first;
        }
        let list = support::pki::tls_list(&entries);
        let parsed = sct::parse_list(&list);
        prop_assert!(parsed.map(|p| p.len() == entries.len()).unwrap_or(true));
    }

    #[test]
    fn ocsp_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let f = fixtures();
        let report = ocsp::check_staple(&f.staple_leaf, &f.staple_issuer, Some(&bytes), unix(now_ms()));
        prop_assert_ne!(report.verdict(), ocsp::StapleVerdict::Good);
    }

    #[test]
    fn mutated_staples_never_panic(bytes in mutated(fixtures().staple.clone())) {
        let f = fixtures();
        let report = ocsp::check_staple(&f.staple_leaf, &f.staple_issuer, Some(&bytes), unix(now_ms()));
        if let Some(list) = report.sct_list() {
            let _ = sct::parse_list(list);
        }
    }

    #[test]
    fn mutated_leaves_never_panic(bytes in mutated(fixtures().leaf_der.clone())) {
        let f = fixtures();
        if let Ok(leaf) = Leaf::parse(&bytes) {
            let _ = leaf.must_staple();
            let report = policy::check(LogList::builtin(), &leaf, &f.issuer, Delivered::default(), at("2023-01-10T00:00:00Z"));
            prop_assert!(!report.to_string().is_empty());
        }
        let _ = Issuer::from_cert_der(&bytes);
    }

    #[test]
    fn log_lists_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = LogList::from_json(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn mutated_log_lists_never_panic(bytes in mutated(support::builtin_json().into_bytes())) {
        if let Ok(list) = LogList::from_json(&bytes) {
            let f = fixtures();
            let _ = policy::check(&list, &f.leaf, &f.issuer, Delivered::default(), at("2023-01-10T00:00:00Z"));
        }
    }
}
