//! The request body (`wsgi.input`): [`Input`], a stream with a blocking `Read`/`BufRead` view.

use std::fmt;
use std::io::{self, BufRead, Read};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use crate::{BoxError, block_on};

/// How a request body failed under its server's limits, and so how the server answers a
/// request whose app failed for it before its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyFailure {
    /// Longer than the server's largest body: 413.
    TooLarge,
    /// No byte within the server's body read timeout while the app waited: 408.
    TooSlow,
    /// Broken by the client or its front end (cut short, a malformed chunk, the client gone):
    /// 400.
    Broken,
}

impl BodyFailure {
    /// The status the server answers.
    pub fn status(self) -> http::StatusCode {
        match self {
            BodyFailure::TooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            BodyFailure::TooSlow => http::StatusCode::REQUEST_TIMEOUT,
            BodyFailure::Broken => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Where a server notes how the request body failed, shared with the layers between it and
/// the app through the environ's extensions: a middleware that runs the app itself (an access
/// log) learns there which status the server answers in place of the driver's 500 (see
/// [`driver::failure_status`](crate::driver::failure_status)).
///
/// ```
/// use gateway_core::{BodyFailure, BodyOutcome};
///
/// let outcome = BodyOutcome::new();
/// outcome.note(BodyFailure::Broken);
/// outcome.note(BodyFailure::TooSlow); // a limit replaces a break
/// outcome.note(BodyFailure::Broken); // and a break does not replace a limit
/// assert_eq!(outcome.failure(), Some(BodyFailure::TooSlow));
/// ```
#[derive(Debug, Clone, Default)]
pub struct BodyOutcome(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl BodyOutcome {
    /// Nothing failed yet.
    pub fn new() -> Self {
        BodyOutcome::default()
    }

    /// Notes a failure: a limit (`TooLarge`, `TooSlow`) replaces what was noted, a break only
    /// fills an empty note (a body read past a limit fails again on the next read).
    pub fn note(&self, failure: BodyFailure) {
        use std::sync::atomic::Ordering::Relaxed;
        let code = match failure {
            BodyFailure::TooLarge => 1,
            BodyFailure::TooSlow => 2,
            BodyFailure::Broken => 3,
        };
        match failure {
            BodyFailure::Broken => {
                let _ = self.0.compare_exchange(0, code, Relaxed, Relaxed);
            }
            _ => self.0.store(code, Relaxed),
        }
    }

    /// What was noted.
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Some(BodyFailure::TooLarge),
            2 => Some(BodyFailure::TooSlow),
            3 => Some(BodyFailure::Broken),
            _ => None,
        }
    }
}

/// The size of the reads [`Input`] makes from a blocking reader (CGI's stdin).
pub const READ_CHUNK_SIZE: usize = 16 * 1024;

enum Source {
    Empty,
    Full(Bytes),
    Body(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>),
    Reader(Box<dyn Read + Send>),
    /// Reading failed: every later read fails the same way (kind, message, and whether the
    /// body was cut short, for [`Input::is_cut_short`]).
    Failed(io::ErrorKind, Box<str>, bool),
}

/// The request body: `wsgi.input`.
///
/// It is a stream ([`Input::poll_chunk`], [`Input::chunk`], and [`http_body::Body`]) for async
/// apps, and a blocking [`Read`] + [`BufRead`] for the rest: `read(n)`, `read_to_end`,
/// `read_line` and [`Input::read_line_limited`] (WSGI's `readline(size)`).
///
/// The server bounds it: with a limit (the request's CONTENT_LENGTH) the input ends there, as
/// if the client had sent nothing more, and never reads past the request; without one it ends
/// where the transport says the body ends (a chunked or HTTP/2 body, CGI's stdin at EOF). Either
/// way it ends at the true end of the body, so servers set `input_terminated`. A body that stops
/// short of its CONTENT_LENGTH (the client went away), whether its source ends or fails as a
/// peer gone does (reset, aborted, or an error of no specific kind), is an error of kind
/// [`io::ErrorKind::UnexpectedEof`] that says how many bytes came, never a silent short read;
/// other failures (a server's timeout, `TimedOut`) keep their kind. Without a limit, a source's
/// error keeps the [`io::ErrorKind`] found in its chain of sources (hyper's error for a chunked
/// body cut short is caused by an `UnexpectedEof`), or is [`io::ErrorKind::Other`]. A read that
/// failed fails again each time it is retried, with the same kind and message, and is cut short
/// ([`Input::is_cut_short`]) if the first was.
///
/// The blocking view waits with [`block_on`]: use it on a worker thread, not on the thread of
/// an async runtime's event loop. On a thread marked as an event loop's
/// ([`mark_event_loop_thread`](crate::mark_event_loop_thread)), a read that would wait fails
/// with [`io::ErrorKind::WouldBlock`] instead (and may be retried: the input is not failed).
///
/// ```
/// use std::io::{BufRead, Read};
/// use gateway_core::Input;
///
/// let mut input = Input::from_bytes("line one\nline two\nrest").with_limit(18);
/// let mut line = String::new();
/// input.read_line(&mut line).unwrap();
/// assert_eq!(line, "line one\n");
/// let mut rest = Vec::new();
/// input.read_to_end(&mut rest).unwrap();
/// assert_eq!(rest, b"line two\n"); // the limit cut off "rest"
/// ```
pub struct Input {
    source: Source,
    /// Bytes still allowed before the limit, if there is one.
    remaining: Option<u64>,
    /// How many bytes were delivered so far (for the truncation message).
    delivered: u64,
    /// Received but not yet consumed.
    buf: Bytes,
    done: bool,
}

impl Input {
    /// An input with no bytes.
    pub const fn empty() -> Self {
        Input {
            source: Source::Empty,
            remaining: None,
            delivered: 0,
            buf: Bytes::new(),
            done: true,
        }
    }

    /// An input of the given bytes.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Input::with_source(Source::Full(data))
    }

    /// An input read from an [`http_body::Body`] (hyper's incoming body, a channel, ...).
    /// Frames other than data (trailers) are skipped.
    pub fn from_body<B>(body: B) -> Self
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        Input::with_source(Source::Body(Box::pin(DataBody { inner: body })))
    }

