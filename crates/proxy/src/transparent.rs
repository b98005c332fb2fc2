//! Transparent mode (docs/reference.md, "Transparent mode"): connections the
//! kernel redirected to pinproxy (`pinproxy redirect` installs the nat rules)
//! from apps that ignore `HTTP_PROXY`. The original destination comes from
//! conntrack ([`original_dst`]); the first bytes decide the rest:
//!
//! - a TLS ClientHello is judged by its SNI (absent: the original
//!   destination's IP; with Encrypted Client Hello, the outer SNI: counted
//!   as `protocol="tls-ech"`, see [`ech`]) under the same policy as CONNECT: pinned →
//!   intercepted with the pod CA and forwarded over pinned connections;
//!   passthrough, or unlisted and allowed → spliced to the original
//!   destination as it is (the app already chose the address; the
//!   private-address rule still applies to unlisted traffic, and a
//!   passthrough name only reaches an address it resolves to or one a
//!   passthrough CIDR covers: the SNI is the app's claim, the destination
//!   the fact);
//!   otherwise a TLS alert and a counted refusal;
//! - plain HTTP is served as the forward path serves it, the `Host` header
//!   (else the original destination) naming the host;
//! - nothing within the first-byte timeout (`--transparent-first-byte-timeout`,
//!   1 s): a server-first protocol (MySQL, SSH, SMTP) waiting for the
//!   server's banner. Without bytes no name is known, so only the original
//!   destination can decide: in a `passthrough:` CIDR it is spliced, else
//!   closed and counted (`silent`);
//! - neither TLS nor HTTP (a client-first protocol: PostgreSQL, Redis,
//!   Kafka): no name either, judged like the silent case by the original
//!   destination alone (review 10 F5: it used to be closed even there);
//! - a TLS handshake record that is no readable ClientHello is closed and
//!   counted: it asks for a name that cannot be checked.
//!
//! A connection whose original destination is one of pinproxy's own
//! listeners is refused: the loop guard. pinproxy's own upstream traffic is
//! never redirected because the rules exempt its UID.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{header, Request, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::admit::{admit, admit_unnamed, Place};
use super::body::revoked;
use super::ech;
use super::original_dst::original_dst;
use super::refusal::{refuse, upstream_refusal, Refused};
use super::tunnel::{self, Hello, HelloReader, Rewind};
use super::{forward, intercept, Accepted, Client, Context, Handoff};
use pinproxy_policy::admission::Admission;
use pinproxy_policy::host::Host;
use pinproxy_policy::{Decision, Policy, Target};
use pinproxy_reason::{
    Reason, RequestOutcome, TransparentOutcome as Outcome, TransparentProtocol as Protocol,
};
use pinproxy_upstream::egress;

/// The largest first flight we read before judging (ClientHellos with
/// post-quantum key shares are large; HTTP heads are not judged here).
const MAX_PEEK: usize = 32 * 1024;

/// What the first bytes of a redirected connection are.
#[derive(Debug, PartialEq)]
enum First {
    /// A complete ClientHello, with its SNI if any.
    Tls(Option<String>),
    Http,
    /// Neither TLS nor HTTP: a client-first protocol (PostgreSQL, Redis).
    Other,
    /// A TLS handshake record that is no ClientHello we can read.
    Unreadable,
    /// Nothing within the first-byte timeout: the client waits for the
    /// server to speak first.
    Silent,
}

/// Serves the transparent listener until `shutdown` resolves, then drains
/// like the proxy listener. `own` are pinproxy's listeners (proxy, admin,
/// transparent): never an original destination.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    own: Arc<[SocketAddr]>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    super::accept_loop(listener, ctx, shutdown, move |a, ctx| {
        handle(a, ctx, own.clone())
    })
    .await
}

