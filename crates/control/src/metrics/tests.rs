use super::*;

#[test]
fn every_family_is_exposed() {
    let m = Metrics::new();
    m.connections_active.set(0);
    let text = String::from_utf8(m.render()).unwrap();
    for name in [
        "pinproxy_denied_total",
        "pinproxy_config_reloads_total",
        "pinproxy_connections_active",
        "pinproxy_reports_total",
        "pinproxy_learned_hosts",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

/// What moved between two sets of samples (series that appeared count
/// from 0).
fn moved(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k).copied().unwrap_or(0.0) != **v)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Every reason walked through the one counting function: exactly the
/// counters its row of the table declares move, each by one, and
/// nothing else in the registry does.
#[test]
fn every_reason_moves_exactly_the_counters_the_table_declares() {
    let m = Metrics::new();
    for reason in Reason::ALL {
        let counted = reason.counted();
        let r = reason.as_str();
        // Refused under an admitted host.
        if counted.denied || counted.outcome {
            let before = m.samples();
            m.refused(*reason, Some("api.test"));
            let mut want = Vec::new();
            if counted.denied {
                want.push(format!("pinproxy_denied_total{{reason={r:?}}}"));
            }
            if counted.outcome {
                want.push(format!(
                    "pinproxy_requests_total{{host=\"api.test\",outcome={r:?}}}"
                ));
            }
            let after = m.samples();
            assert_eq!(moved(&before, &after), want, "{reason:?} refused");
            for k in &want {
                assert_eq!(after[k] - before.get(k).copied().unwrap_or(0.0), 1.0);
            }
        }
        // Refused before admission: no host to count it under.
        if counted.denied {
            let before = m.samples();
            m.refused(*reason, None);
            let want = vec![format!("pinproxy_denied_total{{reason={r:?}}}")];
            assert_eq!(
                moved(&before, &m.samples()),
                want,
                "{reason:?} refused early"
            );
        }
        // A failed handshake.
        if counted.tls {
            let before = m.samples();
            m.handshake_failed("api.test", *reason);
            let want = vec![format!(
                "pinproxy_tls_verify_failures_total{{host=\"api.test\",reason={r:?}}}"
            )];
            assert_eq!(moved(&before, &m.samples()), want, "{reason:?} handshake");
        }
    }
    // The walk reached every column of the table.
    for column in [
        |c: pinproxy_reason::Counted| c.denied,
        |c: pinproxy_reason::Counted| c.outcome,
        |c: pinproxy_reason::Counted| c.tls,
    ] {
        assert!(Reason::ALL.iter().any(|r| column(r.counted())));
    }
}

/// An outcome counted only under an admitted host, refused before
/// admission, is a bug the debug build says so about.
#[test]
#[should_panic(expected = "counted only under the host")]
#[cfg(debug_assertions)]
fn an_outcome_needs_the_host_it_was_admitted_as() {
    Metrics::new().refused(Reason::UpstreamTimeout, None);
}

#[test]
fn reading_a_count_creates_no_series() {
    let m = Metrics::new();
    let before = m.samples();
    assert_eq!(m.requests_count("nowhere.test", "ok"), 0);
    assert_eq!(m.tls_failures_count("nowhere.test", "expired"), 0);
    assert_eq!(m.samples(), before);
    m.served("a.test", RequestOutcome::Tunnel);
    assert_eq!(m.requests_count("a.test", "tunnel"), 1);
}
