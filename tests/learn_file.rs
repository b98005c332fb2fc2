//! `--learn-file` (issue 20, item 6): checked at start — its directory is
//! made, or pinproxy refuses to start naming the flag — instead of failing
//! at the first save; and `inject --learn-file` gives it an emptyDir of
//! its own in the sidecar.

mod support;

use clap::Parser;
use pinproxy::cli::Cli;
use serde_yaml::Value;
use support::*;

const DEPLOYMENT: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
spec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
spec:\n      containers:\n      - name: app\n        image: web:1\n";

fn inject(args: &[&str], stdin: &str) -> (i32, String, String) {
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
        .unwrap();
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

fn spec(stream: &str) -> Value {
    let doc: Value = serde_yaml::from_str(stream).unwrap();
    doc["spec"]["template"]["spec"].clone()
}

fn mount_paths(container: &Value) -> Vec<(String, String)> {
    container["volumeMounts"]
        .as_sequence()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap().to_string(),
                        m["mountPath"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn inject_gives_the_learn_file_an_empty_dir_of_its_own() {
    let file = "/var/lib/pinproxy/learned.json";
    let (code, out, err) = inject(&["--learn-file", file], DEPLOYMENT);
    assert_eq!(code, 0, "{err}");
    let spec = spec(&out);
    let sidecar = &spec["initContainers"][0];
    let args: Vec<&str> = sidecar["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--learn-file", file]),
        "{args:?}"
    );
    // The sidecar's command line is one `run` accepts.
    let argv = std::iter::once("pinproxy").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
    assert!(mount_paths(sidecar).contains(&(
        "pinproxy-learn".to_string(),
        "/var/lib/pinproxy".to_string()
    )));
    let volumes = serde_yaml::to_string(&spec["volumes"]).unwrap();
    assert!(volumes.contains("name: pinproxy-learn"), "{volumes}");
    let learn = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pinproxy-learn")
        .unwrap();
    assert!(learn.get("emptyDir").is_some(), "{learn:?}");
    // The app never sees it.
    assert!(!mount_paths(&spec["containers"][0])
        .iter()
        .any(|(n, _)| n == "pinproxy-learn"));

    // Injected again without the flag: the volume, mount and flag go.
    let (code, again, err) = inject(&[], &out);
    assert_eq!(code, 0, "{err}");
    assert!(!again.contains("pinproxy-learn"), "{again}");
    assert!(!again.contains("--learn-file"), "{again}");
}

#[test]
fn inject_refuses_a_learn_file_that_has_no_directory_of_its_own() {
    for bad in [
        "learned.json",
        "/var/run/pinproxy/learned.json",
        "/etc/pinproxy/learned.json",
    ] {
        let (code, _, err) = inject(&["--learn-file", bad], DEPLOYMENT);
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(err.contains("--learn-file"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn run_makes_the_learn_file_directory_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let learn = dir.path().join("var/run/pinproxy/learned.json");
    let _p = TestProxy::builder()
        .dir(dir)
        .pinset("version: 1\ndefaults: {unlisted: learn}\nhosts: {}\n")
        .args(&["--learn-file", learn.to_str().unwrap()])
        .stderr_uncaptured()
        .spawn()
        .await;
    assert!(learn.parent().unwrap().is_dir(), "not made at start");
}

#[test]
fn run_refuses_a_learn_file_it_cannot_write_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let pins = write(dir.path(), "pins.yaml", "version: 1\nhosts: {}\n");
    // Under a regular file: no directory can be made there, even as root.
    let blocker = write(dir.path(), "not-a-dir", "");
    let learn = blocker.join("learned.json");
    let (code, _, err) = run_pinproxy(&[
        "run",
        "--pins",
        pins.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--learn-file",
        learn.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--learn-file") && err.contains("cannot create its directory"),
        "{err}"
    );
}
