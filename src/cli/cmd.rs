//! The `run`, `pin` and `check` commands. Exit codes: 0 success, 1 the thing
//! checked is bad, 2 usage error.

use std::path::Path;
use std::time::Duration;

use crate::app::{App, CaSource, Config};
use crate::cli::{CheckArgs, LogFormat, PinArgs, RunArgs};
use crate::policy::host::Host;
use crate::policy::pin::Pin;
use crate::policy::{self, Trust};
use crate::proxy::Limits;
use crate::tls::cert::{self, CertInfo};
use crate::tls::probe;
use crate::tls::verdict::{judge, Outcome};
use crate::upstream::{Options, Timeouts};

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PINPROXY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn secs(v: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

pub fn run(args: RunArgs) -> u8 {
    init_tracing(args.log_format);
    // One worker per CPU the pod may use (std reads the cgroup quota). With
    // one, a current-thread runtime skips work-stealing overhead entirely.
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    rt.enable_all();
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pinproxy: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run_async(args))
}

/// The runner's settings from the command line; a bad duration is a usage
/// error (exit 2).
fn run_config(args: &RunArgs) -> Result<(Config, Duration), String> {
    let limits = Limits {
        max_connections: args.max_connections.max(1),
        header_read_timeout: secs(args.header_timeout, "header-timeout")?,
        drain_timeout: secs(args.drain_timeout, "drain-timeout")?,
        tunnel_idle: secs(args.tunnel_idle_timeout, "tunnel-idle-timeout")?,
        revoke_grace: secs(args.revoke_grace, "revoke-grace")?,
        ..Limits::default()
    };
    let upstream = Options {
        timeouts: Timeouts {
            connect: secs(args.connect_timeout, "connect-timeout")?,
            handshake: secs(args.handshake_timeout, "handshake-timeout")?,
            response: secs(args.response_timeout, "response-timeout")?,
            ..Timeouts::default()
        },
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
        ca,
        ca_out: args.ca_out.clone(),
        leaf_cache: args.leaf_cache,
        limits,
        upstream,
        watch: !args.no_watch,
        sighup: true,
    };
    Ok((config, secs(args.shutdown_grace, "shutdown-grace")?))
}

async fn run_async(args: RunArgs) -> u8 {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pinproxy: cannot listen for signals: {e}");
            return 1;
        }
    };
    let (config, grace) = match run_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinproxy: {e}");
            return 2;
        }
    };
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("pinproxy: {e}");
            return 1;
        }
    };
    for w in &app.warnings {
        tracing::warn!("{}: warning: {w}", args.pins.display());
    }
    tracing::info!(listen = %app.proxy_addr, admin = %app.admin_addr, pins = %args.pins.display(), "pinproxy ready");
    let readiness = app.readiness.clone();
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
    0
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

/// A single-threaded runtime for the one-off network work of `pin --connect`
/// and `check --live`.
fn small_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("pinproxy: {e}");
            None
        }
    }
}

// === pin ===

pub fn pin(args: PinArgs) -> u8 {
    if let Some(target) = &args.connect {
        return pin_connect(target, args.servername.as_deref(), args.ca_file.as_deref());
    }
    let mut code = 0;
    for file in &args.files {
        let path = file.display().to_string();
        match cert::read_certificates(&path) {
            Ok(certs) => {
                for cert in certs {
                    match CertInfo::from_der(cert.as_ref()) {
                        Ok(info) => println!("{}", info.line()),
                        Err(e) => {
                            eprintln!("{path}: {e}");
                            code = 1;
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                code = 1;
            }
        }
    }
    code
}

fn split_host_port(s: &str) -> Result<(Host, u16), String> {
    let uri: http::Uri = format!("https://{s}/")
        .parse()
        .map_err(|_| format!("invalid HOST[:PORT] {s:?}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("invalid HOST[:PORT] {s:?}"))?;
    let (host, port) = crate::proxy::forward::split_authority(authority)?;
    Ok((host, port.unwrap_or(443)))
}

fn pin_connect(target: &str, servername: Option<&str>, ca_file: Option<&Path>) -> u8 {
    let (host, port) = match split_host_port(target) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("pinproxy: {e}");
            return 2;
        }
    };
    let name = match servername.map(Host::parse).transpose() {
        Ok(n) => n.unwrap_or_else(|| host.clone()),
        Err(e) => {
            eprintln!("pinproxy: --servername: {e}");
            return 2;
        }
    };
    let anchors = match ca_file {
        Some(f) => match policy::load_bundle(f) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("pinproxy: {e}");
                return 1;
            }
        },
        None => crate::tls::verify::webpki_roots(),
    };
    let Some(rt) = small_runtime() else {
        return 1;
    };
    let seen = match rt.block_on(probe::probe(
        &host,
        port,
        None,
        &name,
        Some(anchors),
        Duration::from_secs(10),
    )) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pinproxy: {host}:{port}: {e}");
            return 1;
        }
    };
    let validated = seen.validated_pins();
    let presented = seen.presented_info();
    println!("# chain presented by {host}:{port} (SNI {name}), leaf first");
    for info in &presented {
        let mark = match info.pin.parse::<Pin>() {
            Ok(p) if validated.contains(&p) => "",
            _ => "  [not on a validated path]",
        };
        println!("{}{mark}", info.line());
    }
    // Roots are usually not sent: show the anchors of the validated paths.
    for path in &seen.paths {
        if let Some(anchor) = path.last() {
            if !presented.iter().any(|i| i.pin == anchor.to_string()) {
                println!("{anchor}  (trust anchor of a validated path)");
            }
        }
    }
    match &seen.error {
        Some(e) => {
            println!("# NOT VALID: {e}");
            1
        }
        None => {
            let mut on_path: Vec<CertInfo> = presented
                .iter()
                .filter(|i| i.pin.parse::<Pin>().is_ok_and(|p| validated.contains(&p)))
                .cloned()
                .collect();
            if let Some(anchor) = seen.paths.first().and_then(|p| p.last()) {
                if !on_path.iter().any(|i| i.pin == anchor.to_string()) {
                    on_path.push(CertInfo {
                        pin: anchor.to_string(),
                        subject: "trust anchor".into(),
                        issuer: String::new(),
                        not_after: String::new(),
                        not_after_unix: 0,
                    });
                }
            }
            println!("# pinset snippet (pin an intermediate or root and keep a backup pin):");
            print!("{}", cert::yaml_snippet(&name.to_string(), &on_path));
            0
        }
    }
}

