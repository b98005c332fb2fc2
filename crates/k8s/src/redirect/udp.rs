//! UDP under `--lock`: what an app may still send without pinproxy.
//!
//! pinproxy speaks TCP only, so UDP cannot be redirected to it; left open,
//! UDP is the way around the pins (HTTP/3 over QUIC reaches any host
//! unpinned, and DNS can go to any resolver). Under `--lock`, UDP from
//! every UID the lock covers is:
//!
//! - let through to the pod's resolvers on port 53 (the `nameserver`
//!   lines of `/etc/resolv.conf` when the rules are installed: the init
//!   container shares the pod's) and to each `--allow-udp CIDR:PORT`
//!   (DNS over TCP to the same resolvers is neither redirected nor reset,
//!   lock or not: [`dns_tcp`]);
//! - let through when it answers a flow that came in (`ctstate
//!   ESTABLISHED,RELATED`, for every protocol: `lock.rs`), as the
//!   TCP lock lets accepted connections answer: a UDP *server* in the pod
//!   keeps working;
//! - **rejected with ICMP port-unreachable on port 443**: QUIC clients on
//!   connected sockets (browsers, curl, quiche, ngtcp2) see the refusal at
//!   once and fall back to TCP, which is redirected and pinned;
//! - dropped otherwise, by the lock's last rule, which drops every
//!   protocol it has not let through. The kernel drops it, so pinproxy's
//!   metrics cannot see it: `iptables -L PINPROXY_LOCK -v -n` counts
//!   packets per rule, and `--log-drops` adds a rate-limited `LOG` rule
//!   (kernel log, prefix `pinproxy-lock: `).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use super::{Cidr, Family};

/// The log rule's rate: enough to see what is refused, never a flood.
const LOG_LIMIT: &str = "-m limit --limit 6/min --limit-burst 10";
/// The prefix of the log rule's kernel log lines.
pub const LOG_PREFIX: &str = "pinproxy-lock: ";
/// The DNS port the resolvers are reached on.
const DNS_PORT: u16 = 53;
/// QUIC's port: rejected loudly instead of dropped.
const QUIC_PORT: u16 = 443;

/// `--allow-udp CIDR:PORT`: a UDP destination apps may reach under the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpAllow {
    cidr: Cidr,
    port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not CIDR:PORT, e.g. 10.0.0.0/8:123 or [fd00::/8]:123 ({reason})")]
pub struct UdpAllowError {
    value: String,
    reason: String,
}

/// What the lock does with UDP, beyond the exemptions every protocol has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Udp {
    /// The pod's resolvers (port 53). DNS over TCP to them is never
    /// redirected nor locked, with or without the lock ([`dns_tcp`]).
    pub resolvers: Vec<IpAddr>,
    /// `--allow-udp`.
    pub allow: Vec<UdpAllow>,
    /// `--log-drops`: a rate-limited LOG rule before each refusal.
    pub log: bool,
}

// === impl UdpAllow ===

impl UdpAllow {
    pub fn new(cidr: Cidr, port: u16) -> UdpAllow {
        UdpAllow { cidr, port }
    }
}

impl FromStr for UdpAllow {
    type Err = UdpAllowError;

    /// `10.0.0.0/8:123`, `192.0.2.7:123`, `[fd00::/8]:123`,
    /// `[2001:db8::1]:123` or `fd00::/8:123` (the prefix makes the last
    /// colon the port's). A bare IPv6 address needs brackets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| UdpAllowError {
            value: s.to_string(),
            reason,
        };
        let (cidr, port) = if let Some(rest) = s.strip_prefix('[') {
            let (cidr, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("no ]:PORT after [".into()))?;
            (cidr, port)
        } else {
            let (cidr, port) = s.rsplit_once(':').ok_or_else(|| bad("no :PORT".into()))?;
            if cidr.contains(':') && !cidr.contains('/') {
                return Err(bad("an IPv6 address needs brackets: [ADDR]:PORT".into()));
            }
            (cidr, port)
        };
        let cidr: Cidr = cidr
            .parse()
            .map_err(|e: super::CidrError| bad(e.to_string()))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(bad(format!("{port:?} is not a port (1-65535)"))),
        };
        Ok(UdpAllow { cidr, port })
    }
}

impl fmt::Display for UdpAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cidr.family() {
            Family::V4 => write!(f, "{}:{}", self.cidr, self.port),
            Family::V6 => write!(f, "[{}]:{}", self.cidr, self.port),
        }
    }
}

// === resolv.conf ===

