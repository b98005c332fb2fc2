//! `pinproxy webhook --pinset-key`: the built binary over TLS, called by
//! curl as the API server would call `POST /validate`; and `POST /inject`
//! with `--pinset-key-inline`, the key the sidecar gets in its env.

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;
use pinproxy::sign::Algorithm;
use serde_json::{json, Value as Json};

use crate::support::*;
use crate::{Key, World};

const NAME: &str = "pinproxy-webhook.pinproxy-system.svc";
/// The webhook's name in the chart's ValidatingWebhookConfiguration.
const WEBHOOK: &str = "pinsets.validate.pinproxy.io";

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// A Secret (`data`, base64) or ConfigMap (`data`, text) with the entries.
fn object(kind: &str, labelled: bool, entries: &[(&str, &str)]) -> Json {
    let labels = if labelled {
        json!({"pinproxy.io/pinset": "true"})
    } else {
        json!({})
    };
    let data: serde_json::Map<String, Json> = entries
        .iter()
        .map(|(k, v)| {
            let v = if kind == "Secret" {
                base64::engine::general_purpose::STANDARD.encode(v)
            } else {
                v.to_string()
            };
            (k.to_string(), Json::String(v))
        })
        .collect();
    json!({"apiVersion": "v1", "kind": kind,
           "metadata": {"name": "pinproxy-pins", "namespace": "shop", "labels": labels},
           "data": data})
}

fn review(operation: &str, new: &Json, old: Option<&Json>) -> Json {
    let kind = new["kind"].as_str().unwrap();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "d2b5c1e0-6f1a-4c2b-9a57-3c1f0e2b7a11",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "namespace": "shop",
            "name": "pinproxy-pins",
            "operation": operation,
            "userInfo": {"username": "mallory"},
            "object": new,
            "oldObject": old,
            "dryRun": false
        }
    })
}

/// POSTs `body` to `/validate` with curl, verifying the webhook's
/// certificate against `ca`.
fn post(dir: &Path, addr: SocketAddr, body: &Json) -> Json {
    post_to(dir, addr, "/validate", body)
}

/// POSTs `body` to `path` as [`post`] does.
fn post_to(dir: &Path, addr: SocketAddr, path: &str, body: &Json) -> Json {
    let file = dir.join("review.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(["--resolve", &format!("{NAME}:{}:127.0.0.1", addr.port())])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("https://{NAME}:{}{path}", addr.port()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reply["response"]["uid"],
        json!("d2b5c1e0-6f1a-4c2b-9a57-3c1f0e2b7a11")
    );
    reply["response"].clone()
}

/// What `kubectl apply` prints for a denial: the API server wraps the
/// webhook's `status.message` as `admission webhook "NAME" denied the
/// request: MESSAGE` in a 403 Forbidden.
fn kubectl(response: &Json) -> String {
    assert_eq!(response["allowed"], json!(false), "{response}");
    assert_eq!(response["status"]["code"], json!(403));
    format!(
        "Error from server (Forbidden): error when applying patch: admission webhook \"{WEBHOOK}\" \
         denied the request: {}",
        response["status"]["message"].as_str().unwrap()
    )
}

fn cause(response: &Json) -> &str {
    response["status"]["details"]["causes"][0]["reason"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn the_webhook_refuses_unsigned_badly_signed_and_rolled_back_pinsets() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new().await;
    let a = Key::new(dir.path(), "a", Algorithm::EcdsaP256);
    let attacker = Key::new(dir.path(), "x", Algorithm::EcdsaP256);

    // The serving certificate for the webhook's Service name.
    let tls = Pki::new(&[NAME]);
    std::fs::write(dir.path().join("ca.pem"), tls.root.pem()).unwrap();
    let chain = pem("CERTIFICATE", &tls.leaf.cert) + &tls.int.pem();
    std::fs::write(dir.path().join("tls.crt"), chain).unwrap();
    std::fs::write(dir.path().join("tls.key"), tls.leaf.key.serialize_pem()).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _webhook = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["webhook", "--listen", &addr.to_string(), "--tls-cert"])
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--pinset-key")
        .arg(&a.public)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(addr).await;

    let (v1, v2) = (w.good(1), w.good(2));
    let signed1 = object(
        "Secret",
        true,
        &[("pins.yaml", &v1), ("pins.yaml.sig", &a.sign(&v1))],
    );
    let signed2 = object(
        "Secret",
        true,
        &[("pins.yaml", &v2), ("pins.yaml.sig", &a.sign(&v2))],
    );

    // An unsigned update of the pins Secret: refused, saying what to do.
    let unsigned = object("Secret", true, &[("pins.yaml", &v2)]);
    let r = post(
        dir.path(),
        addr,
        &review("UPDATE", &unsigned, Some(&signed1)),
    );
    let printed = kubectl(&r);
    eprintln!("{printed}");
    assert!(
        printed.ends_with(
            "denied the request: pinproxy: pins.yaml is not signed: the object has no pins.yaml.sig entry \
             (cosign sign-blob --key cosign.key --tlog-upload=false pins.yaml > pins.yaml.sig, or pinproxy sign --key KEY pins.yaml)"
        ),
        "{printed}"
    );
    assert_eq!(cause(&r), "bad-signature");

    // Signed by a key the webhook does not trust (a ConfigMap this time).
    let forged = object(
        "ConfigMap",
        true,
        &[("pins.yaml", &v2), ("pins.yaml.sig", &attacker.sign(&v2))],
    );
    let r = post(dir.path(), addr, &review("CREATE", &forged, None));
    let printed = kubectl(&r);
    eprintln!("{printed}");
    assert!(
        printed.contains("is not signed by a trusted key") && printed.contains(&a.id),
        "{printed}"
    );
    assert_eq!(cause(&r), "bad-signature");

    // An old signed pinset replacing a newer one.
    let r = post(
        dir.path(),
        addr,
        &review("UPDATE", &signed1, Some(&signed2)),
    );
    let printed = kubectl(&r);
    eprintln!("{printed}");
    assert_eq!(cause(&r), "rollback");
    assert!(
        printed.contains('1') && printed.contains('2'),
        "names both serials: {printed}"
    );

    // A proper update, an unlabelled object, a delete: allowed.
    for (op, new, old) in [
        ("UPDATE", signed2.clone(), Some(signed1.clone())),
        (
            "CREATE",
            object("Secret", false, &[("pins.yaml", &v2)]),
            None,
        ),
    ] {
        let r = post(dir.path(), addr, &review(op, &new, old.as_ref()));
        assert_eq!(r["allowed"], json!(true), "{op}: {r}");
    }
    let mut delete = review("DELETE", &signed1, Some(&signed1));
    delete["request"]["object"] = Json::Null;
    assert_eq!(post(dir.path(), addr, &delete)["allowed"], json!(true));
}

