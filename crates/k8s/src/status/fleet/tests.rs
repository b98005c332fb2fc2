use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn injected_pod() -> Value {
    json!({
        "metadata": {"name": "app-1", "namespace": "shop", "labels": {"pinproxy.io/injected": "true"}},
        "spec": {
            "initContainers": [{
                "name": "pinproxy", "image": "reg/pinproxy:0.1.0", "restartPolicy": "Always",
                "ports": [{"name": "pinproxy-admin", "containerPort": 9911}]
            }],
            "containers": [{"name": "app", "image": "app"}],
            "volumes": [{"name": "pinproxy-pins", "secret": {"secretName": "my-pins"}}]
        }
    })
}

#[test]
fn sidecar_found_in_init_containers_with_port_and_secret() {
    let s = sidecar_of(&injected_pod()).expect("sidecar");
    assert_eq!(s.admin_port, 9911);
    assert_eq!(s.image, "reg/pinproxy:0.1.0");
    assert_eq!(s.pins_secret.as_deref(), Some("my-pins"));
}

#[test]
fn legacy_sidecar_without_named_port_uses_the_default() {
    let pod =
        json!({"spec": {"containers": [{"name": "app"}, {"name": "pinproxy", "image": "x"}]}});
    let s = sidecar_of(&pod).expect("sidecar");
    assert_eq!(s.admin_port, 9901);
    assert_eq!(s.pins_secret, None);
    assert!(sidecar_of(&json!({"spec": {"containers": [{"name": "app"}]}})).is_none());
}

#[test]
fn who_asked_for_injection() {
    let none = BTreeMap::new();
    let labelled_ns: BTreeMap<String, String> =
        [("pinproxy.io/inject".to_string(), "enabled".to_string())].into();
    let pod = |labels: Value, annotations: Value| json!({"metadata": {"labels": labels, "annotations": annotations}});
    assert!(asked_for_injection(
        &pod(json!({"pinproxy.io/inject": "true"}), json!({})),
        &none
    )
    .is_some_and(|w| w.contains("pod label")));
    assert!(asked_for_injection(
        &pod(json!({}), json!({"pinproxy.io/inject": "true"})),
        &none
    )
    .is_some_and(|w| w.contains("annotation")));
    assert!(
        asked_for_injection(&pod(json!({}), json!({})), &labelled_ns)
            .is_some_and(|w| w.contains("namespace label"))
    );
    // Opted out, or never asked.
    assert_eq!(
        asked_for_injection(
            &pod(json!({"pinproxy.io/inject": "false"}), json!({})),
            &labelled_ns
        ),
        None
    );
    assert_eq!(
        asked_for_injection(
            &pod(json!({}), json!({"pinproxy.io/inject": "false"})),
            &labelled_ns
        ),
        None
    );
    assert_eq!(asked_for_injection(&pod(json!({}), json!({})), &none), None);
}

#[test]
fn metrics_facts() {
    let text = "# HELP pinproxy_pin_mismatch_total x\n\
        pinproxy_pin_mismatch_total{host=\"a.test\",mode=\"enforce\"} 3\n\
        pinproxy_pin_mismatch_total{host=\"b.test\",mode=\"report\"} 2\n\
        pinproxy_config_reloads_total{result=\"failure\"} 1\n\
        pinproxy_config_reloads_total{result=\"success\"} 4\n\
        pinproxy_config_last_reload_successful 0\n\
        pinproxy_build_info{version=\"0.1.0\"} 1\n\
        pinproxy_config_generation 3\n\
        pinproxy_pinset_info{sha256=\"6dc9cb7f19427b2e65d42d053e8b3c5b6757f1a22761fb66ad0146295be676d9\",serial=\"\",key=\"\"} 1\n\
        pinproxy_pinset_expiry_timestamp_seconds{host=\"a.test\"} 1830211200\n\
        pinproxy_pinset_expiry_timestamp_seconds{host=\"b.test\"} 1798848000\n\
        garbage line\n";
    let m = parse_metrics(text);
    assert_eq!(m.mismatches, 5);
    assert_eq!(m.reload_failures, 1);
    assert_eq!(m.reload_successes, 4);
    assert_eq!(m.last_reload_ok, Some(false));
    assert_eq!(m.version.as_deref(), Some("0.1.0"));
    assert_eq!(m.generation, Some(3));
    assert_eq!(m.pins_sha256.as_deref(), Some(SHA));
    assert_eq!(m.nearest_expiry, Some((1798848000, "b.test".into())));
    assert_eq!(m.invalid, Vec::<&str>::new());
}

const SHA: &str = "6dc9cb7f19427b2e65d42d053e8b3c5b6757f1a22761fb66ad0146295be676d9";

fn pinset_info(labels: &str) -> MetricFacts {
    parse_metrics(&format!("pinproxy_pinset_info{{{labels}}} 1\n"))
}

