//! `pinproxy pin`: the pins of certificates in files, or of the chain a
//! live server presents (`--connect`), ending with a pinset snippet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{small_runtime, Error};
use crate::policy;
use crate::policy::host::Host;
use crate::policy::pin::Pin;
use crate::proxy::target::parse_host_port;
use crate::tls::cert::{self, CertInfo};
use crate::tls::keyfile;
use crate::tls::probe;

#[derive(Args, Debug)]
pub struct PinArgs {
    /// PEM or DER files of certificates, public keys (PUBLIC KEY, RSA
    /// PUBLIC KEY), private keys (PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE
    /// KEY) or certificate requests: a backup pin is usually a key held in
    /// reserve with no certificate yet.
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

pub fn pin(args: &PinArgs) -> Result<(), Error> {
    if let Some(target) = &args.connect {
        return pin_connect(target, args.servername.as_deref(), args.ca_file.as_deref());
    }
    let provider = rustls::crypto::ring::default_provider();
    let mut failed = false;
    for file in &args.files {
        match keyfile::read(file, &provider) {
            Ok(found) => {
                for f in found {
                    println!("{}", f.line);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        Err(Error::Reported)
    } else {
        Ok(())
    }
}

fn pin_connect(
    target: &str,
    servername: Option<&str>,
    ca_file: Option<&Path>,
) -> Result<(), Error> {
    let (host, port) = parse_host_port(target)
        .map_err(|e| Error::Usage(format!("invalid HOST[:PORT] {target:?}: {e}")))?;
    let name = match servername.map(Host::parse).transpose() {
        Ok(n) => n.unwrap_or_else(|| host.clone()),
        Err(e) => return Err(Error::Usage(format!("--servername: {e}"))),
    };
    let anchors = match ca_file {
        Some(f) => policy::load_bundle(f).map_err(Error::failed)?,
        None => crate::tls::verify::webpki_roots(),
    };
    let rt = small_runtime()?;
    let seen = rt
        .block_on(probe::probe(
            &host,
            port,
            None,
            &name,
            Some(anchors),
            Duration::from_secs(10),
        ))
        .map_err(|e| Error::failed(format!("{host}:{port}: {e}")))?;
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
            Err(Error::Reported)
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
            Ok(())
        }
    }
}
