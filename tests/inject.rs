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

/// Transparent mode (docs/reference.md): the rules' init container first, the
/// only one with NET_ADMIN; pinproxy next, as the UID the rules exempt,
/// with `--transparent` on the port the rules redirect to; the app with
/// the trust variables and no proxy variables.
#[test]
fn transparent_templates_get_the_rules_first_and_no_proxy_env() {
    let mut seen = 0;
    for (case, input) in cases()
        .into_iter()
        .filter(|(c, _)| c.starts_with("transparent"))
    {
        let out = inject_stream(&input, &options_for(&case)).unwrap();
        let doc: Value = serde_yaml::from_str(&out).unwrap();
        let tmpl = pod_specs(&doc)[0];
        let init = tmpl["spec"]["initContainers"].as_sequence().unwrap();
        let names: Vec<&str> = init.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names[..2], ["pinproxy-redirect", "pinproxy"], "{case}");
        assert!(
            names.len() == 3,
            "{case}: the app's init container stays, after: {names:?}"
        );

        let redirect = &init[0];
        assert_eq!(redirect["image"].as_str(), Some(INIT_IMAGE), "{case}");
        let args: Vec<&str> = redirect["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            args[..5],
            ["redirect", "--proxy-uid", "1337", "--port", "15001"],
            "{case}"
        );
        assert!(
            redirect.get("restartPolicy").is_none(),
            "{case}: runs to completion"
        );
        let sc = &redirect["securityContext"];
        assert_eq!(sc["runAsUser"].as_i64(), Some(0), "{case}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{case}"
        );
        assert_eq!(
            sc["capabilities"]["add"],
            serde_yaml::from_str::<Value>("[NET_ADMIN, NET_RAW]").unwrap(),
            "{case}"
        );
        assert_eq!(
            sc["capabilities"]["drop"][0].as_str(),
            Some("ALL"),
            "{case}"
        );

        let proxy = &init[1];
        assert_eq!(proxy["restartPolicy"].as_str(), Some("Always"), "{case}");
        assert_eq!(
            proxy["securityContext"]["runAsUser"].as_i64(),
            Some(1337),
            "{case}"
        );
        assert!(
            proxy["securityContext"]["capabilities"]
                .get("add")
                .is_none(),
            "{case}"
        );
        let pargs: Vec<&str> = proxy["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let at = pargs
            .iter()
            .position(|a| *a == "--transparent")
            .expect("--transparent");
        assert_eq!(pargs[at + 1], "127.0.0.1:15001", "{case}");

        for app in tmpl["spec"]["containers"].as_sequence().unwrap() {
            let env: Vec<(&str, &str)> = app["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap(),
                        e["value"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            for var in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "http_proxy",
                "https_proxy",
                "NO_PROXY",
                "no_proxy",
                "NODE_USE_ENV_PROXY",
            ] {
                assert!(
                    !env.iter().any(|(n, _)| *n == var),
                    "{case}: {var} set: {env:?}"
                );
            }
            assert!(
                env.contains(&("SSL_CERT_FILE", "/var/run/pinproxy/ca-bundle.crt")),
                "{case}"
            );
            let java: Vec<&str> = env
                .iter()
                .filter(|(n, _)| *n == "JAVA_TOOL_OPTIONS")
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(java.len(), 1, "{case}");
            assert!(!java[0].contains("proxyHost"), "{case}: {}", java[0]);
        }
        seen += 1;
    }
    assert_eq!(seen, 2, "both transparent fixtures ran");
}

/// With the variables asked for, transparent mode sets them as well.
#[test]
fn transparent_mode_can_keep_the_proxy_env() {
    let input = std::fs::read_to_string(fixtures().join("transparent.in.yaml")).unwrap();
    let mut opts = options_for("transparent");
    opts.redirect.proxy_env = true;
    let out = inject_stream(&input, &opts).unwrap();
    assert!(out.contains("name: HTTPS_PROXY"), "{out}");
    assert!(out.contains("-Dhttps.proxyHost=127.0.0.1"), "{out}");
    assert!(out.contains("--transparent"), "{out}");
}

/// An app that runs as the UID the rules exempt would bypass pinproxy:
/// refused, pointing at the flag. So is a clash with the listener port.
#[test]
fn transparent_mode_refuses_an_app_running_as_the_proxy_uid() {
    let input = std::fs::read_to_string(fixtures().join("transparent.in.yaml")).unwrap();
    let opts = options_for("transparent");
    let as_proxy = input.replace("runAsUser: 1000", "runAsUser: 1337");
    let err = inject_stream(&as_proxy, &opts).unwrap_err();
    assert!(
        matches!(err, InjectError::UidConflict { uid: 1337, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("pod's securityContext") && msg.contains("--transparent-uid"),
        "{msg}"
    );

    let port = input.replace(
        "          env:\n",
        "          ports:\n            - containerPort: 15001\n          env:\n",
    );
    assert_ne!(port, input);
    let err = inject_stream(&port, &opts).unwrap_err();
    assert!(err.to_string().contains("--transparent-port"), "{err}");

    let bad = input.replace(
        "      labels:\n        app: ledger\n    spec:",
        "      labels:\n        app: ledger\n      annotations:\n        pinproxy.io/transparent: \"yes\"\n    spec:",
    );
    assert_ne!(bad, input);
    let err = inject_stream(&bad, &options_for("deployment")).unwrap_err();
    assert!(err.to_string().contains("pinproxy.io/transparent"), "{err}");
}

/// Switching back: `pinproxy.io/transparent: "false"` on a transparent
/// workload takes the init container out and puts the proxy env back.
#[test]
fn transparent_mode_switches_off_cleanly() {
    let input = std::fs::read_to_string(fixtures().join("transparent.in.yaml")).unwrap();
    let on = inject_stream(&input, &options_for("transparent")).unwrap();
    let mut off_opts = options_for("transparent");
    off_opts.transparent = false;
    let off = inject_stream(&on, &off_opts).unwrap();
    assert!(!off.contains("pinproxy-redirect"), "{off}");
    assert!(!off.contains("--transparent"), "{off}");
    assert!(off.contains("name: HTTPS_PROXY"), "{off}");
    // The same pod as injecting fresh; only the app env's order differs
    // (upserts keep existing entries where they are).
    let fresh = inject_stream(&input, &off_opts).unwrap();
    assert_eq!(
        env_sorted(&off),
        env_sorted(&fresh),
        "same as injecting fresh"
    );
}

/// Transparent mode: no app container keeps a way to change UID (a root
/// process could become pinproxy's UID, which the rules let through):
/// SETUID and SETGID dropped, no privilege escalation, unless the
/// securityContext already guarantees it; a container that must keep them
/// is refused unless the pod says `pinproxy.io/allow-setuid: "true"`.
#[test]
fn transparent_mode_takes_the_uid_switch_away() {
    let input = std::fs::read_to_string(fixtures().join("transparent.in.yaml")).unwrap();
    let opts = options_for("transparent");
    let container = |out: &str, name: &str| -> Value {
        let doc: Value = serde_yaml::from_str(out).unwrap();
        let spec = &pod_specs(&doc)[0]["spec"];
        ["initContainers", "containers"]
            .iter()
            .flat_map(|f| spec[*f].as_sequence().cloned().unwrap_or_default())
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    // No securityContext (root by default when runAsUser is unset): both
    // capabilities dropped, escalation off.
    let out = inject_stream(&input, &opts).unwrap();
    for name in ["app", "migrate"] {
        let sc = &container(&out, name)["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
        let drop: Vec<&str> = sc["capabilities"]["drop"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(drop, ["SETUID", "SETGID"], "{name}");
    }
    let sidecar = &container(&out, "pinproxy")["securityContext"];
    assert_eq!(sidecar["runAsUser"].as_u64(), Some(1337), "{out}");

    // Already guaranteed (drop ALL, lower-case CAP_ names count): left as
    // written, nothing recorded for it.
    let migrate = "          args: [\"migrate\"]\n";
    let guaranteed = input.replace(
        migrate,
        &format!("{migrate}          securityContext:\n            allowPrivilegeEscalation: false\n            capabilities:\n              drop: [all]\n"),
    );
    assert_ne!(guaranteed, input);
    let out = inject_stream(&guaranteed, &opts).unwrap();
    let sc = &container(&out, "migrate")["securityContext"];
    assert_eq!(
        sc["capabilities"]["drop"].as_sequence().unwrap().len(),
        1,
        "{out}"
    );
    assert!(
        out.contains("pinproxy.io/uid-lock: app=SETGID+SETUID+allowPrivilegeEscalation\n"),
        "{out}"
    );

    // Must keep them: refused, naming the container and the override.
    for (sc, why) in [
        ("privileged: true", "privileged"),
        (
            "allowPrivilegeEscalation: true",
            "allowPrivilegeEscalation: true",
        ),
        ("capabilities:\n              add: [CAP_SETUID]", "SETUID"),
        ("capabilities:\n              add: [ALL]", "ALL"),
    ] {
        let keeps = input.replace(
            migrate,
            &format!("{migrate}          securityContext:\n            {sc}\n"),
        );
        let err = inject_stream(&keeps, &opts).unwrap_err();
        assert!(
            matches!(err, InjectError::UidChange { uid: 1337, .. }),
            "{sc}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"migrate\"")
                && msg.contains(why)
                && msg.contains("pinproxy.io/allow-setuid"),
            "{msg}"
        );
        // The override: accepted as written, with a warning saying the cost.
        let allowed = keeps.replace(
            "      labels:\n        app: ledger\n    spec:",
            "      labels:\n        app: ledger\n      annotations:\n        pinproxy.io/allow-setuid: \"true\"\n    spec:",
        );
        assert_ne!(allowed, keeps);
        let done = inject_stream_with_warnings(&allowed, &opts).unwrap();
        assert!(
            !done.output.contains("pinproxy.io/uid-lock"),
            "{}",
            done.output
        );
        assert!(container(&done.output, "app")
            .get("securityContext")
            .is_none());
        assert!(
            done.warnings
                .iter()
                .any(|w| w.message.contains("egresses around pinproxy")),
            "{:?}",
            done.warnings
        );
    }
    // Outside transparent mode nothing is touched or refused.
    let keeps = input.replace(
        migrate,
        &format!("{migrate}          securityContext:\n            privileged: true\n"),
    );
    let out = inject_stream(&keeps, &options_for("deployment")).unwrap();
    assert!(!out.contains("uid-lock"), "{out}");
    let sc = &container(&out, "migrate")["securityContext"];
    assert_eq!(sc.as_mapping().map(|m| m.len()), Some(1), "{out}");
    assert!(
        container(&out, "app").get("securityContext").is_none(),
        "{out}"
    );
}

/// The lock's UDP options reach the init container's `redirect` args;
/// a bad `CIDR:PORT`, or either option without the lock, is refused.
#[test]
fn transparent_udp_options_reach_the_rules() {
    let input = std::fs::read_to_string(fixtures().join("transparent.in.yaml")).unwrap();
    let mut opts = options_for("transparent");
    opts.redirect.allow_udp = vec!["10.0.0.0/8:123".into(), "[fd00::/8]:123".into()];
    opts.redirect.log_drops = true;
    let out = inject_stream(&input, &opts).unwrap();
    let doc: Value = serde_yaml::from_str(&out).unwrap();
    let spec = &pod_specs(&doc)[0]["spec"];
    let init = spec["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("pinproxy-redirect"))
        .expect("the redirect init container");
    let args: Vec<&str> = init["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let joined = args.join(" ");
    assert!(
        joined.contains("--lock")
            && joined.contains("--allow-udp 10.0.0.0/8:123 --allow-udp [fd00::/8]:123")
            && joined.contains("--log-drops"),
        "{args:?}"
    );
    let mut bad = options_for("transparent");
    bad.redirect.allow_udp = vec!["10.0.0.0/8".into()];
    assert!(inject_stream(&input, &bad).is_err());
    let mut unlocked = options_for("transparent");
    unlocked.redirect.lock = false;
    unlocked.redirect.log_drops = true;
    let err = inject_stream(&input, &unlocked).unwrap_err();
    assert!(err.to_string().contains("--transparent-lock"), "{err}");
}

/// The stream as YAML with every container's env sorted by name.
fn env_sorted(stream: &str) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Mapping(m) => {
                for (k, child) in m.iter_mut() {
                    if k.as_str() == Some("env") {
                        if let Value::Sequence(list) = child {
                            list.sort_by_key(|e| e["name"].as_str().unwrap_or("").to_string());
                        }
                    }
                    walk(child);
                }
            }
            Value::Sequence(list) => list.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: Value = serde_yaml::from_str(stream).unwrap();
    walk(&mut v);
    v
}

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

// --- refusing to guess (docs/reference.md), through the built binary
// -----------------

/// `pinproxy inject ARGS` with `stdin`, in an environment without
/// `PINPROXY_INJECT_*` settings: (exit code, stdout, stderr).
fn inject_cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pinproxy"));
    cmd.arg("inject").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PINPROXY_INJECT_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pinproxy inject");
    // A command that refuses its options exits before it reads stdin.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Deployment whose one container `app` has `env` and `ports` as given
/// (YAML flow sequences).
fn app_deployment(env: &str, ports: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: shop}}\n\
         spec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
         metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      \
         - name: app\n        image: web:1\n        env: {env}\n        ports: {ports}\n"
    )
}

#[test]
fn an_app_that_already_names_a_proxy_is_refused_unless_overridden() {
    for (var, value, shown) in [
        (
            "HTTP_PROXY",
            "'http://corp-proxy:8080'",
            "http://corp-proxy:8080",
        ),
        (
            "HTTPS_PROXY",
            "'http://corp-proxy:8080'",
            "http://corp-proxy:8080",
        ),
        (
            "http_proxy",
            "'http://corp-proxy:8080'",
            "http://corp-proxy:8080",
        ),
        (
            "https_proxy",
            "'http://10.0.0.1:3128'",
            "http://10.0.0.1:3128",
        ),
        (
            "JAVA_TOOL_OPTIONS",
            "'-Xmx1g -Dhttps.proxyHost=corp-proxy -Dhttps.proxyPort=8080'",
            "-Dhttps.proxyHost=corp-proxy",
        ),
    ] {
        let input = app_deployment(&format!("[{{name: {var}, value: {value}}}]"), "[]");
        let (code, stdout, stderr) = inject_cli(&[], &input);
        assert_eq!(code, 1, "{var}: {stderr}");
        assert!(stdout.is_empty(), "{var}: nothing is written on error");
        assert!(
            stderr.contains("container \"app\"") && stderr.contains(&format!("{var}={shown}")),
            "{var}: the error names the container and the variable: {stderr}"
        );
        assert!(stderr.contains("--override-proxy"), "{stderr}");

        let (code, stdout, stderr) = inject_cli(&["--override-proxy"], &input);
        assert_eq!(code, 0, "{var}: {stderr}");
        let doc: Value = serde_yaml::from_str(&stdout).unwrap();
        let env = &doc["spec"]["template"]["spec"]["containers"][0]["env"];
        let got: Vec<&Value> = env
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|e| e["name"].as_str() == Some(var))
            .collect();
        assert_eq!(got.len(), 1, "{var}");
        if var == "JAVA_TOOL_OPTIONS" {
            // Appended after the app's own: the JVM keeps the last value.
            let v = got[0]["value"].as_str().unwrap();
            assert!(
                v.starts_with("-Xmx1g -Dhttps.proxyHost=corp-proxy -Dhttps.proxyPort=8080 -Dhttp.proxyHost=127.0.0.1 "),
                "{v}"
            );
            assert!(
                v.contains(" -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=3128 "),
                "{v}"
            );
        } else {
            assert_eq!(got[0]["value"].as_str(), Some("http://127.0.0.1:3128"));
        }
    }
}

#[test]
fn proxy_values_that_are_ours_or_empty_are_not_a_conflict() {
    let env =
        "[{name: HTTPS_PROXY, value: 'http://127.0.0.1:3128'}, {name: HTTP_PROXY, value: ''}, \
               {name: JAVA_TOOL_OPTIONS, value: '-Xmx1g -Dhttp.proxyHost=127.0.0.1'}]";
    let input = app_deployment(env, "[]");
    let (code, _, stderr) = inject_cli(&[], &input);
    assert_eq!(code, 0, "{stderr}");
    // A proxy set from a ConfigMap cannot be compared: refused.
    let input = app_deployment(
        "[{name: HTTPS_PROXY, valueFrom: {configMapKeyRef: {name: proxy, key: url}}}]",
        "[]",
    );
    let (code, _, stderr) = inject_cli(&[], &input);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("HTTPS_PROXY=(from valueFrom)"), "{stderr}");
    // JAVA_TOOL_OPTIONS from a ConfigMap cannot be appended to, override or not.
    let input = app_deployment(
        "[{name: JAVA_TOOL_OPTIONS, valueFrom: {configMapKeyRef: {name: jvm, key: opts}}}]",
        "[]",
    );
    for args in [&[][..], &["--override-proxy"][..]] {
        let (code, _, stderr) = inject_cli(args, &input);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("container \"app\" sets JAVA_TOOL_OPTIONS from valueFrom"),
            "{stderr}"
        );
    }
}

