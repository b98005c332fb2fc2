//! Command-line definitions (DESIGN §1).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod cmd;
pub mod redirect;

#[derive(Parser, Debug)]
#[command(
    name = "pinproxy",
    version,
    about = "Sidecar egress proxy that enforces TLS SPKI pins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy.
    Run(RunArgs),
    /// Print the SPKI pins of certificates in files, or of a live server's chain.
    Pin(PinArgs),
    /// Validate a pinset file; --live also dials each host.
    Check(CheckArgs),
    /// Add the pinproxy sidecar to Kubernetes manifests (a YAML stream).
    Inject(crate::k8s::inject::InjectArgs),
    /// Serve the mutating admission webhook that injects the sidecar.
    Webhook(crate::k8s::webhook::WebhookArgs),
    /// Install (or --remove) the kernel rules of transparent mode in this network namespace.
    Redirect(redirect::RedirectArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The pinset file (mount the Secret as a directory, never with subPath).
    #[arg(long, env = "PINPROXY_PINS")]
    pub pins: PathBuf,
    /// Proxy listener. Never defaults to a non-loopback address.
    #[arg(long, env = "PINPROXY_LISTEN", default_value = "127.0.0.1:3128")]
    pub listen: SocketAddr,
    /// Admin listener (/healthz /readyz /metrics /pins).
    #[arg(long, env = "PINPROXY_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// CA certificate (PEM) for CONNECT interception, e.g. from a Secret.
    #[arg(long, env = "PINPROXY_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// CA private key (PEM).
    #[arg(long, env = "PINPROXY_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Directory to write the CA certificate to (DIR/ca.crt) for the app to trust.
    #[arg(long, env = "PINPROXY_CA_OUT")]
    pub ca_out: Option<PathBuf>,
    #[arg(long, env = "PINPROXY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Maximum concurrent client connections; excess get 503 `overloaded`.
    #[arg(long, env = "PINPROXY_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Upstream TCP connect timeout, seconds.
    #[arg(long, env = "PINPROXY_CONNECT_TIMEOUT", default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Upstream TLS handshake timeout, seconds.
    #[arg(long, env = "PINPROXY_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Upstream response timeout (request sent to response head), seconds.
    #[arg(long, env = "PINPROXY_RESPONSE_TIMEOUT", default_value_t = 60.0)]
    pub response_timeout: f64,
    /// Time a client may take to send a request head, idle keep-alive time
    /// included (hyper's header read timer runs while a connection waits
    /// for its next request), seconds.
    #[arg(long, env = "PINPROXY_HEADER_TIMEOUT", default_value_t = 30.0)]
    pub header_timeout: f64,
    /// After SIGTERM, keep serving new connections this long (endpoint
    /// propagation) before draining, seconds.
    #[arg(long, env = "PINPROXY_SHUTDOWN_GRACE", default_value_t = 2.0)]
    pub shutdown_grace: f64,
    /// Close CONNECT tunnels and WebSockets idle this long, seconds.
    #[arg(long, env = "PINPROXY_TUNNEL_IDLE_TIMEOUT", default_value_t = 3600.0)]
    pub tunnel_idle_timeout: f64,
    /// After a reload revokes a host's tunnels and streaming responses, how
    /// long in-flight work may finish before they are closed, seconds.
    #[arg(long, env = "PINPROXY_REVOKE_GRACE", default_value_t = 5.0)]
    pub revoke_grace: f64,
    /// How long SIGTERM waits for in-flight requests and tunnels, seconds.
    #[arg(long, env = "PINPROXY_DRAIN_TIMEOUT", default_value_t = 20.0)]
    pub drain_timeout: f64,
    /// Bounded cache of minted interception certificates.
    #[arg(long, env = "PINPROXY_LEAF_CACHE", default_value_t = 1024)]
    pub leaf_cache: usize,
    /// Don't watch the pinset directory; reload only on SIGHUP.
    #[arg(long, env = "PINPROXY_NO_WATCH")]
    pub no_watch: bool,
    /// Worker threads (default: the CPUs available to the process, cgroup
    /// quota included; 1 runs a single-threaded runtime).
    #[arg(long, env = "PINPROXY_WORKERS")]
    pub workers: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PinArgs {
    /// PEM or DER certificate files.
    #[arg(required_unless_present = "connect", conflicts_with = "connect")]
    pub files: Vec<PathBuf>,
    /// Dial HOST[:PORT] and print the pins of the chain it presents.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub connect: Option<String>,
    /// SNI and name to verify (default: the host of --connect).
    #[arg(long, requires = "connect")]
    pub servername: Option<String>,
    /// Validate against this PEM CA bundle instead of Mozilla's roots.
    #[arg(long, requires = "connect")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The pinset file.
    pub path: PathBuf,
    /// Also dial every exact host and report which pins its live chain matches.
    #[arg(long)]
    pub live: bool,
}
