//! Remote backends: [`Remote`], an app that forwards each request to another server over HTTP,
//! FastCGI or uwsgi and streams the answer back.
//!
//! - HTTP/1.1 through hyper's client connection, kept alive in a pool; hop-by-hop headers are
//!   removed both ways and `X-Forwarded-For` (appended to, with the peer the request came from:
//!   behind [`ProxyHeaders`](crate::ProxyHeaders), its [`OriginalPeer`](crate::OriginalPeer)),
//!   `X-Forwarded-Proto` and `X-Forwarded-Host` are set; the original `Host` is kept, and the
//!   target is the original `REQUEST_URI` (or `SCRIPT_NAME` + `PATH_INFO`, encoded, and the
//!   query string).
//! - FastCGI as a Responder with `FCGI_KEEP_CONN`, connections pooled; the environ's variables
//!   become the params, the backend's `FCGI_STDERR` goes to this request's `wsgi.errors`.
//! - uwsgi (modifier 0), one connection per request as uwsgi has no keep-alive; the environ's
//!   variables become the vars. For FastCGI and uwsgi alike `REQUEST_SCHEME` is made from
//!   `wsgi.url_scheme` (the front end's may be a hop `ProxyHeaders` replaced).
//!
//! Bodies stream both ways. A request body of unknown length (chunked) goes to an HTTP backend
//! chunked, whatever the method; FastCGI and uwsgi backends need `CONTENT_LENGTH`, so it is
//! read first, up to [`RemoteBuilder::max_buffered_body`] (413 above).
//!
//! The status of an answer is its head's own: a `Status` header besides it (an HTTP or uwsgi
//! backend's, a FastCGI backend's second) is dropped and logged to `wsgi.errors`, since the
//! contract refuses it in a head.
//!
//! Failures are answered as a reverse proxy answers them, and logged to `wsgi.errors`: 502
//! when the backend cannot be reached or breaks the protocol, 504 when connecting or the
//! response takes longer than its timeout; a failure after the head cuts the response short.
//! When connecting fails, or a new connection closes before the request is written to it,
//! nothing of the request was sent, and the [`Unsent`] mark of a balancer's attempt says so.
//! A request body that fails while it is read (the client went away or stalled, a body limit)
//! is no backend's failure: before the head the Remote fails with a [`RequestBodyError`], as
//! an app that fails on its input, so that the server answers its 413 or 408 (or
//! [`BodyLimit`](crate::BodyLimit) its 413), and a balancer knows it for the client's.
//!
//! The exchange runs as a task on the tokio runtime the call is made on (the servers of this
//! project run apps inside theirs), or on a small runtime of this module's own thread when
//! there is none (under CGI, in a plain test), so the app itself is usable on any server.
//!
//! ```no_run
//! use gateway_middleware::remote::{BackendUrl, Remote};
//!
//! let backend = Remote::new("fastcgi://127.0.0.1:9000".parse::<BackendUrl>().unwrap());
//! gateway_servers::run(backend);
//! ```

mod fastcgi;
mod http;
mod pool;
mod stream;
mod uwsgi;

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use ::http::header::{CONNECTION, HeaderName};
use ::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use gateway_core::{App, Body, Environ, ErrorStream, Input, StartResponse, is_hop_by_hop};
use gateway_servers::cgi::ResponseHead;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

pub use stream::Endpoint;

use crate::balancer::{RequestBodyError, Unsent};
use crate::plain::plain;
use pool::Pool;

/// How long connecting to a backend may take by default (then 504).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a backend may take by default to send its head after the request last moved, and
/// then between two reads of its body (then 504, or a response cut short).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many idle connections to one backend are kept by default.
pub const DEFAULT_MAX_IDLE: usize = 32;
/// How long an idle connection is kept by default: under the keep-alive time of common servers
/// (this project's 75 s, nginx's 75 s), so the backend rarely closes one first.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body of unknown length read ahead by default for a FastCGI or uwsgi
/// backend, which need its length (413 above).
pub const DEFAULT_MAX_BUFFERED_BODY: u64 = 1024 * 1024;

/// The protocol a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// FastCGI, Responder role.
    FastCgi,
    /// The uwsgi protocol, modifier 0.
    Uwsgi,
}

impl Protocol {
    fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::FastCgi => "fastcgi",
            Protocol::Uwsgi => "uwsgi",
        }
    }
}

