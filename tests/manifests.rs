//! The sidecar command lines in shipped manifests and in `inject` output
//! must be ones this binary accepts (a renamed flag would crash-loop pods).

use std::path::Path;

use clap::Parser;
use pinproxy::cli::Cli;

/// Every `args` list of a container named `pinproxy` (the sidecar) or
/// `pinproxy-redirect` (transparent mode's init container) in a YAML stream.
fn pinproxy_args(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(value) = serde_yaml::Value::deserialize(doc) else {
            continue;
        };
        collect(&value, &mut out);
    }
    out
}

use serde::Deserialize;

fn collect(v: &serde_yaml::Value, out: &mut Vec<Vec<String>>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            let name = m.get("name").and_then(|n| n.as_str());
            let is_sidecar =
                matches!(name, Some("pinproxy" | "pinproxy-redirect")) && m.contains_key("image");
            if is_sidecar {
                let args = m
                    .get("args")
                    .and_then(|a| a.as_sequence())
                    .map(|s| {
                        s.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(args);
            }
            for (_, child) in m {
                collect(child, out);
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|c| collect(c, out)),
        _ => {}
    }
}

#[test]
fn shipped_and_injected_sidecar_args_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("deploy/base/deployment.yaml")];
    for entry in std::fs::read_dir(root.join("tests/fixtures/inject")).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().ends_with(".out.yaml") {
            files.push(p);
        }
    }
    let overlay = root.join("deploy/overlays/legacy-sidecar");
    for entry in std::fs::read_dir(&overlay).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut checked = 0;
    let mut redirects = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for args in pinproxy_args(&text) {
            assert!(
                !args.is_empty(),
                "{}: pinproxy container without args",
                file.display()
            );
            let argv = std::iter::once("pinproxy".to_string()).chain(args.iter().cloned());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{}: {args:?} is rejected: {e}", file.display());
            }
            checked += 1;
            redirects += usize::from(args[0] == "redirect");
        }
    }
    assert!(checked >= 5, "only {checked} sidecars found");
    assert!(
        redirects >= 2,
        "only {redirects} redirect init containers found"
    );
}

#[test]
fn dockerfile_cmd_parses() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let cmd = text
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("a CMD line");
    let args: Vec<String> = serde_json::from_str(cmd.trim_start_matches("CMD ").trim()).unwrap();
    let argv = std::iter::once("pinproxy".to_string()).chain(args);
    Cli::try_parse_from(argv).unwrap();
}

#[test]
fn chart_webhook_flags_exist() {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let webhook = cmd.find_subcommand("webhook").expect("a webhook command");
    let known: Vec<String> = webhook
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/pinproxy/templates/webhook-deployment.yaml"
    ))
    .unwrap();
    let mut n = 0;
    for line in text.lines() {
        if let Some(flag) = line.trim().strip_prefix("- --") {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            assert!(
                known.contains(&name),
                "chart passes --{name}, which `pinproxy webhook` does not know ({known:?})"
            );
            n += 1;
        }
    }
    assert!(n >= 5);
}

/// The shipped alert rules: promtool accepts them and their unit tests
/// pass; the chart's and the kustomize base's copies carry the same
/// groups; every alert has a promtool test and a row in the docs' table.
#[test]
fn alert_rules_pass_promtool_and_every_copy_test_and_doc_has_each_alert() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("deploy/prometheus");
    for args in [
        &["check", "rules", "pinproxy-rules.yaml"][..],
        &["test", "rules", "pinproxy-rules.test.yaml"][..],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool is installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let yaml = |text: &str| serde_yaml::from_str::<serde_yaml::Value>(text).unwrap();
    let canonical = yaml(&read("deploy/prometheus/pinproxy-rules.yaml"));
    let groups = &canonical["groups"];
    assert_eq!(
        &yaml(&read("charts/pinproxy/files/pinproxy-rules.yaml"))["groups"],
        groups,
        "the chart's copy differs: python3 scripts/k8s-validate.py --write-rules"
    );
    assert_eq!(
        &yaml(&read("deploy/base/prometheusrule.yaml"))["spec"]["groups"],
        groups,
        "the PrometheusRule differs: python3 scripts/k8s-validate.py --write-rules"
    );
    let alerts: Vec<&str> = groups
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(alerts.contains(&"PinproxyCtLogListStale"), "{alerts:?}");
    let tests = read("deploy/prometheus/pinproxy-rules.test.yaml");
    let docs = read("docs/kubernetes.md");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool test"
        );
        assert!(
            docs.contains(&format!("| `{alert}` |")),
            "{alert} is not in docs/kubernetes.md's table"
        );
    }
}
