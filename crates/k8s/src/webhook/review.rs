//! One AdmissionReview in, one out: pure, no I/O, never panics on input.

use serde_json::Value as Json;

use super::answer::{allow, bad, diff};
use super::{update, Mode, Reply};
use crate::inject::{self, InjectOptions};

/// Containers and init containers a pod may have for the webhook to inject
/// it. Kubernetes sets no limit, and real pods have a handful (a few dozen
/// at the very most); but injection adds ~2 KB of environment and mounts to
/// every app container, so a 600 KB review of 18,000 one-line containers
/// came back as a 33 MB patch and four at once took the webhook to 1.4 GB.
/// Past this cap a pod that asked for injection is denied, never admitted
/// unpinned.
pub const MAX_CONTAINERS: usize = 100;

/// Largest JSONPatch answered, bytes of JSON (before base64). Under
/// [`MAX_CONTAINERS`] a real patch is tens of KB; this catches what the
/// cap does not foresee (a huge `JAVA_TOOL_OPTIONS` merged and sent back).
pub const MAX_PATCH_BYTES: usize = 1024 * 1024;

/// Answer one AdmissionReview body. Pure: no I/O, never panics on input.
pub fn review(body: &[u8], mode: Mode, opts: &InjectOptions) -> Reply {
    let doc: Json = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad("", &format!("malformed AdmissionReview: not JSON: {e}")),
    };
    if doc.get("apiVersion").and_then(Json::as_str) != Some("admission.k8s.io/v1")
        || doc.get("kind").and_then(Json::as_str) != Some("AdmissionReview")
    {
        return bad("", "malformed AdmissionReview: expected apiVersion admission.k8s.io/v1, kind AdmissionReview");
    }
    let Some(request) = doc.get("request").filter(|r| r.is_object()) else {
        return bad("", "malformed AdmissionReview: no request");
    };
    let uid = match request.get("uid").and_then(Json::as_str) {
        Some(u) if !u.is_empty() => u,
        _ => return bad("", "malformed AdmissionReview: request.uid missing"),
    };
    if !is_pod(request) {
        // Outside what the webhook is registered for: let it through untouched.
        return allow(uid, None, &[]);
    }
    let operation = request.get("operation").and_then(Json::as_str);
    let sub_resource = request
        .get("subResource")
        .and_then(Json::as_str)
        .unwrap_or("");
    let object = |field: &str| request.get(field).filter(|o| o.is_object());
    let (Some(pod), old) = (object("object"), object("oldObject")) else {
        return bad(
            uid,
            "malformed AdmissionReview: request.object is not a Pod object",
        );
    };
    match (operation, sub_resource, old) {
        (Some("CREATE"), "", _) => review_pod(uid, request, pod, mode, opts),
        // `status` too: an update through it keeps metadata changes (the
        // status strategy resets only spec), so a label dropped there
        // would escape the freeze.
        (Some("UPDATE"), "" | "status", Some(old)) => update::review_update(uid, old, pod),
        (Some("UPDATE"), "ephemeralcontainers", Some(old)) => {
            update::review_ephemeral(uid, old, pod, opts)
        }
        (Some("UPDATE"), "" | "status" | "ephemeralcontainers", None) => bad(
            uid,
            "malformed AdmissionReview: an UPDATE without request.oldObject",
        ),
        _ => allow(uid, None, &[]),
    }
}

fn is_pod(request: &Json) -> bool {
    let kind = request.get("kind");
    kind.and_then(|k| k.get("kind")).and_then(Json::as_str) == Some("Pod")
        && kind
            .and_then(|k| k.get("group"))
            .and_then(Json::as_str)
            .unwrap_or("")
            .is_empty()
}

