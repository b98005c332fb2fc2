//! `pinproxy redirect`: the kernel rules of transparent mode (DESIGN §11).
//!
//! Run once per pod, by an init container that is the only one holding
//! `NET_ADMIN`, in the pod's network namespace. It makes every outbound TCP
//! connection of the app land on pinproxy's transparent listener, so an app
//! that ignores `HTTP_PROXY` cannot skip pinning (THREATS.md, "Bypass").
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
//!                           tcp [--dports --ports] -> PINPROXY_REDIRECT
//!        PINPROXY_REDIRECT: REDIRECT --to-ports --port  (127.0.0.1 / ::1)
//! filter OUTPUT -p tcp -> PINPROXY_LOCK       (--lock only, inserted first)
//!        PINPROXY_LOCK:     the same RETURNs, then
//!                           tcp SYN -> REJECT --reject-with tcp-reset
//! ```
//!
//! The nat hook runs before filter's, so a redirected connection reaches
//! `PINPROXY_LOCK` already rewritten to loopback and passes; what is still
//! headed off the pod there was not redirected (a port outside `--ports`, or
//! a packet nat never saw) and gets a reset: a bypass fails loudly instead
//! of silently. Only SYNs are rejected, so the replies of connections the
//! app *accepts* are never touched.
//!
//! # All TCP by default
//!
//! Without `--ports` every outbound TCP port is redirected, as
//! istio-iptables does (`-i '*'`, all ports, opt-out with exclusions): TLS
//! on 8443, 6443 or 9200 is as unpinned as on 443, and a port list misses
//! such ports silently. The cost is that protocols pinproxy does not speak
//! (databases, DNS over TCP) reach its listener and are refused there;
//! exclude their destinations with `--exclude-cidr` (e.g. the cluster's
//! Service CIDR) or list the ports to take with `--ports`. Loud breakage
//! over silent bypass.
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
use std::io::{self, Write};
use std::net::IpAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;

/// nat chain jumped to from `OUTPUT`: exemptions, then the redirect.
pub const OUTPUT_CHAIN: &str = "PINPROXY_OUTPUT";
/// nat chain holding the one `REDIRECT` rule.
pub const REDIRECT_CHAIN: &str = "PINPROXY_REDIRECT";
/// filter chain of `--lock`.
pub const LOCK_CHAIN: &str = "PINPROXY_LOCK";
/// Every chain pinproxy creates starts with this; `--remove` deletes them all.
pub const CHAIN_PREFIX: &str = "PINPROXY_";
/// iptables' multiport match takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;
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
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
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
        })
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

// === impl Installed ===

