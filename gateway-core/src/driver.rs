//! The driver: the one piece of code that runs an app for a request and enforces the contract.
//!
//! Every server adapter and every middleware that plays server to an app runs it through
//! [`call`]. The driver calls the app at once, then, when its [`ResponseFuture`] is polled,
//! polls the app's body until the head is decided, and resolves to an
//! [`http::Response<ResponseBody>`]: the head, then the body frames. On the way it enforces
//! what the types of the contract cannot:
//!
//! - **When the head goes out.** At the first non-empty chunk of the body, at the first
//!   [`Writer::write`](crate::Writer::write), or at the end of the body, and not before: an app
//!   may call `start` inside its body's first poll. A body that yields data, or ends, before
//!   `start` is an error.
//! - **Bodies that must be empty.** A HEAD response carries no body, but keeps the
//!   `Content-Length` the app gave (or the length of the body the app produced, when it is
//!   known before the head goes out and not empty: an app that answers HEAD with no body says
//!   nothing of the length). 1xx, 204 and 304 responses carry no body, and 1xx and 204
//!   no `Content-Length`. Their bodies are dropped as soon as the head is decided.
//! - **Content-Length.** When the app gives none and the whole body is known before the head
//!   goes out (a full body, or a body that ended), the driver adds it. When the app gives one,
//!   a [`Writer::write`](crate::Writer::write) that would go past it fails; a longer body is
//!   cut there, the app's body is dropped, and
//!   [`ResponseBody::must_close`] says that the connection should not be reused; a shorter one
//!   ends in an [`ErrorKind::ShortBody`] error, so the server
//!   aborts it rather than leaving the client waiting.
//! - **Failures.** An app that fails or panics before anything was sent gets a 500 response
//!   (which carries the [`Error`] as an `Arc<Error>` extension); after the head, the
//!   [`ResponseBody`] yields the error and the server aborts the response. Every failure is
//!   logged to the request's error stream. A panic fails that request only.
//! - **close().** The app's body is dropped as soon as it is no longer needed: at its end, on
//!   failure, when the head decides there is no body, and when the server drops the response
//!   (the client went away). A panic in its drop is caught and logged like any other.
//!
//! ```
//! use gateway_core::{driver, Body, Environ, StartResponse};
//! use http::{HeaderMap, StatusCode};
//! use http_body_util::BodyExt;
//!
//! let app = |_: Environ, start: StartResponse| {
//!     let _ = start.start(StatusCode::OK, HeaderMap::new());
//!     "hello"
//! };
//! let response = gateway_core::block_on(driver::call(&app, Environ::new()));
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["content-length"], "5"); // added: the body was known
//! let body = gateway_core::block_on(response.into_body().collect()).unwrap().to_bytes();
//! assert_eq!(body, "hello");
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};

use crate::decimal::{decimal, small_decimal_str};
use crate::environ::parse_digits;
use crate::error::{Error, ErrorKind, Relayed};
use crate::errors::log_line;
use crate::start::{FailureHeaders, Shared, State};
use crate::{App, Body, Environ, SharedSink, StartResponse, is_hop_by_hop};

/// The body of the 500 response the driver makes when an app fails before its head.
pub const INTERNAL_ERROR_BODY: &str = "Internal Server Error\n";

/// Runs `app` for one request.
///
/// The app is called at once, on this thread (a server that runs blocking apps calls this on
/// a worker thread). Panics in the call are caught. The returned future decides the head; see
/// the [module documentation](self) for the rules it enforces.
pub fn call<A: App + ?Sized>(app: &A, mut environ: Environ) -> ResponseFuture {
    let is_head = environ.get("REQUEST_METHOD") == Some(b"HEAD");
    let errors = environ.errors().sink().clone();
    let shared = Shared::fresh();
    let start = StartResponse::new(shared.clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| app.call(environ, start)));
    let mut failure_headers = None;
    let (body, stage) = match outcome {
        Ok(body) => {
            let stage = decide_after_call(shared, &body, &mut failure_headers);
            (Some(body), stage)
        }
        Err(payload) => {
            failure_headers = close(&shared);
            (None, Stage::Failed(Box::new(Error::panic(&*payload))))
        }
    };
    ResponseFuture {
        stage: ManuallyDrop::new(stage),
        body: AppBody::new(body),
        is_head,
        errors,
        failure_headers,
    }
}

