//! `--learn-file`: where the sidecar keeps what learn mode learned across
//! container restarts. The file's directory is its own emptyDir, mounted
//! into the sidecar only: never the CA directory every app container
//! mounts (learned traffic is the pod's business, not the app's), never
//! the read-only pins or identity mounts.

use std::path::Path;

use serde_yaml::Value;

use super::identity::IDENTITY_DIR;
use super::signing::{KEY_DIR, STATE_DIR};
use super::trust::CA_EXTRA_DIR;
use super::yaml::{map, s};
use super::InjectOptions;

/// Volume holding the learn file's directory.
pub const LEARN_VOLUME: &str = "pinproxy-learn";

// === impl InjectOptions ===

impl InjectOptions {
    /// The learn file's directory, if one is configured.
    fn learn_dir(&self) -> Option<&str> {
        let file = self.learn_file.as_deref()?;
        Path::new(file).parent()?.to_str()
    }

    /// The emptyDir for the learn file (a disk volume: the learn document
    /// grows to a few MiB at most, and memory counts against the pod).
    pub(super) fn learn_volume(&self) -> Option<Value> {
        self.learn_dir()?;
        Some(map([
            ("name", s(LEARN_VOLUME)),
            ("emptyDir", map([("sizeLimit", s("64Mi"))])),
        ]))
    }

    /// The sidecar's mount of [`Self::learn_volume`].
    pub(super) fn learn_mount(&self) -> Option<Value> {
        let dir = self.learn_dir()?;
        Some(map([("name", s(LEARN_VOLUME)), ("mountPath", s(dir))]))
    }

    /// `--learn-file` must name a file in a directory of its own.
    pub(super) fn check_learn_file(&self) -> Result<(), String> {
        let Some(file) = self.learn_file.as_deref() else {
            return Ok(());
        };
        let bad = |why: &str| {
            Err(format!(
                "--learn-file {file:?}: {why}; use a path such as /var/lib/pinproxy/learned.json"
            ))
        };
        let path = Path::new(file);
        if !path.is_absolute() || file.ends_with('/') || path.file_name().is_none() {
            return bad("must be an absolute path to a file");
        }
        let dir = self.learn_dir().unwrap_or("/").trim_end_matches('/');
        if dir.is_empty() {
            return bad("its directory must not be /");
        }
        let taken = [
            (
                "the pins directory (read-only)",
                self.pins_dir.trim_end_matches('/'),
            ),
            (
                "the CA directory every app container mounts",
                self.ca_dir.trim_end_matches('/'),
            ),
            ("where the extra CAs are mounted", CA_EXTRA_DIR),
            ("where identity Secrets are mounted", IDENTITY_DIR),
            ("where the pinset keys are mounted", KEY_DIR),
            ("the rollback state directory", STATE_DIR),
        ];
        for (what, other) in taken {
            if dir == other || dir.starts_with(&format!("{other}/")) {
                return bad(&format!("its directory is {what}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(file: &str) -> InjectOptions {
        InjectOptions {
            learn_file: Some(file.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_learn_file_gets_a_directory_of_its_own() {
        let o = with("/var/lib/pinproxy/learned.json");
        assert!(o.check_learn_file().is_ok());
        assert_eq!(
            o.learn_mount().unwrap()["mountPath"].as_str(),
            Some("/var/lib/pinproxy")
        );
        assert!(InjectOptions::default().learn_volume().is_none());
        for bad in [
            "learned.json",
            "/learned.json",
            "/var/lib/pinproxy/",
            "/var/run/pinproxy/learned.json",
            "/etc/pinproxy/learned.json",
            "/etc/pinproxy-identity/x/learned.json",
            "/etc/pinproxy-ca-extra/learned.json",
        ] {
            let err = with(bad).check_learn_file().unwrap_err();
            assert!(err.starts_with("--learn-file"), "{bad}: {err}");
        }
    }
}
