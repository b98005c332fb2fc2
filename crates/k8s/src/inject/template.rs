//! Injecting one document: find its Pod template, check it (refusing to
//! guess, docs/reference.md), then add the sidecar, the volumes, the app
//! containers' environment and mounts, and the labels and annotations, each
//! step an upsert keyed by name so that running it again changes nothing.

use serde_yaml::{Mapping, Value};

use super::checks::{
    check_app_proxy_env, check_ports, check_transparent_uid, existing_layout, host_network,
};
use super::env::{env_value, merge_java_tool_options, JAVA_TOOL_OPTIONS};
use super::identity::{check_name, IDENTITY_ANNOTATION, VOLUME_PREFIX};
use super::learn::LEARN_VOLUME;
use super::signing::{KEY_VOLUME, STATE_VOLUME};
use super::subject::Subject;
use super::trust::CA_EXTRA_VOLUME;
use super::uid_lock;
use super::yaml::{map, s};
use super::{
    has_inject_marker, is_dns_subdomain, is_redirect, is_sidecar, Added, InjectError,
    InjectOptions, Outcome, Warning, CA_VOLUME, CONTAINER_NAME, INJECTED_LABEL,
    PINS_SECRET_ANNOTATION, PINS_VOLUME, TRANSPARENT_ANNOTATION,
};

/// Kinds whose Pod template is `spec.template`.
const TEMPLATE_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
];

// === documents ===

/// Inject every Pod template of one document (several for a `List`).
pub(super) fn inject_document(
    doc: &mut Value,
    opts: &InjectOptions,
    index: usize,
    warnings: &mut Vec<Warning>,
) -> Result<Outcome, InjectError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind == "List" {
        let mut outcome = Outcome::Unchanged;
        if let Some(Value::Sequence(items)) = doc.get_mut("items") {
            for item in items {
                if inject_document(item, opts, index, warnings)? == Outcome::Injected {
                    outcome = Outcome::Injected;
                }
            }
        }
        return Ok(outcome);
    }
    if has_inject_marker(doc, false) {
        return Ok(Outcome::Unchanged);
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    // A workload without a pod template with containers is a patch or a
    // fragment (kustomize); leave it alone.
    let Some(template) = pod_template(doc, &kind) else {
        return Ok(Outcome::Unchanged);
    };
    let has_containers = matches!(
        template.get("spec").and_then(|s| s.get("containers")),
        Some(Value::Sequence(_))
    );
    if !has_containers {
        return Ok(Outcome::Unchanged);
    }
    let before = template.clone();
    inject_template(template, opts, index, &kind, &name, warnings)?;
    Ok(if *template != before {
        Outcome::Injected
    } else {
        Outcome::Unchanged
    })
}

/// Where a workload of `kind` keeps its Pod template; a Pod is its own.
fn pod_template<'a>(doc: &'a mut Value, kind: &str) -> Option<&'a mut Value> {
    if TEMPLATE_KINDS.contains(&kind) {
        doc.get_mut("spec").and_then(|s| s.get_mut("template"))
    } else if kind == "CronJob" {
        doc.get_mut("spec")
            .and_then(|s| s.get_mut("jobTemplate"))
            .and_then(|j| j.get_mut("spec"))
            .and_then(|s| s.get_mut("template"))
    } else if kind == "Pod" {
        Some(doc)
    } else {
        None
    }
}

// === one pod template ===

