//! What every network adapter does with a request once it has an environ: the body limits
//! (size, read timeout), the request limit, and the answers they give (413, 408, 503).

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::{App, Body, BodyFailure, BodyOutcome, BoxError, Environ, Input, driver};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;

use super::stats::{self, Limit, Record};
use super::{AppRun, Runtime};

/// What a guarded body reports to [`Runtime::respond`].
#[derive(Debug, Clone)]
pub struct BodyGuard {
    /// `None` for a request with no body to guard.
    outcome: Option<BodyOutcome>,
}

impl BodyGuard {
    /// The guard of a request that has no body: nothing can break a body limit.
    pub fn none() -> Self {
        BodyGuard { outcome: None }
    }
}

/// A request body with the runtime's body limits applied: past `max_body_size` bytes, or
/// `body_read_timeout` without a byte while the app waits, reading fails (and the answer
/// becomes 413 or 408 if the app then fails before its head).
pub struct GuardedBody<B> {
    body: B,
    left: u64,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the last poll waited for the client (harakiri is told when that changes).
    waiting: bool,
    /// The body may be read on worker threads; its timer belongs to the server's runtime.
    runtime: tokio::runtime::Handle,
    outcome: BodyOutcome,
}

impl<B> std::fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedBody")
            .field("left", &self.left)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<B> GuardedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The next frame, with the limits applied.
    fn poll_limited(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                if let Some(data) = frame.data_ref() {
                    if data.len() as u64 > this.left {
                        this.outcome.note(BodyFailure::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "request body larger than the limit",
                        )))));
                    }
                    this.left -= data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.outcome.note(BodyFailure::Broken);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let (timeout, runtime) = (this.timeout, &this.runtime);
                let timer = this.timer.get_or_insert_with(|| {
                    let _entered = runtime.enter();
                    Box::pin(tokio::time::sleep(timeout))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.outcome.note(BodyFailure::TooSlow);
                        Poll::Ready(Some(Err(Box::new(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request body read timed out",
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<B> http_body::Body for GuardedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = this.poll_limited(cx);
        // A wait for the client, from a `Pending` to whatever comes next (a frame, the end, an
        // error, the timeout), is out of harakiri's watch.
        if polled.is_pending() != this.waiting {
            this.waiting = polled.is_pending();
            super::workers::client_wait(this.waiting);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The first `length` bytes of `body`, or fewer if it ends sooner, as the chunks they came in
/// (not copied into one buffer: a fresh buffer per request costs page faults); nothing past
/// them is read (a body read from the connection itself has no end of its own).
async fn read_up_to<B>(mut body: B, length: u64) -> Result<ReadBody, BoxError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut chunks = VecDeque::new();
    let mut read = 0u64;
    while read < length {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len() as u64;
                    chunks.push_back(data);
                }
            }
        }
    }
    Ok(ReadBody(chunks))
}

/// A request body read before the app was called: its chunks, in order.
struct ReadBody(VecDeque<Bytes>);

impl http_body::Body for ReadBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|d| d.len() as u64).sum())
    }
}

/// A short plain-text answer of the server itself; `close` asks the client to close the
/// connection (the request body was not read).
pub fn plain_response(status: StatusCode, close: bool) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let length = text.len();
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

