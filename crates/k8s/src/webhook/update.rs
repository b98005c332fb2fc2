//! UPDATEs of pods the webhook injected: what may not change after
//! creation (the sidecar's and the redirect's images, the `pinproxy.io/`
//! labels and annotations), and ephemeral containers joining a
//! transparent pod (judged as app containers are at injection).

use serde_json::Value as Json;

use super::answer::{allow, bad, diff};
use super::Reply;
use crate::inject::{self, InjectOptions};

/// The prefix of pinproxy's labels and annotations.
const PINPROXY_PREFIX: &str = "pinproxy.io/";

/// Whether `pod` was injected: the label injection sets, or a container
/// named as the sidecar.
fn injected(pod: &Json) -> bool {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(inject::INJECTED_LABEL))
        .and_then(Json::as_str)
        == Some("true")
        || image_of(pod, inject::CONTAINER_NAME).is_some()
}

/// The image of the container or init container named `name`, if any.
fn image_of<'a>(pod: &'a Json, name: &str) -> Option<&'a Json> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|f| pod.get("spec")?.get(*f)?.as_array())
        .flatten()
        .find(|c| c.get("name").and_then(Json::as_str) == Some(name))
        .map(|c| c.get("image").unwrap_or(&Json::Null))
}

/// An UPDATE of an injected pod (Kubernetes lets it change images,
/// labels, annotations and little else): the sidecar's and the redirect's
/// images stay. Swapped, either could run anything as the proxy's UID,
/// which transparent mode's rules let through, while the pod still says
/// it is injected. App images may change (what user an image runs as is
/// not visible here, as at creation). Its `pinproxy.io/` labels and
/// annotations stay too: they decided how it was injected, the chart's
/// selectors match them (dropping `pinproxy.io/inject` would take the
/// pod's next update out of this webhook's sight), and the override
/// annotation added afterwards would unlock what was locked.
pub(super) fn review_update(uid: &str, old: &Json, new: &Json) -> Reply {
    if !injected(old) {
        return allow(uid, None, &[]);
    }
    for field in ["labels", "annotations"] {
        let ours = |pod: &'_ Json| -> Vec<(String, Json)> {
            let mut kv: Vec<(String, Json)> = pod
                .get("metadata")
                .and_then(|m| m.get(field))
                .and_then(Json::as_object)
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with(PINPROXY_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            kv.sort_by(|a, b| a.0.cmp(&b.0));
            kv
        };
        let (before, after) = (ours(old), ours(new));
        if before != after {
            let changed = before
                .iter()
                .chain(&after)
                .map(|(k, _)| k.as_str())
                .find(|k| before.iter().find(|(b, _)| b == k) != after.iter().find(|(a, _)| a == k))
                .unwrap_or(PINPROXY_PREFIX);
            return bad(
                uid,
                &format!(
                    "pinproxy: the {field} {changed:?} of an injected pod cannot be changed after \
                     creation (they decided how it was injected); recreate the pod to change it"
                ),
            );
        }
    }
    for name in [inject::CONTAINER_NAME, inject::REDIRECT_CONTAINER_NAME] {
        let (before, after) = (image_of(old, name), image_of(new, name));
        if before != after {
            return bad(
                uid,
                &format!(
                    "pinproxy: the image of container {name:?} of an injected pod cannot be \
                     changed ({} → {}); recreate the pod (a rollout) to change it",
                    before.map_or("none".into(), Json::to_string),
                    after.map_or("none".into(), Json::to_string),
                ),
            );
        }
    }
    allow(uid, None, &[])
}

/// Ephemeral containers added to a running pod (`kubectl debug`): in a
/// transparent pod (the redirect's init container is there) each new one
/// is judged as an app container is at injection — refused if it could
/// change UID, add a capability that undoes the rules, or runs as the
/// proxy's UID, otherwise given the drops — unless the pod carries the
/// override annotation. Elsewhere they are the app's business, as at
/// creation.
pub(super) fn review_ephemeral(uid: &str, old: &Json, new: &Json, opts: &InjectOptions) -> Reply {
    let transparent = image_of(old, inject::REDIRECT_CONTAINER_NAME).is_some();
    let overridden = old
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(inject::ALLOW_SETUID_ANNOTATION))
        .and_then(Json::as_str)
        .map(str::trim)
        == Some("true");
    if !transparent || overridden {
        return allow(uid, None, &[]);
    }
    let names = |pod: &Json| -> Vec<String> {
        pod.pointer("/spec/ephemeralContainers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Json::as_str).map(str::to_string))
            .collect()
    };
    let before = names(old);
    let mut locked = new.clone();
    let Some(list) = locked
        .pointer_mut("/spec/ephemeralContainers")
        .and_then(Json::as_array_mut)
    else {
        return allow(uid, None, &[]);
    };
    for c in list.iter_mut() {
        let name = c.get("name").and_then(Json::as_str).unwrap_or("<unnamed>");
        if before.iter().any(|b| b == name) {
            continue;
        }
        let name = name.to_string();
        let mut yaml: serde_yaml::Value = match serde_yaml::to_value(&*c) {
            Ok(v) => v,
            Err(e) => return bad(uid, &format!("ephemeral container cannot be read: {e}")),
        };
        if let Err(why) = inject::lock_added(&mut yaml, opts.redirect.uid) {
            return bad(
                uid,
                &format!(
                    "pinproxy: ephemeral container {name:?} cannot join this transparent pod: \
                     {why}, and bypass pinproxy. Drop that from its securityContext, or set the \
                     pod annotation {}: \"true\" to accept the bypass",
                    inject::ALLOW_SETUID_ANNOTATION
                ),
            );
        }
        *c = match serde_json::to_value(&yaml) {
            Ok(v) => v,
            Err(e) => return bad(uid, &format!("ephemeral container cannot be encoded: {e}")),
        };
    }
    let mut ops = Vec::new();
    diff("", new, &locked, &mut ops);
    let patch = match (!ops.is_empty())
        .then(|| serde_json::to_vec(&ops))
        .transpose()
    {
        Ok(p) => p,
        Err(e) => return bad(uid, &format!("patch cannot be encoded: {e}")),
    };
    allow(uid, patch.as_deref(), &[])
}
