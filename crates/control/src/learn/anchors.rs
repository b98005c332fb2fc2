//! The trust anchors a learning generation names in what it records:
//! servers usually don't send their anchor, so its subject and expiry come
//! from the trust the host validates with.

use std::collections::HashMap;
use std::sync::Arc;

use pinproxy_policy::pin::Pin;
use pinproxy_policy::Trust;
use pinproxy_tls::cert::{self, CertInfo};

/// What is known of a trust anchor, which servers usually don't send.
#[derive(Clone, Debug)]
pub struct AnchorInfo {
    pub subject: String,
    /// RFC 3339, when the anchor's certificate is at hand.
    pub not_after: Option<String>,
}

pub type Anchors = Arc<HashMap<Pin, AnchorInfo>>;

/// The anchors `trust` validates with, by pin: Mozilla's root
/// certificates (parsed once per process), or a CA bundle's certificates
/// (read when a learning generation is built, like the bundle itself).
pub fn anchors(trust: &Trust) -> Anchors {
    static MOZILLA: std::sync::OnceLock<Anchors> = std::sync::OnceLock::new();
    match trust {
        Trust::Bundle { path, anchors } => {
            let mut out: HashMap<Pin, AnchorInfo> = anchors
                .iter()
                .map(|a| {
                    let info = AnchorInfo {
                        subject: cert::anchor_subject(a),
                        not_after: None,
                    };
                    (
                        Pin::of_spki_contents(a.subject_public_key_info.as_ref()),
                        info,
                    )
                })
                .collect();
            let certs = cert::read_certificates(&path.to_string_lossy()).unwrap_or_default();
            out.extend(by_pin(&certs));
            Arc::new(out)
        }
        _ => MOZILLA
            .get_or_init(|| Arc::new(by_pin(webpki_root_certs::TLS_SERVER_ROOT_CERTS)))
            .clone(),
    }
}

fn by_pin(certs: &[rustls_pki_types::CertificateDer<'_>]) -> HashMap<Pin, AnchorInfo> {
    certs
        .iter()
        .filter_map(|c| CertInfo::from_der(c.as_ref()).ok())
        .filter_map(|c| {
            let info = AnchorInfo {
                subject: c.subject,
                not_after: Some(c.not_after),
            };
            Some((c.pin.parse().ok()?, info))
        })
        .collect()
}
