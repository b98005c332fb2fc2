//! The public keys the sidecar verifies the pinset with, and the emptyDir
//! where it keeps the rollback floor (`run --state-dir`) across container
//! restarts. Two ways to give the keys:
//!
//! - `--pinset-key-inline FILE`: the key is read when injecting and put in
//!   the sidecar's env (`PINPROXY_PINSET_KEY_PEM`, read by `run
//!   --pinset-key-pem`). A container's env cannot be changed once the pod
//!   exists, so nobody who edits objects in the workload's namespace can
//!   replace the key.
//! - `--pinset-key-from configmap/…|secret/…`: a projected volume of an
//!   object in the workload's namespace (`run --pinset-key FILE`). Whoever
//!   can edit that object can swap in their own key and sign pinsets with
//!   it; kept for clusters where that object is guarded otherwise.
//!
//! The two are refused together (`options`): a namespace key beside the
//! inline one would verify just as well and reopen the hole.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use pinproxy_sign::PublicKey;
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
/// The sidecar's env variable carrying the inline keys (`run
/// --pinset-key-pem`).
pub const KEY_PEM_ENV: &str = "PINPROXY_PINSET_KEY_PEM";

/// A public key file read when the options are parsed
/// (`--pinset-key-inline FILE`), so a file that is not a public key stops
/// `inject` and `webhook` at start, naming the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineKey {
    pub path: PathBuf,
    pub key: PublicKey,
}

impl InlineKey {
    /// Reads one PEM public key (as `run --pinset-key` does).
    pub fn read(path: &Path) -> Result<Self, pinproxy_sign::KeyFileError> {
        Ok(InlineKey {
            path: path.to_path_buf(),
            key: pinproxy_sign::read_key(path)?,
        })
    }

