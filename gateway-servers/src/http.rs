//! The built-in HTTP server: HTTP/1.1 (keep-alive, pipelining, chunked bodies both ways,
//! `Expect: 100-continue`) and HTTP/2 with prior knowledge, on hyper.
//!
//! hyper parses and frames; this module turns each request into an environ with
//! [`environ_from_request`] and answers with [`Runtime::respond`], which applies the limits
//! hyper does not: the request body size (413) and its read timeout (408), and the request limit
//! (503). hyper answers heads that are too large or have too many headers with 431, and closes
//! connections whose head is too slow.
//!
//! With [`Config::proxy_protocol`](crate::runtime::Config::proxy_protocol), each connection
//! begins with a PROXY protocol header from a load balancer that relays TCP, and the client's
//! address in it is the environ's `REMOTE_ADDR` (see [`proxy_protocol`]).
//!
//! A `CONNECT` request reaches the app like any other, but the server opens no tunnels: an app
//! that answers it with a 2xx (which would make the connection a tunnel) is answered 501 in its
//! place, and a refusal (405, 403) goes out as the app gave it.
//!
//! ```no_run
//! use gateway_core::{Body, Environ, StartResponse};
//! use gateway_servers::http::serve;
//! use gateway_servers::runtime::{Bind, Config, Listener, Runtime, Shutdown};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = |_: Environ, start: StartResponse| {
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from("hello\n")
//! };
//! let listener = Listener::bind(&"127.0.0.1:8000".parse().unwrap(), None)?;
//! serve(listener, Runtime::new(app, Config::default()), Shutdown::new()).await
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use bytes::{Bytes, BytesMut};
use gateway_core::convert::{ServerContext, environ_from_request};
use gateway_core::{App, Body};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::proxy_protocol;
use crate::runtime::{
    BodyGuard, BodyWith, Connection, Lingering, Listener, MustClose, Responding, Runtime, Shutdown,
    Stream, plain_response, serve_connections,
};

/// Serves `runtime`'s app over HTTP on `listener` until `shutdown` asks to stop; then stops
/// accepting, lets the connections finish their requests (idle keep-alive connections close at
/// once) within the config's `shutdown_timeout` (or until an immediate shutdown), and returns.
pub async fn serve<A: App + 'static>(
    listener: Listener,
    runtime: Runtime<A>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let config = runtime.config().clone();
    let mut http1 = http1::Builder::new();
    // No timer for hyper's HTTP/1 head timeout: `HyperIo` bounds the first head of a
    // connection (and answers 408), and a later head not ended 100 ms after the last response
    // meets a parked connection's first head's watch (see `serve_http1`). hyper's timer cost
    // a timer's allocation, registration and removal per request.
    http1
        .max_header_size(config.max_head_size)
        // The read buffer's bound: at least hyper's smallest (a head is bounded above).
        .max_buf_size(config.max_head_size.max(8192));
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        // Set, hyper sizes its header array for each request on the heap; its default is an
        // array on the stack.
        http1.max_headers(config.max_headers);
    }
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_head_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(
            u32::try_from(config.max_requests.min(MAX_HTTP2_STREAMS)).unwrap_or(u32::MAX),
        );
    let limit = runtime.connection_limit().clone();
    let shared = Arc::new(Shared {
        http1,
        http2,
        timeouts: Timeouts {
            header: config.header_read_timeout,
            keep_alive: config.keep_alive_timeout,
            send: config.send_timeout,
        },
        stop: shutdown.clone(),
        #[cfg(feature = "tls")]
        tls: config.tls.clone(),
        runtime,
    });
    serve_connections(listener, &config, &limit, shutdown, move |connection| {
        serve_connection(shared.clone(), connection, Instant::now())
    })
    .await
}

/// What the connections of one HTTP server share.
struct Shared<A> {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    timeouts: Timeouts,
    stop: Shutdown,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
    runtime: Runtime<A>,
}

