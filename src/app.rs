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
use crate::control::logs::LogLimiter;
use crate::control::metrics::{Budgets, Metrics};
use crate::control::reload::{self, Hangups, Signing, Watcher};
use crate::control::reports::{self, Reporter};
use crate::control::telemetry::{Sinks, Telemetry};
use crate::control::{Live, Readiness, Reloader};
use crate::policy::{self, Policy};
use crate::proxy::overload::{self, MaxMemory};
use crate::proxy::{self, transparent, Limits};
use crate::sign::{KeyRing, Serial, StateDir};
use crate::tls::ca::{self, Intercept};
use crate::upstream::{Options, Shared, Snapshot};

mod files;
mod memory;

/// Everything a running proxy is built from.
#[derive(Clone, Debug)]
pub struct Config {
    /// The pinset file (mounted as a directory, never with subPath).
    pub pins: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Who sees what on the admin listener, and what it may cost.
    pub admin_options: admin::Options,
    pub ca: CaSource,
    /// Where `ca.crt` and `ca-bundle.crt` are written for the app (before
    /// readiness).
    pub ca_out: Option<PathBuf>,
    /// PEM files added to `ca-bundle.crt` (e.g. the cluster's internal CA).
    pub ca_bundle_extra: Vec<PathBuf>,
    pub leaf_cache: usize,
    pub limits: Limits,
    /// Resident memory past which new work is refused `overloaded`
    /// (`--max-memory`; `auto` reads the container's limit at build).
    pub max_memory: MaxMemory,
    pub upstream: Options,
    /// Watch the pinset's directory (and its bundles') for changes.
    pub watch: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
    /// How failure reports are queued, limited and delivered.
    pub reports: reports::Options,
    /// Where learn mode keeps what it learned across restarts.
    pub learn_file: Option<PathBuf>,
    /// Transparent listeners (kernel-redirected connections), if any.
    pub transparent: Vec<SocketAddr>,
    /// The pinset file's size limit, bytes: a larger file is refused
    /// unread (at start, and at reload keeping the last good pinset).
    pub max_pinset_bytes: u64,
    /// The same for every file the pinset names (CA bundles, client
    /// certificates and keys, CRLs).
    pub max_file_bytes: u64,
    /// Revoked certificates the pinset's CRLs may list together.
    pub max_crl_entries: usize,
    /// With `--pinset-key`: only pinsets signed with one of these keys,
    /// whose serial never goes back, are applied.
    pub signing: Option<SigningConfig>,
    /// The CT log list file (`None`: the built-in list), read and watched
    /// like the pinset; its size limit is `max_file_bytes`.
    pub ct_log_list: Option<PathBuf>,
}

/// `run --pinset-key`, `--state-dir` and `--pinset-min-serial`.
#[derive(Clone, Debug)]
pub struct SigningConfig {
    pub keys: KeyRing,
    /// Where the highest serial applied is kept across restarts.
    pub state_dir: Option<PathBuf>,
    /// `--pinset-min-serial`: the floor every start begins with.
    pub min_serial: Option<Serial>,
}

/// What `pinproxy run` uses when no flag is given (the pinset path aside):
/// a test or an embedder sets only what it changes,
/// `Config { pins, ..Config::default() }`.
impl Default for Config {
    fn default() -> Self {
        Self {
            pins: PathBuf::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            admin_options: admin::Options::default(),
            ca: CaSource::Generate,
            ca_out: None,
            ca_bundle_extra: Vec::new(),
            leaf_cache: 1024,
            limits: Limits::default(),
            max_memory: MaxMemory::Auto,
            upstream: Options::default(),
            watch: true,
            sighup: true,
            reports: reports::Options::default(),
            learn_file: None,
            transparent: Vec::new(),
            max_pinset_bytes: policy::load::DEFAULT_MAX_BYTES,
            max_file_bytes: policy::load::DEFAULT_MAX_FILE_BYTES,
            max_crl_entries: policy::load::DEFAULT_MAX_CRL_ENTRIES,
            ct_log_list: None,
            signing: None,
        }
    }
}

