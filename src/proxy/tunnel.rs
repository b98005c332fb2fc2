//! Byte tunnels: splicing two streams with an idle timeout, and reading a
//! TLS ClientHello's SNI without consuming it (unlisted CONNECT tunnels
//! must name the CONNECT host too).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Wraps a stream and notes when bytes last moved through it.
pub struct Activity<S> {
    inner: S,
    clock: Arc<Clock>,
}

/// Milliseconds since `start` of the last activity, shared by both sides.
pub struct Clock {
    start: Instant,
    last: AtomicU64,
}

impl Clock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Resolves once nothing moved for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            tokio::time::sleep_until(deadline.into()).await;
            if self.last() + idle <= Instant::now() {
                return;
            }
        }
    }
}

impl<S> Activity<S> {
    pub fn new(inner: S, clock: Arc<Clock>) -> Self {
        Self { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies both ways until either side closes or nothing moves for `idle`.
pub async fn splice<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock::new();
    let mut a = Activity::new(a, clock.clone());
    let mut b = Activity::new(b, clock.clone());
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tunnel closed");
            }
        }
        _ = clock.idle(idle) => tracing::debug!("tunnel idle: closing"),
    }
}

/// What the first bytes of a tunnel say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A TLS ClientHello, with its SNI if any.
    Tls(Option<String>),
    /// Not TLS (or not parseable as a ClientHello).
    Other,
    /// The client closed or sent nothing in time.
    Nothing,
}

/// The largest ClientHello we wait for (post-quantum key shares are big).
const MAX_HELLO: usize = 32 * 1024;

/// Reads from `io` until a ClientHello can be judged; returns the verdict
/// and every byte read, which the caller must forward.
pub async fn peek_hello<S: AsyncRead + Unpin>(io: &mut S, timeout: Duration) -> (Hello, Vec<u8>) {
    let mut buf = Vec::with_capacity(2048);
    let mut acceptor = rustls::server::Acceptor::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        if n == 0 {
            let verdict = if buf.is_empty() {
                Hello::Nothing
            } else {
                Hello::Other
            };
            return (verdict, buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] != 0x16 {
            return (Hello::Other, buf);
        }
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return (Hello::Other, buf);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_string);
                return (Hello::Tls(sni), buf);
            }
            Ok(None) if buf.len() < MAX_HELLO => continue,
            _ => return (Hello::Other, buf),
        }
    }
}

/// A TLS `handshake_failure` alert record, sent before closing a tunnel
/// whose SNI is refused, so the client sees a TLS error, not a bare reset.
pub const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
