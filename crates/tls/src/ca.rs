//! The pod-local CA that lets pinproxy terminate a client's TLS inside a
//! CONNECT tunnel (under TLS 1.3 the server certificate is encrypted, so a
//! proxy cannot check pins by watching bytes).
//!
//! The CA is loaded (`--ca-cert/--ca-key`, e.g. from a Secret) or generated
//! at start (ECDSA P-256; the key never leaves memory). Its certificate is
//! written atomically to `--ca-out DIR/ca.crt` before readiness. Leaves are
//! minted per host (ECDSA, short validity) and kept in a bounded cache.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use pinproxy_policy::host::Host;
use pinproxy_policy::pemfile;
use pinproxy_reason::LeafResult;
use prometheus::IntCounterVec;

/// How long a minted leaf is valid, and when the cache re-mints it.
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
const LEAF_REFRESH: Duration = Duration::from_secs(12 * 3600);

/// Resumable sessions kept for all minted leaves together (rustls keeps
/// 256 per config by default: ~70 KiB per leaf, ~90 MiB at a full leaf
/// cache, review 9). Two TLS 1.3 tickets per full handshake; measured
/// ~0.8 MiB when full. Past it the oldest go: a full handshake, not a fault.
const SESSIONS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the app's trust file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA: {0}")]
    Ca(String),
    #[error("minting a leaf for {host}: {detail}")]
    Mint { host: String, detail: String },
}

pub struct Intercept {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    ca_pem: String,
    provider: Arc<CryptoProvider>,
    cache: Mutex<LeafCache>,
    /// `pinproxy_intercept_leaf_certificates_total{result}`.
    minted: IntCounterVec,
    /// One bounded session store behind every minted config, each config
    /// seeing only its own host's part of it (`Sessions`).
    sessions: Arc<ServerSessionMemoryCache>,
}

impl std::fmt::Debug for Intercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept").finish_non_exhaustive()
    }
}

/// A minted config's view of the shared session store: keys are prefixed
/// with the host, so a session (or TLS 1.3 ticket) issued under one minted
/// leaf is never found under another. rustls refuses a resumption whose SNI
/// differs, but IP hosts have no SNI, and which config serves a connection
/// is pinproxy's choice (the CONNECT target), not the client's.
#[derive(Debug)]
struct Sessions {
    prefix: Vec<u8>,
    store: Arc<ServerSessionMemoryCache>,
}

struct LeafCache {
    capacity: usize,
    entries: HashMap<Host, (Instant, Arc<ServerConfig>)>,
    order: VecDeque<Host>,
}

// === impl Intercept ===

impl Intercept {
    /// Generates a fresh CA that lives only in this process.
    pub fn generate(
        provider: Arc<CryptoProvider>,
        minted: IntCounterVec,
        capacity: usize,
    ) -> Result<Self, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Ca(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "pinproxy");
        dn.push(DnType::CommonName, "pinproxy pod CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::Ca(e.to_string()))?;
        Ok(Self::from_parts(cert, key, provider, minted, capacity))
    }