/// A connection's life, from `accepted`: the PROXY protocol header and the TLS handshake if
/// configured, its first bytes, then hyper (HTTP/1, parked when idle, or HTTP/2).
///
/// The future lives as long as the connection, idle ones included, so it holds little across
/// its waits: each step's values are built in a plain function and handed on whole. (A local
/// of an `async` body that is borrowed, or moved out of in part, keeps its room in the future
/// for as long as the future lives; an `async fn`'s arguments take their room twice, hence a
/// function that returns an `async` block.)
#[allow(clippy::manual_async_fn)]
fn serve_connection<A: App + 'static>(
    shared: Arc<Shared<A>>,
    mut connection: Connection,
    accepted: Instant,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let until = accepted + shared.timeouts.header;
        let Some((first, variables)) = open(&shared, &mut connection, until).await else {
            return;
        };
        match start_hyper(&shared, connection, first, variables, until) {
            Hyper::Http1(connection, activity) => {
                serve_http1(&shared, connection, &activity).await;
            }
            Hyper::Http2(connection, activity) => {
                serve_http2(&shared, connection, &activity).await;
            }
        }
    }
}

/// The steps of a connection before hyper has it: the PROXY protocol header
/// ([`Config::proxy_protocol`](crate::runtime::Config::proxy_protocol)), whose addresses
/// replace the connection's, the TLS handshake, whose decrypted stream replaces the
/// connection's, and the first bytes. Returns those bytes and the variables the handshake
/// gives the connection's environs (a client certificate's). `None` (logged) when the
/// connection is closed before its first request.
async fn open<A: App + 'static>(
    shared: &Shared<A>,
    connection: &mut Connection,
    until: Instant,
) -> Option<(Bytes, Vec<(Bytes, Bytes)>)> {
    let stop = &shared.stop;
    let mut sent = Bytes::new();
    if shared.runtime.config().proxy_protocol {
        let (addresses, rest) = proxy_header(&mut connection.stream, until, stop).await?;
        if let Some((client, reached)) = addresses {
            (connection.peer, connection.local) = (Some(client), Some(reached));
        }
        sent = rest;
    }
    #[allow(unused_mut)]
    let mut variables = Vec::new();
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        // Boxed: rustls's handshake state is large, and inline it would make every
        // connection's future (plain HTTP ones too, idle ones too) that large.
        let read = std::mem::take(&mut sent);
        // (An empty stream stands in meanwhile: a box of nothing, not an allocation.)
        let stream = std::mem::replace(&mut connection.stream, Box::new(tokio::io::empty()));
        (connection.stream, variables) =
            Box::pin(tls_handshake(tls, stream, read, until, stop)).await?;
    }
    let Some(first) = first_bytes(&mut connection.stream, sent, until, stop).await else {
        tracing::debug!("connection closed before its first request");
        return None;
    };
    Some((first, variables))
}

/// A connection handed to hyper, with the [`Activity`] of its requests.
enum Hyper<A: App + 'static> {
    Http1(Box<Http1Connection<A>>, Arc<Activity>),
    Http2(Pin<Box<Http2Connection<A>>>, Arc<Activity>),
}

/// hyper's HTTP/1 connection as the server runs it.
type Http1Connection<A> = http1::Connection<TokioIo<HyperIo>, ConnectionService<A>>;

/// hyper's HTTP/2 connection as the server runs it.
type Http2Connection<A> = http2::Connection<TokioIo<HyperIo>, ConnectionService<A>, TokioExecutor>;

/// Hands an opened connection to hyper, `first` its first bytes: HTTP/2 when they are
/// HTTP/2's preface, else HTTP/1. The context of its environs is made here, once per
/// connection, with the `variables` of its TLS handshake.
fn start_hyper<A: App + 'static>(
    shared: &Shared<A>,
    connection: Connection,
    first: Bytes,
    variables: Vec<(Bytes, Bytes)>,
    until: Instant,
) -> Hyper<A> {
    let runtime = &shared.runtime;
    let config = runtime.config();
    let mut context = ServerContext::default();
    context.peer_addr = connection.peer;
    context.local_addr = connection.local;
    context.server_software = Some(Bytes::from_static(config.server_software.as_bytes()));
    context.multithread = config.blocking;
    context.errors = Some(runtime.errors().clone());
    context.variables = variables;
    #[cfg(feature = "tls")]
    if shared.tls.is_some() {
        context.url_scheme = gateway_core::UrlScheme::Https;
    }
    let activity = Arc::new(Activity::new());
    let service = ConnectionService {
        connection: Arc::new((runtime.clone(), context)),
        activity: activity.clone(),
    };
    let http2 = first.starts_with(HTTP2_PREFACE);
    let io = HyperIo::new(connection.stream, first, until, &shared.timeouts, &activity);
    match http2 {
        true => Hyper::Http2(
            Box::pin(shared.http2.serve_connection(TokioIo::new(io), service)),
            activity,
        ),
        false => Hyper::Http1(
            Box::new(shared.http1.serve_connection(TokioIo::new(io), service)),
            activity,
        ),
    }
}