/// What the driver knows once the app's call returned: `write()` is refused from now on, and
/// when the head can no longer change (the body is in memory and cannot start the response,
/// or `write()` fixed the head), the stage says so. The head stays in the shared state until
/// the future is polled (nothing can change it any more), so the future stays small. When
/// nothing else holds the shared state (the app dropped its `StartResponse` or `Writer`, as
/// most do), no lock is taken, and for an in-memory body the state is not even touched. When
/// the app failed, the headers for the driver's 500 are taken into `failure_headers`.
#[inline]
fn decide_after_call(
    mut shared: Arc<Shared>,
    body: &Body,
    failure_headers: &mut Option<Box<FailureHeaders>>,
) -> Stage {
    let in_memory = body.in_memory_len().is_some();
    if in_memory && Arc::strong_count(&shared) == 1 {
        // Nothing else holds the state, and nothing can take it any more (the driver gives
        // out no other handle): no `write()` or restart can come, so there is nothing to mark
        // now. The head, or the error of a response never started, is taken at the poll.
        return Stage::Decided(shared);
    }
    let committed = match Arc::get_mut(&mut shared) {
        Some(unique) => {
            let state = unique.state_mut();
            state.writes_closed = true;
            if !(in_memory || state.committed) {
                return Stage::Open(shared);
            }
            if let Err(error) = commit_head(state, body_did(body)) {
                *failure_headers = state.take_failure_headers();
                state.reset();
                Shared::recycle_unique(shared);
                return Stage::Failed(Box::new(error));
            }
            Ok(())
        }
        None => {
            let mut state = shared.lock();
            state.writes_closed = true;
            if !state.committed {
                drop(state);
                return Stage::Open(shared);
            }
            let committed = commit_head(&mut state, body_did(body));
            if committed.is_err() {
                *failure_headers = state.take_failure_headers();
            }
            committed
        }
    };
    match committed {
        Ok(()) => Stage::Decided(shared),
        Err(error) => Stage::Failed(Box::new(error)),
    }
}

/// What an in-memory body does first, for the error when the app never started the response.
fn body_did(body: &Body) -> &'static str {
    if body.in_memory_len() == Some(0) {
        "ended"
    } else {
        "yielded data"
    }
}

/// Fixes the head in the shared state (a `Writer` can no longer restart the response), or
/// returns the error when the app never started the response. `what` names what the body did.
#[inline]
fn commit_head(state: &mut State, what: &str) -> Result<(), Error> {
    state.committed = true;
    if state.head.is_some() {
        return Ok(());
    }
    Err(not_started(state, what))
}

/// The error of a head the app never started; what it wrote is dropped.
#[cold]
fn not_started(state: &mut State, what: &str) -> Error {
    state.written.clear();
    match &state.refused {
        Some(refused) => Error::new(ErrorKind::StartRefused, format!("start refused: {refused}")),
        None => Error::new(
            ErrorKind::NotStarted,
            format!("the app's body {what} before the response was started"),
        ),
    }
}

/// Fixes the head and takes it from the shared state: the status, headers and written data,
/// or the error when the app never started the response. `what` names what the body did. The
/// headers for the driver's 500 go to `failure_headers` (the response may still fail).
// Inlined, so that the head goes to the response without a copy of the whole.
#[inline(always)]
fn take_head(
    state: &mut State,
    what: &str,
    failure_headers: &mut Option<Box<FailureHeaders>>,
) -> Result<Head, Error> {
    *failure_headers = state.take_failure_headers();
    commit_head(state, what)?;
    let Some((status, headers)) = state.head.take() else {
        unreachable!("a committed head is there")
    };
    Ok(Head {
        status,
        headers,
        written: Queued::take_written(&mut state.written),
    })
}

/// Drops the app's body, which is its close(), catching a panic there: like a panic anywhere
/// else in the app it fails this request only, and is logged to the request's error stream
/// (the response may be complete by then, so nothing else is changed). Every drop of an app's
/// body by the driver goes through here.
// Inlined: most calls find no body left (it ended, or went into the response whole), and
// then cost one test; the catch_unwind is only set up for a body to drop.
#[inline]
fn close_body(body: Option<Body>, errors: &SharedSink) {
    if let Some(body) = body {
        drop_app_body(body, errors);
    }
}

/// [`close_body`] for a body that is there.
#[inline(never)]
fn drop_app_body(body: Body, errors: &SharedSink) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(body))) {
        let error = Error::panic(&*payload);
        log_line(&**errors, &format!("gateway: {error} (closing its body)"));
    }
}

/// Marks the response as decided in the shared state, when the app failed: a `Writer` the app
/// kept can neither write nor restart any more. Returns the headers for the driver's 500.
fn close(shared: &Shared) -> Option<Box<FailureHeaders>> {
    let mut state = shared.lock();
    state.writes_closed = true;
    state.committed = true;
    state.written.clear();
    state.take_failure_headers()
}

/// The app's body while the driver holds it, `None` once closed. Its holders (the
/// [`ResponseFuture`], the [`ResponseBody`]) close it in their `Drop` through [`close_body`],
/// which catches a panic there, so the field itself never needs dropping: `ManuallyDrop`
/// spares the drop glue its test.
type AppBody = ManuallyDrop<Option<Body>>;

/// The head as the app left it, with what `write()` pushed.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    written: Queued,
}

