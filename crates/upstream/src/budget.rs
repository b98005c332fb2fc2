//! The upstream connection budget: one process-wide count of the sockets
//! pinproxy holds open to upstreams for its clients (pinned TLS, plain
//! HTTP, unlisted and passthrough tunnels, WebSocket connections,
//! transparent splices, idle pooled connections included).
//!
//! A client connection does not bound its upstream sockets: each idle
//! pooled connection outlives the request that opened it, and every h2
//! stream to an HTTP/1.1 upstream holds one of its own. Counted nowhere,
//! they could take every descriptor the process has — accept, `/readyz`
//! and reloads would fail with EMFILE. So every dial first takes a
//! [`Permit`], the socket ([`Socket`]) keeps it for as long as it lives,
//! and a dial finding none left is refused at once
//! ([`super::Failure::Overloaded`]), never queued. One atomic
//! compare-and-swap per connection, nothing per request.
//!
//! hyper-util's pool cannot be asked to close idle connections on
//! demand, so idle pooled connections are not evicted when the budget
//! runs out: they hold their permits until their idle timeout closes them
//! (or their upstream does). What bounds them is the budget itself, and a
//! per-host idle cap ([`IDLE_PER_HOST`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Idle pooled connections each pooled client keeps per host (hyper-util's
/// default is unbounded). It must hold a host's concurrency: a connection
/// returned past the cap is closed, and the next request dials again. At
/// 32 (stop 38 to the tenth review), wrk's 50 keep-alive clients through
/// an HTTP/1.1 upstream made 5.8 % of requests a fresh TLS handshake and
/// the forward path's CPU per request 2.65× nginx's (~1.1× at 256). The
/// budget, not this cap, bounds the sockets all hosts hold together
/// (idle ones included: ~30 KB each, 1,024 by default).
pub const IDLE_PER_HOST: usize = 256;

/// The budget `run` gives without flags (lowered to `--max-connections`
/// when that is lower): Envoy's default circuit-breaker `max_connections`
/// per cluster. Idle pooled connections cost ~30 KB each, so this bounds
/// them near 30 MB, well inside the chart's sidecar memory limit (4,096
/// would not be).
pub const DEFAULT_SIZE: usize = 1024;

/// The upstream sockets pinproxy may hold open at once. Cheap to clone:
/// every clone counts against the same budget.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    size: usize,
}

/// One upstream socket's place in the [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    _held: OwnedSemaphorePermit,
}

/// An upstream TCP connection holding its [`Permit`]: the permit is given
/// back when the socket is closed (dropped), not when a request ends.
#[derive(Debug)]
pub struct Socket {
    tcp: TcpStream,
    _permit: Permit,
}

// === impl Budget ===

impl Budget {
    /// A budget of `size` upstream sockets (at least one).
    pub fn new(size: usize) -> Self {
        let size = size.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// A permit, or `None` at once when the budget is spent.
    pub fn try_acquire(&self) -> Option<Permit> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|held| Permit { _held: held })
    }

    /// How many upstream sockets the budget allows.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many upstream sockets hold a permit now.
    pub fn in_use(&self) -> usize {
        self.size - self.permits.available_permits()
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(DEFAULT_SIZE)
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("size", &self.size)
            .field("in_use", &self.in_use())
            .finish()
    }
}

// === impl Socket ===

impl Socket {
    pub fn new(tcp: TcpStream, permit: Permit) -> Self {
        Self {
            tcp,
            _permit: permit,
        }
    }
}

impl Connection for Socket {
    fn connected(&self) -> Connected {
        self.tcp.connected()
    }
}

impl std::ops::Deref for Socket {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_refuses_until_a_permit_comes_back() {
        let budget = Budget::new(2);
        let a = budget.try_acquire().expect("first");
        let _b = budget.try_acquire().expect("second");
        assert!(budget.try_acquire().is_none(), "spent");
        assert_eq!(budget.in_use(), 2);
        drop(a);
        assert!(budget.try_acquire().is_some(), "given back on drop");
        assert_eq!(Budget::new(0).size(), 1, "never zero");
    }
}