#[test]
fn re_injecting_with_a_new_proxy_port_is_not_a_conflict() {
    // The variables of an injected template are pinproxy's own.
    let input = std::fs::read_to_string(fixtures().join("deployment.in.yaml")).unwrap();
    let (code, once, stderr) = inject_cli(&["--image", IMAGE], &input);
    assert_eq!(code, 0, "{stderr}");
    let (code, moved, stderr) = inject_cli(&["--image", IMAGE, "--proxy-port", "3129"], &once);
    assert_eq!(code, 0, "{stderr}");
    assert!(moved.contains("value: http://127.0.0.1:3129"), "{moved}");
    assert!(!moved.contains("127.0.0.1:3128"), "{moved}");
    // Our JVM block is replaced, not appended a second time.
    assert_eq!(moved.matches("-Dhttp.proxyHost=").count(), 1, "{moved}");
    assert!(
        moved.contains("-Xmx512m -XX:+UseG1GC -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=3129 ")
    );
}

#[test]
fn an_app_port_equal_to_the_proxy_or_admin_port_is_refused() {
    for (port, role, flag) in [
        (3128, "proxy", "--proxy-port"),
        (9901, "admin", "--admin-port"),
    ] {
        let input = app_deployment("[]", &format!("[{{containerPort: {port}}}]"));
        let (code, stdout, stderr) = inject_cli(&[], &input);
        assert_eq!(code, 1, "{port}: {stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.contains(&format!(
                "container \"app\" uses port {port}, which is pinproxy's {role} port"
            )) && stderr.contains(flag),
            "{stderr}"
        );
        // Moving pinproxy out of the way works.
        let (code, _, stderr) =
            inject_cli(&["--proxy-port", "3129", "--admin-port", "9902"], &input);
        assert_eq!(code, 0, "{stderr}");
    }
    // Init containers share the network namespace too.
    let input = app_deployment("[]", "[]").replace(
        "      containers:\n",
        "      initContainers:\n      - {name: mesh, image: m:1, restartPolicy: Always, ports: [{containerPort: 9901}]}\n      containers:\n",
    );
    let (code, _, stderr) = inject_cli(&[], &input);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("container \"mesh\" uses port 9901"),
        "{stderr}"
    );
}

