//! `pinproxy redirect`: the kernel rules of transparent mode
//! (docs/reference.md, "pinproxy redirect").
//!
//! Run once per pod, by an init container that is the only one holding
//! `NET_ADMIN`, in the pod's network namespace. It makes every outbound TCP
//! connection of the app land on pinproxy's transparent listener, so an app
//! that ignores `HTTP_PROXY` cannot skip pinning (a bypass is the classic
//! way around a pinning proxy).
//!
//! # The rules
//!
//! For IPv4 and IPv6 alike, in dedicated chains so that they can be found,
//! replaced and removed without touching anyone else's rules:
//!
//! ```text
//! nat    OUTPUT -p tcp -> PINPROXY_OUTPUT     (inserted first)
//!        PINPROXY_OUTPUT:   RETURN  owner --proxy-uid     no loop
//!                           RETURN  owner --exclude-uid…
//!                           RETURN  -o lo, -d 127.0.0.0/8 | ::1/128
//!                           RETURN  -d --exclude-cidr…
//!                           RETURN  tcp -d resolver --dport 53  DNS over TCP
//!                           tcp [--dports --ports] -> PINPROXY_REDIRECT
//!        PINPROXY_REDIRECT: REDIRECT --to-ports --port  (127.0.0.1 / ::1)
//! filter OUTPUT -> PINPROXY_LOCK              (--lock only, inserted first)
//!        PINPROXY_LOCK:     the same RETURNs, then
//!                           [LOG, rate-limited: --log-drops]
//!                           tcp SYN -> REJECT --reject-with tcp-reset
//!                           tcp (not a SYN) -> RETURN
//!                           replies (ctstate ESTABLISHED,RELATED) -> RETURN
//!                           udp -d resolver --dport 53 -> RETURN
//!                           udp -d --allow-udp CIDR --dport PORT -> RETURN
//!                           icmp errors TCP needs; v6: + packet-too-big,
//!                             neighbour/router solicitation -> RETURN
//!                           multicast reports: igmp; v6: MLD -> RETURN
//!                           [LOG, rate-limited: --log-drops]
//!                           udp --dport 443 -> REJECT icmp(6)-port-unreachable
//!                           everything else -> DROP
//! ```
//!
//! The nat hook runs before filter's, so a redirected connection reaches
//! `PINPROXY_LOCK` already rewritten to loopback and passes; what is still
//! headed off the pod there was not redirected (a port outside `--ports`, or
//! a packet nat never saw) and gets a reset: a bypass fails loudly instead
//! of silently. Only SYNs are rejected, so the replies of connections the
//! app *accepts* are never touched. UDP cannot be redirected (pinproxy
//! speaks TCP): the lock keeps DNS to the pod's resolvers and what
//! `--allow-udp` lists, makes QUIC fail fast so clients fall back to TCP
//! ([`udp`]). Every other protocol (UDP-Lite, SCTP, ICMP echo, …) is
//! dropped but the ICMP errors, neighbour discovery and multicast
//! membership reports (IGMP, MLD) the kernel sends:
//! the lock lists what it lets out, not what it refuses (`lock.rs`).
//! iptables rules never see packet sockets (`AF_PACKET`): injection drops
//! `CAP_NET_RAW` from app containers for that.
//!
//! # All TCP by default
//!
//! Without `--ports` every outbound TCP port is redirected, as
//! istio-iptables does (`-i '*'`, all ports, opt-out with exclusions): TLS
//! on 8443, 6443 or 9200 is as unpinned as on 443, and a port list misses
//! such ports silently. The cost is that protocols pinproxy does not speak
//! (databases, message queues) reach its listener: spliced there when
//! their destination lies in a `passthrough:` CIDR, else refused; exclude
//! their destinations with `--exclude-cidr` (e.g. the cluster's Service
//! CIDR) or list the ports to take with `--ports`. Loud breakage over
//! silent bypass. DNS over TCP to the pod's resolvers (the `nameserver`s of
//! `--resolv-conf`) is never redirected: the resolver is the pod's own,
//! UDP DNS reaches it anyway, and a truncated answer is retried over TCP.
//!
//! # Mechanism: `iptables-restore --noflush`
//!
//! Each family's ruleset is one `iptables-restore` / `ip6tables-restore`
//! transaction (atomic per table; one netlink batch with the nft backend),
//! never a sequence of `iptables` calls that can stop half-way.
//! `--iptables-mode` picks the binaries: `plain` (the unprefixed names, i.e.
//! whatever the image's symlinks choose), `nft` (iptables-nft, nf_tables
//! underneath) or `legacy` (x_tables). This is what istio-iptables and
//! linkerd2-proxy-init run, so the rules read the way operators already
//! debug (`iptables-save`), and iptables-nft writes nf_tables rules on
//! kernels that have dropped legacy x_tables. nftables proper (`nft -f` or
//! netlink from Rust) would give one `inet` table and a cleaner removal,
//! but `nft` needs the same kind of userland in the image, and a
//! hand-written nf_tables netlink encoder (owner, multiport, REDIRECT and
//! REJECT as raw expressions) is a lot of unreviewed code in the one
//! component that holds `NET_ADMIN`. The init image ships iptables (see
//! the `Dockerfile`); the proxy's own image stays distroless.
//!
//! # Idempotence and removal
//!
//! Applying reads `iptables-save` first. In one transaction it re-declares
//! pinproxy's chains (which flushes them), deletes every existing jump into
//! them, drops `PINPROXY_*` chains the new config does not use (the lock,
//! when rerun without `--lock`), refills the chains and inserts one jump:
//! running twice equals running once, and running with new options updates
//! the rules. `--remove` deletes the jumps and every `PINPROXY_*` chain and
//! nothing else. iptables has no command to drop a whole table, so on the
//! nft backend the `nat`/`filter` tables themselves, once created, stay
//! behind with their empty built-in chains.
//!
//! # IPv6
//!
//! Rules are installed for IPv6 whenever the namespace has an IPv6 address
//! (`/proc/net/if_inet6`). Without one (kernel without IPv6, or
//! `disable_ipv6`) no IPv6 connection can be made: a warning, IPv4 only. If
//! IPv6 is there and its rules fail, that is an error — IPv6 egress would
//! bypass pinproxy.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::process::ExitStatus;
use std::str::FromStr;