    /// An input read from a blocking reader (CGI's stdin), [`READ_CHUNK_SIZE`] bytes at a time.
    /// Polling it as a stream blocks the polling thread while it reads.
    pub fn from_reader(reader: impl Read + Send + 'static) -> Self {
        Input::with_source(Source::Reader(Box::new(reader)))
    }

    fn with_source(source: Source) -> Self {
        Input {
            source,
            remaining: None,
            delivered: 0,
            buf: Bytes::new(),
            done: false,
        }
    }

    /// Ends the input after `limit` bytes (the request's CONTENT_LENGTH). If the source ends
    /// sooner, or fails as a peer gone does (see [`Input`]), reading fails with
    /// [`io::ErrorKind::UnexpectedEof`]; other failures (a timeout) keep their kind.
    #[must_use]
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.remaining = Some(limit.saturating_sub(self.buf.len() as u64));
        if self.buf.len() as u64 > limit {
            self.buf.truncate(limit as usize);
        }
        if limit == 0 {
            self.finish();
        }
        self
    }

    /// How many bytes are left before the limit, if the input has one.
    pub fn remaining_limit(&self) -> Option<u64> {
        self.remaining.map(|r| r + self.buf.len() as u64)
    }

    /// Whether the input is known to have no more bytes.
    pub fn is_exhausted(&self) -> bool {
        self.done && self.buf.is_empty()
    }

    fn finish(&mut self) {
        self.done = true;
        // Drop the source: the transport behind it can be reused or released.
        self.source = Source::Empty;
    }

    /// Ends the input with `error`, which every later read repeats.
    fn fail(&mut self, error: &io::Error) {
        self.done = true;
        self.remaining = self.remaining.map(|_| 0);
        let cut_short = Input::is_cut_short(error);
        self.source = Source::Failed(error.kind(), error.to_string().into(), cut_short);
    }

    /// Polls for the next chunk of the body: `None` at its end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if !self.buf.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut self.buf))));
        }
        if self.done {
            return Poll::Ready(match &self.source {
                Source::Failed(kind, message, false) => {
                    Some(Err(io::Error::new(*kind, &**message)))
                }
                Source::Failed(kind, message, true) => {
                    Some(Err(io::Error::new(*kind, CutShort(message.to_string()))))
                }
                _ => None,
            });
        }
        let next = match &mut self.source {
            Source::Empty | Source::Failed(..) => None,
            Source::Full(data) => Some(Ok(std::mem::take(data))),
            Source::Body(body) => loop {
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => break None,
                    Poll::Ready(Some(Err(e))) => break Some(Err(body_error(e))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => break Some(Ok(data)),
                        _ => continue,
                    },
                }
            },
            Source::Reader(reader) => {
                let want = match self.remaining {
                    Some(r) => r.min(READ_CHUNK_SIZE as u64) as usize,
                    None => READ_CHUNK_SIZE,
                };
                let mut chunk = BytesMut::zeroed(want);
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) => break None,
                        Ok(n) => {
                            chunk.truncate(n);
                            break Some(Ok(chunk.freeze()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => break Some(Err(e)),
                    }
                }
            }
        };
        Poll::Ready(match next {
            Some(Ok(mut data)) if !data.is_empty() => {
                if let Some(remaining) = &mut self.remaining {
                    if data.len() as u64 >= *remaining {
                        data.truncate(*remaining as usize);
                        *remaining = 0;
                        self.finish();
                    } else {
                        *remaining -= data.len() as u64;
                    }
                }
                self.delivered += data.len() as u64;
                Some(Ok(data))
            }
            Some(Ok(_)) | None => match self.remaining.filter(|&r| r > 0) {
                None => {
                    self.finish();
                    None
                }
                Some(missing) => {
                    let error = self.cut_short(missing, None);
                    self.fail(&error);
                    Some(Err(error))
                }
            },
            Some(Err(e)) => {
                // Before the limit, a source that failed as a peer gone does (a connection
                // reset, a client gone in the middle of the body) cut the body short as an
                // early end does; other failures (a timeout, a limit) keep their kind.
                let gone = matches!(
                    e.kind(),
                    io::ErrorKind::Other
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                );
                let error = match self.remaining.filter(|&r| r > 0 && gone) {
                    Some(missing) => self.cut_short(missing, Some(&e)),
                    None => e,
                };
                self.fail(&error);
                Some(Err(error))
            }
        })
    }

    /// The error of a body that stopped `missing` bytes short of its limit, because its source
    /// ended or failed with `cause`.
    fn cut_short(&self, missing: u64, cause: Option<&io::Error>) -> io::Error {
        let mut message = format!(
            "request body ended after {} of {} bytes",
            self.delivered,
            self.delivered + missing
        );
        if let Some(cause) = cause {
            message = format!("{message}: {cause}");
        }
        io::Error::new(io::ErrorKind::UnexpectedEof, CutShort(message))
    }

    /// Whether `error` is, or was caused by, the error of a request body that ended before its
    /// `CONTENT_LENGTH` (the client went away, or a web server ended the body early): what a
    /// server answers 400 when an app failed on it, as the client's doing, not the app's.
    ///
    /// ```
    /// use gateway_core::Input;
    /// use std::io::Read;
    ///
    /// let mut input = Input::from_bytes("only").with_limit(10);
    /// let error = input.read_to_end(&mut Vec::new()).unwrap_err();
    /// assert!(Input::is_cut_short(&error));
    /// assert!(!Input::is_cut_short(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
    /// ```
    pub fn is_cut_short(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(error) = next {
            if error.is::<CutShort>() {
                return true;
            }
            // An `io::Error`'s `source` is that of the error it wraps, skipping the wrapped
            // error itself.
            next = match error.downcast_ref::<io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as _),
                None => error.source(),
            };
        }
        false
    }

    /// The next chunk of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Reads the whole rest of the body into memory, failing with an error of kind
    /// [`io::ErrorKind::InvalidData`] once more than `max` bytes arrive.
    pub async fn collect(&mut self, max: usize) -> io::Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("request body is larger than {max} bytes"),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// WSGI's `readline(size)`: reads up to and including the next `\n`, but no more than
    /// `limit` bytes, appending them to `line`. Returns how many bytes were read (0 at the end).
    pub fn read_line_limited(&mut self, line: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        let start = line.len();
        while line.len() - start < limit {
            let available = self.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let room = limit - (line.len() - start);
            let window = &available[..available.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&window[..=i]);
                    self.consume(i + 1);
                    break;
                }
                None => {
                    let n = window.len();
                    line.extend_from_slice(window);
                    self.consume(n);
                }
            }
        }
        Ok(line.len() - start)
    }
}

