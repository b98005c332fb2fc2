//! Live pins: watches the pinset's directory (and its CA bundles'), the way
//! Kubernetes updates Secret and ConfigMap volumes — a new timestamped
//! directory is written and the `..data` symlink renamed over the old one —
//! debounces bursts, and asks the [`Reloader`] to reload. SIGHUP reloads too.
//! Only events that can change content wake it (writes, close-after-write,
//! create, delete, rename, metadata) — never the opens and reads of the
//! reloader itself — and the reloader skips inputs it has already judged
//! ([`version`]): a bad file fails once per version, not once per event.
//!
//! The [`Reloader`] is the only publisher of snapshots: it reads and
//! validates the pinset off the async workers, builds a whole new snapshot
//! and swaps it in; an invalid file leaves the last good one in force.
//!
//! With `--pinset-key` ([`Signing`]), a version is applied only when its
//! `.sig` verifies and its serial does not go back; a refusal is counted
//! as `bad-signature` or `rollback` and keeps the last good pinset.
//!
//! A load never holds anything another reload waits for: each request is
//! numbered, loads run side by side (at most [`LOADS_IN_FLIGHT`], so memory
//! stays bounded), and a result is judged only if no newer request's result
//! was — a newer file supersedes a parse in progress, and the older result,
//! if it comes back later, is dropped. The loader bounds each file's size
//! and nesting, so no parse runs long in the first place.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use self::signed::Loaded;
use self::version::{Known, Versions};
use super::live::{Live, Publisher};
use pinproxy_policy::load::Caps;
use pinproxy_policy::{self as policy, Mode, Policy, Unlisted};
use pinproxy_reason::ReloadResult;
use pinproxy_tls::ct::{ListError, LogListInForce};
use pinproxy_upstream::{Shared, Snapshot};

pub use self::error::Error;
pub use self::signed::{check_signed, Signing};
pub use self::watch::{Watcher, DEBOUNCE};

/// Loads that may run at once: the one in progress and the newest. A third
/// request waits for a slot, and skips its load if a newer one came since.
pub const LOADS_IN_FLIGHT: usize = 2;

/// Reads and validates a pinset file within these caps.
type Load = dyn Fn(&Path, Caps) -> Result<Policy, policy::Error> + Send + Sync;

/// Re-reads the pinset and publishes new snapshots.
pub struct Reloader {
    publisher: Publisher,
    /// What every snapshot is built from.
    shared: Shared,
    pins_path: PathBuf,
    /// `--ct-log-list`: read at every reload like the pinset (`None`: the
    /// built-in list).
    ct_log_list: Option<PathBuf>,
    /// What a load may read: the pinset file, each file it names, CRL
    /// entries.
    caps: Caps,
    /// [`policy::load::load_with`]; tests hold a load back with theirs.
    load: Arc<Load>,
    /// Numbers reload requests, newest last.
    requested: AtomicU64,
    loads: Semaphore,
    /// The newest request whose result was judged (published, unchanged or
    /// refused). Held only to judge and publish, never across a load.
    judged: Mutex<u64>,
    /// Reloads failed since the last one that succeeded.
    failing: AtomicU64,
    /// The inputs in force and the ones that failed last (held only
    /// briefly, never while a file is read).
    versions: std::sync::Mutex<Versions>,
    /// With `--pinset-key`: the keys and the rollback floor.
    signing: Option<Arc<Signing>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Swapped(u64),
    Unchanged(u64),
    /// A newer request's result was judged first (or is on its way): this
    /// one's was dropped unpublished.
    Superseded,
    /// The inputs are the version that failed last, byte for byte: not
    /// loaded, counted or logged again ([`Reloader::reload_changed`]).
    StillInvalid,
}

// === impl Reloader ===

