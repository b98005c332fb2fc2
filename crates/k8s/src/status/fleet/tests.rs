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
        pinproxy_pinset_info{sha256=\"ab12\"} 1\n\
        pinproxy_pinset_expiry_timestamp_seconds{host=\"a.test\"} 1830211200\n\
        pinproxy_pinset_expiry_timestamp_seconds{host=\"b.test\"} 1798848000\n\
        garbage line\n";
    let m = parse_metrics(text);
    assert_eq!(m.mismatches, 5.0);
    assert_eq!(m.reload_failures, 1.0);
    assert_eq!(m.reload_successes, 4.0);
    assert_eq!(m.last_reload_ok, Some(false));
    assert_eq!(m.version.as_deref(), Some("0.1.0"));
    assert_eq!(m.generation, Some(3));
    assert_eq!(m.pins_sha256.as_deref(), Some("ab12"));
    assert_eq!(m.nearest_expiry, Some((1798848000, "b.test".into())));
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