    /// Loads a CA certificate and key (PEM) — for instance from a Secret.
    pub fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        minted: IntCounterVec,
        capacity: usize,
    ) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_file = read(cert)?;
        let key_pem = read(key)?;
        // Only the certificate is published to the app: a combined
        // cert+key file must never leak its key into ca.crt.
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_file.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Ca(format!("{}: {}", cert.display(), pemfile::describe(&e))))?;
        let [ca_der] = certs.as_slice() else {
            return Err(Error::Ca(format!(
                "{}: expected exactly one CERTIFICATE block, found {}",
                cert.display(),
                certs.len()
            )));
        };
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| {
            // rcgen's PEM errors quote the file (the `pem` crate's text):
            // a key file is never quoted.
            let why = match e {
                rcgen::Error::PemError(_) => "not a PEM private key (every -----BEGIN and \
                     -----END line must be a line of its own)"
                    .to_string(),
                other => other.to_string(),
            };
            Error::Ca(format!("{}: {why}", key.display()))
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(ca_der.as_ref())
            .map_err(|e| Error::Ca(format!("{}: {e}", cert.display())))?;
        if parsed.tbs_certificate.subject_pki.raw != key_pair.public_key_der().as_slice() {
            return Err(Error::Ca(format!(
                "{} does not hold the private key of {}",
                key.display(),
                cert.display()
            )));
        }
        let params = CertificateParams::from_ca_cert_der(ca_der)
            .map_err(|e| Error::Ca(format!("{}: {e}", cert.display())))?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(Error::Ca(format!(
                "{} is not a CA certificate",
                cert.display()
            )));
        }
        // rcgen signs with an issuer object; the clients trust the original
        // certificate, which has the same subject, key and key identifier.
        let issuer = params
            .self_signed(&key_pair)
            .map_err(|e| Error::Ca(e.to_string()))?;
        let mut this = Self::from_parts(issuer, key_pair, provider, minted, capacity);
        this.ca_pem = der_to_pem(ca_der.as_ref());
        Ok(this)
    }

    fn from_parts(
        ca_cert: rcgen::Certificate,
        ca_key: KeyPair,
        provider: Arc<CryptoProvider>,
        minted: IntCounterVec,
        capacity: usize,
    ) -> Self {
        let ca_pem = ca_cert.pem();
        Self {
            ca_cert,
            ca_key,
            ca_pem,
            provider,
            cache: Mutex::new(LeafCache {
                capacity: capacity.max(1),
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            minted,
            sessions: ServerSessionMemoryCache::new(SESSIONS),
        }
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the app's trust files into `dir`, each atomically (a temp
    /// file renamed, so an app never reads half a file): `ca.crt`, the pod CA
    /// alone (for runtimes that *add* a CA, such as Node's
    /// `NODE_EXTRA_CA_CERTS`), and `ca-bundle.crt`, the pod CA, Mozilla's
    /// roots and every certificate in `extra` (for runtimes whose variable
    /// *replaces* the default roots, such as `SSL_CERT_FILE`: direct
    /// `NO_PROXY` calls and unlisted tunnels, which show the real server's
    /// certificate, must still verify). Returns the two paths.
    pub fn write_trust(&self, dir: &Path, extra: &[PathBuf]) -> Result<[PathBuf; 2], Error> {
        let mut bundle = String::with_capacity(256 * 1024);
        bundle.push_str("# pinproxy pod CA\n");
        bundle.push_str(&self.ca_pem);
        for file in extra {
            let bytes = std::fs::read(file).map_err(|source| Error::Read {
                path: file.clone(),
                source,
            })?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Ca(format!("{}: {}", file.display(), pemfile::describe(&e))))?;
            if certs.is_empty() {
                return Err(Error::Ca(format!(
                    "{}: no PEM CERTIFICATE block (--ca-bundle-extra)",
                    file.display()
                )));
            }
            bundle.push_str(&format!("# from {}\n", file.display()));
            for cert in &certs {
                bundle.push_str(&der_to_pem(cert.as_ref()));
            }
        }
        bundle.push_str("# Mozilla's roots (webpki-root-certs)\n");
        for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            bundle.push_str(&der_to_pem(cert.as_ref()));
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok([
            write_atomic(dir, "ca.crt", self.ca_pem.as_bytes())?,
            write_atomic(dir, "ca-bundle.crt", bundle.as_bytes())?,
        ])
    }

    /// The TLS server config presenting a leaf for `host`, minted on first
    /// use and then served from the cache.
    pub fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, Error> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((minted, cfg)) = cache.entries.get(host) {
                if minted.elapsed() < LEAF_REFRESH {
                    self.minted
                        .with_label_values(&[LeafResult::Cached.as_str()])
                        .inc();
                    return Ok(cfg.clone());
                }
            }
        }
        // Minting happens outside the lock; two racing first requests for
        // one host may both mint, and one result wins.
        let cfg = Arc::new(self.mint(host)?);
        self.minted
            .with_label_values(&[LeafResult::Minted.as_str()])
            .inc();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache
            .entries
            .insert(host.clone(), (Instant::now(), cfg.clone()))
            .is_none()
        {
            cache.order.push_back(host.clone());
        }
        while cache.entries.len() > cache.capacity {
            match cache.order.pop_front() {
                Some(old) => {
                    cache.entries.remove(&old);
                }
                None => break,
            }
        }
        Ok(cfg)
    }

    pub fn cached_leaves(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    fn mint(&self, host: &Host) -> Result<ServerConfig, Error> {
        let fail = |detail: String| Error::Mint {
            host: host.to_string(),
            detail,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| fail(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.to_string());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match host {
            Host::Name(n) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| fail(e.to_string()))?,
            ),
            Host::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + LEAF_VALIDITY;
        let leaf = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .map_err(|e| fail(e.to_string()))?;
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| fail(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.session_storage = Arc::new(Sessions::new(host, self.sessions.clone()));
        Ok(cfg)
    }
}

// === impl Sessions ===

impl Sessions {
    fn new(host: &Host, store: Arc<ServerSessionMemoryCache>) -> Self {
        // Length-prefixed, so no host's prefix is the start of another's.
        let name = host.to_string().into_bytes();
        let mut prefix = Vec::with_capacity(name.len() + 2);
        prefix.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
        prefix.extend_from_slice(&name);
        Self { prefix, store }
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }
}

impl StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.store.put(self.key(&key), value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.get(&self.key(key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.take(&self.key(key))
    }

    fn can_cache(&self) -> bool {
        self.store.can_cache()
    }
}

/// Writes `dir/name` through a temp file and a rename.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<PathBuf, Error> {
    let wrap = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    std::fs::write(&tmp, contents).map_err(wrap(&tmp))?;
    std::fs::rename(&tmp, &dst).map_err(wrap(&dst))?;
    Ok(dst)
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A server config that refuses every handshake with a TLS alert: rustls
/// answers `handshake_failure` when no certificate resolves.
pub fn refusing_config(provider: Arc<CryptoProvider>) -> Option<Arc<ServerConfig>> {
    #[derive(Debug)]
    struct Nothing;
    impl rustls::server::ResolvesServerCert for Nothing {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()
        .map(|b| {
            Arc::new(
                b.with_no_client_auth()
                    .with_cert_resolver(Arc::new(Nothing)),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::ServerName;

    #[test]
    fn cache_reuses_and_stays_bounded() {
        let provider = crate::provider();
        let minted =
            IntCounterVec::new(prometheus::Opts::new("minted", "test"), &["result"]).unwrap();
        let i = Intercept::generate(provider, minted, 2).unwrap();
        let a = Host::parse("a.test").unwrap();
        let first = i.server_config(&a).unwrap();
        let again = i.server_config(&a).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a cached leaf must be reused");
        i.server_config(&Host::parse("b.test").unwrap()).unwrap();
        i.server_config(&Host::parse("c.test").unwrap()).unwrap();
        assert_eq!(i.cached_leaves(), 2);
        let a2 = i.server_config(&a).unwrap();
        assert!(!Arc::ptr_eq(&first, &a2), "the oldest entry was evicted");
    }

    /// Any name's ticket, offered for any name: what a confused or hostile
    /// client could do. rustls' own client keys tickets by name.
    #[derive(Debug, Default)]
    struct AnyTicket(Mutex<Vec<rustls::client::Tls13ClientSessionValue>>);

    impl rustls::client::ClientSessionStore for AnyTicket {
        fn set_kx_hint(&self, _: ServerName<'static>, _: rustls::NamedGroup) {}
        fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
            None
        }
        fn set_tls12_session(
            &self,
            _: ServerName<'static>,
            _: rustls::client::Tls12ClientSessionValue,
        ) {
        }
        fn tls12_session(
            &self,
            _: &ServerName<'_>,
        ) -> Option<rustls::client::Tls12ClientSessionValue> {
            None
        }
        fn remove_tls12_session(&self, _: &ServerName<'static>) {}
        fn insert_tls13_ticket(
            &self,
            _: ServerName<'static>,
            value: rustls::client::Tls13ClientSessionValue,
        ) {
            self.0.lock().unwrap().push(value);
        }
        fn take_tls13_ticket(
            &self,
            _: &ServerName<'static>,
        ) -> Option<rustls::client::Tls13ClientSessionValue> {
            self.0.lock().unwrap().pop()
        }
    }

    /// A handshake in memory, pumped until the client has read the
    /// server's tickets; returns how the client saw it end.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> rustls::HandshakeKind {
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(client, name).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        for _ in 0..8 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            s.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        c.handshake_kind().unwrap()
    }

    /// Minted configs share one session store, but a session issued under
    /// one host's leaf resumes only under that host: never under another
    /// name (rustls checks the SNI too) nor another IP (no SNI to check).
    #[test]
    fn sessions_resume_only_under_the_host_that_issued_them() {
        use rustls::HandshakeKind::{Full, Resumed};
        let provider = crate::provider();
        let minted =
            IntCounterVec::new(prometheus::Opts::new("minted", "test"), &["result"]).unwrap();
        let i = Intercept::generate(provider.clone(), minted, 8).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(i.ca_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        for (a, b) in [("a.test", "b.test"), ("10.0.0.1", "10.0.0.2")] {
            let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            client.resumption = rustls::client::Resumption::store(Arc::new(AnyTicket::default()));
            let client = Arc::new(client);
            let cfg_a = i.server_config(&Host::parse(a).unwrap()).unwrap();
            let cfg_b = i.server_config(&Host::parse(b).unwrap()).unwrap();
            assert_eq!(handshake(cfg_a.clone(), client.clone(), a), Full, "{a}");
            assert_eq!(
                handshake(cfg_a.clone(), client.clone(), a),
                Resumed,
                "{a}: a minted leaf still resumes its own sessions"
            );
            assert_eq!(
                handshake(cfg_b.clone(), client.clone(), b),
                Full,
                "{b} must not resume {a}'s session"
            );
        }
    }

    /// `ca-bundle.crt` is written from `webpki-root-certs` while the
    /// verifier trusts `webpki-roots`: the two crates must carry the same
    /// roots, or an app trusting the bundle disagrees with pinproxy about
    /// which chains validate (1.0.11 of the one with 1.0.10 of the other
    /// left two roots out of the bundle).
    #[test]
    fn bundle_roots_are_the_verifier_roots() {
        let bundle = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let verifier = webpki_roots::TLS_SERVER_ROOTS;
        assert_eq!(
            bundle.len(),
            verifier.len(),
            "webpki-root-certs and webpki-roots differ in size: keep their versions in step"
        );
        for cert in bundle {
            let anchor = webpki::anchor_from_trusted_cert(cert).unwrap();
            assert!(
                verifier.iter().any(|a| a.subject == anchor.subject
                    && a.subject_public_key_info == anchor.subject_public_key_info),
                "a root in webpki-root-certs is not a webpki-roots anchor"
            );
        }
    }
}
