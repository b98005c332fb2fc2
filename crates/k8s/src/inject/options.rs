//! Checking [`InjectOptions`] before anything is injected: options that
//! would make a pod Kubernetes refuses, or a proxy that cannot start, are
//! refused with the option's name.

use super::identity::{self, IDENTITY_DIR};
use super::trust::CA_EXTRA_DIR;
use super::{is_dns_subdomain, InjectError, InjectOptions};

// === impl InjectOptions ===

impl InjectOptions {
    /// Reject options that would produce a pod Kubernetes refuses or a proxy
    /// that cannot start.
    pub fn validate(&self) -> Result<(), InjectError> {
        let bad = |m: String| Err(InjectError::Options(m));
        if self.image.trim().is_empty() {
            return bad("image is empty".into());
        }
        if !is_dns_subdomain(&self.pins_secret) {
            return bad(format!(
                "secret name {:?} is not a valid Kubernetes name",
                self.pins_secret
            ));
        }
        if let Some(key) = self.key_in(&self.pins_secret) {
            return bad(format!(
                "--pinset-key-from {key} is the pins Secret ({}): whoever writes the pins \
                 could write the key too; keep the key in another object",
                self.pins_secret
            ));
        }
        if !self.pinset_key_inline.is_empty() && !self.pinset_key_from.is_empty() {
            return bad(
                "--pinset-key-inline and --pinset-key-from together: a key from the workload's \
                 namespace would verify as well as the inline one, so whoever can edit that \
                 namespace could still sign pinsets; give the keys inline only"
                    .into(),
            );
        }
        if self.pinset_min_serial.is_some() && !self.signs() {
            return bad(
                "--pinset-min-serial needs --pinset-key-inline or --pinset-key-from: it is a \
                 floor for signed pinsets"
                    .into(),
            );
        }
        if self.proxy_port == 0 || self.admin_port == 0 || self.proxy_port == self.admin_port {
            return bad(format!(
                "ports must be non-zero and distinct (proxy {}, admin {})",
                self.proxy_port, self.admin_port
            ));
        }
        for (what, dir) in [("pins dir", &self.pins_dir), ("ca dir", &self.ca_dir)] {
            if !dir.starts_with('/') || dir.len() < 2 {
                return bad(format!(
                    "{what} {dir:?} must be an absolute path other than /"
                ));
            }
        }
        if self.pins_dir.trim_end_matches('/') == self.ca_dir.trim_end_matches('/') {
            return bad("pins dir and ca dir must differ".into());
        }
        for (what, dir) in [("pins dir", &self.pins_dir), ("ca dir", &self.ca_dir)] {
            if dir.trim_end_matches('/') == CA_EXTRA_DIR {
                return bad(format!("{what} {dir:?} is where the extra CAs are mounted"));
            }
        }
        if let Some(p) = &self.image_pull_policy {
            if !["Always", "IfNotPresent", "Never"].contains(&p.as_str()) {
                return bad(format!(
                    "imagePullPolicy {p:?} is not Always, IfNotPresent or Never"
                ));
            }
        }
        for name in self.identities() {
            identity::check_name(name).or_else(bad)?;
        }
        for (what, dir) in [("pins dir", &self.pins_dir), ("ca dir", &self.ca_dir)] {
            if dir.trim_end_matches('/') == IDENTITY_DIR {
                return bad(format!(
                    "{what} {dir:?} is where identity Secrets are mounted"
                ));
            }
        }
        let r = &self.redirect;
        if r.port == 0 || r.port == self.proxy_port || r.port == self.admin_port {
            return bad(format!(
                "transparent port {} must be non-zero and differ from the proxy and admin ports",
                r.port
            ));
        }
        if r.uid == 0 {
            return bad(
                "transparent UID must not be 0: root's connections would never be redirected"
                    .into(),
            );
        }
        if r.init_image.trim().is_empty() {
            return bad("init image is empty".into());
        }
        if r.ports.contains(&0) {
            return bad("transparent ports must be non-zero".into());
        }
        for cidr in &r.exclude_cidr {
            if let Err(e) = cidr.parse::<crate::redirect::Cidr>() {
                return bad(format!("--transparent-exclude-cidr: {e}"));
            }
        }
        for allow in &r.allow_udp {
            if let Err(e) = allow.parse::<crate::redirect::UdpAllow>() {
                return bad(format!("--transparent-allow-udp: {e}"));
            }
        }
        if !r.lock && (!r.allow_udp.is_empty() || r.log_drops) {
            return bad(
                "--transparent-allow-udp and --transparent-log-drops need --transparent-lock"
                    .into(),
            );
        }
        self.check_learn_file().or_else(bad)?;
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return bad(format!(
                "log format {:?} is not text or json",
                self.log_format
            ));
        }
        Ok(())
    }
}
