//! Egress rules: where unlisted traffic may not go. Checked on resolved
//! addresses, so DNS rebinding can't turn a public name into a private
//! target.

use std::net::{IpAddr, SocketAddr};

/// Whether unlisted egress may go to `addr`: never to pinproxy's own
/// listeners (`own`, whatever `allow_private` says), and only to public
/// addresses unless `allow_private`.
pub fn allowed(addr: &SocketAddr, own: &[SocketAddr], allow_private: bool) -> bool {
    !is_own(addr, own) && (allow_private || !is_private(addr.ip()))
}

/// Whether `target` is one of the proxy's own listeners (admin, proxy,
/// transparent): same port, and the listener's address, or — for a
/// wildcard bind (`0.0.0.0`, `::`) — an address of this host (its network
/// namespace: in a pod, the pod's interfaces). Another host's port is
/// never "ours" because a local listener is bound to the wildcard.
/// Loopback and unspecified targets on a listener's port are always ours.
pub fn is_own(target: &SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = target.ip().to_canonical();
    let mut local = None;
    own.iter().any(|own| {
        own.port() == target.port()
            && (own.ip().to_canonical() == ip
                || ip.is_loopback()
                || ip.is_unspecified()
                || (own.ip().is_unspecified() && *local.get_or_insert_with(|| is_local(ip))))
    })
}

/// Whether `ip` is an address of this host's network namespace: the
/// kernel lets a socket bind only to those (`EADDRNOTAVAIL` otherwise), so
/// asking it is exact at the moment of the check, addresses added since
/// startup included. Only called for a target on a wildcard listener's
/// port; no packet is sent.
fn is_local(ip: IpAddr) -> bool {
    match std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrNotAvailable,
    }
}

/// Loopback, private (RFC 1918, ULA), link-local (cloud metadata),
/// unspecified, CGNAT and similar non-public ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Addresses that embed an IPv4 address: judge the embedded one.
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_private(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || s[..6] == [0; 6] // IPv4-compatible ::a.b.c.d (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] && embedded(s[6], s[7])) // NAT64 well-known
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // NAT64 local-use
                || (s[0] == 0x2002 && embedded(s[1], s[2])) // 6to4
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24 item 7: a wildcard bind makes this host's addresses on
    /// that port ours, never another host's.
    #[test]
    fn a_wildcard_bind_owns_only_local_addresses() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let own = [sa("0.0.0.0:9901"), sa("127.0.0.1:3128"), sa("[::]:15001")];
        for ours in [
            "127.0.0.1:9901",
            "127.0.0.9:9901",
            "0.0.0.0:9901",
            "127.0.0.1:3128",
            "[::1]:15001",
            "[::ffff:127.0.0.1]:9901",
        ] {
            assert!(is_own(&sa(ours), &own), "{ours}");
        }
        // Hosts elsewhere (TEST-NET, documentation, public), and other ports.
        for theirs in [
            "192.0.2.77:9901",
            "198.51.100.7:9901",
            "8.8.8.8:9901",
            "[2001:db8::77]:15001",
            "127.0.0.1:9902",
            "192.0.2.77:3128",
        ] {
            assert!(!is_own(&sa(theirs), &own), "{theirs}");
        }
        // A specific bind owns its own address (and loopback) only.
        assert!(is_own(&sa("192.0.2.1:3128"), &[sa("192.0.2.1:3128")]));
        assert!(is_own(&sa("127.0.0.1:3128"), &[sa("192.0.2.1:3128")]));
        assert!(!is_own(&sa("192.0.2.2:3128"), &[sa("192.0.2.1:3128")]));
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "172.32.0.1",
            "2002:101:101::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
