//! Transparent mode: no app container may become pinproxy, or send
//! around the rules.
//!
//! The rules let pinproxy's UID through unredirected, so a process that
//! can switch to that UID egresses around the pins: root with `CAP_SETUID`
//! (the default when `runAsUser` is unset) calls `setuid(1337)`, and any
//! process can exec a set-user-ID binary owned by 1337 unless
//! `no_new_privs` is set. And the rules are iptables `OUTPUT` rules, which
//! a packet socket never meets: root with `CAP_NET_RAW` (also in the
//! runtimes' default set) writes whole frames onto `eth0` with `AF_PACKET`,
//! past the redirect and the lock. So in transparent mode every app
//! container (and app init container) gets `capabilities.drop: [SETUID,
//! SETGID, NET_RAW]` and `allowPrivilegeEscalation: false` (no_new_privs),
//! unless its securityContext already says so (`drop: [ALL]` counts). A
//! container that must keep them — `privileged: true`, `SETUID`/`SETGID`/
//! `ALL` in `capabilities.add`, `allowPrivilegeEscalation: true`, or
//! `NET_RAW` added ([`UNDOES_RULES`]) — is refused, unless the pod says
//! [`ALLOW_SETUID_ANNOTATION`]: then nothing is changed and a warning says
//! what that costs.
//!
//! The rules live in the network namespace every container of the pod
//! shares, and pinproxy's process in the PID namespace they may share: an
//! app container that adds a capability to change or get around either
//! ([`UNDOES_RULES`]: `NET_ADMIN` deletes the rules, `NET_RAW` sends around
//! them, `SYS_PTRACE` takes over pinproxy's process, …) is refused the same
//! way, under the same override.
//!
//! What injection added is recorded in [`RECORD_ANNOTATION`], so turning
//! transparent mode off (or setting the override) takes exactly that out
//! again and leaves the manifest's own settings alone.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use super::subject::Subject;
use super::yaml::s;
use super::{is_redirect, is_sidecar, InjectError, InjectOptions};

/// Pod annotation: `"true"` lets the pod's containers keep the means to
/// change UID in transparent mode (and so to bypass pinproxy).
pub const ALLOW_SETUID_ANNOTATION: &str = "pinproxy.io/allow-setuid";
/// Pod annotation written by injection: which container got which of
/// `drop: SETUID`, `drop: SETGID`, `drop: NET_RAW`,
/// `allowPrivilegeEscalation: false`, as
/// `app=NET_RAW+SETGID+SETUID+allowPrivilegeEscalation;migrate=SETUID`.
pub const RECORD_ANNOTATION: &str = "pinproxy.io/uid-lock";

const SETUID: &str = "SETUID";
const SETGID: &str = "SETGID";
/// Packet sockets (`AF_PACKET`) and raw IP: the first never meets an
/// iptables rule.
const NET_RAW: &str = "NET_RAW";
/// What injection drops from every app container in transparent mode.
const DROPPED: [&str; 3] = [SETUID, SETGID, NET_RAW];
const NO_ESCALATION: &str = "allowPrivilegeEscalation";

/// Per container, what injection added.
type Record = BTreeMap<String, Vec<String>>;

/// Whether the pod template carries [`ALLOW_SETUID_ANNOTATION`]`: "true"`.
pub(super) fn allowed(tmpl: &Mapping, at: &Subject) -> Result<bool, InjectError> {
    let said = tmpl
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(ALLOW_SETUID_ANNOTATION));
    match said.map(|v| v.as_str().map(str::trim)) {
        None | Some(Some("false")) => Ok(false),
        Some(Some("true")) => Ok(true),
        Some(_) => Err(at.malformed(&format!(
            "annotation {ALLOW_SETUID_ANNOTATION} must be \"true\" or \"false\""
        ))),
    }
}

/// Refuses a template one of whose app containers must keep a way to
/// change UID, in transparent mode without the override.
pub(super) fn check(tmpl: &Mapping, opts: &InjectOptions, at: &Subject) -> Result<(), InjectError> {
    if !opts.transparent || allowed(tmpl, at)? {
        return Ok(());
    }
    for c in app_containers(tmpl) {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("<unnamed>");
        if let Some(why) = keeps_uid_change(c) {
            return Err(InjectError::UidChange {
                at: at.template(),
                container: name.to_string(),
                why,
                uid: opts.redirect.uid,
            });
        }
        let added = caps(c, "add");
        if let Some((cap, does)) = UNDOES_RULES
            .iter()
            .find(|(cap, _)| added.iter().any(|a| a == cap))
        {
            return Err(InjectError::RuleChange {
                at: at.template(),
                container: name.to_string(),
                cap: (*cap).to_string(),
                does: (*does).to_string(),
            });
        }
    }
    Ok(())
}

