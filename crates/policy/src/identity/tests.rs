use super::*;

#[test]
fn names_parse_dns_uri_and_spiffe() {
    assert_eq!(
        Name::parse("API.Internal.Example."),
        Ok(Name::Dns("api.internal.example".into()))
    );
    assert_eq!(
        Name::parse("spiffe://example.org/ns/pay/sa/api"),
        Ok(Name::Uri("spiffe://example.org/ns/pay/sa/api".into()))
    );
    assert_eq!(
        Name::parse("spiffe://example.org/*"),
        Ok(Name::UriPrefix("spiffe://example.org/".into()))
    );
    assert_eq!(
        Name::parse("spiffe://example.org/ns/pay/*"),
        Ok(Name::UriPrefix("spiffe://example.org/ns/pay/".into()))
    );
    assert_eq!(
        Name::parse("HTTPS://Api.Example/Path"),
        Ok(Name::Uri("https://api.example/Path".into()))
    );
    for (bad, why) in [
        ("", NameError::Empty),
        ("*.example.org", NameError::Wildcard("*.example.org".into())),
        ("10.0.0.1", NameError::Ip("10.0.0.1".into())),
        ("not a name", NameError::Neither("not a name".into())),
        ("://x", NameError::Neither("://x".into())),
        (
            "spiffe://example.org/ns*",
            NameError::UriWildcard("spiffe://example.org/ns*".into()),
        ),
        (
            "spiffe://example.org/*/sa",
            NameError::UriWildcard("spiffe://example.org/*/sa".into()),
        ),
    ] {
        assert_eq!(Name::parse(bad), Err(why), "{bad:?}");
    }
    assert_eq!(
        Name::parse("spiffe:///a"),
        Err(NameError::Neither("spiffe:///a".into()))
    );
    // Scheme and authority compare case-insensitively: written either way.
    assert_eq!(
        Name::parse("spiffe://Example.ORG/x"),
        Ok(Name::Uri("spiffe://example.org/x".into()))
    );
    for bad in [
        "spiffe://exa$mple.org/x",
        "spiffe://example.org",
        "spiffe://example.org/",
        "spiffe://example.org/a//b",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/a?b",
        "spiffe://example.org:8443/a",
    ] {
        assert!(
            matches!(Name::parse(bad), Err(NameError::Spiffe(..))),
            "{bad:?}: {:?}",
            Name::parse(bad)
        );
    }
}

#[test]
fn uri_names_match_exactly_or_by_whole_segments() {
    let exact = Name::parse("spiffe://example.org/ns/pay/sa/api").unwrap();
    assert!(exact.matches_uri("spiffe://example.org/ns/pay/sa/api"));
    assert!(exact.matches_uri("SPIFFE://EXAMPLE.ORG/ns/pay/sa/api"));
    for miss in [
        "spiffe://example.org/ns/pay/sa/api2",
        "spiffe://example.org/ns/pay/sa/API",
        "spiffe://example.org/ns/pay/sa/api/x",
        "spiffe://example.org.evil/ns/pay/sa/api",
        "not a uri",
    ] {
        assert!(!exact.matches_uri(miss), "{miss}");
    }
    let ns = Name::parse("spiffe://example.org/ns/pay/*").unwrap();
    assert!(ns.matches_uri("spiffe://example.org/ns/pay/sa/api"));
    for miss in [
        "spiffe://example.org/ns/pay/",
        "spiffe://example.org/ns/pay",
        "spiffe://example.org/ns/payments/sa/api",
        "spiffe://example.org.evil/ns/pay/sa/api",
    ] {
        assert!(!ns.matches_uri(miss), "{miss}");
    }
    let td = Name::parse("spiffe://example.org/*").unwrap();
    assert!(td.matches_uri("spiffe://example.org/anything"));
    assert!(!td.matches_uri("spiffe://example.org.evil/anything"));
    assert!(!td.matches_uri("spiffe://example.orgx/anything"));
    assert!(!Name::parse("a.example")
        .unwrap()
        .matches_uri("https://a.example/"));
    assert_eq!(td.to_string(), "spiffe://example.org/*");
}