/// A backend: its protocol and where it listens, written `http://HOST:PORT`,
/// `fastcgi://HOST:PORT`, `uwsgi://HOST:PORT`, or with `unix:/path` in place of `HOST:PORT`.
///
/// ```
/// use gateway_middleware::remote::{BackendUrl, Endpoint, Protocol};
///
/// let url: BackendUrl = "uwsgi://unix:/run/app.sock".parse().unwrap();
/// assert_eq!(url.protocol, Protocol::Uwsgi);
/// assert_eq!(url.endpoint, Endpoint::Unix("/run/app.sock".into()));
/// assert_eq!(url.to_string(), "uwsgi://unix:/run/app.sock");
/// assert!("ftp://host:21".parse::<BackendUrl>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    /// The protocol.
    pub protocol: Protocol,
    /// The address.
    pub endpoint: Endpoint,
}

impl FromStr for BackendUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<BackendUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?}: a backend is written scheme://address"))?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "fastcgi" | "fcgi" => Protocol::FastCgi,
            "uwsgi" => Protocol::Uwsgi,
            other => {
                return Err(format!(
                    "{url:?}: unknown scheme {other:?} (http, fastcgi or uwsgi)"
                ));
            }
        };
        // `http://host:port/` is how people write a base URL: the slash means nothing here.
        let address = rest.strip_suffix('/').unwrap_or(rest);
        let endpoint = Endpoint::parse(address).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(BackendUrl { protocol, endpoint })
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.protocol.scheme(), self.endpoint)
    }
}

/// The settings of a [`Remote`]; made by [`Remote::builder`].
#[derive(Debug, Clone)]
pub struct RemoteBuilder {
    url: BackendUrl,
    settings: Settings,
}

#[derive(Debug, Clone)]
struct Settings {
    connect_timeout: Duration,
    response_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    max_buffered_body: u64,
}

impl RemoteBuilder {
    /// How long connecting may take (default [`DEFAULT_CONNECT_TIMEOUT`]; `Duration::MAX`
    /// waits without limit).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long the backend may take to send its head, and then between two reads of its body
    /// (default [`DEFAULT_RESPONSE_TIMEOUT`]). The head's time counts from the last piece of
    /// the request written to the backend, so a body that takes longer than this to upload is
    /// not cut while it moves, and time spent waiting for the client's body does not count (a
    /// client that stalls is the server's body timeout's to end); a backend that stops taking
    /// the body and does not answer is given up on this long after it last took some.
    /// `Duration::MAX` waits without limit.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.settings.response_timeout = timeout;
        self
    }

    /// How many idle connections are kept (default [`DEFAULT_MAX_IDLE`]; 0 closes each after
    /// its request). uwsgi connections are never kept.
    pub fn max_idle(mut self, max_idle: usize) -> Self {
        self.settings.max_idle = max_idle;
        self
    }

    /// How long an idle connection is kept (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// The largest request body of unknown length read ahead for FastCGI and uwsgi backends
    /// (default [`DEFAULT_MAX_BUFFERED_BODY`]).
    pub fn max_buffered_body(mut self, limit: u64) -> Self {
        self.settings.max_buffered_body = limit;
        self
    }

    /// The app.
    pub fn build(self) -> Remote {
        let conns = match self.url.protocol {
            Protocol::Http => Conns::Http(Pool::new(
                self.settings.max_idle,
                self.settings.idle_timeout,
            )),
            Protocol::FastCgi => Conns::FastCgi(Pool::new(
                self.settings.max_idle,
                self.settings.idle_timeout,
            )),
            Protocol::Uwsgi => Conns::Uwsgi,
        };
        Remote {
            inner: Arc::new(Inner {
                url: self.url,
                settings: self.settings,
                conns,
            }),
        }
    }
}

/// An app that forwards each request to a backend server; see the [module](self).
#[derive(Debug, Clone)]
pub struct Remote {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: BackendUrl,
    settings: Settings,
    conns: Conns,
}

#[derive(Debug)]
enum Conns {
    Http(Pool<http::Sender>),
    FastCgi(Pool<stream::Stream>),
    Uwsgi,
}

impl Remote {
    /// A backend with the default settings.
    pub fn new(url: BackendUrl) -> Remote {
        Remote::builder(url).build()
    }

    /// A backend with settings of your own.
    pub fn builder(url: BackendUrl) -> RemoteBuilder {
        RemoteBuilder {
            url,
            settings: Settings {
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                response_timeout: DEFAULT_RESPONSE_TIMEOUT,
                max_idle: DEFAULT_MAX_IDLE,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
            },
        }
    }

