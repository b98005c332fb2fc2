//! Client certificates presented to servers that require them, on every
//! path, in every key format, across kubelet rotations.

use super::*;

// === client certificates ===

const BARE: &str = "bare.mtls.test";

/// A server that requires a client certificate from the workload CA; the
/// proxy presents one for PAY and none for BARE (same server).
#[tokio::test]
async fn the_server_sees_the_configured_identity_on_every_path_and_refuses_without() {
    let server = server_pki(&[PAY, BARE]);
    let workload_ca = Authority::root("Workload CA", 0x0202);
    let id = identity(&workload_ca, "api");
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let yaml = format!(
        "version: 1\nhosts:\n{}{}",
        entry(PAY, &[server.int.pin()], up.addr, &client_cert("id")),
        entry(BARE, &[server.int.pin()], up.addr, ""),
    );
    let p = TestProxy::builder()
        .pinset(&yaml)
        .file("id/tls.crt", &id.cert_pem)
        .file("id/tls.key", &id.key_pem)
        .file("ca.pem", server.root_pem())
        .run()
        .await;

    let want = Some(id.pin.to_string());
    let s = both(&p, PAY).await;
    assert_eq!(
        (s.status, s.client_pin.clone()),
        (200, want.clone()),
        "{s:?}"
    );
    assert!(s.body.contains("upstream=mtls"), "{s:?}");

    // h2 inside the tunnel and the WebSocket paths present it too.
    let (h, mut ws) = websocket(&p, PAY).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    assert_eq!(header(&h, "x-client-pin"), want.as_deref(), "{h}");
    ws.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    let (h, _ws) = websocket_forward(&p, PAY).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    assert_eq!(header(&h, "x-client-pin"), want.as_deref(), "{h}");

    // Without a client certificate the server refuses: a readable 502.
    let refused_before = up.refused.load(Ordering::SeqCst);
    let s = both(&p, BARE).await;
    assert_eq!(
        (s.status, s.error.as_deref(), s.client_pin.as_deref()),
        (502, Some("upstream-tls-error"), None),
        "{s:?}"
    );
    assert!(
        s.body.contains("CertificateRequired") && s.body.contains("client_cert"),
        "{s:?}"
    );
    assert!(up.refused.load(Ordering::SeqCst) > refused_before);
    assert!(p.tls_failures(BARE, "alert-received") >= 2);
    assert_eq!(p.requests(BARE, "upstream-tls-error"), 2);
    // Two requests and two WebSockets.
    assert_eq!(p.requests(PAY, "ok"), 4);

    // The expiry metric; the key nowhere in /pins.
    let expiry = p.metrics.client_cert_expiry.with_label_values(&[PAY]).get();
    let not_after = x509_not_after(&id.cert_pem);
    assert_eq!(expiry as i64, not_after);
    let pins_view = p.admin_get("/pins").await.body;
    assert!(pins_view.contains(&id.pin.to_string()), "{pins_view}");
    assert!(pins_view.contains("spiffe://example.org/ns/test/sa/api"));
    let key_body: String = id
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!pins_view.contains(&key_body[..32]), "the key is in /pins");
    let metrics = p.admin_get("/metrics").await.body;
    assert!(
        metrics.contains(&format!(
            "pinproxy_client_cert_expiry_timestamp_seconds{{host=\"{PAY}\"}} {not_after}"
        )),
        "{metrics}"
    );
}

fn x509_not_after(pem_text: &str) -> i64 {
    let der = CertificateDer::from_pem_slice(pem_text.as_bytes()).unwrap();
    pinproxy::tls::cert::CertInfo::from_der(der.as_ref())
        .unwrap()
        .not_after_unix
}

