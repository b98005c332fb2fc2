//! `POST /validate`: refuses a pinset Secret/ConfigMap whose `pins.yaml`
//! is unsigned, badly signed or rolled back, before it lands.
//!
//! Only objects labelled `pinproxy.io/pinset: "true"`, or whose old
//! object was (an UPDATE removing the label), are judged (the chart's
//! `objectSelector` sends only those; anything else that arrives is
//! allowed). The decision is [`pinproxy_sign::admission::review_with_minimum`]:
//! the same keys and the same serial reader as the sidecars, with the old
//! object's verified serial as the floor, raised to `--pinset-min-serial`.
//! DELETE is not judged: without a minimum, DELETE then CREATE of an old
//! serial passes (a CREATE has no old object). The message comes back in
//! `response.status.message`, which `kubectl apply` prints as
//! `admission webhook "…" denied the request: pinproxy: …`.
//!
//! Pure: no I/O, never panics on input.

use std::sync::Arc;

use base64::Engine as _;
use http::StatusCode;
use pinproxy_sign::admission::{self, Admission, Object, PINS_KEY, SIG_KEY};
use pinproxy_sign::{BoxError, KeyRing, Serial};
use serde_json::{json, Value as Json};

use super::Reply;

/// The label that marks a pinset object.
pub const PINSET_LABEL: &str = "pinproxy.io/pinset";

/// Reads a pinset's `serial:` (the policy loader's reader, handed in by the
/// binary so this crate never depends on the policy room).
pub type SerialReader = Arc<dyn Fn(&[u8]) -> Result<u64, BoxError> + Send + Sync>;

/// The keys a pinset object must be signed with (`webhook --pinset-key`).
#[derive(Clone)]
pub struct Pinsets {
    keys: KeyRing,
    serial_of: SerialReader,
    /// `--pinset-min-serial`: a floor for every CREATE and UPDATE.
    minimum: Option<Serial>,
}

impl std::fmt::Debug for Pinsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinsets")
            .field("keys", &self.keys.ids())
            .field("minimum", &self.minimum)
            .finish_non_exhaustive()
    }
}

impl Pinsets {
    pub fn new(keys: KeyRing, serial_of: SerialReader) -> Self {
        Pinsets {
            keys,
            serial_of,
            minimum: None,
        }
    }

    /// Denies (`rollback`) a pinset object whose serial is below `minimum`.
    pub fn with_minimum(self, minimum: Option<Serial>) -> Self {
        Pinsets { minimum, ..self }
    }
}

/// Answers one AdmissionReview for `POST /validate`.
pub fn validate(body: &[u8], pinsets: Option<&Pinsets>) -> Reply {
    let doc: Json = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return refused("", &format!("malformed AdmissionReview: not JSON: {e}")),
    };
    if doc.get("apiVersion").and_then(Json::as_str) != Some("admission.k8s.io/v1")
        || doc.get("kind").and_then(Json::as_str) != Some("AdmissionReview")
    {
        return refused(
            "",
            "malformed AdmissionReview: expected apiVersion admission.k8s.io/v1, kind AdmissionReview",
        );
    }
    let Some(request) = doc.get("request").filter(|r| r.is_object()) else {
        return refused("", "malformed AdmissionReview: no request");
    };
    let uid = match request.get("uid").and_then(Json::as_str) {
        Some(u) if !u.is_empty() => u,
        _ => return refused("", "malformed AdmissionReview: request.uid missing"),
    };
    let operation = request.get("operation").and_then(Json::as_str);
    let object = request.get("object").filter(|o| o.is_object());
    let old_object = request.get("oldObject").filter(|o| o.is_object());
    // The API server matches the objectSelector against the old object
    // too: an UPDATE that drops the label from a pinset is judged like any
    // other, or dropping it would let a rollback or an unsigned pinset in.
    let Some(object) = object.filter(|o| {
        matches!(operation, Some("CREATE" | "UPDATE"))
            && (labelled(o) || old_object.is_some_and(labelled))
    }) else {
        // DELETE, CONNECT, or not a pinset: not ours to judge.
        return answer(uid, None);
    };
    let Some(pinsets) = pinsets else {
        return refused(
            uid,
            "pinproxy: this webhook has no --pinset-key: it cannot judge signed pinsets",
        );
    };
    let new = match Entries::of(object) {
        Ok(e) => e,
        Err(why) => return answer(uid, Some(("failure", why))),
    };
    // An old object that cannot be read gives no floor (as an unverified one).
    let old = old_object.and_then(|o| Entries::of(o).ok());
    let decision = admission::review_with_minimum(
        &pinsets.keys,
        &new.object(),
        old.as_ref().map(Entries::object).as_ref(),
        pinsets.minimum,
        |b: &[u8]| (pinsets.serial_of)(b),
    );
    let subject = Subject::of(request);
    match decision {
        Admission::Allow(accepted) => {
            tracing::info!(
                uid,
                kind = subject.kind,
                namespace = subject.namespace,
                name = subject.name,
                serial = accepted.serial().get(),
                key = %accepted.key(),
                sha256 = %accepted.sha256(),
                "signed pinset admitted"
            );
            answer(uid, None)
        }
        Admission::Deny(denial) => {
            tracing::warn!(
                uid,
                kind = subject.kind,
                namespace = subject.namespace,
                name = subject.name,
                result = denial.reason(),
                error = denial.message(),
                "pinset refused at admission"
            );
            answer(uid, Some((denial.reason(), denial.message().to_owned())))
        }
    }
}