#[test]
fn only_a_sha256_as_pinproxy_writes_it_is_taken() {
    assert_eq!(
        pinset_info(&format!("sha256=\"{SHA}\""))
            .pins_sha256
            .as_deref(),
        Some(SHA)
    );
    for bad in [
        "ab12".to_string(),
        SHA.to_uppercase(),
        format!("{SHA}\u{202e}"),
        format!("{SHA}0"),
        format!("{}\u{1b}[0m", &SHA[..60]),
    ] {
        let m = pinset_info(&format!("sha256=\"{bad}\""));
        assert_eq!(m.pins_sha256, None, "{bad:?}");
        assert_eq!(m.invalid, vec![SHA256], "{bad:?}");
    }
    // The label named exactly: another label ending in `sha256` is not it.
    let m = pinset_info(&format!("xsha256=\"{SHA}\",sha256=\"bogus\""));
    assert_eq!((m.pins_sha256, m.invalid), (None, vec![SHA256]));
    // Two series at 1 that disagree say nothing.
    let other = SHA.replace('6', "7");
    let m = parse_metrics(&format!(
        "pinproxy_pinset_info{{sha256=\"{SHA}\"}} 1\npinproxy_pinset_info{{sha256=\"{other}\"}} 1\n"
    ));
    assert_eq!((m.pins_sha256, m.invalid), (None, vec![SHA256]));
    // A malformed line of a series status reads is named, not skipped.
    let m = parse_metrics(&format!("pinproxy_pinset_info{{sha256=\"{SHA}\" 1\n"));
    assert_eq!((m.pins_sha256, m.invalid), (None, vec![SHA256]));
}

#[test]
fn label_values_are_read_with_their_escapes() {
    let m = parse_metrics(
        "pinproxy_build_info{note=\"a\\\"b,version=\\\"9\",version=\"0.1.0\"} 1\n\
         pinproxy_pinset_expiry_timestamp_seconds{host=\"a.test\"} 1830211200 1700000000000\n",
    );
    assert_eq!(m.version.as_deref(), Some("0.1.0"));
    assert_eq!(m.nearest_expiry, Some((1830211200, "a.test".into())));
    assert_eq!(m.invalid, Vec::<&str>::new());
}

#[test]
fn values_that_are_not_what_the_series_carries_are_invalid() {
    let cases: &[(&str, &str)] = &[
        ("pinproxy_config_generation NaN", GENERATION),
        ("pinproxy_config_generation -1", GENERATION),
        ("pinproxy_config_generation 2.5", GENERATION),
        ("pinproxy_config_generation +Inf", GENERATION),
        (
            "pinproxy_pin_mismatch_total{host=\"a\",mode=\"enforce\"} 1e300",
            MISMATCHES,
        ),
        (
            "pinproxy_config_reloads_total{result=\"failure\"} -3",
            RELOADS,
        ),
        ("pinproxy_config_last_reload_successful 2", LAST_RELOAD),
        (
            "pinproxy_build_info{version=\"0.1.0\\n\u{1b}[2J\"} 1",
            VERSION,
        ),
        ("pinproxy_build_info 1", VERSION),
        (
            "pinproxy_pinset_expiry_timestamp_seconds{host=\"a.test\u{202e}\"} 1830211200",
            EXPIRY,
        ),
        (
            "pinproxy_pinset_expiry_timestamp_seconds{host=\"a.test\"} 1e300",
            EXPIRY,
        ),
    ];
    for (line, what) in cases {
        let m = parse_metrics(&format!("{line}\n"));
        assert_eq!(m.invalid, vec![*what], "{line}");
        assert_eq!(
            (m.generation, m.version, m.nearest_expiry, m.last_reload_ok),
            (None, None, None, None),
            "{line}"
        );
    }
}

#[test]
fn fed_a_line_at_a_time_it_reads_the_same() {
    let text = format!(
        "# HELP x\r\npinproxy_pin_mismatch_total{{host=\"a\",mode=\"enforce\"}} 3\r\n\
         pinproxy_pinset_info{{sha256=\"{SHA}\"}} 1\r\npinproxy_config_generation 4"
    );
    let mut p = MetricsParser::default();
    text.split('\n').for_each(|l| p.line(l));
    let m = p.finish();
    assert_eq!(m, parse_metrics(&text));
    assert_eq!((m.mismatches, m.generation), (3, Some(4)));
    assert_eq!(m.pins_sha256.as_deref(), Some(SHA));
}

#[test]
fn secret_hash_is_the_sha256_of_pins_yaml() {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode("version: 1\n");
    let secret = json!({"data": {"pins.yaml": data}});
    let want = hex(ring::digest::digest(&ring::digest::SHA256, b"version: 1\n").as_ref());
    assert_eq!(secret_pins_sha256(&secret), Some(want));
    assert_eq!(secret_pins_sha256(&json!({"data": {}})), None);
}
