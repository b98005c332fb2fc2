//! What the webhook answers: an AdmissionReview allowing (with a
//! JSONPatch and warnings) or refusing, and the patch turning one pod into
//! another ([`diff`]). Shared by the CREATE and UPDATE reviews.

use base64::Engine as _;
use http::StatusCode;
use serde_json::{json, Value as Json};

use super::Reply;

/// A review refused. Without a uid the API server cannot match an answer:
/// fail the call itself (HTTP 400).
pub(super) fn bad(uid: &str, message: &str) -> Reply {
    let status = if uid.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    error_reply(status, uid, message)
}

/// Let the pod through, with `patch` (JSONPatch as JSON text) applied and
/// `warnings` shown to the client (kubectl prints them).
pub(super) fn allow(uid: &str, patch: Option<&[u8]>, warnings: &[String]) -> Reply {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
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
/// key, arrays element by element ([`diff_arrays`]), anything else that
/// differs is replaced whole.
///
/// Element by element, so the patch holds what injection adds, not copies
/// of the containers it touched: replacing `spec.containers` whole made a
/// patch as large as the pod, on top of the pod.
pub(super) fn diff(path: &str, old: &Json, new: &Json, ops: &mut Vec<Json>) {
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
        (Json::Array(a), Json::Array(b)) if diff_arrays(path, a, b, ops) => {}
        _ => ops.push(json!({ "op": "replace", "path": path, "value": new })),
    }
}

/// Injection inserts or removes one run of elements (the sidecar first in
/// `initContainers`, env and mounts appended, an old copy taken out) and
/// edits others in place. So: the longest prefix and suffix that stay
/// (equal, or objects with the same `name`) are diffed pairwise and the run
/// between them is added or removed. Any split gives a correct patch (each
/// pair is diffed whole); this one keeps it small. `false`, pushing
/// nothing, when the arrays are not so related: the caller replaces whole.
fn diff_arrays(path: &str, a: &[Json], b: &[Json], ops: &mut Vec<Json>) -> bool {
    let same = |x: &Json, y: &Json| {
        x == y
            || matches!((x.get("name"), y.get("name")), (Some(n), Some(m)) if n.is_string() && n == m)
    };
    let shorter = a.len().min(b.len());
    let prefix = a.iter().zip(b).take_while(|(x, y)| same(x, y)).count();
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(shorter - prefix)
        .take_while(|(x, y)| same(x, y))
        .count();
    if prefix + suffix < shorter {
        return false;
    }
    // a = a[..prefix] + run_a + a[tail..]; b likewise, one run empty.
    let (tail_a, tail_b) = (a.len() - suffix, b.len() - suffix);
    for (i, (x, y)) in a[..prefix].iter().zip(&b[..prefix]).enumerate() {
        diff(&format!("{path}/{i}"), x, y, ops);
    }
    for _ in prefix..tail_a {
        ops.push(json!({ "op": "remove", "path": format!("{path}/{prefix}") }));
    }
    for (i, y) in b.iter().enumerate().take(tail_b).skip(prefix) {
        ops.push(json!({ "op": "add", "path": format!("{path}/{i}"), "value": y }));
    }
    for (i, (x, y)) in a[tail_a..].iter().zip(&b[tail_b..]).enumerate() {
        diff(&format!("{path}/{}", tail_b + i), x, y, ops);
    }
    true
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(old: Json, new: Json) -> Vec<Json> {
        let mut ops = Vec::new();
        diff("", &old, &new, &mut ops);
        ops
    }

    #[test]
    fn diff_escapes_and_nests() {
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}});
        let new = json!({"metadata": {"labels": {"a": "1", "pinproxy.io/injected": "true"}}, "spec": {"x": [1, 2]}});
        assert_eq!(
            ops(old, new),
            vec![
                json!({"op": "add", "path": "/metadata/labels/pinproxy.io~1injected", "value": "true"}),
                json!({"op": "add", "path": "/spec/x/1", "value": 2}),
            ]
        );
    }

    /// The sidecar goes first and every container is edited in place: the
    /// patch names the new element and the edits, never a whole list.
    #[test]
    fn arrays_are_diffed_by_element_around_one_inserted_run() {
        let old =
            json!({"c": [{"name": "a"}, {"name": "b", "env": [{"name": "X", "value": "1"}]}]});
        let new = json!({"c": [
            {"name": "pinproxy"},
            {"name": "a", "env": [{"name": "P", "value": "p"}]},
            {"name": "b", "env": [{"name": "X", "value": "2"}, {"name": "P", "value": "p"}]},
        ]});
        assert_eq!(
            ops(old, new),
            vec![
                json!({"op": "add", "path": "/c/0", "value": {"name": "pinproxy"}}),
                json!({"op": "add", "path": "/c/1/env", "value": [{"name": "P", "value": "p"}]}),
                json!({"op": "replace", "path": "/c/2/env/0/value", "value": "2"}),
                json!({"op": "add", "path": "/c/2/env/1", "value": {"name": "P", "value": "p"}}),
            ]
        );
    }

    #[test]
    fn a_removed_run_is_removed_and_what_follows_shifts() {
        let old = json!([{"name": "a"}, {"name": "x"}, {"name": "y"}, {"name": "b"}]);
        let new = json!([{"name": "a"}, {"name": "b", "v": 1}]);
        assert_eq!(
            ops(old, new),
            vec![
                json!({"op": "remove", "path": "/1"}),
                json!({"op": "remove", "path": "/1"}),
                json!({"op": "add", "path": "/1/v", "value": 1}),
            ]
        );
    }

    /// Elements changed in two places: no single run explains it, so the
    /// array is replaced whole (still correct, just larger).
    #[test]
    fn unrelated_arrays_are_replaced_whole() {
        assert_eq!(
            ops(json!({"x": ["a", "b"]}), json!({"x": ["c", "b", "d"]})),
            vec![json!({"op": "replace", "path": "/x", "value": ["c", "b", "d"]})]
        );
    }
}
