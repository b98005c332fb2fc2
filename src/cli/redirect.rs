//! `pinproxy redirect`: arguments and output of the transparent-mode rule
//! installer. The rules themselves are [`crate::k8s::redirect`].

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;

use super::Error;
use crate::k8s::redirect::{
    self, udp, Backend, Cidr, Config, Family, Installed, Outcome, Udp, UdpAllow,
};

#[derive(Args, Debug, Clone)]
pub struct RedirectArgs {
    /// UID pinproxy runs as. Its connections are never redirected (no loop)
    /// and never locked.
    #[arg(long, value_name = "UID", required_unless_present = "remove")]
    pub proxy_uid: Option<u32>,
    /// Port of pinproxy's transparent listener; connections are redirected
    /// to 127.0.0.1:PORT (IPv4) and [::1]:PORT (IPv6).
    #[arg(long, value_name = "PORT", required_unless_present = "remove",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Redirect only TCP to these destination ports (comma-separated).
    /// Default: all TCP, as istio-iptables does.
    #[arg(long, value_name = "PORT,…", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Never redirect (nor lock) connections to this address block. Repeatable.
    #[arg(long, value_name = "CIDR")]
    pub exclude_cidr: Vec<Cidr>,
    /// Never redirect (nor lock) connections of this UID. Repeatable.
    #[arg(long, value_name = "UID")]
    pub exclude_uid: Vec<u32>,
    /// Also reset outbound TCP that was not redirected, from every UID but
    /// pinproxy's and the excluded ones (loopback excepted), so a bypass
    /// fails loudly; and lock the rest, default-deny: UDP DNS to the
    /// resolvers of --resolv-conf and --allow-udp destinations pass, UDP
    /// 443 (QUIC) is rejected with ICMP port-unreachable (clients fall back
    /// to TCP at once), and every other packet is dropped but replies, the
    /// ICMP errors TCP needs, IPv6 neighbour discovery and the kernel's
    /// IGMP and MLD reports.
    #[arg(long)]
    pub lock: bool,
    /// Under --lock, also let UDP to this destination through (e.g.
    /// 10.0.0.0/8:123 for NTP, [fd00::/8]:123). Repeatable.
    #[arg(long, value_name = "CIDR:PORT", requires = "lock")]
    pub allow_udp: Vec<UdpAllow>,
    /// The resolv.conf whose nameservers DNS reaches: over TCP (port 53)
    /// never redirected, lock or not; over UDP let through by --lock. The
    /// pod's, which the init container shares.
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Under --lock, log what the lock refuses to the kernel log
    /// (rate-limited, prefix `pinproxy-lock: `). In a pod's network
    /// namespace the kernel logs only when the node sets
    /// net.netfilter.nf_log_all_netns=1; `iptables -L PINPROXY_LOCK -v -n`
    /// counts refusals per rule either way.
    #[arg(long, requires = "lock")]
    pub log_drops: bool,
    /// Print the rules (as for a namespace without pinproxy rules) and
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every rule and chain pinproxy installed; other flags but
    /// --dry-run and --iptables-mode are ignored.
    #[arg(long)]
    pub remove: bool,
    /// Which iptables binaries to run: plain (`iptables-restore`, the
    /// image's default), nft or legacy.
    #[arg(long, value_enum, default_value = "plain")]
    pub iptables_mode: Backend,
}

pub fn redirect(args: &RedirectArgs) -> Result<(), Error> {
    let mut stdout = super::out::Stdout::lock();
    execute(args, &mut stdout)
}

fn execute(args: &RedirectArgs, out: &mut impl Write) -> Result<(), Error> {
    if args.remove {
        if args.dry_run {
            let script = redirect::render_remove(&Installed::everything())
                .expect("`everything` is not empty");
            for family in Family::ALL {
                dry_run_header(out, args.iptables_mode, family)?;
                out.write_all(script.as_bytes())?;
            }
            return Ok(());
        }
        return report(
            out,
            &redirect::remove(args.iptables_mode).map_err(Error::failed)?,
        );
    }

    let (Some(proxy_uid), Some(port)) = (args.proxy_uid, args.port) else {
        return Err(Error::Usage("--proxy-uid and --port are required".into()));
    };
    let cfg = Config::new(
        proxy_uid,
        port,
        &args.ports,
        &args.exclude_cidr,
        &args.exclude_uid,
        args.lock,
    )
    .map_err(|e| Error::Usage(e.to_string()))?;
    // The resolvers, lock or not: DNS over TCP to them is never redirected.
    let resolvers = match udp::read_nameservers(&args.resolv_conf) {
        Ok(r) => r,
        Err(e) if args.lock => {
            let path = args.resolv_conf.display();
            return Err(Error::failed(format!("reading {path}: {e}")));
        }
        Err(e) => {
            eprintln!(
                "pinproxy redirect: warning: reading {}: {e}: DNS over TCP to the pod's \
                 resolvers is redirected (and refused)",
                args.resolv_conf.display()
            );
            Vec::new()
        }
    };
    if args.lock && resolvers.is_empty() {
        eprintln!(
            "pinproxy redirect: warning: no nameserver in {}: under --lock, DNS \
             reaches only loopback resolvers",
            args.resolv_conf.display()
        );
    }
    let cfg = cfg.with_udp(Udp {
        resolvers,
        allow: args.allow_udp.clone(),
        log: args.log_drops,
    });
    if args.dry_run {
        for family in Family::ALL {
            dry_run_header(out, args.iptables_mode, family)?;
            let script = redirect::render(&cfg, family, &Installed::default());
            out.write_all(script.as_bytes())?;
        }
        return Ok(());
    }
    report(
        out,
        &redirect::install(&cfg, args.iptables_mode).map_err(Error::failed)?,
    )
}

fn dry_run_header(out: &mut impl Write, backend: Backend, family: Family) -> io::Result<()> {
    writeln!(
        out,
        "# {family}: input for `{} --noflush` (dry run: nothing applied)",
        backend.restore(family)
    )
}

fn report(out: &mut impl Write, outcomes: &[Outcome]) -> Result<(), Error> {
    for outcome in outcomes {
        match outcome {
            Outcome::Applied {
                family,
                program,
                script,
            } => {
                writeln!(out, "# {family}: applied with `{program} --noflush`")?;
                out.write_all(script.as_bytes())?;
            }
            Outcome::NothingToRemove { family } => {
                writeln!(out, "# {family}: no pinproxy rules to remove")?;
            }
            Outcome::Skipped { family, reason } => {
                eprintln!("pinproxy redirect: warning: {family} skipped: {reason}");
                writeln!(out, "# {family}: skipped ({reason})")?;
            }
        }
    }
    Ok(())
}