impl Default for Input {
    fn default() -> Self {
        Input::empty()
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::Empty => "empty",
            Source::Full(_) => "bytes",
            Source::Body(_) => "body",
            Source::Reader(_) => "reader",
            Source::Failed(..) => "failed",
        };
        f.debug_struct("Input")
            .field("source", &source)
            .field("remaining", &self.remaining_limit())
            .field("delivered", &self.delivered)
            .field("done", &self.done)
            .finish()
    }
}

/// The most [`Input`]'s `read_to_end` reserves at once for a declared length: a larger body
/// grows the buffer as it arrives, so a length that lies costs no memory before its bytes do.
const RESERVE_AT_ONCE: u64 = 1 << 20;

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }

    /// Appends each chunk as it comes: unlike the default, which reads into spare capacity it
    /// must first fill with zeros, every byte is written once.
    fn read_to_end(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let start = out.len();
        if let Some(remaining) = self.remaining_limit() {
            out.reserve(remaining.min(RESERVE_AT_ONCE) as usize);
        }
        loop {
            let available = self.fill_buf()?;
            if available.is_empty() {
                return Ok(out.len() - start);
            }
            let n = available.len();
            out.extend_from_slice(available);
            self.consume(n);
        }
    }

    /// As [`read_to_end`](Read::read_to_end); fails with [`io::ErrorKind::InvalidData`] (and
    /// appends nothing) when the bytes are not UTF-8.
    fn read_to_string(&mut self, out: &mut String) -> io::Result<usize> {
        let mut bytes = Vec::new();
        self.read_to_end(&mut bytes)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request body is not UTF-8"))?;
        out.push_str(&text);
        Ok(text.len())
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // A failed input is polled again: it gives its error again.
        if self.buf.is_empty() && (!self.done || matches!(self.source, Source::Failed(..))) {
            let chunk = if crate::is_event_loop_thread() {
                // Waiting here would stall the event loop that is to deliver the bytes.
                let mut cx = Context::from_waker(Waker::noop());
                match self.poll_chunk(&mut cx) {
                    Poll::Ready(chunk) => chunk,
                    Poll::Pending => return Err(would_block()),
                }
            } else {
                block_on(std::future::poll_fn(|cx| self.poll_chunk(cx)))
            };
            match chunk {
                Some(Ok(data)) => self.buf = data,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(&self.buf)
    }

    fn consume(&mut self, amount: usize) {
        self.buf.advance(amount.min(self.buf.len()));
    }
}

/// The error of a blocking read on an event loop's thread that would have to wait.
#[cold]
fn would_block() -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        "the request body was read synchronously on the event loop, and its next bytes have \
         not come: a non-blocking app reads its body asynchronously (inside its body), or \
         runs on the worker pool",
    )
}