fn labelled(object: &Json) -> bool {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(PINSET_LABEL))
        .and_then(Json::as_str)
        == Some("true")
}

/// `pins.yaml` and `pins.yaml.sig` of a Secret (`data`, base64; or
/// `stringData`) or a ConfigMap (`data`, text; or `binaryData`, base64).
struct Entries {
    pins: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
}

impl Entries {
    fn of(object: &Json) -> Result<Self, String> {
        let kind = object.get("kind").and_then(Json::as_str).unwrap_or("");
        let entry = |key: &str| -> Result<Option<Vec<u8>>, String> {
            let base64 = |map: &str| object.get(map).and_then(|d| d.get(key));
            let text = |map: &str| object.get(map).and_then(|d| d.get(key));
            let (encoded, plain) = if kind == "ConfigMap" {
                (base64("binaryData"), text("data"))
            } else {
                (base64("data"), text("stringData"))
            };
            if let Some(p) = plain {
                return p
                    .as_str()
                    .map(|s| Some(s.as_bytes().to_vec()))
                    .ok_or_else(|| format!("pinproxy: {key} is not a string"));
            }
            let Some(e) = encoded else { return Ok(None) };
            let s = e
                .as_str()
                .ok_or_else(|| format!("pinproxy: {key} is not a string"))?;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Some)
                .map_err(|err| format!("pinproxy: {key} is not base64: {err}"))
        };
        Ok(Entries {
            pins: entry(PINS_KEY)?,
            signature: entry(SIG_KEY)?,
        })
    }

    fn object(&self) -> Object<'_> {
        Object {
            pins: self.pins.as_deref(),
            signature: self.signature.as_deref(),
        }
    }
}

/// Who a review is about, for the logs.
struct Subject<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl<'a> Subject<'a> {
    fn of(request: &'a Json) -> Self {
        let s = |p: &str| request.pointer(p).and_then(Json::as_str).unwrap_or("");
        Subject {
            kind: s("/kind/kind"),
            namespace: s("/namespace"),
            name: s("/name"),
        }
    }
}

/// Allowed (`denied` is `None`), or denied with the reason and message.
fn answer(uid: &str, denied: Option<(&str, String)>) -> Reply {
    let response = match denied {
        None => json!({ "uid": uid, "allowed": true }),
        Some((reason, message)) => json!({
            "uid": uid,
            "allowed": false,
            "status": {
                "code": 403,
                "reason": "Forbidden",
                "message": message,
                "details": { "causes": [ { "reason": reason, "field": format!("data[{PINS_KEY}]") } ] },
            },
        }),
    };
    Reply {
        status: StatusCode::OK,
        body: json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response }),
    }
}