impl Config {
    /// What one load of the pinset may read.
    pub fn caps(&self) -> policy::load::Caps {
        policy::load::Caps {
            pinset: self.max_pinset_bytes,
            file: self.max_file_bytes,
            crl_entries: self.max_crl_entries,
        }
    }
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
    #[error(transparent)]
    LogList(#[from] crate::tls::ct::ListError),
    #[error("cannot listen on {addr} (set by {flag}): {source}")]
    Bind {
        /// The flag and variable that chose the address.
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--learn-file {path}: {why} (PINPROXY_LEARN_FILE names a file in a writable directory, \
         e.g. an emptyDir)"
    )]
    LearnFile { path: PathBuf, why: String },
    #[error(
        "--state-dir {path}: {why} (PINPROXY_STATE_DIR names an existing directory, e.g. an \
         emptyDir; it is not created, so that a path off the volume cannot lose the rollback \
         floor at every restart)"
    )]
    StateDir { path: PathBuf, why: String },
    #[error(
        "--max-memory {limit} bytes is not above what pinproxy already holds at start \
         ({resident} bytes resident): every connection and request would be refused \
         overloaded from the first sample on; give a limit well above it (PINPROXY_MAX_MEMORY, \
         e.g. 110Mi under a 128Mi container limit), or 0 for off"
    )]
    MaxMemoryTooLow { limit: u64, resident: u64 },
}

/// The flags that choose each listener's address, as a port clash names them.
const LISTEN_FLAG: &str = "--listen / PINPROXY_LISTEN";
const ADMIN_FLAG: &str = "--admin / PINPROXY_ADMIN";
const TRANSPARENT_FLAG: &str = "--transparent / PINPROXY_TRANSPARENT";

/// A proxy that is built — pinset loaded, listeners bound, CA written — but
/// not yet serving.
pub struct App {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    live: Arc<Live>,
    reloader: Arc<Reloader>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    drift: Arc<Drift>,
    /// Key continuity, learned chains, failure reports.
    sinks: Sinks,
    intercept: Arc<Intercept>,
    /// Warnings the pinset loaded with.
    warnings: Vec<policy::Problem>,
    /// Where the transparent listeners are bound (empty: off).
    transparent_addrs: Vec<SocketAddr>,
    listener: TcpListener,
    admin_listener: TcpListener,
    transparent: Vec<TcpListener>,
    ctx: Arc<proxy::Context>,
    /// The memory guard's limit, bytes, and the cgroup `memory.stat`
    /// whose socket buffers it counts (`None`: off).
    memory_limit: Option<memory::Limit>,
    admin: Admin,
    admin_options: admin::Options,
    watcher: Option<Watcher>,
    hangups: Option<Hangups>,
    learn_file: Option<PathBuf>,
}

/// How often learned chains are saved to `--learn-file` while new ones
/// arrive (and once more at shutdown).
const LEARN_SAVE_EVERY: Duration = Duration::from_secs(10);

// === impl App ===

impl App {
    /// Where the proxy listener is bound (the port chosen for `:0`).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Where the admin listener is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the transparent listeners are bound (empty: off).
    pub fn transparent_addrs(&self) -> &[SocketAddr] {
        &self.transparent_addrs
    }

