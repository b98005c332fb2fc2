//! The file watcher: the pinset's directory (and the directories of the
//! files it names), debounced, each settled burst a [`Reloader`] reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Reloader;

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
                        let max = reloader.caps.pinset.max(reloader.caps.file);
                        self.settle_burst(first, &files, max).await;
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
    async fn settle_burst(&mut self, first: bool, files: &[PathBuf], max: u64) {
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
            settle(files, max).await;
            while self.events.try_recv().is_ok() {}
        }
    }
}

/// Waits (bounded) until the files' contents stop changing. Each is read
/// as a load reads it: only a regular file, and only within `max` bytes
/// (a symlink to `/dev/zero` or a FIFO would never settle, nor return).
pub(super) async fn settle(files: &[PathBuf], max: u64) {
    let digest = |files: Vec<PathBuf>| async move {
        tokio::task::spawn_blocking(move || {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for f in &files {
                // A missing file hashes as missing: its appearing is a change.
                match pinproxy_policy::load::read_capped(f, max) {
                    Ok(Some(b)) => {
                        ctx.update(&(b.len() as u64).to_be_bytes());
                        ctx.update(&b);
                    }
                    Ok(None) => ctx.update(b"+"),
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
pub(super) fn changes_content(kind: &notify::EventKind) -> Option<bool> {
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