#[test]
fn a_host_network_pod_is_skipped_with_a_warning() {
    let input = format!(
        "# a node agent\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n",
        app_deployment("[]", "[]").replace(
            "      containers:\n",
            "      hostNetwork: true\n      containers:\n"
        )
    );
    let (code, stdout, stderr) = inject_cli(&[], &input);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, input, "left byte for byte");
    assert!(
        stderr.contains("warning: document 0 (Deployment web): hostNetwork pod not injected"),
        "{stderr}"
    );
}

/// The Deployment `kubectl kustomize deploy/overlays/legacy-sidecar` makes:
/// the base with the overlay's JSON patch applied.
fn legacy_overlay_deployment() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/base/deployment.yaml")).unwrap(),
    )
    .unwrap();
    let patch: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            root.join("deploy/overlays/legacy-sidecar/regular-container.patch.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut doc = serde_json::to_value(base).unwrap();
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(patch).unwrap()).unwrap();
    json_patch::patch(&mut doc, &patch).expect("the overlay's patch applies to the base");
    serde_yaml::to_string(&doc).unwrap()
}

#[test]
fn a_legacy_sidecar_in_a_job_is_a_warning_on_stderr() {
    let input = std::fs::read_to_string(fixtures().join("job.in.yaml")).unwrap();
    let (code, _, stderr) = inject_cli(&["--legacy-sidecar"], &input);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: document 0 (Job ")
            && stderr.contains("never exits, so the Job never completes"),
        "{stderr}"
    );
    let (_, _, stderr) = inject_cli(&[], &input);
    assert!(
        stderr.is_empty(),
        "a native sidecar warns about nothing: {stderr}"
    );
}

