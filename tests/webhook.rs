//! Tests for `pinproxy webhook`: AdmissionReview in, JSONPatch out, and the
//! patched Pod equals what `pinproxy inject` makes of the same Pod.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pinproxy::k8s::inject::{inject_stream, InjectOptions};
use pinproxy::k8s::webhook::{review, serve, CertReloader, Mode, Reply};
use serde_json::{json, Value as Json};

fn opts() -> InjectOptions {
    InjectOptions {
        image: "ghcr.io/pinproxy/pinproxy:test".into(),
        ..InjectOptions::default()
    }
}

fn admission_review(pod: &Json) -> Json {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn response(reply: &Reply) -> &Json {
    &reply.body["response"]
}

/// Apply the reply's patch to `pod`.
fn patched(pod: &Json, reply: &Reply) -> Json {
    let r = response(reply);
    assert_eq!(r["allowed"], json!(true), "{r}");
    assert_eq!(r["patchType"], json!("JSONPatch"), "{r}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &patch).expect("patch applies");
    doc
}

/// The options with transparent mode and its lock on.
fn transparent_opts() -> InjectOptions {
    let mut o = opts();
    o.transparent = true;
    o.redirect.lock = true;
    o
}

/// `pod` as the webhook's CREATE review under `o` patches it.
fn inject_reviewed(pod: &Json, o: &InjectOptions) -> Json {
    let reply = review(
        admission_review(pod).to_string().as_bytes(),
        Mode::OptOut,
        o,
    );
    patched(pod, &reply)
}

/// The Pods a controller would create from each workload fixture, as YAML.
fn fixture_pods() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject");
    let mut pods = Vec::new();
    for case in [
        "deployment",
        "statefulset",
        "daemonset",
        "replicaset",
        "job",
        "cronjob",
        "pod",
    ] {
        // The API server sends JSON, where a file mode is already a number.
        let text = std::fs::read_to_string(dir.join(format!("{case}.in.yaml")))
            .unwrap()
            .replace("defaultMode: 0644", "defaultMode: 420");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let template = match case {
            "pod" => doc.clone(),
            "cronjob" => doc["spec"]["jobTemplate"]["spec"]["template"].clone(),
            _ => doc["spec"]["template"].clone(),
        };
        let mut metadata = template
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| serde_yaml::from_str("{}").unwrap());
        metadata["generateName"] = serde_yaml::Value::from(format!("{case}-"));
        let pod: serde_yaml::Value = serde_yaml::from_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {}",
            serde_json::to_string(&metadata).unwrap(),
            serde_json::to_string(&template["spec"]).unwrap(),
        ))
        .unwrap();
        pods.push((case.to_string(), serde_yaml::to_string(&pod).unwrap()));
    }
    pods
}

fn yaml_to_json(text: &str) -> Json {
    let v: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    serde_json::to_value(v).unwrap()
}

/// The k8s room's provider (webhook server, `status` client) is a copy of
/// the proxy's, kept apart by the room map: both offer the same key
/// exchange groups in the same order (the proxy's list is pinned by
/// `pinproxy-tls`'s own tests: X25519, P-256, P-384).
#[test]
fn the_webhook_offers_the_proxys_key_exchange_groups() {
    let names = |p: &rustls::crypto::CryptoProvider| -> Vec<rustls::NamedGroup> {
        p.kx_groups.iter().map(|g| g.name()).collect()
    };
    assert_eq!(
        names(&pinproxy::k8s::provider()),
        names(&pinproxy::tls::provider())
    );
    assert_eq!(
        names(&pinproxy::k8s::provider()).first(),
        Some(&rustls::NamedGroup::X25519)
    );
}

#[test]
fn patched_pod_equals_inject_output() {
    for (case, pod_yaml) in fixture_pods() {
        let pod = yaml_to_json(&pod_yaml);
        let reply = review(
            admission_review(&pod).to_string().as_bytes(),
            Mode::OptOut,
            &opts(),
        );
        assert_eq!(reply.status, 200, "{case}");
        let expected = yaml_to_json(&inject_stream(&pod_yaml, &opts()).unwrap());
        assert_eq!(patched(&pod, &reply), expected, "{case}");
    }
}