/// Serves one redirected connection. `own` are pinproxy's listeners (proxy,
/// admin, transparent): never an original destination.
pub(super) async fn handle(a: Accepted, ctx: Arc<Context>, own: Arc<[SocketAddr]>) {
    let metrics = ctx.metrics.clone();
    let served = |protocol, outcome| metrics.transparent(protocol, outcome);
    let orig = match original_dst(&a.stream) {
        Ok(o) if !egress::is_own(&o, &own) => o,
        Ok(o) => {
            served(Protocol::Other, Outcome::Loop);
            let message = "a redirected connection to pinproxy's own listener (loop guard)";
            refuse(&ctx, Reason::PrivateAddress, None, &o.to_string(), message).close();
            return;
        }
        Err(e) => {
            served(Protocol::Other, Outcome::NotRedirected);
            tracing::debug!(error = %e, peer = %a.peer, "no original destination: not redirected");
            return;
        }
    };
    let mut stream = a.stream;
    let timeouts = (
        ctx.limits.first_byte_timeout,
        ctx.limits.header_read_timeout,
    );
    let (first, bytes) = match peek(&mut stream, timeouts).await {
        Some(x) => x,
        None => return served(Protocol::Other, Outcome::Closed),
    };
    // ECH: judged by the outer SNI like any hello, counted apart.
    let tls_protocol = match first {
        First::Tls(_) if ech::offered(&bytes) => Protocol::TlsEch,
        _ => Protocol::Tls,
    };
    let io = Rewind::new(stream).rewind(bytes.into());
    let client = Client {
        tracker: a.tracker,
        guard: a.guard,
        handoff: Arc::new(Handoff::default()),
    };
    match first {
        First::Tls(sni) => {
            let outcome = tls(ctx.clone(), io, orig, sni, client).await;
            served(tls_protocol, outcome);
        }
        First::Http => {
            served(Protocol::Http, Outcome::Served);
            http(ctx, io, orig, client, a.stop).await;
        }
        First::Silent | First::Other => {
            let silent = first == First::Silent;
            let outcome = unnamed(ctx, io, orig, silent).await;
            served(Protocol::Other, outcome);
        }
        First::Unreadable => {
            served(Protocol::Other, Outcome::Refused);
            let message = "a TLS handshake that is no readable ClientHello";
            refuse(&ctx, Reason::BadRequest, None, &orig.to_string(), message).close();
        }
    }
}

/// Reads the first flight: enough to judge a ClientHello, or the first
/// bytes of anything else. The first byte must come within `first_byte`
/// (else [`First::Silent`]), the whole flight within `whole`. `None`:
/// closed, or stalled mid-flight past `whole`.
async fn peek(
    stream: &mut TcpStream,
    (first_byte, whole): (Duration, Duration),
) -> Option<(First, Vec<u8>)> {
    let mut reader = HelloReader::new();
    let mut buf = vec![0u8; 4096];
    let start = tokio::time::Instant::now();
    let deadline = start + whole;
    loop {
        let wait = if reader.bytes().is_empty() {
            deadline.min(start + first_byte)
        } else {
            deadline
        };
        let n = match tokio::time::timeout_at(wait, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Err(_) if reader.bytes().is_empty() => return Some((First::Silent, Vec::new())),
            _ => return None,
        };
        let chunk = &buf[..n];
        if reader.bytes().is_empty() && chunk[0] != 0x16 {
            let first = if chunk[0].is_ascii_uppercase() {
                First::Http
            } else {
                First::Other
            };
            return Some((first, chunk.to_vec()));
        }
        match reader.feed(chunk) {
            Some(Hello::Tls(sni)) => return Some((First::Tls(sni), reader.bytes().to_vec())),
            // A handshake record, but no hello whose name can be judged.
            Some(Hello::Other | Hello::Unreadable) => {
                return Some((First::Unreadable, reader.bytes().to_vec()))
            }
            None if reader.bytes().len() >= MAX_PEEK => {
                return Some((First::Unreadable, reader.bytes().to_vec()))
            }
            None => {}
        }
    }
}