/// A review that cannot be read: without a uid the call itself fails.
fn refused(uid: &str, message: &str) -> Reply {
    let status = if uid.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    super::answer::error_reply(status, uid, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinproxy_sign::{Algorithm, SigningKey};

    /// The tests' serial reader: the binary hands in the policy loader's.
    fn pinsets(key: &SigningKey) -> Pinsets {
        let keys = KeyRing::new([key.public_key().clone()]).unwrap();
        Pinsets::new(
            keys,
            Arc::new(|b: &[u8]| {
                let text = std::str::from_utf8(b)?;
                let n = text
                    .lines()
                    .find_map(|l| l.strip_prefix("serial: "))
                    .ok_or("no serial")?;
                Ok(n.trim().parse::<u64>()?)
            }),
        )
    }

    fn review(object: Json, old: Json) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "u1", "operation": "UPDATE", "object": object, "oldObject": old}})
        .to_string()
        .into_bytes()
    }

    fn labelled(kind: &str, maps: Json) -> Json {
        let mut o = json!({"kind": kind, "metadata": {"labels": {PINSET_LABEL: "true"}}});
        for (k, v) in maps.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    }

    fn allowed(reply: &Reply) -> bool {
        reply.body["response"]["allowed"] == json!(true)
    }

    #[test]
    fn every_place_kubernetes_keeps_the_entries_is_read() {
        let (key, _) = SigningKey::generate(Algorithm::Ed25519).unwrap();
        let p = pinsets(&key);
        let pins = "version: 1\nserial: 2\nhosts: {}\n";
        let sig = key.sign(pins.as_bytes()).unwrap().to_base64();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for object in [
            labelled(
                "Secret",
                json!({"data": {PINS_KEY: b64(pins), SIG_KEY: b64(&sig)}}),
            ),
            labelled(
                "Secret",
                json!({"stringData": {PINS_KEY: pins, SIG_KEY: sig}}),
            ),
            labelled("ConfigMap", json!({"data": {PINS_KEY: pins, SIG_KEY: sig}})),
            labelled(
                "ConfigMap",
                json!({"data": {PINS_KEY: pins}, "binaryData": {SIG_KEY: b64(&sig)}}),
            ),
        ] {
            let reply = validate(&review(object.clone(), Json::Null), Some(&p));
            assert!(allowed(&reply), "{object}: {}", reply.body);
        }
        // Only signatures are refused, never the reading of an entry.
        let tampered = labelled(
            "ConfigMap",
            json!({"data": {PINS_KEY: pins.replace('2', "3"), SIG_KEY: sig}}),
        );
        let reply = validate(&review(tampered, Json::Null), Some(&p));
        assert!(!allowed(&reply));
    }

    #[test]
    fn an_update_dropping_the_label_is_judged_too() {
        let (key, _) = SigningKey::generate(Algorithm::EcdsaP256).unwrap();
        let p = pinsets(&key);
        let v1 = "version: 1\nserial: 1\nhosts: {}\n";
        let v2 = "version: 1\nserial: 2\nhosts: {}\n";
        let signed = |pins: &str| {
            let sig = key.sign(pins.as_bytes()).unwrap().to_base64();
            json!({"stringData": {PINS_KEY: pins, SIG_KEY: sig}})
        };
        let unlabelled = |maps: Json| {
            let mut o = labelled("Secret", maps);
            o["metadata"]["labels"] = json!({"app": "x"});
            o
        };
        let reason =
            |r: &Reply| r.body["response"]["status"]["details"]["causes"][0]["reason"].clone();
        let old = labelled("Secret", signed(v2));
        // The label dropped in the same update as a replayed serial 1.
        let r = validate(&review(unlabelled(signed(v1)), old.clone()), Some(&p));
        assert!(!allowed(&r), "{}", r.body);
        assert_eq!(reason(&r), json!("rollback"), "{}", r.body);
        // ... or as an unsigned pinset.
        let r = validate(
            &review(
                unlabelled(json!({"stringData": {PINS_KEY: v1}})),
                old.clone(),
            ),
            Some(&p),
        );
        assert_eq!(reason(&r), json!("bad-signature"), "{}", r.body);
        // Dropping the label from the signed pinset in force is allowed.
        let r = validate(&review(unlabelled(signed(v2)), old), Some(&p));
        assert!(allowed(&r), "{}", r.body);
        // Neither object labelled: not a pinset, not judged.
        let r = validate(
            &review(
                unlabelled(json!({"stringData": {PINS_KEY: v1}})),
                unlabelled(json!({})),
            ),
            Some(&p),
        );
        assert!(allowed(&r), "{}", r.body);
    }

    /// A CREATE has no old object: DELETE then CREATE of an old serial
    /// passed. The minimum serial denies it.
    #[test]
    fn a_create_below_the_minimum_serial_is_denied() {
        let (key, _) = SigningKey::generate(Algorithm::EcdsaP256).unwrap();
        let min = Some(Serial::new(3).unwrap());
        let p = pinsets(&key).with_minimum(min);
        let signed = |serial: u64| {
            let pins = format!("version: 1\nserial: {serial}\nhosts: {{}}\n");
            let sig = key.sign(pins.as_bytes()).unwrap().to_base64();
            labelled(
                "Secret",
                json!({"stringData": {PINS_KEY: pins, SIG_KEY: sig}}),
            )
        };
        let create = |object: Json| {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "request": {"uid": "u1", "operation": "CREATE", "object": object}})
            .to_string()
            .into_bytes()
        };
        let r = validate(&create(signed(1)), Some(&p));
        assert!(!allowed(&r), "{}", r.body);
        let status = &r.body["response"]["status"];
        assert_eq!(status["details"]["causes"][0]["reason"], json!("rollback"));
        assert!(
            status["message"]
                .as_str()
                .unwrap_or("")
                .contains("lower than the minimum serial (3, --pinset-min-serial)"),
            "{}",
            r.body
        );
        // An UPDATE from an old object that is itself below the minimum.
        let r = validate(&review(signed(2), signed(1)), Some(&p));
        assert!(!allowed(&r), "{}", r.body);
        for n in [3, 4] {
            let r = validate(&create(signed(n)), Some(&p));
            assert!(allowed(&r), "serial {n}: {}", r.body);
        }
        // Without the minimum the CREATE of serial 1 passes (the gap).
        assert!(allowed(&validate(&create(signed(1)), Some(&pinsets(&key)))));
    }

    #[test]
    fn what_cannot_be_judged_is_denied_or_refused_with_a_reason() {
        let (key, _) = SigningKey::generate(Algorithm::EcdsaP256).unwrap();
        let p = pinsets(&key);
        let message = |r: &Reply| {
            r.body["response"]["status"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        // No pins.yaml in a labelled object.
        let r = validate(
            &review(labelled("Secret", json!({"data": {}})), Json::Null),
            Some(&p),
        );
        assert!(
            !allowed(&r) && message(&r).contains("no pins.yaml"),
            "{}",
            r.body
        );
        // Not base64 in a Secret.
        let r = validate(
            &review(
                labelled("Secret", json!({"data": {PINS_KEY: "%%"}})),
                Json::Null,
            ),
            Some(&p),
        );
        assert!(
            !allowed(&r) && message(&r).contains("not base64"),
            "{}",
            r.body
        );
        // A webhook without keys cannot judge a labelled object.
        let r = validate(
            &review(labelled("Secret", json!({"data": {}})), Json::Null),
            None,
        );
        assert!(
            !allowed(&r) && message(&r).contains("--pinset-key"),
            "{}",
            r.body
        );
        // Not ours: an unlabelled object passes, keys or not.
        let plain =
            json!({"kind": "Secret", "metadata": {"labels": {PINSET_LABEL: "false"}}, "data": {}});
        assert!(allowed(&validate(&review(plain, Json::Null), None)));
        // Unreadable reviews fail the call.
        assert_eq!(validate(b"{", Some(&p)).status, StatusCode::BAD_REQUEST);
        assert_eq!(
            validate(b"{\"apiVersion\":\"x\"}", Some(&p)).status,
            StatusCode::BAD_REQUEST
        );
    }
}
