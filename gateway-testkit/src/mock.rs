//! [`MockApp`]: an inner app for testing a middleware alone. Its answers are scripted, and
//! every call it got can be inspected: the environ it saw, the body it read, whether its own
//! body was closed.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gateway_core::{App, Body, BoxError, Environ, StartResponse};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::EnvironSnapshot;
use crate::close::CloseProbe;

/// One scripted answer of a [`MockApp`]. Its body is always a stream of its chunks, with no
/// declared length (zero chunks: an empty body): the mock adds no `Content-Length` header, and
/// the answer has one only when [`header`](Self::header) adds it.
#[derive(Debug, Clone)]
pub struct MockResponse {
    status: StatusCode,
    headers: HeaderMap,
    chunks: Vec<Bytes>,
    fail: Option<Failure>,
    read_body: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    BeforeHead,
    AfterHead,
}

impl MockResponse {
    /// 200, `Content-Type: text/plain`, and `body` as the one chunk of the body (no
    /// `Content-Length`).
    pub fn ok(body: impl Into<Bytes>) -> MockResponse {
        MockResponse::status(StatusCode::OK).body(body)
    }

    /// `status`, `Content-Type: text/plain`, and an empty body (no chunk) until
    /// [`body`](Self::body) or [`chunks`](Self::chunks) gives one.
    pub fn status(status: StatusCode) -> MockResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        MockResponse {
            status,
            headers,
            chunks: Vec::new(),
            fail: None,
            read_body: true,
        }
    }

    /// Adds a header (after any of that name).
    pub fn header(mut self, name: &str, value: &str) -> MockResponse {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.append(name, value);
        }
        self
    }

    /// The body, as one chunk (no `Content-Length`, as for any answer).
    pub fn body(self, body: impl Into<Bytes>) -> MockResponse {
        self.chunks([body.into()])
    }

    /// The body, in these chunks (no `Content-Length`, as for any answer).
    pub fn chunks<I: IntoIterator<Item = Bytes>>(mut self, chunks: I) -> MockResponse {
        self.chunks = chunks.into_iter().collect();
        self
    }

    /// Fails before the head (the server answers 500).
    pub fn fail_before_head(mut self) -> MockResponse {
        self.fail = Some(Failure::BeforeHead);
        self
    }

    /// Sends the head and the chunks, then fails.
    pub fn fail_after_head(mut self) -> MockResponse {
        self.fail = Some(Failure::AfterHead);
        self
    }

    /// Does not read the request body (by default the whole body is read and recorded).
    pub fn without_reading_the_body(mut self) -> MockResponse {
        self.read_body = false;
        self
    }
}

/// What a [`MockApp`] got in one call.
#[derive(Debug, Clone)]
pub struct MockCall {
    /// The environ it saw.
    pub environ: EnvironSnapshot,
    /// The request body it read (empty when told not to read).
    pub body: Bytes,
    closed: CloseProbe,
}

impl MockCall {
    /// Whether the body it answered with has been closed (dropped) by now. That is the drop of
    /// the body itself, whatever it is (its chunks, or the error it fails with), not the end of
    /// its chunks: a middleware that reads it to its end and then leaks it makes this false.
    pub fn body_closed(&self) -> bool {
        self.closed.all_dropped()
    }
}

#[derive(Debug)]
struct State {
    script: VecDeque<MockResponse>,
    default: MockResponse,
    calls: Vec<MockCall>,
}

/// A scripted inner app; clones share the script and the record of calls.
///
/// ```
/// use gateway_core::{App, Body, Environ, StartResponse};
/// use gateway_testkit::{MockApp, MockResponse, TestClient};
///
/// // The middleware under test: sets a header for the app it wraps.
/// fn tagging(inner: impl App) -> impl App {
///     move |mut environ: Environ, start: StartResponse| -> Body {
///         environ.set("HTTP_X_TAG", "tagged");
///         inner.call(environ, start)
///     }
/// }
///
/// let inner = MockApp::new().then(MockResponse::ok("scripted"));
/// let response = TestClient::new(tagging(inner.clone())).post("/a").body("sent").send();
/// assert_eq!(response.text(), "scripted");
/// let call = &inner.calls()[0];
/// assert_eq!(call.environ.get("HTTP_X_TAG"), Some(&b"tagged"[..]));
/// assert_eq!(call.body, "sent");
/// assert!(call.body_closed());
/// ```
#[derive(Debug, Clone)]
pub struct MockApp {
    state: Arc<Mutex<State>>,
}

impl Default for MockApp {
    fn default() -> Self {
        MockApp::new()
    }
}

impl MockApp {
    /// An app that answers 200, `Content-Type: text/plain` and an empty body until scripted
    /// otherwise.
    pub fn new() -> MockApp {
        MockApp {
            state: Arc::new(Mutex::new(State {
                script: VecDeque::new(),
                default: MockResponse::status(StatusCode::OK),
                calls: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an answer for the next call not yet scripted.
    pub fn then(self, response: MockResponse) -> MockApp {
        self.lock().script.push_back(response);
        self
    }

    /// The answer once the script is used up.
    pub fn otherwise(self, response: MockResponse) -> MockApp {
        self.lock().default = response;
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<MockCall> {
        self.lock().calls.clone()
    }

    /// How many calls so far.
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }
}

/// The body of a mock answer: its chunks, then its end or its failure.
struct Answer {
    chunks: VecDeque<Bytes>,
    fail: bool,
}

impl Iterator for Answer {
    type Item = Result<Bytes, BoxError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.chunks.pop_front() {
            Some(chunk) => Some(Ok(chunk)),
            None if std::mem::take(&mut self.fail) => {
                Some(Err("the mock app fails after its head".into()))
            }
            None => None,
        }
    }
}

impl App for MockApp {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let response = {
            let mut state = self.lock();
            state
                .script
                .pop_front()
                .unwrap_or_else(|| state.default.clone())
        };
        let mut body = Vec::new();
        if response.read_body {
            // A body that fails to read is recorded as far as it went.
            let _ = environ.input().read_to_end(&mut body);
        }
        let closed = CloseProbe::default();
        self.lock().calls.push(MockCall {
            environ: EnvironSnapshot::of(&environ),
            body: Bytes::from(body),
            closed: closed.clone(),
        });
        let body = if response.fail == Some(Failure::BeforeHead) {
            Body::error("the mock app fails before its head")
        } else if let Err(error) = start.start(response.status, response.headers) {
            Body::error(error)
        } else {
            Body::try_from_chunks(Answer {
                chunks: response.chunks.into(),
                fail: response.fail == Some(Failure::AfterHead),
            })
        };
        // Every answer is a body that is closed only by its drop, failures included, and a
        // test client's probe watches it too.
        let body = closed.watch(body);
        match CloseProbe::of(&environ) {
            Some(probe) => probe.watch(body),
            None => body,
        }
    }
}
