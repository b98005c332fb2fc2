//! Kernel socket buffers (the tenth review's F6): they are charged to the
//! container's memory but are in no figure the memory guard judges, so a
//! client that stops reading must not grow its socket's send queue to
//! `tcp_wmem`'s maximum (4 MiB on loopback, the app's hop). Read with
//! `ss` (iproute2), as an operator would.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

use pinproxy::proxy::CLIENT_SEND_BUFFER;
use support::*;

/// Loopback passed through, so a CONNECT to a local server is a tunnel.
const PINSET: &str =
    "version: 1\ndefaults:\n  unlisted: allow\npassthrough: [127.0.0.0/8]\nhosts: {}\n";

/// `skmem`'s send-queue figures of the proxy's side of its client
/// connections (source port `port`): the largest `(w, tb)`, bytes queued
/// to send and the send buffer's size.
fn send_queues(port: u16) -> (u64, u64) {
    let out = std::process::Command::new("ss")
        .args([
            "-tmnH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss (iproute2) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |skmem: &str, name: &str| -> u64 {
        skmem
            .split(',')
            .find_map(|f| f.strip_prefix(name)?.parse().ok())
            .unwrap_or(0)
    };
    text.split("skmem:(")
        .skip(1)
        .map(|s| s.split(')').next().unwrap_or(""))
        .map(|s| (field(s, "w"), field(s, "tb")))
        .fold((0, 0), |(t, tb), (t2, tb2)| (t.max(t2), tb.max(tb2)))
}

/// A server that sends without end to whoever connects.
async fn firehose() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let chunk = vec![b'x'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_whose_client_stops_reading_holds_a_bounded_send_queue() {
    let p = TestProxy::builder().pinset(PINSET).run().await;
    let server = firehose().await;

    // A client with a small receive window that reads the 200 and then
    // nothing more.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(p.addr).await.unwrap();
    let connect = format!("CONNECT {server} HTTP/1.1\r\nHost: {server}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));

    // Until the proxy's send queue to the client stops growing (steady for
    // half a second), bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut since) = (send_queues(p.addr.port()), Instant::now());
    while since.elapsed() < Duration::from_millis(500) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = send_queues(p.addr.port());
        if now.0 > last.0 {
            since = Instant::now();
        }
        last = now;
    }
    let (queued, buffer) = last;
    assert!(queued > 0, "the client's send queue never filled: {last:?}");
    // Linux doubles what SO_SNDBUF asks for (for its own bookkeeping).
    let cap = 2 * CLIENT_SEND_BUFFER as u64;
    assert!(
        buffer <= cap && queued <= cap,
        "a stalled client's socket: {queued} bytes queued, send buffer {buffer} bytes (cap {cap})"
    );
    drop(tcp);
}
