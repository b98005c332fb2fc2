//! `pinproxy version`: what this binary is and the trust data built into
//! it — Mozilla's roots (webpki-roots) and the Certificate Transparency
//! log list, with its date and whether it is too old to enforce with.

use std::path::PathBuf;

use clap::Args;

use super::Error;
use crate::tls::ct::LogListInForce;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Also describe this CT log list, after the built-in one, as the
    /// list in use (as `run --ct-log-list`, and the same variable).
    #[arg(long, env = "PINPROXY_CT_LOG_LIST", value_name = "FILE")]
    pub ct_log_list: Option<PathBuf>,
}

pub fn version(args: &VersionArgs) -> Result<(), Error> {
    let now = rustls::pki_types::UnixTime::now();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    outln!(
        "pinproxy {} ({}-{}, {build} build)",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    );
    outln!(
        "rustls {} (ring); OCSP stapling requested on every upstream handshake",
        env!("PINPROXY_RUSTLS_VERSION")
    );
    outln!(
        "webpki-roots {}: {} Mozilla root CAs (trust: webpki)",
        env!("PINPROXY_WEBPKI_ROOTS_VERSION"),
        crate::tls::verify::webpki_roots().len()
    );
    let builtin = LogListInForce::builtin();
    outln!(
        "CT log list built in: Chrome's v3 list {}",
        builtin.describe(now)
    );
    if let Some(path) = &args.ct_log_list {
        let list = LogListInForce::read(path, crate::policy::load::DEFAULT_MAX_FILE_BYTES)
            .map_err(Error::failed)?;
        outln!("CT log list in use: {}", list.describe(now));
    } else {
        outln!(
            "note: Chrome's log list terms do not allow its use for CT enforcement outside \
             Chrome without Chrome's written permission: mount a list you may use with \
             run --ct-log-list (docs/reference.md, \"Certificate Transparency and OCSP\")"
        );
    }
    Ok(())
}