/// RSA and ECDSA keys as PKCS#8, PKCS#1 and SEC1 (openssl writes them as
/// operators will have them), each presented to the same strict server.
#[tokio::test]
async fn rsa_and_ecdsa_keys_in_pkcs8_pkcs1_and_sec1_are_all_presented() {
    let server = server_pki(&["keys.mtls.test"]);
    let workload_ca = Authority::root("Workload CA", 0x0303);
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa8.key",
    ]);
    openssl(&[
        "pkey",
        "-in",
        "rsa8.key",
        "-traditional",
        "-out",
        "rsa1.key",
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ec8.key",
    ]);
    openssl(&["pkey", "-in", "ec8.key", "-traditional", "-out", "ec1.key"]);
    // `ecparam -genkey` writes EC PARAMETERS before the SEC1 key.
    openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-out",
        "p384.key",
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "p384.key",
        "-out",
        "p384-8.key",
    ]);
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    let cases = [
        ("rsa8.key", "rsa8.key", "-----BEGIN PRIVATE KEY-----"),
        ("rsa1.key", "rsa8.key", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ec8.key", "ec8.key", "-----BEGIN PRIVATE KEY-----"),
        ("ec1.key", "ec8.key", "-----BEGIN EC PRIVATE KEY-----"),
        ("p384.key", "p384-8.key", "-----BEGIN EC PARAMETERS-----"),
    ];
    let mut yaml = String::from("version: 1\nhosts:\n");
    let mut want = Vec::new();
    for (i, (key_file, pkcs8, label)) in cases.iter().enumerate() {
        assert!(
            read(key_file).starts_with(label),
            "{key_file}: {}",
            read(key_file)
        );
        let key = KeyPair::from_pem(&read(pkcs8)).unwrap();
        let leaf = cert(
            &format!("workload-{i}"),
            &["spiffe://example.org/ns/keys/sa/w"],
            ExtendedKeyUsagePurpose::ClientAuth,
            100 + i as u64,
            &workload_ca,
            &key,
        );
        write(dir.path(), &format!("{i}.crt"), &pem(&leaf));
        let host = format!("k{i}.keys.mtls.test");
        yaml.push_str(&entry(
            &host,
            &[server.int.pin()],
            up.addr,
            &format!("    client_cert: {{cert: {i}.crt, key: {key_file}}}\n"),
        ));
        want.push((host, Pin::of_certificate(&leaf).unwrap()));
    }
    write(dir.path(), "ca.pem", &server.root_pem());
    let pins = write(dir.path(), "pins.yaml", &yaml);
    // The server's certificate names keys.mtls.test: accept it for all.
    let yaml = yaml.replace(
        "    trust: ca.pem\n",
        "    trust: ca.pem\n    names: [keys.mtls.test]\n",
    );
    std::fs::write(&pins, yaml).unwrap();
    let p = TestProxy::builder().dir(dir).pins_path(pins).run().await;
    for (host, pin) in &want {
        let s = both(&p, host).await;
        assert_eq!(
            (s.status, s.client_pin.as_deref()),
            (200, Some(pin.to_string().as_str())),
            "{host}: {s:?}"
        );
    }
}