    /// The backend.
    pub fn url(&self) -> &BackendUrl {
        &self.inner.url
    }
}

impl App for Remote {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let errors = environ.errors().clone();
        let unsent = environ.extensions().get::<Unsent>().cloned();
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::channel(4);
        // Dropped with the response body: a client that goes away ends the exchange.
        let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
        let inner = Arc::clone(&self.inner);
        let out_errors = errors.clone();
        let exchange = async move {
            let out = Out {
                head: Some(head_tx),
                body: body_tx,
                errors: out_errors,
                backend: Arc::clone(&inner),
            };
            tokio::select! {
                _ = cancel_rx => {}
                () = inner.exchange(environ, out) => {}
            }
        };
        runtime().spawn(exchange);
        let url = Arc::clone(&self.inner);
        Body::from_future(async move {
            match head_rx.await {
                Ok(Ok(head)) => Ok(match start.start(head.status, head.headers) {
                    Ok(_) => Body::from_stream(Chunks {
                        rx: body_rx,
                        _cancel: cancel_tx,
                    }),
                    Err(error) => Body::error(error),
                }),
                // The request's body failed before the head: the Remote fails with it, so
                // that the server answers its 413 or 408 (or `BodyLimit` its 413), and a
                // balancer knows it for the client's. The driver logs it.
                Ok(Err(Failure::Input(error))) => Err(RequestBodyError::new(error).into()),
                Ok(Err(failure)) => {
                    errors.log(&format!("backend {}: {failure}", url.url));
                    if let (Failure::Connect(_) | Failure::Unsent(_), Some(unsent)) =
                        (&failure, &unsent)
                    {
                        // Nothing was written: a balancer may send the request elsewhere.
                        unsent.mark();
                    }
                    Ok(plain(start, failure.status(), HeaderMap::new()))
                }
                Err(_) => Err(format!("backend {}: the exchange ended unanswered", url.url).into()),
            }
        })
    }
}

impl Inner {
    async fn exchange(&self, environ: Environ, out: Out) {
        match &self.conns {
            Conns::Http(pool) => http::exchange(self, pool, environ, out).await,
            Conns::FastCgi(pool) => fastcgi::exchange(self, pool, environ, out).await,
            Conns::Uwsgi => uwsgi::exchange(self, environ, out).await,
        }
    }
}

/// Where an exchange sends what the backend answered.
struct Out {
    head: Option<oneshot::Sender<Result<ResponseHead, Failure>>>,
    body: mpsc::Sender<io::Result<Bytes>>,
    /// The request's `wsgi.errors`.
    errors: ErrorStream,
    backend: Arc<Inner>,
}

impl Out {
    /// Sends the head, hop-by-hop headers and `Status` removed; false when nobody waits for it
    /// any more.
    fn head(&mut self, mut head: ResponseHead) -> bool {
        strip_hop_by_hop(&mut head.headers);
        // The status is the head's own (an HTTP status line, or a FastCGI backend's first
        // `Status`): a `Status` header besides it is one the contract refuses in a head, which
        // would make the backend's answer a 500.
        if head.headers.remove(STATUS).is_some() {
            self.errors.log(&format!(
                "backend {}: `Status` header dropped from the response",
                self.backend.url
            ));
        }
        self.head
            .take()
            .is_some_and(|sender| sender.send(Ok(head)).is_ok())
    }

    /// Reports a failure: before the head it becomes the answer, after it the body ends in an
    /// error (the response is cut short).
    async fn fail(mut self, failure: Failure) {
        match self.head.take() {
            Some(sender) => {
                let _ = sender.send(Err(failure));
            }
            None => {
                let _ = self
                    .body
                    .send(Err(io::Error::other(failure.to_string())))
                    .await;
            }
        }
    }

    /// Sends a piece of the body; false when the client has gone.
    async fn data(&self, data: Bytes) -> bool {
        data.is_empty() || self.body.send(Ok(data)).await.is_ok()
    }
}

