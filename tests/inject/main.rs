//! Golden tests for `pinproxy inject`.
//!
//! Every `tests/fixtures/inject/NAME.in.yaml` is injected and compared with
//! `NAME.out.yaml`. Cases named `legacy-*` use the regular-container
//! sidecar, `override-proxy` uses --override-proxy, `trust-extra` extra CAs
//! and NO_PROXY entries; the rest use the defaults with a fixed image so the
//! files do not change with the crate version. `PINPROXY_BLESS=1 cargo test
//! --test inject` rewrites the expected files; review the diff before
//! committing it.

use std::path::{Path, PathBuf};

use pinproxy::k8s::inject::{
    inject_stream, inject_stream_with_warnings, InjectError, InjectOptions,
};
use serde_yaml::Value;

mod cli;
mod documents;
mod transparent;

const IMAGE: &str = "ghcr.io/pinproxy/pinproxy:test";
const INIT_IMAGE: &str = "ghcr.io/pinproxy/pinproxy-init:test";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject")
}

fn options_for(case: &str) -> InjectOptions {
    let mut opts = InjectOptions {
        image: IMAGE.into(),
        native_sidecar: !case.starts_with("legacy-"),
        ..InjectOptions::default()
    };
    match case {
        "override-proxy" => opts.override_proxy = true,
        "transparent" => {
            opts.transparent = true;
            opts.redirect.lock = true;
            opts.redirect.exclude_cidr = vec!["10.96.0.0/12".into()];
            opts.redirect.init_image = INIT_IMAGE.into();
        }
        "identity" => opts.identity_secrets = vec!["pay-client".into()],
        // Switched by its annotation alone.
        "transparent-switch" => opts.redirect.init_image = INIT_IMAGE.into(),
        "trust-extra" => {
            opts.ca_bundle_extra = vec![
                "configmap/kube-root-ca.crt".parse().unwrap(),
                "secret/internal-ca:root.pem".parse().unwrap(),
            ];
            opts.no_proxy = vec!["10.96.0.0/12".into(), ".corp.example.com".into()];
        }
        _ => {}
    }
    opts
}

/// (case name, input text) for every fixture.
fn cases() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(fixtures())
        .expect("fixture directory exists")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".in.yaml")?
                .to_string();
            Some((name, std::fs::read_to_string(&path).ok()?))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "fixtures missing: found {}", out.len());
    out
}

/// Split a stream on its `---` lines, keeping the text of each document.
fn documents(stream: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in stream.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(String::new());
        }
        docs.last_mut().unwrap().push_str(line);
    }
    docs
}

fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// Pod templates of a document, as (metadata, spec).
fn pod_specs(doc: &Value) -> Vec<&Value> {
    match kind(doc) {
        "Pod" => vec![doc],
        "CronJob" => vec![&doc["spec"]["jobTemplate"]["spec"]["template"]],
        "List" => doc["items"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(pod_specs)
            .collect(),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            vec![&doc["spec"]["template"]]
        }
        _ => vec![],
    }
}

/// `http.nonProxyHosts` as docs/reference.md ("Kubernetes interface") wants it
/// for these options: every NO_PROXY entry, `.x` as `*.x`, a name as itself and
/// its subdomains.
fn java_non_proxy(opts: &InjectOptions) -> String {
    let mut out = [
        "localhost|*.localhost|127.0.0.1|[::1]|*.svc|*.svc.cluster.local|*.cluster.local",
        "kubernetes|*.kubernetes|kubernetes.default|*.kubernetes.default",
        "kubernetes.default.svc|*.kubernetes.default.svc|$(KUBERNETES_SERVICE_HOST)",
    ]
    .join("|");
    for extra in &opts.no_proxy {
        match extra.as_str() {
            "10.96.0.0/12" => {
                for octet in 96..112 {
                    out.push_str(&format!("|10.{octet}.*"));
                }
            }
            ".corp.example.com" => out.push_str("|*.corp.example.com"),
            other => panic!("no expectation for --no-proxy {other}"),
        }
    }
    out
}