#[test]
fn the_legacy_overlay_stays_a_regular_container() {
    let input = legacy_overlay_deployment();
    let layout = |text: &str| {
        let doc: Value = serde_yaml::from_str(text).unwrap();
        let spec = &doc["spec"]["template"]["spec"];
        let names = |list: &str| -> Vec<String> {
            spec[list]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        (names("initContainers"), names("containers"))
    };
    assert_eq!(
        layout(&input),
        (vec![], vec!["pinproxy".into(), "app".into()])
    );
    // Without a layout flag an existing pinproxy container keeps its layout.
    let (code, out, stderr) = inject_cli(&["--image", "ghcr.io/pinproxy/pinproxy:0.2.0"], &input);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        layout(&out),
        (vec![], vec!["pinproxy".into(), "app".into()])
    );
    let doc: Value = serde_yaml::from_str(&out).unwrap();
    let sidecar = &doc["spec"]["template"]["spec"]["containers"][0];
    assert!(sidecar.get("restartPolicy").is_none(), "{out}");
    assert_eq!(
        sidecar["image"].as_str(),
        Some("ghcr.io/pinproxy/pinproxy:0.2.0")
    );
    // Asked for explicitly, it moves.
    let (code, out, stderr) = inject_cli(&["--native-sidecar"], &input);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(layout(&out), (vec!["pinproxy".into()], vec!["app".into()]));
    // And a native one stays native unless --legacy-sidecar.
    let (_, back, _) = inject_cli(&[], &out);
    assert_eq!(layout(&back), (vec!["pinproxy".into()], vec!["app".into()]));
    let (_, legacy, _) = inject_cli(&["--legacy-sidecar"], &out);
    assert_eq!(
        layout(&legacy),
        (vec![], vec!["pinproxy".into(), "app".into()])
    );
    let (code, _, stderr) = inject_cli(&["--legacy-sidecar", "--native-sidecar"], &input);
    assert_eq!(code, 2, "{stderr}");
}

