//! Byte tunnels: splicing two streams with an idle timeout, and reading a
//! TLS ClientHello's SNI without consuming it (unlisted CONNECT tunnels
//! must name the CONNECT host too).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

// tokio's clock, so idle timeouts can be tested in virtual time.
use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Wraps a stream and notes when bytes last moved through it.
pub struct Activity<S> {
    inner: S,
    clock: Arc<Clock>,
}

/// Milliseconds since `start` of the last activity, shared by both sides;
/// and, for a connection judged by its requests ([`Clock::busy`]), how many
/// are in flight — it is not idle while one is.
pub struct Clock {
    start: Instant,
    last: AtomicU64,
    in_flight: AtomicUsize,
}

/// One request in flight on a connection whose [`Clock`] it holds busy;
/// dropped when its response has been sent whole.
pub struct Busy(Arc<Clock>);

impl Busy {
    /// Notes activity on its connection (a response frame sent).
    pub fn touch(&self) {
        self.0.touch();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl Clock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// A request has started: not idle until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    pub fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Resolves once nothing moved, and no request was in flight, for
    /// `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            tokio::time::sleep_until(deadline).await;
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Counted from when the last one ends ([`Busy`]'s drop).
                self.touch();
                continue;
            }
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
    /// Starts as a TLS handshake record but is no ClientHello rustls can
    /// read — an empty record first (OpenSSL skips it, rustls does not),
    /// a broken or oversized one: the name it asks for cannot be checked.
    Unreadable,
    /// Not TLS.
    Other,
}

/// The largest ClientHello we wait for (post-quantum key shares are big).
const MAX_HELLO: usize = 32 * 1024;

/// Judges a tunnel's first client bytes incrementally.
pub(crate) struct HelloReader {
    buf: Vec<u8>,
    acceptor: rustls::server::Acceptor,
}

impl HelloReader {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(2048),
            acceptor: rustls::server::Acceptor::default(),
        }
    }

    /// Every byte fed so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Feeds bytes; `Some` once the hello can be judged.
    pub(crate) fn feed(&mut self, mut fresh: &[u8]) -> Option<Hello> {
        self.buf.extend_from_slice(fresh);
        if self.buf[0] != 0x16 {
            return Some(Hello::Other);
        }
        while !fresh.is_empty() {
            if self.acceptor.read_tls(&mut fresh).is_err() {
                return Some(Hello::Unreadable);
            }
        }
        match self.acceptor.accept() {
            Ok(Some(accepted)) => Some(Hello::Tls(
                accepted.client_hello().server_name().map(str::to_string),
            )),
            Ok(None) if self.buf.len() < MAX_HELLO => None,
            _ => Some(Hello::Unreadable),
        }
    }
}

/// How a checked splice ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Spliced {
    /// Bytes flowed until a side closed or the tunnel went idle.
    Done,
    /// `accept` refused the client's hello; a TLS alert was sent.
    Refused(Hello),
}

/// Splices `client` and `upstream`, but holds the client's bytes back until
/// its first message is judged by `accept` (server-first protocols keep
/// working: upstream → client flows meanwhile). There is no deadline for the
/// judgement — a late ClientHello is judged like an early one — only the
/// idle timeout.
pub async fn splice_checked<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    accept: impl Fn(&Hello) -> bool,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let clock = Clock::new();
    let mut client = Activity::new(client, clock.clone());
    let mut upstream = Activity::new(upstream, clock.clone());
    let mut reader = HelloReader::new();
    {
        let (mut cr, mut cw) = tokio::io::split(&mut client);
        let (mut ur, mut uw) = tokio::io::split(&mut upstream);
        let mut cbuf = vec![0u8; 4096];
        let mut sbuf = vec![0u8; 8192];
        let hello = loop {
            tokio::select! {
                r = cr.read(&mut cbuf) => match r {
                    Ok(0) | Err(_) => return Spliced::Done,
                    Ok(n) => if let Some(h) = reader.feed(&cbuf[..n]) { break h },
                },
                r = ur.read(&mut sbuf) => match r {
                    Ok(0) | Err(_) => return Spliced::Done,
                    Ok(n) => if cw.write_all(&sbuf[..n]).await.is_err() { return Spliced::Done },
                },
                _ = clock.idle(idle) => return Spliced::Done,
            }
        };
        if !accept(&hello) {
            let _ = cw.write_all(&HANDSHAKE_FAILURE_ALERT).await;
            let _ = cw.shutdown().await;
            return Spliced::Refused(hello);
        }
        if uw.write_all(&reader.buf).await.is_err() {
            return Spliced::Done;
        }
    }
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tunnel closed");
            }
        }
        _ = clock.idle(idle) => tracing::debug!("tunnel idle: closing"),
    }
    Spliced::Done
}

/// A TLS `handshake_failure` alert record, sent before closing a tunnel
/// whose SNI is refused, so the client sees a TLS error, not a bare reset.
pub const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// A stream with bytes already read from it put back in front: what hyper
/// had buffered when a connection was parked or handed to a tunnel.
pub struct Rewind<S> {
    prefix: bytes::Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(inner: S) -> Self {
        Self {
            prefix: bytes::Bytes::new(),
            inner,
        }
    }

    /// Puts `buffered` (read before the current prefix) back in front.
    pub fn rewind(mut self, buffered: bytes::Bytes) -> Self {
        if !buffered.is_empty() {
            let mut joined = bytes::BytesMut::with_capacity(buffered.len() + self.prefix.len());
            joined.extend_from_slice(&buffered);
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.freeze();
        }
        self
    }

    pub fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In virtual time: `idle` resolves only once nothing moved for the
    /// whole period, measured from the last activity.
    #[tokio::test(start_paused = true)]
    async fn idle_is_measured_from_the_last_activity() {
        let clock = Clock::new();
        let idle = Duration::from_secs(60);
        let waiting = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.idle(idle).await })
        };
        tokio::time::sleep(Duration::from_secs(50)).await;
        clock.touch();
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert!(!waiting.is_finished(), "activity 50 s ago did not count");
        tokio::time::sleep(Duration::from_secs(11)).await;
        tokio::task::yield_now().await;
        assert!(
            waiting.is_finished(),
            "60 s without activity and still open"
        );
    }
}