/// The review honours the label and, as a deprecated alias, the
/// annotation; the chart's `objectSelector` (below) decides which pods
/// reach it at all.
#[test]
fn opt_in_needs_the_annotation_or_label() {
    let (_, pod_yaml) = fixture_pods().remove(0);
    let mut pod = yaml_to_json(&pod_yaml);
    let reply = review(
        admission_review(&pod).to_string().as_bytes(),
        Mode::OptIn,
        &opts(),
    );
    assert_eq!(response(&reply)["allowed"], json!(true));
    assert!(
        response(&reply).get("patch").is_none(),
        "not opted in: no patch"
    );

    for field in ["annotations", "labels"] {
        let mut p = pod.clone();
        p["metadata"][field]["pinproxy.io/inject"] = json!("true");
        let reply = review(
            admission_review(&p).to_string().as_bytes(),
            Mode::OptIn,
            &opts(),
        );
        let as_yaml: serde_yaml::Value = serde_json::from_value(p.clone()).unwrap();
        let expected = inject_stream(&serde_yaml::to_string(&as_yaml).unwrap(), &opts()).unwrap();
        assert_eq!(patched(&p, &reply), yaml_to_json(&expected), "{field}");
    }

    pod["metadata"]["annotations"]["pinproxy.io/inject"] = json!("false");
    let reply = review(
        admission_review(&pod).to_string().as_bytes(),
        Mode::OptOut,
        &opts(),
    );
    assert!(
        response(&reply).get("patch").is_none(),
        "opted out in a labelled namespace"
    );
}

/// Issue 20, item 3: the chart sends the opt-in webhook only pods that
/// carry the label the code reads (an annotation cannot be selected on),
/// so both webhooks can fail closed without standing in front of every pod.
#[test]
fn the_chart_selects_the_opt_in_label_and_fails_closed() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/pinproxy/values.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let webhook = &values["webhook"];
    let pods = &webhook["labelledPods"];
    assert_eq!(
        pods["objectSelector"]["matchLabels"][pinproxy::k8s::inject::INJECT_ANNOTATION],
        serde_yaml::Value::from("true"),
        "{pods:?}"
    );
    assert_eq!(pods["objectSelector"].as_mapping().unwrap().len(), 1);
    for key in ["labelledPods", "labelledNamespaces"] {
        assert_eq!(
            webhook[key]["failurePolicy"].as_str(),
            Some("Fail"),
            "{key}"
        );
    }
    assert!(webhook["replicas"].as_u64().unwrap() >= 2);
    assert!(webhook.get("annotatedPods").is_none());
    // Pods of labelled namespaces may opt out unless the operator says not.
    assert_eq!(
        webhook["labelledNamespaces"]["podOptOut"].as_bool(),
        Some(true)
    );
}

#[test]
fn an_injected_pod_gets_no_patch() {
    let (_, pod_yaml) = fixture_pods().remove(0);
    let injected = yaml_to_json(&inject_stream(&pod_yaml, &opts()).unwrap());
    let reply = review(
        admission_review(&injected).to_string().as_bytes(),
        Mode::OptOut,
        &opts(),
    );
    assert_eq!(response(&reply)["allowed"], json!(true));
    assert!(response(&reply).get("patch").is_none(), "{}", reply.body);
}

#[test]
fn malformed_reviews_get_clear_errors() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"containers": [{"name": "a"}]}});
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"".to_vec(), 400, "not JSON"),
        (b"{not json".to_vec(), 400, "not JSON"),
        (b"\xff\xfe\x00garbage".to_vec(), 400, "not JSON"),
        (b"[]".to_vec(), 400, "admission.k8s.io/v1"),
        (json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}})
            .to_string().into_bytes(), 400, "admission.k8s.io/v1"),
        (json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string().into_bytes(),
            400, "no request"),
        (json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"object": pod}})
            .to_string().into_bytes(), 400, "uid"),
        ({
            let mut r = admission_review(&pod);
            r["request"]["object"] = json!("a string");
            r.to_string().into_bytes()
        }, 200, "request.object"),
        ({
            let mut p = pod.clone();
            p["spec"]["volumes"] = json!("not a list");
            admission_review(&p).to_string().into_bytes()
        }, 200, "volumes"),
        ({
            let mut p = pod.clone();
            p["spec"]["containers"] = json!({"a": 1});
            admission_review(&p).to_string().into_bytes()
        }, 200, "containers"),
    ];
    for (body, status, needle) in cases {
        let reply = review(&body, Mode::OptOut, &opts());
        let r = response(&reply);
        assert_eq!(reply.status.as_u16(), status, "{needle}: {}", reply.body);
        assert_eq!(r["allowed"], json!(false), "{needle}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{needle}: message {msg:?}");
        if status == 200 {
            assert_eq!(r["uid"], json!("705ab4f5-6393-11e8-b7cc-42010a800002"));
        }
    }
}

