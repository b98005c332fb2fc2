//! Stapled OCSP responses made by a real responder, `openssl ocsp`, over
//! PKIs the tests make (rcgen, and one made by openssl alone).

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use pinproxy_ct::cert::{Issuer, Leaf};
use pinproxy_ct::ocsp::{check_staple, OcspError, Refusal, ResponderError, Signer, StapleVerdict};
use rcgen::{CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
use support::pem_blocks;
use support::pki::{days, now_ms, path, run, unix, Ca};

/// A CA with leaves and responders on disk, and an openssl index.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: Ca::new("OCSP Test CA"),
        };
        pki.write("ca.pem", &pki.ca.cert.pem());
        pki.write("ca.key", &pki.ca.key.serialize_pem());
        pki.leaf("leaf", 0x01, &[]);
        pki.leaf("other", 0x02, &[]);
        pki.leaf("revoked", 0x03, &[]);
        pki.leaf("unlisted", 0x04, &[]);
        pki.responder("resp", &pki.ca, true);
        pki.responder("noeku", &pki.ca, false);
        let rogue_ca = Ca::new("Another CA");
        pki.responder("rogue", &rogue_ca, true);
        // status, expiry, revocation time, serial, file, subject.
        let index = "V\t991231235959Z\t\t1001\tunknown\t/CN=leaf.test\n\
                     V\t991231235959Z\t\t1002\tunknown\t/CN=other.test\n\
                     R\t991231235959Z\t240101000000Z,keyCompromise\t1003\tunknown\t/CN=revoked.test\n";
        pki.write("index.txt", index);
        pki
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.p(name), text).expect("write");
    }

    fn leaf(&self, name: &str, serial: u8, extra: &[CustomExtension]) {
        self.leaf_with_serial(name, &[0x10, serial], extra);
    }

    fn leaf_with_serial(&self, name: &str, serial: &[u8], extra: &[CustomExtension]) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![format!("{name}.test")]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name}.test"));
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.custom_extensions = extra.to_vec();
        let cert = params
            .signed_by(&key, &self.ca.cert, &self.ca.key)
            .expect("leaf");
        self.write(&format!("{name}.pem"), &cert.pem());
    }

    fn responder(&self, name: &str, by: &Ca, eku: bool) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("OCSP Responder {name}"));
        if eku {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        }
        let cert = params
            .signed_by(&key, &by.cert, &by.key)
            .expect("responder");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }

    /// `openssl ocsp` answering for `cert`, signed by `signer`.
    fn respond(&self, signer: &str, cert: &str, extra: &[&str]) -> Vec<u8> {
        respond(self.dir.path(), "ca.pem", signer, cert, extra)
    }

    fn leaf_der(&self, name: &str) -> Leaf {
        Leaf::parse(&der_of(&self.p(&format!("{name}.pem")))).expect("leaf parses")
    }

    fn issuer(&self) -> Issuer {
        Issuer::from_cert_der(&self.ca.der()).expect("issuer")
    }
}

fn respond(dir: &Path, ca: &str, signer: &str, cert: &str, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{cert}-{signer}-{}.der", extra.join("")));
    let p = |n: &str| dir.join(n).to_str().expect("utf-8").to_string();
    let (ca, index, s_pem, s_key, c_pem) = (
        p(ca),
        p("index.txt"),
        p(&format!("{signer}.pem")),
        p(&format!("{signer}.key")),
        p(&format!("{cert}.pem")),
    );
    // A CertID digest option must come before -cert.
    let mut args = vec!["ocsp"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-index",
        &index,
        "-CA",
        &ca,
        "-issuer",
        &ca,
        "-rsigner",
        &s_pem,
        "-rkey",
        &s_key,
        "-cert",
        &c_pem,
        "-respout",
        path(&out),
        "-ndays",
        "1",
    ]);
    run("openssl", &args);
    fs::read(&out).expect("response written")
}

fn der_of(pem: &Path) -> Vec<u8> {
    let text = fs::read_to_string(pem).expect("pem");
    pem_blocks(&text, "CERTIFICATE")
        .into_iter()
        .next()
        .expect("certificate")
}

fn now() -> u64 {
    now_ms()
}

