//! A limit on the size of request bodies: [`BodyLimit`].
//!
//! A request whose `CONTENT_LENGTH` is over the limit is answered 413 without calling the app.
//! A body without a length (chunked, or streamed by the front end) is counted as the app reads
//! it: past the limit the read fails, and if the app then fails before it answered, the answer
//! is 413 rather than 500. An app that handles the read error itself answers what it likes.
//!
//! ```
//! use std::io::Read;
//! use gateway_core::{driver, Body, Builder, Environ, Input, StartResponse};
//! use gateway_middleware::BodyLimit;
//!
//! let upload = |mut environ: Environ, start: StartResponse| {
//!     let mut body = Vec::new();
//!     if let Err(error) = environ.input().read_to_end(&mut body) {
//!         return Body::error(error);
//!     }
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from(format!("{} bytes", body.len()))
//! };
//! let app = Builder::new().with(BodyLimit::new(4)).app(upload);
//!
//! let mut environ = Environ::new();
//! environ.set_input(Input::from_bytes("far too long")); // no CONTENT_LENGTH: counted
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! assert_eq!(response.status(), 413);
//! ```

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_core::convert::respond;
use gateway_core::{App, Body, Environ, Input, Middleware, StartResponse, driver};
use http::{HeaderMap, StatusCode};
use http_body::Frame;

use crate::plain::plain;

/// The middleware: requests whose bodies are larger than the limit get 413.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    limit: u64,
}

impl BodyLimit {
    /// A limit of `limit` bytes.
    pub const fn new(limit: u64) -> Self {
        BodyLimit { limit }
    }

    /// The limit, in bytes.
    pub const fn limit(&self) -> u64 {
        self.limit
    }
}

impl<A> Middleware<A> for BodyLimit {
    type App = BodyLimitApp<A>;

    fn wrap(&self, app: A) -> BodyLimitApp<A> {
        BodyLimitApp {
            inner: app,
            limit: self.limit,
        }
    }
}

/// An app whose request bodies are limited; made by [`BodyLimit`].
#[derive(Debug, Clone)]
pub struct BodyLimitApp<A> {
    inner: A,
    limit: u64,
}

impl<A> BodyLimitApp<A> {
    /// The wrapped app.
    pub fn get_ref(&self) -> &A {
        &self.inner
    }

    /// The wrapped app, back.
    pub fn into_inner(self) -> A {
        self.inner
    }
}

impl<A: App> App for BodyLimitApp<A> {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        match environ.content_length() {
            Some(length) if length > self.limit => {
                return plain(start, StatusCode::PAYLOAD_TOO_LARGE, HeaderMap::new());
            }
            Some(_) => return self.inner.call(environ, start),
            None => {}
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let input = environ.take_input();
        environ.set_input(Input::from_body(Counted {
            input,
            left: self.limit,
            exceeded: exceeded.clone(),
        }));
        let response = driver::call(&self.inner, environ);
        Body::from_future(async move {
            let response = response.await;
            let failed = driver::failure(&response).is_some();
            if failed && exceeded.load(Ordering::Relaxed) {
                let mut headers = HeaderMap::new();
                driver::keep_failure_headers(&response, &mut headers);
                return Ok(plain(start, StatusCode::PAYLOAD_TOO_LARGE, headers));
            }
            Ok(respond(start, response))
        })
    }
}

/// The input, counted against the limit.
struct Counted {
    input: Input,
    left: u64,
    exceeded: Arc<AtomicBool>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let chunk = match self.input.poll_chunk(cx) {
            Poll::Ready(Some(Ok(chunk))) => chunk,
            other => return other.map(|c| c.map(|r| r.map(Frame::data))),
        };
        if chunk.len() as u64 > self.left {
            self.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request body larger than the limit",
            ))));
        }
        self.left -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.input.is_exhausted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Builder;
    use std::io::Read;

    fn reader(mut environ: Environ, start: StartResponse) -> Body {
        let mut body = Vec::new();
        if let Err(error) = environ.input().read_to_end(&mut body) {
            return Body::error(error);
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from(body)
    }

    fn run(app: &impl App, content_length: Option<&str>, body: &'static str) -> StatusCode {
        let mut environ = Environ::new();
        let mut input = Input::from_bytes(body);
        if let Some(length) = content_length {
            environ.set("CONTENT_LENGTH", length.to_owned());
            input = input.with_limit(length.parse().unwrap());
        }
        environ.set_input(input);
        gateway_core::block_on(driver::call(app, environ)).status()
    }

    #[test]
    fn declared_lengths_over_the_limit_never_reach_the_app() {
        let called = Arc::new(AtomicBool::new(false));
        let seen = called.clone();
        let app =
            Builder::new()
                .with(BodyLimit::new(5))
                .app(move |e: Environ, s: StartResponse| {
                    seen.store(true, Ordering::Relaxed);
                    reader(e, s)
                });
        assert_eq!(
            run(&app, Some("6"), "123456"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert!(!called.load(Ordering::Relaxed));
        assert_eq!(run(&app, Some("5"), "12345"), StatusCode::OK);
    }

    #[test]
    fn undeclared_lengths_are_counted_as_read() {
        let app = Builder::new().with(BodyLimit::new(5)).app(reader);
        assert_eq!(run(&app, None, "123456"), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(run(&app, None, "12345"), StatusCode::OK);
        assert_eq!(run(&app, None, ""), StatusCode::OK);
    }

    #[test]
    fn the_413_keeps_the_headers_asked_for_on_failures() {
        let app = Builder::new()
            .with(BodyLimit::new(5))
            .with(crate::RequestId::new())
            .app(reader);
        let mut environ = Environ::new();
        environ.set("HTTP_X_REQUEST_ID", "big-1");
        environ.set_input(Input::from_bytes("123456"));
        let response = gateway_core::block_on(driver::call(&app, environ));
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()["x-request-id"], "big-1");
    }

    #[test]
    fn an_app_that_handles_the_error_answers_itself() {
        let app = Builder::new()
            .with(BodyLimit::new(2))
            .app(|mut e: Environ, s: StartResponse| {
                let status = match e.input().read_to_end(&mut Vec::new()) {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::BAD_REQUEST,
                };
                let _ = s.start(status, HeaderMap::new());
                Body::empty()
            });
        assert_eq!(run(&app, None, "abc"), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn other_failures_stay_500() {
        let app = Builder::new()
            .with(BodyLimit::new(100))
            .app(|_: Environ, _: StartResponse| Body::error("broken"));
        assert_eq!(run(&app, None, "abc"), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