/// A connection that names no host — its client said nothing within the
/// first-byte timeout (`silent`), or neither TLS nor HTTP: spliced when its
/// original destination lies in a `passthrough:` CIDR (a database, SSH,
/// SMTP in the cluster), else refused and closed.
async fn unnamed(
    ctx: Arc<Context>,
    io: Rewind<TcpStream>,
    orig: SocketAddr,
    silent: bool,
) -> Outcome {
    let target = Target {
        host: Host::from_ip(orig.ip()),
        port: orig.port(),
    };
    let generation = ctx.live.subscribe();
    let snap = ctx.live.load_full();
    match admit_unnamed(&ctx, &snap, orig, silent) {
        Ok(admission) => {
            let connector = snap.connector.clone();
            splice(
                ctx,
                connector,
                io,
                orig,
                target,
                admission,
                generation,
                Refuse::Close,
            )
            .await
        }
        Err(refused) => {
            refused.close();
            if silent {
                Outcome::Silent
            } else {
                Outcome::Refused
            }
        }
    }
}

/// A redirected TLS connection, judged by its SNI (none: the address the
/// app dialed).
async fn tls(
    ctx: Arc<Context>,
    mut io: Rewind<TcpStream>,
    orig: SocketAddr,
    sni: Option<String>,
    client: Client,
) -> Outcome {
    let generation = ctx.live.subscribe();
    let snap = ctx.live.load_full();
    let host = match sni.as_deref().map(Host::parse) {
        None => match no_sni_host(&ctx, &snap.policy, orig) {
            Ok(h) => h,
            Err(refused) => return alert(&mut io, refused).await,
        },
        Some(Ok(h)) => h,
        Some(Err(_)) => {
            let refused = refuse(
                &ctx,
                Reason::BadRequest,
                None,
                &orig.to_string(),
                "invalid SNI",
            );
            return alert(&mut io, refused).await;
        }
    };
    let target = Target {
        host,
        port: orig.port(),
    };
    // The app chose the address: passthrough CIDRs judge that address.
    let admission = match admit(&ctx, &snap, &target, Place::Dialed(orig.ip())).await {
        Ok(a) => a.admission,
        Err(refused) => return alert(&mut io, refused).await,
    };
    if admission.entry().is_some() {
        let tls = match ctx.intercept.server_config(&target.host) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "minting an interception certificate");
                let host = target.host.to_string();
                let message = "cannot mint an interception certificate";
                let label = Some(admission.label());
                let refused = refuse(&ctx, Reason::InternalError, label, &host, message);
                return alert(&mut io, refused).await;
            }
        };
        let revoked = revoked(ctx.clone(), generation, target.clone(), admission, None);
        tokio::select! {
            _ = intercept::serve(ctx.clone(), target.clone(), tls, io, client) => {}
            _ = revoked => tracing::info!(host = %target.host, "closing intercepted connection: a reload changed its pins or policy"),
        }
        return Outcome::Intercepted;
    }
    splice(
        ctx,
        snap.connector.clone(),
        io,
        orig,
        target,
        admission,
        generation,
        Refuse::TlsAlert,
    )
    .await
}

/// How a splice that cannot be made is refused.
#[derive(Clone, Copy)]
enum Refuse {
    /// The client sent a ClientHello: a TLS alert.
    TlsAlert,
    /// The client sent nothing: closed.
    Close,
}