impl http_body::Body for Input {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        // A failed input has its error still to give.
        self.is_exhausted() && !matches!(self.source, Source::Failed(..))
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining_limit() {
            Some(n) => SizeHint::with_exact(n),
            None if self.is_exhausted() => SizeHint::with_exact(0),
            None => SizeHint::new(),
        }
    }
}

/// The error of a request body cut short of its limit (see [`Input::is_cut_short`]).
#[derive(Debug)]
struct CutShort(String);

impl std::fmt::Display for CutShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CutShort {}

/// A body's error as an `io::Error` of the first kind other than `Other` found in its chain of
/// sources (hyper reports a body cut short as its own error, caused by an `UnexpectedEof`), or
/// of kind `Other` when there is none.
fn body_error(error: BoxError) -> io::Error {
    let mut kind = io::ErrorKind::Other;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(current) = next {
        match current.downcast_ref::<io::Error>() {
            Some(io) if io.kind() != io::ErrorKind::Other => {
                kind = io.kind();
                break;
            }
            // An `io::Error`'s `source` is that of the error it wraps, skipping the wrapped
            // error itself, which may carry the kind.
            Some(io) => next = io.get_ref().map(|inner| inner as _),
            None => next = current.source(),
        }
    }
    io::Error::new(kind, error)
}