/// The service of one connection: each request handled by [`handle`], its response body
/// followed by the connection's [`Activity`] until it ends.
struct ConnectionService<A> {
    connection: Arc<(Runtime<A>, ServerContext)>,
    activity: Arc<Activity>,
}

impl<A: App + 'static> hyper::service::Service<Request<Incoming>> for ConnectionService<A> {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        let open = self.activity.open();
        Answer {
            handling: handle(&self.connection, request, &self.activity),
            open: Some(open),
        }
    }
}

/// The response to one request of a connection, as hyper gets it.
struct Answer {
    handling: Handling,
    open: Option<OpenRequest>,
}

impl Future for Answer {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = std::task::ready!(Pin::new(&mut self.handling).poll(cx));
        let open = self
            .open
            .take()
            .expect("an answer is not polled after its end");
        Poll::Ready(Ok(
            closing_if_cut(response).map(|body| Tracked::new(body, open))
        ))
    }
}

/// The first byte of a TLS connection: the content type of a handshake record.
#[cfg(feature = "tls")]
const TLS_HANDSHAKE: u8 = 0x16;

/// The TLS handshake of a connection to an HTTPS socket, `read` its bytes read already: the
/// decrypted stream, and the variables it gives the connection's environs. `None`, logged,
/// when the client speaks plain HTTP (answered with [`plain_http_on_https`]), the handshake
/// fails or is not done by `until`, or the server stops.
#[cfg(feature = "tls")]
async fn tls_handshake(
    tls: &crate::tls::TlsConfig,
    mut stream: Box<dyn Stream>,
    mut read: Bytes,
    until: Instant,
    stop: &Shutdown,
) -> Option<(Box<dyn Stream>, Vec<(Bytes, Bytes)>)> {
    if read.is_empty() {
        read = next_bytes(&mut stream, until, stop).await?;
    }
    if read[0] != TLS_HANDSHAKE {
        plain_http_on_https(stream).await;
        return None;
    }
    let handshake = tokio::select! {
        biased;
        done = tls.accept(stream, read) => done,
        () = tokio::time::sleep_until(until.into()) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "not done within the header timeout",
        )),
        () = stop.wait_graceful() => return None,
    };
    match handshake {
        Ok(decrypted) => Some(decrypted),
        Err(error) => {
            tracing::info!(%error, "connection closed: TLS handshake failed");
            None
        }
    }
}

/// Answers a client that speaks plain HTTP to an HTTPS socket, as nginx does: a 400 that says
/// so (the client can read it: it is not encrypted), then the connection closes.
#[cfg(feature = "tls")]
async fn plain_http_on_https(mut stream: Box<dyn Stream>) {
    use tokio::io::AsyncWriteExt;
    const ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
        Content-Length: 45\r\nConnection: close\r\n\r\nThis port speaks HTTPS: use an https:// URL.\n";
    tracing::info!("plain HTTP on an HTTPS socket: 400");
    let _ = stream.write_all(ANSWER).await;
    let _ = stream.shutdown().await;
}

/// Reads the PROXY protocol header a connection begins with ([`Config::proxy_protocol`]):
/// the addresses it gives (`None` for the proxy's own connection) and the bytes that came
/// after it. `None`, logged, when the connection sends no valid header by `until`, ends, or
/// the server stops.
///
/// [`Config::proxy_protocol`]: crate::runtime::Config::proxy_protocol
async fn proxy_header(
    stream: &mut Box<dyn Stream>,
    until: Instant,
    stop: &Shutdown,
) -> Option<(Option<proxy_protocol::Addresses>, Bytes)> {
    let mut sent = BytesMut::new();
    loop {
        match proxy_protocol::parse(&sent) {
            proxy_protocol::Parsed::Header { addresses, len } => {
                let _ = sent.split_to(len);
                return Some((addresses, sent.freeze()));
            }
            proxy_protocol::Parsed::Invalid(reason) => {
                tracing::info!(%reason, "connection closed: no PROXY protocol header");
                return None;
            }
            proxy_protocol::Parsed::Incomplete => {}
        }
        let Some(more) = next_bytes(stream, until, stop).await else {
            tracing::info!("connection closed before its PROXY protocol header was whole");
            return None;
        };
        sent.extend_from_slice(&more);
    }
}

