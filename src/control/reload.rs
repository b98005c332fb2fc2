//! Live pins: watches the pinset's directory (and its CA bundles'), the way
//! Kubernetes updates Secret and ConfigMap volumes — a new timestamped
//! directory is written and the `..data` symlink renamed over the old one —
//! debounces bursts, and asks the [`State`] to reload. SIGHUP reloads too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::proxy::State;

/// How long the watcher waits for a burst of events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches until the returned task is dropped or aborted.
pub fn spawn(state: Arc<State>) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    // `true`: the burst contained an in-place content write.
    let (tx, mut rx) = mpsc::channel::<bool>(64);
    // notify calls back on its own thread: hand events to tokio.
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            let in_place = matches!(
                event.kind,
                notify::EventKind::Modify(notify::event::ModifyKind::Data(_))
                    | notify::EventKind::Modify(notify::event::ModifyKind::Any)
            );
            let _ = tx.try_send(in_place);
        }
    })?;
    let mut watched = HashSet::new();
    watch_dirs(&mut watcher, &mut watched, &state)?;
    Ok(tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Debounce: let the writer finish its burst of renames.
            tokio::time::sleep(DEBOUNCE).await;
            let mut in_place = first;
            while let Ok(more) = rx.try_recv() {
                in_place |= more;
            }
            // The kubelet swaps whole directories (renames). A writer that
            // rewrites the file in place can expose a prefix that parses —
            // a host cut off before its `mode: enforce` — so wait until two
            // reads a debounce apart agree.
            if in_place {
                settle(&state.pins_path).await;
                while rx.try_recv().is_ok() {}
            }
            let _ = state.reload().await;
            if let Err(e) = watch_dirs(&mut watcher, &mut watched, &state) {
                tracing::warn!(error = %e, "watching CA bundle directories");
            }
        }
    }))
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

fn watch_dirs(
    watcher: &mut impl Watcher,
    watched: &mut HashSet<PathBuf>,
    state: &State,
) -> Result<(), notify::Error> {
    let snap = state.snapshot.load();
    let files = std::iter::once(state.pins_path.clone()).chain(snap.policy.bundle_paths());
    for file in files {
        let dir = parent_dir(&file);
        if watched.insert(dir.clone()) {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok(())
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reloads on every SIGHUP.
#[cfg(unix)]
pub fn spawn_sighup(state: Arc<State>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the pinset");
            let _ = state.reload().await;
        }
    }))
}
