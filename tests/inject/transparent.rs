//! Transparent mode in injected templates: the rules container first, no
//! proxy variables, the UID switch taken away, UDP options.

use super::*;

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
/// process could become pinproxy's UID, which the rules let through) or
/// to send around the rules: SETUID, SETGID and NET_RAW dropped, no
/// privilege escalation, unless the securityContext already guarantees
/// it; a container that must keep them is refused unless the pod says
/// `pinproxy.io/allow-setuid: "true"`.
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
    // No securityContext (root by default when runAsUser is unset): the
    // three capabilities dropped, escalation off.
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
        assert_eq!(drop, ["SETUID", "SETGID", "NET_RAW"], "{name}");
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
        out.contains("pinproxy.io/uid-lock: app=NET_RAW+SETGID+SETUID+allowPrivilegeEscalation\n"),
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
        let allowed = with_allow_setuid(&keeps);
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

/// The rules live in the network namespace the app shares, and pinproxy's
/// process in the PID namespace it may share: an app container adding a
/// capability that changes either (an attack review deleted the rules
/// from one with `NET_ADMIN` and reached the remote unpinned) is refused
/// like one that can change UID, under the same override.
#[test]
fn transparent_mode_refuses_capabilities_that_undo_the_rules() {
    let input = std::fs::read_to_string(fixtures().join("transparent.in.yaml")).unwrap();
    let opts = options_for("transparent");
    let migrate = "          args: [\"migrate\"]\n";
    assert!(input.contains(migrate));
    for (cap, does) in [
        ("NET_ADMIN", "iptables rules"),
        ("CAP_NET_RAW", "AF_PACKET"),
        ("cap_sys_admin", "namespaces"),
        ("SYS_PTRACE", "pinproxy's process"),
        ("BPF", "BPF programs"),
        ("SYS_MODULE", "kernel modules"),
    ] {
        let adds = input.replace(
            migrate,
            &format!("{migrate}          securityContext:\n            capabilities:\n              add: [NET_BIND_SERVICE, {cap}]\n"),
        );
        let err = inject_stream(&adds, &opts).unwrap_err();
        assert!(
            matches!(err, InjectError::RuleChange { .. }),
            "{cap}: {err}"
        );
        let msg = err.to_string();
        let named = cap.to_ascii_uppercase().replace("CAP_", "");
        assert!(
            msg.contains("\"migrate\"")
                && msg.contains(&named)
                && msg.contains(does)
                && msg.contains("pinproxy.io/allow-setuid"),
            "{msg}"
        );
        // The override accepts it as written, with the warning (which
        // names what the kept NET_RAW costs).
        let allowed = with_allow_setuid(&adds);
        let done = inject_stream_with_warnings(&allowed, &opts).unwrap();
        assert!(
            done.warnings
                .iter()
                .any(|w| w.message.contains("egresses around pinproxy")
                    && w.message.contains("NET_RAW")),
            "{:?}",
            done.warnings
        );
        assert!(done.output.contains(cap), "{}", done.output);
        // Outside transparent mode the rules are not ours to guard.
        inject_stream(&adds, &options_for("deployment")).unwrap();
    }
    // Capabilities that change neither are left alone.
    let harmless = input.replace(
        migrate,
        &format!("{migrate}          securityContext:\n            capabilities:\n              add: [NET_BIND_SERVICE, CHOWN]\n"),
    );
    inject_stream(&harmless, &opts).unwrap();
}