#[test]
fn a_delegated_responder_says_good() {
    let pki = Pki::new();
    let leaf = pki.leaf_der("leaf");
    for extra in [&[][..], &["-sha256"][..], &["-resp_key_id"][..]] {
        let staple = pki.respond("resp", "leaf", extra);
        let report = check_staple(&leaf, &pki.issuer(), Some(&staple), unix(now()));
        assert_eq!(report.verdict(), StapleVerdict::Good, "{extra:?}: {report}");
        assert_eq!(
            report.signer(),
            Some(&Signer::Delegated {
                subject: "CN=OCSP Responder resp".into()
            }),
            "{extra:?}"
        );
        assert_eq!(report.refusal(true), None);
        assert!(report.next_update().is_some());
        // The fixture is what it says: a SHA-256 CertID, a byKey ResponderID.
        let (hash, by_key) = shape(&staple);
        assert_eq!(
            hash == "2.16.840.1.101.3.4.2.1",
            extra == ["-sha256"],
            "{hash}"
        );
        assert_eq!(by_key, extra == ["-resp_key_id"]);
    }
}

/// The CertID hash algorithm and whether the ResponderID is byKey.
fn shape(response: &[u8]) -> (String, bool) {
    use der::Decode;
    let resp = x509_ocsp::OcspResponse::from_der(response).expect("response");
    let bytes = resp.response_bytes.expect("bytes");
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic");
    let data = basic.tbs_response_data;
    let by_key = matches!(data.responder_id, x509_ocsp::ResponderId::ByKey(_));
    (
        data.responses[0].cert_id.hash_algorithm.oid.to_string(),
        by_key,
    )
}

#[test]
fn the_issuer_itself_says_good() {
    let pki = Pki::new();
    let staple = pki.respond("ca", "leaf", &["-resp_no_certs"]);
    let report = check_staple(
        &pki.leaf_der("leaf"),
        &pki.issuer(),
        Some(&staple),
        unix(now()),
    );
    assert_eq!(report.verdict(), StapleVerdict::Good, "{report}");
    assert_eq!(report.signer(), Some(&Signer::Issuer));
}

#[test]
fn revoked_is_revoked_even_when_the_response_is_old() {
    let pki = Pki::new();
    let leaf = pki.leaf_der("revoked");
    let staple = pki.respond("resp", "revoked", &[]);
    for at in [now(), now() + days(30)] {
        let report = check_staple(&leaf, &pki.issuer(), Some(&staple), unix(at));
        assert_eq!(report.verdict(), StapleVerdict::Revoked, "{report}");
        assert_eq!(
            report.revoked_at().map(|t| t.as_secs()),
            Some(1_704_067_200)
        );
        assert_eq!(report.refusal(false), Some(Refusal::Revoked));
        assert_eq!(report.refusal(true), Some(Refusal::Revoked));
    }
}

#[test]
fn an_expired_or_future_response_is_invalid() {
    let pki = Pki::new();
    let leaf = pki.leaf_der("leaf");
    let staple = pki.respond("resp", "leaf", &[]);
    // -ndays 1: good for just under a day, then expired.
    let fine = check_staple(
        &leaf,
        &pki.issuer(),
        Some(&staple),
        unix(now() + 23 * 3_600_000),
    );
    assert_eq!(fine.verdict(), StapleVerdict::Good, "{fine}");
    let late = check_staple(&leaf, &pki.issuer(), Some(&staple), unix(now() + days(2)));
    assert_eq!(late.verdict(), StapleVerdict::Invalid);
    assert!(
        matches!(late.problem(), Some(OcspError::Expired(_))),
        "{late}"
    );
    assert_eq!(late.refusal(false), None);
    assert_eq!(late.refusal(true), Some(Refusal::OcspRequired));
    // Checked an hour before it was made: beyond the 5-minute skew.
    let early = check_staple(&leaf, &pki.issuer(), Some(&staple), unix(now() - 3_600_000));
    assert!(
        matches!(early.problem(), Some(OcspError::NotYetValid(_))),
        "{early}"
    );
}

#[test]
fn a_responder_without_the_ocsp_signing_eku_is_not_authorised() {
    let pki = Pki::new();
    let staple = pki.respond("noeku", "leaf", &[]);
    let report = check_staple(
        &pki.leaf_der("leaf"),
        &pki.issuer(),
        Some(&staple),
        unix(now()),
    );
    assert_eq!(report.verdict(), StapleVerdict::Invalid);
    assert_eq!(
        report.problem(),
        Some(&OcspError::Responder(ResponderError::NoOcspSigning {
            subject: "CN=OCSP Responder noeku".into()
        })),
        "{report}"
    );
}

