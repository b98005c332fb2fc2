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
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinSet;

use self::version::{Known, Versions};
use super::live::{Live, Publisher};
use pinproxy_policy::load::Caps;
use pinproxy_policy::{self as policy, Mode, Policy, Unlisted};
use pinproxy_tls::ct::{ListError, LogListInForce};
use pinproxy_upstream::{Shared, Snapshot};

/// Loads that may run at once: the one in progress and the newest. A third
/// request waits for a slot, and skips its load if a newer one came since.
pub const LOADS_IN_FLIGHT: usize = 2;

/// Reads and validates a pinset file within these caps.
type Load = dyn Fn(&Path, Caps) -> Result<Policy, policy::Error> + Send + Sync;

/// Why a reload left the snapshot in force as it was.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pinset(#[from] policy::Error),
    /// `--ct-log-list` names a file that is not a usable log list.
    #[error(transparent)]
    LogList(#[from] ListError),
    #[error("building the TLS configuration: {0}")]
    Snapshot(#[from] rustls::Error),
}

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
    /// briefly, off the async workers when it reads files).
    versions: Arc<std::sync::Mutex<Versions>>,
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
        Self::with_inputs(publisher, shared, pins_path, None, caps)
    }

    /// As [`Reloader::with_caps`], also reading the CT log list from
    /// `ct_log_list` at every reload (the list's size limit is `caps.file`).
    pub fn with_inputs(
        publisher: Publisher,
        shared: Shared,
        pins_path: PathBuf,
        ct_log_list: Option<PathBuf>,
        caps: Caps,
    ) -> Arc<Self> {
        Arc::new(Self {
            publisher,
            shared,
            pins_path,
            ct_log_list,
            caps,
            load: Arc::new(policy::load::load_with),
            requested: AtomicU64::new(0),
            loads: Semaphore::new(LOADS_IN_FLIGHT),
            judged: Mutex::new(0),
            failing: AtomicU64::new(0),
            versions: Arc::default(),
        })
    }

    pub fn live(&self) -> &Arc<Live> {
        self.publisher.live()
    }

    pub fn pins_path(&self) -> &Path {
        &self.pins_path
    }

    /// The CT log list file read at every reload (`None`: built in).
    pub fn ct_log_list(&self) -> Option<&Path> {
        self.ct_log_list.as_deref()
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
            let (path, caps, load) = (self.pins_path.clone(), self.caps, self.load.clone());
            let list_path = self.ct_log_list.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let policy = load(&path, caps)?;
                Ok((policy, read_ct_list(list_path.as_deref(), caps.file)?))
            })
            .await
            .unwrap_or_else(|e| {
                Err(Error::Pinset(policy::Error::Read {
                    path: self.pins_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }))
            });
            (loaded, digest)
        };
        let mut judged = self.judged.lock().await;
        if *judged > ticket {
            tracing::debug!("a newer pinset was judged while this one loaded; dropping it");
            return Ok(Reloaded::Superseded);
        }
        *judged = ticket;
        let result = loaded.and_then(|(policy, list)| self.publish(policy, list));
        match &result {
            Err(e) => {
                self.lock_versions().failed = digest;
                self.failing.fetch_add(1, Ordering::AcqRel);
                let metrics = self.publisher.metrics();
                metrics.config_last_reload_successful.set(0);
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(
                    error = %e,
                    "pinset reload failed; the last good pinset stays in force \
                     (retried when the file, a file it names or the CT log list changes)"
                );
            }
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

    /// The digest of the inputs as they are now, taken before they are
    /// loaded (see [`version`]).
    async fn digest(&self) -> Option<version::Digest> {
        let (versions, path, max) = (
            self.versions.clone(),
            self.pins_path.clone(),
            self.caps.pinset,
        );
        let list = self.ct_log_list.clone();
        tokio::task::spawn_blocking(move || {
            versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .digest(&path, max, list.as_deref())
        })
        .await
        .ok()
    }

    /// Builds a snapshot of `policy` and swaps it in, unless it is what is
    /// in force already.
    fn publish(&self, policy: Policy, list: Arc<LogListInForce>) -> Result<Reloaded, Error> {
        let current = self.live().load_full();
        if current.policy.source_hash == policy.source_hash
            && current.ct_list.sha256() == list.sha256()
        {
            return Ok(Reloaded::Unchanged(current.generation));
        }
        let generation = current.generation + 1;
        let snapshot = Snapshot::build(policy, list, generation, &self.shared)?;
        let old = self.publisher.publish(snapshot);
        let new = self.live().load_full();
        let names: HashSet<&str> = new.policy.hosts.iter().map(|h| h.name.as_str()).collect();
        warn_if_weaker(&old.policy, &new.policy, &names);
        let metrics = self.publisher.metrics();
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tracing::info!(generation, "pinset reloaded");
        // An expiring client certificate or an expired CRL is worth a line
        // on every reload, not only at start.
        for w in &new.policy.warnings {
            tracing::warn!(generation, warning = %w, "pinset warning");
        }
        Ok(Reloaded::Swapped(generation))
    }
}