/// The data of a response already in memory, in order: what `write()` pushed, then the first
/// chunk of the app's body when it was taken while the head was decided. Most responses have
/// one such chunk (a body in memory) or none: then there is no queue to allocate or drop, and
/// the whole is no larger than a `VecDeque` and its tag, which keeps the response small
/// enough to be moved cheaply.
#[derive(Default)]
enum Queued {
    #[default]
    Empty,
    One(Bytes),
    Many(VecDeque<Bytes>),
}

impl Queued {
    /// Takes what `write()` pushed from the shared state.
    fn take_written(written: &mut VecDeque<Bytes>) -> Self {
        if written.is_empty() {
            Queued::Empty
        } else {
            Queued::Many(std::mem::take(written))
        }
    }

    /// Adds `data` (not empty) at the end.
    fn push_back(&mut self, data: Bytes) {
        match self {
            Queued::Empty => *self = Queued::One(data),
            Queued::Many(queue) => queue.push_back(data),
            Queued::One(_) => {
                let Queued::One(one) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                *self = Queued::Many(VecDeque::from([one, data]));
            }
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<Bytes> {
        match self {
            Queued::Empty => None,
            Queued::One(_) => match std::mem::take(self) {
                Queued::One(data) => Some(data),
                _ => unreachable!("matched above"),
            },
            Queued::Many(queue) => queue.pop_front(),
        }
    }

    /// How many bytes are queued.
    fn byte_len(&self) -> u64 {
        match self {
            Queued::Empty => 0,
            Queued::One(data) => data.len() as u64,
            Queued::Many(queue) => queue.iter().map(|data| data.len() as u64).sum(),
        }
    }

    /// How many chunks are queued.
    fn len(&self) -> usize {
        match self {
            Queued::Empty => 0,
            Queued::One(_) => 1,
            Queued::Many(queue) => queue.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        *self = Queued::Empty;
    }
}

/// Where a [`ResponseFuture`] stands. Every variant is one pointer: the future is moved
/// around whole, so it is kept small.
enum Stage {
    /// The app may still start the response (inside its body): poll the body.
    Open(Arc<Shared>),
    /// The head can no longer change since the call returned; it waits in the shared state.
    Decided(Arc<Shared>),
    /// The app failed before its head.
    Failed(Box<Error>),
    /// The response was produced.
    Done,
}

/// The response of an app being run: resolves to the head and the [`ResponseBody`].
///
/// Made by [`call`]. It polls the app's body until the head is decided, so it is where an
/// async app's waiting happens before the head goes out.
#[must_use = "a response does nothing unless polled"]
pub struct ResponseFuture {
    /// `ManuallyDrop`: most futures are dropped done, with nothing in their stage; the `Drop`
    /// drops what is left, so the drop glue is spared its call.
    stage: ManuallyDrop<Stage>,
    body: AppBody,
    is_head: bool,
    errors: SharedSink,
    /// The headers middleware asked for on the driver's 500, once taken from the shared state.
    failure_headers: Option<Box<FailureHeaders>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("body", &*self.body)
            .field("is_head", &self.is_head)
            .field("done", &matches!(*self.stage, Stage::Done))
            .finish_non_exhaustive()
    }
}

impl Drop for ResponseFuture {
    /// Closes the app's body when the server gives up on the response before its head (the
    /// client went away).
    fn drop(&mut self) {
        close_body(self.body.take(), &self.errors);
        match std::mem::replace(&mut *self.stage, Stage::Done) {
            Stage::Done => {}
            // Never polled: the state goes back to the thread's spare all the same.
            Stage::Decided(shared) => Shared::recycle(shared),
            stage => drop(stage),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Response<ResponseBody>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ResponseBody>> {
        let this = &mut *self;
        let shared = match std::mem::replace(&mut *this.stage, Stage::Done) {
            Stage::Open(shared) => shared,
            Stage::Decided(mut shared) => {
                // What the body does first, for the error of a response never started (only
                // an in-memory body can leave it to here).
                let what = this.body.as_ref().map_or("ended", body_did);
                let Some(unique) = Arc::get_mut(&mut shared) else {
                    let taken = take_head(&mut shared.lock(), what, &mut this.failure_headers);
                    Shared::recycle(shared);
                    return Poll::Ready(match taken {
                        Ok(head) => this.respond(head, None, None),
                        Err(error) => this.fail(error),
                    });
                };
                // Each arm takes its own head and returns its own response: a head or a
                // response shared by the arms is copied again.
                let state = unique.state_mut();
                match take_head(state, what, &mut this.failure_headers) {
                    Ok(head) => {
                        state.reset();
                        Shared::recycle_unique(shared);
                        return Poll::Ready(this.respond(head, None, None));
                    }
                    Err(error) => {
                        state.reset();
                        Shared::recycle_unique(shared);
                        return Poll::Ready(this.fail(error));
                    }
                }
            }
            Stage::Failed(error) => return Poll::Ready(this.fail(*error)),
            Stage::Done => panic!("ResponseFuture polled after it completed"),
        };
        loop {
            let Some(body) = this.body.as_mut() else {
                unreachable!("an open stage has the app's body")
            };
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *body).poll_frame(cx)));
            let (first, what) = match polled {
                Err(payload) => {
                    this.failure_headers = close(&shared);
                    return Poll::Ready(this.fail(Error::panic(&*payload)));
                }
                Ok(Poll::Pending) => {
                    *this.stage = Stage::Open(shared);
                    return Poll::Pending;
                }
                Ok(Poll::Ready(None)) => {
                    close_body(this.body.take(), &this.errors);
                    (None, "ended")
                }
                Ok(Poll::Ready(Some(Err(error)))) => {
                    this.failure_headers = close(&shared);
                    return Poll::Ready(match error.downcast::<Relayed>() {
                        Ok(relayed) => {
                            let Relayed(error, relayed_headers) = *relayed;
                            this.failed(error, relayed_headers)
                        }
                        Err(error) => this.fail(Error::app(error)),
                    });
                }
                Ok(Poll::Ready(Some(Ok(frame)))) => {
                    if frame.data_ref().is_some_and(Bytes::is_empty) {
                        continue;
                    }
                    (Some(frame), "yielded data")
                }
            };
            let taken = take_head(&mut shared.lock(), what, &mut this.failure_headers);
            Shared::recycle(shared);
            return Poll::Ready(match taken {
                Ok(head) => match first.map(Frame::into_data) {
                    None => this.respond(head, None, None),
                    Some(Ok(data)) => this.respond(head, Some(data), None),
                    Some(Err(frame)) => this.respond(head, None, frame.into_trailers().ok()),
                },
                Err(error) => this.fail(error),
            });
        }
    }
}

impl ResponseFuture {
    /// Builds the response from the decided head. `first` is the first chunk of the body, or
    /// `trailers` its first frame, already taken from it; `self.body` is `None` when the body
    /// has ended.
    fn respond(
        &mut self,
        head: Head,
        mut first: Option<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> Response<ResponseBody> {
        let Head {
            status,
            mut headers,
            written,
        } = head;
        if let Some(len) = self.body.as_ref().and_then(Body::in_memory_len)
            && (len == 0 || (first.is_none() && trailers.is_none()))
        {
            // The rest of the body is in memory: it gives up its data now (no later poll of
            // it can fail, wait or start the response), and it is closed.
            let data = self.body.take().map(Body::into_full_bytes);
            if len > 0 {
                first = data;
            }
        } else if self
            .body
            .as_ref()
            .is_some_and(http_body::Body::is_end_stream)
        {
            // The body has nothing left: close it now.
            close_body(self.body.take(), &self.errors);
        }
        let mut queue = written;
        if let Some(first) = first {
            queue.push_back(first);
        }
        let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
        // One lookup of Content-Length: read what the app declared, or add what is known.
        let remaining = match headers.entry(CONTENT_LENGTH) {
            Entry::Occupied(entry) => {
                let declared = match declared_length(entry.iter()) {
                    Ok(declared) => declared,
                    Err(error) => return self.fail(error),
                };
                if no_length {
                    entry.remove_entry_mult();
                    None
                } else {
                    declared
                }
            }
            Entry::Vacant(entry) => {
                let rest = match &*self.body {
                    None => Some(0),
                    Some(body) => body.in_memory_len(),
                };
                match rest {
                    Some(rest) if !no_length && status != StatusCode::NOT_MODIFIED => {
                        let total = queue.byte_len() + rest;
                        if total == 0 && self.is_head {
                            // An app that answers HEAD with an empty body says nothing of the
                            // length a GET would get: no `Content-Length: 0` in its name.
                            None
                        } else {
                            entry.insert(length_value(total));
                            Some(total)
                        }
                    }
                    _ => None,
                }
            }
        };

        let mut response = Response::new(());
        *response.status_mut() = status;
        // The map `Response::new` made is empty and holds no memory (`HeaderMap::new` does
        // not allocate): forgetting it saves the drop of a map with nothing in it.
        std::mem::forget(std::mem::replace(response.headers_mut(), headers));
        if self.is_head || !status_has_body(status) {
            close_body(self.body.take(), &self.errors);
            return response.map(|()| ResponseBody::empty(self.errors.clone()));
        }
        let trailers = trailers.map(Box::new);
        let body = AppBody::new(self.body.take());
        let must_close = match (remaining, &*body) {
            // The whole body is known now: when it is longer than declared, the connection
            // is marked before the head goes out, so a server can say so in it.
            (Some(declared), None) => queue.byte_len() > declared,
            _ => false,
        };
        // Built in one expression, straight into the response (a body built apart, then
        // moved in, is copied whole).
        response.map(|()| ResponseBody {
            queue: ManuallyDrop::new(queue),
            trailers: ManuallyDrop::new(trailers),
            body,
            remaining,
            sent: 0,
            must_close,
            done: false,
            errors: self.errors.clone(),
        })
    }

    /// Turns a failure before the head into a 500 response, and logs it.
    fn fail(&mut self, error: Error) -> Response<ResponseBody> {
        log_line(&*self.errors, &format!("gateway: {error}"));
        self.failed(Arc::new(error), None)
    }

    /// The 500 response of a failure before the head (logged where it happened), with the
    /// headers middleware asked for: those `relayed` from a driver inside, then this driver's.
    fn failed(
        &mut self,
        error: Arc<Error>,
        relayed: Option<Box<FailureHeaders>>,
    ) -> Response<ResponseBody> {
        close_body(self.body.take(), &self.errors);

        let mut body = ResponseBody::empty(self.errors.clone());
        if !self.is_head {
            *body.queue = Queued::One(Bytes::from_static(INTERNAL_ERROR_BODY.as_bytes()));
            body.remaining = Some(INTERNAL_ERROR_BODY.len() as u64);
        }
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            CONTENT_LENGTH,
            length_value(INTERNAL_ERROR_BODY.len() as u64),
        );
        for added in [relayed, self.failure_headers.take()].into_iter().flatten() {
            for (name, value) in *added {
                add_failure_header(headers, name, value);
            }
        }
        response.extensions_mut().insert(error);
        response
    }
}

/// Adds a header middleware asked for on a failure's answer, unless the answer has it already
/// or it is one that `start` refuses (`Status`, hop-by-hop).
fn add_failure_header(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    if name == "status" || is_hop_by_hop(&name) {
        return;
    }
    // Not `entry`: a second use of it here makes the compiler outline the one in `respond`.
    if !headers.contains_key(&name) {
        headers.insert(name, value);
    }
}

/// The headers of the driver's 500 beyond its own `Content-Type` and `Content-Length`: those
/// middleware asked for with [`StartResponse::with_failure_header`] (and any a middleware that
/// plays server added to it). A server or middleware that answers in place of the 500 copies
/// them with [`keep_failure_headers`].
pub fn failure_headers<B>(
    response: &Response<B>,
) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    response
        .headers()
        .iter()
        .filter(|(name, _)| **name != CONTENT_TYPE && **name != CONTENT_LENGTH)
}

