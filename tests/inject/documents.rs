//! What inject leaves alone or updates in place: identity Secrets, other
//! documents, opted-out streams, new options, octal modes; bad input.

use super::*;

/// Identity Secrets reach the sidecar only, once each, read-only, as
/// directories; dropping one from the options takes its volume out again.
#[test]
fn identity_secrets_are_mounted_into_the_sidecar_only() {
    let input = std::fs::read_to_string(fixtures().join("identity.in.yaml")).unwrap();
    let out = inject_stream(&input, &options_for("identity")).unwrap();
    let doc: Value = serde_yaml::from_str(&out).unwrap();
    let spec = &pod_specs(&doc)[0]["spec"];
    let sidecar = &spec["initContainers"][0];
    let mounts: Vec<(&str, &str, bool)> = sidecar["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
                m["readOnly"].as_bool() == Some(true),
            )
        })
        .filter(|(n, _, _)| n.starts_with("pinproxy-id-"))
        .collect();
    assert_eq!(
        mounts,
        [
            (
                "pinproxy-id-pay-client",
                "/etc/pinproxy-identity/pay-client",
                true
            ),
            (
                "pinproxy-id-spiffe-svid",
                "/etc/pinproxy-identity/spiffe-svid",
                true
            ),
        ]
    );
    for m in sidecar["volumeMounts"].as_sequence().unwrap() {
        assert!(m.get("subPath").is_none());
    }
    let app_mounts = serde_yaml::to_string(&spec["containers"][0]["volumeMounts"]).unwrap();
    assert!(!app_mounts.contains("pinproxy-id-"), "{app_mounts}");
    let volumes = serde_yaml::to_string(&spec["volumes"]).unwrap();
    assert!(
        volumes.contains("secretName: pay-client") && volumes.contains("secretName: spiffe-svid")
    );

    // Without the option, and the annotation down to one Secret, only that
    // one stays.
    let one = out.replace("spiffe-svid, pay-client", "spiffe-svid");
    assert_ne!(one, out);
    let fewer = inject_stream(&one, &options_for("deployment")).unwrap();
    assert!(!fewer.contains("pinproxy-id-pay-client"), "{fewer}");
    assert!(fewer.contains("pinproxy-id-spiffe-svid"), "{fewer}");

    // A name that cannot be a Secret is refused, in the flag or the annotation.
    let mut bad = options_for("identity");
    bad.identity_secrets = vec!["Not_A_Name".into()];
    assert!(inject_stream(&input, &bad).is_err());
    let bad_annotation = input.replace("spiffe-svid, pay-client", "spiffe-svid, ../x");
    let err = inject_stream(&bad_annotation, &options_for("deployment")).unwrap_err();
    assert!(
        err.to_string().contains("pinproxy.io/identity-secrets"),
        "{err}"
    );
}

#[test]
fn documents_other_than_workloads_come_back_byte_for_byte() {
    let input = std::fs::read_to_string(fixtures().join("multi-doc.in.yaml")).unwrap();
    let out = inject_stream(&input, &options_for("multi-doc")).unwrap();
    let (before, after) = (documents(&input), documents(&out));
    assert_eq!(before.len(), after.len());
    let mut changed = 0;
    for (b, a) in before.iter().zip(&after) {
        let doc: Value = serde_yaml::from_str(b).unwrap_or(Value::Null);
        let injectable = !pod_specs(&doc).is_empty()
            && pod_specs(&doc)
                .iter()
                .all(|t| t["spec"]["containers"].is_sequence());
        if injectable {
            assert_ne!(a, b, "a workload was not injected");
            changed += 1;
        } else {
            assert_eq!(a, b, "a non-workload document changed");
        }
    }
    assert_eq!(changed, 2, "the Deployment and the List with a Pod");
}

#[test]
fn opted_out_stream_is_untouched() {
    let input = std::fs::read_to_string(fixtures().join("opt-out.in.yaml")).unwrap();
    assert_eq!(
        inject_stream(&input, &options_for("opt-out")).unwrap(),
        input
    );
}

#[test]
fn new_options_update_an_injected_workload_in_place() {
    let input = std::fs::read_to_string(fixtures().join("deployment.in.yaml")).unwrap();
    let old = InjectOptions {
        image: "ghcr.io/pinproxy/pinproxy:0.0.1".into(),
        ..options_for("deployment")
    };
    let new = options_for("deployment");
    let via_old = inject_stream(&inject_stream(&input, &old).unwrap(), &new).unwrap();
    assert_eq!(via_old, inject_stream(&input, &new).unwrap());
    // Switching between native and legacy moves the sidecar, never duplicates it.
    let legacy = InjectOptions {
        native_sidecar: false,
        ..new.clone()
    };
    let back = inject_stream(&inject_stream(&via_old, &legacy).unwrap(), &new).unwrap();
    let doc: Value = serde_yaml::from_str(&back).unwrap();
    let spec = &doc["spec"]["template"]["spec"];
    let count = |list: &str| {
        spec[list]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|c| c["name"].as_str() == Some("pinproxy"))
            .count()
    };
    assert_eq!((count("initContainers"), count("containers")), (1, 0));
}

#[test]
fn octal_modes_keep_their_value() {
    let input = std::fs::read_to_string(fixtures().join("deployment.in.yaml")).unwrap();
    let out = inject_stream(&input, &options_for("deployment")).unwrap();
    assert!(
        out.contains("defaultMode: 420"),
        "0644 must stay octal 0644 = 420:\n{out}"
    );
    // YAML 1.1 readers (Kubernetes) would take a plain `on` for a boolean.
    assert!(out.contains("value: \"on\""), "{out}");
}

#[test]
fn invalid_yaml_names_the_document() {
    let input = "apiVersion: v1\nkind: ConfigMap\n---\nkind: Pod\nspec: [unclosed\n";
    match inject_stream(input, &InjectOptions::default()) {
        Err(InjectError::Parse { index, line, .. }) => assert_eq!((index, line), (1, 3)),
        other => panic!("want a parse error, got {other:?}"),
    }
}

#[test]
fn malformed_workload_is_an_error_not_a_panic() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a}]\n  volumes: notalist\n";
    let err = inject_stream(input, &InjectOptions::default()).unwrap_err();
    assert!(err.to_string().contains("volumes"), "{err}");
}

#[test]
fn bad_options_are_refused() {
    let opts = InjectOptions {
        pins_secret: "Not A Name".into(),
        ..InjectOptions::default()
    };
    assert!(matches!(
        inject_stream("kind: Pod\n", &opts),
        Err(InjectError::Options(_))
    ));
}
