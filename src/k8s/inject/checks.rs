//! What injection checks before it changes anything, so that it never guesses
//! (docs/reference.md, "pinproxy inject"): whether the template carries
//! pinproxy already and how, `hostNetwork`, ports pinproxy would collide with,
//! and proxies the app already names.

use serde_yaml::{Mapping, Value};

use super::env::{env_value, foreign_java_proxy, JAVA_TOOL_OPTIONS, PROXY_VARS};
use super::template::{is_redirect, is_sidecar, Subject};
use super::{InjectError, InjectOptions};

/// A `hostNetwork` pod's loopback is the node's.
pub(super) fn host_network(tmpl: &Mapping) -> bool {
    tmpl.get("spec")
        .and_then(|s| s.get("hostNetwork"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Whether the template already has a pinproxy container, and if so
/// whether it is a native sidecar.
pub(super) fn existing_layout(tmpl: &Mapping) -> Option<bool> {
    let spec = tmpl.get("spec")?;
    let holds = |field: &str| {
        spec.get(field)
            .and_then(Value::as_sequence)
            .is_some_and(|l| l.iter().any(is_sidecar))
    };
    if holds("initContainers") {
        Some(true)
    } else if holds("containers") {
        Some(false)
    } else {
        None
    }
}

/// Every container but pinproxy shares the pod's network namespace with
/// it: none may use the proxy's or the admin port.
pub(super) fn check_ports(
    tmpl: &Mapping,
    opts: &InjectOptions,
    at: &Subject,
) -> Result<(), InjectError> {
    for (container, port) in container_ports(tmpl) {
        let clash = if port == i64::from(opts.proxy_port) {
            Some((opts.proxy_port, "proxy", "--proxy-port"))
        } else if port == i64::from(opts.admin_port) {
            Some((opts.admin_port, "admin", "--admin-port"))
        } else if opts.transparent && port == i64::from(opts.redirect.port) {
            Some((opts.redirect.port, "transparent", "--transparent-port"))
        } else {
            None
        };
        if let Some((port, role, flag)) = clash {
            return Err(InjectError::PortConflict {
                at: at.template(),
                container,
                port,
                role,
                flag,
            });
        }
    }
    Ok(())
}

/// In transparent mode the rules let the sidecar's UID through: an app
/// that runs as it would bypass pinning unseen. Refuse a template whose
/// pod or any container says it runs as that UID.
pub(super) fn check_transparent_uid(
    tmpl: &Mapping,
    opts: &InjectOptions,
    at: &Subject,
) -> Result<(), InjectError> {
    if !opts.transparent {
        return Ok(());
    }
    let uid = i64::from(opts.redirect.uid);
    let Some(spec) = tmpl.get("spec") else {
        return Ok(());
    };
    let runs_as = |v: &Value| {
        v.get("securityContext")
            .and_then(|sc| sc.get("runAsUser"))
            .and_then(Value::as_i64)
            == Some(uid)
    };
    let mut who = runs_as(spec).then(|| "the pod's securityContext".to_string());
    for field in ["initContainers", "containers"] {
        let containers = spec.get(field).and_then(Value::as_sequence);
        for c in containers.into_iter().flatten() {
            if who.is_none() && !is_sidecar(c) && !is_redirect(c) && runs_as(c) {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("<unnamed>");
                who = Some(format!("container {name:?}"));
            }
        }
    }
    match who {
        Some(who) => Err(InjectError::UidConflict {
            at: at.template(),
            who,
            uid: opts.redirect.uid,
        }),
        None => Ok(()),
    }
}

/// (container, containerPort) of every container and init container but
/// pinproxy.
fn container_ports(tmpl: &Mapping) -> Vec<(String, i64)> {
    let Some(spec) = tmpl.get("spec") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for field in ["initContainers", "containers"] {
        let containers = spec.get(field).and_then(Value::as_sequence);
        for c in containers.into_iter().flatten().filter(|c| !is_sidecar(c)) {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("<unnamed>");
            let ports = c.get("ports").and_then(Value::as_sequence);
            for port in ports.into_iter().flatten() {
                if let Some(n) = port.get("containerPort").and_then(Value::as_i64) {
                    out.push((name.to_string(), n));
                }
            }
        }
    }
    out
}

/// An app container that already names a proxy would silently be moved to
/// ours: refuse, unless told to override or the template carries our
/// sidecar already (then the variables are ours). `JAVA_TOOL_OPTIONS` from
/// `valueFrom` cannot be appended to at all.
pub(super) fn check_app_proxy_env(
    tmpl: &Mapping,
    opts: &InjectOptions,
    at: &Subject,
    injected_before: bool,
) -> Result<(), InjectError> {
    let containers = tmpl
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence);
    for c in containers.into_iter().flatten().filter(|c| !is_sidecar(c)) {
        let container = c.get("name").and_then(Value::as_str).unwrap_or("<unnamed>");
        let env = c.get("env").and_then(Value::as_sequence);
        for var in env.into_iter().flatten() {
            let Some(name) = var.get("name").and_then(Value::as_str) else {
                continue;
            };
            let value = env_value(var);
            let from_ref = value.is_none() && var.get("valueFrom").is_some();
            if name == JAVA_TOOL_OPTIONS && from_ref {
                return Err(InjectError::NotAppendable {
                    at: at.template(),
                    container: container.to_string(),
                    variable: name.to_string(),
                });
            }
            if injected_before || opts.override_proxy {
                continue;
            }
            if let Some(value) = foreign_proxy(opts, name, value.as_deref(), from_ref) {
                return Err(InjectError::ProxyConflict {
                    at: at.template(),
                    container: container.to_string(),
                    variable: name.to_string(),
                    value,
                });
            }
        }
    }
    Ok(())
}

/// The proxy an env var sends the app to, when it is not ours. An empty
/// proxy variable means "no proxy": replacing it guesses nothing.
fn foreign_proxy(
    opts: &InjectOptions,
    name: &str,
    value: Option<&str>,
    from_ref: bool,
) -> Option<String> {
    if PROXY_VARS.contains(&name) {
        match value {
            Some(v) if !v.is_empty() && v != opts.proxy_url() => Some(v.to_string()),
            None if from_ref => Some("(from valueFrom)".to_string()),
            _ => None,
        }
    } else if name == JAVA_TOOL_OPTIONS {
        value.and_then(foreign_java_proxy)
    } else {
        None
    }
}
