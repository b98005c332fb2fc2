//! `pinproxy run`: the proxy, built by [`crate::app`] from flags (each
//! also an environment variable) and served until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{duration, init_tracing, Error, LogFormat};
use crate::app::{App, CaSource, Config, SigningConfig};
use crate::proxy::Limits;
use crate::upstream::{Budget, Lookups, Options, Timeouts};

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Durations take a unit (500ms, 5s, 2m, 1h) or are seconds. \
Every flag can also be set by the environment variable shown. \
PINPROXY_LOG sets the log filter (error, warn, info, debug, trace, \
or per module, e.g. pinproxy=debug); default info."
)]
#[command(group(
    clap::ArgGroup::new("pinset_keys")
        .args(["pinset_key", "pinset_key_pem"])
        .multiple(true)
))]
pub struct RunArgs {
    /// The pinset file (mount the Secret as a directory, never with subPath).
    #[arg(long, env = "PINPROXY_PINS")]
    pub pins: PathBuf,
    /// Proxy listener. Never defaults to a non-loopback address.
    #[arg(long, env = "PINPROXY_LISTEN", default_value = "127.0.0.1:3128")]
    pub listen: SocketAddr,
    /// Admin listener. /healthz /readyz /metrics are served to every
    /// client; /pins and /learned only to loopback clients (the pod itself,
    /// kubectl port-forward or exec) unless --admin-expose-all.
    #[arg(long, env = "PINPROXY_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Serve /pins and /learned to non-loopback clients too (they reveal
    /// hosts, addresses and learned traffic; restrict the port with a
    /// NetworkPolicy).
    #[arg(long, env = "PINPROXY_ADMIN_EXPOSE_ALL")]
    pub admin_expose_all: bool,
    /// Admin connections served at once; more wait to be accepted, holding
    /// no descriptor of the proxy's.
    #[arg(long, env = "PINPROXY_ADMIN_MAX_CONNECTIONS", default_value_t = 32)]
    pub admin_max_connections: usize,
    /// Time an admin client may take to send a request head (idle
    /// keep-alive included).
    #[arg(long, env = "PINPROXY_ADMIN_HEADER_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub admin_header_timeout: Duration,
    /// CA certificate (PEM) for CONNECT interception, e.g. from a Secret;
    /// without it a CA is generated at start and its key never leaves memory.
    #[arg(long, env = "PINPROXY_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// CA private key (PEM) for --ca-cert.
    #[arg(long, env = "PINPROXY_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Directory for the app's trust files, written before /readyz turns
    /// ready: DIR/ca.crt (the pod CA alone) and DIR/ca-bundle.crt (the pod
    /// CA, Mozilla's roots and every --ca-bundle-extra file).
    #[arg(long, env = "PINPROXY_CA_OUT")]
    pub ca_out: Option<PathBuf>,
    /// A PEM file of CA certificates to add to DIR/ca-bundle.crt, e.g. the
    /// cluster's internal CA, so direct (NO_PROXY) TLS keeps verifying.
    /// Repeatable, or comma-separated.
    #[arg(
        long,
        env = "PINPROXY_CA_BUNDLE_EXTRA",
        value_delimiter = ',',
        requires = "ca_out"
    )]
    pub ca_bundle_extra: Vec<PathBuf>,
    /// Log format: text for people, json (one object per line) for machines.
    /// The filter is PINPROXY_LOG (default info).
    #[arg(long, env = "PINPROXY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Maximum concurrent client connections, all proxy and transparent
    /// listeners together; excess get 503 `overloaded`. Lowered at start,
    /// with a warning, to what the open-files limit carries (two
    /// descriptors each) after a reserve for reloads and the admin port.
    #[arg(long, env = "PINPROXY_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Maximum upstream sockets open at once, for every client and path
    /// together (idle pooled connections included); a dial beyond it gets
    /// 503 `overloaded`. Default: 1024, or the effective --max-connections
    /// if lower. Lowered at start, with a warning, to what the open-files
    /// limit leaves beside the client connections.
    #[arg(long, env = "PINPROXY_MAX_UPSTREAM_CONNECTIONS", value_name = "N")]
    pub max_upstream_connections: Option<usize>,
    /// Resident memory past which pinproxy is overloaded: new client
    /// connections and new requests get 503 `overloaded` (work already
    /// admitted runs on) until it is below 90 % of it again, instead of
    /// the container being OOM-killed. Bytes, or with Ki, Mi, Gi (110Mi);
    /// auto: 90 % of the memory limit of pinproxy's own cgroup, the
    /// smallest from it up to the cgroup mount (v2 memory.max, v1
    /// memory.limit_in_bytes or hierarchical_memory_limit; none: off); 0: off.
    #[arg(
        long,
        env = "PINPROXY_MAX_MEMORY",
        default_value = "auto",
        value_name = "BYTES"
    )]
    pub max_memory: crate::proxy::overload::MaxMemory,
    /// After the memory guard has refused new work this long without a
    /// break, /healthz fails (503, with the reason) so the liveness probe
    /// restarts the container; 0: never.
    #[arg(long, env = "PINPROXY_OVERLOADED_UNHEALTHY_AFTER", default_value = "2m", value_parser = duration::parse)]
    pub overloaded_unhealthy_after: Duration,
    /// Upstream TCP connect timeout (and DNS lookup timeout).
    #[arg(long, env = "PINPROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration::parse)]
    pub connect_timeout: Duration,
    /// Name lookups in flight at most (getaddrinfo holds a thread each
    /// until it returns); a quarter of them are held for hosts the pinset
    /// lists. A lookup that gets no slot within the connect timeout is
    /// `upstream-timeout`.
    #[arg(long, env = "PINPROXY_MAX_DNS_LOOKUPS", default_value_t = Lookups::DEFAULT_MAX)]
    pub max_dns_lookups: usize,
    /// Upstream TLS handshake timeout.
    #[arg(long, env = "PINPROXY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub handshake_timeout: Duration,
    /// Upstream response timeout (request sent to response head).
    #[arg(long, env = "PINPROXY_RESPONSE_TIMEOUT", default_value = "60s", value_parser = duration::parse)]
    pub response_timeout: Duration,
    /// Time a client may take to send a request head, idle keep-alive time
    /// included (hyper's header read timer runs while a connection waits
    /// for its next request).
    #[arg(long, env = "PINPROXY_HEADER_TIMEOUT", default_value = "30s", value_parser = duration::parse)]
    pub header_timeout: Duration,
    /// After SIGTERM, keep serving new connections this long (endpoint
    /// propagation) before draining.
    #[arg(long, env = "PINPROXY_SHUTDOWN_GRACE", default_value = "2s", value_parser = duration::parse)]
    pub shutdown_grace: Duration,
    /// Close CONNECT tunnels and WebSockets idle this long.
    #[arg(long, env = "PINPROXY_TUNNEL_IDLE_TIMEOUT", default_value = "1h", value_parser = duration::parse)]
    pub tunnel_idle_timeout: Duration,
    /// After a reload revokes a host's tunnels and streaming responses, how
    /// long in-flight work may finish before they are closed.
    #[arg(long, env = "PINPROXY_REVOKE_GRACE", default_value = "5s", value_parser = duration::parse)]
    pub revoke_grace: Duration,
    /// How long SIGTERM waits for in-flight requests and tunnels.
    #[arg(long, env = "PINPROXY_DRAIN_TIMEOUT", default_value = "20s", value_parser = duration::parse)]
    pub drain_timeout: Duration,
    /// Bounded cache of minted interception certificates.
    #[arg(long, env = "PINPROXY_LEAF_CACHE", default_value_t = 1024)]
    pub leaf_cache: usize,
    /// Don't watch the pinset directory; reload only on SIGHUP.
    #[arg(long, env = "PINPROXY_NO_WATCH")]
    pub no_watch: bool,
    /// With `defaults.unlisted: learn`: keep the learned chains in this
    /// JSON file (the `GET /learned` document), read at start and saved
    /// every 10 s while new ones arrive, so a restart keeps them.
    #[arg(long, env = "PINPROXY_LEARN_FILE")]
    pub learn_file: Option<PathBuf>,
    /// Transparent listener for connections the kernel redirects to pinproxy
    /// (`pinproxy redirect`), e.g. 127.0.0.1:15001; off by default. With
    /// 127.0.0.1:PORT, [::1]:PORT is listened on too where the pod has IPv6
    /// (IPv6 connections are redirected there). Repeatable, or
    /// comma-separated.
    #[arg(
        long,
        env = "PINPROXY_TRANSPARENT",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub transparent: Vec<SocketAddr>,
    /// A redirected connection whose client sends nothing this long is a
    /// server-first protocol (MySQL, SSH, SMTP): spliced when its
    /// destination is in a `passthrough:` CIDR, else closed and counted
    /// (pinproxy_transparent_connections_total{outcome="silent"}).
    #[arg(long, env = "PINPROXY_TRANSPARENT_FIRST_BYTE_TIMEOUT", default_value = "1s", value_parser = duration::parse)]
    pub transparent_first_byte_timeout: Duration,
    /// Largest pinset file accepted, bytes (a Secret holds at most 1 MiB).
    /// A larger file is refused without being read whole; at a reload the
    /// last good pinset stays in force. Parsing costs ~12 bytes of memory
    /// per byte of YAML: raise the sidecar's memory limit with this.
    #[arg(long, env = "PINPROXY_MAX_PINSET_BYTES", default_value_t = crate::policy::load::DEFAULT_MAX_BYTES)]
    pub max_pinset_bytes: u64,
    /// Largest file the pinset names — CA bundle, client certificate or
    /// key, CRL — bytes. A larger one is refused without being read whole,
    /// and the last good pinset stays in force.
    #[arg(long, env = "PINPROXY_MAX_FILE_BYTES", default_value_t = crate::policy::load::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// Revoked certificates the pinset's CRLs may list, all together; each
    /// costs about 400 bytes of memory while loaded, 200 kept. More is
    /// refused like a broken file.
    #[arg(long, env = "PINPROXY_MAX_CRL_ENTRIES", default_value_t = crate::policy::load::DEFAULT_MAX_CRL_ENTRIES)]
    pub max_crl_entries: usize,
    /// A Certificate Transparency log list (Chrome's v3 `log_list.json`
    /// format) to judge SCTs with instead of the built-in one; watched and
    /// reloaded like the pinset (an invalid list keeps the last good one).
    /// Check a new one with `pinproxy ct-update --from FILE`.
    #[arg(long, env = "PINPROXY_CT_LOG_LIST", value_name = "FILE")]
    pub ct_log_list: Option<PathBuf>,
    /// A public key (PEM: cosign's `cosign.pub`, or the .pub of `pinproxy
    /// keygen`; ECDSA P-256 or Ed25519) the pinset must be signed with:
    /// the file is applied only when `<pins>.sig` beside it verifies with
    /// one of the keys and its `serial:` does not go back. Repeatable, or
    /// comma-separated (the old and the new key during a key rotation).
    /// Mount it from another object than the pins Secret. Until a signed
    /// pinset is applied the proxy refuses everything and /readyz says why.
    #[arg(
        long,
        env = "PINPROXY_PINSET_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub pinset_key: Vec<PathBuf>,
    /// The same keys as --pinset-key, given as text: one or more PEM public
    /// keys, concatenated (any one may verify), alongside or instead of
    /// --pinset-key files. What `pinproxy inject --pinset-key-inline` gives
    /// the sidecar: in the pod spec, a key no object in the workload's
    /// namespace can replace.
    #[arg(
        long,
        env = "PINPROXY_PINSET_KEY_PEM",
        value_name = "PEM",
        hide_env_values = true,
        // A PEM value starts with "-----BEGIN".
        allow_hyphen_values = true
    )]
    pub pinset_key_pem: Vec<String>,
    /// With --pinset-key or --pinset-key-pem: a directory (an emptyDir)
    /// where the highest
    /// serial applied is kept (file `serial`), so a restart does not accept
    /// an older signed pinset. Without it the floor is the first serial
    /// applied after each start.
    #[arg(
        long,
        env = "PINPROXY_STATE_DIR",
        value_name = "DIR",
        requires = "pinset_keys"
    )]
    pub state_dir: Option<PathBuf>,
    /// With --pinset-key or --pinset-key-pem: the lowest serial applied, a
    /// rollback floor every
    /// start begins with (the --state-dir floor is lost with the pod). A
    /// signed pinset with a lower serial is refused `rollback`. Raise it
    /// when retiring a pinned key: to the serial of the
    /// first pinset without it.
    #[arg(
        long,
        env = "PINPROXY_PINSET_MIN_SERIAL",
        value_name = "N",
        requires = "pinset_keys"
    )]
    pub pinset_min_serial: Option<crate::sign::Serial>,
    /// Worker threads (1: a single-threaded runtime, the cheapest per
    /// request; one worker serves tens of thousands of requests/s). Raise
    /// it for a pod whose egress needs more than one CPU; 0 counts as 1.
    #[arg(long, env = "PINPROXY_WORKERS", default_value_t = 1)]
    pub workers: usize,
}