impl<A: App + 'static> Runtime<A> {
    /// Applies the body limits to a request body. Call inside the runtime (the read timeout's
    /// timer belongs to it).
    pub fn guard_body<B>(&self, body: B) -> (GuardedBody<B>, BodyGuard) {
        let outcome = BodyOutcome::new();
        let body = GuardedBody {
            body,
            left: self.config().max_body_size,
            timeout: self.config().body_read_timeout,
            timer: None,
            waiting: false,
            runtime: tokio::runtime::Handle::current(),
            outcome: outcome.clone(),
        };
        (
            body,
            BodyGuard {
                outcome: Some(outcome),
            },
        )
    }

    /// Answers a request: 413 at once when its declared length is over the limit, 503 when the
    /// server is at its request limit, else the app's response (413 or 408 instead of the
    /// driver's 500 when the app failed because its body broke a limit), with a `Server`
    /// header unless the app set one. The app starts at once (see [`Runtime::run_app`]); the
    /// returned future resolves to the response.
    /// With `--stats` or `--access-log`, the request is counted, timed and logged until its
    /// response body ends or is dropped.
    pub fn respond(&self, environ: Environ, guard: BodyGuard) -> Responding {
        let record = Record::start(&environ);
        self.respond_recorded(environ, guard, record)
    }

    /// [`respond`](Runtime::respond), for a request whose record began earlier.
    fn respond_recorded(
        &self,
        mut environ: Environ,
        guard: BodyGuard,
        record: Option<Record>,
    ) -> Responding {
        let config = self.config();
        if let Some(outcome) = &guard.outcome {
            // For the layers between the server and the app that answer for it (an access log).
            environ.extensions_mut().insert(outcome.clone());
        }
        let mut responding = Responding {
            state: Answer::Done,
            guard,
            software: config.server_software,
            max_body_size: config.max_body_size,
            record,
            connect: false,
        };
        if environ
            .content_length()
            .is_some_and(|n| n > config.max_body_size)
        {
            tracing::info!(limit = config.max_body_size, "request body too large: 413");
            stats::count(Limit::PayloadTooLarge);
            responding.state = Answer::Ready(plain_response(StatusCode::PAYLOAD_TOO_LARGE, true));
            return responding;
        }
        match self.run_app(environ) {
            Some(run) => responding.state = Answer::Run(run),
            None => {
                tracing::warn!(limit = config.max_requests, "request limit reached: 503");
                stats::count(Limit::ServiceUnavailable);
                let mut response = plain_response(StatusCode::SERVICE_UNAVAILABLE, false);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                responding.state = Answer::Ready(response);
            }
        }
        responding
    }
}

impl<A: App + 'static> Runtime<A> {
    /// Whether a request body of `length` bytes is read whole before the app is called: when
    /// it is not empty and at most
    /// [`Config::body_buffer_size`](super::Config::body_buffer_size) (and the body size
    /// limit).
    pub(crate) fn buffers_body(&self, length: u64) -> bool {
        let config = self.config();
        length > 0 && length <= config.body_buffer_size.min(config.max_body_size)
    }

    /// Reads `body` whole, then answers as [`respond`](Runtime::respond) does, with the body
    /// as the environ's input (the app reads it from memory, on the worker pool, without
    /// waiting on the connection chunk by chunk). `length` is the declared length: a shorter
    /// body fails the app's read as a streamed one would. When reading breaks a limit the
    /// answer is 413 or 408 (400 when the client or the web server gave up), and the app is
    /// not called. The request is recorded (`--stats`, `--access-log`) from before the read,
    /// so a client that gives up during it is counted too.
    pub(crate) async fn respond_after_body<B>(
        &self,
        mut environ: Environ,
        body: GuardedBody<B>,
        guard: BodyGuard,
        length: u64,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let record = Record::start(&environ);
        match read_up_to(body, length).await {
            Ok(data) => {
                environ.set_input(Input::from_body(data).with_limit(length));
                self.respond_recorded(environ, guard, record).await
            }
            Err(error) => {
                tracing::debug!(%error, "request body not read whole");
                let response = guard
                    .limit_response(self.config().max_body_size)
                    .unwrap_or_else(|| plain_response(StatusCode::BAD_REQUEST, true));
                self.answer_recorded(response, record).await
            }
        }
    }

    /// The server's own answer to the request of `environ`, without calling the app: sent as
    /// [`respond`](Runtime::respond) sends the app's (a `Server` header, counted and logged
    /// with `--stats` or `--access-log`).
    pub(crate) fn answer(&self, environ: &Environ, response: Response<Body>) -> Responding {
        self.answer_recorded(response, Record::start(environ))
    }

    /// [`answer`](Runtime::answer), for a request whose record began earlier.
    fn answer_recorded(&self, response: Response<Body>, record: Option<Record>) -> Responding {
        let config = self.config();
        Responding {
            state: Answer::Ready(response),
            guard: BodyGuard::none(),
            software: config.server_software,
            max_body_size: config.max_body_size,
            record,
            connect: false,
        }
    }
}

/// Who answers a request. One enum, not two options: [`Responding`] is moved on each await of
/// every request, and the app's run and the server's answer are never both there.
enum Answer {
    /// The app at work.
    Run(AppRun),
    /// The server's own answer (400, 408, 413, 503).
    Ready(Response<Body>),
    /// The answer was given.
    Done,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Run(run) => f.debug_tuple("Run").field(run).finish(),
            Answer::Ready(response) => f.debug_tuple("Ready").field(&response.status()).finish(),
            Answer::Done => f.write_str("Done"),
        }
    }
}