/// Copies the [`failure_headers`] of the driver's 500 `failed` into `headers`, those of the
/// response that replaces it, where they have no such header and `start` would take it.
///
/// ```
/// use gateway_core::{driver, Body, Environ, StartResponse};
/// use http::header::{HeaderName, HeaderValue};
///
/// let app = |_: Environ, start: StartResponse| {
///     let _start = start.with_failure_header(
///         HeaderName::from_static("x-request-id"),
///         HeaderValue::from_static("7"),
///     );
///     Body::error("the request body was too large")
/// };
/// let failed = gateway_core::block_on(driver::call(&app, Environ::new()));
/// let mut answer = http::HeaderMap::new();
/// driver::keep_failure_headers(&failed, &mut answer);
/// assert_eq!(answer["x-request-id"], "7");
/// ```
pub fn keep_failure_headers<B>(failed: &Response<B>, headers: &mut HeaderMap) {
    for (name, value) in failure_headers(failed) {
        add_failure_header(headers, name.clone(), value.clone());
    }
}

/// A Content-Length header value; small ones are shared static bytes.
// Inlined for the small ones (the value is built in place); larger ones are made apart.
#[inline]
fn length_value(n: u64) -> HeaderValue {
    match small_decimal_str(n) {
        Some(text) => HeaderValue::from_static(text),
        None => large_length_value(n),
    }
}