impl Reloader {
    /// `max_bytes`: the pinset file's size limit
    /// ([`policy::load::DEFAULT_MAX_BYTES`] unless the operator set one);
    /// the files it names get the default [`Caps`].
    pub fn new(
        publisher: Publisher,
        shared: Shared,
        pins_path: PathBuf,
        max_bytes: u64,
    ) -> Arc<Self> {
        let caps = Caps {
            pinset: max_bytes,
            ..Caps::default()
        };
        Self::with_caps(publisher, shared, pins_path, caps)
    }

    /// As [`Reloader::new`], with every cap given.
    pub fn with_caps(
        publisher: Publisher,
        shared: Shared,
        pins_path: PathBuf,
        caps: Caps,
    ) -> Arc<Self> {
        Arc::new(Self {
            publisher,
            shared,
            pins_path,
            ct_log_list: None,
            caps,
            load: Arc::new(policy::load::load_with),
            requested: AtomicU64::new(0),
            loads: Semaphore::new(LOADS_IN_FLIGHT),
            judged: Mutex::new(0),
            failing: AtomicU64::new(0),
            versions: std::sync::Mutex::default(),
            signing: None,
        })
    }

    /// As [`Reloader::with_caps`], applying only pinsets signed with
    /// `signing`'s keys whose serial does not go back.
    pub fn signed(
        publisher: Publisher,
        shared: Shared,
        pins_path: PathBuf,
        caps: Caps,
        signing: Signing,
    ) -> Arc<Self> {
        let mut this = Self::with_caps(publisher, shared, pins_path, caps);
        if let Some(r) = Arc::get_mut(&mut this) {
            r.signing = Some(Arc::new(signing));
        }
        this
    }

    /// Also reads the CT log list from `list` at every reload (its size
    /// limit is the caps' `file`); call it right after construction.
    pub fn with_ct_log_list(mut this: Arc<Self>, list: Option<PathBuf>) -> Arc<Self> {
        if let Some(r) = Arc::get_mut(&mut this) {
            r.ct_log_list = list;
        }
        this
    }

    /// The CT log list file read at every reload (`None`: built in).
    pub fn ct_log_list(&self) -> Option<&Path> {
        self.ct_log_list.as_deref()
    }

    /// The keys and floor, with `--pinset-key`.
    pub fn signing(&self) -> Option<&Signing> {
        self.signing.as_deref()
    }

    pub fn live(&self) -> &Arc<Live> {
        self.publisher.live()
    }

    pub fn pins_path(&self) -> &Path {
        &self.pins_path
    }

    /// Re-reads the pinset (off the async workers), validates it, builds a
    /// whole new snapshot and swaps it in. An invalid file leaves the last
    /// good snapshot in force. Asked for by SIGHUP: always loads, and logs
    /// and counts a failure every time.
    pub async fn reload(&self) -> Result<Reloaded, Error> {
        self.run(false).await
    }

    /// As [`reload`](Self::reload), for the watcher: inputs that are the
    /// version in force, or the version that failed last, are not loaded
    /// again — a bad file is counted and logged once per version of it,
    /// however many events arrive while it stays bad.
    pub async fn reload_changed(&self) -> Result<Reloaded, Error> {
        self.run(true).await
    }

    /// The files the pinset text last read names, valid or not: the
    /// watcher watches them too, so fixing a file a failed version named
    /// is seen.
    pub fn named_files(&self) -> Vec<PathBuf> {
        self.lock_versions().named()
    }

