//! The command line (docs/reference.md, "Command line"): one file per command,
//! one error type.
//!
//! Every command returns `Result<(), Error>`; [`main`] maps the error to the
//! exit code the contract names — 0 success, 1 the thing checked is bad (or
//! the command failed), 2 usage error — and prints it once.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// `print!` for a command's output: ends the command quietly when the
/// reader has gone ([`out`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `println!` for a command's output ([`out`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod check;
pub mod ct_update;
pub mod duration;
pub mod fds;
pub mod inject;
pub mod logging;
pub mod out;
pub mod pin;
pub mod redirect;
pub mod run;
pub mod sign;
pub mod status;
pub mod suggest;
pub mod version;
pub mod webhook;

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
    Run(run::RunArgs),
    /// Print the SPKI pins of certificates in files, or of a live server's chain.
    Pin(pin::PinArgs),
    /// Validate a pinset file; --key also verifies its signature (FILE.sig);
    /// --live also dials each host.
    Check(check::CheckArgs),
    /// Sign a pinset: writes FILE.sig (cosign sign-blob's format).
    Sign(sign::SignArgs),
    /// Make a key pair for signed pinsets: PREFIX.key and PREFIX.pub.
    Keygen(sign::KeygenArgs),
    /// Print a pinset for the hosts learn mode recorded (unlisted: learn).
    Suggest(suggest::SuggestArgs),
    /// Check a Certificate Transparency log list (v3 log_list.json) and
    /// optionally install it (--out) for `run --ct-log-list`.
    CtUpdate(ct_update::CtUpdateArgs),
    /// Print the version, and the dates of the trust data built in
    /// (Mozilla's roots, the CT log list).
    Version(version::VersionArgs),
    /// Add the pinproxy sidecar to Kubernetes manifests (a YAML stream).
    Inject(crate::k8s::inject::InjectArgs),
    /// Serve the mutating admission webhook that injects the sidecar.
    Webhook(crate::k8s::webhook::WebhookArgs),
    /// Install (or --remove) the kernel rules of transparent mode in this network namespace.
    Redirect(redirect::RedirectArgs),
    /// List every pod with the sidecar: pinset generation and hash, SYNCED/STALE
    /// against its Secret, reloads, mismatches, expiry (through the API server).
    Status(crate::k8s::status::StatusArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How a command failed, and so its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command failed, or what it checked is bad: exit 1.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
    /// What was checked is bad and the command already said why: exit 1,
    /// nothing more is printed.
    #[error("")]
    Reported,
}

impl Error {
    pub fn failed(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Failed(e.into())
    }

    fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Failed(_) | Error::Reported => 1,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::failed(e)
    }
}

/// Runs the parsed command line and maps its outcome to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    let (prefix, result) = match cli.command {
        Command::Run(args) => ("pinproxy", run::run(args)),
        Command::Pin(args) => ("pinproxy", pin::pin(&args)),
        Command::Check(args) => ("pinproxy", check::check(&args)),
        Command::Sign(args) => ("pinproxy sign", sign::sign(&args)),
        Command::Keygen(args) => ("pinproxy keygen", sign::keygen(&args)),
        Command::Suggest(args) => ("pinproxy suggest", suggest::suggest(&args)),
        Command::CtUpdate(args) => ("pinproxy ct-update", ct_update::ct_update(&args)),
        Command::Version(args) => ("pinproxy version", version::version(&args)),
        Command::Inject(args) => ("pinproxy inject", inject::inject(&args)),
        Command::Webhook(args) => ("pinproxy webhook", webhook::webhook(&args)),
        Command::Redirect(args) => ("pinproxy redirect", redirect::redirect(&args)),
        Command::Status(args) => ("pinproxy status", status::status(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, Error::Reported) {
                eprintln!("{prefix}: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

pub fn init_tracing(format: LogFormat) {
    logging::init(format);
}

/// A single-threaded runtime for the one-off network work of `pin --connect`
/// and `check --live`.
fn small_runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
