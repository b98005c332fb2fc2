//! Validating an entry's identity and revocation fields (docs/reference.md,
//! "Host fields"):
//! `client_cert`, `names`, `crls` and `crl_policy`.

use std::sync::Arc;

use super::identity::{self, ClientCert, CrlPolicy, Crls, Name};
use super::{ClientCertWire, Entry, Trust, Validator};

// === impl Validator ===

impl Validator<'_> {
    /// `client_cert:`: the pair read together, once however many entries
    /// name it; a key that does not match its certificate is an error.
    pub(super) fn client_cert(
        &mut self,
        e: &Entry<'_>,
        w: ClientCertWire,
    ) -> Option<Arc<ClientCert>> {
        let mut empty = false;
        for (field, raw) in [("client_cert.cert", &w.cert), ("client_cert.key", &w.key)] {
            if raw.trim().is_empty() {
                self.field_err(e, field, "empty: a path relative to the pinset file");
                empty = true;
            }
        }
        if empty {
            return None;
        }
        let (cert, key) = (self.file_path(&w.cert), self.file_path(&w.key));
        let cache_key = (cert.shown.clone(), key.shown.clone());
        if let Some(c) = self.client_certs.get(&cache_key) {
            return Some(c.clone());
        }
        match identity::read_client_cert(&cert, &key, self.now, self.caps.file) {
            Ok(identity::ReadClientCert {
                cert: c,
                bytes: [cert_bytes, key_bytes],
                warnings,
            }) => {
                for w in warnings {
                    self.field_warn(e, "client_cert", w);
                }
                self.bundles.push((cert.shown, cert_bytes));
                // Hashed with the rest, never kept or shown.
                self.bundles.push((key.shown, key_bytes));
                let c = Arc::new(c);
                self.client_certs.insert(cache_key, c.clone());
                Some(c)
            }
            Err(err) => {
                self.field_err(e, "client_cert", err.to_string());
                None
            }
        }
    }

    /// `names:`: DNS names and URIs (SPIFFE IDs exact or `…/*`).
    pub(super) fn names(&mut self, e: &Entry<'_>, raw: Option<Vec<String>>) -> Vec<Name> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        if raw.is_empty() {
            self.field_err(
                e,
                "names",
                "empty: omit names (the host name is checked) or list the SANs to accept",
            );
        }
        let mut out: Vec<Name> = Vec::with_capacity(raw.len());
        for (i, n) in raw.iter().enumerate() {
            match Name::parse(n) {
                Ok(name) if out.contains(&name) => {
                    self.field_err(e, &format!("names[{i}]"), format!("duplicate name {name}"))
                }
                Ok(name) => out.push(name),
                Err(err) => self.field_err(e, &format!("names[{i}]"), err.to_string()),
            }
        }
        out
    }

    /// `crls:` and `crl_policy:`; an expired CRL is a warning that says
    /// what the policy makes of it.
    pub(super) fn crls(
        &mut self,
        e: &Entry<'_>,
        raw: Option<Vec<String>>,
        policy: Option<CrlPolicy>,
        trust: &Trust,
    ) -> Option<Arc<Crls>> {
        let Some(raw) = raw else {
            if policy.is_some() {
                self.field_err(e, "crl_policy", "set without crls: list the CRL files");
            }
            return None;
        };
        let policy = policy.unwrap_or_default();
        if raw.is_empty() {
            self.field_err(e, "crls", "empty: omit crls or list CRL files (PEM or DER)");
            return None;
        }
        if matches!(trust, Trust::PinOnly) {
            self.field_err(
                e,
                "crls",
                "trust: pin-only validates no chain, so there is no path to check a CRL on",
            );
            return None;
        }
        let mut files = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let field = format!("crls[{i}]");
            if r.trim().is_empty() {
                self.field_err(e, &field, "empty path");
                continue;
            }
            let path = self.file_path(r);
            let loaded = match self.crl_files.get(&path.shown) {
                Some(l) => l.clone(),
                None => match identity::read_crl(
                    &path,
                    self.caps.file,
                    identity::EntryBudget {
                        left: self.caps.crl_entries.saturating_sub(self.crl_entries),
                        total: self.caps.crl_entries,
                    },
                ) {
                    Ok((loaded, bytes)) => {
                        self.crl_entries += loaded.file.revoked;
                        self.bundles.push((path.shown.clone(), bytes));
                        let loaded = Arc::new(loaded);
                        self.crl_files.insert(path.shown.clone(), loaded.clone());
                        loaded
                    }
                    Err(err) => {
                        self.field_err(e, &field, err.to_string());
                        continue;
                    }
                },
            };
            if files
                .iter()
                .any(|(f, _): &(Arc<identity::CrlFile>, _)| f.path == path.shown)
            {
                self.field_err(e, &field, format!("duplicate CRL file {r:?}"));
                continue;
            }
            if loaded.file.next_update <= self.now {
                let what = match policy {
                    CrlPolicy::UseExpired => {
                        "still used (crl_policy: use-expired): what it revokes stays refused; mount a fresh CRL"
                    }
                    CrlPolicy::RefuseExpired => {
                        "crl_policy: refuse-expired — chains it covers are refused until a fresh CRL is mounted"
                    }
                };
                self.field_warn(
                    e,
                    "crls",
                    format!(
                        "{}: the CRL expired (nextUpdate {}); {what}",
                        path.shown.display(),
                        loaded.file.next_update
                    ),
                );
            }
            files.push((loaded.file.clone(), loaded));
        }
        // webpki consults the first CRL whose issuer matches a certificate's.
        let mut issuers = std::collections::HashSet::new();
        for issuer in files.iter().flat_map(|(f, _)| f.issuers.iter()) {
            if !issuers.insert(issuer) {
                self.field_warn(
                    e,
                    "crls",
                    format!(
                        "two CRLs from issuer {issuer:?}: only the first listed is consulted; \
                         list only the newest"
                    ),
                );
            }
        }
        Some(Arc::new(Crls::new(files, policy)))
    }
}
