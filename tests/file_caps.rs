//! Every file a pinset names is capped like the pinset itself (issue 21,
//! attack 6): a 52 MB CRL with 2 million entries was accepted and took
//! 1.57 GB. CA bundles, client certificates and keys, CRLs: over
//! `--max-file-bytes` a file is refused without being read whole; CRLs
//! listing more than `--max-crl-entries` are refused before webpki's map
//! is built. A refusal at reload keeps the last good pinset. The built
//! binary, with CRLs made here.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use support::proxy::TestProxy;
use support::*;

const HOST: &str = "pay.internal.test";

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "Internal CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.serial_number = Some(SerialNumber::from(1u64));
        let cert = p.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for [`HOST`] with serial `serial`: (DER, key).
    fn leaf(&self, serial: u64) -> (rustls_pki_types::CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, HOST);
        p.subject_alt_names = vec![SanType::DnsName(HOST.try_into().unwrap())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(SerialNumber::from(serial));
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.der().clone(), key)
    }

    /// A CRL revoking `serials` (DER).
    fn crl(&self, serials: impl Iterator<Item = u64>) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - time::Duration::days(1),
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: now - time::Duration::hours(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .der()
        .to_vec()
    }
}

fn pinset(ca: &Authority, extra: &str, address: &str) -> String {
    format!(
        "version: 1\nhosts:\n  {HOST}:\n    pins: [{}]\n    trust: ca.pem\n    address: {address}\n{extra}",
        pinproxy::policy::pin::Pin::of_certificate(ca.cert.der()).unwrap()
    )
}

fn check(dir: &std::path::Path) -> (i32, String) {
    let pins = dir.join("pins.yaml");
    let (code, out, err) = run_pinproxy(&["check", pins.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

/// With the default caps: a CRL of 100,001 entries, and a CA bundle and a
/// client key padded past 16 MiB, are each refused with the file and the
/// flag named — the first two were loaded whole before.
#[test]
fn check_refuses_what_the_default_caps_do_not_allow() {
    let ca = Authority::new();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &ca.cert.pem());
    std::fs::write(dir.path().join("big.crl"), ca.crl(1000..101_001)).unwrap();
    write(
        dir.path(),
        "pins.yaml",
        &pinset(&ca, "    crls: [big.crl]\n", "127.0.0.1:1"),
    );
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("big.crl")
            && out.contains("more than 100000 revoked certificates")
            && out.contains("--max-crl-entries"),
        "{out}"
    );
    // Raised, it loads: the cap is the only reason.
    let pins = dir.path().join("pins.yaml");
    let (code, out, _) = run_pinproxy(&[
        "check",
        "--max-crl-entries",
        "200000",
        pins.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");

    // Text between PEM blocks is allowed, so a bundle can be padded.
    let padding = "# padding\n".repeat(17 * 1024 * 1024 / 10);
    write(
        dir.path(),
        "padded.pem",
        &format!("{}{padding}", ca.cert.pem()),
    );
    write(
        dir.path(),
        "pins.yaml",
        &pinset(&ca, "", "127.0.0.1:1").replace("trust: ca.pem", "trust: padded.pem"),
    );
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("padded.pem")
            && out.contains("16777216-byte limit")
            && out.contains("--max-file-bytes"),
        "{out}"
    );

    let (_, key) = ca.leaf(7);
    write(dir.path(), "id.crt", &ca.cert.pem());
    write(
        dir.path(),
        "id.key",
        &format!("{}{padding}", key.serialize_pem()),
    );
    write(
        dir.path(),
        "pins.yaml",
        &pinset(
            &ca,
            "    client_cert: {cert: id.crt, key: id.key}\n",
            "127.0.0.1:1",
        ),
    );
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("id.key") && out.contains("--max-file-bytes"),
        "{out}"
    );
}

/// At reload, a CRL over the cap is a failed reload: the last good pinset
/// (and CRL) stays in force, the log says why; a CRL within the cap that
/// revokes the server's leaf then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_over_the_caps_keeps_the_last_good_pinset() {
    let ca = Authority::new();
    let (leaf, key) = ca.leaf(4242);
    let up = upstream(
        vec![leaf],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        UpstreamOpts::new("internal"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = pinset(&ca, "    crls: [ca.crl]\n", &up.addr.to_string());
    let pem = |der: Vec<u8>| {
        pem::encode_config(
            &pem::Pem::new("X509 CRL", der),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    };
    let small = pem(ca.crl(10..20));
    let mut volume = SecretVolume::new(
        dir.path(),
        &[
            ("pins.yaml", &yaml),
            ("ca.pem", &ca.cert.pem()),
            ("ca.crl", &small),
        ],
    );
    let mut run = TestProxy::builder()
        .pins_path(volume.path("pins.yaml"))
        .args(&["--max-crl-entries", "1000", "--max-file-bytes", "100000"])
        .spawn()
        .await;
    run.until("ready").await;
    let url = format!("http://{HOST}/");
    assert_eq!(get(run.listen, &url).await.status, 200);

    // 5,000 entries, the server's leaf among them: over both caps.
    let big = pem(ca.crl((100..5100).chain([4242])));
    assert!(big.len() > 100_000);
    volume.update(&[
        ("pins.yaml", &yaml),
        ("ca.pem", &ca.cert.pem()),
        ("ca.crl", &big),
    ]);
    let mut lines = run.until("pinset reload failed").await;
    lines.extend(run.more(std::time::Duration::from_millis(300)).await);
    let text = lines.join("\n");
    assert!(
        text.contains("ca.crl") && text.contains("--max-file-bytes"),
        "{text}"
    );
    assert_eq!(
        get(run.listen, &url).await.status,
        200,
        "the last good CRL stays in force"
    );
    let pins = get(run.admin, &format!("http://{}/pins", run.admin)).await;
    assert!(pins.body.contains("\"revoked\": 10"), "{}", pins.body);

    // Within the file cap, over the entry cap.
    volume.update(&[
        ("pins.yaml", &yaml),
        ("ca.pem", &ca.cert.pem()),
        ("ca.crl", &pem(ca.crl((100..1200).chain([4242])))),
    ]);
    let mut lines = run.until("pinset reload failed").await;
    lines.extend(run.more(std::time::Duration::from_millis(300)).await);
    assert!(lines.join("\n").contains("--max-crl-entries"), "{lines:?}");
    assert_eq!(get(run.listen, &url).await.status, 200);

    // Within both: the leaf is revoked from now on.
    volume.update(&[
        ("pins.yaml", &yaml),
        ("ca.pem", &ca.cert.pem()),
        ("ca.crl", &pem(ca.crl((100..120).chain([4242])))),
    ]);
    run.until("pinset reloaded").await;
    let r = get(run.listen, &url).await;
    assert_eq!(r.error(), Some("untrusted-certificate"), "{r:?}");
}
