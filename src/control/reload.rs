//! Live pins: watches the pinset's directory (and its CA bundles'), the way
//! Kubernetes updates Secret and ConfigMap volumes — a new timestamped
//! directory is written and the `..data` symlink renamed over the old one —
//! debounces bursts, and asks the [`Reloader`] to reload. SIGHUP reloads too.
//!
//! The [`Reloader`] is the only publisher of snapshots: it reads and
//! validates the pinset off the async workers, builds a whole new snapshot
//! and swaps it in; an invalid file leaves the last good one in force.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::live::{Live, Publisher};
use crate::policy::{self, Mode, Policy, Unlisted};
use crate::upstream::{Shared, Snapshot};

/// Re-reads the pinset and publishes new snapshots.
pub struct Reloader {
    publisher: Publisher,
    /// What every snapshot is built from.
    shared: Shared,
    pins_path: PathBuf,
    lock: tokio::sync::Mutex<()>,
    /// Reloads failed since the last one that succeeded.
    failing: std::sync::atomic::AtomicU64,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Swapped(u64),
    Unchanged(u64),
}

// === impl Reloader ===

impl Reloader {
    pub fn new(publisher: Publisher, shared: Shared, pins_path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            publisher,
            shared,
            pins_path,
            lock: tokio::sync::Mutex::new(()),
            failing: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn live(&self) -> &Arc<Live> {
        self.publisher.live()
    }

    pub fn pins_path(&self) -> &Path {
        &self.pins_path
    }

    /// Re-reads the pinset (off the async workers), validates it, builds a
    /// whole new snapshot and swaps it in. An invalid file leaves the last
    /// good snapshot in force.
    pub async fn reload(&self) -> Result<Reloaded, policy::Error> {
        use std::sync::atomic::Ordering;
        let result = self.reload_once().await;
        match &result {
            Err(_) => {
                self.failing.fetch_add(1, Ordering::AcqRel);
            }
            Ok(r) => {
                let failed = self.failing.swap(0, Ordering::AcqRel);
                if failed > 0 {
                    let generation = match r {
                        Reloaded::Swapped(g) | Reloaded::Unchanged(g) => *g,
                    };
                    tracing::info!(
                        generation,
                        failed_reloads = failed,
                        "pinset reload recovered: the file is valid again"
                    );
                }
            }
        }
        result
    }

    async fn reload_once(&self) -> Result<Reloaded, policy::Error> {
        let _guard = self.lock.lock().await;
        let path = self.pins_path.clone();
        let loaded = tokio::task::spawn_blocking(move || policy::load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(policy::Error::Read {
                    path: self.pins_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let metrics = &self.shared.metrics;
        let policy = match loaded {
            Ok(p) => p,
            Err(e) => {
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(error = %e, "pinset reload failed; the last good pinset stays in force");
                return Err(e);
            }
        };
        let current = self.live().load_full();
        if current.policy.source_hash == policy.source_hash {
            return Ok(Reloaded::Unchanged(current.generation));
        }
        let generation = current.generation + 1;
        let snapshot = Snapshot::build(policy, generation, &self.shared).map_err(|e| {
            metrics.config_reloads.with_label_values(&["failure"]).inc();
            policy::Error::Read {
                path: self.pins_path.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let old = self.publisher.publish(snapshot);
        let new = self.live().load_full();
        warn_if_weaker(&old.policy, &new.policy);
        // Series and drift entries of hosts no longer listed go away.
        for gone in old
            .policy
            .hosts
            .iter()
            .filter(|h| !new.policy.hosts.iter().any(|n| n.name == h.name))
        {
            metrics.forget_host(&gone.name);
        }
        for gone in old
            .policy
            .passthrough
            .items()
            .iter()
            .filter(|i| !new.policy.passthrough.items().contains(i))
        {
            metrics.forget_host(gone);
        }
        self.shared
            .drift
            .retain(|h| new.policy.hosts.iter().any(|n| n.name == h));
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tracing::info!(generation, "pinset reloaded");
        Ok(Reloaded::Swapped(generation))
    }
}

/// Logs what a reload relaxes: hosts removed, enforce → report, unlisted
/// deny → allow. Legitimate, but worth a line an operator can alert on.
fn warn_if_weaker(old: &Policy, new: &Policy) {
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
    for h in &old.hosts {
        match new.hosts.iter().find(|n| n.name == h.name) {
            None => weaker.push(format!("host {:?} removed", h.name)),
            Some(n) if h.mode == Mode::Enforce && n.mode == Mode::Report => {
                weaker.push(format!("host {:?}: enforce -> report", h.name))
            }
            Some(_) => {}
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
            if let Ok(event) = res {
                let in_place = matches!(
                    event.kind,
                    notify::EventKind::Modify(notify::event::ModifyKind::Data(_))
                        | notify::EventKind::Modify(notify::event::ModifyKind::Any)
                );
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

    /// Also watches the directories of every CA bundle the pinset in force
    /// names (they may live in another mount).
    pub fn watch_bundles(&mut self, reloader: &Reloader) -> Result<(), notify::Error> {
        let snap = reloader.live().load();
        for file in snap.policy.bundle_paths() {
            self.watch_dir(parent_dir(&file))?;
        }
        Ok(())
    }

    fn watch_dir(&mut self, dir: PathBuf) -> Result<(), notify::Error> {
        if !self.watched.contains(&dir) {
            self.inner.watch(&dir, RecursiveMode::NonRecursive)?;
            self.watched.insert(dir);
        }
        Ok(())
    }

    /// Reloads on every settled burst of events until the task is aborted.
    pub fn spawn(mut self, reloader: Arc<Reloader>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(first) = self.events.recv().await {
                // Debounce: let the writer finish its burst of renames.
                tokio::time::sleep(DEBOUNCE).await;
                let mut in_place = first;
                while let Ok(more) = self.events.try_recv() {
                    in_place |= more;
                }
                // The kubelet swaps whole directories (renames). A writer
                // that rewrites the file in place can expose a prefix that
                // parses — a host cut off before its `mode: enforce` — so
                // wait until two reads a debounce apart agree.
                if in_place {
                    settle(reloader.pins_path()).await;
                    while self.events.try_recv().is_ok() {}
                }
                let _ = reloader.reload().await;
                if let Err(e) = self.watch_bundles(&reloader) {
                    tracing::warn!(error = %e, "watching CA bundle directories");
                }
            }
        })
    }
}

/// Waits (bounded) until the file's content stops changing.
async fn settle(path: &Path) {
    let digest = |path: PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            std::fs::read(&path).ok().map(|b| {
                ring::digest::digest(&ring::digest::SHA256, &b)
                    .as_ref()
                    .to_vec()
            })
        })
        .await
        .ok()
        .flatten()
    };
    let mut last = digest(path.to_path_buf()).await;
    for _ in 0..40 {
        tokio::time::sleep(DEBOUNCE).await;
        let now = digest(path.to_path_buf()).await;
        if now == last {
            return;
        }
        last = now;
    }
    tracing::warn!(path = %path.display(), "pinset file still changing; reloading anyway");
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

    /// Reloads on every SIGHUP, logging what it did.
    pub fn spawn(mut self, reloader: Arc<Reloader>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while self.0.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the pinset");
                match reloader.reload().await {
                    Ok(Reloaded::Swapped(generation)) => {
                        tracing::info!(generation, "SIGHUP: new pinset in force")
                    }
                    Ok(Reloaded::Unchanged(generation)) => {
                        tracing::info!(generation, "SIGHUP: pinset unchanged")
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: reload failed; the last good pinset stays in force"
                    ),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In virtual time: an in-place writer that keeps writing holds the
    /// reload back until two reads a debounce apart agree.
    #[tokio::test(start_paused = true)]
    async fn settle_waits_for_a_writer_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.yaml");
        std::fs::write(&path, "0").unwrap();
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                // Every third of a debounce, off the reader's ticks.
                tokio::time::sleep(DEBOUNCE / 6).await;
                for i in 1..=15 {
                    std::fs::write(&path, i.to_string()).unwrap();
                    tokio::time::sleep(DEBOUNCE / 3).await;
                }
            })
        };
        let start = tokio::time::Instant::now();
        settle(&path).await;
        let waited = start.elapsed();
        assert!(writer.is_finished(), "settled while the writer was writing");
        assert!(
            waited >= DEBOUNCE * 5 && waited <= DEBOUNCE * 8,
            "settled after {waited:?}"
        );
    }
}
