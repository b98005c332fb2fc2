//! One-off TLS connections that *record* what a server presents, for
//! `pinproxy pin --connect` and `pinproxy check --live`. They validate the
//! chain like the proxy does but never carry traffic.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use webpki::EndEntityCert;

use super::verdict::validated_paths;
use crate::policy::host::Host;
use crate::policy::pin::Pin;
use crate::tls::cert::CertInfo;

/// What a probe saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The chain as the server sent it.
    pub presented: Vec<CertificateDer<'static>>,
    /// Pins of every valid path found (leaf first); under pin-only, the leaf.
    pub paths: Vec<Vec<Pin>>,
    /// Why validation failed, if it did.
    pub error: Option<String>,
}

impl Seen {
    pub fn presented_info(&self) -> Vec<CertInfo> {
        self.presented
            .iter()
            .filter_map(|c| CertInfo::from_der(c.as_ref()).ok())
            .collect()
    }

    /// Every pin on some validated path.
    pub fn validated_pins(&self) -> Vec<Pin> {
        let mut all: Vec<Pin> = self.paths.iter().flatten().copied().collect();
        all.sort();
        all.dedup();
        all
    }
}

#[derive(Debug)]
struct Recorder {
    /// `None`: pin-only (no CA validation, the leaf alone).
    anchors: Option<Arc<[TrustAnchor<'static>]>>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.presented = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        let fail = |seen: &mut Seen, msg: String| {
            seen.error = Some(msg);
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        };
        let ee = match EndEntityCert::try_from(end_entity) {
            Ok(ee) => ee,
            Err(e) => return fail(&mut seen, format!("leaf certificate unparseable: {e}")),
        };
        // Refuse every path so webpki enumerates them all.
        match validated_paths(
            &ee,
            intermediates,
            self.anchors.as_deref(),
            now,
            &self.provider.signature_verification_algorithms,
            |_| true,
        ) {
            Ok(paths) => seen.paths = paths,
            Err(e) => return fail(&mut seen, format!("chain not trusted: {e}")),
        }
        if let Err(e) = ee.verify_is_valid_for_subject_name(server_name) {
            return fail(
                &mut seen,
                format!("certificate not valid for the name: {e}"),
            );
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a probe could not see a chain at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("not a valid TLS server name: {0}")]
    Name(#[from] rustls_pki_types::InvalidDnsNameError),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

/// Connects to `addr` (or `host:port`), sends SNI `servername` and records
/// the chain. Connection errors are `Err`; validation errors are in `Seen`.
pub async fn probe(
    host: &Host,
    port: u16,
    addr: Option<SocketAddr>,
    servername: &Host,
    anchors: Option<Arc<[TrustAnchor<'static>]>>,
    timeout: Duration,
) -> Result<Seen, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        anchors,
        provider: provider.clone(),
        seen: Mutex::new(Seen::default()),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = match addr {
        Some(a) => tokio::time::timeout(timeout, TcpStream::connect(a)).await,
        None => tokio::time::timeout(timeout, TcpStream::connect((host.to_string(), port))).await,
    }
    .map_err(|_| ProbeError::ConnectTimeout)?
    .map_err(ProbeError::Connect)?;
    let name = match servername {
        Host::Name(n) => ServerName::try_from(n.clone())?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let hs = tokio::time::timeout(
        timeout,
        TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await;
    let mut seen = std::mem::take(&mut *recorder.seen.lock().unwrap_or_else(|e| e.into_inner()));
    match hs {
        Err(_) => return Err(ProbeError::HandshakeTimeout),
        Ok(Err(e)) if seen.error.is_none() => {
            if seen.presented.is_empty() {
                return Err(ProbeError::Handshake(e));
            }
            seen.error = Some(format!("TLS handshake failed: {e}"));
        }
        _ => {}
    }
    Ok(seen)
}
