//! Connection slots (`--max-connections`): however a client connection
//! ends, its slot and its share of `pinproxy_connections_active` come
//! back. The tenth review's F0: a CONNECT to a pinned host reset before
//! the `200` was written kept its slot for good, and a few hundred of them
//! took every slot.

mod support;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::*;

const HOST: &str = "api.slots.test";

/// `--max-connections`, low so that a few leaked slots take them all.
const SLOTS: usize = 8;

/// CONNECTs sent and reset at once: enough that some are reset after
/// hyper has read the CONNECT but before it has written the `200`.
const RESETS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_a_pinned_host_reset_before_its_200_gives_its_slot_back() {
    let pki = Pki::new(&[HOST]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let p = TestProxy::builder()
        .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .limits(|l| l.max_connections = SLOTS)
        .run()
        .await;
    let connect = format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n");
    for i in 0..RESETS {
        let mut tcp = TcpStream::connect(p.addr).await.unwrap();
        tcp.write_all(connect.as_bytes()).await.unwrap();
        // Closed with SO_LINGER 0: a reset, not a FIN.
        #[allow(deprecated)] // it blocks on drop: a reset is what is wanted
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
        drop(tcp);
        if i % 20 == 19 {
            // Let some slots free up, so later CONNECTs are not all refused.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Every slot given back: no client is connected any more.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut active = p.metrics.connections_active.get();
    while active != 0 {
        assert!(
            Instant::now() < deadline,
            "15 s after {RESETS} reset CONNECTs, with no client connected: \
             connections_active={active} of --max-connections {SLOTS}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        active = p.metrics.connections_active.get();
    }
    // And a new connection is served, not refused `overloaded`.
    let r = get(p.addr, &format!("http://{HOST}/")).await;
    assert_eq!(r.status, 200, "{:?} {}", r.error(), r.body);
    // The tunnel, too.
    let (status, head, _tcp) = connect_status(p.addr, &format!("{HOST}:443")).await;
    assert_eq!(status, 200, "{head}");
}