#[test]
fn a_responder_certified_by_another_ca_is_not_authorised() {
    let pki = Pki::new();
    let staple = pki.respond("rogue", "leaf", &[]);
    let report = check_staple(
        &pki.leaf_der("leaf"),
        &pki.issuer(),
        Some(&staple),
        unix(now()),
    );
    assert_eq!(
        report.problem(),
        Some(&OcspError::Responder(ResponderError::NotIssuedByIssuer {
            subject: "CN=OCSP Responder rogue".into()
        })),
        "{report}"
    );
    // Without its certificate in the response, nobody is named at all.
    let bare = pki.respond("rogue", "leaf", &["-resp_no_certs"]);
    let report = check_staple(
        &pki.leaf_der("leaf"),
        &pki.issuer(),
        Some(&bare),
        unix(now()),
    );
    assert_eq!(
        report.problem(),
        Some(&OcspError::Responder(ResponderError::NotFound)),
        "{report}"
    );
}

#[test]
fn a_response_for_another_certificate_is_invalid() {
    let pki = Pki::new();
    let staple = pki.respond("resp", "other", &[]);
    let report = check_staple(
        &pki.leaf_der("leaf"),
        &pki.issuer(),
        Some(&staple),
        unix(now()),
    );
    assert_eq!(
        report.problem(),
        Some(&OcspError::NotForThisCertificate),
        "{report}"
    );
    // The same response checked against the right leaf but another issuer.
    let stranger = Issuer::from_cert_der(&Ca::new("OCSP Test CA").der()).expect("issuer");
    let report = check_staple(
        &pki.leaf_der("other"),
        &stranger,
        Some(&staple),
        unix(now()),
    );
    assert_eq!(
        report.problem(),
        Some(&OcspError::NotForThisCertificate),
        "{report}"
    );
}

#[test]
fn unknown_status_and_a_broken_signature_are_invalid() {
    let pki = Pki::new();
    let unknown = pki.respond("resp", "unlisted", &[]);
    let report = check_staple(
        &pki.leaf_der("unlisted"),
        &pki.issuer(),
        Some(&unknown),
        unix(now()),
    );
    assert_eq!(
        report.problem(),
        Some(&OcspError::UnknownStatus),
        "{report}"
    );

    let mut staple = pki.respond("ca", "leaf", &["-resp_no_certs"]);
    let last = staple.len() - 1;
    staple[last] ^= 0x01;
    let report = check_staple(
        &pki.leaf_der("leaf"),
        &pki.issuer(),
        Some(&staple),
        unix(now()),
    );
    assert!(
        matches!(report.problem(), Some(OcspError::Signature(_))),
        "{report}"
    );
}

#[test]
fn no_staple_is_absent() {
    let pki = Pki::new();
    for staple in [None, Some(&[][..])] {
        let report = check_staple(&pki.leaf_der("leaf"), &pki.issuer(), staple, unix(now()));
        assert_eq!(report.verdict(), StapleVerdict::Absent);
        assert_eq!(report.refusal(false), None);
        assert_eq!(report.refusal(true), Some(Refusal::OcspRequired));
    }
}

#[test]
fn must_staple_is_read_from_rcgen_and_openssl_certificates() {
    let pki = Pki::new();
    assert!(!pki.leaf_der("leaf").must_staple());
    // TLS Feature ::= SEQUENCE OF INTEGER; status_request is 5.
    let feature = |content: Vec<u8>| {
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 24], content)
    };
    pki.leaf(
        "staple",
        0x05,
        &[feature(vec![0x30, 0x03, 0x02, 0x01, 0x05])],
    );
    assert!(pki.leaf_der("staple").must_staple());
    // status_request_v2 (17) alone is not RFC 7633 must-staple.
    pki.leaf(
        "v2only",
        0x06,
        &[feature(vec![0x30, 0x03, 0x02, 0x01, 0x11])],
    );
    assert!(!pki.leaf_der("v2only").must_staple());
}