/// The identity Secret is rotated the way the kubelet does it (a projected
/// volume holding the pins and `id/tls.{crt,key}`): the next connection
/// presents the new certificate without a restart, the old pooled
/// connection is not reused, a WebSocket opened with the old identity
/// ends after the grace period, a mismatched pair keeps the last good one
/// (a failed reload), and fixing it recovers.
#[tokio::test]
async fn a_kubelet_rotation_of_the_identity_changes_what_the_server_sees() {
    let server = server_pki(&[PAY]);
    let workload_ca = Authority::root("Workload CA", 0x0404);
    let (one, two, three) = (
        identity(&workload_ca, "one"),
        identity(&workload_ca, "two"),
        identity(&workload_ca, "three"),
    );
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry(PAY, &[server.int.pin()], up.addr, &client_cert("id"))
    );
    let root = server.root_pem();
    let files = |id: (&str, &str)| {
        vec![
            ("pins.yaml", yaml.clone()),
            ("ca.pem", root.clone()),
            ("id/tls.crt", id.0.to_string()),
            ("id/tls.key", id.1.to_string()),
        ]
    };
    let vol_dir = tempfile::tempdir().unwrap();
    let first = files((&one.cert_pem, &one.key_pem));
    let refs: Vec<(&str, &str)> = first.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let mut vol = SecretVolume::new(vol_dir.path(), &refs);
    let p = TestProxy::builder()
        .pins_path(vol.path("pins.yaml"))
        .watch()
        .limits(|l| l.revoke_grace = Duration::from_millis(300))
        .run()
        .await;
    let mut update = |v: Vec<(&'static str, String)>| {
        let refs: Vec<(&str, &str)> = v.iter().map(|(n, c)| (*n, c.as_str())).collect();
        vol.update(&refs);
    };

    let mut keep_alive = ProxyConn::open(p.addr).await;
    let r = keep_alive.get(&format!("http://{PAY}/a"), &[]).await;
    let pin_of = |r: &Reply| {
        r.headers
            .get("x-client-pin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(pin_of(&r), Some(one.pin.to_string()), "{r:?}");
    let again = keep_alive.get(&format!("http://{PAY}/b"), &[]).await;
    assert_eq!(pin_of(&again), Some(one.pin.to_string()));
    let conns = up.connections.load(Ordering::SeqCst);
    let (h, mut old_ws) = websocket(&p, PAY).await;
    assert_eq!(
        header(&h, "x-client-pin"),
        Some(one.pin.to_string().as_str())
    );

    // Rotate: cert-manager renewed the Secret.
    update(files((&two.cert_pem, &two.key_pem)));
    let live = p.live.clone();
    wait_for("generation 2", || live.load().generation == 2).await;
    let r = keep_alive.get(&format!("http://{PAY}/c"), &[]).await;
    assert_eq!(pin_of(&r), Some(two.pin.to_string()), "{r:?}");
    assert!(
        up.connections.load(Ordering::SeqCst) > conns + 1,
        "the pooled connection made with the old certificate was reused"
    );
    assert_eq!(
        via_connect(&p, PAY, "/d").await.client_pin,
        Some(two.pin.to_string())
    );
    // The WebSocket made with the old identity ends after the grace.
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(5), old_ws.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "the old identity's WebSocket is still open: {end:?}"
    );

    // A certificate with another rotation's key: refused, last good kept.
    let failures = reloads(&p, "failure");
    update(files((&three.cert_pem, &two.key_pem)));
    let metrics = p.metrics.clone();
    wait_for("a failed reload", || {
        metrics.config_reloads.with_label_values(&["failure"]).get() > failures
    })
    .await;
    assert_eq!(p.live.load().generation, 2);
    let r = forward(&p, PAY, "/e").await;
    assert_eq!((r.status, r.client_pin), (200, Some(two.pin.to_string())));

    // Fixed: the matching pair applies.
    update(files((&three.cert_pem, &three.key_pem)));
    wait_for("generation 3", || live.load().generation == 3).await;
    let s = both(&p, PAY).await;
    assert_eq!(s.client_pin, Some(three.pin.to_string()), "{s:?}");
    assert_eq!(reloads(&p, "failure"), failures + 1);
    assert_eq!(reloads(&p, "success"), 2);
}

/// The identity Secret as its own volume beside the pins' (referred to as
/// `../identity/…`): its directory is watched and its swaps reload.
#[tokio::test]
async fn an_identity_volume_beside_the_pins_is_watched_and_read_where_it_is() {
    let server = server_pki(&[PAY]);
    let workload_ca = Authority::root("Workload CA", 0x0505);
    let (one, two) = (identity(&workload_ca, "one"), identity(&workload_ca, "two"));
    let up = mtls_upstream(
        server.chain(),
        server.key_der(),
        &[workload_ca.der()],
        "mtls",
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let (pins_dir, id_dir) = (root.path().join("pins"), root.path().join("identity"));
    std::fs::create_dir(&pins_dir).unwrap();
    std::fs::create_dir(&id_dir).unwrap();
    let yaml = format!(
        "version: 1\nhosts:\n{}",
        entry(
            PAY,
            &[server.int.pin()],
            up.addr,
            "    client_cert: {cert: ../identity/tls.crt, key: ../identity/tls.key}\n"
        )
    );
    let ca = server.root_pem();
    let pins = SecretVolume::new(&pins_dir, &[("pins.yaml", &yaml), ("ca.pem", &ca)]);
    let mut id = SecretVolume::new(
        &id_dir,
        &[("tls.crt", &one.cert_pem), ("tls.key", &one.key_pem)],
    );
    let p = TestProxy::builder()
        .pins_path(pins.path("pins.yaml"))
        .watch()
        .run()
        .await;
    assert_eq!(both(&p, PAY).await.client_pin, Some(one.pin.to_string()));
    id.update(&[("tls.crt", &two.cert_pem), ("tls.key", &two.key_pem)]);
    let live = p.live.clone();
    wait_for("generation 2", || live.load().generation == 2).await;
    assert_eq!(both(&p, PAY).await.client_pin, Some(two.pin.to_string()));
}