    /// The snapshot in force.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The only publisher of new snapshots.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn drift(&self) -> &Arc<Drift> {
        &self.drift
    }

    /// The pod CA that mints interception certificates.
    pub fn intercept(&self) -> &Arc<Intercept> {
        &self.intercept
    }

    /// Warnings the pinset loaded with.
    pub fn warnings(&self) -> &[policy::Problem] {
        &self.warnings
    }

    pub async fn build(config: Config) -> Result<App, Error> {
        // A pinset that is not there is the error to report, before the
        // watcher has a directory to complain about.
        if let Err(source) = std::fs::metadata(&config.pins) {
            return Err(policy::Error::Read {
                path: config.pins.clone(),
                source,
            }
            .into());
        }
        if let Some(path) = &config.learn_file {
            files::learn_file(path).map_err(|why| Error::LearnFile {
                path: path.clone(),
                why,
            })?;
        }
        if let Some(dir) = config.signing.as_ref().and_then(|s| s.state_dir.as_ref()) {
            files::state_dir(dir).map_err(|why| Error::StateDir {
                path: dir.clone(),
                why,
            })?;
        }
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
        if let (Some(w), Some(list)) = (&mut watcher, &config.ct_log_list) {
            if let Err(e) = w.watch_file(list) {
                tracing::warn!(error = %e, "cannot watch the CT log list's directory; reload with SIGHUP");
            }
        }
        // Listen for SIGHUP before anything can reach the process.
        let hangups = config.sighup.then(Hangups::new).and_then(|h| {
            h.map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
                .ok()
        });
        let readiness = Arc::new(Readiness::default());
        // With a key, nothing is in force until the reloader has checked
        // a signed pinset (below): the sidecar starts refusing everything.
        let signing = config.signing.as_ref().map(|s| {
            let state = s.state_dir.clone().map(StateDir::new);
            Signing::new(s.keys.clone(), state, s.min_serial, readiness.clone())
        });
        let (policy, generation) = match &signing {
            None => (policy::load::load_with(&config.pins, config.caps())?, 1),
            Some(_) => (Policy::pending(), 0),
        };
        let ct_list = reload::read_ct_list(config.ct_log_list.as_deref(), config.max_file_bytes)?;
        let mut warnings = policy.warnings.clone();
        let metrics = Metrics::new();
        let provider = crate::tls::provider();
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
        let listener = bind(config.listen, LISTEN_FLAG).await?;
        let admin_listener = bind(config.admin, ADMIN_FLAG).await?;
        let transparent = bind_transparent(&config.transparent).await?;
        let transparent_addrs: Vec<SocketAddr> = transparent
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let proxy_addr = listener.local_addr().unwrap_or(config.listen);
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin);
        let own_addrs: Vec<SocketAddr> = [admin_addr, proxy_addr]
            .into_iter()
            .chain(transparent_addrs.iter().copied())
            .collect();
        let mut telemetry = Telemetry::new(metrics.clone());
        telemetry.sinks.reporter = Arc::new(Reporter::spawn(
            config.reports.clone(),
            &metrics,
            own_addrs.clone(),
        ));
        if let Some(path) = &config.learn_file {
            restore_learned(&telemetry.sinks, path)?;
        }
        let shared = Shared::new(
            Arc::new(telemetry.clone()),
            config.upstream.clone(),
            own_addrs,
        );
        metrics.watch_capacity(Budgets {
            connections: config.limits.max_connections.max(1),
            upstream: shared.budget.clone(),
            lookups: shared.lookups.clone(),
        });
        let sinks = telemetry.sinks.clone();
        let (live, publisher) = Live::new(
            Snapshot::build(policy, ct_list, generation, &shared)?,
            &telemetry,
        );
        let memory_limit = memory::guard_limit(config.max_memory, overload::resident().ok())
            .map_err(|(limit, resident)| Error::MaxMemoryTooLow { limit, resident })?;
        let ctx = Arc::new(proxy::Context {
            live: live.clone(),
            metrics: metrics.clone(),
            limits: config.limits,
            timeouts: shared.timeouts,
            intercept: intercept.clone(),
            provider: shared.provider.clone(),
            refusal_logs: LogLimiter::new(Duration::from_secs(10), 5),
            connections: proxy::Context::connection_slots(&config.limits),
            overload: Default::default(),
        });
        let drift = telemetry.drift.clone();
        let admin = Admin {
            live: live.clone(),
            metrics: metrics.clone(),
            drift: drift.clone(),
            sinks: sinks.clone(),
            readiness: readiness.clone(),
        };
        let list = config.ct_log_list.clone();
        let reloader = match signing {
            None => Reloader::with_ct_log_list(
                Reloader::with_caps(publisher, shared, config.pins.clone(), config.caps()),
                list,
            ),
            Some(signing) => {
                let r = Reloader::with_ct_log_list(
                    Reloader::signed(
                        publisher,
                        shared,
                        config.pins.clone(),
                        config.caps(),
                        signing,
                    ),
                    list,
                );
                // Refused or not, the process serves: not ready and
                // refusing everything until a signed pinset is applied (the
                // reloader logged and counted why), then as usual.
                let _ = r.reload().await;
                // Logged by the reloader with the pinset it applied.
                warnings.clear();
                r
            }
        };
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
            transparent_addrs,
            listener,
            admin_listener,
            transparent,
            ctx,
            memory_limit,
            admin,
            admin_options: config.admin_options,
            watcher,
            hangups,
            learn_file: config.learn_file,
        })
    }

    /// Serves until `shutdown` resolves, then drains the proxy listener;
    /// the admin listener stays up through the drain (probes see 503 once
    /// [`Readiness::start_draining`] was called) and stops after it.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (admin_stop, mut admin_rx) = tokio::sync::watch::channel(false);
        let admin_task = tokio::spawn(admin::serve(
            self.admin_listener,
            self.admin,
            self.admin_options,
            async move {
                let _ = admin_rx.wait_for(|v| *v).await;
            },
        ));
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
        let trim = Some(tokio::spawn(proxy::memory::trim_after_releases()));
        let guard = self
            .memory_limit
            .map(|memory::Limit { bytes: limit, sock }| {
                let live = self.ctx.live.clone();
                tokio::spawn(overload::guard(overload::Guard {
                    overload: self.ctx.overload.clone(),
                    limit,
                    unhealthy_after: self.ctx.limits.overloaded_unhealthy_after,
                    metrics: self.metrics.clone(),
                    sock,
                    generation: Box::new(move || live.load().generation),
                }))
            });
        // One shutdown for every listener: the transparent ones stop
        // accepting when the proxy listener does.
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let own: Arc<[SocketAddr]> = self.ctx.live.load().connector.own_addrs().into();
        let transparent: Vec<_> = self
            .transparent
            .into_iter()
            .map(|l| {
                let mut rx = stop_rx.clone();
                tokio::spawn(transparent::serve(
                    l,
                    self.ctx.clone(),
                    own.clone(),
                    async move {
                        let _ = rx.wait_for(|v| *v).await;
                    },
                ))
            })
            .collect();
        self.readiness.set_listening();
        proxy::serve(self.listener, self.ctx, async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
        for t in transparent {
            let _ = t.await;
        }
        for task in [watcher, hup, trim, guard].into_iter().flatten() {
            task.abort();
        }
        // What was learned since the last save is written before exit.
        let _ = saved_tx.send(());
        if let Some(saver) = saver {
            let _ = saver.await;
        }
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
    }
}