/// Makes every app container unable to change UID (transparent mode
/// without the override), or takes out what an earlier injection added
/// (otherwise). Returns a warning when the override is in force.
pub(super) fn apply(
    tmpl: &mut Mapping,
    opts: &InjectOptions,
    at: &Subject,
) -> Result<Option<String>, InjectError> {
    let allow = allowed(tmpl, at)?;
    let lock = opts.transparent && !allow;
    let old = read_record(tmpl);
    let mut record = Record::new();
    if let Some(Value::Mapping(spec)) = tmpl.get_mut("spec") {
        for field in ["initContainers", "containers"] {
            let Some(Value::Sequence(list)) = spec.get_mut(field) else {
                continue;
            };
            for c in list
                .iter_mut()
                .filter(|c| !is_sidecar(c) && !is_redirect(c))
            {
                let Value::Mapping(c) = c else {
                    return Err(at.malformed("a container is not a mapping"));
                };
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("<unnamed>")
                    .to_string();
                let ours = old.get(&name).cloned().unwrap_or_default();
                let kept = if lock {
                    forbid(c, ours).ok_or_else(|| {
                        at.malformed(&format!(
                            "container {name:?}: securityContext or its capabilities is not a mapping"
                        ))
                    })?
                } else {
                    undo(c, &ours);
                    Vec::new()
                };
                if !kept.is_empty() {
                    record.insert(name, kept);
                }
            }
        }
    }
    write_record(tmpl, &record, at)?;
    Ok((opts.transparent && allow).then(|| {
        format!(
            "{ALLOW_SETUID_ANNOTATION}: \"true\": the app containers keep the means to change \
             UID, NET_RAW and the capabilities they add; a root process (or a set-user-ID \
             binary) that becomes UID {}, one that sends raw frames past the pod's rules \
             (NET_RAW, in the runtime's default set), or one that rewrites them (NET_ADMIN), \
             egresses around pinproxy and the lock",
            opts.redirect.uid
        )
    }))
}

/// A container added to a running pod in transparent mode (an ephemeral
/// container, `kubectl debug`), judged as injection judges an app
/// container: `Err` says why it is refused (it could change UID, add a
/// capability that undoes the rules, or runs as the proxy's `uid`),
/// otherwise it gets the drops it lacks.
pub fn lock_added(c: &mut Value, uid: u32) -> Result<(), String> {
    if let Some(why) = keeps_uid_change(c) {
        return Err(format!("it can change its UID ({why})"));
    }
    let added = caps(c, "add");
    if let Some((cap, does)) = UNDOES_RULES
        .iter()
        .find(|(cap, _)| added.iter().any(|a| a == cap))
    {
        return Err(format!("it adds the capability {cap}: it could {does}"));
    }
    let runs_as = c
        .get("securityContext")
        .and_then(|sc| sc.get("runAsUser"))
        .and_then(Value::as_u64);
    if runs_as == Some(u64::from(uid)) {
        return Err(format!("it runs as UID {uid}, which the rules let through"));
    }
    let Value::Mapping(m) = c else {
        return Err("it is not a mapping".into());
    };
    forbid(m, Vec::new())
        .map(drop)
        .ok_or_else(|| "its securityContext or capabilities is not a mapping".into())
}

/// The app containers and app init containers of a template.
fn app_containers(tmpl: &Mapping) -> impl Iterator<Item = &Value> {
    let spec = tmpl.get("spec");
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(move |f| spec.and_then(|s| s.get(f)).and_then(Value::as_sequence))
        .flatten()
        .filter(|c| !is_sidecar(c) && !is_redirect(c))
}

/// A capability name as the runtimes read it: upper case, no `CAP_`.
fn cap_name(v: &Value) -> Option<String> {
    let n = v.as_str()?.trim().to_ascii_uppercase();
    Some(n.strip_prefix("CAP_").map(str::to_string).unwrap_or(n))
}

fn caps(c: &Value, list: &str) -> Vec<String> {
    c.get("securityContext")
        .and_then(|sc| sc.get("capabilities"))
        .and_then(|cap| cap.get(list))
        .and_then(Value::as_sequence)
        .map(|l| l.iter().filter_map(cap_name).collect())
        .unwrap_or_default()
}

/// Capabilities an app container must not add in transparent mode, and
/// what each would let it do to the redirect (`ALL`, which holds them too,
/// is refused as a means to change UID first).
const UNDOES_RULES: [(&str, &str); 6] = [
    ("NET_ADMIN", "delete or rewrite the pod's iptables rules"),
    (
        NET_RAW,
        "send raw frames (AF_PACKET) that no iptables rule of the pod sees",
    ),
    (
        "SYS_ADMIN",
        "enter other namespaces and change the pod's network",
    ),
    (
        "SYS_PTRACE",
        "take over pinproxy's process when the pod shares its process namespace",
    ),
    ("BPF", "load BPF programs that rewrite the pod's traffic"),
    ("SYS_MODULE", "load kernel modules"),
];