impl Installed {
    /// Reads `iptables-save` output. Only pinproxy's chains and the jumps
    /// into them are kept; everything else belongs to someone else.
    pub fn parse(save: &str) -> Installed {
        let mut tables: Vec<Table> = Vec::new();
        let mut current: Option<Table> = None;
        for line in save.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                current = Some(Table {
                    name: name.to_string(),
                    ..Table::default()
                });
            } else if line == "COMMIT" {
                if let Some(t) = current.take() {
                    if !t.chains.is_empty() || !t.jumps.is_empty() {
                        tables.push(t);
                    }
                }
            } else if let Some(t) = current.as_mut() {
                if let Some(decl) = line.strip_prefix(':') {
                    let chain = decl.split_whitespace().next().unwrap_or_default();
                    if chain.starts_with(CHAIN_PREFIX) {
                        t.chains.push(chain.to_string());
                    }
                } else if let Some(rule) = line.strip_prefix("-A ") {
                    let mut words = rule.split_whitespace();
                    let chain = words.next().unwrap_or_default();
                    let words: Vec<&str> = words.collect();
                    let jumps_to_ours = words.windows(2).any(|w| {
                        matches!(w[0], "-j" | "--jump" | "-g" | "--goto")
                            && w[1].starts_with(CHAIN_PREFIX)
                    });
                    if !chain.starts_with(CHAIN_PREFIX) && jumps_to_ours {
                        t.jumps.push(rule.to_string());
                    }
                }
            }
        }
        Installed { tables }
    }

    /// What a full install (with `--lock`) leaves: what `--remove --dry-run` shows.
    pub fn everything() -> Installed {
        let table = |name: &str, chains: &[&str]| Table {
            name: name.to_string(),
            chains: chains.iter().map(|c| c.to_string()).collect(),
            jumps: vec![jump(chains[0])],
        };
        Installed {
            tables: vec![
                table("nat", &[OUTPUT_CHAIN, REDIRECT_CHAIN]),
                table("filter", &[LOCK_CHAIN]),
            ],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// The rule (without `-A`/`-I`) that sends `OUTPUT` TCP into `chain`.
fn jump(chain: &str) -> String {
    format!("OUTPUT -p tcp -j {chain}")
}

// === rendering ===

/// The `iptables-restore --noflush` input that brings a namespace holding
/// `installed` to exactly the rules of `cfg`, for one family.
pub fn render(cfg: &Config, family: Family, installed: &Installed) -> String {
    let mut out = String::new();

    // nat: exemptions, then the redirect.
    let mut rules = exemptions(cfg, family, OUTPUT_CHAIN);
    match &cfg.ports {
        Ports::All => rules.push(format!("-A {OUTPUT_CHAIN} -p tcp -j {REDIRECT_CHAIN}")),
        Ports::Only(ports) => {
            for chunk in ports.chunks(MULTIPORT_MAX) {
                let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
                rules.push(format!(
                    "-A {OUTPUT_CHAIN} -p tcp -m multiport --dports {} -j {REDIRECT_CHAIN}",
                    list.join(",")
                ));
            }
        }
    }
    rules.push(format!(
        "-A {REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        cfg.port
    ));
    table_section(
        &mut out,
        "nat",
        &[OUTPUT_CHAIN, REDIRECT_CHAIN],
        installed.table("nat"),
        &rules,
    );

    // filter: the lock, or whatever an earlier --lock left.
    if cfg.lock {
        let mut rules = exemptions(cfg, family, LOCK_CHAIN);
        rules.push(format!(
            "-A {LOCK_CHAIN} -p tcp --syn -j REJECT --reject-with tcp-reset"
        ));
        table_section(
            &mut out,
            "filter",
            &[LOCK_CHAIN],
            installed.table("filter"),
            &rules,
        );
    }

    // Any other table holding pinproxy chains (none today) is cleaned up.
    for t in &installed.tables {
        let wanted = t.name == "nat" || (t.name == "filter" && cfg.lock);
        if !wanted {
            removal_section(&mut out, t);
        }
    }
    out
}

/// The `iptables-restore --noflush` input that removes everything of
/// pinproxy's in `installed`, or `None` when there is nothing.
pub fn render_remove(installed: &Installed) -> Option<String> {
    if installed.is_empty() {
        return None;
    }
    let mut out = String::new();
    for t in &installed.tables {
        removal_section(&mut out, t);
    }
    Some(out)
}

/// The RETURNs shared by the nat and lock chains: what is never redirected
/// (or, for the lock, never rejected).
fn exemptions(cfg: &Config, family: Family, chain: &str) -> Vec<String> {
    let mut rules = vec![format!(
        "-A {chain} -m owner --uid-owner {} -j RETURN",
        cfg.proxy_uid
    )];
    for uid in &cfg.exclude_uids {
        rules.push(format!("-A {chain} -m owner --uid-owner {uid} -j RETURN"));
    }
    rules.push(format!("-A {chain} -o lo -j RETURN"));
    rules.push(format!("-A {chain} -d {} -j RETURN", family.loopback()));
    for cidr in cfg.exclude_cidrs.iter().filter(|c| c.family() == family) {
        rules.push(format!("-A {chain} -d {cidr} -j RETURN"));
    }
    rules
}

/// One table's part of an apply: declare (create or flush) `chains`, drop
/// the old jumps and any stale pinproxy chain, add `rules`, insert the jump
/// into `chains[0]` first in `OUTPUT`.
fn table_section(
    out: &mut String,
    table: &str,
    chains: &[&str],
    installed: Option<&Table>,
    rules: &[String],
) {
    let stale: Vec<&String> = installed
        .map(|t| {
            t.chains
                .iter()
                .filter(|c| !chains.contains(&c.as_str()))
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!("*{table}\n"));
    for chain in chains {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for old in installed.map(|t| t.jumps.as_slice()).unwrap_or_default() {
        out.push_str(&format!("-D {old}\n"));
    }
    for chain in &stale {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &stale {
        out.push_str(&format!("-X {chain}\n"));
    }
    for rule in rules {
        out.push_str(rule);
        out.push('\n');
    }
    out.push_str(&format!("-I OUTPUT 1 -p tcp -j {}\n", chains[0]));
    out.push_str("COMMIT\n");
}

fn removal_section(out: &mut String, t: &Table) {
    out.push_str(&format!("*{}\n", t.name));
    for j in &t.jumps {
        out.push_str(&format!("-D {j}\n"));
    }
    for c in &t.chains {
        out.push_str(&format!("-F {c}\n"));
    }
    for c in &t.chains {
        out.push_str(&format!("-X {c}\n"));
    }
    out.push_str("COMMIT\n");
}

// === applying ===

/// Installs `cfg` in the current network namespace, IPv4 then IPv6.
pub fn install(cfg: &Config, backend: Backend) -> Result<Vec<Outcome>, Error> {
    each_family(backend, |family, installed| {
        Some(render(cfg, family, installed))
    })
}

/// Removes every rule and chain pinproxy installed in the current network
/// namespace.
pub fn remove(backend: Backend) -> Result<Vec<Outcome>, Error> {
    each_family(backend, |_, installed| render_remove(installed))
}

fn each_family(
    backend: Backend,
    mut script_for: impl FnMut(Family, &Installed) -> Option<String>,
) -> Result<Vec<Outcome>, Error> {
    let mut outcomes = Vec::new();
    for family in Family::ALL {
        if family == Family::V6 {
            if let Some(reason) = ipv6_missing(std::fs::read_to_string(IF_INET6))? {
                outcomes.push(Outcome::Skipped { family, reason });
                continue;
            }
        }
        let saved = run(family, backend.save(family), None)?;
        let installed = Installed::parse(&saved);
        let Some(script) = script_for(family, &installed) else {
            outcomes.push(Outcome::NothingToRemove { family });
            continue;
        };
        let program = backend.restore(family);
        run(family, program, Some(&script))?;
        outcomes.push(Outcome::Applied {
            family,
            program,
            script,
        });
    }
    Ok(outcomes)
}

/// Why this namespace cannot make IPv6 connections, given the result of
/// reading `/proc/net/if_inet6`; `None` when it can.
fn ipv6_missing(if_inet6: io::Result<String>) -> Result<Option<&'static str>, Error> {
    match if_inet6 {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(Some("the kernel has no IPv6 (no /proc/net/if_inet6)"))
        }
        Err(e) => Err(Error::Ipv6Probe(e)),
        Ok(text) if text.trim().is_empty() => Ok(Some(
            "this network namespace has no IPv6 address, not even ::1 (IPv6 disabled)",
        )),
        Ok(_) => Ok(None),
    }
}

/// Runs `program --noflush` with `stdin` (restore) or plain (save) and
/// returns its stdout.
fn run(family: Family, program: &'static str, stdin: Option<&str>) -> Result<String, Error> {
    let mut cmd = Command::new(program);
    if stdin.is_some() {
        cmd.arg("--noflush").stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::MissingTool { program },
            _ => Error::Spawn {
                family,
                program,
                source,
            },
        })?;
    // A restore that rejects its input may exit before reading all of it:
    // its exit status and stderr say more than the broken pipe.
    let written = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let output = child.wait_with_output().map_err(|source| Error::Spawn {
        family,
        program,
        source,
    })?;
    if !output.status.success() {
        return Err(Error::Failed {
            family,
            program,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    written.map_err(|source| Error::Spawn {
        family,
        program,
        source,
    })?;
    String::from_utf8(output.stdout).map_err(|_| Error::NotUtf8 { family, program })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn typical() -> Config {
        Config::new(
            65532,
            15001,
            &[443, 80],
            &cidrs(&["10.96.0.0/12", "fd00:10:96::/112"]),
            &[1001],
            true,
        )
        .unwrap()
    }

    #[test]
    fn typical_ipv4_ruleset() {
        let text = render(&typical(), Family::V4, &Installed::default());
        assert_eq!(
            text,
            "\
*nat
:PINPROXY_OUTPUT - [0:0]
:PINPROXY_REDIRECT - [0:0]
-A PINPROXY_OUTPUT -m owner --uid-owner 65532 -j RETURN
-A PINPROXY_OUTPUT -m owner --uid-owner 1001 -j RETURN
-A PINPROXY_OUTPUT -o lo -j RETURN
-A PINPROXY_OUTPUT -d 127.0.0.0/8 -j RETURN
-A PINPROXY_OUTPUT -d 10.96.0.0/12 -j RETURN
-A PINPROXY_OUTPUT -p tcp -m multiport --dports 80,443 -j PINPROXY_REDIRECT
-A PINPROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-I OUTPUT 1 -p tcp -j PINPROXY_OUTPUT
COMMIT
*filter
:PINPROXY_LOCK - [0:0]
-A PINPROXY_LOCK -m owner --uid-owner 65532 -j RETURN
-A PINPROXY_LOCK -m owner --uid-owner 1001 -j RETURN
-A PINPROXY_LOCK -o lo -j RETURN
-A PINPROXY_LOCK -d 127.0.0.0/8 -j RETURN
-A PINPROXY_LOCK -d 10.96.0.0/12 -j RETURN
-A PINPROXY_LOCK -p tcp --syn -j REJECT --reject-with tcp-reset
-I OUTPUT 1 -p tcp -j PINPROXY_LOCK
COMMIT
"
        );
    }

    #[test]
    fn ipv6_ruleset_uses_ipv6_loopback_and_only_ipv6_cidrs() {
        let text = render(&typical(), Family::V6, &Installed::default());
        assert!(text.contains("-A PINPROXY_OUTPUT -d ::1/128 -j RETURN\n"));
        assert!(text.contains("-A PINPROXY_OUTPUT -d fd00:10:96::/112 -j RETURN\n"));
        assert!(text.contains("-A PINPROXY_LOCK -d fd00:10:96::/112 -j RETURN\n"));
        assert!(!text.contains("10.96.0.0"), "{text}");
        assert!(!text.contains("127.0.0.0/8"), "{text}");
    }

    #[test]
    fn without_ports_all_tcp_is_redirected_and_without_lock_filter_is_untouched() {
        let cfg = Config::new(65532, 15001, &[], &[], &[], false).unwrap();
        assert_eq!(cfg.ports(), &Ports::All);
        let text = render(&cfg, Family::V4, &Installed::default());
        assert!(text.contains("-A PINPROXY_OUTPUT -p tcp -j PINPROXY_REDIRECT\n"));
        assert!(!text.contains("multiport"));
        assert!(!text.contains("*filter"), "{text}");
    }

    #[test]
    fn more_than_fifteen_ports_take_several_multiport_rules() {
        let ports: Vec<u16> = (8000..8020).collect();
        let cfg = Config::new(65532, 15001, &ports, &[], &[], false).unwrap();
        let text = render(&cfg, Family::V4, &Installed::default());
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("--dports")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains(
            "--dports 8000,8001,8002,8003,8004,8005,8006,8007,8008,8009,8010,8011,8012,8013,8014 "
        ));
        assert!(lines[1].contains("--dports 8015,8016,8017,8018,8019 "));
    }

    #[test]
    fn config_validation_and_normalisation() {
        assert!(matches!(
            Config::new(1, 0, &[], &[], &[], false),
            Err(Error::ZeroPort)
        ));
        assert!(matches!(
            Config::new(1, 15001, &[443, 0], &[], &[], false),
            Err(Error::ZeroInPorts)
        ));
        let cfg = Config::new(7, 15001, &[443, 80, 443], &[], &[9, 7, 9, 8], false).unwrap();
        assert_eq!(cfg.ports(), &Ports::Only(vec![80, 443]));
        let text = render(&cfg, Family::V4, &Installed::default());
        let uids: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A PINPROXY_OUTPUT -m owner"))
            .collect();
        assert_eq!(
            uids,
            [
                "-A PINPROXY_OUTPUT -m owner --uid-owner 7 -j RETURN",
                "-A PINPROXY_OUTPUT -m owner --uid-owner 9 -j RETURN",
                "-A PINPROXY_OUTPUT -m owner --uid-owner 8 -j RETURN",
            ]
        );
    }

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

    /// `iptables-save` of a namespace with someone else's rules and a
    /// pinproxy install (with --lock) in it.
    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 30 05:23:47 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:PINPROXY_LOCK - [0:0]
:SOMEONE_ELSE - [0:0]
-A OUTPUT -p tcp -j PINPROXY_LOCK
-A OUTPUT -d 203.0.113.9/32 -p udp -j SOMEONE_ELSE
-A PINPROXY_LOCK -m owner --uid-owner 65532 -j RETURN
-A PINPROXY_LOCK -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REJECT --reject-with tcp-reset
COMMIT
# Completed on Mon Nov 30 05:23:47 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PINPROXY_OUTPUT - [0:0]
:PINPROXY_REDIRECT - [0:0]
-A OUTPUT -p tcp -j PINPROXY_OUTPUT
-A OUTPUT -d 203.0.113.10/32 -p tcp -j RETURN
-A OUTPUT -p tcp -j PINPROXY_OUTPUT
-A PINPROXY_OUTPUT -p tcp -m multiport --dports 80,443 -j PINPROXY_REDIRECT
-A PINPROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
*mangle
:OUTPUT ACCEPT [0:0]
COMMIT
";

    #[test]
    fn parse_keeps_only_pinproxy_chains_and_jumps_into_them() {
        let installed = Installed::parse(SAVED);
        assert_eq!(
            installed,
            Installed {
                tables: vec![
                    Table {
                        name: "filter".into(),
                        chains: vec!["PINPROXY_LOCK".into()],
                        jumps: vec!["OUTPUT -p tcp -j PINPROXY_LOCK".into()],
                    },
                    Table {
                        name: "nat".into(),
                        chains: vec!["PINPROXY_OUTPUT".into(), "PINPROXY_REDIRECT".into()],
                        jumps: vec![
                            "OUTPUT -p tcp -j PINPROXY_OUTPUT".into(),
                            "OUTPUT -p tcp -j PINPROXY_OUTPUT".into(),
                        ],
                    },
                ],
            }
        );
        assert!(Installed::parse("").is_empty());
        assert!(
            Installed::parse("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n")
                .is_empty()
        );
    }

    #[test]
    fn reapplying_replaces_every_old_jump_and_drops_the_lock_when_not_asked() {
        let cfg = Config::new(65532, 15001, &[443], &[], &[], false).unwrap();
        let text = render(&cfg, Family::V4, &Installed::parse(SAVED));
        assert_eq!(
            text,
            "\
*nat
:PINPROXY_OUTPUT - [0:0]
:PINPROXY_REDIRECT - [0:0]
-D OUTPUT -p tcp -j PINPROXY_OUTPUT
-D OUTPUT -p tcp -j PINPROXY_OUTPUT
-A PINPROXY_OUTPUT -m owner --uid-owner 65532 -j RETURN
-A PINPROXY_OUTPUT -o lo -j RETURN
-A PINPROXY_OUTPUT -d 127.0.0.0/8 -j RETURN
-A PINPROXY_OUTPUT -p tcp -m multiport --dports 443 -j PINPROXY_REDIRECT
-A PINPROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-I OUTPUT 1 -p tcp -j PINPROXY_OUTPUT
COMMIT
*filter
-D OUTPUT -p tcp -j PINPROXY_LOCK
-F PINPROXY_LOCK
-X PINPROXY_LOCK
COMMIT
"
        );
    }

    #[test]
    fn stale_pinproxy_chains_in_a_wanted_table_are_dropped() {
        let saved = "*nat\n:OUTPUT ACCEPT [0:0]\n:PINPROXY_OLD - [0:0]\n:PINPROXY_OUTPUT - [0:0]\n\
                     -A OUTPUT -j PINPROXY_OLD\n-A PINPROXY_OLD -j PINPROXY_OUTPUT\nCOMMIT\n";
        let cfg = Config::new(65532, 15001, &[], &[], &[], false).unwrap();
        let text = render(&cfg, Family::V4, &Installed::parse(saved));
        let head: Vec<&str> = text.lines().take(6).collect();
        assert_eq!(
            head,
            [
                "*nat",
                ":PINPROXY_OUTPUT - [0:0]",
                ":PINPROXY_REDIRECT - [0:0]",
                "-D OUTPUT -j PINPROXY_OLD",
                "-F PINPROXY_OLD",
                "-X PINPROXY_OLD",
            ]
        );
    }

    #[test]
    fn remove_deletes_jumps_then_flushes_then_deletes_chains() {
        assert_eq!(render_remove(&Installed::default()), None);
        assert_eq!(
            render_remove(&Installed::parse(SAVED)).unwrap(),
            "\
*filter
-D OUTPUT -p tcp -j PINPROXY_LOCK
-F PINPROXY_LOCK
-X PINPROXY_LOCK
COMMIT
*nat
-D OUTPUT -p tcp -j PINPROXY_OUTPUT
-D OUTPUT -p tcp -j PINPROXY_OUTPUT
-F PINPROXY_OUTPUT
-F PINPROXY_REDIRECT
-X PINPROXY_OUTPUT
-X PINPROXY_REDIRECT
COMMIT
"
        );
    }

    #[test]
    fn everything_is_what_a_full_install_leaves() {
        // The jumps a fresh install inserts are the ones `everything` lists.
        let text = render(&typical(), Family::V4, &Installed::default());
        let everything = Installed::everything();
        for t in &everything.tables {
            for j in &t.jumps {
                let (chain, spec) = j.split_once(' ').unwrap();
                assert!(text.contains(&format!("-I {chain} 1 {spec}\n")), "{j}");
            }
            for c in &t.chains {
                assert!(text.contains(&format!(":{c} - [0:0]\n")), "{c}");
            }
        }
    }

    #[test]
    fn ipv6_presence_is_read_from_if_inet6() {
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(ipv6_missing(Err(missing)).unwrap().is_some());
        assert!(ipv6_missing(Ok(String::new())).unwrap().is_some());
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(ipv6_missing(Ok(lo.to_string())).unwrap(), None);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(
            ipv6_missing(Err(denied)),
            Err(Error::Ipv6Probe(_))
        ));
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
