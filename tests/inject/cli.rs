//! `pinproxy inject` through the built binary: refusing to guess, extra
//! CAs, help, and the shipped example.

use super::*;

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

/// The values of the first container's env entries named `name`, in order.
fn env_values(rendered: &str, name: &str) -> Vec<String> {
    let doc: Value = serde_yaml::from_str(rendered).unwrap();
    let env = &doc["spec"]["template"]["spec"]["containers"][0]["env"];
    env.as_sequence()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str() == Some(name))
        .filter_map(|e| e["value"].as_str().map(str::to_string))
        .collect()
}

/// Kubernetes takes the last of two env entries with one name: with
/// `--override-proxy` (or a template injected before) a second
/// `HTTPS_PROXY` survived injection, which replaced only the first, and
/// sent the app to the other proxy while the pod looked injected (the
/// sixth review). Every entry of the name is replaced by the one injected.
#[test]
fn a_duplicated_proxy_variable_is_replaced_whole() {
    let input = app_deployment(
        "[{name: HTTPS_PROXY, value: 'http://127.0.0.1:3128'}, \
          {name: HTTPS_PROXY, value: 'http://corp-proxy:8080'}]",
        "[]",
    );
    let (code, _, stderr) = inject_cli(&[], &input);
    assert_eq!(code, 1, "the foreign one is a conflict: {stderr}");
    assert!(
        stderr.contains("HTTPS_PROXY=http://corp-proxy:8080"),
        "{stderr}"
    );
    let (code, stdout, stderr) = inject_cli(&["--override-proxy"], &input);
    assert_eq!(code, 0, "{stderr}");
    let got = env_values(&stdout, "HTTPS_PROXY");
    assert_eq!(got, ["http://127.0.0.1:3128"]);
    // JAVA_TOOL_OPTIONS: appended to the app's effective (last) value.
    let input = app_deployment(
        "[{name: JAVA_TOOL_OPTIONS, value: '-Xmx1g'}, {name: JAVA_TOOL_OPTIONS, value: '-Xmx2g'}]",
        "[]",
    );
    let (code, stdout, stderr) = inject_cli(&[], &input);
    assert_eq!(code, 0, "{stderr}");
    let got = env_values(&stdout, "JAVA_TOOL_OPTIONS");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("-Xmx2g -Dhttp.proxyHost=127.0.0.1 "),
        "{got:?}"
    );
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