/// The `nameserver` addresses of a resolv.conf, in order, without
/// duplicates. A zone index (`fe80::1%eth0`) is dropped: the rule matches
/// the address. Lines that are not an address are skipped (glibc does the
/// same).
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let addr = addr.split('%').next().unwrap_or_default();
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The resolvers named in the resolv.conf at `path`; a missing file is no
/// resolver (glibc then asks 127.0.0.1, which loopback's exemption covers).
pub fn read_nameservers(path: &Path) -> io::Result<Vec<IpAddr>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(nameservers(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

// === rendering ===

/// The lock chain's RETURNs for the UDP that passes in `family`.
pub(super) fn allowed(udp: &Udp, family: Family, chain: &str) -> Vec<String> {
    let mut rules = Vec::new();
    for ip in udp.resolvers.iter().filter(|ip| Family::of(ip) == family) {
        let host = Cidr::host(*ip);
        rules.push(format!(
            "-A {chain} -d {host} -p udp -m udp --dport {DNS_PORT} -j RETURN"
        ));
    }
    for a in udp.allow.iter().filter(|a| a.cidr.family() == family) {
        rules.push(format!(
            "-A {chain} -d {} -p udp -m udp --dport {} -j RETURN",
            a.cidr, a.port
        ));
    }
    rules
}

/// The RETURNs that keep DNS over TCP to the pod's resolvers out of the
/// redirect (nat) and the lock's reset (filter), for `family`. pinproxy
/// speaks no DNS: redirected, such a query was closed, and glibc and Go
/// retry a truncated UDP answer over TCP (many endpoints, DNSSEC, long
/// TXT), so the lookup failed (review 10 F5). It reaches what UDP DNS
/// already reaches, nothing more.
pub(super) fn dns_tcp(udp: &Udp, family: Family, chain: &str) -> Vec<String> {
    udp.resolvers
        .iter()
        .filter(|ip| Family::of(ip) == family)
        .map(|ip| {
            let host = Cidr::host(*ip);
            format!("-A {chain} -d {host} -p tcp -m tcp --dport {DNS_PORT} -j RETURN")
        })
        .collect()
}

/// The rule that rejects QUIC loudly instead of dropping it.
pub(super) fn quic_reject(family: Family, chain: &str) -> String {
    let unreachable = match family {
        Family::V4 => "icmp-port-unreachable",
        Family::V6 => "icmp6-port-unreachable",
    };
    format!("-A {chain} -p udp -m udp --dport {QUIC_PORT} -j REJECT --reject-with {unreachable}")
}

/// A rate-limited LOG rule for the packets `matches` (`"-p tcp --syn "`,
/// or `""` for all) selects: `--log-drops`.
pub(super) fn log_rule(chain: &str, matches: &str) -> String {
    format!("-A {chain} {matches}{LOG_LIMIT} -j LOG --log-prefix \"{LOG_PREFIX}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_udp_parses_both_families() {
        let ok = |s: &str| s.parse::<UdpAllow>().unwrap().to_string();
        assert_eq!(ok("10.1.2.3/8:123"), "10.0.0.0/8:123");
        assert_eq!(ok("192.0.2.7:53"), "192.0.2.7/32:53");
        assert_eq!(ok("[fd00::/8]:123"), "[fd00::/8]:123");
        assert_eq!(ok("[2001:db8::1]:53"), "[2001:db8::1/128]:53");
        assert_eq!(ok("fd00::/8:123"), "[fd00::/8]:123");
        for bad in [
            "",
            "10.0.0.0/8",
            "10.0.0.0/8:",
            "10.0.0.0/8:0",
            "10.0.0.0/8:65536",
            "10.0.0.0/8:+53",
            "2001:db8::1:53",
            "[2001:db8::1]53",
            "[2001:db8::1]",
            "example.com:53",
            "10.0.0.0/33:53",
        ] {
            assert!(bad.parse::<UdpAllow>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn nameservers_are_read_as_glibc_reads_them() {
        let text = "\
# generated by the kubelet
search default.svc.cluster.local svc.cluster.local
nameserver 10.96.0.10
nameserver   fd00:10:96::a
nameserver fe80::1%eth0
nameserver 10.96.0.10
nameserver not-an-address
nameserver
options ndots:5
";
        let got: Vec<String> = nameservers(text).iter().map(IpAddr::to_string).collect();
        assert_eq!(got, ["10.96.0.10", "fd00:10:96::a", "fe80::1"]);
        assert!(nameservers("").is_empty());
        let missing = read_nameservers(Path::new("/nonexistent/resolv.conf")).unwrap();
        assert!(missing.is_empty());
    }

    #[test]
    fn udp_passes_to_the_resolvers_and_listed_destinations_and_quic_is_rejected() {
        let udp = Udp {
            resolvers: vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()],
            allow: vec![
                "10.0.0.0/8:123".parse().unwrap(),
                "[fd00::/8]:123".parse().unwrap(),
            ],
            log: false,
        };
        assert_eq!(
            allowed(&udp, Family::V4, "L"),
            [
                "-A L -d 10.96.0.10/32 -p udp -m udp --dport 53 -j RETURN",
                "-A L -d 10.0.0.0/8 -p udp -m udp --dport 123 -j RETURN",
            ]
        );
        assert_eq!(
            allowed(&udp, Family::V6, "L"),
            [
                "-A L -d fd00::a/128 -p udp -m udp --dport 53 -j RETURN",
                "-A L -d fd00::/8 -p udp -m udp --dport 123 -j RETURN",
            ]
        );
        assert_eq!(
            dns_tcp(&udp, Family::V4, "N"),
            ["-A N -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN"]
        );
        assert_eq!(
            dns_tcp(&udp, Family::V6, "N"),
            ["-A N -d fd00::a/128 -p tcp -m tcp --dport 53 -j RETURN"]
        );
        assert_eq!(
            quic_reject(Family::V4, "L"),
            "-A L -p udp -m udp --dport 443 -j REJECT --reject-with icmp-port-unreachable"
        );
        assert_eq!(
            quic_reject(Family::V6, "L"),
            "-A L -p udp -m udp --dport 443 -j REJECT --reject-with icmp6-port-unreachable"
        );
        assert_eq!(
            log_rule("L", "-p tcp --syn "),
            "-A L -p tcp --syn -m limit --limit 6/min --limit-burst 10 -j LOG \
             --log-prefix \"pinproxy-lock: \""
        );
    }
}