pin_project_lite::pin_project! {
    struct DataBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B> http_body::Body for DataBody<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx).map(|frame| {
            frame.map(|r| {
                r.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                    .map_err(Into::into)
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body whose first poll waits (it wakes its waker at once), then yields `data`.
    struct LateOnce(bool, &'static str);

    impl http_body::Body for LateOnce {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if !std::mem::replace(&mut self.0, true) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(
                (!self.1.is_empty())
                    .then(|| Ok(Frame::data(Bytes::from(std::mem::take(&mut self.1))))),
            )
        }
    }

    #[test]
    fn on_an_event_loop_a_read_that_would_wait_fails_and_may_be_retried() {
        std::thread::spawn(|| {
            let mut late = Input::from_body(LateOnce(false, "late"));
            // Not marked: the read waits for the bytes.
            assert_eq!(io::read_to_string(&mut late).unwrap(), "late");

            crate::mark_event_loop_thread();
            let mut late = Input::from_body(LateOnce(false, "late"));
            let error = late.read(&mut [0; 8]).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
            assert!(error.to_string().contains("event loop"), "{error}");
            // The input is not failed: once the bytes are there, they are read.
            assert_eq!(io::read_to_string(&mut late).unwrap(), "late");
            // Bytes at hand are read without a wait.
            assert_eq!(io::read_to_string(chunked(&["a", "b"])).unwrap(), "ab");
        })
        .join()
        .unwrap();
    }

    /// A body that yields the given chunks, one per poll, then ends.
    fn chunked(chunks: &[&'static str]) -> Input {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        Input::from_body(http_body_util::StreamBody::new(Iter(frames.into_iter())))
    }

    struct Iter<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }

    #[test]
    fn the_limit_simulates_eof_and_never_reads_past_it() {
        let mut input = chunked(&["abc", "def", "ghi"]).with_limit(5);
        let mut all = Vec::new();
        input.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"abcde");
        assert_eq!(input.read(&mut [0; 4]).unwrap(), 0);
    }

    #[test]
    fn a_body_shorter_than_its_limit_is_an_unexpected_eof() {
        let mut input = chunked(&["abc"]).with_limit(10);
        let err = input.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("3 of 10"), "{err}");
    }

    #[test]
    fn a_failed_read_fails_again_when_retried_and_is_never_a_clean_end() {
        let mut input = chunked(&["abc"]).with_limit(10);
        let first = input.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(Input::is_cut_short(&first));
        for _ in 0..2 {
            let again = input.read(&mut [0; 4]).unwrap_err();
            assert_eq!(again.kind(), first.kind());
            assert_eq!(again.to_string(), first.to_string());
            // Still the client's doing (a 400), not the app's.
            assert!(Input::is_cut_short(&again), "retried: {again}");
        }
        assert!(
            !http_body::Body::is_end_stream(&input),
            "its error is still to come"
        );
        assert_eq!(http_body::Body::size_hint(&input).exact(), Some(0));

        // An error of the transport, likewise.
        /// Yields one byte, then fails.
        struct Failing(bool);
        impl http_body::Body for Failing {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                let first = std::mem::replace(&mut self.0, false);
                Poll::Ready(Some(match first {
                    true => Ok(Frame::data(Bytes::from("x"))),
                    false => Err("connection reset".into()),
                }))
            }
        }
        let mut input = Input::from_body(Failing(true));
        let mut all = Vec::new();
        assert!(input.read_to_end(&mut all).is_err());
        assert_eq!(all, b"x");
        let again = input.read(&mut [0; 4]).unwrap_err();
        assert!(again.to_string().contains("connection reset"), "{again}");
    }

    /// An error as hyper makes one for a body cut short: its own, caused by an `io::Error`.
    #[derive(Debug)]
    struct Wrapping(io::Error);

    impl fmt::Display for Wrapping {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("error reading a body from connection")
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A body that yields `abc`, then fails with `error`.
    fn failing_after_abc(error: BoxError) -> Input {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from("abc"))), Err(error)];
        Input::from_body(http_body_util::StreamBody::new(Iter(frames.into_iter())))
    }

    #[test]
    fn a_failing_body_keeps_the_kind_of_its_cause() {
        let cases: [(&str, BoxError, io::ErrorKind); 4] = [
            (
                "hyper's body cut short",
                Box::new(Wrapping(io::ErrorKind::UnexpectedEof.into())),
                io::ErrorKind::UnexpectedEof,
            ),
            (
                "a reset, wrapped twice",
                Box::new(io::Error::other(Wrapping(
                    io::ErrorKind::ConnectionReset.into(),
                ))),
                io::ErrorKind::ConnectionReset,
            ),
            (
                "an io::Error",
                Box::new(io::Error::from(io::ErrorKind::TimedOut)),
                io::ErrorKind::TimedOut,
            ),
            ("no io::Error", "gone".into(), io::ErrorKind::Other),
        ];
        for (case, error, kind) in cases {
            let message = error.to_string();
            let mut input = failing_after_abc(error);
            let mut all = Vec::new();
            let err = input.read_to_end(&mut all).unwrap_err();
            assert_eq!((err.kind(), &all[..]), (kind, &b"abc"[..]), "{case}");
            assert!(err.to_string().contains(&message), "{case}: {err}");
            let again = input.read(&mut [0; 4]).unwrap_err();
            assert_eq!(again.kind(), kind, "{case}: retried");
            assert!(
                !Input::is_cut_short(&again),
                "{case}: no limit, not cut short"
            );
        }
    }

    #[test]
    fn a_body_that_fails_before_its_limit_is_cut_short() {
        for error in [
            Box::new(Wrapping(io::ErrorKind::UnexpectedEof.into())) as BoxError,
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
            "gone".into(),
        ] {
            let cause = error.to_string();
            let mut input = failing_after_abc(error).with_limit(10);
            let err = input.read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{cause}");
            let message = err.to_string();
            assert!(message.contains("after 3 of 10 bytes"), "{message}");
            assert!(message.contains(&cause), "{message}");
        }
    }

    #[test]
    fn read_to_end_appends_what_came_and_keeps_it_when_the_body_is_cut_short() {
        let mut all = b">".to_vec();
        let read = chunked(&["ab", "cd", "e"]).read_to_end(&mut all).unwrap();
        assert_eq!((read, &all[..]), (5, &b">abcde"[..]));
        let mut some = Vec::new();
        let err = chunked(&["ab", "cd"])
            .with_limit(9)
            .read_to_end(&mut some)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(some, b"abcd");
        let mut text = String::from("kept");
        let mut bad = Input::from_bytes(&b"\xff\xfe"[..]);
        let err = bad.read_to_string(&mut text).unwrap_err();
        assert_eq!(
            (err.kind(), text.as_str()),
            (io::ErrorKind::InvalidData, "kept")
        );
    }

    #[test]
    fn without_a_limit_the_input_ends_with_its_source() {
        let mut input = chunked(&["ab", "", "cd"]);
        let mut all = String::new();
        input.read_to_string(&mut all).unwrap();
        assert_eq!(all, "abcd");
        assert!(input.is_exhausted());
    }

    #[test]
    fn readline_with_a_size_stops_at_the_size_or_the_newline() {
        let mut input = chunked(&["he", "llo\nwor", "ld\n"]);
        let mut line = Vec::new();
        assert_eq!(input.read_line_limited(&mut line, 3).unwrap(), 3);
        assert_eq!(line, b"hel");
        line.clear();
        assert_eq!(input.read_line_limited(&mut line, 100).unwrap(), 3);
        assert_eq!(line, b"lo\n");
        line.clear();
        input.read_until(b'\n', &mut line).unwrap();
        assert_eq!(line, b"world\n");
        line.clear();
        assert_eq!(input.read_line_limited(&mut line, 100).unwrap(), 0);
    }

    #[test]
    fn reader_source_respects_the_limit() {
        let mut input = Input::from_reader(io::Cursor::new(b"0123456789".to_vec())).with_limit(4);
        let mut all = Vec::new();
        input.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"0123");
    }

    #[test]
    fn zero_limit_is_empty_at_once() {
        let input = chunked(&["abc"]).with_limit(0);
        assert!(input.is_exhausted());
        assert!(http_body::Body::is_end_stream(&input));
    }

    #[test]
    fn stream_view_yields_the_chunks() {
        let mut input = chunked(&["ab", "cd"]);
        let got = block_on(async {
            let mut v = Vec::new();
            while let Some(c) = input.chunk().await {
                v.push(c.unwrap());
            }
            v
        });
        assert_eq!(got, vec![Bytes::from("ab"), Bytes::from("cd")]);
    }
}