/// Why container `c` must keep the means to change UID, as its
/// securityContext says.
fn keeps_uid_change(c: &Value) -> Option<String> {
    let sc = c.get("securityContext");
    let flag = |k: &str| sc.and_then(|sc| sc.get(k)).and_then(Value::as_bool);
    if flag("privileged") == Some(true) {
        return Some("it is privileged".into());
    }
    if flag(NO_ESCALATION) == Some(true) {
        return Some("it sets allowPrivilegeEscalation: true".into());
    }
    let added = caps(c, "add");
    for cap in ["ALL", SETUID, SETGID] {
        if added.iter().any(|a| a == cap) {
            return Some(format!("it adds the capability {cap}"));
        }
    }
    None
}

/// Adds what container `c` lacks; returns what is ours now (added before
/// and still there, or added now). `None`: its securityContext (or a part
/// of it) is not a mapping.
fn forbid(c: &mut Mapping, before: Vec<String>) -> Option<Vec<String>> {
    let dropped = caps(&Value::Mapping(c.clone()), "drop");
    let all = dropped.iter().any(|d| d == "ALL");
    let mut ours = before;
    let sc = child(c, "securityContext")?;
    for cap in DROPPED {
        if !all && !dropped.iter().any(|d| d == cap) {
            let caps = child(sc, "capabilities")?;
            let drop = caps
                .entry(s("drop"))
                .or_insert_with(|| Value::Sequence(Vec::new()));
            if drop.is_null() {
                *drop = Value::Sequence(Vec::new());
            }
            drop.as_sequence_mut()?.push(s(cap));
            ours.push(cap.to_string());
        }
    }
    if sc.get(NO_ESCALATION).and_then(Value::as_bool) != Some(false) {
        sc.insert(s(NO_ESCALATION), Value::Bool(false));
        ours.push(NO_ESCALATION.to_string());
    }
    ours.sort();
    ours.dedup();
    Some(ours)
}

/// Takes out of container `c` what injection added (`ours`), and the
/// mappings that leaves empty.
fn undo(c: &mut Mapping, ours: &[String]) {
    if ours.is_empty() {
        return;
    }
    let Some(Value::Mapping(sc)) = c.get_mut("securityContext") else {
        return;
    };
    if ours.iter().any(|o| o == NO_ESCALATION)
        && sc.get(NO_ESCALATION).and_then(Value::as_bool) == Some(false)
    {
        sc.remove(NO_ESCALATION);
    }
    if let Some(Value::Mapping(caps)) = sc.get_mut("capabilities") {
        if let Some(Value::Sequence(drop)) = caps.get_mut("drop") {
            drop.retain(|d| cap_name(d).is_none_or(|n| !ours.contains(&n)));
            if drop.is_empty() {
                caps.remove("drop");
            }
        }
        if caps.is_empty() {
            sc.remove("capabilities");
        }
    }
    if sc.is_empty() {
        c.remove("securityContext");
    }
}

/// The mapping under `key`, created when absent or null; `None` when the
/// key holds something else.
fn child<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let v = m.entry(s(key)).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut()
}

fn read_record(tmpl: &Mapping) -> Record {
    let text = tmpl
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(RECORD_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let known = [SETUID, SETGID, NET_RAW, NO_ESCALATION];
    text.split(';')
        .filter_map(|part| part.split_once('='))
        .map(|(name, items)| {
            let items = items
                .split('+')
                .filter(|i| known.contains(i))
                .map(str::to_string)
                .collect();
            (name.trim().to_string(), items)
        })
        .collect()
}

fn write_record(tmpl: &mut Mapping, record: &Record, at: &Subject) -> Result<(), InjectError> {
    if record.is_empty() {
        let Some(Value::Mapping(meta)) = tmpl.get_mut("metadata") else {
            return Ok(());
        };
        if let Some(Value::Mapping(ann)) = meta.get_mut("annotations") {
            if ann.remove(RECORD_ANNOTATION).is_some() && ann.is_empty() {
                meta.remove("annotations");
            }
        }
        return Ok(());
    }
    let text = record
        .iter()
        .map(|(name, items)| format!("{name}={}", items.join("+")))
        .collect::<Vec<_>>()
        .join(";");
    child(tmpl, "metadata")
        .and_then(|meta| child(meta, "annotations"))
        .ok_or_else(|| at.malformed("metadata.annotations is not a mapping"))?
        .insert(s(RECORD_ANNOTATION), s(&text));
    Ok(())
}