/// Inject the Pod of a CREATE review, if it opted in: a patch, warnings
/// (a `hostNetwork` pod is allowed unmodified), or a denial saying why.
fn review_pod(uid: &str, request: &Json, pod: &Json, mode: Mode, opts: &InjectOptions) -> Reply {
    // Whether the pod asked, from its metadata alone: a pod that did not
    // is let through before anything in proportion to it is built.
    let marked = match serde_yaml::to_value(pod.get("metadata")) {
        Ok(meta) => {
            let mut m = serde_yaml::Mapping::new();
            m.insert("metadata".into(), meta);
            serde_yaml::Value::Mapping(m)
        }
        Err(e) => return bad(uid, &format!("pod cannot be read: {e}")),
    };
    let wanted = match mode {
        Mode::OptIn => inject::has_inject_marker(&marked, true),
        Mode::OptOut | Mode::Required => true,
    };
    if mode == Mode::Required && inject::has_inject_marker(&marked, false) {
        return bad(uid, &opt_out_refused(PodRef::of(request, pod).namespace));
    }
    if !wanted || inject::has_inject_marker(&marked, false) {
        return allow(uid, None, &[]);
    }
    let containers = container_count(pod);
    if containers > MAX_CONTAINERS {
        return bad(
            uid,
            &format!(
                "pinproxy cannot inject this pod: it has {containers} containers and init \
                 containers, over the webhook's limit of {MAX_CONTAINERS}"
            ),
        );
    }
    let mut yaml_pod: serde_yaml::Value = match serde_yaml::to_value(pod) {
        Ok(v) => v,
        Err(e) => return bad(uid, &format!("pod cannot be read: {e}")),
    };
    let report = match inject::inject_pod_report(&mut yaml_pod, opts) {
        Ok(r) => r,
        Err(e) => return bad(uid, &format!("pinproxy cannot inject this pod: {e}")),
    };
    let warnings: Vec<String> = report.warnings.iter().map(|w| w.message.clone()).collect();
    let subject = PodRef::of(request, pod);
    let Some(added) = report.added else {
        if !warnings.is_empty() {
            tracing::warn!(
                uid,
                namespace = subject.namespace,
                pod = subject.name,
                owner_kind = subject.owner_kind,
                warning = %warnings.join("; "),
                "pod allowed without the sidecar"
            );
        }
        return allow(uid, None, &warnings);
    };
    let new = match serde_json::to_value(&yaml_pod) {
        Ok(new) => new,
        Err(e) => return bad(uid, &format!("injected pod cannot be encoded: {e}")),
    };
    drop(yaml_pod);
    let mut ops = Vec::new();
    diff("", pod, &new, &mut ops);
    drop(new);
    let patch = match (!ops.is_empty())
        .then(|| serde_json::to_vec(&ops))
        .transpose()
    {
        Ok(p) => p,
        Err(e) => return bad(uid, &format!("patch cannot be encoded: {e}")),
    };
    if let Some(p) = patch.as_ref().filter(|p| p.len() > MAX_PATCH_BYTES) {
        return bad(
            uid,
            &format!(
                "pinproxy cannot inject this pod: its patch would be {} bytes, over the \
                 webhook's limit of {MAX_PATCH_BYTES}",
                p.len()
            ),
        );
    }
    tracing::info!(
        uid,
        namespace = subject.namespace,
        pod = subject.name,
        owner_kind = subject.owner_kind,
        added = %added,
        warnings = %warnings.join("; "),
        "pod injected"
    );
    allow(uid, patch.as_deref(), &warnings)
}

/// Why a pod opting out of a labelled namespace is denied, and what to do.
fn opt_out_refused(namespace: &str) -> String {
    format!(
        "pinproxy: namespace {namespace:?} is labelled {inject}=enabled, where every pod is \
         injected and none may opt out (webhook --pod-opt-out refuse); remove {inject}: \
         \"false\" from the pod's labels and annotations, or ask the cluster operator to run \
         it in a namespace without that label (the chart's \
         webhook.labelledNamespaces.podOptOut: true allows opt-outs in every labelled \
         namespace)",
        inject = inject::INJECT_ANNOTATION,
    )
}