#[test]
fn golden() {
    let bless = std::env::var_os("PINPROXY_BLESS").is_some();
    let mut failures = Vec::new();
    for (case, input) in cases() {
        let got = inject_stream(&input, &options_for(&case))
            .unwrap_or_else(|e| panic!("{case}: inject failed: {e}"));
        let expected_path = fixtures().join(format!("{case}.out.yaml"));
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with PINPROXY_BLESS=1)",
                expected_path.display()
            )
        });
        if got != expected {
            failures.push(format!("--- {case}: got\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn injecting_twice_equals_once() {
    for (case, input) in cases() {
        let opts = options_for(&case);
        let once = inject_stream(&input, &opts).unwrap();
        let twice = inject_stream(&once, &opts).unwrap();
        assert_eq!(once, twice, "{case}: second injection changed the output");
    }
}

#[test]
fn every_pod_template_gets_a_hardened_sidecar() {
    // Transparent mode's templates have their own invariants, below.
    for (case, input) in cases()
        .into_iter()
        .filter(|(c, _)| !c.starts_with("transparent"))
    {
        let opts = options_for(&case);
        let out = inject_stream(&input, &opts).unwrap();
        for text in documents(&out) {
            let doc: Value = serde_yaml::from_str(&text).unwrap();
            for tmpl in pod_specs(&doc) {
                let spec = &tmpl["spec"];
                if !spec["containers"].is_sequence() {
                    continue; // a patch or fragment, left alone
                }
                let opted_out = tmpl["metadata"]["annotations"]["pinproxy.io/inject"].as_str()
                    == Some("false")
                    || doc["metadata"]["annotations"]["pinproxy.io/inject"].as_str()
                        == Some("false");
                let list = if opts.native_sidecar {
                    "initContainers"
                } else {
                    "containers"
                };
                let sidecars: Vec<&Value> = spec[list]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["name"].as_str() == Some("pinproxy"))
                    .collect();
                if opted_out {
                    assert!(sidecars.is_empty(), "{case}: opted-out template injected");
                    continue;
                }
                assert_eq!(
                    sidecars.len(),
                    1,
                    "{case}: want one sidecar in {list}:\n{text}"
                );
                let c = sidecars[0];
                // First, so it starts before the app and any other init container.
                assert_eq!(spec[list][0]["name"].as_str(), Some("pinproxy"), "{case}");
                if opts.native_sidecar {
                    assert_eq!(c["restartPolicy"].as_str(), Some("Always"), "{case}");
                }
                assert_eq!(
                    c["startupProbe"]["httpGet"]["path"].as_str(),
                    Some("/readyz"),
                    "{case}"
                );
                assert_eq!(
                    c["readinessProbe"]["httpGet"]["path"].as_str(),
                    Some("/readyz"),
                    "{case}"
                );
                assert_eq!(
                    c["livenessProbe"]["httpGet"]["path"].as_str(),
                    Some("/healthz"),
                    "{case}"
                );
                let sc = &c["securityContext"];
                assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{case}");
                assert_eq!(
                    sc["allowPrivilegeEscalation"].as_bool(),
                    Some(false),
                    "{case}"
                );
                assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{case}");
                assert_eq!(
                    sc["capabilities"]["drop"][0].as_str(),
                    Some("ALL"),
                    "{case}"
                );
                assert_eq!(
                    sc["seccompProfile"]["type"].as_str(),
                    Some("RuntimeDefault"),
                    "{case}"
                );
                assert!(c["resources"]["requests"]["memory"].is_string(), "{case}");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{case}");
                // The pins Secret is mounted as a directory: subPath never updates.
                for m in c["volumeMounts"].as_sequence().unwrap() {
                    assert!(m.get("subPath").is_none(), "{case}: subPath mount");
                }
                let volumes = spec["volumes"].as_sequence().unwrap();
                assert!(
                    volumes
                        .iter()
                        .any(|v| v["name"].as_str() == Some("pinproxy-pins")
                            && v["secret"]["secretName"].is_string()),
                    "{case}"
                );
                assert!(
                    volumes
                        .iter()
                        .any(|v| v["name"].as_str() == Some("pinproxy-ca")
                            && v["emptyDir"].is_mapping()),
                    "{case}"
                );
                for app in spec["containers"].as_sequence().unwrap() {
                    if app["name"].as_str() == Some("pinproxy") {
                        continue;
                    }
                    let env = |name: &str| {
                        app["env"]
                            .as_sequence()
                            .unwrap()
                            .iter()
                            .filter(|e| e["name"].as_str() == Some(name))
                            .map(|e| e["value"].as_str().unwrap().to_string())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(env("HTTPS_PROXY"), ["http://127.0.0.1:3128"], "{case}");
                    assert_eq!(env("HTTP_PROXY"), ["http://127.0.0.1:3128"], "{case}");
                    assert_eq!(env("https_proxy"), ["http://127.0.0.1:3128"], "{case}");
                    assert_eq!(env("http_proxy"), ["http://127.0.0.1:3128"], "{case}");
                    // docs/reference.md: the variables that replace the trust
                    // store name the bundle (pod CA + Mozilla roots + extras);
                    // Node's, which adds to its roots, the pod CA alone.
                    for var in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
                        assert_eq!(
                            env(var),
                            ["/var/run/pinproxy/ca-bundle.crt"],
                            "{case}: {var}"
                        );
                    }
                    assert_eq!(
                        env("NODE_EXTRA_CA_CERTS"),
                        ["/var/run/pinproxy/ca.crt"],
                        "{case}"
                    );
                    assert_eq!(env("NODE_USE_ENV_PROXY"), ["1"], "{case}");
                    let java = env("JAVA_TOOL_OPTIONS");
                    assert_eq!(java.len(), 1, "{case}");
                    assert!(
                        java[0].ends_with(&format!(
                            "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=3128 \
                             -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=3128 \
                             -Dhttp.nonProxyHosts={}",
                            java_non_proxy(&opts)
                        )),
                        "{case}: {}",
                        java[0]
                    );
                    let no_proxy = env("NO_PROXY");
                    assert_eq!(no_proxy.len(), 1, "{case}");
                    for host in [
                        "localhost",
                        "127.0.0.1",
                        ".svc",
                        ".cluster.local",
                        "kubernetes.default.svc",
                    ] {
                        assert!(
                            no_proxy[0].split(',').any(|h| h == host),
                            "{case}: NO_PROXY lacks {host}"
                        );
                    }
                }
            }
        }
    }
}