#[test]
fn requests_outside_the_registration_pass_untouched() {
    let mut r = admission_review(&json!({"apiVersion": "v1", "kind": "Service", "spec": {}}));
    r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    let reply = review(r.to_string().as_bytes(), Mode::OptOut, &opts());
    assert_eq!(
        (reply.status.as_u16(), &response(&reply)["allowed"]),
        (200, &json!(true))
    );
    assert!(response(&reply).get("patch").is_none());

    // An UPDATE of a pod that was not injected: not ours to judge.
    let (_, pod_yaml) = fixture_pods().remove(0);
    let pod = yaml_to_json(&pod_yaml);
    let mut r = admission_review(&pod);
    r["request"]["operation"] = json!("UPDATE");
    r["request"]["oldObject"] = pod.clone();
    let reply = review(r.to_string().as_bytes(), Mode::OptOut, &opts());
    assert_eq!(response(&reply)["allowed"], json!(true), "{}", reply.body);
    assert!(response(&reply).get("patch").is_none());
    // An UPDATE without the object it replaces cannot be judged.
    r["request"].as_object_mut().unwrap().remove("oldObject");
    let reply = review(r.to_string().as_bytes(), Mode::OptOut, &opts());
    assert_eq!(response(&reply)["allowed"], json!(false), "{}", reply.body);
}

/// An UPDATE review of `old` becoming `new` (`sub`: the subresource).
fn update_review(old: &Json, new: &Json, sub: &str) -> Json {
    let mut r = admission_review(new);
    r["request"]["operation"] = json!("UPDATE");
    r["request"]["oldObject"] = old.clone();
    if !sub.is_empty() {
        r["request"]["subResource"] = json!(sub);
    }
    r
}

/// After creation the API server lets a pod's images change and ephemeral
/// containers join (an attack review swapped the sidecar's image for a
/// relay running as the proxy's UID, and ran `kubectl debug` as root with
/// SETUID in a transparent pod): the sidecar's and the redirect's images
/// stay; an ephemeral container in a transparent pod gets the UID lock or
/// is refused as an app container is at injection.
#[test]
fn an_injected_pod_keeps_its_sidecar_and_locks_ephemeral_containers() {
    let (o, pod) = (transparent_opts(), simple_pod(json!({})));
    let injected = inject_reviewed(&pod, &o);
    let judged = |old: &Json, new: &Json, sub: &str| {
        review(
            update_review(old, new, sub).to_string().as_bytes(),
            Mode::OptOut,
            &o,
        )
    };
    let judge = |old: &Json, new: &Json, sub: &str| response(&judged(old, new, sub)).clone();
    let set_image = |pod: &Json, list: &str, name: &str, image: &str| {
        let mut p = pod.clone();
        let c = p["spec"][list]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == json!(name))
            .unwrap();
        c["image"] = json!(image);
        p
    };
    for (list, name) in [
        ("initContainers", "pinproxy"),
        ("initContainers", "pinproxy-redirect"),
    ] {
        let swapped = set_image(&injected, list, name, "evil/relay:1");
        let r = judge(&injected, &swapped, "");
        assert_eq!(r["allowed"], json!(false), "{name}: {r}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(msg.contains(name) && msg.contains("evil/relay:1"), "{msg}");
    }
    // Its pinproxy.io/ labels and annotations stay (the review after this
    // one walked around the image rule by dropping the selector's label
    // first, and unlocked ephemeral containers by adding the override).
    let mut unlabelled = injected.clone();
    unlabelled["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pinproxy.io/injected")
        .expect("injection labels the pod");
    let mut overridden = injected.clone();
    overridden["metadata"]["annotations"]["pinproxy.io/allow-setuid"] = json!("true");
    for (changed, name) in [
        (&unlabelled, "pinproxy.io/injected"),
        (&overridden, "pinproxy.io/allow-setuid"),
    ] {
        // Through the status subresource too: it keeps metadata changes
        // (the review of the freeze dropped a label there).
        for sub in ["", "status"] {
            let r = judge(&injected, changed, sub);
            assert_eq!(r["allowed"], json!(false), "{name} {sub:?}: {r}");
            let msg = r["status"]["message"].as_str().unwrap();
            assert!(
                msg.contains(name) && msg.contains("recreate the pod"),
                "{msg}"
            );
        }
    }
    // The app's image, labels: allowed, untouched.
    let mut relabelled = set_image(&injected, "containers", "app", "a:2");
    relabelled["metadata"]["labels"]["team"] = json!("x");
    let r = judge(&injected, &relabelled, "");
    assert_eq!(r["allowed"], json!(true), "{r}");
    assert!(r.get("patch").is_none(), "{r}");

    // kubectl debug: a root container with the runtime's capabilities.
    let debug = |sc: Json| {
        let mut p = injected.clone();
        let mut c = json!({"name": "debugger", "image": "busybox", "stdin": true});
        if !sc.is_null() {
            c["securityContext"] = sc;
        }
        p["spec"]["ephemeralContainers"] = json!([c]);
        p
    };
    let added = debug(Json::Null);
    let locked = patched(&added, &judged(&injected, &added, "ephemeralcontainers"));
    assert_eq!(
        locked["spec"]["ephemeralContainers"][0]["securityContext"],
        json!({"capabilities": {"drop": ["SETUID", "SETGID", "NET_RAW"]}, "allowPrivilegeEscalation": false}),
        "{locked}"
    );
    // NET_RAW already dropped by the debug profile: not dropped twice.
    let own = debug(json!({"capabilities": {"drop": ["NET_RAW"]}}));
    let locked_own = patched(&own, &judged(&injected, &own, "ephemeralcontainers"));
    assert_eq!(
        locked_own["spec"]["ephemeralContainers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["NET_RAW", "SETUID", "SETGID"]),
        "{locked_own}"
    );
    for (sc, why) in [
        (json!({"privileged": true}), "privileged"),
        (json!({"capabilities": {"add": ["NET_ADMIN"]}}), "NET_ADMIN"),
        // An AF_PACKET socket writes frames no iptables rule sees.
        (json!({"capabilities": {"add": ["NET_RAW"]}}), "NET_RAW"),
        // `kubectl debug --profile=netadmin`.
        (
            json!({"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}),
            "NET_ADMIN",
        ),
        (json!({"runAsUser": 1337}), "1337"),
    ] {
        let r = judge(&injected, &debug(sc.clone()), "ephemeralcontainers");
        assert_eq!(r["allowed"], json!(false), "{sc}: {r}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("debugger")
                && msg.contains(why)
                && msg.contains("pinproxy.io/allow-setuid"),
            "{msg}"
        );
    }
    // One already there is not judged again.
    let r = judge(&locked, &locked, "ephemeralcontainers");
    assert!(r.get("patch").is_none(), "{r}");
    // Outside transparent mode ephemeral containers are the app's business.
    let plain = inject_reviewed(&pod, &opts());
    let mut plain_debug = plain.clone();
    plain_debug["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": "busybox", "securityContext": {"privileged": true}}]);
    let r = judge(&plain, &plain_debug, "ephemeralcontainers");
    assert_eq!(r["allowed"], json!(true), "{r}");
    assert!(r.get("patch").is_none(), "{r}");

    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/pinproxy/templates/webhook.yaml"
    ))
    .unwrap();
    assert!(
        chart.contains("operations: [\"UPDATE\"]")
            && chart
                .contains("resources: [\"pods\", \"pods/status\", \"pods/ephemeralcontainers\"]"),
        "{chart}"
    );
}

