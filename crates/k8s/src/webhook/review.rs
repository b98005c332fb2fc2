//! One AdmissionReview in, one out: pure, no I/O, never panics on input.

use base64::Engine as _;
use http::StatusCode;
use serde_json::{json, Value as Json};

use super::{Mode, Reply};
use crate::inject::{self, InjectOptions};

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
    if !is_pod_create(request) {
        // Outside what the webhook is registered for: let it through untouched.
        return allow(uid, None, &[]);
    }
    let Some(pod) = request.get("object").filter(|o| o.is_object()) else {
        return bad(
            uid,
            "malformed AdmissionReview: request.object is not a Pod object",
        );
    };
    review_pod(uid, request, pod, mode, opts)
}

fn is_pod_create(request: &Json) -> bool {
    let kind = request.get("kind");
    let is_pod = kind.and_then(|k| k.get("kind")).and_then(Json::as_str) == Some("Pod")
        && kind
            .and_then(|k| k.get("group"))
            .and_then(Json::as_str)
            .unwrap_or("")
            .is_empty();
    is_pod && request.get("operation").and_then(Json::as_str) == Some("CREATE")
}

/// Inject the Pod of a CREATE review, if it opted in: a patch, warnings
/// (a `hostNetwork` pod is allowed unmodified), or a denial saying why.
fn review_pod(uid: &str, request: &Json, pod: &Json, mode: Mode, opts: &InjectOptions) -> Reply {
    let mut yaml_pod: serde_yaml::Value = match serde_yaml::to_value(pod) {
        Ok(v) => v,
        Err(e) => return bad(uid, &format!("pod cannot be read: {e}")),
    };
    let wanted = match mode {
        Mode::OptIn => inject::has_inject_marker(&yaml_pod, true),
        Mode::OptOut => true,
    };
    if !wanted || inject::has_inject_marker(&yaml_pod, false) {
        return allow(uid, None, &[]);
    }
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
    let mut ops = Vec::new();
    diff("", pod, &new, &mut ops);
    tracing::info!(
        uid,
        namespace = subject.namespace,
        pod = subject.name,
        owner_kind = subject.owner_kind,
        added = %added,
        warnings = %warnings.join("; "),
        "pod injected"
    );
    allow(
        uid,
        (!ops.is_empty()).then_some(Json::Array(ops)),
        &warnings,
    )
}

/// A review refused. Without a uid the API server cannot match an answer:
/// fail the call itself (HTTP 400).
fn bad(uid: &str, message: &str) -> Reply {
    let status = if uid.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    error_reply(status, uid, message)
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

/// Let the pod through, with `patch` applied and `warnings` shown to the
/// client (kubectl prints them).
fn allow(uid: &str, patch: Option<Json>, warnings: &[String]) -> Reply {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        let bytes = serde_json::to_vec(&patch).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    Reply {
        status: StatusCode::OK,
        body: json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response }),
    }
}

pub(super) fn error_reply(status: StatusCode, uid: &str, message: &str) -> Reply {
    // `message` is the event's own key in JSON logs: the reason goes in `error`.
    tracing::warn!(uid, error = message, "admission review refused");
    Reply {
        status,
        body: json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": uid,
                "allowed": false,
                "status": { "code": 400, "reason": "BadRequest", "message": message },
            },
        }),
    }
}

/// RFC 6902 operations turning `old` into `new`: objects are compared key by
/// key, anything else that differs is replaced whole.
fn diff(path: &str, old: &Json, new: &Json, ops: &mut Vec<Json>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                ops.push(json!({ "op": "remove", "path": format!("{path}/{}", escape(key)) }));
            }
            for (key, vb) in b {
                let p = format!("{path}/{}", escape(key));
                match a.get(key) {
                    None => ops.push(json!({ "op": "add", "path": p, "value": vb })),
                    Some(va) => diff(&p, va, vb, ops),
                }
            }
        }
        _ => ops.push(json!({ "op": "replace", "path": path, "value": new })),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_escapes_and_nests() {
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}});
        let new = json!({"metadata": {"labels": {"a": "1", "pinproxy.io/injected": "true"}}, "spec": {"x": [1, 2]}});
        let mut ops = Vec::new();
        diff("", &old, &new, &mut ops);
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/labels/pinproxy.io~1injected", "value": "true"}),
                json!({"op": "replace", "path": "/spec/x", "value": [1, 2]}),
            ]
        );
    }
}