/// The timeouts of an HTTP connection, from the config.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    keep_alive: Duration,
    send: Duration,
}

/// The most requests one HTTP/2 connection may have open at once (nginx's default
/// `http2_max_concurrent_streams`; fewer when the request limit is lower): each may hold a
/// request body read ahead and a response, so one connection may not hold hundreds.
const MAX_HTTP2_STREAMS: usize = 128;

/// How long an idle HTTP/2 connection told to go away (`GOAWAY`) may take to close: h2 sends
/// its last `GOAWAY` only once the client acknowledges a `PING`, and a client that never does
/// would keep the connection.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// `bytes` past the empty lines they begin with, if anything is left. Empty lines before a
/// request line are ignored (RFC 9112 §2.2; some clients send a CRLF after a body): bytes that
/// are only that begin no head, and leave the connection idle.
fn past_blank_lines(bytes: Bytes) -> Option<Bytes> {
    let blank = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    (blank < bytes.len()).then(|| bytes.slice(blank..))
}

/// The bytes with which an HTTP/2 client with prior knowledge opens a connection.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an HTTP/1 connection stays idle (no request open, nothing left to write) before it
/// gives hyper's buffers back: hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for
/// as long as a connection lives, so an idle connection is taken from hyper ("parked") and
/// handed to a new hyper connection when its next bytes arrive, as nginx frees its buffers
/// between the requests of a connection. Short enough that a server with thousands of idle
/// clients holds little more than their sockets; long enough that a client sending requests
/// back to back never pays for a new hyper connection.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// The first bytes of a connection, read before hyper has it (so a connection that sends
/// nothing holds no buffer): enough to tell HTTP/2's preface from an HTTP/1 head. `None` when
/// nothing came before `until`, or the connection ended, or the server stops. `sent`: bytes
/// of the connection read already (after a PROXY protocol header), if any.
async fn first_bytes(
    stream: &mut Box<dyn Stream>,
    sent: Bytes,
    until: Instant,
    stop: &Shutdown,
) -> Option<Bytes> {
    // (Nothing yet is the preface's start too.)
    let mut bytes = sent;
    while bytes.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(&bytes) {
        let more = next_bytes(stream, until, stop).await?;
        bytes = match bytes.is_empty() {
            true => more,
            false => [bytes, more].concat().into(),
        };
    }
    Some(bytes)
}

/// The next bytes a connection without hyper (new or parked) sends: `None` at its end, at
/// `until`, or when the server stops (an idle connection closes then).
async fn next_bytes(
    stream: &mut Box<dyn Stream>,
    until: Instant,
    stop: &Shutdown,
) -> Option<Bytes> {
    tokio::select! {
        biased;
        bytes = ReadSome(stream) => bytes.ok().filter(|bytes| !bytes.is_empty()),
        () = tokio::time::sleep_until(until.into()) => None,
        () = stop.wait_graceful() => None,
    }
}

/// Reads what a stream has (up to 4 KiB) into a buffer of that size, made only once the bytes
/// are there: a connection waiting here holds no buffer.
struct ReadSome<'a>(&'a mut Box<dyn Stream>);

impl Future for ReadSome<'_> {
    type Output = io::Result<Bytes>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let mut space = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut space);
        std::task::ready!(Pin::new(&mut **self.0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(Bytes::copy_from_slice(buf.filled())))
    }
}