pub fn run(mut args: RunArgs) -> Result<(), Error> {
    init_tracing(args.log_format);
    if let Some(nofile) = super::fds::raise_nofile() {
        let budget = super::fds::connection_budget(nofile, args.admin_max_connections.max(1));
        if args.max_connections > budget {
            tracing::warn!(
                nofile,
                requested = args.max_connections,
                max_connections = budget,
                "--max-connections lowered to what the open-files limit carries (two \
                 descriptors per connection, a reserve for reloads and the admin port); \
                 raise the limit (ulimit -n) for more"
            );
            args.max_connections = budget;
        }
        let admin = args.admin_max_connections.max(1);
        let clients = args.max_connections.max(1);
        let upstream = super::fds::upstream_budget(nofile, admin, clients);
        // The default (1024, or the client connections' number if lower) always fits.
        if let Some(requested) = args.max_upstream_connections.filter(|&r| r > upstream) {
            tracing::warn!(
                nofile,
                requested,
                max_upstream_connections = upstream,
                "--max-upstream-connections lowered to what the open-files limit leaves \
                 beside the client connections and the reserve; raise the limit \
                 (ulimit -n) for more"
            );
            args.max_upstream_connections = Some(upstream);
        }
    }
    // One worker by default, as linkerd2-proxy: a current-thread runtime
    // skips work-stealing and cross-thread wakeups, which cost 1.4–2.7× CPU
    // per request with two workers on two cores (docs/benchmarks.md,
    // "Workers"); a sidecar rarely needs more than one core.
    let workers = args.workers.max(1);
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    rt.enable_all();
    let rt = rt
        .build()
        .map_err(|e| Error::failed(format!("cannot start the runtime: {e}")))?;
    let result = rt.block_on(run_async(args));
    // Dropping a runtime waits for its blocking threads, and one may be
    // parsing a pinset a newer reload superseded: exit without it.
    rt.shutdown_background();
    result
}

