use super::*;

fn report(verdict: StapleVerdict) -> StapleReport {
    StapleReport::new(verdict)
}

#[test]
fn refusals_follow_the_table() {
    use StapleVerdict::*;
    let cases = [
        (Good, false, None),
        (Good, true, None),
        (Revoked, false, Some(Refusal::Revoked)),
        (Revoked, true, Some(Refusal::Revoked)),
        (Invalid, false, None),
        (Invalid, true, Some(Refusal::OcspRequired)),
        (Absent, false, None),
        (Absent, true, Some(Refusal::OcspRequired)),
    ];
    for (verdict, must_staple, want) in cases {
        assert_eq!(
            report(verdict).refusal(must_staple),
            want,
            "{verdict:?} must_staple={must_staple}"
        );
    }
    let labels: Vec<&str> = StapleVerdict::ALL.iter().map(|v| v.as_str()).collect();
    assert_eq!(labels, ["good", "revoked", "invalid", "absent"]);
    assert_eq!(Refusal::Revoked.as_str(), "revoked");
    assert_eq!(Refusal::OcspRequired.as_str(), "ocsp-required");
}

#[test]
fn unsuccessful_and_malformed_responses() {
    // OCSPResponse { responseStatus tryLater(3) }, no responseBytes.
    let try_later = [0x30, 0x03, 0x0a, 0x01, 0x03];
    assert_eq!(
        unwrap_basic(&try_later).err(),
        Some(OcspError::Status(OcspResponseStatus::TryLater))
    );
    // Successful, but without responseBytes.
    let empty = [0x30, 0x03, 0x0a, 0x01, 0x00];
    assert!(matches!(unwrap_basic(&empty), Err(OcspError::Der(_))));
    assert!(matches!(
        unwrap_basic(b"\x30\x80garbage"),
        Err(OcspError::Der(_))
    ));
}