/// Inject a Pod template (a mapping with `metadata` and `spec`) of a
/// workload named `workload`. `None` when it was left alone (opted out,
/// `hostNetwork`).
pub(super) fn inject_template(
    template: &mut Value,
    opts: &InjectOptions,
    index: usize,
    kind: &str,
    workload: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Added>, InjectError> {
    if has_inject_marker(template, false) {
        return Ok(None);
    }
    let at = Subject {
        index,
        kind,
        name: template
            .get("metadata")
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or(workload)
            .to_string(),
    };
    let Value::Mapping(tmpl) = template else {
        return Err(at.malformed("pod template is not a mapping"));
    };
    if host_network(tmpl) {
        warnings.push(at.warning(
            "hostNetwork pod not injected: its loopback is the node's, shared with \
             every hostNetwork pod there",
        ));
        return Ok(None);
    }
    let opts = &with_annotations(tmpl, opts, &at)?;
    let existing = existing_layout(tmpl);
    let native = match existing {
        Some(native) if opts.keep_layout => native,
        _ => opts.native_sidecar,
    };
    check_ports(tmpl, opts, &at)?;
    check_app_proxy_env(tmpl, opts, &at, existing.is_some())?;
    check_transparent_uid(tmpl, opts, &at)?;
    uid_lock::check(tmpl, opts, &at)?;
    if !native && (kind == "Job" || kind == "CronJob") {
        warnings.push(at.warning(
            "legacy (non-native) sidecar in a Job never exits, so the Job never completes",
        ));
    }
    if !native && opts.transparent {
        warnings.push(at.warning(
            "transparent mode with a legacy (non-native) sidecar: the rules are in place \
             before pinproxy listens, so the app's init containers and its first \
             connections fail (connection refused) until pinproxy is up",
        ));
    }

    let secret = label_and_pins_secret(tmpl, opts, &at)?;
    let first_app = first_app_container(tmpl);
    let spec = child_mapping(tmpl, "spec").ok_or_else(|| at.malformed("spec is not a mapping"))?;
    place_sidecar(spec, opts, native, &at)?;
    place_redirect(spec, opts, &at)?;
    let volumes = add_volumes(spec, opts, &secret, &at)?;
    let app_containers = configure_app_containers(spec, opts, &at)?;
    if let Some(cost) = uid_lock::apply(tmpl, opts, &at)? {
        warnings.push(at.warning(&cost));
    }
    // With a regular sidecar first in the list, kubectl logs/exec would
    // default to it; point them at the app.
    if !native {
        default_container_annotation(tmpl, first_app);
    }
    Ok(Some(Added {
        native_sidecar: native,
        transparent: opts.transparent,
        volumes,
        app_containers,
    }))
}

/// `opts`, with what the template's annotations say: transparent mode
/// ([`TRANSPARENT_ANNOTATION`]) and more identity Secrets
/// ([`IDENTITY_ANNOTATION`]).
fn with_annotations(
    tmpl: &Mapping,
    opts: &InjectOptions,
    at: &Subject,
) -> Result<InjectOptions, InjectError> {
    let mut opts = opts.clone();
    let annotations = tmpl.get("metadata").and_then(|m| m.get("annotations"));
    let said = annotations.and_then(|a| a.get(TRANSPARENT_ANNOTATION));
    match said.map(|v| v.as_str().map(str::trim)) {
        None => {}
        Some(Some("true")) => opts.transparent = true,
        Some(Some("false")) => opts.transparent = false,
        Some(_) => {
            return Err(at.malformed(&format!(
                "annotation {TRANSPARENT_ANNOTATION} must be \"true\" or \"false\""
            )))
        }
    }
    if let Some(v) = annotations.and_then(|a| a.get(IDENTITY_ANNOTATION)) {
        let Some(list) = v.as_str() else {
            return Err(at.malformed(&format!(
                "annotation {IDENTITY_ANNOTATION} must be a comma-separated list of Secret names"
            )));
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            check_name(name)
                .map_err(|e| at.malformed(&format!("annotation {IDENTITY_ANNOTATION}: {e}")))?;
            opts.identity_secrets.push(name.to_string());
        }
    }
    Ok(opts)
}

/// Metadata: the label the PodMonitor selects. Returns the pins Secret,
/// which the template may name with an annotation.
fn label_and_pins_secret(
    tmpl: &mut Mapping,
    opts: &InjectOptions,
    at: &Subject,
) -> Result<String, InjectError> {
    let meta =
        child_mapping(tmpl, "metadata").ok_or_else(|| at.malformed("metadata is not a mapping"))?;
    let secret = meta
        .get("annotations")
        .and_then(|a| a.get(PINS_SECRET_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| opts.pins_secret.clone());
    if !is_dns_subdomain(&secret) {
        return Err(at.malformed(&format!(
            "annotation {PINS_SECRET_ANNOTATION}: {secret:?} is not a valid Secret name"
        )));
    }
    if let Some(key) = opts.key_in(&secret) {
        return Err(at.malformed(&format!(
            "annotation {PINS_SECRET_ANNOTATION}: {secret:?} is where the pinset key is read \
             from (--pinset-key-from {key}): whoever writes the pins could write the key too"
        )));
    }
    child_mapping(meta, "labels")
        .ok_or_else(|| at.malformed("metadata.labels is not a mapping"))?
        .insert(s(INJECTED_LABEL), s("true"));
    Ok(secret)
}

/// The first container that is not pinproxy.
fn first_app_container(tmpl: &Mapping) -> Option<String> {
    tmpl.get("spec")
        .and_then(|sp| sp.get("containers"))
        .and_then(Value::as_sequence)
        .and_then(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .find(|n| *n != CONTAINER_NAME)
                .map(str::to_string)
        })
}

/// The sidecar: take out any earlier copy (either list), put the new one
/// where the old one was, else first, so it starts before everything else.
fn place_sidecar(
    spec: &mut Mapping,
    opts: &InjectOptions,
    native: bool,
    at: &Subject,
) -> Result<(), InjectError> {
    let mut old_slot: Option<(bool, usize)> = None;
    for (field, in_init) in [("initContainers", true), ("containers", false)] {
        if let Some(list) = spec.get_mut(field) {
            let Value::Sequence(list) = list else {
                return Err(at.malformed(&format!("spec.{field} is not a list")));
            };
            if let Some(i) = list.iter().position(is_sidecar) {
                list.remove(i);
                old_slot.get_or_insert((in_init, i));
            }
        }
    }
    if let Some(Value::Sequence(list)) = spec.get("initContainers") {
        if list.is_empty() {
            spec.remove("initContainers");
        }
    }
    let field = if native {
        "initContainers"
    } else {
        "containers"
    };
    let at_index = match old_slot {
        Some((in_init, i)) if in_init == native => i,
        _ => 0,
    };
    let list = spec
        .entry(s(field))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Value::Sequence(list) = list else {
        return Err(at.malformed(&format!("spec.{field} is not a list")));
    };
    list.insert(
        at_index.min(list.len()),
        opts.sidecar(&opts.pins_dir, native),
    );
    Ok(())
}

/// Transparent mode's init container, first of all (before the native
/// sidecar, so the rules exist before anything else runs); taken out when
/// transparent mode is off.
fn place_redirect(
    spec: &mut Mapping,
    opts: &InjectOptions,
    at: &Subject,
) -> Result<(), InjectError> {
    if let Some(list) = spec.get_mut("initContainers") {
        let Value::Sequence(list) = list else {
            return Err(at.malformed("spec.initContainers is not a list"));
        };
        list.retain(|c| !is_redirect(c));
        if list.is_empty() {
            spec.remove("initContainers");
        }
    }
    if !opts.transparent {
        return Ok(());
    }
    let list = spec
        .entry(s("initContainers"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Value::Sequence(list) = list else {
        return Err(at.malformed("spec.initContainers is not a list"));
    };
    list.insert(0, opts.redirect_container());
    Ok(())
}

/// The pins Secret, the CA emptyDir and the extra CAs (taken out again when
/// none are configured any more), replaced in place by name. Returns the
/// names of the volumes pinproxy uses.
fn add_volumes(
    spec: &mut Mapping,
    opts: &InjectOptions,
    secret: &str,
    at: &Subject,
) -> Result<Vec<String>, InjectError> {
    let volumes = spec
        .entry(s("volumes"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Value::Sequence(volumes) = volumes else {
        return Err(at.malformed("spec.volumes is not a list"));
    };
    upsert_named(
        volumes,
        map([
            ("name", s(PINS_VOLUME)),
            ("secret", map([("secretName", s(secret))])),
        ]),
    );
    upsert_named(
        volumes,
        map([
            ("name", s(CA_VOLUME)),
            (
                "emptyDir",
                map([("medium", s("Memory")), ("sizeLimit", s("1Mi"))]),
            ),
        ]),
    );
    let mut names = vec![PINS_VOLUME.to_string(), CA_VOLUME.to_string()];
    // Identity Secrets: those configured now, in place by name; any other
    // one an earlier injection added is taken out.
    let identity = opts.identity_volumes();
    volumes.retain(|v| {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        !name.starts_with(VOLUME_PREFIX) || identity.iter().any(|i| i.get("name") == v.get("name"))
    });
    for v in identity {
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            names.push(name.to_string());
        }
        upsert_named(volumes, v);
    }
    match opts.extra_ca_volume() {
        Some(extra) => {
            upsert_named(volumes, extra);
            names.push(CA_EXTRA_VOLUME.to_string());
        }
        None => volumes.retain(|v| v.get("name").and_then(Value::as_str) != Some(CA_EXTRA_VOLUME)),
    }
    match opts.learn_volume() {
        Some(learn) => {
            upsert_named(volumes, learn);
            names.push(LEARN_VOLUME.to_string());
        }
        None => volumes.retain(|v| v.get("name").and_then(Value::as_str) != Some(LEARN_VOLUME)),
    }
    // The pinset keys and the rollback state: in place by name, or taken
    // out when no key is configured any more.
    let signing = opts.signing_volumes();
    volumes.retain(|v| {
        let name = v.get("name").and_then(Value::as_str);
        !matches!(name, Some(KEY_VOLUME | STATE_VOLUME))
            || signing.iter().any(|s| s.get("name") == v.get("name"))
    });
    for v in signing {
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            names.push(name.to_string());
        }
        upsert_named(volumes, v);
    }
    Ok(names)
}

/// App containers: proxy env, CA trust, the JVM's proxy properties, the
/// read-only CA mount. Returns the containers' names.
fn configure_app_containers(
    spec: &mut Mapping,
    opts: &InjectOptions,
    at: &Subject,
) -> Result<Vec<String>, InjectError> {
    let env = opts.app_env();
    let stale = opts.stale_app_env();
    let java = if opts.sets_proxy_env() {
        opts.java_proxy_properties()
    } else {
        String::new()
    };
    let Some(Value::Sequence(containers)) = spec.get_mut("containers") else {
        return Err(at.malformed("spec.containers is not a list"));
    };
    let mut names = Vec::new();
    for c in containers.iter_mut().filter(|c| !is_sidecar(c)) {
        let Value::Mapping(c) = c else {
            return Err(at.malformed("a container is not a mapping"));
        };
        if let Some(name) = c.get("name").and_then(Value::as_str) {
            names.push(name.to_string());
        }
        let Value::Sequence(list) = c
            .entry(s("env"))
            .or_insert_with(|| Value::Sequence(Vec::new()))
        else {
            return Err(at.malformed("a container's env is not a list"));
        };
        list.retain(|v| {
            v.get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| !stale.contains(&n))
        });
        for (name, value) in &env {
            upsert_named(list, map([("name", s(name)), ("value", s(value))]));
        }
        // The app's effective value: Kubernetes takes the last entry.
        let theirs = list
            .iter()
            .rfind(|v| v.get("name").and_then(Value::as_str) == Some(JAVA_TOOL_OPTIONS))
            .and_then(env_value);
        let merged = merge_java_tool_options(theirs.as_deref(), &java);
        if merged.is_empty() {
            list.retain(|v| v.get("name").and_then(Value::as_str) != Some(JAVA_TOOL_OPTIONS));
        } else {
            upsert_named(
                list,
                map([("name", s(JAVA_TOOL_OPTIONS)), ("value", s(&merged))]),
            );
        }
        let Value::Sequence(mounts) = c
            .entry(s("volumeMounts"))
            .or_insert_with(|| Value::Sequence(Vec::new()))
        else {
            return Err(at.malformed("a container's volumeMounts is not a list"));
        };
        upsert_named(
            mounts,
            map([
                ("name", s(CA_VOLUME)),
                ("mountPath", s(&opts.ca_dir)),
                ("readOnly", Value::Bool(true)),
            ]),
        );
    }
    Ok(names)
}

/// `kubectl.kubernetes.io/default-container`, unless the template sets it.
fn default_container_annotation(tmpl: &mut Mapping, first_app: Option<String>) {
    if let (Some(app), Some(meta)) = (first_app, child_mapping(tmpl, "metadata")) {
        if let Some(ann) = child_mapping(meta, "annotations") {
            ann.entry(s("kubectl.kubernetes.io/default-container"))
                .or_insert_with(|| s(&app));
        }
    }
}

// === YAML values ===

/// Replace the entry with the same `name` (the first; any later one with
/// that name is removed), else append. Kubernetes takes the *last* of two
/// env entries with one name: a second `HTTPS_PROXY` left behind would
/// win over the one injected.
fn upsert_named(list: &mut Vec<Value>, item: Value) {
    let name = item.get("name").cloned();
    let mut item = Some(item);
    list.retain_mut(|v| {
        if v.get("name") != name.as_ref() {
            return true;
        }
        match item.take() {
            Some(it) => {
                *v = it;
                true
            }
            None => false,
        }
    });
    if let Some(it) = item {
        list.push(it);
    }
}

/// The mapping under `key`, created when absent or null. `None` when the key
/// holds something else.
fn child_mapping<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let v = m.entry(s(key)).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut()
}
