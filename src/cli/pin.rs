//! `pinproxy pin`: the pins of certificates in files, or of the chain a
//! live server presents (`--connect`), ending with a pinset snippet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{small_runtime, Error};
use crate::policy;
use crate::policy::comment;
use crate::policy::host::Host;
use crate::policy::identity::Name;
use crate::policy::pin::Pin;
use crate::policy::CtMode;
use crate::proxy::target::parse_host_port;
use crate::tls::cert::{self, CertInfo};
use crate::tls::ct::{LogListInForce, PathChecks};
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
    /// Validate against this PEM CA bundle instead of Mozilla's roots (the
    /// snippet then carries `trust:` with this path).
    #[arg(long, requires = "connect")]
    pub ca_file: Option<PathBuf>,
    /// Dial this IP:PORT instead of resolving the host (SNI and the name
    /// checked stay the host; the snippet then carries `address:`).
    #[arg(long, value_name = "IP:PORT", requires = "connect")]
    pub address: Option<SocketAddr>,
    /// A SAN the certificate must carry instead of the host name, as the
    /// pinset's `names:` (repeatable): a DNS name, or a URI such as a
    /// SPIFFE ID, exact or ending in `/*`. The snippet then carries `names:`.
    #[arg(long = "name", value_name = "SAN", requires = "connect")]
    pub names: Vec<String>,
    /// As `run --ct-log-list`: the CT log list the SCTs are checked
    /// against (default: the built-in one).
    #[arg(
        long,
        env = "PINPROXY_CT_LOG_LIST",
        value_name = "FILE",
        requires = "connect"
    )]
    pub ct_log_list: Option<PathBuf>,
}