/// The transparent listeners; with 127.0.0.1:PORT also [::1]:PORT where
/// the pod has IPv6 (`pinproxy redirect` sends IPv6 connections there).
async fn bind_transparent(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, Error> {
    let mut out = Vec::new();
    for addr in addrs {
        out.push(bind(*addr, TRANSPARENT_FLAG).await?);
        let v6 = SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port());
        if addr.ip() == std::net::Ipv4Addr::LOCALHOST && !addrs.contains(&v6) {
            match TcpListener::bind(v6).await {
                Ok(l) => out.push(l),
                Err(e) => tracing::warn!(addr = %v6, error = %e, "no IPv6 transparent listener"),
            }
        }
    }
    Ok(out)
}

/// Restores what an earlier run learned. A file that is not a learned
/// document is moved aside (`….corrupt`) with a warning rather than
/// failing the start: pinproxy is on the app's egress path, and the file
/// is only a cache of what traffic will teach again.
fn restore_learned(sinks: &Sinks, path: &std::path::Path) -> Result<(), Error> {
    match learn::read(path) {
        Ok(Some(doc)) => sinks.learned.restore(doc),
        Ok(None) => {}
        Err(e @ (learn::Error::Parse { .. } | learn::Error::TooLarge { .. })) => {
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

async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { flag, addr, source })
}