/// Review 8: a root app container keeps the runtime's default NET_RAW, and
/// an `AF_PACKET` socket writes frames that never meet the pod's iptables
/// rules (redirect and lock alike). Transparent mode drops it from every
/// app container, records it with the rest, and takes it out again when
/// transparent mode is switched off or the override is set — also from a
/// pod injected before NET_RAW was dropped.
#[test]
fn transparent_mode_drops_net_raw_and_takes_it_out_again() {
    let input = std::fs::read_to_string(fixtures().join("transparent.in.yaml")).unwrap();
    let opts = options_for("transparent");
    let mut off = options_for("transparent");
    off.transparent = false;
    let migrate = "          args: [\"migrate\"]\n";
    let container = |out: &str, name: &str| -> Value {
        let doc: Value = serde_yaml::from_str(out).unwrap();
        let spec = &pod_specs(&doc)[0]["spec"];
        ["initContainers", "containers"]
            .iter()
            .flat_map(|f| spec[*f].as_sequence().cloned().unwrap_or_default())
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    let drops = |c: &Value| -> Vec<String> {
        c["securityContext"]["capabilities"]["drop"]
            .as_sequence()
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };

    // The migrate init container already drops NET_RAW itself: it is not
    // dropped twice, not recorded for it, and stays when switched off.
    let own = input.replace(
        migrate,
        &format!("{migrate}          securityContext:\n            capabilities:\n              drop: [NET_RAW]\n"),
    );
    assert_ne!(own, input);
    let on = inject_stream(&own, &opts).unwrap();
    assert_eq!(
        drops(&container(&on, "app")),
        ["SETUID", "SETGID", "NET_RAW"]
    );
    assert_eq!(
        drops(&container(&on, "migrate")),
        ["NET_RAW", "SETUID", "SETGID"]
    );
    assert!(
        on.contains("pinproxy.io/uid-lock: \"app=NET_RAW+SETGID+SETUID+allowPrivilegeEscalation;migrate=SETGID+SETUID+allowPrivilegeEscalation\"\n"),
        "{on}"
    );
    // Injecting again changes nothing.
    assert_eq!(inject_stream(&on, &opts).unwrap(), on);
    let back = inject_stream(&on, &off).unwrap();
    assert!(!back.contains("uid-lock"), "{back}");
    assert!(!back.contains("SETUID"), "{back}");
    assert!(
        container(&back, "app").get("securityContext").is_none(),
        "{back}"
    );
    assert_eq!(drops(&container(&back, "migrate")), ["NET_RAW"]);

    // The override takes out what injection added, NET_RAW included.
    let overridden = on.replace(
        "      annotations:\n",
        "      annotations:\n        pinproxy.io/allow-setuid: \"true\"\n",
    );
    assert_ne!(overridden, on);
    let allowed = inject_stream(&overridden, &opts).unwrap();
    assert!(!allowed.contains("uid-lock"), "{allowed}");
    assert!(
        container(&allowed, "app").get("securityContext").is_none(),
        "{allowed}"
    );

    // A pod injected before NET_RAW was dropped (its record lists only the
    // UID switch): injecting again adds and records NET_RAW; switching off
    // then takes out all of it.
    let earlier = on
        .replace(
            "app=NET_RAW+SETGID+SETUID+allowPrivilegeEscalation",
            "app=SETGID+SETUID+allowPrivilegeEscalation",
        )
        .replace(
            "            - SETGID\n            - NET_RAW\n",
            "            - SETGID\n",
        );
    assert_eq!(drops(&container(&earlier, "app")), ["SETUID", "SETGID"]);
    let upgraded = inject_stream(&earlier, &opts).unwrap();
    assert_eq!(upgraded, on);
    let back = inject_stream(&upgraded, &off).unwrap();
    assert!(
        container(&back, "app").get("securityContext").is_none(),
        "{back}"
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

/// `manifest` (the transparent fixture) with the pod annotation
/// `pinproxy.io/allow-setuid: "true"`.
fn with_allow_setuid(manifest: &str) -> String {
    let annotated = manifest.replace(
        "      labels:\n        app: ledger\n    spec:",
        "      labels:\n        app: ledger\n      annotations:\n        pinproxy.io/allow-setuid: \"true\"\n    spec:",
    );
    assert_ne!(annotated, manifest, "the fixture's labels moved");
    annotated
}