/// [`length_value`] of 10,000 and more.
#[inline(never)]
fn large_length_value(n: u64) -> HeaderValue {
    HeaderValue::from_maybe_shared(decimal(n)).unwrap_or_else(|_| HeaderValue::from(n))
}

/// Why the driver answered 500, when it did: the app failed (or broke the contract) before its
/// head. Middleware that plays server uses it to tell the driver's 500 from an app's own.
///
/// ```
/// use gateway_core::{driver, Body, Environ, StartResponse};
///
/// let app = |_: Environ, _: StartResponse| Body::error("no database");
/// let response = gateway_core::block_on(driver::call(&app, Environ::new()));
/// assert!(driver::failure(&response).unwrap().is_app());
/// ```
pub fn failure<B>(response: &Response<B>) -> Option<&Error> {
    response.extensions().get::<Arc<Error>>().map(|e| &**e)
}

/// The status a server answers in place of the driver's 500 for the app's `failure` (a
/// response's [`failure`]): the request body's, when it failed under the server's limits
/// (`outcome`, the server's [`BodyOutcome`](crate::BodyOutcome)), else 400 when the body was
/// cut short of its length ([`Input::is_cut_short`](crate::Input::is_cut_short): the client's
/// doing); `None` when the 500 stands. The network servers answer so, and a middleware that
/// logs the status the client gets uses it to agree with them.
///
/// ```
/// use gateway_core::{driver, Body, BodyFailure, BodyOutcome, Environ, StartResponse};
///
/// let app = |_: Environ, _: StartResponse| Body::error("the body read failed");
/// let response = gateway_core::block_on(driver::call(&app, Environ::new()));
/// let failure = driver::failure(&response).unwrap();
/// assert_eq!(driver::failure_status(failure, None), None);
/// let outcome = BodyOutcome::new();
/// outcome.note(BodyFailure::TooSlow);
/// let status = driver::failure_status(failure, Some(&outcome));
/// assert_eq!(status, Some(http::StatusCode::REQUEST_TIMEOUT));
/// ```
pub fn failure_status(failure: &Error, outcome: Option<&crate::BodyOutcome>) -> Option<StatusCode> {
    if let Some(failed) = outcome.and_then(crate::BodyOutcome::failure) {
        return Some(failed.status());
    }
    crate::Input::is_cut_short(failure).then_some(StatusCode::BAD_REQUEST)
}

