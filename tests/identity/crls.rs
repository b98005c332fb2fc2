//! CRLs on the validated path.

use super::*;

// === CRLs ===

const CRL_HOST: &str = "api.crl.test";

/// CRLs on the validated path: one revoking the leaf, then one revoking
/// the intermediate, are refused as untrusted-certificate with metric
/// reason revoked; fresh CRLs that revoke neither pass. An expired CRL
/// keeps refusing what it lists (crl_policy: use-expired, the default) and
/// passes the rest; refuse-expired refuses, reason crl-expired.
#[tokio::test]
async fn crls_refuse_a_revoked_leaf_or_intermediate_and_fresh_ones_pass() {
    let server = server_pki(&[CRL_HOST]);
    let up = upstream(server.chain(), server.key_der(), UpstreamOpts::new("crl")).await;
    let later = OffsetDateTime::now_utc() + time::Duration::days(7);
    let earlier = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &server.root_pem());
    let pins_path = dir.path().join("pins.yaml");
    let set = |crls: &[(&str, String)], extra: &str| {
        let mut names = Vec::new();
        for (name, text) in crls {
            write(dir.path(), name, text);
            names.push(name.to_string());
        }
        let yaml = format!(
            "version: 1\nhosts:\n{}",
            entry(
                CRL_HOST,
                &[server.int.pin()],
                up.addr,
                &format!("    crls: [{}]\n{extra}", names.join(", "))
            )
        );
        std::fs::write(&pins_path, yaml).unwrap();
    };
    set(&[("leaf.crl", server.int.crl(&[LEAF_SERIAL], later))], "");
    let p = TestProxy::builder()
        .dir(dir)
        .pins_path(pins_path.clone())
        .run()
        .await;
    let revoked = |p: &Proxy| p.tls_failures(CRL_HOST, "revoked");

    let s = both(&p, CRL_HOST).await;
    assert_eq!(
        (s.status, s.error.as_deref()),
        (502, Some("untrusted-certificate")),
        "{s:?}"
    );
    assert!(
        s.body.contains("revoked by one of this host's crls"),
        "{s:?}"
    );
    assert_eq!(revoked(&p), 2);
    assert_eq!(p.requests(CRL_HOST, "untrusted-certificate"), 2);

    let dir = p.dir.path().to_path_buf();
    let set = |crls: &[(&str, String)], extra: &str| {
        let mut names = Vec::new();
        for (name, text) in crls {
            write(&dir, name, text);
            names.push(name.to_string());
        }
        let yaml = format!(
            "version: 1\nhosts:\n{}",
            entry(
                CRL_HOST,
                &[server.int.pin()],
                up.addr,
                &format!("    crls: [{}]\n{extra}", names.join(", "))
            )
        );
        std::fs::write(dir.join("pins.yaml"), yaml).unwrap();
    };
    // The root revokes the intermediate; the intermediate's CRL is clean.
    set(
        &[
            ("int.crl", server.int.crl(&[0x9999], later)),
            ("root.crl", server.root.crl(&[INT_SERIAL], later)),
        ],
        "",
    );
    p.reloader.reload().await.unwrap();
    let s = both(&p, CRL_HOST).await;
    assert_eq!(
        (s.status, s.error.as_deref()),
        (502, Some("untrusted-certificate")),
        "{s:?}"
    );
    assert_eq!(revoked(&p), 4);

    // Fresh CRLs revoking neither: through.
    set(
        &[
            ("int.crl", server.int.crl(&[0x9999], later)),
            ("root.crl", server.root.crl(&[0x8888], later)),
        ],
        "",
    );
    p.reloader.reload().await.unwrap();
    let s = both(&p, CRL_HOST).await;
    assert_eq!((s.status, s.error.as_deref()), (200, None), "{s:?}");
    assert_eq!(revoked(&p), 4);
    let next = p
        .metrics
        .crl_next_update
        .with_label_values(&[CRL_HOST])
        .get();
    assert_eq!(next as i64, later.unix_timestamp());

    // Expired CRLs, default policy: what they list stays refused...
    set(
        &[("stale.crl", server.int.crl(&[LEAF_SERIAL], earlier))],
        "",
    );
    p.reloader.reload().await.unwrap();
    assert!(
        p.live.load().policy.warnings[0]
            .to_string()
            .contains("expired"),
        "{:?}",
        p.live.load().policy.warnings
    );
    assert_eq!(both(&p, CRL_HOST).await.status, 502);
    assert_eq!(revoked(&p), 6);
    // ...and the rest passes.
    set(&[("stale.crl", server.int.crl(&[0x9999], earlier))], "");
    p.reloader.reload().await.unwrap();
    assert_eq!(both(&p, CRL_HOST).await.status, 200);
    // refuse-expired: refused, and said why.
    set(
        &[("stale.crl", server.int.crl(&[0x9999], earlier))],
        "    crl_policy: refuse-expired\n",
    );
    p.reloader.reload().await.unwrap();
    let s = both(&p, CRL_HOST).await;
    assert_eq!(
        (s.status, s.error.as_deref()),
        (502, Some("untrusted-certificate")),
        "{s:?}"
    );
    assert!(s.body.contains("crl_policy: refuse-expired"), "{s:?}");
    assert_eq!(p.tls_failures(CRL_HOST, "crl-expired"), 2);
    assert_eq!(revoked(&p), 6);
}