/// The runner's settings from the command line.
fn run_config(args: &RunArgs) -> Result<(Config, Duration), Error> {
    let limits = Limits {
        max_connections: args.max_connections.max(1),
        header_read_timeout: args.header_timeout,
        drain_timeout: args.drain_timeout,
        tunnel_idle: args.tunnel_idle_timeout,
        revoke_grace: args.revoke_grace,
        first_byte_timeout: args.transparent_first_byte_timeout,
        overloaded_unhealthy_after: Some(args.overloaded_unhealthy_after).filter(|d| !d.is_zero()),
        ..Limits::default()
    };
    let upstream = Options {
        timeouts: Timeouts {
            connect: args.connect_timeout,
            handshake: args.handshake_timeout,
            response: args.response_timeout,
            ..Timeouts::default()
        },
        max_dns_lookups: args.max_dns_lookups,
        budget: Budget::new(
            args.max_upstream_connections
                .unwrap_or(
                    args.max_connections
                        .min(crate::upstream::budget::DEFAULT_SIZE),
                )
                .max(1),
        ),
        ..Options::default()
    };
    let ca = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => CaSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => CaSource::Generate,
    };
    let config = Config {
        pins: args.pins.clone(),
        listen: args.listen,
        admin: args.admin,
        admin_options: crate::control::admin::Options {
            expose_all: args.admin_expose_all,
            max_connections: args.admin_max_connections.max(1),
            header_timeout: args.admin_header_timeout,
            ..Default::default()
        },
        ca,
        ca_out: args.ca_out.clone(),
        ca_bundle_extra: args.ca_bundle_extra.clone(),
        leaf_cache: args.leaf_cache,
        limits,
        max_memory: args.max_memory,
        upstream,
        watch: !args.no_watch,
        sighup: true,
        // Pod name and namespace from POD_NAME / POD_NAMESPACE.
        reports: crate::control::reports::Options::default(),
        learn_file: args.learn_file.clone(),
        transparent: args.transparent.clone(),
        max_pinset_bytes: args.max_pinset_bytes,
        max_file_bytes: args.max_file_bytes,
        max_crl_entries: args.max_crl_entries,
        ct_log_list: args.ct_log_list.clone(),
        signing: signing(args)?,
    };
    Ok((config, args.shutdown_grace))
}

