//! The in-process test client: [`TestClient`].
//!
//! It runs an app as a server would, with no socket: the request becomes an environ through
//! [`environ_from_request`] (the same function the HTTP server uses), the app runs through the
//! [`driver`](gateway_core::driver) (the same contract enforcement every server uses), and the
//! answer comes back whole: status, headers, body, the environ the app saw, and whether the
//! app's bodies were dropped (their `close()`), down to the innermost one a [`Validator`] or a
//! [`MockApp`] in the stack watched.
//!
//! [`Validator`]: crate::Validator
//! [`MockApp`]: crate::MockApp
//!
//! ```
//! use gateway_core::{Body, Environ, StartResponse};
//! use gateway_testkit::TestClient;
//!
//! let app = |environ: Environ, start: StartResponse| {
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from(environ.query_string().to_vec())
//! };
//! let response = TestClient::new(app).get("/search?q=rust").send();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.text(), "q=rust");
//! assert_eq!(response.environ().get("PATH_INFO"), Some(&b"/search"[..]));
//! assert!(response.body_closed());
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_core::Stream;
use gateway_core::convert::{ServerContext, environ_from_request};
use gateway_core::{App, Body, BoxError, Environ, StartResponse, UrlScheme, driver};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Body as _;

use crate::close::CloseProbe;

/// Runs requests against an app in-process.
pub struct TestClient<A> {
    app: A,
    context: ServerContext,
}

impl<A: App> TestClient<A> {
    /// A client for `app`. Its server context is `ServerContext::default()` (scheme `http`)
    /// with the peer 127.0.0.1 port 40000 (`REMOTE_ADDR`, `REMOTE_PORT`), `SERVER_NAME`
    /// `localhost` and `SERVER_PORT` 80, whatever the request's `Host`.
    pub fn new(app: A) -> Self {
        let mut context = ServerContext::default();
        context.peer_addr = Some(([127, 0, 0, 1], 40000).into());
        context.server_name = Some(Bytes::from_static(b"localhost"));
        context.server_port = Some(80);
        TestClient { app, context }
    }

    /// Uses another server context (scheme, peer address, flags, error stream). It replaces the
    /// whole context, the peer, `SERVER_NAME` and `SERVER_PORT` set by [`new`](Self::new)
    /// included: with `ServerContext::default()` the request has no peer address, and
    /// `SERVER_NAME` and `SERVER_PORT` come from its `Host` (see `ServerContext`).
    pub fn with_context(mut self, context: ServerContext) -> Self {
        self.context = context;
        self
    }

    /// The app.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// A request with any method.
    pub fn request(&self, method: Method, uri: &str) -> TestRequest<'_, A> {
        TestRequest {
            client: self,
            builder: Request::builder().method(method).uri(uri),
            body: Body::empty(),
        }
    }

    /// A GET request.
    pub fn get(&self, uri: &str) -> TestRequest<'_, A> {
        self.request(Method::GET, uri)
    }

    /// A HEAD request.
    pub fn head(&self, uri: &str) -> TestRequest<'_, A> {
        self.request(Method::HEAD, uri)
    }

    /// A POST request.
    pub fn post(&self, uri: &str) -> TestRequest<'_, A> {
        self.request(Method::POST, uri)
    }

    /// A PUT request.
    pub fn put(&self, uri: &str) -> TestRequest<'_, A> {
        self.request(Method::PUT, uri)
    }

    /// A DELETE request.
    pub fn delete(&self, uri: &str) -> TestRequest<'_, A> {
        self.request(Method::DELETE, uri)
    }
}

impl<A> fmt::Debug for TestClient<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClient")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// A request being built; [`send`](TestRequest::send) runs it.
pub struct TestRequest<'a, A> {
    client: &'a TestClient<A>,
    builder: http::request::Builder,
    body: Body,
}

impl<A: App> TestRequest<'_, A> {
    /// Adds a header (repeat to repeat it).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_bytes(value.as_ref()).expect("a valid header value");
        self.builder = self.builder.header(name, value);
        self
    }

    /// A body of known length: sent with `Content-Length`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.builder = self
            .builder
            .header(http::header::CONTENT_LENGTH, body.len());
        self.body = Body::full(body);
        self
    }

    /// A body of unknown length, in these chunks: sent like a chunked request.
    pub fn chunks<I>(mut self, chunks: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Bytes> + 'static,
        I::IntoIter: Send + 'static,
    {
        self.body = Body::from_chunks(chunks);
        self
    }

    /// A body of unknown length from a stream.
    pub fn stream<S, T, E>(mut self, stream: S) -> Self
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Into<Bytes>,
        E: Into<BoxError>,
    {
        self.body = Body::from_stream(stream);
        self
    }

    /// Runs the request and waits for the whole response (with a runtime-free executor).
    pub fn send(self) -> TestResponse {
        gateway_core::block_on(self.send_async())
    }

    /// Runs the request; the future completes with the whole response.
    pub async fn send_async(self) -> TestResponse {
        let request = self.builder.body(self.body).expect("a valid request");
        let environ = environ_from_request(request, &self.client.context);
        let seen = Arc::new(Mutex::new(None));
        let probe = CloseProbe::default();
        let app = Observed {
            app: &self.client.app,
            seen: seen.clone(),
            probe: probe.clone(),
        };
        let response = driver::call(&app, environ).await;
        let failure = driver::failure(&response).map(|e| e.to_string());
        let (parts, mut body) = response.into_parts();
        let mut data = Vec::new();
        let mut body_error = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            match frame {
                Ok(frame) => {
                    if let Some(chunk) = frame.data_ref() {
                        data.extend_from_slice(chunk);
                    }
                }
                Err(error) => {
                    body_error = Some(error.to_string());
                    break;
                }
            }
        }
        // Read before the client drops the response: by its end the driver has dropped the
        // app's body, and that drop must have reached every body deeper in the stack.
        let closed = probe.all_dropped();
        drop(body);
        let environ = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
        TestResponse {
            status: parts.status,
            failure,
            headers: parts.headers,
            body: Bytes::from(data),
            body_error,
            environ: environ.unwrap_or_default(),
            closed,
        }
    }
}