/// Why an exchange failed.
#[derive(Debug)]
enum Failure {
    /// Connecting failed (a timeout is a 504).
    Connect(io::Error),
    /// The connection closed before any of the request was written to it.
    Unsent(String),
    /// The backend took longer than the response timeout.
    Timeout(Duration),
    /// Reading or writing failed, or the backend broke its protocol.
    Backend(String),
    /// The request cannot be sent as it is (400).
    BadRequest(String),
    /// Reading the request body failed (the client went away or stalled, a body limit): the
    /// Remote fails with a [`RequestBodyError`], which the layers outside answer.
    Input(io::Error),
    /// A request body of unknown length over the read-ahead limit.
    BodyTooLarge(u64),
    /// The request's variables do not fit the protocol's packet.
    HeadersTooLarge(String),
    /// The backend said it is overloaded (FastCGI's `FCGI_OVERLOADED`): 503.
    Overloaded,
    /// A kept connection ended before the backend sent a byte of the answer: it had closed the
    /// connection while idle (PHP-FPM's `pm.max_requests`), and the request was not read.
    ClosedWhileIdle,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Connect(error) if error.kind() == io::ErrorKind::TimedOut => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Failure::Connect(_)
            | Failure::Unsent(_)
            | Failure::Backend(_)
            | Failure::ClosedWhileIdle => StatusCode::BAD_GATEWAY,
            Failure::BadRequest(_) | Failure::Input(_) => StatusCode::BAD_REQUEST,
            Failure::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Failure::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(error) => write!(f, "cannot connect: {error}"),
            Failure::Unsent(why) => f.write_str(why),
            Failure::Timeout(after) => write!(f, "no answer within {after:?}"),
            Failure::Backend(error) => write!(f, "{error}"),
            Failure::BadRequest(why) => write!(f, "request not forwarded: {why}"),
            Failure::Input(error) => write!(f, "reading the request body: {error}"),
            Failure::BodyTooLarge(limit) => {
                write!(f, "request body of unknown length over {limit} bytes")
            }
            Failure::HeadersTooLarge(why) => write!(f, "request variables too large: {why}"),
            Failure::Overloaded => f.write_str("the backend is overloaded"),
            Failure::ClosedWhileIdle => {
                f.write_str("the backend closed the connection before it answered")
            }
        }
    }
}

/// The header the CGI gives the status in, which the contract refuses in a response head.
const STATUS: HeaderName = HeaderName::from_static("status");

/// The largest response head read from a FastCGI or uwsgi backend (502 above).
const MAX_HEAD: usize = 64 * 1024;

/// How the reading half of an exchange ended.
enum ReadEnd<R> {
    /// The response was read whole; the reader, if the connection can be used again.
    Done(Option<R>),
    /// The client went away.
    ClientGone,
    /// The exchange failed.
    Failed(Failure),
}

/// Why the writing half of an exchange stopped.
enum WriteError {
    /// Reading the request body failed (the client went away or sent a broken body).
    Input(io::Error),
    /// Writing to the backend failed.
    Backend,
}

/// How far a request has gone on its way to the backend, for the response timeout: the backend's
/// head is awaited for the timeout from the request's last progress (its head or a piece of its
/// body written), not from the start of the exchange. A large body from a slow client can take
/// longer than the timeout to arrive, and a backend answers only once it has it; nginx's
/// `proxy_read_timeout` also counts from the last write. A backend that stops reading the body
/// and does not answer is given up on one timeout after it last took some. Time spent waiting
/// for the request's input (a client that stalls its upload) does not count at all: the
/// backend is not late then, the client is, and the server's body timeout is the one for it.
#[derive(Debug)]
struct Progress {
    start: tokio::time::Instant,
    /// Nanoseconds from `start` to the last progress.
    last: AtomicU64,
    /// Whether the writer waits for the request's input.
    waiting: AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        }
    }

    /// The request moved on: the head's deadline starts again from now.
    fn moved(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(elapsed, Ordering::Relaxed);
        // After `last`, so that a deadline read once the wait is over counts from its end.
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// Notes a poll of the request's input: pending, the writer waits for the client; ready,
    /// the request moved on.
    fn input<T>(&self, poll: Poll<T>) -> Poll<T> {
        match poll.is_pending() {
            true => self.waiting.store(true, Ordering::SeqCst),
            false => self.moved(),
        }
        poll
    }

    /// When the head is late, as things stand: a timeout from now while the writer waits for
    /// the request's input; far in the future for a timeout too large to add to an instant
    /// (`Duration::MAX`: no timeout).
    fn head_by(&self, timeout: Duration) -> tokio::time::Instant {
        if self.waiting.load(Ordering::SeqCst) {
            return later(tokio::time::Instant::now(), timeout);
        }
        let last = Duration::from_nanos(self.last.load(Ordering::Relaxed));
        later(later(self.start, last), timeout)
    }

    /// Awaits `future` until the head is late: `None` once `timeout` has passed since the
    /// request last moved.
    async fn before_head<F: Future>(&self, timeout: Duration, future: F) -> Option<F::Output> {
        tokio::pin!(future);
        loop {
            let by = self.head_by(timeout);
            match tokio::time::timeout_at(by, &mut future).await {
                Ok(output) => return Some(output),
                // The request moved while this waited: the deadline moved with it.
                Err(_) if self.head_by(timeout) > by => continue,
                Err(_) => return None,
            }
        }
    }
}

