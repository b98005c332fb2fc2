//! One client connection: HTTP/1.1 served by hyper until the client goes
//! quiet, then *parked* — hyper's buffers released, the stream waiting on a
//! one-byte peek — and served again on the client's next byte. A CONNECT
//! answered `200` hands the raw stream to its tunnel through a [`Handoff`].

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::refusal::refuse;
use super::{handle, overload, parse_buffer, tunnel, write_refusal, Body, Client, ConnGuard};
use super::{Context, REFUSAL_WRITE};
use pinproxy_reason::Reason;

/// The client side of a connection: a TCP stream with any bytes hyper had
/// buffered put back in front.
pub type ClientIo = tunnel::Rewind<TcpStream>;

/// Where a CONNECT handler leaves its claim on the client stream: after
/// hyper has written the `200`, the connection task hands the raw stream
/// (and whatever the client sent after the CONNECT head) over.
#[derive(Default)]
pub struct Handoff(std::sync::Mutex<Option<tokio::sync::oneshot::Sender<ClientIo>>>);

impl Handoff {
    pub fn claim(&self) -> tokio::sync::oneshot::Receiver<ClientIo> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    pub(super) fn take(&self) -> Option<tokio::sync::oneshot::Sender<ClientIo>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The connection task's side of a [`Handoff`]: an unclaimed Sender is
/// dropped with it, on every way out of `serve_http` (an error, the future
/// dropped), so a tunnel task awaiting the stream wakes and ends. Review 10
/// F0: a CONNECT whose client reset before the `200` left the Sender in
/// the handoff, and the intercept task that held that handoff waited on
/// its own Sender for good, with the connection's slot.
struct Unclaimed(Arc<Handoff>);

impl Drop for Unclaimed {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

/// Requests in flight on one connection, and a counter of requests seen,
/// to tell when it has been idle long enough to park.
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    seen: std::sync::atomic::AtomicU64,
}

/// A response body that marks its request finished when hyper drops it.
pub struct Counted {
    body: Body,
    activity: Arc<Activity>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How long a keep-alive connection must be idle before it is parked:
/// hyper's buffers (~21 KiB) are released and the connection waits on a
/// one-byte peek until the client speaks again.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// How a served stretch of a connection ended.
enum Served {
    /// Closed, failed, handed to a tunnel, or stopping: nothing more to do.
    Done,
    /// Quiet long enough to park; the stream with hyper's unread bytes.
    Parked(ClientIo),
}

pub(super) async fn serve_connection(
    stream: TcpStream,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
    guard: Arc<ConnGuard>,
) {
    let mut io = tunnel::Rewind::new(stream);
    // A connection parked in the middle of a request head (bytes buffered)
    // is not parked again: parking restarts hyper's header timer, and a
    // slow client must not get more than one extra header timeout.
    let mut may_park = true;
    loop {
        // A client that hasn't spoken (new, or parked) waits here without
        // hyper's buffers, under the header timeout.
        if !io.has_prefix() && !first_byte(&io, &ctx, &mut stop).await {
            return;
        }
        // Accepted (or parked) before the memory guard tripped, woken now:
        // refused before hyper's buffers exist, as a new connection is.
        // The refusals are boxed, as `serve_http` is: inline, their state
        // (a 512-byte sink, the write and its timer) sat in every waiting
        // connection's task (+0.5 KiB per idle connection, measured).
        if ctx.overload.is_on() {
            Box::pin(refuse_woken(io, &ctx, overload::REFUSAL)).await;
            return;
        }
        // Not on, but its head is charged against the headroom the last
        // sample left, until the parser has it: a burst of heads within
        // one sample must not take memory past the limit before the guard
        // sees it (review 10 F1).
        let charge = overload::reserve::head_charge(parse_buffer(&ctx.limits));
        let head = match ctx.overload.reserve(charge) {
            Ok(head) => head,
            Err(overload::reserve::NoRoom) => {
                Box::pin(refuse_woken(io, &ctx, overload::reserve::NO_ROOM)).await;
                return;
            }
        };
        let client = Client {
            tracker: tracker.clone(),
            guard: guard.clone(),
            handoff: Arc::new(Handoff::default()),
        };
        // Boxed: the task itself stays small while the connection waits
        // (parked or new), and hyper's connection state exists only while
        // it is being served.
        match Box::pin(serve_http(io, &ctx, client, head, &mut stop, may_park)).await {
            Served::Done => return,
            Served::Parked(rest) => {
                may_park = !rest.has_prefix();
                io = rest;
            }
        }
    }
}

/// Waits for the client's next byte without consuming it; `false` when the
/// client closed, timed out, or the proxy is stopping.
async fn first_byte(io: &ClientIo, ctx: &Context, stop: &mut watch::Receiver<bool>) -> bool {
    let mut first = [0u8; 1];
    tokio::select! {
        // `peek` waits for a byte without consuming it (`readable` may
        // report ready before any data has arrived).
        r = tokio::time::timeout(ctx.limits.header_read_timeout, io.get_ref().peek(&mut first)) => {
            matches!(r, Ok(Ok(n)) if n > 0)
        }
        _ = stop.changed() => false,
    }
}

/// Answers a connection that woke while the process is overloaded, or
/// with no headroom left for its head, with `503 overloaded` (`detail`
/// says which), raw, and closes it. Review 10 F1: connections opened
/// while memory was low (silent, or parked between requests) went
/// straight into hyper when their first byte came, and each could then
/// hold an unfinished head of up to ~112 KiB: a client that pre-opened
/// thousands got past the guard to the OOM killer.
///
/// The request is never read, so the write side is shut first and what
/// the client sent is read and thrown away (a little at a time, within
/// the refusal's second): a socket closed with unread bytes resets, and
/// the reset may beat the answer to the client.
async fn refuse_woken(mut io: ClientIo, ctx: &Context, detail: &str) {
    let refused = refuse(ctx, Reason::Overloaded, None, "", detail);
    let answer = async {
        write_refusal(&mut io, &refused).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 512];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE, answer).await;
}

/// Serves HTTP/1.1 on `io` until the connection closes, is handed to a
/// tunnel, or has been quiet for [`PARK_AFTER`] (then it is parked).
/// `head`, the reservation for the first head, is given back when that
/// head reaches the service (one relaxed load per later request) or, at
/// the latest, with the service when this returns.
async fn serve_http(
    io: ClientIo,
    ctx: &Arc<Context>,
    client: Client,
    head: Option<overload::reserve::Reservation>,
    stop: &mut watch::Receiver<bool>,
    may_park: bool,
) -> Served {
    let handoff = Unclaimed(client.handoff.clone());
    let activity = Arc::new(Activity::default());
    let svc_ctx = ctx.clone();
    let svc_activity = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        if let Some(head) = &head {
            head.release();
        }
        let ctx = svc_ctx.clone();
        let client = client.clone();
        let activity = svc_activity.clone();
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.seen.fetch_add(1, Ordering::AcqRel);
        Box::pin(async move {
            let resp = handle(ctx, req, client).await;
            Ok::<_, Infallible>(resp.map(|body| Counted { body, activity }))
        })
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_read_timeout)
        .max_buf_size(parse_buffer(&ctx.limits));
    let mut conn = builder.serve_connection(TokioIo::new(io), service);
    let park = quiet(&activity);
    tokio::pin!(park);
    let (mut parked, mut stopping) = (false, false);
    let done = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = &mut park, if may_park && !parked && !stopping => {
                parked = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                // Finish the in-flight exchange, then close.
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if let Err(e) = done {
        // hyper answered unparseable requests itself (400/431).
        if e.is_parse() || e.is_parse_too_large() {
            let message = format!("the request could not be parsed: {e}");
            refuse(ctx, Reason::BadRequest, None, "", &message).close();
        }
        tracing::debug!(error = %e, "client connection error");
        return Served::Done;
    }
    let parts = conn.into_parts();
    let rest = parts.io.into_inner().rewind(parts.read_buf);
    // A CONNECT was answered 200: the tunnel takes the stream.
    if let Some(tx) = handoff.0.take() {
        let _ = tx.send(rest);
        return Served::Done;
    }
    if stopping || !parked {
        return Served::Done;
    }
    super::memory::note_release();
    Served::Parked(rest)
}

/// Resolves once no request started and none was in flight for a whole
/// [`PARK_AFTER`].
async fn quiet(activity: &Activity) {
    let mut last = activity.seen.load(Ordering::Acquire);
    loop {
        tokio::time::sleep(PARK_AFTER).await;
        let now = activity.seen.load(Ordering::Acquire);
        if now == last && activity.in_flight.load(Ordering::Acquire) == 0 {
            return;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In virtual time: never quiet while a request is in flight; quiet
    /// within two `PARK_AFTER` periods of the last request ending (the
    /// check runs once per period).
    #[tokio::test(start_paused = true)]
    async fn quiet_needs_a_whole_period_without_requests() {
        let activity = Arc::new(Activity::default());
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.seen.fetch_add(1, Ordering::AcqRel);
        let waiting = {
            let activity = activity.clone();
            tokio::spawn(async move { quiet(&activity).await })
        };
        // Half a period off the checks' ticks, so no two timers tie.
        tokio::time::sleep(PARK_AFTER * 5 + PARK_AFTER / 2).await;
        assert!(!waiting.is_finished(), "parked with a request in flight");
        activity.seen.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(PARK_AFTER * 3).await;
        assert!(!waiting.is_finished(), "parked with a request in flight");
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "parked as the request ended");
        tokio::time::sleep(PARK_AFTER * 2).await;
        tokio::task::yield_now().await;
        assert!(waiting.is_finished(), "never parked when quiet");
    }
}