/// The host a TLS hello without SNI is judged as: the entry whose
/// `address:` is where the app dialed, when exactly one names it —
/// intercepted and pinned as if the hello had named it, so that leaving
/// SNI out does not turn a pinned host into unlisted traffic — else the
/// address itself (an entry keyed by the IP — which comes first: an app
/// that dials an IP without SNI most likely means the IP — or unlisted).
/// Several entries on the address, or a wildcard one, cannot be told
/// apart: `misdirected-request`.
fn no_sni_host(ctx: &Context, policy: &Policy, orig: SocketAddr) -> Result<Host, Refused> {
    let ip = Host::from_ip(orig.ip());
    if matches!(policy.lookup(&ip), Decision::Listed(_)) {
        return Ok(ip);
    }
    let mut named = policy.by_address(orig);
    let Some(first) = named.next() else {
        return Ok(ip);
    };
    let others: Vec<&str> = named.map(|e| e.name.as_str()).collect();
    match Host::parse(&first.name) {
        Ok(host) if others.is_empty() && !first.name.starts_with('*') => Ok(host),
        _ => {
            let mut names = vec![first.name.as_str()];
            names.extend(others);
            let message = format!(
                "a TLS hello without SNI to {orig}, the address: of {names:?}: which host it is \
                 for cannot be told; the app must send SNI"
            );
            let host = orig.to_string();
            Err(refuse(
                ctx,
                Reason::MisdirectedRequest,
                None,
                &host,
                &message,
            ))
        }
    }
}

/// Splices a passthrough or unlisted-and-allowed connection to its
/// original destination; returns the outcome label. A passthrough name
/// (the SNI) is spliced only to an address it resolves to or one a
/// passthrough CIDR covers (`misdirected-request` otherwise); unlisted
/// traffic only where egress is allowed (`private-address`).
#[allow(clippy::too_many_arguments)] // the splice's inputs, each used once
async fn splice(
    ctx: Arc<Context>,
    connector: pinproxy_upstream::Connector,
    mut io: Rewind<TcpStream>,
    orig: SocketAddr,
    target: Target,
    admission: Admission,
    generation: tokio::sync::watch::Receiver<u64>,
    how: Refuse,
) -> Outcome {
    let host = target.host.to_string();
    let passthrough = admission.passthrough().is_some();
    if passthrough {
        if let Err(message) = connector.passthrough_destination(&target.host, orig).await {
            let label = Some(admission.label());
            let refused = refuse(&ctx, Reason::MisdirectedRequest, label, &host, &message);
            return how.answer(&mut io, refused).await;
        }
    } else if !connector.egress_allowed(&orig) {
        let message = format!("{orig} is a private, loopback or link-local address");
        let label = Some(admission.label());
        let refused = refuse(&ctx, Reason::PrivateAddress, label, &host, &message);
        return how.answer(&mut io, refused).await;
    }
    let upstream = match connector
        .dial_passthrough(&target.host, target.port, Some(vec![orig]))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let refused = upstream_refusal(&ctx, admission.label(), &e);
            return how.answer(&mut io, refused).await;
        }
    };
    let outcome = if passthrough {
        RequestOutcome::Passthrough
    } else {
        connector.learn_by_probe(&target.host, target.port, Some(orig));
        RequestOutcome::Tunnel
    };
    ctx.metrics.served(admission.label(), outcome);
    let revoked = revoked(
        ctx.clone(),
        generation,
        target.clone(),
        admission,
        Some(orig),
    );
    tokio::select! {
        _ = tunnel::splice(io, upstream, ctx.limits.tunnel_idle) => {}
        _ = revoked => tracing::info!(%host, "closing spliced connection: a reload no longer admits it"),
    }
    Outcome::Spliced
}

// === impl Refuse ===

impl Refuse {
    async fn answer(self, io: &mut Rewind<TcpStream>, refused: Refused) -> Outcome {
        match self {
            Refuse::TlsAlert => alert(io, refused).await,
            Refuse::Close => {
                refused.close();
                Outcome::Refused
            }
        }
    }
}

/// Answers a refused TLS connection with a TLS alert.
async fn alert(io: &mut Rewind<TcpStream>, refused: Refused) -> Outcome {
    refused.alert(io).await;
    Outcome::Refused
}

