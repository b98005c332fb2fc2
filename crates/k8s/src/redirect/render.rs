//! Rendering: the `iptables-restore --noflush` input that brings a
//! namespace from what it holds to exactly the rules of a [`Config`].

use super::{
    lock, udp, Config, Family, Installed, Ports, Table, LOCK_CHAIN, OUTPUT_CHAIN, REDIRECT_CHAIN,
};

/// iptables' multiport match takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

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
        rules.extend(lock::rules(&cfg.udp, family, LOCK_CHAIN));
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
/// (or, for the lock, never rejected). DNS over TCP to the pod's resolvers
/// is among them, so it passes the lock before the SYN reset.
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
    rules.extend(udp::dns_tcp(&cfg.udp, family, chain));
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
    let jump = super::save::jump(chains[0]);
    let (from, spec) = jump.split_once(' ').unwrap_or((jump.as_str(), ""));
    out.push_str(&format!("-I {from} 1 {spec}\n"));
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

#[cfg(test)]
mod tests {
    use super::super::save::SAVED;
    use super::super::{Cidr, Error, Udp};
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
        .with_udp(Udp {
            resolvers: vec![
                "10.96.0.10".parse().unwrap(),
                "fd00:10:96::a".parse().unwrap(),
            ],
            allow: vec!["10.0.0.0/8:123".parse().unwrap()],
            log: false,
        })
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
-A PINPROXY_OUTPUT -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN
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
-A PINPROXY_LOCK -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN
-A PINPROXY_LOCK -p tcp --syn -j REJECT --reject-with tcp-reset
-A PINPROXY_LOCK -p tcp -j RETURN
-A PINPROXY_LOCK -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A PINPROXY_LOCK -d 10.96.0.10/32 -p udp -m udp --dport 53 -j RETURN
-A PINPROXY_LOCK -d 10.0.0.0/8 -p udp -m udp --dport 123 -j RETURN
-A PINPROXY_LOCK -p icmp -m icmp --icmp-type destination-unreachable -j RETURN
-A PINPROXY_LOCK -p icmp -m icmp --icmp-type time-exceeded -j RETURN
-A PINPROXY_LOCK -p icmp -m icmp --icmp-type parameter-problem -j RETURN
-A PINPROXY_LOCK -p igmp -j RETURN
-A PINPROXY_LOCK -p udp -m udp --dport 443 -j REJECT --reject-with icmp-port-unreachable
-A PINPROXY_LOCK -j DROP
-I OUTPUT 1 -j PINPROXY_LOCK
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

    /// Review 10 F5: DNS over TCP to the pod's resolvers is not redirected
    /// without the lock either (pinproxy would close it).
    #[test]
    fn dns_over_tcp_to_the_resolvers_is_never_redirected() {
        let udp = Udp {
            resolvers: vec!["10.96.0.10".parse().unwrap()],
            ..Udp::default()
        };
        let cfg = Config::new(65532, 15001, &[], &[], &[], false)
            .unwrap()
            .with_udp(udp);
        let text = render(&cfg, Family::V4, &Installed::default());
        let rule = "-A PINPROXY_OUTPUT -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN\n";
        let redirect = "-A PINPROXY_OUTPUT -p tcp -j PINPROXY_REDIRECT\n";
        assert!(text.find(rule) < text.find(redirect), "{text}");
        assert!(text.contains(rule), "{text}");
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
}
