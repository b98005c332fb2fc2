//! One-off TLS connections that *record* what a server presents, for
//! `pinproxy pin --connect` and `pinproxy check --live`. They validate the
//! chain like the proxy does but never carry traffic.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use webpki::EndEntityCert;

use super::verdict::{check_name, presented_names, validated_paths_used, NameMismatch, UsedPath};
use crate::cert::CertInfo;
use crate::ct::{self, IssuerOf, LogListInForce, PathChecks};
use pinproxy_policy::host::Host;
use pinproxy_policy::identity::{Crls, Name};
use pinproxy_policy::pin::Pin;
use pinproxy_policy::CtMode;

/// What a probe saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The chain as the server sent it.
    pub presented: Vec<CertificateDer<'static>>,
    /// Pins of every valid path found (leaf first); under pin-only, the leaf.
    pub paths: Vec<Vec<Pin>>,
    /// For each of `paths`, which presented intermediates it used (indices
    /// into `presented` minus the leaf), in path order.
    pub used: Vec<Vec<usize>>,
    /// Why validation failed, if it did.
    pub error: Option<String>,
    /// Whether the server asked for a client certificate, and how the
    /// handshake with the one given (or none) ended.
    pub client_auth: ClientAuth,
    /// Certificate Transparency and the OCSP staple on the first validated
    /// path, as the proxy judges them (`None`: no path validated, or
    /// pin-only).
    pub checks: Option<PathChecks>,
}

/// Client authentication as a probe saw it.
#[derive(Debug, Default)]
pub struct ClientAuth {
    /// The server sent a CertificateRequest.
    pub requested: bool,
    /// A client certificate was given to the probe (and so presented if
    /// requested).
    pub configured: bool,
    /// Why the server ended the session after it was asked for one (a TLS
    /// 1.2 handshake failure, or a TLS 1.3 alert right after it).
    pub refused: Option<String>,
}

/// What a probe checks and presents beyond the chain: an entry's `names:`
/// (instead of the host name), its CRLs and its client certificate.
#[derive(Debug, Default)]
pub struct Expect<'a> {
    pub names: &'a [Name],
    pub crls: Option<Arc<Crls>>,
    pub client_cert: Option<Arc<CertifiedKey>>,
    /// The CT log list and the entry's `ct` (default: the built-in list,
    /// `report`).
    pub ct: Option<(Arc<LogListInForce>, CtMode)>,
}

/// Presents the given certificate, if any, and notes that the server asked
/// (rustls asks a resolver only when a CertificateRequest came).
#[derive(Debug)]
struct Asked {
    key: Option<Arc<CertifiedKey>>,
    asked: AtomicBool,
}

impl ResolvesClientCert for Asked {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Release);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        // Always "yes", so rustls asks even when we have none to give:
        // whether the server asked is what `check --live` reports.
        true
    }
}

impl Seen {
    pub fn presented_info(&self) -> Vec<CertInfo> {
        self.presented
            .iter()
            .filter_map(|c| CertInfo::from_der(c.as_ref()).ok())
            .collect()
    }