/// Serves an HTTP/1 connection, parking it whenever it stays idle for [`PARK_AFTER`]: hyper's
/// connection is taken apart (its unread bytes kept), and a new one serves the next request
/// when it comes, with the same service. A parked connection closes at the keep-alive timeout.
async fn serve_http1<A: App + 'static>(
    shared: &Shared<A>,
    connection: Box<Http1Connection<A>>,
    activity: &Arc<Activity>,
) {
    let (stop, timeouts) = (&shared.stop, &shared.timeouts);
    let mut connection = connection;
    let mut idle = IdleWatch::new(activity, PARK_AFTER);
    loop {
        // Biased: the idle watch is polled after the connection, whose polls change it.
        loop {
            tokio::select! {
                biased;
                result = Pin::new(&mut *connection) => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                    return;
                }
                () = stop.wait_graceful() => {
                    // Finish the request in progress, then close.
                    Pin::new(&mut *connection).graceful_shutdown();
                    if let Err(error) = (&mut *connection).await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                    return;
                }
                () = &mut idle => {
                    // A response hyper could not write whole yet is in its buffer: not idle.
                    if !activity.write_blocked.load(Ordering::Relaxed) {
                        break;
                    }
                    idle.retry();
                }
            }
        }
        let (service, mut stream, unread) = take_apart(connection);
        let pending = match unread {
            // The start of a head that is still coming: served at once by a new hyper
            // connection (the watch waits for the next request's end before it fires again).
            Some(unread) => unread,
            None => {
                // Parked: nothing held but the socket and the service, until the next bytes
                // that are more than empty lines.
                idle.release();
                let until = activity.last_end() + timeouts.keep_alive;
                loop {
                    match next_bytes(&mut stream, until, stop).await {
                        Some(bytes) => match past_blank_lines(bytes) {
                            Some(bytes) => break bytes,
                            None => continue,
                        },
                        None => return,
                    }
                }
            }
        };
        let deadline = Instant::now() + timeouts.header;
        let io = HyperIo::new(stream, pending, deadline, timeouts, activity);
        connection = Box::new(shared.http1.serve_connection(TokioIo::new(io), service));
    }
}

/// Takes an idle HTTP/1 connection from hyper: its service, its stream, and the bytes read from
/// the stream that no request has taken yet, past the empty lines they may begin with (`None`
/// if nothing else is left).
fn take_apart<A: App + 'static>(
    connection: Box<Http1Connection<A>>,
) -> (ConnectionService<A>, Box<dyn Stream>, Option<Bytes>) {
    let parts = connection.into_parts();
    let (stream, unread) = parts.io.into_inner().into_parts();
    // (The match drops hyper's read buffer when it is empty: an empty `Bytes` of it still
    // holds its memory.)
    let unread = match (parts.read_buf, unread) {
        (read, unread) if read.is_empty() && unread.is_empty() => None,
        (read, unread) if unread.is_empty() => Some(read),
        (read, unread) if read.is_empty() => Some(unread),
        (read, unread) => Some([read, unread].concat().into()),
    };
    (parts.service, stream, unread.and_then(past_blank_lines))
}

/// Serves an HTTP/2 connection; once no request has been open for the keep-alive timeout, it
/// sends `GOAWAY` and closes (hyper keeps an idle HTTP/2 connection for as long as the client
/// does).
async fn serve_http2<A: App + 'static>(
    shared: &Shared<A>,
    connection: Pin<Box<Http2Connection<A>>>,
    activity: &Activity,
) {
    let mut connection = connection;
    let idle = IdleWatch::new(activity, shared.timeouts.keep_alive);
    // Biased: the idle watch is polled after the connection, whose polls change it.
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = shared.stop.wait_graceful() => {
            // Finish the requests in progress, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = idle => {
            tracing::debug!("HTTP/2 connection idle past the keep-alive timeout: closing");
            connection.as_mut().graceful_shutdown();
            loop {
                match tokio::time::timeout(GOAWAY_GRACE, connection.as_mut()).await {
                    Ok(result) => break result,
                    // Requests the client opened before it saw the `GOAWAY` are served whole;
                    // the connection is looked at again a grace later.
                    Err(_) if activity.idle_since().is_none() => {}
                    Err(_) => {
                        tracing::debug!("HTTP/2 client did not acknowledge GOAWAY: closed");
                        break Ok(());
                    }
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "connection ended with an error");
    }
}

/// What the requests of a connection are doing, for its idle watch ([`IdleWatch`]): how many
/// are open (from the service's call to the end of the response body), when the last one
/// ended, and whether a write waits on the peer. hyper calls the service in the connection's
/// task, and a request's end (under HTTP/2, in a task of its own) is followed by a poll of the
/// connection, to send the rest of the response: the watch, polled right after the
/// connection, sees every change without a waker of its own.
#[derive(Debug)]
struct Activity {
    /// Requests in progress.
    open: AtomicUsize,
    /// When the last request ended (or the connection started), in microseconds since `epoch`.
    last_end: AtomicU64,
    epoch: Instant,
    /// Whether the last write hyper tried waits for the peer to read.
    write_blocked: AtomicBool,
    /// The connection's task, while its idle watch waits for open requests to end: woken when
    /// the last one ends outside that task (a request body read to its end and dropped by
    /// [`Lingering`]'s task after the response).
    waker: futures_util::task::AtomicWaker,
}

impl Activity {
    fn new() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            epoch: Instant::now(),
            write_blocked: AtomicBool::new(false),
            waker: futures_util::task::AtomicWaker::new(),
        }
    }

    /// Counts a request as open until the returned guard is dropped: a guard dropped in the
    /// connection's own task (a response body, which hyper drops).
    fn open(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenRequest {
            activity: self.clone(),
            wakes: false,
        }
    }

    /// [`open`](Activity::open), for a guard that may be dropped in another task (a request
    /// body): when it is the last one open, it wakes the connection's task, whose idle watch
    /// would otherwise not look again until the connection's next event.
    fn open_elsewhere(self: &Arc<Self>) -> OpenRequest {
        let mut open = self.open();
        open.wakes = true;
        open
    }

    /// When the connection went idle, in microseconds since `epoch`: `None` while a request
    /// is open.
    fn idle_since(&self) -> Option<u64> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.last_end.load(Ordering::Acquire))
    }

    /// When the last request ended (or the connection started).
    fn last_end(&self) -> Instant {
        self.at(self.last_end.load(Ordering::Acquire))
    }

    fn at(&self, micros: u64) -> Instant {
        self.epoch + Duration::from_micros(micros)
    }
}