/// Plain HTTP on a redirected connection: origin-form requests are given
/// the absolute form the forward path expects, from `Host` (else the
/// original destination), and served by it.
async fn http(
    ctx: Arc<Context>,
    io: Rewind<TcpStream>,
    orig: SocketAddr,
    client: Client,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let svc_ctx = ctx.clone();
    let handoff = client.handoff.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let ctx = svc_ctx.clone();
        let client = client.clone();
        // Boxed: the connection is polled without shutdown (below), which
        // wants an Unpin service future.
        Box::pin(async move {
            if let Err(msg) = absolute(&mut req, orig) {
                let refused = refuse(&ctx, Reason::BadRequest, None, "", &msg);
                return Ok::<_, Infallible>(refused.into());
            }
            Ok(forward::handle(ctx, req, client).await)
        })
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_read_timeout)
        .max_buf_size(super::parse_buffer(&ctx.limits));
    let mut conn = builder.serve_connection(TokioIo::new(io), service);
    let mut stopping = false;
    let done = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if let Err(e) = done {
        tracing::debug!(error = %e, "transparent HTTP connection closed");
        return;
    }
    // A WebSocket was answered 101: its relay takes the stream, as on the
    // proxy listener.
    if let Some(tx) = handoff.take() {
        let parts = conn.into_parts();
        let _ = tx.send(parts.io.into_inner().rewind(parts.read_buf));
    }
}

/// Rewrites an origin-form request (`GET /x`, `Host: h`) into the absolute
/// form (`http://h/x`) the forward path serves.
fn absolute(req: &mut Request<Incoming>, orig: SocketAddr) -> Result<(), String> {
    if req.uri().scheme().is_some() {
        return Ok(());
    }
    let hosts: Vec<_> = req.headers().get_all(header::HOST).iter().collect();
    let authority = match hosts.as_slice() {
        [] => {
            if orig.port() == 80 {
                Host::from_ip(orig.ip()).authority_form()
            } else {
                format!(
                    "{}:{}",
                    Host::from_ip(orig.ip()).authority_form(),
                    orig.port()
                )
            }
        }
        [one] => {
            let h = one
                .to_str()
                .map_err(|_| "Host header is not ASCII".to_string())?;
            // Without an explicit port the app dialed the original port.
            if h.parse::<Authority>().is_ok_and(|a| a.port().is_none()) && orig.port() != 80 {
                format!("{h}:{}", orig.port())
            } else {
                h.to_string()
            }
        }
        _ => return Err("two Host headers".into()),
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(
        authority
            .parse::<Authority>()
            .map_err(|e| format!("invalid Host {authority:?}: {e}"))?,
    );
    parts.path_and_query = req.uri().path_and_query().cloned();
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| format!("invalid request target: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair on loopback: (the client's end, the server's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    const TIMEOUTS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

    /// In virtual time: a client that says nothing (MySQL, SSH, SMTP wait
    /// for the server's banner) is judged after the first-byte timeout,
    /// not the header timeout.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_judged_after_the_first_byte_timeout() {
        let (_client, mut server) = pair().await;
        let start = tokio::time::Instant::now();
        let got = peek(&mut server, TIMEOUTS).await;
        assert_eq!(got, Some((First::Silent, Vec::new())));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_speaks_first_is_read() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let got = peek(&mut server, TIMEOUTS).await;
        assert_eq!(got, Some((First::Http, b"GET / HTTP/1.1\r\n".to_vec())));
        // A client that closes without a byte is closed, not silent.
        let (client, mut server) = pair().await;
        drop(client);
        assert_eq!(peek(&mut server, TIMEOUTS).await, None);
    }

    /// Once the first byte came, the rest of a ClientHello has the whole
    /// header timeout: a slow TLS client is not taken for a silent one.
    #[tokio::test(start_paused = true)]
    async fn the_rest_of_a_hello_is_not_held_to_the_first_byte_timeout() {
        let (mut client, mut server) = pair().await;
        client.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let reader = tokio::spawn(async move { peek(&mut server, TIMEOUTS).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !reader.is_finished(),
            "judged before the hello was complete"
        );
        drop(client);
        assert_eq!(reader.await.unwrap(), None);
    }
}