/// Whether a response with this status may carry a body: not 1xx, 204 or 304.
pub fn status_has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// The Content-Length the headers declare: `None` when absent, an error when it is not a
/// number or when repeated with different values.
pub(crate) fn declared_length<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<Option<u64>, Error> {
    let mut declared = None;
    for value in values {
        let parsed = parse_digits(value.as_bytes());
        match (parsed, declared) {
            (Some(n), None) => declared = Some(n),
            (Some(n), Some(m)) if n == m => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidContentLength,
                    format!("invalid Content-Length {value:?} in the response"),
                ));
            }
        }
    }
    Ok(declared)
}

/// The body of a response produced by the [driver](self): what `write()` pushed, then the
/// app's body, with the contract enforced.
///
/// It yields data frames (never empty ones) and trailers, and an [`Error`] when the app fails
/// after the head went out or its body falls short of its `Content-Length`: a server then aborts
/// the response (closes the connection, ends the FastCGI request with an error, ...). Dropping
/// it drops the app's body.
pub struct ResponseBody {
    /// What `write()` pushed, then the first chunk of the app's body when it was taken while
    /// the head was decided. `ManuallyDrop`: most bodies are dropped with nothing queued (it
    /// was sent); the `Drop` drops what is left, so the drop glue is spared its call.
    queue: ManuallyDrop<Queued>,
    /// The trailers, when they were the body's first frame. `ManuallyDrop` as `queue`.
    trailers: ManuallyDrop<Option<Box<HeaderMap>>>,
    body: AppBody,
    /// Bytes still allowed by the Content-Length, if there is one.
    remaining: Option<u64>,
    sent: u64,
    must_close: bool,
    done: bool,
    errors: SharedSink,
}

impl ResponseBody {
    fn empty(errors: SharedSink) -> Self {
        ResponseBody {
            queue: ManuallyDrop::new(Queued::Empty),
            trailers: ManuallyDrop::new(None),
            body: AppBody::new(None),
            remaining: None,
            sent: 0,
            must_close: false,
            done: false,
            errors,
        }
    }

    /// Whether the connection must not be reused after this response: the app's body is
    /// longer than its `Content-Length` and is cut there. Known with the head when the whole
    /// body was in memory then (a server can still answer `Connection: close`), else once the
    /// body is cut.
    pub fn must_close(&self) -> bool {
        self.must_close
    }

    /// Whether everything left of the body is in memory (the app's body ended, or there is
    /// none): polling it then never waits nor blocks, so a server may send it from any thread.
    pub fn is_buffered(&self) -> bool {
        self.body
            .as_ref()
            .is_none_or(|body| body.in_memory_len().is_some())
    }

