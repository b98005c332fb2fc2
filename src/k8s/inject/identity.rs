//! Identity Secrets (docs/reference.md, "Host fields"): the client certificate
//! and key pinproxy presents upstream for mTLS, issued by cert-manager, a
//! SPIFFE helper or by hand. Each named Secret is mounted whole (a directory,
//! so kubelet propagates a renewal; never `subPath`), read-only, into the
//! `pinproxy` container only — the app never sees the key — at
//! `/etc/pinproxy-identity/NAME/`. The pinset names the files there, e.g.
//! `client_cert: {cert: /etc/pinproxy-identity/pay-client/tls.crt, key:
//! /etc/pinproxy-identity/pay-client/tls.key}`; they are watched with the
//! pinset.

use serde_yaml::Value;

use super::template::{map, s};
use super::{is_dns_subdomain, InjectOptions};

/// Where the identity Secrets are mounted, one directory per Secret.
pub const IDENTITY_DIR: &str = "/etc/pinproxy-identity";
/// Pod-template annotation adding identity Secrets (comma-separated) to
/// those of `--identity-secret`.
pub const IDENTITY_ANNOTATION: &str = "pinproxy.io/identity-secrets";
/// Prefix of the identity volumes' names (the rest is the Secret's name).
pub(super) const VOLUME_PREFIX: &str = "pinproxy-id-";

/// Why a name cannot be an identity Secret.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if !is_dns_subdomain(name) {
        return Err(format!(
            "identity secret {name:?} is not a valid Secret name"
        ));
    }
    if VOLUME_PREFIX.len() + name.len() > 63 {
        return Err(format!(
            "identity secret {name:?} is too long: its volume name {VOLUME_PREFIX}{name} \
             would exceed 63 characters"
        ));
    }
    Ok(())
}

/// The volume name for a Secret (a DNS label: dots become dashes).
pub(super) fn volume_name(secret: &str) -> String {
    format!("{VOLUME_PREFIX}{}", secret.replace('.', "-"))
}

// === impl InjectOptions ===

impl InjectOptions {
    /// The identity Secrets, each once, in the order given.
    pub(super) fn identities(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for name in &self.identity_secrets {
            let name = name.trim();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// The identity volumes.
    pub(super) fn identity_volumes(&self) -> Vec<Value> {
        self.identities()
            .into_iter()
            .map(|secret| {
                map([
                    ("name", s(&volume_name(secret))),
                    ("secret", map([("secretName", s(secret))])),
                ])
            })
            .collect()
    }

    /// The sidecar's read-only mounts of the identity volumes.
    pub(super) fn identity_mounts(&self) -> Vec<Value> {
        self.identities()
            .into_iter()
            .map(|secret| {
                map([
                    ("name", s(&volume_name(secret))),
                    ("mountPath", s(&format!("{IDENTITY_DIR}/{secret}"))),
                    ("readOnly", Value::Bool(true)),
                ])
            })
            .collect()
    }
}