/// `instant` + `wait`, or a time far in the future (some thirty years, as tokio's own timers
/// take it) when that cannot be represented.
fn later(instant: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);
    instant
        .checked_add(wait)
        .unwrap_or_else(|| tokio::time::Instant::now() + FAR)
}

/// Sends a request (`head`, then the body: read ahead, or streamed from `input`, each piece
/// framed by `encode`, which ends the body when given no data) while `read` reads the
/// response. The reading half decides when the exchange ends: a backend may answer before it
/// has read the whole body; each write tells `progress`. Gives what `read` returned, and the
/// writer if the whole request was sent.
async fn send_request<W, R, T>(
    mut writer: W,
    head: BytesMut,
    ahead: Option<Bytes>,
    mut input: Input,
    encode: impl Fn(&mut BytesMut, &[u8]),
    progress: &Progress,
    read: R,
) -> (ReadEnd<T>, Option<W>)
where
    W: AsyncWrite + Unpin,
    R: Future<Output = ReadEnd<T>>,
{
    let write = async {
        let mut buf = head;
        // `encode` is given data only when there is some: given none it ends the body, which
        // must happen once, below, even when the body is empty (a request with no
        // `CONTENT_LENGTH` read ahead to nothing, or an input that yields an empty chunk).
        match ahead {
            Some(body) if body.is_empty() => {}
            Some(body) => encode(&mut buf, &body),
            None => {
                // The head leaves with the first piece of the body.
                let mut next =
                    |cx: &mut std::task::Context<'_>| progress.input(input.poll_chunk(cx));
                while let Some(data) = std::future::poll_fn(&mut next).await {
                    let data = data.map_err(WriteError::Input)?;
                    if data.is_empty() {
                        continue;
                    }
                    encode(&mut buf, &data);
                    write_moving(&mut writer, &buf, progress).await?;
                    buf.clear();
                }
            }
        }
        encode(&mut buf, &[]);
        write_moving(&mut writer, &buf, progress).await?;
        writer.flush().await.map_err(|_| WriteError::Backend)?;
        progress.moved();
        Ok(writer)
    };
    tokio::pin!(write, read);
    let mut written: Option<Option<W>> = None;
    loop {
        tokio::select! {
            biased;
            end = &mut read => return (end, written.flatten()),
            result = &mut write, if written.is_none() => match result {
                Ok(writer) => written = Some(Some(writer)),
                Err(WriteError::Input(error)) => {
                    return (ReadEnd::Failed(Failure::Input(error)), None);
                }
                // The backend may have answered before it stopped reading: the reading half
                // tells.
                Err(WriteError::Backend) => written = Some(None),
            },
        }
    }
}

/// Writes `buf` whole, telling `progress` of each part the backend takes.
async fn write_moving<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut buf: &[u8],
    progress: &Progress,
) -> Result<(), WriteError> {
    while !buf.is_empty() {
        match writer.write(buf).await {
            Ok(0) | Err(_) => return Err(WriteError::Backend),
            Ok(n) => buf = &buf[n..],
        }
        progress.moved();
    }
    Ok(())
}

/// The response body: what the exchange sends through the channel.
struct Chunks {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    _cancel: oneshot::Sender<()>,
}

impl futures_core::Stream for Chunks {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Whether the `Transfer-Encoding` values of `headers`, all together, are `chunked` and
/// nothing else: one field, one element (an empty element too makes hyper read the body to the
/// close, undecoded).
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(::http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    codings
        .next()
        .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// Removes hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in named.into_iter().chain(hop) {
        headers.remove(name);
    }
}

/// Whether `var` is the CGI variable of a hop-by-hop request header (`HTTP_CONNECTION`, …).
fn is_hop_by_hop_var(var: &[u8]) -> bool {
    matches!(
        var,
        b"HTTP_CONNECTION"
            | b"HTTP_KEEP_ALIVE"
            | b"HTTP_PROXY_AUTHENTICATE"
            | b"HTTP_PROXY_AUTHORIZATION"
            | b"HTTP_PROXY_CONNECTION"
            | b"HTTP_TE"
            | b"HTTP_TRAILER"
            | b"HTTP_TRAILERS"
            | b"HTTP_TRANSFER_ENCODING"
            | b"HTTP_UPGRADE"
    )
}

