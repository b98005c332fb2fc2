//! `--pinset-key-from`: the public keys the sidecar verifies the pinset
//! with (`run --pinset-key`), mounted from objects other than the pins
//! Secret, and the emptyDir where it keeps the rollback floor
//! (`run --state-dir`) across container restarts.

use std::fmt;
use std::str::FromStr;

use serde_yaml::Value;

use super::trust::{ExtraCa, ExtraCaKind};
use super::yaml::{map, s};
use super::InjectOptions;

/// Volume holding the pinset keys (a projected volume, read-only).
pub const KEY_VOLUME: &str = "pinproxy-pinset-key";
/// Where [`KEY_VOLUME`] is mounted in the sidecar.
pub const KEY_DIR: &str = "/etc/pinproxy-pinset-key";
/// The emptyDir for `--state-dir`.
pub const STATE_VOLUME: &str = "pinproxy-state";
/// Where [`STATE_VOLUME`] is mounted in the sidecar.
pub const STATE_DIR: &str = "/var/lib/pinproxy-state";
/// The key read when `:KEY` is not given: the name `cosign
/// generate-key-pair` writes.
pub const DEFAULT_KEY: &str = "cosign.pub";

/// A public key in a ConfigMap or Secret: `configmap/NAME[:KEY]` or
/// `secret/NAME[:KEY]`, KEY defaulting to `cosign.pub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinsetKey(ExtraCa);