mod apply;
mod lock;
mod render;
mod save;
pub mod udp;

pub use apply::{install, remove};
pub use render::{render, render_remove};
pub use udp::{Udp, UdpAllow};

/// nat chain jumped to from `OUTPUT`: exemptions, then the redirect.
pub const OUTPUT_CHAIN: &str = "PINPROXY_OUTPUT";
/// nat chain holding the one `REDIRECT` rule.
pub const REDIRECT_CHAIN: &str = "PINPROXY_REDIRECT";
/// filter chain of `--lock`.
pub const LOCK_CHAIN: &str = "PINPROXY_LOCK";
/// Every chain pinproxy creates starts with this; `--remove` deletes them all.
pub const CHAIN_PREFIX: &str = "PINPROXY_";
/// Lists the namespace's IPv6 addresses; absent when the kernel has no IPv6.
const IF_INET6: &str = "/proc/net/if_inet6";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--port 0 is not a port")]
    ZeroPort,
    #[error("--ports: 0 is not a port")]
    ZeroInPorts,
    #[error(
        "{program} is not installed: the image that runs `pinproxy redirect` \
         must ship iptables (the Dockerfile's `init` target does)"
    )]
    MissingTool { program: &'static str },
    #[error("{family}: running {program}: {source}")]
    Spawn {
        family: Family,
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{family}: {program} failed ({status}): {stderr}")]
    Failed {
        family: Family,
        program: &'static str,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{family}: {program} printed something that is not UTF-8")]
    NotUtf8 {
        family: Family,
        program: &'static str,
    },
    #[error("reading {IF_INET6}: {0}")]
    Ipv6Probe(#[source] io::Error),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not a CIDR ({reason})")]
pub struct CidrError {
    value: String,
    reason: &'static str,
}

// === Config ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Which destination ports are redirected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    All,
    /// Sorted, without duplicates, never empty.
    Only(Vec<u16>),
}

/// An address block, host bits cleared (as `iptables-save` prints it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Which iptables binaries run the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `iptables-restore` and friends: whichever backend the image links them to.
    Plain,
    /// `iptables-nft-restore`: nf_tables underneath.
    Nft,
    /// `iptables-legacy-restore`: x_tables.
    Legacy,
}

/// A validated `pinproxy redirect` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    proxy_uid: u32,
    port: u16,
    ports: Ports,
    exclude_cidrs: Vec<Cidr>,
    exclude_uids: Vec<u32>,
    lock: bool,
    /// What `lock` does with UDP.
    udp: Udp,
}

/// What of pinproxy's a namespace holds, read from `iptables-save`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    tables: Vec<Table>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Table {
    name: String,
    /// `PINPROXY_*` chains, in `iptables-save` order.
    chains: Vec<String>,
    /// Rules outside pinproxy's chains that jump into them, as
    /// `CHAIN spec…` (an `-A` line without the `-A`).
    jumps: Vec<String>,
}

