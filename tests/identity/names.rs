//! `names:` (DNS and SPIFFE URI SANs) instead of the host name, and
//! `**.` entries.

use super::*;

// === names: ===

const SPIFFE_ID: &str = "spiffe://example.org/ns/pay/sa/api";

/// host, pins, names, status, x-pinproxy-error, tls failure reason
type Case<'a> = (
    &'a str,
    &'a [Pin],
    &'a str,
    u16,
    Option<&'a str>,
    Option<&'a str>,
);

/// The server's certificate carries a SPIFFE ID, a DNS wildcard and one
/// host name; `names:` decides, instead of the host name, which it must
/// carry — and pins still apply.
#[tokio::test]
async fn names_match_spiffe_ids_exactly_or_by_prefix_and_replace_the_host_check() {
    let server = server_pki(&[SPIFFE_ID, "*.svc.internal", "carries.names.test"]);
    let up = upstream(server.chain(), server.key_der(), UpstreamOpts::new("named")).await;
    let pin = [server.int.pin()];
    let wrong_pin = [Pin::of_spki_der(
        &KeyPair::generate().unwrap().public_key_der(),
    )];
    let cases: &[Case] = &[
        // host, pins, names, status, x-pinproxy-error, tls failure reason
        (
            "exact.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/sa/api\"]",
            200,
            None,
            None,
        ),
        (
            "prefix.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/*\"]",
            200,
            None,
            None,
        ),
        (
            "domain.names.test",
            &pin,
            "[\"spiffe://example.org/*\"]",
            200,
            None,
            None,
        ),
        (
            "dns.names.test",
            &pin,
            "[api.svc.internal]",
            200,
            None,
            None,
        ),
        (
            "other.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/sa/other\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        (
            "otherns.names.test",
            &pin,
            "[\"spiffe://example.org/ns/payments/*\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        (
            "otherdomain.names.test",
            &pin,
            "[\"spiffe://example.com/*\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        (
            "deep.names.test",
            &pin,
            "[a.b.svc.internal]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        // The certificate carries this host, but names: replaces that check.
        (
            "carries.names.test",
            &pin,
            "[\"spiffe://example.org/ns/pay/sa/other\"]",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        // Without names: the host name is checked as ever.
        (
            "nonames.names.test",
            &pin,
            "",
            502,
            Some("untrusted-certificate"),
            Some("wrong-name"),
        ),
        // Names matched, pins do not: still refused.
        (
            "pins.names.test",
            &wrong_pin,
            "[\"spiffe://example.org/ns/pay/sa/api\"]",
            502,
            Some("pin-mismatch"),
            Some("pin-mismatch"),
        ),
    ];
    let mut yaml = String::from("version: 1\nhosts:\n");
    for (host, pins, names, ..) in cases {
        let extra = if names.is_empty() {
            String::new()
        } else {
            format!("    names: {names}\n")
        };
        yaml.push_str(&entry(host, pins, up.addr, &extra));
    }
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", server.root_pem())
        .run()
        .await;
    for (host, _, _, status, error, reason) in cases {
        let s = both(&p, host).await;
        assert_eq!(
            (s.status, s.error.as_deref()),
            (*status, *error),
            "{host}: {s:?}"
        );
        if let Some(reason) = reason {
            assert_eq!(p.tls_failures(host, reason), 2, "{host}: {reason}");
        } else {
            assert!(s.body.contains("upstream=named"), "{host}: {s:?}");
        }
        if *error == Some("untrusted-certificate") {
            assert!(
                s.body.contains("not valid for this host's name"),
                "{host}: {s:?}"
            );
        }
    }
}
// === **. entries ===

/// `**.cdn.test` covers the apex and every depth; exact entries win, then
/// `*.` (one label), then `**.` from the longest suffix.
#[tokio::test]
async fn any_depth_entries_cover_the_apex_and_every_depth_after_exact_and_one_label() {
    let sans = [
        "cdn.test",
        "*.cdn.test",
        "*.b.cdn.test",
        "*.q.b.cdn.test",
        "*.n.cdn.test",
    ];
    let server = server_pki(&sans);
    let mut addrs = Vec::new();
    for name in ["deep", "deeper", "one", "exact"] {
        addrs.push(
            upstream(server.chain(), server.key_der(), UpstreamOpts::new(name))
                .await
                .addr,
        );
    }
    let pin = [server.int.pin()];
    let yaml = format!(
        "version: 1\nhosts:\n{}{}{}{}",
        entry("**.cdn.test", &pin, addrs[0], ""),
        entry("**.b.cdn.test", &pin, addrs[1], ""),
        entry("*.cdn.test", &pin, addrs[2], ""),
        entry("x.cdn.test", &pin, addrs[3], ""),
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("ca.pem", server.root_pem())
        .run()
        .await;
    for (host, reached, entry) in [
        ("cdn.test", "deep", "**.cdn.test"),
        ("m.n.cdn.test", "deep", "**.cdn.test"),
        ("y.cdn.test", "one", "*.cdn.test"),
        ("b.cdn.test", "one", "*.cdn.test"),
        ("x.cdn.test", "exact", "x.cdn.test"),
        ("q.b.cdn.test", "deeper", "**.b.cdn.test"),
        ("r.q.b.cdn.test", "deeper", "**.b.cdn.test"),
    ] {
        let before = p.requests(entry, "ok");
        let s = both(&p, host).await;
        assert_eq!(s.status, 200, "{host}: {s:?}");
        assert!(
            s.body.contains(&format!("upstream={reached} ")),
            "{host}: {s:?}"
        );
        assert_eq!(
            p.requests(entry, "ok"),
            before + 2,
            "{host} counted under {entry}"
        );
    }
    for miss in ["cdn.test.evil.test", "xcdn.test", "test"] {
        let r = forward(&p, miss, "/").await;
        assert_eq!(
            (r.status, r.error.as_deref()),
            (403, Some("host-not-allowed")),
            "{miss}"
        );
        let (status, _, _) = connect_status(p.addr, &format!("{miss}:443")).await;
        assert_eq!(status, 403, "{miss}");
    }
}
