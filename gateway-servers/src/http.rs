//! The built-in HTTP server: HTTP/1.1 (keep-alive, pipelining, chunked bodies both ways,
//! `Expect: 100-continue`) and HTTP/2 with prior knowledge, on hyper.
//!
//! hyper parses and frames; this module turns each request into an environ with
//! [`environ_from_request`] and answers with [`Runtime::respond`], which applies the limits
//! hyper does not: the request body size (413) and its read timeout (408), and the request limit
//! (503). hyper answers heads that are too large or have too many headers with 431, and closes
//! connections whose head is too slow.
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

use bytes::Bytes;
use gateway_core::convert::{ServerContext, environ_from_request};
use gateway_core::{App, Body};
use http::{HeaderValue, Request, Response, Version, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::runtime::{
    BodyGuard, Config, Listener, MustClose, Responding, Runtime, Shutdown, serve_connections,
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(hyper_head_timeout(&config))
        .max_buf_size(config.max_head_size.max(8192));
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        // Set, hyper sizes its header array for each request on the heap; its default is an
        // array on the stack.
        builder.http1().max_headers(config.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_head_size).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let stop = shutdown.clone();
    let header_read_timeout = config.header_read_timeout;
    let keep_alive_timeout = config.keep_alive_timeout;
    serve_connections(listener, &config, shutdown, move |connection| {
        let mut context = ServerContext::default();
        context.peer_addr = connection.peer;
        context.local_addr = connection.local;
        context.server_software = Some(Bytes::from_static(config.server_software.as_bytes()));
        context.multithread = config.blocking;
        context.errors = Some(runtime.errors().clone());
        let connection_state = (runtime.clone(), context);
        let streams = Arc::new(Streams::new());
        let service_streams = streams.clone();
        let service = hyper::service::service_fn(move |request| {
            let stream = (request.version() == Version::HTTP_2).then(|| service_streams.open());
            let response = handle(&connection_state, request);
            async move {
                let response = closing_if_cut(response.await);
                drop(stream);
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let stop = stop.clone();
        async move {
            let io = TokioIo::new(FirstHead::new(connection.stream, header_read_timeout));
            let connection = builder.serve_connection_with_upgrades(io, service);
            let mut connection = std::pin::pin!(connection);
            let idle = IdleH2 {
                streams: &streams,
                timeout: keep_alive_timeout,
                timer: None,
            };
            // Biased: the idle watch is polled after the connection, whose polls change it.
            let result = tokio::select! {
                biased;
                result = connection.as_mut() => result,
                () = stop.wait_graceful() => {
                    // Finish the request in progress, then close (idle keep-alive
                    // connections close at once).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = idle => {
                    tracing::debug!("HTTP/2 connection idle past the keep-alive timeout: closing");
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        }
    })
    .await
}

/// The HTTP/2 requests of a connection, for its keep-alive timeout. hyper closes an idle HTTP/1
/// connection itself (its head timer), but keeps an HTTP/2 connection with no request open for
/// as long as the client does; [`IdleH2`] closes it (`GOAWAY`) once no request has been open for
/// the keep-alive timeout. hyper calls the service in the connection's task, and a request's
/// end (its future runs in a task of its own under HTTP/2) is followed by a poll of the
/// connection, which sends the response: the watch, polled right after the connection, sees
/// every change without a waker of its own.
#[derive(Debug)]
struct Streams {
    /// HTTP/2 requests in progress (until their response head).
    open: AtomicUsize,
    /// Whether the connection served HTTP/2: an HTTP/1 connection never runs the timer.
    http2: AtomicBool,
    /// When the last request ended, in microseconds since `epoch`, plus one (0: none yet).
    last_end: AtomicU64,
    epoch: Instant,
}

impl Streams {
    fn new() -> Self {
        Streams {
            open: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Counts an HTTP/2 request as open until the returned guard is dropped.
    fn open(self: &Arc<Self>) -> OpenStream {
        self.http2.store(true, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// When the connection goes idle for `timeout`: `None` while a request is open (or none
    /// ever was).
    fn idle_at(&self, timeout: Duration) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.last_end.load(Ordering::Acquire) {
            0 => None,
            micros => Some(self.epoch + Duration::from_micros(micros - 1) + timeout),
        }
    }
}

/// An open HTTP/2 request of a connection (see [`Streams`]).
struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let micros = u64::try_from(self.0.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.0.last_end.store(micros + 1, Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::Release);
    }
}

/// Resolves once an HTTP/2 connection has had no request open for the keep-alive timeout.
/// Polled right after the connection (a `biased` select; see [`Streams`]); on an HTTP/1
/// connection a poll is one load.
struct IdleH2<'a> {
    streams: &'a Streams,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for IdleH2<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.streams.http2.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        let Some(at) = self.streams.idle_at(self.timeout) else {
            self.timer = None;
            return Poll::Pending;
        };
        let at = tokio::time::Instant::from_std(at);
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        timer.as_mut().poll(cx)
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
/// response. A short body of a declared length, for a blocking app, is read whole first (see
/// [`Config::body_buffer_size`](crate::runtime::Config::body_buffer_size)).
fn handle<A: App + 'static>(
    connection: &(Runtime<A>, ServerContext),
    request: Request<Incoming>,
) -> Handling {
    let (runtime, context) = connection;
    if http_body::Body::is_end_stream(request.body()) {
        // No body (most GETs): no limit to apply.
        let environ = environ_from_request(request, context);
        return Handling::Now(runtime.respond(environ, BodyGuard::none()));
    }
    let buffered = http_body::Body::size_hint(request.body())
        .exact()
        .filter(|&n| runtime.buffers_body(n) && !request.headers().contains_key(header::EXPECT));
    let (parts, body) = request.into_parts();
    let (body, guard) = runtime.guard_body(body);
    let Some(length) = buffered else {
        let environ = environ_from_request(Request::from_parts(parts, body), context);
        return Handling::Now(runtime.respond(environ, guard));
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

/// How much longer hyper's header timer runs than `FirstHead`'s, at least, when the keep-alive
/// timeout does not make it shorter.
const HYPER_HEAD_GRACE: Duration = Duration::from_secs(1);

/// hyper's head timer runs from the start of a connection, and from the end of each response
/// to the end of the next head, and closes without an answer: it is the keep-alive timeout.
/// The first head gets its 408 from `FirstHead` at the header timeout, so hyper's timer runs at
/// least a second longer than that, unless the keep-alive timeout is the shorter of the two
/// (then it bounds the first head too, as documented on the config).
fn hyper_head_timeout(config: &Config) -> Duration {
    if config.keep_alive_timeout < config.header_read_timeout {
        config.keep_alive_timeout
    } else {
        config
            .keep_alive_timeout
            .max(config.header_read_timeout + HYPER_HEAD_GRACE)
    }
}

/// The answer to a client whose first head did not arrive in time.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// A connection whose first request head must arrive within a time: past it, a client that
/// started a head gets a 408 and the connection ends (hyper, on its own, closes without an
/// answer); a connection on which nothing came is closed without one, as nginx does (browsers
/// open connections ahead of need, and an answer there would be taken for the next request's).
/// Watching stops at the end of the first head (a blank line), so nothing is ever written into
/// a response.
struct FirstHead<S> {
    inner: S,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    end: HeadEnd,
    /// Whether any byte arrived.
    started: bool,
    /// Bytes of the 408 already written, once the time is up.
    answered: Option<usize>,
}

impl<S> FirstHead<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        FirstHead {
            inner,
            timer: Some(Box::pin(tokio::time::sleep(timeout))),
            end: HeadEnd::default(),
            started: false,
            answered: None,
        }
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

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FirstHead<S> {
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
                match Pin::new(&mut this.inner).poll_write(cx, &REQUEST_TIMEOUT[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Pending => {
                        this.answered = Some(written);
                        return Poll::Pending;
                    }
                }
            }
            this.answered = Some(REQUEST_TIMEOUT.len());
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.timer.is_none() {
            return result;
        }
        if let Poll::Ready(Ok(())) = &result {
            let new = &buf.filled()[before..];
            this.started |= !new.is_empty();
            if this.end.scan(new) {
                this.timer = None;
            }
            return result;
        }
        if let Some(timer) = this.timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            this.timer = None;
            if !this.started {
                tracing::debug!("no request within the head timeout: closing");
                return Poll::Ready(Ok(()));
            }
            this.answered = Some(0);
            tracing::info!("request head not received in time: 408");
            crate::runtime::stats::count(crate::runtime::stats::Limit::RequestTimeout);
            return Pin::new(&mut *this).poll_read(cx, buf);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstHead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
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