    /// clap's value parser for `--pinset-key-inline`.
    pub fn parse_arg(value: &str) -> Result<Self, String> {
        Self::read(Path::new(value)).map_err(|e| e.to_string())
    }
}

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

    /// The inline keys, each once, in the order given.
    pub(super) fn inline_keys(&self) -> Vec<&PublicKey> {
        let mut out: Vec<&PublicKey> = Vec::new();
        for k in &self.pinset_key_inline {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// Whether the sidecar verifies signed pinsets (keys either way).
    pub(super) fn signs(&self) -> bool {
        !self.pinset_key_from.is_empty() || !self.pinset_key_inline.is_empty()
    }

    /// `--pinset-key FILE …` (keys from objects), `--state-dir` and
    /// `--pinset-min-serial`, when keys are configured either way.
    pub(super) fn signing_args(&self) -> Vec<String> {
        if !self.signs() {
            return Vec::new();
        }
        let mut args = Vec::new();
        for k in self.pinset_keys() {
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

    /// The sidecar's `PINPROXY_PINSET_KEY_PEM`: the inline keys' PEM,
    /// concatenated (re-encoded from the parsed key, so the same key gives
    /// the same pod whatever the file's line endings); none without.
    pub(super) fn signing_env(&self) -> Vec<Value> {
        let keys = self.inline_keys();
        if keys.is_empty() {
            return Vec::new();
        }
        let pem: String = keys.iter().map(|k| k.to_pem()).collect();
        vec![map([("name", s(KEY_PEM_ENV)), ("value", s(&pem))])]
    }

    /// The keys' projected volume (keys from objects only) and the state
    /// emptyDir; none without keys.
    pub(super) fn signing_volumes(&self) -> Vec<Value> {
        if !self.signs() {
            return Vec::new();
        }
        let keys = self.pinset_keys();
        let mut out = Vec::new();
        if !keys.is_empty() {
            let sources = keys.iter().map(|k| k.projection()).collect();
            out.push(map([
                ("name", s(KEY_VOLUME)),
                ("projected", map([("sources", Value::Sequence(sources))])),
            ]));
        }
        out.push(map([
            ("name", s(STATE_VOLUME)),
            ("emptyDir", map([("sizeLimit", s("1Mi"))])),
        ]));
        out
    }

    /// The sidecar's mounts of [`Self::signing_volumes`].
    pub(super) fn signing_mounts(&self) -> Vec<Value> {
        if !self.signs() {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !self.pinset_keys().is_empty() {
            out.push(map([
                ("name", s(KEY_VOLUME)),
                ("mountPath", s(KEY_DIR)),
                ("readOnly", Value::Bool(true)),
            ]));
        }
        out.push(map([
            ("name", s(STATE_VOLUME)),
            ("mountPath", s(STATE_DIR)),
        ]));
        out
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
            err.contains("--pinset-min-serial needs --pinset-key-inline or --pinset-key-from"),
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

    fn key_pem() -> String {
        let (_, pem) = pinproxy_sign::SigningKey::generate(pinproxy_sign::Algorithm::EcdsaP256)
            .expect("keygen");
        pem.public_pem
    }

    /// `--pinset-key-inline`: the key is in the sidecar's env, the pod has
    /// no key volume (nothing in the namespace to swap), and the state
    /// emptyDir and the floor come as with keys from objects.
    #[test]
    fn inline_keys_go_in_the_sidecars_env_and_no_volume() {
        let (a, b) = (key_pem(), key_pem());
        let parse = |p: &str| PublicKey::from_pem(p.as_bytes()).expect("key");
        let o = InjectOptions {
            pinset_key_inline: vec![parse(&a), parse(&b), parse(&a)],
            pinset_min_serial: Some("7".parse().unwrap()),
            ..InjectOptions::default()
        };
        o.validate().expect("valid");
        assert_eq!(
            o.signing_args(),
            ["--state-dir", STATE_DIR, "--pinset-min-serial", "7"]
        );
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  \
            template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      \
            - {name: app, image: app:1}\n";
        let once = crate::inject::inject_stream(deployment, &o).unwrap();
        let doc: Value = serde_yaml::from_str(&once).unwrap();
        let spec = &doc["spec"]["template"]["spec"];
        let side = &spec["initContainers"][0];
        let env = side["env"].as_sequence().expect("env");
        let pem = env
            .iter()
            .find(|e| e["name"] == s(KEY_PEM_ENV))
            .and_then(|e| e["value"].as_str())
            .expect("PINPROXY_PINSET_KEY_PEM");
        // Each key once, in order, each still a valid key.
        assert_eq!(pem, format!("{a}{b}"));
        assert_eq!(pinproxy_sign::parse_keys(pem.as_bytes()).unwrap().len(), 2);
        let volumes: Vec<&str> = spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(volumes.contains(&STATE_VOLUME), "{volumes:?}");
        assert!(!volumes.contains(&KEY_VOLUME), "{volumes:?}");
        assert!(!once.contains(KEY_DIR), "{once}");
        assert_eq!(
            crate::inject::inject_stream(&once, &o).unwrap(),
            once,
            "idempotent"
        );
        // A pod that arrives with a sidecar carrying another key (its
        // creator's): the injector's keys replace it.
        let c = key_pem();
        let theirs = InjectOptions {
            pinset_key_inline: vec![parse(&c)],
            ..InjectOptions::default()
        };
        let forged = crate::inject::inject_stream(deployment, &theirs).unwrap();
        let fixed = crate::inject::inject_stream(&forged, &o).unwrap();
        let value = |s: &str| serde_yaml::from_str::<Value>(s).unwrap();
        assert_eq!(
            value(&fixed),
            value(&once),
            "the creator's key is replaced (key order aside)"
        );
        // From keys in a ConfigMap to inline keys: the key volume goes.
        let from = InjectOptions {
            pinset_key_from: vec!["configmap/pinset-key".parse().unwrap()],
            ..InjectOptions::default()
        };
        let old = crate::inject::inject_stream(deployment, &from).unwrap();
        assert!(old.contains(KEY_VOLUME));
        let moved = crate::inject::inject_stream(&old, &o).unwrap();
        assert!(
            !moved.contains(KEY_VOLUME) && moved.contains(KEY_PEM_ENV),
            "{moved}"
        );
        // And back without keys: the env goes too.
        let plain = crate::inject::inject_stream(&once, &InjectOptions::default()).unwrap();
        for gone in [KEY_PEM_ENV, "--state-dir", STATE_VOLUME] {
            assert!(!plain.contains(gone), "{gone} left behind:\n{plain}");
        }
    }

    /// A key from the namespace beside the inline one would verify as
    /// well: refused together, saying why.
    #[test]
    fn inline_and_namespace_keys_are_refused_together() {
        let o = InjectOptions {
            pinset_key_inline: vec![PublicKey::from_pem(key_pem().as_bytes()).unwrap()],
            pinset_key_from: vec!["configmap/pinset-key".parse().unwrap()],
            ..InjectOptions::default()
        };
        let err = o.validate().unwrap_err().to_string();
        assert!(
            err.contains("--pinset-key-inline and --pinset-key-from together"),
            "{err}"
        );
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
