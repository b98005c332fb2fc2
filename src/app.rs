//! One place that assembles a running proxy: the pinset, the pod CA, the
//! listeners, the reloader, the admin listener and the metrics. `pinproxy
//! run` and the integration tests both build through here, so the wiring
//! cannot drift between what ships and what is tested.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::control::admin::{self, Admin};
use crate::control::drift::Drift;
use crate::control::learn;
use crate::control::metrics::Metrics;
use crate::control::reload::{Hangups, Watcher};
use crate::control::reports::{self, Reporter};
use crate::control::telemetry::{LogLimiter, Sinks};
use crate::control::{Live, Readiness, Reloader};
use crate::policy;
use crate::proxy::{self, Limits};
use crate::tls::ca::{self, Intercept};
use crate::upstream::{Options, Shared, Snapshot};

/// Everything a running proxy is built from.
#[derive(Clone, Debug)]
pub struct Config {
    /// The pinset file (mounted as a directory, never with subPath).
    pub pins: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub ca: CaSource,
    /// Where `ca.crt` and `ca-bundle.crt` are written for the app (before
    /// readiness).
    pub ca_out: Option<PathBuf>,
    /// PEM files added to `ca-bundle.crt` (e.g. the cluster's internal CA).
    pub ca_bundle_extra: Vec<PathBuf>,
    pub leaf_cache: usize,
    pub limits: Limits,
    pub upstream: Options,
    /// Watch the pinset's directory (and its bundles') for changes.
    pub watch: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
    /// How failure reports are queued, limited and delivered.
    pub reports: reports::Options,
    /// Where learn mode keeps what it learned across restarts.
    pub learn_file: Option<PathBuf>,
}

/// Where the pod CA comes from.
#[derive(Clone, Debug)]
pub enum CaSource {
    /// Made at start; the key never leaves memory.
    Generate,
    /// Loaded from PEM files (e.g. a Secret shared by replicas).
    Files { cert: PathBuf, key: PathBuf },
}

