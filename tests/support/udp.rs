//! UDP servers inside test network namespaces: a sink that counts what
//! arrives, and a DNS server answering from a fixed table — so a test can
//! tell "dropped by the lock" (the count stays put) from "answered".

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns::Netns;

/// A UDP server on a thread inside a namespace; stopped on drop.
pub struct UdpServer {
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Datagrams received so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Waits (up to 2 s) until `n` datagrams came; returns the count then.
    pub fn wait_for(&self, n: usize) -> usize {
        for _ in 0..200 {
            if self.received() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.received()
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` in `ns` and answers each datagram with `reply(datagram)`
/// (nothing when `None`), counting them.
fn serve(
    ns: &Netns,
    addr: SocketAddr,
    reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> UdpServer {
    let received = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
    let (count, stopped) = (received.clone(), stop.clone());
    let thread = ns.spawn_in(move || {
        let sock = match UdpSocket::bind(addr) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("bind udp {addr}: {e}")));
                return;
            }
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = ready_tx.send(Ok(()));
        let mut buf = [0u8; 2048];
        while !stopped.load(Ordering::SeqCst) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            if let Some(answer) = reply(&buf[..n]) {
                let _ = sock.send_to(&answer, from);
            }
        }
    });
    ready
        .recv()
        .expect("udp thread ended before binding")
        .unwrap_or_else(|e| panic!("{e}"));
    UdpServer {
        received,
        stop,
        thread: Some(thread),
    }
}

/// Counts the datagrams that reach `addr`; answers none.
pub fn sink(ns: &Netns, addr: SocketAddr) -> UdpServer {
    serve(ns, addr, |_| None)
}

/// Echoes each datagram back: a UDP peer a client can hear from.
pub fn echo(ns: &Netns, addr: SocketAddr) -> UdpServer {
    serve(ns, addr, |d| Some(d.to_vec()))
}

/// A DNS server on `addr` answering A and AAAA queries for the names of
/// `table` (NXDOMAIN for other names), counting queries.
pub fn dns(ns: &Netns, addr: SocketAddr, table: &[(&str, IpAddr)]) -> UdpServer {
    let table: Vec<(String, IpAddr)> = table
        .iter()
        .map(|(n, ip)| (n.to_ascii_lowercase(), *ip))
        .collect();
    serve(ns, addr, move |q| dns_answer(q, &table))
}

/// The answer to one DNS query: the question echoed, the table's
/// addresses of its type as answers.
fn dns_answer(q: &[u8], table: &[(String, IpAddr)]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then QTYPE and QCLASS.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let name = labels.join(".");
    let known = table.iter().any(|(n, _)| *n == name);
    let answers: Vec<&IpAddr> = table
        .iter()
        .filter(|(n, ip)| {
            *n == name && matches!((qtype, ip), (1, IpAddr::V4(_)) | (28, IpAddr::V6(_)))
        })
        .map(|(_, ip)| ip)
        .collect();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q[0..2]); // id
    let rcode = if known { 0 } else { 3 };
    out.extend_from_slice(&[0x81, 0x80 | rcode]); // response, RD, RA
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for ip in answers {
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        let (rtype, data): (u16, Vec<u8>) = match ip {
            IpAddr::V4(v4) => (1, v4.octets().to_vec()),
            IpAddr::V6(v6) => (28, v6.octets().to_vec()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}