/// `--pod-opt-out refuse` (chart `webhook.labelledNamespaces.podOptOut:
/// false`): in a labelled namespace a pod that says `pinproxy.io/inject:
/// "false"`, by label or annotation, is denied, the message naming the
/// namespace rule and the way out; under `allow` (the default) it passes
/// untouched, unpinned, as before. A fourth attack review found that any
/// pod creator could opt out of a namespace the operator meant to pin.
#[test]
fn a_pod_opting_out_of_a_labelled_namespace_is_refused_only_under_refuse() {
    let pod = simple_pod(json!({}));
    let verdict = |mode: Mode, review_body: &Json| {
        let reply = review(review_body.to_string().as_bytes(), mode, &opts());
        (reply.status.as_u16(), response(&reply).clone())
    };
    for (field, value) in [
        ("labels", "false"),
        ("annotations", "false"),
        ("annotations", "disabled"),
    ] {
        let mut out = pod.clone();
        out["metadata"][field] = json!({"pinproxy.io/inject": value});
        let creation = admission_review(&out);
        let (_, r) = verdict(Mode::OptOut, &creation);
        assert_eq!(r["allowed"], json!(true), "allow, {field} {value}: {r}");
        assert!(r.get("patch").is_none(), "allow, {field} {value}: {r}");
        let (status, r) = verdict(Mode::Required, &creation);
        assert_eq!((status, &r["allowed"]), (200, &json!(false)), "{r}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("namespace \"shop\" is labelled pinproxy.io/inject=enabled")
                && msg.contains("--pod-opt-out refuse")
                && msg.contains("ask the cluster operator")
                && msg.contains("webhook.labelledNamespaces.podOptOut: true"),
            "{msg}"
        );
        // The switch is the labelled namespaces' rule: `/inject` (pods
        // that opt in one by one) is not concerned.
        let (_, r) = verdict(Mode::OptIn, &creation);
        assert_eq!(r["allowed"], json!(true), "{r}");
        assert!(r.get("patch").is_none(), "{r}");
    }
    // A pod that does not opt out is injected as it is under allow.
    let (_, required) = verdict(Mode::Required, &admission_review(&pod));
    let (_, optional) = verdict(Mode::OptOut, &admission_review(&pod));
    assert_eq!(required, optional);
    assert!(required["patch"].is_string(), "{required}");

    // After creation the opt-out decides nothing (injection happens at
    // creation), so the switch leaves UPDATEs to the freeze: an injected
    // pod cannot take it whatever the switch says, and a pod created
    // before its namespace was labelled, unpinned, may: it runs as it was
    // created either way, and is injected when it is recreated.
    let injected = inject_reviewed(&pod, &opts());
    let mut late_out = injected.clone();
    late_out["metadata"]["labels"]["pinproxy.io/inject"] = json!("false");
    let mut unpinned_out = pod.clone();
    unpinned_out["metadata"]["labels"] = json!({"pinproxy.io/inject": "false"});
    for mode in [Mode::OptIn, Mode::OptOut, Mode::Required] {
        let (_, r) = verdict(mode, &update_review(&injected, &late_out, ""));
        assert_eq!(r["allowed"], json!(false), "{mode:?}: {r}");
        let (_, r) = verdict(mode, &update_review(&pod, &unpinned_out, ""));
        assert_eq!(r["allowed"], json!(true), "{mode:?}: {r}");
    }
}