    fn lock_versions(&self) -> std::sync::MutexGuard<'_, Versions> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(&self, skip_known: bool) -> Result<Reloaded, Error> {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let (loaded, digest) = {
            // The semaphore is never closed: the slot is always granted.
            let _slot = self.loads.acquire().await;
            if self.requested.load(Ordering::Acquire) != ticket {
                // A newer request reads the file after us anyway.
                return Ok(Reloaded::Superseded);
            }
            let digest = self.digest().await;
            if skip_known {
                match self.lock_versions().judge(digest) {
                    Known::Failed => {
                        tracing::debug!("pinset inputs unchanged since the reload that failed");
                        return Ok(Reloaded::StillInvalid);
                    }
                    // After failures, a load says the file recovered.
                    Known::InForce if self.failing.load(Ordering::Acquire) == 0 => {
                        return Ok(Reloaded::Unchanged(self.live().load().generation));
                    }
                    Known::InForce | Known::New => {}
                }
            }
            (self.load().await, digest)
        };
        let mut judged = self.judged.lock().await;
        if *judged > ticket {
            tracing::debug!("a newer pinset was judged while this one loaded; dropping it");
            return Ok(Reloaded::Superseded);
        }
        *judged = ticket;
        let result = match loaded {
            Ok((loaded, list)) => self.apply(loaded, list).await,
            Err(e) => Err(e),
        };
        match &result {
            Err(e) => self.failed(e, digest),
            Ok(Reloaded::Swapped(generation) | Reloaded::Unchanged(generation)) => {
                {
                    let mut versions = self.lock_versions();
                    versions.in_force = digest;
                    versions.failed = None;
                }
                self.publisher
                    .metrics()
                    .config_last_reload_successful
                    .set(1);
                let failed = self.failing.swap(0, Ordering::AcqRel);
                if failed > 0 {
                    tracing::info!(
                        generation,
                        failed_reloads = failed,
                        "pinset reload recovered: the file is valid again"
                    );
                }
            }
            Ok(Reloaded::Superseded | Reloaded::StillInvalid) => {}
        }
        result
    }

    /// Reads and validates the pinset (and with `--pinset-key` checks its
    /// signature and serial), and the CT log list, off the async workers.
    async fn load(&self) -> Result<(Loaded, Arc<LogListInForce>), Error> {
        let (path, caps, load) = (self.pins_path.clone(), self.caps, self.load.clone());
        let (signing, list) = (self.signing.clone(), self.ct_log_list.clone());
        tokio::task::spawn_blocking(move || {
            let loaded = match signing {
                Some(signing) => signing.load(&path, caps)?,
                None => Loaded {
                    policy: load(&path, caps)?,
                    accepted: None,
                },
            };
            Ok((loaded, read_ct_list(list.as_deref(), caps.file)?))
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Load(policy::Error::Read {
                path: self.pins_path.clone(),
                source: std::io::Error::other(e.to_string()),
            }))
        })
    }

    /// Swaps a loaded pinset in (a signed one only if its serial is still
    /// not below the floor) and, when signed, raises the floor.
    async fn apply(&self, loaded: Loaded, list: Arc<LogListInForce>) -> Result<Reloaded, Error> {
        let signed = self.signing.as_deref().zip(loaded.accepted.as_ref());
        if let Some((signing, accepted)) = signed {
            signing.admit(&self.pins_path, accepted)?;
        }
        let reloaded = self.publish(loaded.policy, list)?;
        if let Some((signing, accepted)) = signed {
            signing.advance(accepted).await;
        }
        Ok(reloaded)
    }

    /// Counts and logs a reload that applied nothing.
    fn failed(&self, e: &Error, digest: Option<version::Digest>) {
        // An unreadable rollback state is retried on every event: it is
        // not this version of the files that failed.
        if !matches!(e, Error::State(_)) {
            self.lock_versions().failed = digest;
        }
        self.failing.fetch_add(1, Ordering::AcqRel);
        let metrics = self.publisher.metrics();
        metrics.config_last_reload_successful.set(0);
        let result = e.result();
        metrics.reloaded(result);
        let readiness = self.signing.as_deref().map(Signing::readiness);
        let nothing_in_force = readiness.is_some_and(|r| r.waiting_for_pinset().is_some());
        if let (Some(r), true) = (readiness, nothing_in_force) {
            r.wait_for_pinset(format!("{}: {e}", result.as_str()));
        }
        match e {
            Error::Refused { sha256, .. } if nothing_in_force => tracing::error!(
                result = result.as_str(),
                sha256 = %sha256,
                key = e.key().unwrap_or_default(),
                error = %e,
                "signed pinset refused; nothing is in force yet, so every request is refused \
                 (retried when the file or its signature changes)"
            ),
            Error::Refused { sha256, .. } => tracing::error!(
                result = result.as_str(),
                sha256 = %sha256,
                key = e.key().unwrap_or_default(),
                error = %e,
                "signed pinset refused; the last good pinset stays in force \
                 (retried when the file or its signature changes)"
            ),
            _ if nothing_in_force => tracing::error!(
                result = result.as_str(),
                error = %e,
                "pinset load failed; nothing is in force yet, so every request is refused \
                 (retried when the file, a file it names or the CT log list changes)"
            ),
            _ => tracing::error!(
                result = result.as_str(),
                error = %e,
                "pinset reload failed; the last good pinset stays in force \
                 (retried when the file, a file it names or the CT log list changes)"
            ),
        }
    }

    /// The digest of the inputs as they are now, taken before they are
    /// loaded (see [`version`]). The files are read off the async workers
    /// and without the `versions` lock: whatever they are, a reload that
    /// judges or fails meanwhile never waits for them.
    async fn digest(&self) -> Option<version::Digest> {
        let mut named = self.lock_versions().names();
        let (path, caps) = (self.pins_path.clone(), self.caps);
        let signed = self.signing.is_some();
        let list = self.ct_log_list.clone();
        let (digest, named) = tokio::task::spawn_blocking(move || {
            let d = version::digest(&path, caps, signed, list.as_deref(), &mut named);
            (d, named)
        })
        .await
        .ok()?;
        self.lock_versions().remember(named);
        Some(digest)
    }

    /// Builds a snapshot of `policy` and swaps it in, unless it is what is
    /// in force already.
    fn publish(
        &self,
        policy: Policy,
        list: Arc<LogListInForce>,
    ) -> Result<Reloaded, policy::Error> {
        let current = self.live().load_full();
        if current.policy.source_hash == policy.source_hash
            && current.ct_list.sha256() == list.sha256()
            && !current.policy.pending
        {
            return Ok(Reloaded::Unchanged(current.generation));
        }
        let generation = current.generation + 1;
        let snapshot = Snapshot::build(policy, list, generation, &self.shared).map_err(|e| {
            policy::Error::Read {
                path: self.pins_path.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let old = self.publisher.publish(snapshot);
        let new = self.live().load_full();
        if old.policy.pending {
            // The first pinset (with --pinset-key): not a reload.
            log_first(&new.policy, generation);
        } else {
            let names: HashSet<&str> = new.policy.hosts.iter().map(|h| h.name.as_str()).collect();
            warn_if_weaker(&old.policy, &new.policy, &names);
            let metrics = self.publisher.metrics();
            metrics.reloaded(ReloadResult::Success);
            let changed = changed(&old, &new);
            match &new.policy.signature {
                // The signature covers the pinset file's bytes alone: when
                // they did not change, saying it verified would vouch for
                // files it does not cover.
                Some(s) if old.policy.pins_sha256 == new.policy.pins_sha256 => tracing::info!(
                    generation,
                    serial = s.serial,
                    key = %s.key,
                    sha256 = %s.sha256,
                    changed,
                    "pinset reloaded (unsigned files changed; the signed pinset did not)"
                ),
                Some(s) => tracing::info!(
                    generation,
                    serial = s.serial,
                    key = %s.key,
                    sha256 = %s.sha256,
                    changed,
                    "pinset reloaded (signature verified)"
                ),
                None => tracing::info!(generation, changed, "pinset reloaded"),
            }
        }
        // An expiring client certificate or an expired CRL is worth a line
        // on every reload, not only at start.
        for w in &new.policy.warnings {
            tracing::warn!(generation, warning = %w, "pinset warning");
        }
        Ok(Reloaded::Swapped(generation))
    }
}

/// What differs between two snapshots' inputs, for the reload line:
/// `pinset`, `named-files` (CA bundles, CRLs, client certificates and keys
/// the pinset names), `ct-log-list`, comma-separated.
fn changed(old: &Snapshot, new: &Snapshot) -> String {
    let pins = old.policy.pins_sha256 != new.policy.pins_sha256;
    let named = old.policy.named_sha256 != new.policy.named_sha256;
    let list = old.ct_list.sha256() != new.ct_list.sha256();
    [
        (pins, "pinset"),
        (named, "named-files"),
        (list, "ct-log-list"),
    ]
    .iter()
    .filter(|(yes, _)| *yes)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(",")
}

/// The CT log list at `path` (the built-in one for `None`), within `max`
/// bytes.
pub fn read_ct_list(path: Option<&Path>, max: u64) -> Result<Arc<LogListInForce>, ListError> {
    match path {
        Some(p) => LogListInForce::read(p, max).map(Arc::new),
        None => Ok(LogListInForce::builtin()),
    }
}

/// The first pinset in force after a start with nothing (`--pinset-key`).
fn log_first(policy: &Policy, generation: u64) {
    match &policy.signature {
        Some(s) => tracing::info!(
            generation,
            serial = s.serial,
            key = %s.key,
            sha256 = %s.sha256,
            "signed pinset in force"
        ),
        None => tracing::info!(generation, "pinset in force"),
    }
}

/// Logs what a reload relaxes: hosts removed, enforce → report, unlisted
/// deny → allow. Legitimate, but worth a line an operator can alert on.
/// `names`: the new pinset's entries.
fn warn_if_weaker(old: &Policy, new: &Policy, names: &HashSet<&str>) {
    let mut weaker = Vec::new();
    if !old.defaults.unlisted.admits() && new.defaults.unlisted.admits() {
        weaker.push(format!(
            "unlisted: deny -> {}",
            if new.defaults.unlisted == Unlisted::Learn {
                "learn"
            } else {
                "allow"
            }
        ));
    }
    let report: HashSet<&str> = new
        .hosts
        .iter()
        .filter(|n| n.mode == Mode::Report)
        .map(|n| n.name.as_str())
        .collect();
    for h in &old.hosts {
        if !names.contains(h.name.as_str()) {
            weaker.push(format!("host {:?} removed", h.name));
        } else if h.mode == Mode::Enforce && report.contains(h.name.as_str()) {
            weaker.push(format!("host {:?}: enforce -> report", h.name));
        }
    }
    if !weaker.is_empty() {
        tracing::warn!(changes = ?weaker, "reloaded pinset relaxes enforcement");
    }
}

/// SIGHUP, listened for from the moment this is made: a SIGHUP that
/// arrives before [`Hangups::spawn`] is not lost (and does not kill the
/// process, which is SIGHUP's default action).
pub struct Hangups(tokio::signal::unix::Signal);

impl Hangups {
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self(signal(SignalKind::hangup())?))
    }

    /// Reloads on every SIGHUP, each in its own task (a signal during a
    /// load starts a newer one), and logs what it did.
    pub fn spawn(mut self, reloader: Arc<Reloader>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut reloads = JoinSet::new();
            loop {
                tokio::select! {
                    sig = self.0.recv() => {
                        if sig.is_none() {
                            break;
                        }
                        tracing::info!("SIGHUP: reloading the pinset");
                        let reloader = reloader.clone();
                        reloads.spawn(async move {
                            match reloader.reload().await {
                                Ok(Reloaded::Swapped(generation)) => {
                                    tracing::info!(generation, "SIGHUP: new pinset in force")
                                }
                                Ok(Reloaded::Unchanged(generation)) => {
                                    tracing::info!(generation, "SIGHUP: pinset unchanged")
                                }
                                Ok(Reloaded::Superseded | Reloaded::StillInvalid) => {
                                    tracing::info!("SIGHUP: a newer reload superseded this one")
                                }
                                Err(e) => tracing::error!(
                                    error = %e,
                                    "SIGHUP: reload failed; the last good pinset stays in force"
                                ),
                            }
                        });
                    }
                    Some(_) = reloads.join_next() => {}
                }
            }
        })
    }
}

mod error;
mod signed;
mod version;
mod watch;

#[cfg(test)]
mod tests;