    /// The whole body as one chunk, when all it has left is at most one chunk of data in
    /// memory, which its Content-Length (if any) allows exactly, and no trailers: most bodies of
    /// apps that return their output whole. A server then sends the chunk as it is, with no
    /// further polling, and may let go of what it held for the app (its request slot, its
    /// thread). Any other body comes back unchanged, to be polled frame by frame.
    ///
    /// ```
    /// use gateway_core::{driver, Body, Environ, StartResponse};
    /// use http::{HeaderMap, StatusCode};
    ///
    /// let whole = |_: Environ, start: StartResponse| {
    ///     let _ = start.start(StatusCode::OK, HeaderMap::new());
    ///     "hello"
    /// };
    /// let response = gateway_core::block_on(driver::call(&whole, Environ::new()));
    /// assert_eq!(response.into_body().try_into_bytes().unwrap(), "hello");
    ///
    /// let chunked = |_: Environ, start: StartResponse| {
    ///     let _ = start.start(StatusCode::OK, HeaderMap::new());
    ///     Body::from_chunks(["a", "b"])
    /// };
    /// let response = gateway_core::block_on(driver::call(&chunked, Environ::new()));
    /// assert!(response.into_body().try_into_bytes().is_err());
    /// ```
    // The body comes back by value: boxing it would cost the allocation this saves.
    #[allow(clippy::result_large_err)]
    pub fn try_into_bytes(mut self) -> Result<Bytes, Self> {
        if self.done {
            return Ok(Bytes::new());
        }
        let rest = match &*self.body {
            None => 0,
            Some(body) => match body.in_memory_len() {
                Some(len) => len,
                None => return Err(self),
            },
        };
        // Queued chunks are never empty.
        let chunks = self.queue.len() + usize::from(rest > 0);
        let len = self.queue.byte_len() + rest;
        if chunks > 1 || self.trailers.is_some() || self.remaining.is_some_and(|n| n != len) {
            return Err(self);
        }
        Ok(match (self.queue.pop_front(), self.body.take()) {
            (Some(data), _) => data,
            (None, Some(body)) => body.into_full_bytes(),
            (None, None) => Bytes::new(),
        })
    }

    /// How many body bytes were yielded so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Applies the Content-Length to a chunk: cuts it if it goes past the end.
    #[inline]
    fn limit(&mut self, mut data: Bytes) -> Option<Bytes> {
        if let Some(remaining) = self.remaining {
            if data.len() as u64 > remaining {
                self.cut(&mut data, remaining);
            }
            self.remaining = Some(remaining - data.len() as u64);
        }
        self.sent += data.len() as u64;
        (!data.is_empty()).then_some(data)
    }

    /// Cuts `data`, which goes past the Content-Length, to the `remaining` bytes it allows, and
    /// drops the rest of the body.
    #[cold]
    fn cut(&mut self, data: &mut Bytes, remaining: u64) {
        let declared = self.sent + remaining;
        log_line(
            &*self.errors,
            &format!(
                "gateway: response body longer than its Content-Length ({declared}); cut there"
            ),
        );
        data.truncate(remaining as usize);
        self.queue.clear();
        close_body(self.body.take(), &self.errors);
        self.must_close = true;
    }

    /// The end of the body: an error if it fell short of its Content-Length.
    #[inline]
    fn finish(&mut self) -> Option<Result<Frame<Bytes>, Error>> {
        self.done = true;
        close_body(self.body.take(), &self.errors);
        match self.remaining {
            Some(missing) if missing > 0 => Some(Err(self.short(missing))),
            _ => None,
        }
    }

    /// The error of a body `missing` bytes short of its Content-Length, logged.
    #[cold]
    fn short(&self, missing: u64) -> Error {
        let error = Error::new(
            ErrorKind::ShortBody,
            format!(
                "response body ended after {} of the {} bytes of its Content-Length",
                self.sent,
                self.sent + missing
            ),
        );
        log_line(&*self.errors, &format!("gateway: {error}"));
        error
    }