/// An open request of a connection (see [`Activity`]), carried by its response body (and by
/// its request body).
#[derive(Debug)]
struct OpenRequest {
    activity: Arc<Activity>,
    /// Whether dropping the last open request wakes the connection's task.
    wakes: bool,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let activity = &self.activity;
        let micros = u64::try_from(activity.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        activity.last_end.store(micros, Ordering::Release);
        if activity.open.fetch_sub(1, Ordering::Release) == 1 && self.wakes {
            activity.waker.wake();
        }
    }
}

/// A response body that keeps its request open (see [`Activity`]) until hyper drops it,
/// after its last frame or when the client went away.
type Tracked = BodyWith<Body, OpenRequest>;

/// A request body that keeps its request open (see [`Activity`]) for as long as it is there:
/// with the app, or read to its end after the app left it (see [`Lingering`]). A connection is
/// never parked in the middle of a body.
type RequestBody = BodyWith<Incoming, OpenRequest>;

/// Resolves once a connection has had no request open for a time (from the end of the last
/// one, or from its start), then not again until another request has ended. Polled right
/// after the connection (a `biased` select; see [`Activity`]). The timer is set for the first
/// idle time and moved on only when it fires early, so a busy connection moves it once per
/// such time, not once per request.
struct IdleWatch<'a> {
    activity: &'a Activity,
    after: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The idle time it last resolved for.
    fired: Option<u64>,
    /// When the idle time counts from, at the earliest (set to try again later).
    not_before: Option<Instant>,
}

impl<'a> IdleWatch<'a> {
    fn new(activity: &'a Activity, after: Duration) -> Self {
        IdleWatch {
            activity,
            after,
            timer: None,
            fired: None,
            not_before: None,
        }
    }

    /// Resolves again once the connection has stayed idle for the time from now.
    fn retry(&mut self) {
        self.fired = None;
        self.not_before = Some(Instant::now());
    }

    /// Gives the timer back, while the connection waits for its next request without hyper.
    fn release(&mut self) {
        self.timer = None;
    }
}

impl Future for IdleWatch<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(since) = this.activity.idle_since() else {
            // The last request may end in another task: it wakes this one then. Registered,
            // then looked at again, so that an end in between is not missed.
            this.activity.waker.register(cx.waker());
            let Some(since) = this.activity.idle_since() else {
                return Poll::Pending;
            };
            return this.wait_idle(since, cx);
        };
        this.wait_idle(since, cx)
    }
}

impl IdleWatch<'_> {
    /// Waits for the idle time that began at `since` to pass.
    fn wait_idle(&mut self, since: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired == Some(since) {
            return Poll::Pending;
        }
        let from = self.activity.at(since);
        let from = self
            .not_before
            .map_or(from, |not_before| from.max(not_before));
        let at = tokio::time::Instant::from_std(from + self.after);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        loop {
            std::task::ready!(timer.as_mut().poll(cx));
            if timer.deadline() >= at {
                self.fired = Some(since);
                return Poll::Ready(());
            }
            timer.as_mut().reset(at);
        }
    }
}

