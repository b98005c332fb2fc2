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
        garbage line\n";
    let m = parse_metrics(text);
    assert_eq!(m.mismatches, 5.0);
    assert_eq!(m.reload_failures, 1.0);
    assert_eq!(m.reload_successes, 4.0);
    assert_eq!(m.last_reload_ok, Some(false));
    assert_eq!(m.version.as_deref(), Some("0.1.0"));
}

#[test]
fn pins_facts_and_the_nearest_expiry() {
    let body = br#"{"generation": 3, "pins_sha256": "ab", "hosts": [
        {"host": "a.test", "expires": "2027-06-30"},
        {"host": "b.test", "expires": "2027-01-02"},
        {"host": "c.test", "expires": null}]}"#;
    let p = parse_pins(body).expect("parses");
    assert_eq!(p.generation, Some(3));
    assert_eq!(p.pins_sha256.as_deref(), Some("ab"));
    assert_eq!(
        p.nearest_expiry,
        Some(("2027-01-02".into(), "b.test".into()))
    );
    assert!(parse_pins(b"not json").is_err());
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
