//! (A module of tests/redirect.rs: one test binary fewer.)
//!
//! The lock and the kernel's multicast membership reports (review 10 F7):
//! IGMP and MLD pass, what an app could fill still does not.

use super::lock::{rule_packets, send_other, DROPPED_ERRNO};
use crate::support::netns::{self, check, Pod, WORLD_V4, WORLD_V6};
use crate::support::pod::{python_as, redirect, APP_UID};

/// Joins an IPv4 and an IPv6 group on eth0, as an app that receives
/// multicast does, and holds them for a second: the kernel reports both
/// joins (IGMPv3, MLDv2), more than once.
const JOIN: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
mreq = socket.inet_aton("239.1.2.3") + socket.inet_aton(sys.argv[1])
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
mreq6 = socket.inet_pton(socket.AF_INET6, "ff05::1:3") + struct.pack("@I", socket.if_nametoindex("eth0"))
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
time.sleep(1)
print("joined")
"#;

/// Packets counted by the lock's IGMP rule (`iptables -L` shows the
/// protocol as its number, 2, or its name).
fn igmp_packets(pod: &Pod) -> u64 {
    let out = check(
        pod.app
            .command("iptables")
            .args(["-L", "PINPROXY_LOCK", "-v", "-n", "-x"]),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[2] == "RETURN" && (f[3] == "2" || f[3] == "igmp"))
        .and_then(|f| f[0].parse().ok())
        .unwrap_or_else(|| panic!("no IGMP rule in:\n{text}"))
}

/// Review 10 F7: the default-deny lock dropped the kernel's IGMP and MLD
/// reports, so behind an IGMP/MLD-snooping switch a multicast receiver in
/// the pod stopped hearing its groups. They pass now (only the kernel
/// writes them: no payload an app chose), and the protocols the lock
/// refuses (UDP-Lite, ICMP echo) are still dropped.
#[test]
fn the_lock_lets_the_kernels_multicast_reports_out_and_nothing_else() {
    if netns::skip("the_lock_lets_the_kernels_multicast_reports_out_and_nothing_else") {
        return;
    }
    let pod = Pod::new("mcast");
    pod.app.etc("resolv.conf", "nameserver 127.0.0.53\n");
    pod.app.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    redirect(&pod.app, &["--lock"]);
    let drops = |program| rule_packets(&pod, program, &["DROP"]);
    let (v4, v6) = (drops("iptables"), drops("ip6tables"));

    let joined = python_as(&pod.app, APP_UID, JOIN, &[netns::APP_V4]);
    assert_eq!(joined, "joined");
    assert_eq!(drops("iptables"), v4, "an IGMP report was dropped");
    assert_eq!(drops("ip6tables"), v6, "an MLD report was dropped");
    // They left through their own rules.
    assert!(igmp_packets(&pod) >= 1, "no IGMP report left");
    let mld = rule_packets(&pod, "ip6tables", &["RETURN", "ipv6-icmptype 143"]);
    assert!(mld >= 1, "no MLDv2 report left");

    // What an unprivileged app can send beyond them is still refused.
    for host in [WORLD_V4[1], WORLD_V6[1]] {
        assert_eq!(send_other(&pod, "udplite", host, 443), DROPPED_ERRNO);
    }
    assert_eq!(send_other(&pod, "ping", WORLD_V4[1], 0), DROPPED_ERRNO);
    assert!(drops("iptables") >= v4 + 2);
    assert!(drops("ip6tables") > v6);
}