/// Adds `Connection: close` to a response whose body will be cut at its `Content-Length`, so
/// the client does not reuse the connection (hyper closes it after the response).
fn closing_if_cut(mut response: Response<Body>) -> Response<Body> {
    if response.extensions().get::<MustClose>().is_some() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Builds the environ of `request` and starts the app on it; the returned future is the
/// response. A short body of a declared length is read whole first (see
/// [`Config::body_buffer_size`](crate::runtime::Config::body_buffer_size)).
///
/// What the app leaves unread of an HTTP/1 request body is read to its end after it (see
/// [`Lingering`]): the client may be sending it still, and hyper keeps the connection alive
/// once the body has ended. Not under HTTP/2, where a stream's unread body is refused by a
/// reset of that stream alone, nor with `Expect: 100-continue`, where reading the body would
/// ask the client to send what the app did not want (hyper closes the connection instead).
fn handle<A: App + 'static>(
    connection: &(Runtime<A>, ServerContext),
    request: Request<Incoming>,
    activity: &Arc<Activity>,
) -> Handling {
    let (runtime, context) = connection;
    if request.version() == Version::HTTP_2
        && request.headers().len() > runtime.config().max_headers
    {
        // hyper counts HTTP/1 headers itself; HTTP/2 bounds only the size of the whole list.
        tracing::info!(
            headers = request.headers().len(),
            "HTTP/2 request with too many headers: 431"
        );
        crate::runtime::stats::count(crate::runtime::stats::Limit::HeaderFieldsTooLarge);
        let refused = plain_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, false);
        // Answered as the server's own answers are: logged, with a `Server` header.
        let environ = environ_from_request(request, context);
        return Handling::Now(runtime.answer(&environ, refused));
    }
    let connect = request.method() == Method::CONNECT;
    let tunnel_refused = |responding: Responding| match connect {
        true => responding.for_connect(),
        false => responding,
    };
    if http_body::Body::is_end_stream(request.body()) {
        // No body (most GETs): no limit to apply.
        let environ = environ_from_request(request, context);
        return Handling::Now(tunnel_refused(runtime.respond(environ, BodyGuard::none())));
    }
    let expects = request.headers().contains_key(header::EXPECT);
    // (A CONNECT with a body streams it: its answer is checked as it leaves `respond`.)
    let buffered = http_body::Body::size_hint(request.body())
        .exact()
        .filter(|&n| runtime.buffers_body(n) && !expects && !connect);
    let (parts, body) = request.into_parts();
    let linger = parts.version < Version::HTTP_2 && !expects;
    let body = RequestBody::new(body, activity.open_elsewhere());
    let body = Lingering::new(body, linger, runtime.config().linger_timeout);
    let (body, guard) = runtime.guard_body(body);
    let Some(length) = buffered else {
        let environ = environ_from_request(Request::from_parts(parts, body), context);
        return Handling::Now(tunnel_refused(runtime.respond(environ, guard)));
    };
    // The input is set once the body is read.
    let environ = environ_from_request(Request::from_parts(parts, Empty::<Bytes>::new()), context);
    let runtime = runtime.clone();
    Handling::Buffering(Box::pin(async move {
        runtime
            .respond_after_body(environ, body, guard, length)
            .await
    }))
}

/// The response to a request: started at once, or after its body was read whole.
// The large variant is the common one: not boxed.
#[allow(clippy::large_enum_variant)]
enum Handling {
    Now(Responding),
    Buffering(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

impl Future for Handling {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        match self.get_mut() {
            Handling::Now(responding) => Pin::new(responding).poll(cx),
            Handling::Buffering(future) => future.as_mut().poll(cx),
        }
    }
}

/// The number of headers hyper accepts when `max_headers` is not set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The answer to a client whose head did not arrive in time.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// A connection's stream as a hyper connection sees it. The bytes read before hyper had the
/// stream come first. The head they begin must end before a deadline: past it, the client gets
/// a 408 and the connection ends (hyper, on its own, closes without an answer); watching stops
/// at the end of that head (a blank line), so nothing is ever written into a response. And
/// whether a write waits for the peer is told to the connection's [`Activity`]: an idle
/// connection is parked only when nothing is left to write.
struct HyperIo {
    stream: Box<dyn Stream>,
    /// Bytes read before hyper had the stream, not yet given to it.
    pending: Bytes,
    /// The head being watched, until its end.
    head: Option<HeadWatch>,
    /// Bytes of the 408 already written, once the time is up.
    answered: Option<usize>,
    /// The wait of a write on a client that does not read.
    send: SendWatch,
    activity: Arc<Activity>,
}

/// Bounds how long writes may wait for a client that does not read (the config's
/// `send_timeout`): armed when a write has to wait, disarmed when one goes through. Past it
/// the write fails, and hyper ends the connection.
struct SendWatch {
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl SendWatch {
    /// Follows the result of a write: an error once writes have waited past the timeout.
    fn follow<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.armed = false;
            return result;
        }
        if !self.armed {
            // A timeout too long for the clock (`Duration::MAX`) is no timeout.
            let Some(deadline) = tokio::time::Instant::now().checked_add(self.timeout) else {
                return result;
            };
            self.armed = true;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(timer) = self.timer.as_mut() else {
            return result;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::info!(timeout = ?self.timeout, "the client took nothing of the response in time: closing");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read the response within the send timeout",
        )))
    }
}

