//! `--lock`: the filter chain that refuses what is not redirected.
//!
//! Default deny. After the exemptions every protocol shares (pinproxy's
//! UID, `--exclude-uid`, loopback, `--exclude-cidr`), the chain lets out
//! only:
//!
//! - TCP that is not a new connection: a SYN leaving the pod was not
//!   redirected (the nat hook runs first and sends redirected ones to
//!   loopback), so it gets a reset; the rest of TCP belongs to connections
//!   the kernel already has (the replies of ones the app accepted);
//! - replies to flows that came in (`ctstate ESTABLISHED,RELATED`), of any
//!   protocol: a server in the pod keeps answering;
//! - the UDP of [`super::udp`]: DNS to the pod's resolvers, `--allow-udp`;
//! - the ICMP a TCP connection needs to work — destination-unreachable
//!   (fragmentation-needed is one of its codes), time-exceeded,
//!   parameter-problem, and for IPv6 packet-too-big — and IPv6's neighbour
//!   discovery and router solicitation, without which no IPv6 packet
//!   leaves the link;
//! - the multicast membership reports of IGMP (IPv4, protocol 2) and MLD
//!   (ICMPv6 130, 131, 132, 143): the kernel sends them when a socket joins
//!   a group and, for IPv6, for the solicited-node groups of every address.
//!   Dropped, a multicast receiver in the pod stops hearing its groups
//!   behind an IGMP/MLD-snooping switch or bridge (review 10 F7).
//!
//! An unprivileged process cannot write any of the ICMP or IGMP that
//! passes (it would need a raw socket, `CAP_NET_RAW`, which injection
//! drops; the unprivileged ICMP socket sends only echo requests): the
//! kernel does, and what it writes carries no payload an app chose.
//!
//! Everything else is refused, whatever its protocol: UDP 443 with ICMP
//! port-unreachable (QUIC clients fall back to TCP at once), the rest
//! dropped. A drop in `OUTPUT` fails the sender's call at once (`EPERM`),
//! so it is no silent timeout. An earlier lock listed what it refused (TCP
//! SYNs, UDP), and UDP-Lite, SCTP, DCCP, GRE and ICMP echo with a payload
//! left the pod (review 8).

use super::udp::{self, Udp};
use super::Family;

/// The ICMP types that pass the lock (iptables' names), IPv4 and IPv6.
const ICMP_V4: [&str; 3] = [
    "destination-unreachable",
    "time-exceeded",
    "parameter-problem",
];
const ICMP_V6: [&str; 11] = [
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "router-solicitation",
    "neighbour-solicitation",
    "neighbour-advertisement",
    // MLD: query, report, done, MLDv2 report. Numbers, because older
    // ip6tables have no names for them (and iptables-save prints numbers).
    "130",
    "131",
    "132",
    "143",
];

// === rendering ===

/// The lock chain's rules for `family`, after the exemptions.
pub(super) fn rules(udp: &Udp, family: Family, chain: &str) -> Vec<String> {
    let mut rules = Vec::new();
    if udp.log {
        rules.push(udp::log_rule(chain, "-p tcp --syn "));
    }
    rules.push(format!(
        "-A {chain} -p tcp --syn -j REJECT --reject-with tcp-reset"
    ));
    rules.push(format!("-A {chain} -p tcp -j RETURN"));
    rules.push(format!(
        "-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    ));
    rules.extend(udp::allowed(udp, family, chain));
    rules.extend(icmp(family, chain));
    if udp.log {
        rules.push(udp::log_rule(chain, ""));
    }
    rules.push(udp::quic_reject(family, chain));
    rules.push(format!("-A {chain} -j DROP"));
    rules
}

/// The RETURNs of the ICMP (ICMPv6) types that pass, and for IPv4 IGMP
/// (IPv6's MLD is ICMPv6).
fn icmp(family: Family, chain: &str) -> Vec<String> {
    let (proto, types) = match family {
        Family::V4 => ("-p icmp -m icmp --icmp-type", &ICMP_V4[..]),
        Family::V6 => ("-p ipv6-icmp -m icmp6 --icmpv6-type", &ICMP_V6[..]),
    };
    let mut rules: Vec<String> = types
        .iter()
        .map(|t| format!("-A {chain} {proto} {t} -j RETURN"))
        .collect();
    if family == Family::V4 {
        rules.push(format!("-A {chain} -p igmp -j RETURN"));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_allows_what_it_lists_and_ends_in_a_refusal_of_every_protocol() {
        let udp = Udp {
            resolvers: vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()],
            allow: vec!["10.0.0.0/8:123".parse().unwrap()],
            log: false,
        };
        assert_eq!(
            rules(&udp, Family::V4, "L"),
            [
                "-A L -p tcp --syn -j REJECT --reject-with tcp-reset",
                "-A L -p tcp -j RETURN",
                "-A L -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-A L -d 10.96.0.10/32 -p udp -m udp --dport 53 -j RETURN",
                "-A L -d 10.0.0.0/8 -p udp -m udp --dport 123 -j RETURN",
                "-A L -p icmp -m icmp --icmp-type destination-unreachable -j RETURN",
                "-A L -p icmp -m icmp --icmp-type time-exceeded -j RETURN",
                "-A L -p icmp -m icmp --icmp-type parameter-problem -j RETURN",
                "-A L -p igmp -j RETURN",
                "-A L -p udp -m udp --dport 443 -j REJECT --reject-with icmp-port-unreachable",
                "-A L -j DROP",
            ]
        );
        let v6 = rules(&udp, Family::V6, "L");
        for t in [
            "destination-unreachable",
            "packet-too-big",
            "time-exceeded",
            "parameter-problem",
            "router-solicitation",
            "neighbour-solicitation",
            "neighbour-advertisement",
            "130",
            "131",
            "132",
            "143",
        ] {
            let rule = format!("-A L -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j RETURN");
            assert!(v6.contains(&rule), "{rule}: {v6:?}");
        }
        assert!(!v6.iter().any(|r| r.contains("echo")), "{v6:?}");
        assert!(!v6.iter().any(|r| r.contains("igmp")), "{v6:?}");
        assert_eq!(v6.last().map(String::as_str), Some("-A L -j DROP"));
        // Nothing but the last rule matches every protocol: each RETURN
        // names its protocol or asks conntrack.
        for rule in &v6[..v6.len() - 1] {
            assert!(
                rule.contains(" -p ") || rule.contains("--ctstate"),
                "{rule}"
            );
        }
    }

    #[test]
    fn log_drops_logs_before_the_resets_and_before_the_last_refusals() {
        let logged = rules(
            &Udp {
                log: true,
                ..Udp::default()
            },
            Family::V4,
            "L",
        );
        let at = |needle: &str| {
            logged
                .iter()
                .position(|r| r.contains(needle))
                .unwrap_or_else(|| panic!("{needle}: {logged:?}"))
        };
        let logs: Vec<usize> = (0..logged.len())
            .filter(|i| logged[*i].contains("-j LOG"))
            .collect();
        assert_eq!(logs.len(), 2, "{logged:?}");
        assert!(logged[logs[0]].contains("-p tcp --syn"), "{logged:?}");
        assert!(logs[0] < at("tcp-reset"), "{logged:?}");
        assert!(logs[1] > at("parameter-problem"), "{logged:?}");
        assert!(logs[1] < at("icmp-port-unreachable"), "{logged:?}");
        assert!(!logged[logs[1]].contains(" -p "), "{logged:?}");
        assert!(
            logged[logs[1]].contains("-m limit --limit 6/min"),
            "{logged:?}"
        );
    }
}