/// What applying or removing did for one address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `script` was fed to `program`.
    Applied {
        family: Family,
        program: &'static str,
        script: String,
    },
    /// `--remove` found nothing of pinproxy's.
    NothingToRemove { family: Family },
    /// No IPv6 in this namespace; `reason` says how that was seen.
    Skipped {
        family: Family,
        reason: &'static str,
    },
}

// === impl Family ===

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

// === impl Cidr ===

impl Cidr {
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// The block holding `ip` alone.
    pub fn host(ip: IpAddr) -> Cidr {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Cidr { addr: ip, prefix }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| CidrError {
            value: s.to_string(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Only plain decimal: `u8::from_str` would take "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad("bad prefix length"))?
            }
            Some(_) => return Err(bad("bad prefix length")),
        };
        if prefix > max {
            return Err(bad("prefix length too long for the address"));
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

// === impl Backend ===

impl Backend {
    /// The program that applies a ruleset of `family`.
    pub fn restore(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::Plain, Family::V4) => "iptables-restore",
            (Backend::Plain, Family::V6) => "ip6tables-restore",
            (Backend::Nft, Family::V4) => "iptables-nft-restore",
            (Backend::Nft, Family::V6) => "ip6tables-nft-restore",
            (Backend::Legacy, Family::V4) => "iptables-legacy-restore",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy-restore",
        }
    }

    /// The program that lists the rules of `family`.
    pub fn save(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::Plain, Family::V4) => "iptables-save",
            (Backend::Plain, Family::V6) => "ip6tables-save",
            (Backend::Nft, Family::V4) => "iptables-nft-save",
            (Backend::Nft, Family::V6) => "ip6tables-nft-save",
            (Backend::Legacy, Family::V4) => "iptables-legacy-save",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy-save",
        }
    }

    /// Every program this backend runs: what the image must contain.
    pub fn programs(self) -> [&'static str; 4] {
        [
            self.save(Family::V4),
            self.restore(Family::V4),
            self.save(Family::V6),
            self.restore(Family::V6),
        ]
    }
}

// === impl Config ===

impl Config {
    /// `ports` empty means all TCP ports.
    pub fn new(
        proxy_uid: u32,
        port: u16,
        ports: &[u16],
        exclude_cidrs: &[Cidr],
        exclude_uids: &[u32],
        lock: bool,
    ) -> Result<Config, Error> {
        if port == 0 {
            return Err(Error::ZeroPort);
        }
        if ports.contains(&0) {
            return Err(Error::ZeroInPorts);
        }
        let ports = if ports.is_empty() {
            Ports::All
        } else {
            let mut p = ports.to_vec();
            p.sort_unstable();
            p.dedup();
            Ports::Only(p)
        };
        let mut exclude_cidrs = exclude_cidrs.to_vec();
        dedup_in_order(&mut exclude_cidrs);
        let mut exclude_uids: Vec<u32> = exclude_uids
            .iter()
            .copied()
            .filter(|u| *u != proxy_uid)
            .collect();
        dedup_in_order(&mut exclude_uids);
        Ok(Config {
            proxy_uid,
            port,
            ports,
            exclude_cidrs,
            exclude_uids,
            lock,
            udp: Udp::default(),
        })
    }

    /// The pod's resolvers, and what the lock does with UDP (nothing
    /// without `lock`; DNS over TCP to the resolvers is never redirected,
    /// lock or not).
    pub fn with_udp(mut self, mut udp: Udp) -> Config {
        dedup_in_order(&mut udp.resolvers);
        dedup_in_order(&mut udp.allow);
        self.udp = udp;
        self
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }
}

fn dedup_in_order<T: PartialEq + Copy>(v: &mut Vec<T>) {
    let mut seen = Vec::with_capacity(v.len());
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(*x);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_clear_host_bits() {
        let ok = |s: &str| s.parse::<Cidr>().unwrap().to_string();
        assert_eq!(ok("10.1.2.3/8"), "10.0.0.0/8");
        assert_eq!(ok("192.0.2.7"), "192.0.2.7/32");
        assert_eq!(ok("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(ok("2001:db8::1/32"), "2001:db8::/32");
        assert_eq!(ok("2001:db8::1"), "2001:db8::1/128");
        assert_eq!(ok("::/0"), "::/0");
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "::/129",
            "example.com/8",
            "10.0.0/8",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn backends_name_their_programs() {
        assert_eq!(
            Backend::Plain.programs(),
            [
                "iptables-save",
                "iptables-restore",
                "ip6tables-save",
                "ip6tables-restore"
            ]
        );
        assert_eq!(
            Backend::Legacy.restore(Family::V6),
            "ip6tables-legacy-restore"
        );
        assert_eq!(Backend::Nft.save(Family::V4), "iptables-nft-save");
    }
}