/// `spec.containers` and `spec.initContainers` together.
fn container_count(pod: &Json) -> usize {
    let spec = pod.get("spec");
    ["containers", "initContainers"]
        .iter()
        .filter_map(|field| spec.and_then(|s| s.get(field)).and_then(Json::as_array))
        .map(Vec::len)
        .sum()
}

/// Who a review is about, for the logs.
struct PodRef<'a> {
    namespace: &'a str,
    /// `metadata.name`, or `generateName` for pods a controller creates.
    name: &'a str,
    /// Kind of the controlling owner (`ReplicaSet`, `Job`, …); `none`.
    owner_kind: &'a str,
}

impl<'a> PodRef<'a> {
    fn of(request: &'a Json, pod: &'a Json) -> Self {
        let meta = pod.get("metadata");
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Json::as_str);
        let owners = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Json::as_array);
        let owner = owners.and_then(|o| {
            o.iter()
                .find(|r| r.get("controller") == Some(&Json::Bool(true)))
                .or_else(|| o.first())
        });
        PodRef {
            namespace: request
                .get("namespace")
                .and_then(Json::as_str)
                .or_else(|| field("namespace"))
                .unwrap_or(""),
            name: field("name")
                .filter(|n| !n.is_empty())
                .or_else(|| field("generateName"))
                .unwrap_or(""),
            owner_kind: owner
                .and_then(|o| o.get("kind"))
                .and_then(Json::as_str)
                .unwrap_or("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_review(containers: usize) -> Vec<u8> {
        let list: Vec<Json> = (0..containers)
            .map(|i| json!({"name": format!("c{i}"), "image": "app:1"}))
            .collect();
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "labels": {"pinproxy.io/inject": "true"}},
                    "spec": {"containers": list}
                }
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_pod_over_the_container_cap_is_denied_and_one_at_it_injected() {
        let opts = InjectOptions::default();
        let over = review(&pod_review(MAX_CONTAINERS + 1), Mode::OptIn, &opts);
        let r = &over.body["response"];
        assert_eq!(r["allowed"], json!(false), "{r}");
        assert!(
            r["status"]["message"]
                .as_str()
                .unwrap()
                .contains("101 containers and init containers, over the webhook's limit of 100"),
            "{r}"
        );
        let at = review(&pod_review(MAX_CONTAINERS), Mode::OptIn, &opts);
        assert_eq!(at.body["response"]["allowed"], json!(true));
        assert!(at.body["response"]["patch"].is_string());
        // Not asked: not ours to judge, however large.
        let unmarked = String::from_utf8(pod_review(MAX_CONTAINERS + 1))
            .unwrap()
            .replace("pinproxy.io/inject", "other");
        let r = review(unmarked.as_bytes(), Mode::OptIn, &opts);
        assert_eq!(r.body["response"]["allowed"], json!(true));
        assert!(r.body["response"].get("patch").is_none());
    }

    /// Injection sends back what it merges into: a container's 1.1 MB
    /// `JAVA_TOOL_OPTIONS` would make a patch over the limit.
    #[test]
    fn a_patch_over_the_limit_is_denied() {
        let mut doc: Json = serde_json::from_slice(&pod_review(1)).unwrap();
        doc["request"]["object"]["spec"]["containers"][0]["env"] =
            json!([{"name": "JAVA_TOOL_OPTIONS", "value": "-Xss1m ".repeat(160_000)}]);
        let r = review(
            doc.to_string().as_bytes(),
            Mode::OptIn,
            &InjectOptions::default(),
        );
        let r = &r.body["response"];
        assert_eq!(r["allowed"], json!(false));
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("pinproxy cannot inject this pod: its patch would be ")
                && message.ends_with("bytes, over the webhook's limit of 1048576"),
            "{message}"
        );
    }
}
