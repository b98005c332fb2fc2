//! The serving certificate, re-read from its files so that renewals
//! (cert-manager, a Secret volume update) are served from the next
//! handshake, while a broken pair keeps the old one in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::WebhookError;

/// Serving certificate that follows its files.
#[derive(Debug)]
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

// === impl CertReloader ===

impl CertReloader {
    /// Load the pair; fails when either file is missing or unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, WebhookError> {
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        let key = certified_key(&cert_pem, &key_pem, cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Loaded {
                cert_pem,
                key_pem,
                key,
            }),
        })
    }

    /// Re-read both files; swap in the pair when it changed and is valid.
    /// `Ok(true)` when a new pair is now served. Blocking file I/O: call it
    /// from `spawn_blocking`.
    pub fn reload_if_changed(&self) -> Result<bool, WebhookError> {
        let (cert_pem, key_pem) = read_pair(&self.cert_path, &self.key_path)?;
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.cert_pem == cert_pem && cur.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = certified_key(&cert_pem, &key_pem, &self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            cert_pem,
            key_pem,
            key,
        };
        Ok(true)
    }

    /// The certificate chain currently served (DER, leaf first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .key
            .cert
            .clone()
    }

    /// A rustls server config that resolves every handshake through `self`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Tls {
                path: "<config>".into(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), WebhookError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| WebhookError::Tls {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, WebhookError> {
    let tls_err = |p: &Path, reason: String| WebhookError::Tls {
        path: p.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        // Never the parser's text: it quotes the file, which may hold a key
        // (a combined cert+key PEM pasted onto one line).
        .map_err(|_| {
            tls_err(
                cert_path,
                "bad PEM: a block without its own -----BEGIN/-----END lines, or not base64".into(),
            )
        })?;
    if chain.is_empty() {
        return Err(tls_err(cert_path, "no CERTIFICATE block".into()));
    }
    // Never print the key's parse error detail: it could echo key bytes.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| tls_err(key_path, "no usable PRIVATE KEY block".into()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| tls_err(key_path, format!("unsupported key: {e}")))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        // Key types whose public key rustls cannot extract: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
        Err(e) => Err(tls_err(
            key_path,
            format!("key does not match certificate: {e}"),
        )),
    }
}