/// A request being answered: resolves to its response. Made by [`Runtime::respond`].
#[must_use = "a response does nothing unless polled"]
pub struct Responding {
    state: Answer,
    guard: BodyGuard,
    software: &'static str,
    max_body_size: u64,
    record: Option<Record>,
    /// The request is a `CONNECT`: a 2xx answer would open a tunnel (see `checked`). Set by
    /// the HTTP server ([`Responding::for_connect`]): front ends do not pass `CONNECT` on.
    connect: bool,
}

impl std::fmt::Debug for Responding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responding")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl std::future::Future for Responding {
    type Output = Response<Body>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        let this = &mut *self;
        let response = match &mut this.state {
            Answer::Run(run) => {
                let response = std::task::ready!(Pin::new(run).poll(cx));
                this.state = Answer::Done;
                this.checked(response)
            }
            Answer::Ready(_) => match std::mem::replace(&mut this.state, Answer::Done) {
                Answer::Ready(response) => response,
                _ => unreachable!("matched Ready above"),
            },
            Answer::Done => panic!("Responding polled after it completed"),
        };
        let response = with_server(this.software, response);
        Poll::Ready(match this.record.take() {
            None => response,
            Some(record) => record.attach(response),
        })
    }
}

impl Responding {
    /// For a `CONNECT` request: an app's 2xx answer, which would make the connection a tunnel
    /// the contract cannot serve, is answered 501 instead ([`no_tunnel`]).
    pub(crate) fn for_connect(mut self) -> Responding {
        self.connect = true;
        self
    }

    /// The app's response, or 413, 408 or 400 in place of the driver's 500 when the app failed
    /// because its body broke a limit or was broken ([`driver::failure_status`]), with the
    /// headers middleware asked for on the 500 ([`driver::keep_failure_headers`]); 501 in
    /// place of a 2xx to `CONNECT` ([`no_tunnel`]).
    fn checked(&self, response: Response<Body>) -> Response<Body> {
        if self.connect && response.status().is_success() {
            return no_tunnel(response);
        }
        let Some(failure) = driver::failure(&response) else {
            return response;
        };
        match driver::failure_status(failure, self.guard.outcome.as_ref()) {
            Some(status) => {
                let mut answer = body_failure_response(status, self.max_body_size);
                driver::keep_failure_headers(&response, answer.headers_mut());
                answer
            }
            None => response,
        }
    }
}

impl BodyGuard {
    /// The answer when reading the body failed: 413 past `max_body_size`, 408 past the body
    /// read timeout, 400 when the body itself was broken (cut short of its length, a malformed
    /// chunk); `None` when it did not fail.
    pub(crate) fn limit_response(&self, max_body_size: u64) -> Option<Response<Body>> {
        let failed = self.outcome.as_ref().and_then(BodyOutcome::failure)?;
        Some(body_failure_response(failed.status(), max_body_size))
    }
}

/// The server's answer to a request whose body failed (`status`: 413, 408 or 400), logged and
/// counted.
fn body_failure_response(status: StatusCode, max_body_size: u64) -> Response<Body> {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::info!(limit = max_body_size, "request body too large: 413");
            stats::count(Limit::PayloadTooLarge);
        }
        StatusCode::REQUEST_TIMEOUT => {
            tracing::info!("request body too slow: 408");
            stats::count(Limit::RequestTimeout);
        }
        _ => {
            tracing::info!("request body broken or cut short: 400");
            stats::count(Limit::BadRequest);
        }
    }
    plain_response(status, true)
}

/// The answer in place of an app's 2xx to `CONNECT`: 501, logged. A 2xx to `CONNECT` opens
/// a tunnel (RFC 9110 §9.3.6: the connection becomes the tunnel after the head, which carries
/// no `Content-Length`), and the contract has no tunnel for the app to serve; hyper would drop
/// the connection without an answer. An app that refuses the method (405, 403) is answered as
/// it says. The app's response is dropped, its body closed.
fn no_tunnel(refused: Response<Body>) -> Response<Body> {
    tracing::info!(
        status = refused.status().as_u16(),
        "the app accepted a CONNECT, and this server opens no tunnels: 501"
    );
    drop(refused);
    plain_response(StatusCode::NOT_IMPLEMENTED, false)
}

/// Adds the `Server` header unless the app set one.
fn with_server(software: &'static str, mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .entry(header::SERVER)
        .or_insert_with(|| HeaderValue::from_static(software));
    response
}
