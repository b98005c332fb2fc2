//! Where a kernel-redirected connection was going (docs/reference.md,
//! "Transparent mode").
//!
//! In transparent mode `pinproxy redirect` installs nat `REDIRECT` rules, so
//! an app's `connect(203.0.113.7:443)` is accepted by pinproxy's listener on
//! `127.0.0.1:PORT` (IPv4) or `[::1]:PORT` (IPv6). The address the app asked
//! for survives only in the connection's conntrack entry; netfilter hands it
//! out through `getsockopt(SO_ORIGINAL_DST)` (IPv4) and
//! `getsockopt(IP6T_SO_ORIGINAL_DST)` (IPv6). socket2 wraps both safely, so
//! this crate keeps `#![forbid(unsafe_code)]`.
//!
//! A connection that was *not* redirected (someone dialled the listener
//! directly) has no translation to undo: the kernel reports the listener's
//! own address, or `NotFound` when conntrack holds no entry for it. Callers
//! must treat an original destination equal to one of pinproxy's own
//! listeners as a loop and refuse it.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;

/// The destination the peer of `stream` originally connected to, before a
/// nat `REDIRECT` (or `DNAT`) sent it to this socket.
pub fn original_dst(stream: &tokio::net::TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    // The option belongs to the socket's protocol family: an IPv4
    // connection accepted on a dual-stack `[::]` socket (local address
    // `::ffff:a.b.c.d`) is tracked by IPv4 conntrack.
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(local) if local.ip().to_ipv4_mapped().is_some() => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the kernel returned an original destination that is not an IP address",
        )
    })
}