/// The CT log list at `path` (the built-in one for `None`), within `max`
/// bytes.
pub fn read_ct_list(path: Option<&Path>, max: u64) -> Result<Arc<LogListInForce>, ListError> {
    match path {
        Some(p) => LogListInForce::read(p, max).map(Arc::new),
        None => Ok(LogListInForce::builtin()),
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

/// How long the watcher waits for a burst of events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches the pinset's directory and its CA bundles' directories.
pub struct Watcher {
    inner: notify::RecommendedWatcher,
    watched: HashSet<PathBuf>,
    /// `true`: the burst contained an in-place content write.
    events: mpsc::Receiver<bool>,
}

impl Watcher {
    /// Starts watching the directory of `pins` now: make the watcher
    /// *before* reading the pinset, so no change after the read is missed.
    pub fn new(pins: &Path) -> Result<Self, notify::Error> {
        let (tx, events) = mpsc::channel::<bool>(64);
        // notify calls back on its own thread: hand events to tokio.
        let inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if let Some(in_place) = changes_content(&event.kind) {
                // Full: a reload is already due, which covers this event.
                let _ = tx.try_send(in_place);
            }
        })?;
        let mut this = Self {
            inner,
            watched: HashSet::new(),
            events,
        };
        this.watch_dir(parent_dir(pins))?;
        Ok(this)
    }

    /// Also watches the directories of every file the pinset in force
    /// names — CA bundles, client certificates and keys, CRLs — since they
    /// may live in another mount (a cert-manager Secret beside the pins).
    /// Also those a version that failed names, so that fixing a bundle
    /// in a directory the pinset in force never named is seen.
    pub fn watch_bundles(&mut self, reloader: &Reloader) -> Result<(), notify::Error> {
        let snap = reloader.live().load();
        for file in snap
            .policy
            .watched_files()
            .into_iter()
            .chain(reloader.named_files())
            .chain(reloader.ct_log_list().map(Path::to_path_buf))
        {
            self.watch_dir(parent_dir(&file))?;
        }
        Ok(())
    }

    /// Also watches the directory of `file` (the CT log list), from now:
    /// call it before the file is first read.
    pub fn watch_file(&mut self, file: &Path) -> Result<(), notify::Error> {
        self.watch_dir(parent_dir(file))
    }

    fn watch_dir(&mut self, dir: PathBuf) -> Result<(), notify::Error> {
        if !self.watched.contains(&dir) {
            self.inner.watch(&dir, RecursiveMode::NonRecursive)?;
            self.watched.insert(dir);
        }
        Ok(())
    }

    /// Reloads on every settled burst of events until the task is aborted
    /// (which drops the reloads it started). Each reload runs as its own
    /// task, so events keep coming in while a file loads: a newer file
    /// starts a newer load rather than waiting for the older one.
    pub fn spawn(mut self, reloader: Arc<Reloader>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut reloads = JoinSet::new();
            loop {
                tokio::select! {
                    event = self.events.recv() => {
                        let Some(first) = event else { break };
                        // The pinset and every file it names: a helper
                        // that rewrites a certificate and then its key in
                        // place must be done with both before the read.
                        let mut files = vec![reloader.pins_path().to_path_buf()];
                        files.extend(reloader.live().load().policy.watched_files());
                        files.extend(reloader.ct_log_list().map(Path::to_path_buf));
                        self.settle_burst(first, &files).await;
                        let reloader = reloader.clone();
                        reloads.spawn(async move {
                            let _ = reloader.reload_changed().await;
                        });
                    }
                    Some(_) = reloads.join_next() => {
                        if let Err(e) = self.watch_bundles(&reloader) {
                            tracing::warn!(error = %e, "watching CA bundle directories");
                        }
                    }
                }
            }
        })
    }

    /// Debounces a burst of events that began with `first`.
    async fn settle_burst(&mut self, first: bool, files: &[PathBuf]) {
        // Let the writer finish its burst of renames.
        tokio::time::sleep(DEBOUNCE).await;
        let mut in_place = first;
        while let Ok(more) = self.events.try_recv() {
            in_place |= more;
        }
        // The kubelet swaps whole directories (renames). A writer that
        // rewrites a file in place can expose a prefix that parses — a
        // host cut off before its `mode: enforce`, a certificate beside the
        // old key — so wait until two reads a debounce apart agree.
        if in_place {
            settle(files).await;
            while self.events.try_recv().is_ok() {}
        }
    }
}

/// Waits (bounded) until the files' contents stop changing.
async fn settle(files: &[PathBuf]) {
    let digest = |files: Vec<PathBuf>| async move {
        tokio::task::spawn_blocking(move || {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for f in &files {
                // A missing file hashes as missing: its appearing is a change.
                match std::fs::read(f) {
                    Ok(b) => {
                        ctx.update(&(b.len() as u64).to_be_bytes());
                        ctx.update(&b);
                    }
                    Err(_) => ctx.update(b"-"),
                }
            }
            ctx.finish().as_ref().to_vec()
        })
        .await
        .ok()
    };
    let mut last = digest(files.to_vec()).await;
    for _ in 0..40 {
        tokio::time::sleep(DEBOUNCE).await;
        let now = digest(files.to_vec()).await;
        if now == last {
            return;
        }
        last = now;
    }
    let first = files.first().map(|p| p.display().to_string());
    tracing::warn!(pinset = ?first, "pinset or its files still changing; reloading anyway");
}

/// Whether an event can change what a reload reads — `Some(true)` for an
/// in-place write — or is only someone reading (`None`). The reloader's
/// own reads open the files: waking on `IN_OPEN` would reload forever.
fn changes_content(kind: &notify::EventKind) -> Option<bool> {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(true),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => Some(true),
        // Create, remove, rename (the kubelet's `..data` swap), metadata
        // (a chmod can make a file readable), and whatever notify cannot
        // classify.
        _ => Some(false),
    }
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
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

mod version;

#[cfg(test)]
mod tests;