/// A head that must end before `deadline`; the timer is made only if a read has to wait for it.
struct HeadWatch {
    deadline: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    end: HeadEnd,
}

impl HyperIo {
    /// The stream, with `pending` (read from it already, not empty) to come first; the head
    /// `pending` begins must end before `deadline`.
    fn new(
        stream: Box<dyn Stream>,
        pending: Bytes,
        deadline: Instant,
        timeouts: &Timeouts,
        activity: &Arc<Activity>,
    ) -> Self {
        let mut end = HeadEnd::default();
        let head = (!end.scan(&pending)).then_some(HeadWatch {
            deadline,
            timer: None,
            end,
        });
        HyperIo {
            stream,
            pending,
            head,
            answered: None,
            send: SendWatch {
                timeout: timeouts.send,
                timer: None,
                armed: false,
            },
            activity: activity.clone(),
        }
    }

    /// The stream, and the bytes read from it that hyper has not taken yet.
    fn into_parts(self) -> (Box<dyn Stream>, Bytes) {
        (self.stream, self.pending)
    }
}

/// Finds the blank line (`\r\n\r\n`, or `\n\n`) that ends a head, across reads.
#[derive(Debug, Default)]
struct HeadEnd {
    /// How much of a blank line the bytes so far end with.
    blank: u8,
}

impl HeadEnd {
    /// Follows the bytes read; true at the end of the head.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            self.blank = match (self.blank, byte) {
                (0 | 2, b'\r') => self.blank + 1,
                (1, b'\n') => 2,
                (3, b'\n') => return true,
                // A bare LF after a line end: hyper takes LF-only heads too.
                (2, b'\n') => return true,
                (_, b'\n') => 2,
                _ => 0,
            };
        }
        false
    }
}

impl AsyncRead for HyperIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(written) = this.answered {
            // Time is up: finish writing the 408, then the connection reads as ended.
            let mut written = written;
            while written < REQUEST_TIMEOUT.len() {
                match Pin::new(&mut this.stream).poll_write(cx, &REQUEST_TIMEOUT[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Pending => {
                        this.answered = Some(written);
                        return Poll::Pending;
                    }
                }
            }
            this.answered = Some(REQUEST_TIMEOUT.len());
            let _ = Pin::new(&mut this.stream).poll_flush(cx);
            return Poll::Ready(Ok(()));
        }
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let Some(head) = this.head.as_mut() else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                if head.end.scan(&buf.filled()[before..]) {
                    this.head = None;
                }
                return result;
            }
            Poll::Ready(Err(_)) => return result,
            Poll::Pending => {}
        }
        let deadline = head.deadline;
        let timer = head
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.head = None;
        this.answered = Some(0);
        tracing::info!("request head not received in time: 408");
        crate::runtime::stats::count(crate::runtime::stats::Limit::RequestTimeout);
        Pin::new(&mut *this).poll_read(cx, buf)
    }
}

impl AsyncWrite for HyperIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_write(cx, data);
        this.activity
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        this.send.follow(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.activity
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        this.send.follow(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_head_is_found_whatever_the_split() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            for cut in 0..head.len() {
                let mut end = HeadEnd::default();
                let found = end.scan(&head[..cut]) || end.scan(&head[cut..]);
                assert!(found, "{:?} cut at {cut}", String::from_utf8_lossy(head));
            }
        }
        let mut end = HeadEnd::default();
        assert!(!end.scan(b"GET / HTTP/1.1\r\nHost: x\r\nX: \r\r\n"));
    }
}