/// DELETE then CREATE of an old serial: a CREATE has no old object, so the
/// old object's serial is no floor. `--pinset-min-serial` is.
#[tokio::test]
async fn delete_then_create_below_the_minimum_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new().await;
    let a = Key::new(dir.path(), "a", Algorithm::EcdsaP256);
    let tls = Pki::new(&[NAME]);
    std::fs::write(dir.path().join("ca.pem"), tls.root.pem()).unwrap();
    let chain = pem("CERTIFICATE", &tls.leaf.cert) + &tls.int.pem();
    std::fs::write(dir.path().join("tls.crt"), chain).unwrap();
    std::fs::write(dir.path().join("tls.key"), tls.leaf.key.serialize_pem()).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _webhook = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["webhook", "--listen", &addr.to_string(), "--tls-cert"])
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--pinset-key")
        .arg(&a.public)
        .args(["--pinset-key-from", "configmap/pinproxy-pinset-key"])
        .args(["--pinset-min-serial", "3"])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(addr).await;

    let signed = |n: u64| {
        let v = w.good(n);
        object(
            "Secret",
            true,
            &[("pins.yaml", &v), ("pins.yaml.sig", &a.sign(&v))],
        )
    };
    let mut delete = review("DELETE", &signed(3), Some(&signed(3)));
    delete["request"]["object"] = Json::Null;
    assert_eq!(post(dir.path(), addr, &delete)["allowed"], json!(true));
    let r = post(dir.path(), addr, &review("CREATE", &signed(1), None));
    let printed = kubectl(&r);
    assert_eq!(cause(&r), "rollback", "{r}");
    assert!(
        printed.ends_with(
            "pinproxy: serial 1 is lower than the minimum serial (3, --pinset-min-serial): \
             a rollback is refused"
        ),
        "{printed}"
    );
    let r = post(dir.path(), addr, &review("CREATE", &signed(3), None));
    assert_eq!(r["allowed"], json!(true), "{r}");
}

/// The chart's way: the same key file for `/validate` (`--pinset-key`) and
/// for the sidecars (`--pinset-key-inline`). The patch gives the sidecar the
/// key in its env and mounts no key volume; the patched pod's sidecar env
/// parses back to the same key.
#[tokio::test]
async fn the_webhook_gives_the_sidecar_the_key_inline() {
    let dir = tempfile::tempdir().unwrap();
    let a = Key::new(dir.path(), "a", Algorithm::EcdsaP256);
    let tls = Pki::new(&[NAME]);
    std::fs::write(dir.path().join("ca.pem"), tls.root.pem()).unwrap();
    let chain = pem("CERTIFICATE", &tls.leaf.cert) + &tls.int.pem();
    std::fs::write(dir.path().join("tls.crt"), chain).unwrap();
    std::fs::write(dir.path().join("tls.key"), tls.leaf.key.serialize_pem()).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _webhook = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(["webhook", "--listen", &addr.to_string(), "--tls-cert"])
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--pinset-key")
        .arg(&a.public)
        .arg("--pinset-key-inline")
        .arg(&a.public)
        .args(["--pinset-min-serial", "3"])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(addr).await;

    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop",
                     "labels": {"app": "web", "pinproxy.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "d2b5c1e0-6f1a-4c2b-9a57-3c1f0e2b7a11",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:shop:deployer"},
            "object": pod,
            "dryRun": false
        }
    });
    let r = post_to(dir.path(), addr, "/inject", &body);
    assert_eq!(r["allowed"], json!(true), "{r}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &patch).expect("patch applies");
    let spec = &doc["spec"];
    let side = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == json!("pinproxy"))
        .unwrap();
    let pem_env = side["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == json!("PINPROXY_PINSET_KEY_PEM"))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no PINPROXY_PINSET_KEY_PEM: {side}"));
    assert_eq!(pem_env, std::fs::read_to_string(&a.public).unwrap());
    let args: Vec<&str> = side["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(!args.contains(&"--pinset-key"), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == ["--pinset-min-serial", "3"]),
        "{args:?}"
    );
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        !volumes.contains(&"pinproxy-pinset-key") && volumes.contains(&"pinproxy-state"),
        "{volumes:?}"
    );
}