// === check ===

pub fn check(args: CheckArgs) -> u8 {
    let policy = match policy::load(&args.path) {
        Ok(p) => p,
        Err(policy::Error::Invalid { path, problems }) => {
            for p in &problems {
                println!("{}: error: {p}", path.display());
            }
            return 1;
        }
        Err(e) => {
            println!("{e}");
            return 1;
        }
    };
    for w in &policy.warnings {
        println!("{}: warning: {w}", args.path.display());
    }
    println!("{}: ok ({} hosts)", args.path.display(), policy.hosts.len());
    if !args.live {
        return 0;
    }
    let Some(rt) = small_runtime() else {
        return 1;
    };
    let roots = crate::tls::verify::webpki_roots();
    let mut bad = 0;
    let now = time::OffsetDateTime::now_utc();
    for entry in &policy.hosts {
        if entry.name.starts_with("*.") {
            println!(
                "{}: skipped (a wildcard names no single server)",
                entry.name
            );
            continue;
        }
        let host = match Host::parse(&entry.name) {
            Ok(h) => h,
            Err(_) => continue,
        };
        let port = entry.ports.first().copied().unwrap_or(443);
        let anchors = match &entry.trust {
            Trust::WebPki => Some(roots.clone()),
            Trust::Bundle { anchors, .. } => Some(anchors.clone()),
            Trust::PinOnly => None,
        };
        let seen = match rt.block_on(probe::probe(
            &host,
            port,
            entry.address,
            &host,
            anchors,
            Duration::from_secs(10),
        )) {
            Ok(s) => s,
            Err(e) => {
                println!("{}: UNREACHABLE: {e}", entry.name);
                bad += 1;
                continue;
            }
        };
        if let Some(e) = &seen.error {
            println!("{}: UNTRUSTED: {e}", entry.name);
            bad += 1;
            continue;
        }
        // The verdict the proxy would reach on this chain (same function).
        let j = judge(Some(entry), now, &seen.paths);
        let validated = seen.validated_pins();
        let on_path = |set: &[Pin]| -> Vec<String> {
            set.iter()
                .filter(|p| validated.contains(p))
                .map(|p| p.to_string())
                .collect()
        };
        let matching = on_path(&entry.pins);
        let verdict = match j.outcome {
            Outcome::Pass => format!("ok, matches {}", matching.join(", ")),
            Outcome::PassPinsExpired if !matching.is_empty() => {
                format!("ok, matches {}", matching.join(", "))
            }
            Outcome::PassPinsExpired => "MISMATCH (pins expired: not enforced)".into(),
            Outcome::ReportedMismatch => {
                "MISMATCH (report mode: would be counted, not blocked)".into()
            }
            Outcome::Mismatch | Outcome::ExpiredPinOnly => {
                bad += 1;
                "MISMATCH: requests would be refused".into()
            }
            Outcome::PassUnpinned => "ok (unpinned)".into(),
        };
        if !matching.is_empty() {
            println!("{}: {verdict}", entry.name);
        } else {
            let live: Vec<String> = validated.iter().map(|p| p.to_string()).collect();
            println!(
                "{}: {verdict}; live chain pins: {}",
                entry.name,
                live.join(", ")
            );
        }
        match j.next_pins_matched {
            None => {}
            Some(false) => println!(
                "{}: next_pins: MISMATCH — promoting next_pins now would break this host",
                entry.name
            ),
            Some(true) => println!(
                "{}: next_pins: ok, matches {}",
                entry.name,
                on_path(&entry.next_pins).join(", ")
            ),
        }
    }
    u8::from(bad > 0)
}

// === inject, webhook ===

pub fn inject(args: &crate::k8s::inject::InjectArgs) -> u8 {
    match crate::k8s::inject::run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pinproxy inject: {e}");
            1
        }
    }
}

pub fn webhook(args: &crate::k8s::webhook::WebhookArgs) -> u8 {
    init_tracing(LogFormat::Json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pinproxy webhook: {e}");
            return 1;
        }
    };
    match rt.block_on(crate::k8s::webhook::run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pinproxy webhook: {e}");
            1
        }
    }
}