    /// The certificates of the first validated path that the server sent
    /// (the leaf, the intermediates used), in path order — never another
    /// presented certificate that merely carries one of its keys.
    pub fn first_path_info(&self) -> Vec<CertInfo> {
        let Some(used) = self.used.first() else {
            return Vec::new();
        };
        self.presented
            .first()
            .into_iter()
            .chain(used.iter().filter_map(|i| self.presented.get(i + 1)))
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
    names: Vec<Name>,
    crls: Option<Arc<Crls>>,
    ct: (Arc<LogListInForce>, CtMode),
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
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
        match validated_paths_used(
            &ee,
            intermediates,
            self.anchors.as_deref(),
            self.crls.as_deref(),
            now,
            &self.provider.signature_verification_algorithms,
            |_| true,
        ) {
            Ok(paths) => {
                seen.checks = self.checks(paths.first(), end_entity, intermediates, ocsp, now);
                (seen.paths, seen.used) =
                    paths.into_iter().map(|p| (p.pins, p.intermediates)).unzip()
            }
            Err(webpki::Error::CertRevoked) => {
                return fail(
                    &mut seen,
                    "chain not trusted: a certificate on it is revoked by one of crls".into(),
                )
            }
            Err(e) => return fail(&mut seen, format!("chain not trusted: {e}")),
        }
        match check_name(&ee, end_entity, server_name, &self.names) {
            Ok(()) => {}
            Err(NameMismatch::Host(_)) => {
                let (dns, uris) = presented_names(end_entity.as_ref());
                let list = |v: Vec<String>| {
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                let name = match server_name {
                    ServerName::DnsName(d) => d.as_ref().to_string(),
                    other => format!("{other:?}"),
                };
                return fail(
                    &mut seen,
                    format!(
                        "certificate not valid for the name {name} (it presents DNS: {}; URI: {})",
                        list(dns),
                        list(uris)
                    ),
                );
            }
            Err(NameMismatch::Names(why)) => return fail(&mut seen, why),
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

impl Recorder {
    /// CT and the staple on `path`, as [`crate::verify::PinVerifier`]
    /// judges them (without its cache).
    fn checks(
        &self,
        path: Option<&UsedPath>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        ocsp: &[u8],
        now: UnixTime,
    ) -> Option<PathChecks> {
        let (anchors, path) = (self.anchors.as_deref()?, path?);
        let issuer = match path.intermediates.first() {
            Some(i) => IssuerOf::Cert(intermediates.get(*i)?.as_ref()),
            None => IssuerOf::Anchor(anchors.get(path.anchor?)?),
        };
        let (list, mode) = &self.ct;
        Some(ct::check_path(
            list,
            *mode,
            end_entity.as_ref(),
            issuer,
            ocsp,
            now,
            None,
        ))
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
    probe_with(
        host,
        port,
        addr,
        servername,
        anchors,
        Expect::default(),
        timeout,
    )
    .await
}

/// How long a probe that was asked for a client certificate waits after
/// the handshake for the server's verdict on it: in TLS 1.3 the server
/// checks the client's certificate after the client's handshake is done,
/// and refuses it with an alert.
const CLIENT_VERDICT_WAIT: Duration = Duration::from_millis(1500);

/// As [`probe`], also checking `expect`'s names and CRLs and presenting its
/// client certificate; `Seen::client_auth` says whether the server asked
/// for one and how the handshake with it ended.
pub async fn probe_with(
    host: &Host,
    port: u16,
    addr: Option<SocketAddr>,
    servername: &Host,
    anchors: Option<Arc<[TrustAnchor<'static>]>>,
    expect: Expect<'_>,
    timeout: Duration,
) -> Result<Seen, ProbeError> {
    let provider = crate::provider();
    let recorder = Arc::new(Recorder {
        anchors,
        names: expect.names.to_vec(),
        crls: expect.crls,
        ct: expect
            .ct
            .unwrap_or_else(|| (LogListInForce::builtin(), CtMode::Report)),
        provider: provider.clone(),
        seen: Mutex::new(Seen::default()),
    });
    let configured = expect.client_cert.is_some();
    let asked = Arc::new(Asked {
        key: expect.client_cert,
        asked: AtomicBool::new(false),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_client_cert_resolver(asked.clone());
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
    seen.client_auth.configured = configured;
    seen.client_auth.requested = asked.asked.load(Ordering::Acquire);
    match hs {
        Err(_) => return Err(ProbeError::HandshakeTimeout),
        // The chain passed; the server refused us (TLS 1.2 fails here).
        Ok(Err(e)) if seen.error.is_none() && seen.client_auth.requested => {
            seen.client_auth.refused = Some(e.to_string());
        }
        Ok(Err(e)) if seen.error.is_none() => {
            if seen.presented.is_empty() {
                return Err(ProbeError::Handshake(e));
            }
            seen.error = Some(format!("TLS handshake failed: {e}"));
        }
        Ok(Ok(mut stream)) if seen.client_auth.requested => {
            // TLS 1.3: the verdict on our certificate comes after our
            // handshake is done, as an alert (or a closed connection).
            let mut byte = [0u8; 1];
            match tokio::time::timeout(CLIENT_VERDICT_WAIT, stream.read(&mut byte)).await {
                Err(_) | Ok(Ok(1..)) => {}
                Ok(Ok(_)) => {
                    seen.client_auth.refused =
                        Some("the server closed the connection right after the handshake".into())
                }
                Ok(Err(e)) => seen.client_auth.refused = Some(e.to_string()),
            }
        }
        _ => {}
    }
    Ok(seen)
}