/// The request's variables as a FastCGI or uwsgi backend gets them: every CGI variable but the
/// hop-by-hop headers, `CONTENT_LENGTH` set to `length` when the body was read ahead,
/// `REQUEST_SCHEME` for the scheme, and `HTTPS` for https when the front end did not set it.
fn backend_vars(environ: &Environ, length: Option<u64>) -> Vec<(Bytes, Bytes)> {
    // The headers `Connection` names are hop-by-hop too, but only among the variables of
    // ordinary headers (`HTTP_*`), and not `HTTP_HOST`: `CONTENT_LENGTH` and `CONTENT_TYPE`
    // describe the body, which is sent all the same (and framed by `CONTENT_LENGTH`), and the
    // host is the request's own, which an HTTP backend gets too.
    let named: Vec<Bytes> = environ
        .get_str("HTTP_CONNECTION")
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(|name| gateway_core::header_var_name(name.trim()))
        .filter(|var| var.starts_with(b"HTTP_") && var != "HTTP_HOST")
        .collect();
    let mut vars: Vec<(Bytes, Bytes)> = environ
        .vars()
        .filter(|(name, _)| !is_hop_by_hop_var(name) && !named.iter().any(|n| n == name))
        .filter(|(name, _)| length.is_none() || *name != b"CONTENT_LENGTH")
        // The front end's `REQUEST_SCHEME` is its own hop's, which `ProxyHeaders` may have
        // replaced (with `wsgi.url_scheme` and `HTTPS`): it is made again from the scheme.
        .filter(|(name, _)| *name != b"REQUEST_SCHEME")
        .map(|(name, value)| (Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)))
        .collect();
    if let Some(length) = length {
        vars.push((
            Bytes::from_static(b"CONTENT_LENGTH"),
            Bytes::from(length.to_string()),
        ));
    }
    let scheme = environ.url_scheme().to_string();
    vars.push((
        Bytes::from_static(b"REQUEST_SCHEME"),
        Bytes::from(scheme.clone()),
    ));
    if scheme == "https" && !environ.contains("HTTPS") {
        vars.push((Bytes::from_static(b"HTTPS"), Bytes::from_static(b"on")));
    }
    vars
}

/// The request body for a backend that needs its length: `None` when it is known (or there is
/// none), else the whole body, read ahead up to `limit`.
async fn read_ahead(environ: &mut Environ, limit: u64) -> Result<Option<Bytes>, Failure> {
    if environ.content_length().is_some() || !environ.input_terminated() {
        return Ok(None);
    }
    let input = environ.input();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = std::future::poll_fn(|cx| input.poll_chunk(cx)).await {
        let chunk = chunk.map_err(Failure::Input)?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Failure::BodyTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// The runtime exchanges run on: the caller's, or this module's own.
fn runtime() -> Handle {
    Handle::try_current().unwrap_or_else(|_| fallback_runtime().clone())
}

fn fallback_runtime() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("gateway-remote".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the remote backends' runtime");
                let _ = tx.send(runtime.handle().clone());
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the remote backends' thread");
        rx.recv().expect("the remote backends' runtime handle")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        for (text, shown) in [
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
            ("FCGI://localhost:9000", "fastcgi://localhost:9000"),
            ("fastcgi://unix:/tmp/a.sock", "fastcgi://unix:/tmp/a.sock"),
            ("uwsgi://[::1]:3031", "uwsgi://[::1]:3031"),
        ] {
            let url: BackendUrl = text.parse().unwrap();
            assert_eq!(url.to_string(), shown);
        }
        for bad in ["127.0.0.1:80", "https://a:1", "http://a", "uwsgi://unix:"] {
            assert!(bad.parse::<BackendUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_both_ways() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "close, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-kept", "2".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-kept"], "2");

        let mut environ = Environ::new();
        environ.set("HTTP_CONNECTION", "keep-alive");
        environ.set("HTTP_TE", "trailers");
        environ.set("HTTP_X_A", "a");
        environ.set("CONTENT_LENGTH", "");
        let vars = backend_vars(&environ, Some(3));
        let names: Vec<&[u8]> = vars.iter().map(|(n, _)| &n[..]).collect();
        assert_eq!(
            names,
            [&b"HTTP_X_A"[..], b"CONTENT_LENGTH", b"REQUEST_SCHEME"]
        );
        assert_eq!(vars[1].1, "3");
    }
}