/// `--pinset-key`, `--pinset-key-pem`, `--state-dir` and
/// `--pinset-min-serial`; `None` without a key.
fn signing(args: &RunArgs) -> Result<Option<SigningConfig>, Error> {
    if args.pinset_key.is_empty() && args.pinset_key_pem.is_empty() {
        return Ok(None);
    }
    let mut all = Vec::new();
    for path in &args.pinset_key {
        all.push(crate::sign::read_key(path).map_err(Error::failed)?);
    }
    for text in &args.pinset_key_pem {
        let inline = crate::sign::parse_keys(text.as_bytes()).map_err(|e| {
            Error::failed(format!("--pinset-key-pem (PINPROXY_PINSET_KEY_PEM): {e}"))
        })?;
        all.extend(inline);
    }
    let keys = crate::sign::KeyRing::new(all).map_err(Error::failed)?;
    for key in keys.keys() {
        tracing::info!(key = %key.id(), algorithm = key.algorithm().as_str(), "pinset key");
    }
    Ok(Some(SigningConfig {
        keys,
        state_dir: args.state_dir.clone(),
        min_serial: args.pinset_min_serial,
    }))
}

async fn run_async(args: RunArgs) -> Result<(), Error> {
    let mut signals =
        Signals::new().map_err(|e| Error::failed(format!("cannot listen for signals: {e}")))?;
    let (config, grace) = run_config(&args)?;
    let app = App::build(config).await.map_err(Error::failed)?;
    // The event a reload logs its warnings as (the first generation is 1;
    // a signed pinset's are logged by the reloader that applies it).
    for w in app.warnings() {
        tracing::warn!(generation = 1, warning = %w, pins = %args.pins.display(), "pinset warning");
    }
    let transparent = if app.transparent_addrs().is_empty() {
        "off".to_string()
    } else {
        let addrs: Vec<String> = app
            .transparent_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        addrs.join(", ")
    };
    match app.readiness().waiting_for_pinset() {
        None => tracing::info!(
            listen = %app.proxy_addr(),
            admin = %app.admin_addr(),
            transparent = %transparent,
            pins = %args.pins.display(),
            "pinproxy ready"
        ),
        Some(why) => tracing::warn!(
            listen = %app.proxy_addr(),
            admin = %app.admin_addr(),
            transparent = %transparent,
            pins = %args.pins.display(),
            waiting = %why,
            "pinproxy serving but NOT READY: no pinset in force, every request is refused \
             (no-pinset) until a validly signed pinset is applied"
        ),
    }
    if !args.admin.ip().is_loopback() && !args.admin_expose_all {
        tracing::info!(
            admin = %app.admin_addr(),
            "admin: /healthz /readyz /metrics for every client; /pins and /learned for loopback \
             clients only (kubectl port-forward); --admin-expose-all serves them to all"
        );
    }
    let readiness = app.readiness().clone();
    let shutdown = async move {
        signals.recv().await;
        // /readyz turns 503 at once; new connections are still served for
        // the grace period while endpoints propagate, then we drain.
        readiness.start_draining();
        tracing::info!(grace = ?grace, "shutting down: not ready, serving through the grace period");
        // A second signal exits at once.
        tokio::spawn(async move {
            signals.recv().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(0);
        });
        tokio::time::sleep(grace).await;
        tracing::info!("draining in-flight requests and tunnels");
    };
    app.serve(shutdown).await;
    Ok(())
}

/// SIGTERM and SIGINT, listened for from the moment this is made: a
/// signal that arrives while the proxy is still starting is not lost.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{run_config, Config, RunArgs};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    /// `Config::default()` is what `pinproxy run` does without flags, so a
    /// test that sets only what it changes runs the proxy users run.
    #[test]
    fn no_flags_give_the_default_config() {
        let cli = Cli::try_parse_from(["pinproxy", "--pins", "/pins/pins.yaml"]).unwrap();
        let (config, _) = run_config(&cli.run).unwrap();
        let want = Config {
            pins: "/pins/pins.yaml".into(),
            ..Config::default()
        };
        assert_eq!(format!("{config:?}"), format!("{want:?}"));
    }
}