impl FromStr for PinsetKey {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let with_key = match value.split_once('/') {
            Some((_, rest)) if !rest.contains(':') => format!("{value}:{DEFAULT_KEY}"),
            _ => value.to_string(),
        };
        with_key
            .parse::<ExtraCa>()
            .map(PinsetKey)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for PinsetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PinsetKey {
    fn path(&self) -> String {
        let kind = match self.0.kind {
            ExtraCaKind::ConfigMap => "configmap",
            ExtraCaKind::Secret => "secret",
        };
        format!("{kind}/{}/{}", self.0.name, self.0.key)
    }

    /// The sidecar's `--pinset-key` argument.
    pub fn file(&self) -> String {
        format!("{KEY_DIR}/{}", self.path())
    }

    fn projection(&self) -> Value {
        let items = Value::Sequence(vec![map([
            ("key", s(&self.0.key)),
            ("path", s(&self.path())),
        ])]);
        let field = match self.0.kind {
            ExtraCaKind::ConfigMap => "configMap",
            ExtraCaKind::Secret => "secret",
        };
        map([(field, map([("name", s(&self.0.name)), ("items", items)]))])
    }
}

// === impl InjectOptions ===

impl InjectOptions {
    /// The keys, each once, in the order given.
    pub(super) fn pinset_keys(&self) -> Vec<&PinsetKey> {
        let mut out: Vec<&PinsetKey> = Vec::new();
        for k in &self.pinset_key_from {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// `--pinset-key FILE …`, `--state-dir` and `--pinset-min-serial`, when
    /// keys are configured.
    pub(super) fn signing_args(&self) -> Vec<String> {
        let keys = self.pinset_keys();
        if keys.is_empty() {
            return Vec::new();
        }
        let mut args = Vec::new();
        for k in keys {
            args.extend(["--pinset-key".to_string(), k.file()]);
        }
        args.extend(["--state-dir".to_string(), STATE_DIR.to_string()]);
        if let Some(min) = self.pinset_min_serial {
            args.extend(["--pinset-min-serial".to_string(), min.to_string()]);
        }
        args
    }

    /// Whether `secret` (a pins Secret) is also where a pinset key is read
    /// from: whoever writes the pins could then write the key too.
    pub(super) fn key_in(&self, secret: &str) -> Option<&PinsetKey> {
        self.pinset_key_from
            .iter()
            .find(|k| k.0.kind == ExtraCaKind::Secret && k.0.name == secret)
    }

    /// The keys' projected volume and the state emptyDir; none without keys.
    pub(super) fn signing_volumes(&self) -> Vec<Value> {
        let keys = self.pinset_keys();
        if keys.is_empty() {
            return Vec::new();
        }
        let sources = keys.iter().map(|k| k.projection()).collect();
        vec![
            map([
                ("name", s(KEY_VOLUME)),
                ("projected", map([("sources", Value::Sequence(sources))])),
            ]),
            map([
                ("name", s(STATE_VOLUME)),
                ("emptyDir", map([("sizeLimit", s("1Mi"))])),
            ]),
        ]
    }

    /// The sidecar's mounts of [`Self::signing_volumes`].
    pub(super) fn signing_mounts(&self) -> Vec<Value> {
        if self.pinset_keys().is_empty() {
            return Vec::new();
        }
        vec![
            map([
                ("name", s(KEY_VOLUME)),
                ("mountPath", s(KEY_DIR)),
                ("readOnly", Value::Bool(true)),
            ]),
            map([("name", s(STATE_VOLUME)), ("mountPath", s(STATE_DIR))]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_cosigns_default_key() {
        let k: PinsetKey = "configmap/pinproxy-pinset-key".parse().unwrap();
        assert_eq!(
            k.file(),
            "/etc/pinproxy-pinset-key/configmap/pinproxy-pinset-key/cosign.pub"
        );
        let k: PinsetKey = "secret/keys:next.pub".parse().unwrap();
        assert_eq!(k.file(), "/etc/pinproxy-pinset-key/secret/keys/next.pub");
        for bad in [
            "",
            "keys",
            "pod/x",
            "configmap/",
            "configmap/x:",
            "configmap/x:a/b",
        ] {
            assert!(bad.parse::<PinsetKey>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn keys_bring_the_state_dir() {
        let mut o = InjectOptions::default();
        assert!(o.signing_args().is_empty() && o.signing_volumes().is_empty());
        o.pinset_key_from = vec![
            "configmap/a".parse().unwrap(),
            "configmap/b:new.pub".parse().unwrap(),
            "configmap/a".parse().unwrap(),
        ];
        assert_eq!(
            o.signing_args(),
            [
                "--pinset-key",
                "/etc/pinproxy-pinset-key/configmap/a/cosign.pub",
                "--pinset-key",
                "/etc/pinproxy-pinset-key/configmap/b/new.pub",
                "--state-dir",
                STATE_DIR,
            ]
        );
        assert_eq!(o.signing_volumes().len(), 2);
        assert_eq!(o.signing_mounts().len(), 2);
    }

    /// The floor a new pod starts with: in the pod's args, which the pins
    /// Secret's writer cannot change.
    #[test]
    fn the_minimum_serial_goes_to_the_sidecar() {
        let o = InjectOptions {
            pinset_key_from: vec!["configmap/a".parse().unwrap()],
            pinset_min_serial: Some("4".parse().unwrap()),
            ..InjectOptions::default()
        };
        o.validate().expect("valid");
        let args = o.signing_args();
        assert_eq!(
            args[args.len() - 2..],
            ["--pinset-min-serial".to_string(), "4".to_string()]
        );
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  \
            template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      \
            - {name: app, image: app:1}\n";
        let out = crate::inject::inject_stream(deployment, &o).unwrap();
        assert!(out.contains("--pinset-min-serial"), "{out}");
        // Without keys it would be ignored: refused instead.
        let alone = InjectOptions {
            pinset_min_serial: Some("4".parse().unwrap()),
            ..InjectOptions::default()
        };
        let err = alone.validate().unwrap_err().to_string();
        assert!(
            err.contains("--pinset-min-serial needs --pinset-key-from"),
            "{err}"
        );
    }

    /// `--help` says "never the pins Secret": whoever writes the pins
    /// would also write the key.
    #[test]
    fn the_key_is_never_read_from_the_pins_secret() {
        let o = InjectOptions {
            pinset_key_from: vec!["secret/pinproxy-pins:cosign.pub".parse().unwrap()],
            ..InjectOptions::default()
        };
        let err = o.validate().unwrap_err().to_string();
        assert!(err.contains("is the pins Secret (pinproxy-pins)"), "{err}");
        // A ConfigMap of the same name is another object.
        let o = InjectOptions {
            pinset_key_from: vec!["configmap/pinproxy-pins".parse().unwrap()],
            ..InjectOptions::default()
        };
        o.validate().expect("a ConfigMap is not the Secret");
        // A template naming the key's Secret as its pins Secret.
        let o = InjectOptions {
            pinset_key_from: vec!["secret/keys".parse().unwrap()],
            ..InjectOptions::default()
        };
        o.validate().expect("valid");
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    \
            pinproxy.io/pins-secret: keys\nspec:\n  containers:\n  - {name: app, image: app:1}\n";
        let err = crate::inject::inject_stream(pod, &o)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pinproxy.io/pins-secret")
                && err.contains("--pinset-key-from secret/keys"),
            "{err}"
        );
        let other = pod.replace("pins-secret: keys", "pins-secret: shop-pins");
        crate::inject::inject_stream(&other, &o).expect("another Secret");
    }

    #[test]
    fn a_template_gets_the_keys_and_the_state_dir_and_loses_them_again() {
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  \
            template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      \
            - {name: app, image: app:1}\n";
        let o = InjectOptions {
            pinset_key_from: vec!["configmap/pinset-key".parse().unwrap()],
            ..InjectOptions::default()
        };
        let once = crate::inject::inject_stream(deployment, &o).unwrap();
        for needle in [
            "--pinset-key",
            "/etc/pinproxy-pinset-key/configmap/pinset-key/cosign.pub",
            "--state-dir",
            STATE_DIR,
            KEY_VOLUME,
            STATE_VOLUME,
            "name: pinset-key",
        ] {
            assert!(once.contains(needle), "{needle} missing:\n{once}");
        }
        assert_eq!(
            crate::inject::inject_stream(&once, &o).unwrap(),
            once,
            "idempotent"
        );
        // Keys removed: the volumes and flags go with them.
        let plain = crate::inject::inject_stream(&once, &InjectOptions::default()).unwrap();
        for gone in ["--pinset-key", "--state-dir", KEY_VOLUME, STATE_VOLUME] {
            assert!(!plain.contains(gone), "{gone} left behind:\n{plain}");
        }
        // The same document as injecting without keys (key order aside).
        let value = |s: &str| serde_yaml::from_str::<Value>(s).unwrap();
        assert_eq!(
            value(&plain),
            value(&crate::inject::inject_stream(deployment, &InjectOptions::default()).unwrap())
        );
    }
}