// --- over TLS ---------------------------------------------------------------

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        Self {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// (cert PEM, key PEM) for `name`.
    fn leaf(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

async fn call(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    server_name: &str,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, Json), String> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(pinproxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Json::Null)))
}

fn post(path: &str, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    http::Request::post(path)
        .header("host", "pinproxy-webhook.pinproxy-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn serves_reviews_over_tls_and_follows_cert_renewals() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let pki = Pki::new();
    let (cert, key) = pki.leaf("first.test");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();

    let certs = Arc::new(CertReloader::load(&cert_path, &key_path).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        certs.clone(),
        Arc::new(opts()),
        Duration::from_secs(3600), // reloads driven by hand below
        async move {
            let _ = stopped.await;
        },
    ));

    let get = http::Request::get("/healthz")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = call(addr, &pki.ca_pem, "first.test", get).await.unwrap();
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    let (_, pod_yaml) = fixture_pods().remove(0);
    let pod = yaml_to_json(&pod_yaml);
    let (status, body) = call(
        addr,
        &pki.ca_pem,
        "first.test",
        post(
            "/inject-namespace",
            admission_review(&pod).to_string().into_bytes(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let reply = Reply {
        status: http::StatusCode::OK,
        body,
    };
    assert_eq!(
        patched(&pod, &reply),
        yaml_to_json(&inject_stream(&pod_yaml, &opts()).unwrap())
    );

    let (status, body) = call(
        addr,
        &pki.ca_pem,
        "first.test",
        post("/inject", b"{oops".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(body["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON"));

    // A broken file never replaces a working pair.
    std::fs::write(&key_path, "not a key").unwrap();
    assert!(certs.reload_if_changed().is_err());
    let (status, _) = call(
        addr,
        &pki.ca_pem,
        "first.test",
        http::Request::get("/healthz")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    // Renewal: the next handshake presents the new certificate.
    let (cert, key) = pki.leaf("second.test");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    assert!(certs.reload_if_changed().unwrap());
    assert!(
        !certs.reload_if_changed().unwrap(),
        "unchanged files are not reloaded"
    );
    let get = || {
        http::Request::get("/healthz")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(
        call(addr, &pki.ca_pem, "second.test", get())
            .await
            .unwrap()
            .0,
        200
    );
    assert!(
        call(addr, &pki.ca_pem, "first.test", get()).await.is_err(),
        "old name no longer served"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn bad_certificate_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    assert!(
        CertReloader::load(&cert_path, &key_path).is_err(),
        "missing files"
    );
    let pki = Pki::new();
    let (cert, _) = pki.leaf("a.test");
    let (_, other_key) = pki.leaf("b.test");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, other_key).unwrap();
    let err = CertReloader::load(&cert_path, &key_path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
}

// --- refusing to guess (docs/reference.md)
// -------------------------------------------

fn simple_pod(spec_extra: Json) -> Json {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "agent-", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "agent:1"}]},
    });
    for (k, v) in spec_extra.as_object().unwrap() {
        pod["spec"][k] = v.clone();
    }
    pod
}

#[test]
fn a_host_network_pod_is_allowed_unmodified_with_a_warning() {
    let pod = simple_pod(json!({"hostNetwork": true}));
    let reply = review(
        admission_review(&pod).to_string().as_bytes(),
        Mode::OptOut,
        &opts(),
    );
    let r = response(&reply);
    assert_eq!((reply.status.as_u16(), &r["allowed"]), (200, &json!(true)));
    assert!(r.get("patch").is_none(), "{r}");
    let warnings = r["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{r}");
    let w = warnings[0].as_str().unwrap();
    assert!(w.starts_with("hostNetwork pod not injected"), "{w}");
}

#[test]
fn a_pod_that_names_another_proxy_is_denied_with_the_reason() {
    let pod = simple_pod(json!({"containers": [{"name": "app", "image": "a:1",
        "env": [{"name": "HTTPS_PROXY", "value": "http://corp-proxy:8080"}]}]}));
    let reply = review(
        admission_review(&pod).to_string().as_bytes(),
        Mode::OptOut,
        &opts(),
    );
    let r = response(&reply);
    assert_eq!((reply.status.as_u16(), &r["allowed"]), (200, &json!(false)));
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("container \"app\" already sets HTTPS_PROXY=http://corp-proxy:8080"),
        "{msg}"
    );
    let pod = simple_pod(json!({"containers": [{"name": "app", "image": "a:1",
        "ports": [{"containerPort": 9901}]}]}));
    let reply = review(
        admission_review(&pod).to_string().as_bytes(),
        Mode::OptOut,
        &opts(),
    );
    let msg = response(&reply)["status"]["message"].as_str().unwrap();
    assert!(msg.contains("uses port 9901"), "{msg}");
}

/// Issue 24 item 6 through the webhook: in transparent mode the app
/// container of a pod without a securityContext is patched to drop
/// SETUID/SETGID (and, review 8, NET_RAW) and privilege escalation; a
/// privileged one, or one adding NET_RAW, is denied, naming the override
/// annotation, and allowed unchanged with it.
#[test]
fn transparent_pods_lose_the_uid_switch_or_are_denied() {
    let (o, pod) = (transparent_opts(), simple_pod(json!({})));
    let doc = inject_reviewed(&pod, &o);
    let app = doc["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == json!("app"))
        .unwrap();
    assert_eq!(
        app["securityContext"],
        json!({"capabilities": {"drop": ["SETUID", "SETGID", "NET_RAW"]}, "allowPrivilegeEscalation": false}),
        "{doc}"
    );
    let raw = simple_pod(json!({"containers": [{"name": "app", "image": "a:1",
        "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}]}));
    let reply = review(
        admission_review(&raw).to_string().as_bytes(),
        Mode::OptOut,
        &o,
    );
    let r = response(&reply);
    assert_eq!(r["allowed"], json!(false), "{r}");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("NET_RAW") && msg.contains("pinproxy.io/allow-setuid"),
        "{msg}"
    );
    let privileged = simple_pod(json!({"containers": [{"name": "app", "image": "a:1",
        "securityContext": {"privileged": true}}]}));
    let reply = review(
        admission_review(&privileged).to_string().as_bytes(),
        Mode::OptOut,
        &o,
    );
    let r = response(&reply);
    assert_eq!(r["allowed"], json!(false), "{r}");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("privileged") && msg.contains("pinproxy.io/allow-setuid"),
        "{msg}"
    );
    let mut allowed = privileged.clone();
    allowed["metadata"]["annotations"] = json!({"pinproxy.io/allow-setuid": "true"});
    let reply = review(
        admission_review(&allowed).to_string().as_bytes(),
        Mode::OptOut,
        &o,
    );
    let doc = patched(&allowed, &reply);
    let app = &doc["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == json!("app"))
        .unwrap()
        .clone();
    assert_eq!(app["securityContext"], json!({"privileged": true}), "{doc}");
}

/// A container a later mutating webhook adds is locked when the API server
/// calls pinproxy again (the chart's `reinvocationPolicy: IfNeeded`): the
/// second review's patch gives it the drops and touches nothing else. An
/// attack review had such a container (root, default capabilities) become
/// the proxy's UID under `Never`.
#[test]
fn a_container_added_after_injection_is_locked_on_reinvocation() {
    let (o, pod) = (transparent_opts(), simple_pod(json!({})));
    let mut injected = inject_reviewed(&pod, &o);
    injected["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "agent", "image": "vault:1", "securityContext": {"runAsUser": 0}}));
    let reply = review(
        admission_review(&injected).to_string().as_bytes(),
        Mode::OptOut,
        &o,
    );
    let again = patched(&injected, &reply);
    let containers = again["spec"]["containers"].as_array().unwrap();
    let agent = containers
        .iter()
        .find(|c| c["name"] == json!("agent"))
        .unwrap();
    assert_eq!(
        agent["securityContext"],
        json!({"runAsUser": 0, "capabilities": {"drop": ["SETUID", "SETGID", "NET_RAW"]}, "allowPrivilegeEscalation": false}),
        "{again}"
    );
    // Only the agent (and the record of what injection added) changed.
    let mut expected = injected.clone();
    expected["spec"]["containers"] = again["spec"]["containers"].clone();
    expected["metadata"]["annotations"]["pinproxy.io/uid-lock"] =
        again["metadata"]["annotations"]["pinproxy.io/uid-lock"].clone();
    assert_eq!(again, expected);
    let unchanged: Vec<_> = containers
        .iter()
        .filter(|c| c["name"] != json!("agent"))
        .collect();
    let before: Vec<_> = injected["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] != json!("agent"))
        .collect();
    assert_eq!(unchanged, before);
    // Injection is a fixed point: a third call changes nothing.
    let reply = review(
        admission_review(&again).to_string().as_bytes(),
        Mode::OptOut,
        &o,
    );
    assert!(response(&reply).get("patch").is_none(), "{}", reply.body);

    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/pinproxy/templates/webhook.yaml"
    ))
    .unwrap();
    assert!(chart.contains("reinvocationPolicy: IfNeeded"), "{chart}");
    assert!(!chart.contains("reinvocationPolicy: Never"));
}

/// The options `pinproxy webhook` runs with when the chart passes no layout
/// flag (sidecar.nativeSidecar: true).
fn webhook_default_options() -> InjectOptions {
    use clap::Parser;
    let cli = pinproxy::cli::Cli::try_parse_from([
        "pinproxy",
        "webhook",
        "--tls-cert",
        "/c",
        "--tls-key",
        "/k",
        "--image",
        "ghcr.io/pinproxy/pinproxy:test",
    ])
    .unwrap();
    match cli.command {
        pinproxy::cli::Command::Webhook(args) => InjectOptions::from(&args.sidecar),
        _ => unreachable!(),
    }
}

#[test]
fn a_pod_with_a_regular_pinproxy_container_keeps_it() {
    // A pod of a workload written for Kubernetes < 1.29, in a namespace the
    // webhook injects: it must not become a native sidecar.
    let pod = simple_pod(json!({"containers": [
        {"name": "pinproxy", "image": "ghcr.io/pinproxy/pinproxy:0.0.9", "args": ["run", "--pins", "/etc/pinproxy/pins.yaml"]},
        {"name": "app", "image": "a:1"},
    ]}));
    let reply = review(
        admission_review(&pod).to_string().as_bytes(),
        Mode::OptOut,
        &webhook_default_options(),
    );
    let after = patched(&pod, &reply);
    assert!(after["spec"].get("initContainers").is_none(), "{after}");
    assert_eq!(after["spec"]["containers"][0]["name"], json!("pinproxy"));
    assert!(after["spec"]["containers"][0]
        .get("restartPolicy")
        .is_none());
    assert_eq!(
        after["spec"]["containers"][0]["image"],
        json!("ghcr.io/pinproxy/pinproxy:test")
    );
}

// --- the built binary's logs -------------------------------------------------

/// The top-level keys of a JSON object, duplicates kept (serde_json's
/// `Value` would keep only the last).
fn json_keys(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(line)
        .unwrap_or_else(|e| panic!("log line is not a JSON object ({e}): {line}"))
        .0
}

/// The built binary serving `pinproxy webhook` on a free port with `args`
/// and `env` added, logging JSON at info; returns once it answers.
struct Binary {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Binary {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let pki = Pki::new();
        let (cert, key) = pki.leaf("webhook.test");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["webhook", "--listen", &addr.to_string()])
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .args(["--image", "ghcr.io/pinproxy/pinproxy:test"])
            .args(args)
            .envs(env.iter().copied())
            .env("PINPROXY_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let me = Binary {
            child,
            addr,
            pki,
            _dir: dir,
        };
        let health = || {
            http::Request::get("/healthz")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        for _ in 0..100 {
            if call(addr, &me.pki.ca_pem, "webhook.test", health())
                .await
                .is_ok()
            {
                return me;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the webhook never answered on {addr}");
    }

    /// POST `body` to `path`: (HTTP status, the AdmissionReview's response).
    async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Json) {
        let (status, doc) = call(
            self.addr,
            &self.pki.ca_pem,
            "webhook.test",
            post(path, body),
        )
        .await
        .unwrap();
        (status, doc["response"].clone())
    }

    /// Stops the binary: what it logged on stderr.
    async fn stop(mut self) -> String {
        self.child.start_kill().unwrap();
        let out = self.child.wait_with_output().await.unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[tokio::test]
async fn the_binary_logs_injections_and_refusals_as_json_without_duplicate_keys() {
    let binary = Binary::start(&[], &[]).await;
    let mut pod = simple_pod(json!({}));
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "agent-5d4f", "uid": "1", "controller": true}]);
    for body in [
        admission_review(&pod).to_string().into_bytes(),
        admission_review(&simple_pod(json!({"hostNetwork": true})))
            .to_string()
            .into_bytes(),
        b"{oops".to_vec(),
    ] {
        binary.post("/inject-namespace", body).await;
    }
    let logs = binary.stop().await;
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 4, "{logs}");
    for line in &lines {
        let keys = json_keys(line);
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "duplicate key in {line}");
    }
    let find = |message: &str| -> Json {
        lines
            .iter()
            .map(|l| serde_json::from_str::<Json>(l).unwrap())
            .find(|v| v["message"] == json!(message))
            .unwrap_or_else(|| panic!("no {message:?} line in {logs}"))
    };
    let injected = find("pod injected");
    assert_eq!(injected["level"], json!("INFO"));
    assert_eq!(injected["namespace"], json!("shop"));
    assert_eq!(injected["pod"], json!("agent-"));
    assert_eq!(injected["owner_kind"], json!("ReplicaSet"));
    let added = injected["added"].as_str().unwrap();
    assert!(
        added.contains("pinproxy as a native sidecar")
            && added.contains("pinproxy-pins, pinproxy-ca")
            && added.contains("in app"),
        "{added}"
    );
    let skipped = find("pod allowed without the sidecar");
    assert!(skipped["warning"].as_str().unwrap().contains("hostNetwork"));
    let refused = find("admission review refused");
    assert!(
        refused["error"].as_str().unwrap().contains("not JSON"),
        "{refused}"
    );
}

/// The switch as the chart sets it (`--pod-opt-out refuse`) and by its
/// environment variable, through the built binary: `/inject-namespace`
/// refuses an opted-out pod, `/inject` does not judge it; without the
/// switch it passes.
#[tokio::test]
async fn the_binary_refuses_opt_outs_in_labelled_namespaces_when_told_to() {
    use clap::Parser;
    let parse = |extra: &[&str]| {
        let mut argv = vec!["pinproxy", "webhook", "--tls-cert", "/c", "--tls-key", "/k"];
        argv.extend_from_slice(extra);
        pinproxy::cli::Cli::try_parse_from(argv).map(|cli| match cli.command {
            pinproxy::cli::Command::Webhook(args) => args.pod_opt_out,
            _ => unreachable!(),
        })
    };
    use pinproxy::k8s::webhook::PodOptOut;
    assert_eq!(parse(&[]).unwrap(), PodOptOut::Allow);
    assert_eq!(
        parse(&["--pod-opt-out", "refuse"]).unwrap(),
        PodOptOut::Refuse
    );
    assert_eq!(parse(&["--pod-opt-out=allow"]).unwrap(), PodOptOut::Allow);
    let err = parse(&["--pod-opt-out", "never"]).unwrap_err().to_string();
    assert!(err.contains("allow") && err.contains("refuse"), "{err}");

    let mut out = simple_pod(json!({}));
    out["metadata"]["labels"] = json!({"pinproxy.io/inject": "false"});
    let body = || admission_review(&out).to_string().into_bytes();
    for (args, env) in [
        (&["--pod-opt-out", "refuse"][..], &[][..]),
        (&[][..], &[("PINPROXY_WEBHOOK_POD_OPT_OUT", "refuse")][..]),
    ] {
        let binary = Binary::start(args, env).await;
        let (status, r) = binary.post("/inject-namespace", body()).await;
        assert_eq!((status, &r["allowed"]), (200, &json!(false)), "{r}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(msg.contains("namespace \"shop\""), "{msg}");
        let (_, r) = binary.post("/inject", body()).await;
        assert_eq!(r["allowed"], json!(true), "{r}");
        let (_, r) = binary
            .post(
                "/inject-namespace",
                admission_review(&simple_pod(json!({})))
                    .to_string()
                    .into_bytes(),
            )
            .await;
        assert!(r["patch"].is_string(), "{r}");
        let logs = binary.stop().await;
        assert!(
            logs.contains("pods in labelled namespaces may not opt out")
                && logs.contains("admission review refused"),
            "{logs}"
        );
    }
    let binary = Binary::start(&[], &[]).await;
    let (_, r) = binary.post("/inject-namespace", body()).await;
    assert_eq!(r["allowed"], json!(true), "{r}");
    assert!(r.get("patch").is_none(), "{r}");
    binary.stop().await;
}