impl<A> fmt::Debug for TestRequest<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRequest")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

/// The app under test, with the environ it gets recorded, and its body and those deeper in the
/// stack watched for their drop.
struct Observed<'a, A> {
    app: &'a A,
    seen: Arc<Mutex<Option<EnvironSnapshot>>>,
    probe: CloseProbe,
}

impl<A: App> App for Observed<'_, A> {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(EnvironSnapshot::of(&environ));
        self.probe.install(&mut environ);
        let body = self.app.call(environ, start);
        self.probe.watch(body)
    }
}

/// The environ an app saw: its meta-variables and gateway fields, copied when the app was
/// called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironSnapshot {
    /// Every meta-variable, in order.
    pub vars: Vec<(Bytes, Bytes)>,
    /// `wsgi.url_scheme`.
    pub url_scheme: UrlScheme,
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// `wsgi.multiprocess`.
    pub multiprocess: bool,
    /// `wsgi.run_once`.
    pub run_once: bool,
    /// `wsgi.input_terminated`.
    pub input_terminated: bool,
    /// `wsgi.version`.
    pub version: (u16, u16),
}

impl EnvironSnapshot {
    /// A copy of `environ`'s variables and fields.
    pub fn of(environ: &Environ) -> Self {
        EnvironSnapshot {
            vars: environ
                .vars()
                .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
                .collect(),
            url_scheme: environ.url_scheme(),
            multithread: environ.multithread(),
            multiprocess: environ.multiprocess(),
            run_once: environ.run_once(),
            input_terminated: environ.input_terminated(),
            version: environ.version(),
        }
    }

    /// A meta-variable.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v.as_ref())
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    body_error: Option<String>,
    failure: Option<String>,
    environ: EnvironSnapshot,
    closed: bool,
}

impl TestResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Why the body ended early (the app failed after its head, or fell short of its
    /// `Content-Length`), if it did.
    pub fn body_error(&self) -> Option<&str> {
        self.body_error.as_deref()
    }

    /// Why the driver answered 500 (the app failed before its head), if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The environ the app saw.
    pub fn environ(&self) -> &EnvironSnapshot {
        &self.environ
    }

    /// Whether the app's bodies were dropped (their `close()`) by the end of the response.
    ///
    /// The bodies watched are the one the client's app returned and every body that a
    /// [`Validator`](crate::Validator) or a [`MockApp`](crate::MockApp) deeper in the stack
    /// wrapped or made: put one of them next to the innermost app, and a middleware that leaks
    /// the app's body (forgets it, or keeps it after the response) makes this false. With
    /// neither in the stack only the outermost body is watched, and this is false only when
    /// the app panicked or the driver kept its body past the end.
    pub fn body_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::task::{Context, Poll};

    fn echo(mut environ: Environ, start: StartResponse) -> Body {
        let mut body = Vec::new();
        if let Err(error) = environ.input().read_to_end(&mut body) {
            return Body::error(error);
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from(body)
    }

    #[test]
    fn bodies_of_every_kind_reach_the_app() {
        let client = TestClient::new(echo);
        assert_eq!(client.post("/").body("full").send().text(), "full");
        let chunked = client.post("/").chunks(["a", "b", "c"]).send();
        assert_eq!(chunked.text(), "abc");
        assert_eq!(chunked.environ().get("CONTENT_LENGTH"), None);
        assert!(chunked.environ().input_terminated);
        struct Two(u8);
        impl Stream for Two {
            type Item = Result<Bytes, BoxError>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                self.0 += 1;
                Poll::Ready((self.0 <= 2).then(|| Ok(Bytes::from(format!("s{}", self.0)))))
            }
        }
        assert_eq!(client.put("/").stream(Two(0)).send().text(), "s1s2");
    }

    #[test]
    fn failures_are_reported() {
        let client = TestClient::new(|_: Environ, _: StartResponse| Body::error("nope"));
        let response = client.get("/").send();
        assert_eq!(response.status(), 500);
        assert!(response.failure().unwrap().contains("nope"));
        assert!(response.body_closed());

        let client = TestClient::new(|_: Environ, s: StartResponse| {
            let _ = s.start(StatusCode::OK, HeaderMap::new());
            Body::try_from_chunks([Ok::<_, BoxError>("a"), Err("late".into())])
        });
        let response = client.get("/").send();
        assert_eq!(response.text(), "a");
        assert!(response.body_error().unwrap().contains("late"));
    }

    #[test]
    fn headers_and_context() {
        let mut context = ServerContext::default();
        context.url_scheme = UrlScheme::Https;
        let client = TestClient::new(echo).with_context(context);
        let response = client
            .head("/x")
            .header("x-a", "1")
            .header("x-a", "2")
            .send();
        assert_eq!(response.environ().get("HTTP_X_A"), Some(&b"1, 2"[..]));
        assert_eq!(response.environ().url_scheme, UrlScheme::Https);
        assert_eq!(response.environ().get("REQUEST_METHOD"), Some(&b"HEAD"[..]));
        assert_eq!(client.delete("/").send().status(), 200);
    }
}
