//! An injected pod run as its manifest says, and learn mode on the
//! transparent path.

use super::*;

/// The operator's path: `pinproxy inject --transparent` on a Deployment,
/// then the pod run exactly as the manifest says — the init container's
/// args as root, the sidecar's args as the UID its securityContext names,
/// and the app as another UID with the env the manifest gives it (no proxy
/// variable at all). The pinned host is intercepted and pinned; the app
/// trusts the interception through the injected SSL_CERT_FILE alone.
#[test]
fn an_injected_pod_runs_as_its_manifest_says() {
    if netns::skip("an_injected_pod_runs_as_its_manifest_says") {
        return;
    }
    let pod = Pod::new("tp-inj");
    let pinned = Pki::new(&[PINNED]);
    support::pod::tls_upstream_in(
        &pod.world,
        format!("{}:443", WORLD_V4[0]).parse().unwrap(),
        &pinned,
        "pinned",
    );
    let dir = shared_dir();
    let (pins_dir, ca_dir) = (dir.path().join("pins"), dir.path().join("ca"));
    for d in [&pins_dir, &ca_dir] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    std::fs::write(pins_dir.join("ca.pem"), pinned.root.pem()).unwrap();
    std::fs::write(
        pins_dir.join("pins.yaml"),
        format!(
            // A pinned host is dialed as on every path: its `address`, else
            // the pod's DNS (none in this namespace).
            "version: 1\nhosts:\n  {PINNED}:\n    pins: [{}]\n    trust: ca.pem\n    address: {}:443\n",
            pinned.int.pin(),
            WORLD_V4[0]
        ),
    )
    .unwrap();

    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  \
        selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    \
        spec:\n      containers:\n        - name: app\n          image: app:1\n          \
        securityContext: {runAsUser: 1000}\n";
    let mut inject = std::process::Command::new(BIN)
        .args([
            "inject",
            "--transparent",
            "--transparent-lock",
            "--pins-dir",
        ])
        .arg(&pins_dir)
        .arg("--ca-dir")
        .arg(&ca_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    inject
        .stdin
        .take()
        .unwrap()
        .write_all(deployment.as_bytes())
        .unwrap();
    let out = inject.wait_with_output().unwrap();
    assert!(out.status.success(), "inject failed");
    let manifest: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let spec = &manifest["spec"]["template"]["spec"];
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let init = &spec["initContainers"][0];
    let sidecar = &spec["initContainers"][1];
    let app = &spec["containers"][0];
    assert_eq!(init["name"].as_str(), Some("pinproxy-redirect"));
    assert_eq!(sidecar["name"].as_str(), Some("pinproxy"));

    // The init container, as root, to completion.
    assert_eq!(init["securityContext"]["runAsUser"].as_i64(), Some(0));
    let installed = check(pod.app.command(BIN).args(strings(&init["args"])));
    let installed = String::from_utf8_lossy(&installed.stdout).to_string();
    assert!(installed.contains("PINPROXY_REDIRECT"), "{installed}");

    // The sidecar, as its UID, until ready.
    let uid = sidecar["securityContext"]["runAsUser"].as_i64().unwrap() as u32;
    let mut child = pod
        .app
        .command_as(uid, BIN)
        .args(strings(&sidecar["args"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        netns::wait_ready(&pod.app, "http://127.0.0.1:9901/readyz"),
        "the sidecar never became ready"
    );

    // The app, with the manifest's env and nothing else but PATH.
    let env: Vec<(String, String)> = app["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        env.iter().all(|(n, _)| !n.to_lowercase().contains("proxy")),
        "{env:?}"
    );
    let app_uid = app["securityContext"]["runAsUser"].as_i64().unwrap() as u32;
    let run_app = |program: &str, args: &[&str]| {
        let out = pod
            .app
            .command_as(app_uid, program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let resolve = format!("{PINNED}:443:{}", WORLD_V4[0]);
    let url = format!("https://{PINNED}/injected");
    let (code, text) = run_app(
        "curl",
        &["-sS", "--max-time", "10", "--resolve", &resolve, &url],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("upstream=pinned") && text.contains("path=/injected"),
        "{text}"
    );

    // Python's ssl with its default context: trusts what SSL_CERT_FILE names.
    let script = format!(
        "import socket, ssl\nctx = ssl.create_default_context()\n\
         s = ctx.wrap_socket(socket.create_connection(('{}', 443), timeout=10), server_hostname='{PINNED}')\n\
         s.sendall(b'GET /py HTTP/1.1\\r\\nHost: {PINNED}\\r\\nConnection: close\\r\\n\\r\\n')\n\
         print(s.recv(4096).decode(errors='replace'))\n",
        WORLD_V4[0]
    );
    let (code, text) = run_app(netns::python(), &["-c", &script]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("200 OK"), "{text}");

    // The rules the init container installed: the sidecar's UID exempt,
    // and (--transparent-lock) the lock chain in the filter table.
    let nat = check(pod.app.command("iptables-save").args(["-t", "nat"]));
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(
        nat.contains(&format!("--uid-owner {uid} -j RETURN")),
        "the sidecar's UID is exempt: {nat}"
    );
    let filter = check(pod.app.command("iptables-save").args(["-t", "filter"]));
    assert!(String::from_utf8_lossy(&filter.stdout).contains("PINPROXY_LOCK"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn learn_mode_learns_a_spliced_host_at_the_address_the_app_dialed() {
    if netns::skip("learn_mode_learns_a_spliced_host_at_the_address_the_app_dialed") {
        return;
    }
    // No DNS for OPEN in the pod: the probe must dial where the app did.
    let s = setup("tp-learn", |_| {
        "version: 1\ndefaults:\n  unlisted: learn\n  trust: open-root.pem\nhosts: {}\n".into()
    });
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());
    let (code, out) = curl_open(&s);
    assert_eq!(code, 0, "spliced as under allow: {out}");
    let mut learned = serde_json::Value::Null;
    for _ in 0..100 {
        let out = check(
            app.command("curl")
                .args(["-s", "http://127.0.0.1:9901/learned"]),
        );
        learned = serde_json::from_slice(&out.stdout).unwrap();
        if learned["hosts"].as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let host = &learned["hosts"][0];
    assert_eq!(host["host"], OPEN, "{learned}");
    assert_eq!(host["port"], 443);
    assert_eq!(
        host["paths"][0]["pins"],
        serde_json::json!([
            s.open.leaf.pin().to_string(),
            s.open.int.pin().to_string(),
            s.open.root.pin().to_string()
        ])
    );
    let _ = &s.pinned;
    drop(proxy);
}