pub fn pin(args: &PinArgs) -> Result<(), Error> {
    if let Some(target) = &args.connect {
        return pin_connect(target, args);
    }
    let provider = crate::tls::provider();
    let mut failed = false;
    for file in &args.files {
        match keyfile::read(file, &provider) {
            Ok(found) => {
                for f in found {
                    outln!("{}", f.line);
                }
            }
            Err(e) => {
                // The other files are still read; each error is one
                // `pinproxy: …` line on stderr, as main prints them.
                eprintln!("pinproxy: {e}");
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

fn pin_connect(target: &str, args: &PinArgs) -> Result<(), Error> {
    let (servername, ca_file, address) = (
        args.servername.as_deref(),
        args.ca_file.as_deref(),
        args.address,
    );
    let list = match &args.ct_log_list {
        Some(f) => std::sync::Arc::new(
            LogListInForce::read(f, policy::load::DEFAULT_MAX_FILE_BYTES).map_err(Error::failed)?,
        ),
        None => LogListInForce::builtin(),
    };
    let names = args
        .names
        .iter()
        .map(|n| Name::parse(n).map_err(|e| Error::Usage(format!("--name: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
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
        .block_on(probe::probe_with(
            &host,
            port,
            address,
            &name,
            Some(anchors),
            probe::Expect {
                names: &names,
                ct: Some((list, CtMode::Report)),
                ..Default::default()
            },
            Duration::from_secs(10),
        ))
        .map_err(|e| Error::failed(format!("{host}:{port}: {e}")))?;
    let dialed = address.map_or_else(
        || format!("{host}:{port}"),
        |a| format!("{host}:{port} at {a}"),
    );
    outln!("# chain presented by {dialed} (SNI {name}), leaf first");
    print_chain(&seen);
    if let Some(checks) = &seen.checks {
        print_transparency(checks);
    }
    // Pasted, the entry must reach the server that was tested: when that
    // was not the name the entry is keyed by (an IP, or another name),
    // say where.
    let (address, dialed_name) = match (address, &host) {
        (Some(a), _) => (Some(a), None),
        (None, _) if host == name => (None, None),
        (None, Host::Ip(ip)) => (Some(SocketAddr::new(*ip, port)), None),
        (None, Host::Name(n)) => (None, Some(n.clone())),
    };
    let snippet = Snippet {
        host: name.to_string(),
        port,
        trust: ca_file.map(|f| f.display().to_string()),
        address,
        dialed_name,
        names: names.iter().map(|n| n.to_string()).collect(),
        client_cert: seen.client_auth.requested,
    };
    if seen.client_auth.requested {
        outln!(
            "# the server asked for a client certificate (mTLS); none was presented{}",
            match &seen.client_auth.refused {
                Some(why) => format!(" and it refused the connection ({})", comment::escape(why)),
                None => String::new(),
            }
        );
    }
    match &seen.error {
        Some(e) => {
            // Still useful: the operator sees what the server sends. But
            // pinproxy would refuse it until the chain validates.
            outln!("# NOT VALID: {}", comment::escape(e));
            if seen.paths.is_empty() {
                outln!(
                    "# UNTRUSTED: pinproxy would refuse this server (untrusted-certificate) with \
                     this trust; the snippet below pins the chain *as presented*, unvalidated. \
                     Fix trust (--ca-file / trust:) first, then pin from a validated chain."
                );
                let presented = seen.presented_info();
                if let [only] = presented.as_slice() {
                    if only.subject == only.issuer {
                        // A self-signed internal service: no CA will ever
                        // validate it, and pin-only is the way to pin it.
                        outln!(
                            "# SELF-SIGNED: the server presents one certificate it issued \
                             itself. If you trust this service by its key alone, pin its leaf \
                             with `trust: pin-only` (no CA validation; the name is still \
                             checked): the snippet's pin, `trust: pin-only` instead of a CA, \
                             and a backup key's pin (`pinproxy pin next.key`)."
                        );
                    }
                }
                out!(
                    "{}",
                    snippet.render(&seen.presented_info(), Some(Invalid::Untrusted))
                );
            } else {
                // Only the name check comes after a validated path.
                outln!(
                    "# WRONG NAME: the chain validated, the name did not: pinproxy would refuse \
                     this server (untrusted-certificate, reason wrong-name). If the server's \
                     identity is one of the names it presents (a SPIFFE ID, a Service name), run \
                     again with --name <that SAN>; the snippet then carries names:."
                );
                // The path that validated, anchor included, as for a
                // valid server: only the name is wrong.
                out!(
                    "{}",
                    snippet.render(&on_validated_path(&seen), Some(Invalid::WrongName))
                );
            }
            Err(Error::Reported)
        }
        None => {
            outln!("# pinset snippet (pin an intermediate or root and keep a backup pin):");
            out!("{}", snippet.render(&on_validated_path(&seen), None));
            Ok(())
        }
    }
}

/// The presented chain, marking what no validated path used, then the
/// anchors of the validated paths (roots are usually not sent).
fn print_chain(seen: &probe::Seen) {
    let validated = seen.validated_pins();
    let presented = seen.presented_info();
    for info in &presented {
        let mark = match info.pin.parse::<Pin>() {
            Ok(p) if validated.contains(&p) => "",
            _ => "  [not on a validated path]",
        };
        outln!("{}{mark}", info.line());
    }
    for path in &seen.paths {
        if let Some(anchor) = path.last() {
            if !presented.iter().any(|i| i.pin == anchor.to_string()) {
                outln!("{anchor}  (trust anchor of a validated path)");
            }
        }
    }
}

/// The leaf's SCTs (log id, timestamp, log and operator, how delivered,
/// verified or not), the CT verdict and the OCSP staple, as comments.
fn print_transparency(c: &PathChecks) {
    outln!(
        "# Certificate Transparency (the CT policy as ct: enforce would judge it): {}",
        comment::escape(&c.ct_line())
    );
    for sct in c.scts() {
        outln!("#   SCT {}", comment::escape(&sct.to_string()));
    }
    let must = if c.must_staple {
        " (the leaf is must-staple)"
    } else {
        ""
    };
    outln!("# OCSP staple: {}{must}", comment::escape(&c.staple_line()));
}

/// The certificates of the first validated path, leaf first, anchor last.
fn on_validated_path(seen: &probe::Seen) -> Vec<CertInfo> {
    let mut on_path = seen.first_path_info();
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
    on_path
}

/// `text` as a YAML value: plain when YAML reads it back as that very
/// string (`ca.pem`, `/etc/pki/ca.pem`), else double-quoted (a path with
/// ` #` or `: `, one that reads as a number or a boolean).
fn scalar(text: &str) -> String {
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::String(s)) if s == text => s,
        _ => comment::double_quoted(text),
    }
}

/// Why a snippet must not be pasted as it is.
#[derive(Clone, Copy)]
enum Invalid {
    /// No path validated: the chain as presented.
    Untrusted,
    /// A path validated; the name check failed.
    WrongName,
}

/// A pinset entry for what `pin --connect` saw, with the settings it used.
struct Snippet {
    host: String,
    port: u16,
    trust: Option<String>,
    address: Option<SocketAddr>,
    /// The DNS name dialed, when not the entry's own (no `address:` can
    /// say it: the operator must).
    dialed_name: Option<String>,
    names: Vec<String>,
    /// The server asked for a client certificate.
    client_cert: bool,
}

impl Snippet {
    fn render(&self, chain: &[CertInfo], invalid: Option<Invalid>) -> String {
        let mut s = String::new();
        match invalid {
            Some(Invalid::Untrusted) => {
                s.push_str("# UNTRUSTED chain: do not paste before it validates\n")
            }
            Some(Invalid::WrongName) => s.push_str(&format!(
                "# pinset snippet of the validated path; the certificate does not name {}: \
                 do not paste before it does\n",
                comment::escape(&self.host)
            )),
            None => {}
        }
        s.push_str(&cert::yaml_snippet(&self.host, chain));
        if let Some(trust) = &self.trust {
            s.push_str(&format!(
                "    trust: {}   # relative paths resolve against the pinset file\n",
                scalar(trust)
            ));
        }
        if let Some(a) = self.address {
            s.push_str(&format!("    address: {a}\n"));
        }
        if let Some(dialed) = &self.dialed_name {
            s.push_str(&format!(
                "    # address: IP:PORT   # tested by dialing {}; without address: pinproxy \
                 resolves the name above\n",
                comment::escape(dialed)
            ));
        }
        if self.port != 443 {
            s.push_str(&format!("    ports: [{}]\n", self.port));
        }
        if !self.names.is_empty() {
            let quoted: Vec<String> = self
                .names
                .iter()
                .map(|n| comment::double_quoted(n))
                .collect();
            s.push_str(&format!("    names: [{}]\n", quoted.join(", ")));
        }
        if self.client_cert {
            s.push_str(
                "    # client_cert: {cert: identity/tls.crt, key: identity/tls.key}   # the server asks for one\n",
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator's own values reach the snippet as the values they are.
    #[test]
    fn snippet_holds_trust_and_names_exactly() {
        let trust = "/etc/my #certs/ca: x.pem";
        let names = vec!["spiffe://a.test/ns/\"x\"".to_string(), "b.test".to_string()];
        let snippet = Snippet {
            host: "live.test".into(),
            port: 443,
            trust: Some(trust.into()),
            address: None,
            dialed_name: None,
            names: names.clone(),
            client_cert: false,
        };
        let doc = format!("hosts:\n{}", snippet.render(&[], None));
        let v: serde_yaml::Value =
            serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("not YAML ({e}):\n{doc}"));
        let entry = &v["hosts"]["live.test"];
        assert_eq!(entry["trust"].as_str(), Some(trust), "{doc}");
        let got: Vec<&str> = entry["names"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(got, names, "{doc}");
        for plain in ["ca.pem", "/etc/pki/ca.pem", "./a b/ca.pem"] {
            assert_eq!(scalar(plain), plain);
        }
        // A key YAML would misread plain is quoted (a leading `*` is an
        // alias).
        let wild = Snippet {
            host: "*.x.test".into(),
            trust: None,
            names: Vec::new(),
            ..snippet
        };
        let doc = format!("hosts:\n{}", wild.render(&[], None));
        let v: serde_yaml::Value =
            serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("not YAML ({e}):\n{doc}"));
        let keys: Vec<&str> = v["hosts"]
            .as_mapping()
            .map(|m| m.keys().filter_map(|k| k.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(keys, ["*.x.test"], "{doc}");
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("1.5"), "\"1.5\"");
    }
}