/// Why a proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pinset(#[from] policy::Error),
    #[error(transparent)]
    Ca(#[from] ca::Error),
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Learn(#[from] learn::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A proxy that is built — pinset loaded, listeners bound, CA written — but
/// not yet serving.
pub struct App {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub drift: Arc<Drift>,
    /// Key continuity, learned chains, failure reports.
    pub sinks: Sinks,
    pub intercept: Arc<Intercept>,
    /// Warnings the pinset loaded with.
    pub warnings: Vec<policy::Problem>,
    listener: TcpListener,
    admin_listener: TcpListener,
    ctx: Arc<proxy::Context>,
    admin: Admin,
    watcher: Option<Watcher>,
    hangups: Option<Hangups>,
    learn_file: Option<PathBuf>,
}

/// How often learned chains are saved to `--learn-file` while new ones
/// arrive (and once more at shutdown).
const LEARN_SAVE_EVERY: Duration = Duration::from_secs(10);

// === impl App ===

impl App {
    pub async fn build(config: Config) -> Result<App, Error> {
        // Watch before the first read, so no change after it is missed.
        let mut watcher = config
            .watch
            .then(|| Watcher::new(&config.pins))
            .and_then(|w| {
                w.map_err(|e| {
                tracing::warn!(error = %e, "cannot watch the pinset directory; reload with SIGHUP")
            })
            .ok()
            });
        // Listen for SIGHUP before anything can reach the process.
        let hangups = config.sighup.then(Hangups::new).and_then(|h| {
            h.map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
                .ok()
        });
        let policy = policy::load(&config.pins)?;
        let warnings = policy.warnings.clone();
        let metrics = Metrics::new();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let intercept = Arc::new(match &config.ca {
            CaSource::Generate => Intercept::generate(
                provider.clone(),
                metrics.minted_leaves.clone(),
                config.leaf_cache,
            )?,
            CaSource::Files { cert, key } => Intercept::load(
                cert,
                key,
                provider.clone(),
                metrics.minted_leaves.clone(),
                config.leaf_cache,
            )?,
        });
        let listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin).await?;
        let proxy_addr = listener.local_addr().unwrap_or(config.listen);
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin);
        let mut shared = Shared::new(
            metrics.clone(),
            config.upstream.clone(),
            vec![admin_addr, proxy_addr],
        );
        shared.sinks.reporter = Arc::new(Reporter::spawn(
            config.reports.clone(),
            &metrics,
            vec![admin_addr, proxy_addr],
        ));
        if let Some(path) = &config.learn_file {
            restore_learned(&shared.sinks, path)?;
        }
        let sinks = shared.sinks.clone();
        let (live, publisher) = Live::new(Snapshot::build(policy, 1, &shared)?);
        let readiness = Arc::new(Readiness::default());
        let ctx = Arc::new(proxy::Context {
            live: live.clone(),
            metrics: metrics.clone(),
            limits: config.limits,
            timeouts: shared.timeouts,
            intercept: intercept.clone(),
            provider: shared.provider.clone(),
            refusal_logs: LogLimiter::new(Duration::from_secs(10), 5),
        });
        let drift = shared.drift.clone();
        let admin = Admin {
            live: live.clone(),
            metrics: metrics.clone(),
            drift: drift.clone(),
            sinks: sinks.clone(),
            readiness: readiness.clone(),
        };
        let reloader = Reloader::new(publisher, shared, config.pins.clone());
        if let Some(w) = &mut watcher {
            if let Err(e) = w.watch_bundles(&reloader) {
                tracing::warn!(error = %e, "watching CA bundle directories");
            }
        }
        if let Some(dir) = &config.ca_out {
            let [ca, bundle] = intercept.write_trust(dir, &config.ca_bundle_extra)?;
            tracing::info!(ca = %ca.display(), bundle = %bundle.display(), "wrote the app's trust files");
        }
        readiness.set_ca_written();
        Ok(App {
            proxy_addr,
            admin_addr,
            live,
            reloader,
            readiness,
            metrics,
            drift,
            sinks,
            intercept,
            warnings,
            listener,
            admin_listener,
            ctx,
            admin,
            watcher,
            hangups,
            learn_file: config.learn_file,
        })
    }

    /// Serves until `shutdown` resolves, then drains the proxy listener;
    /// the admin listener stays up through the drain (probes see 503 once
    /// [`Readiness::start_draining`] was called) and stops after it.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let admin_task = tokio::spawn(admin::serve(self.admin_listener, self.admin, async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        }));
        let watcher = self.watcher.map(|w| w.spawn(self.reloader.clone()));
        let hup = self.hangups.map(|h| h.spawn(self.reloader.clone()));
        let (saved_tx, saved_rx) = tokio::sync::oneshot::channel::<()>();
        let saver = self.learn_file.map(|path| {
            tokio::spawn(learn::persist(
                self.sinks.learned.clone(),
                path,
                LEARN_SAVE_EVERY,
                async move {
                    let _ = saved_rx.await;
                },
            ))
        });
        self.readiness.set_listening();
        proxy::serve(self.listener, self.ctx, shutdown).await;
        for task in [watcher, hup].into_iter().flatten() {
            task.abort();
        }
        // What was learned since the last save is written before exit.
        let _ = saved_tx.send(());
        if let Some(saver) = saver {
            let _ = saver.await;
        }
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
    }
}

/// Restores what an earlier run learned. A file that is not a learned
/// document is moved aside (`….corrupt`) with a warning rather than
/// failing the start: pinproxy is on the app's egress path, and the file
/// is only a cache of what traffic will teach again.
fn restore_learned(sinks: &Sinks, path: &std::path::Path) -> Result<(), Error> {
    match learn::read(path) {
        Ok(Some(doc)) => sinks.learned.restore(doc),
        Ok(None) => {}
        Err(e @ learn::Error::Parse { .. }) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".corrupt");
            tracing::warn!(error = %e, moved_to = ?aside, "starting with nothing learned");
            std::fs::rename(path, &aside).map_err(|source| learn::Error::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}