    /// The rest of [`poll_frame`](http_body::Body::poll_frame): trailers, and polling the
    /// app's body.
    #[inline(never)]
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            if let Some(data) = self.queue.pop_front() {
                match self.limit(data) {
                    Some(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    None => continue,
                }
            }
            if let Some(trailers) = self.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(self.finish());
            };
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *body).poll_frame(cx)));
            match polled {
                Err(payload) => return Poll::Ready(self.abort(Error::panic(&*payload))),
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(None)) => return Poll::Ready(self.finish()),
                Ok(Poll::Ready(Some(Err(error)))) => {
                    return Poll::Ready(self.abort(Error::app(error)));
                }
                Ok(Poll::Ready(Some(Ok(frame)))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(data) = self.limit(data) {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        if self.body.is_none() {
                            return Poll::Ready(self.finish());
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn abort(&mut self, error: Error) -> Option<Result<Frame<Bytes>, Error>> {
        log_line(
            &*self.errors,
            &format!("gateway: {error} (after the head was sent)"),
        );
        self.done = true;
        close_body(self.body.take(), &self.errors);
        self.queue.clear();
        Some(Err(error))
    }
}

impl Drop for ResponseBody {
    /// Closes the app's body when the server drops the response before its end.
    fn drop(&mut self) {
        close_body(self.body.take(), &self.errors);
        if !matches!(*self.queue, Queued::Empty) {
            drop(std::mem::take(&mut *self.queue));
        }
        if self.trailers.is_some() {
            drop(self.trailers.take());
        }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("queued", &self.queue.len())
            .field("body", &*self.body)
            .field("remaining", &self.remaining)
            .field("sent", &self.sent)
            .field("must_close", &self.must_close)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    // Inlined: most polls take a chunk already in memory, or find the end; the rest (trailers,
    // polling the app's body) is in `poll_more`.
    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(data) = this.queue.pop_front() {
            if let Some(data) = this.limit(data) {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        } else if this.trailers.is_none() && this.body.is_none() {
            return Poll::Ready(this.finish());
        }
        this.poll_more(cx)
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        if !self.queue.is_empty() || self.trailers.is_some() {
            return false;
        }
        match self.remaining {
            // Everything declared was sent; whatever the app has left would be cut.
            Some(0) => true,
            // Not yet, or the next poll reports a short body.
            Some(_) => false,
            None => self.body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            return SizeHint::with_exact(0);
        }
        if let Some(remaining) = self.remaining {
            return SizeHint::with_exact(remaining);
        }
        let queued = self.queue.byte_len();
        match &*self.body {
            None => SizeHint::with_exact(queued),
            Some(body) => {
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(queued + inner.lower());
                if let Some(upper) = inner.upper() {
                    hint.set_upper(queued + upper);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;
    use http::Method;

    /// The response body of an app that starts with `headers` (and `write`s `written`), then
    /// returns `body`, for a request of `method`.
    fn body_of(
        method: Method,
        headers: &[(&'static str, &'static str)],
        written: &'static [&'static str],
        body: fn() -> Body,
    ) -> ResponseBody {
        let app = move |_: Environ, start: StartResponse| {
            let map = headers
                .iter()
                .map(|&(n, v)| (n.parse().unwrap(), HeaderValue::from_static(v)))
                .collect();
            let mut writer = start.start(StatusCode::OK, map).unwrap();
            for data in written {
                writer.write(*data).unwrap();
            }
            body()
        };
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_string());
        block_on(call(&app, environ)).into_body()
    }

    #[test]
    fn whole_bodies_come_out_as_one_chunk_and_others_stay_bodies() {
        let whole: [(&str, ResponseBody, &[u8]); 6] = [
            (
                "full",
                body_of(Method::GET, &[], &[], || "hello".into()),
                b"hello",
            ),
            ("empty", body_of(Method::GET, &[], &[], Body::empty), b""),
            (
                "full, its length declared",
                body_of(Method::GET, &[("content-length", "5")], &[], || {
                    "hello".into()
                }),
                b"hello",
            ),
            (
                "one write, then nothing",
                body_of(Method::GET, &[], &["hello"], Body::empty),
                b"hello",
            ),
            (
                "HEAD",
                body_of(Method::HEAD, &[("content-length", "5")], &[], || {
                    "hello".into()
                }),
                b"",
            ),
            (
                "lazy, ended before the head",
                body_of(Method::GET, &[], &[], || {
                    Body::from_future(async { Ok(Body::from("hello")) })
                }),
                b"hello",
            ),
        ];
        for (case, body, expected) in whole {
            assert_eq!(body.try_into_bytes().expect(case), expected, "{case}");
        }
        let streamed: [(&str, ResponseBody); 5] = [
            (
                "chunks",
                body_of(Method::GET, &[], &[], || Body::from_chunks(["a", "b"])),
            ),
            (
                "a write, then a body",
                body_of(Method::GET, &[], &["a"], || "b".into()),
            ),
            (
                "two writes",
                body_of(Method::GET, &[], &["a", "b"], Body::empty),
            ),
            (
                "shorter than declared",
                body_of(Method::GET, &[("content-length", "9")], &[], || {
                    "hello".into()
                }),
            ),
            (
                "longer than declared",
                body_of(Method::GET, &[("content-length", "2")], &[], || {
                    "hello".into()
                }),
            ),
        ];
        for (case, body) in streamed {
            let body = match body.try_into_bytes() {
                Ok(data) => panic!("{case}: taken whole as {data:?}"),
                Err(body) => body,
            };
            // Given back untouched: it still yields what it yields, errors included.
            let polled = block_on(http_body_util::BodyExt::collect(body));
            match case {
                "shorter than declared" => assert!(polled.is_err(), "{case}"),
                "longer than declared" => assert_eq!(polled.unwrap().to_bytes(), "he"),
                _ => assert_eq!(polled.unwrap().to_bytes(), "ab", "{case}"),
            }
        }
    }

    #[test]
    fn a_response_moves_in_at_most_256_bytes() {
        // A move of up to 256 bytes is an inline copy or the short path of `memcpy`; servers
        // move the response and its body several times.
        assert!(size_of::<Response<ResponseBody>>() <= 256);
    }

    #[test]
    fn length_values_are_the_decimal_numbers() {
        for n in [
            0u64,
            1,
            9,
            10,
            42,
            99,
            100,
            999,
            1000,
            9999,
            10_000,
            123_456,
            u64::MAX,
        ] {
            assert_eq!(length_value(n), n.to_string().as_str(), "{n}");
        }
    }
}