/// A leaf with a 25-octet serial: over RFC 5280's 20, yet webpki (and
/// browsers) accept it, so these checks must read it too — else its
/// must-staple and a staple saying `revoked` would go unseen. A staple for
/// it is `invalid` (`x509-ocsp` holds CertIDs to 20 octets), which a
/// must-staple leaf refuses as `ocsp-required`.
#[test]
fn a_leaf_with_a_serial_over_20_octets_is_read_and_its_must_staple_holds() {
    let pki = Pki::new();
    let serial: Vec<u8> = std::iter::once(0x11).chain(1..25).collect();
    let feature = CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 24],
        vec![0x30, 0x03, 0x02, 0x01, 0x05],
    );
    pki.leaf_with_serial("long", &serial, &[feature]);
    let leaf = pki.leaf_der("long");
    assert_eq!(leaf.serial(), &serial[..]);
    assert!(leaf.must_staple());
    let hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
    pki.write(
        "index.txt",
        &format!("R\t991231235959Z\t240101000000Z,keyCompromise\t{hex}\tunknown\t/CN=long.test\n"),
    );
    let revoked = pki.respond("resp", "long", &[]);
    let report = check_staple(&leaf, &pki.issuer(), Some(&revoked), unix(now_ms()));
    assert_ne!(report.verdict(), StapleVerdict::Good, "{report}");
    assert_ne!(report.refusal(true), None, "{report}");
    let absent = check_staple(&leaf, &pki.issuer(), None, unix(now_ms()));
    assert_eq!(absent.refusal(true), Some(Refusal::OcspRequired));
}

/// An RSA PKI made by openssl alone: its own encoding of the TLS Feature
/// extension, and an RSA (sha256WithRSAEncryption) OCSP signature by the
/// issuer.
#[test]
fn an_openssl_made_must_staple_leaf_and_rsa_responses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("rsa.key"),
            "-out",
            &p("rsa.pem"),
            "-subj",
            "/CN=OpenSSL RSA CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("ms.key"),
            "-out",
            &p("ms.csr"),
            "-subj",
            "/CN=staple.test",
        ],
    );
    fs::write(
        p("ext.cnf"),
        "tlsfeature = status_request\nsubjectAltName = DNS:staple.test\n",
    )
    .expect("ext");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("ms.csr"),
            "-CA",
            &p("rsa.pem"),
            "-CAkey",
            &p("rsa.key"),
            "-set_serial",
            "0x2001",
            "-days",
            "10",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("ms.pem"),
        ],
    );
    fs::write(
        p("index.txt"),
        "V\t991231235959Z\t\t2001\tunknown\t/CN=staple.test\n",
    )
    .expect("index");
    let staple = respond(dir.path(), "rsa.pem", "rsa", "ms", &["-resp_no_certs"]);

    let leaf = Leaf::parse(&der_of(Path::new(&p("ms.pem")))).expect("leaf");
    assert!(leaf.must_staple());
    let issuer = Issuer::from_cert_der(&der_of(Path::new(&p("rsa.pem")))).expect("issuer");
    let report = check_staple(&leaf, &issuer, Some(&staple), unix(now()));
    assert_eq!(report.verdict(), StapleVerdict::Good, "{report}");
    assert_eq!(report.signer(), Some(&Signer::Issuer));
    assert_eq!(report.refusal(leaf.must_staple()), None);
    let absent = check_staple(&leaf, &issuer, None, unix(now()));
    assert_eq!(
        absent.refusal(leaf.must_staple()),
        Some(Refusal::OcspRequired)
    );
}

/// One response, several SingleResponses for the same leaf: any `revoked`
/// wins, then `good` — whatever their order. Taking the first match once
/// let "good" placed before "revoked" hide the revocation.
#[test]
fn several_single_responses_for_the_leaf_revoked_wins_then_good() {
    use support::responder::{revoked_at, with_statuses};
    use x509_ocsp::CertStatus;
    let pki = Pki::new();
    let leaf = pki.leaf_der("leaf");
    let now = now_ms();
    let good = || CertStatus::Good(der::asn1::Null);
    let revoked = || revoked_at(now - days(2));
    let unknown = || CertStatus::Unknown(der::asn1::Null);
    let cases = [
        (vec![good(), revoked()], StapleVerdict::Revoked),
        (vec![revoked(), good()], StapleVerdict::Revoked),
        (vec![unknown(), revoked(), good()], StapleVerdict::Revoked),
        (vec![unknown(), good()], StapleVerdict::Good),
        (vec![good(), unknown()], StapleVerdict::Good),
        (vec![unknown()], StapleVerdict::Invalid),
    ];
    for (statuses, want) in cases {
        let response = with_statuses(&pki.ca, leaf.der(), now - days(1), now + days(1), &statuses);
        let report = check_staple(&leaf, &pki.issuer(), Some(&response), unix(now));
        assert_eq!(report.verdict(), want, "{statuses:?}: {report}");
    }
}