// --- extra CAs --------------------------------------------------------------

#[test]
fn extra_cas_are_updated_and_removed_in_place() {
    let input = std::fs::read_to_string(fixtures().join("trust-extra.in.yaml")).unwrap();
    let with = options_for("trust-extra");
    let without = options_for("statefulset");
    let injected = inject_stream(&input, &with).unwrap();
    let value = |text: String| serde_yaml::from_str::<Value>(&text).unwrap();
    assert_eq!(
        value(inject_stream(&injected, &without).unwrap()),
        value(inject_stream(&input, &without).unwrap()),
        "dropping the extra CAs takes the volume, mount and arguments out"
    );
    // One source named twice is mounted once.
    let twice = InjectOptions {
        ca_bundle_extra: [with.ca_bundle_extra.clone(), with.ca_bundle_extra.clone()].concat(),
        ..with.clone()
    };
    assert_eq!(inject_stream(&input, &twice).unwrap(), injected);
}

#[test]
fn extra_ca_sources_are_checked_on_the_command_line() {
    let input = app_deployment("[]", "[]");
    for bad in [
        "kube-root-ca.crt",
        "pod/x",
        "configmap/Not_A_Name",
        "secret/x:a/b",
    ] {
        let (code, _, stderr) = inject_cli(&["--ca-bundle-extra-from", bad], &input);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("configmap/NAME[:KEY]"), "{stderr}");
    }
    let (code, out, stderr) = inject_cli(
        &[
            "--ca-bundle-extra-from",
            "configmap/kube-root-ca.crt,secret/corp-ca:root.pem",
        ],
        &input,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.contains("- /etc/pinproxy-ca-extra/secret/corp-ca/root.pem\n"),
        "{out}"
    );
}

// --- help -------------------------------------------------------------------

#[test]
fn every_inject_and_webhook_flag_has_help() {
    use clap::CommandFactory;
    let cli = pinproxy::cli::Cli::command();
    for sub in ["inject", "webhook"] {
        let cmd = cli.find_subcommand(sub).unwrap();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                !help.trim().is_empty(),
                "pinproxy {sub} --{} has no help text",
                arg.get_long().unwrap_or(id)
            );
        }
    }
}

#[test]
fn the_shipped_example_deployment_is_what_inject_makes() {
    // deploy/base is written by hand for readers; it must stay exactly what
    // injection produces, or the example teaches a stale environment.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/base/deployment.yaml")).unwrap();
    let opts = InjectOptions {
        image: "ghcr.io/pinproxy/pinproxy:0.1.0".into(),
        keep_layout: true,
        ..InjectOptions::default()
    };
    let shipped: Value = serde_yaml::from_str(&text).unwrap();
    let injected: Value = serde_yaml::from_str(&inject_stream(&text, &opts).unwrap()).unwrap();
    assert_eq!(injected, shipped);
}
