//! One log line per request: [`AccessLog`].
//!
//! The line is written when the response is over (sent, failed, or dropped because the client
//! went away), so it knows the bytes sent. By default it is the Combined Log Format, written to
//! the request's error stream (the server's log); both are hooks: a [`LogFormat`] turns a
//! [`LogRecord`] into a line, and a [`LogSink`] takes the line.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use gateway_core::{driver, Body, Builder, Environ, StartResponse};
//! use gateway_middleware::AccessLog;
//!
//! let lines = Arc::new(Mutex::new(Vec::new()));
//! let sink = lines.clone();
//! let log = AccessLog::new().sink(move |line: &str| sink.lock().unwrap().push(line.to_owned()));
//! let app = Builder::new().with(log).app(|_: Environ, start: StartResponse| {
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     "hello"
//! });
//!
//! let mut environ = Environ::new();
//! environ.set("REQUEST_METHOD", "GET");
//! environ.set("PATH_INFO", "/x");
//! environ.set("REMOTE_ADDR", "127.0.0.1");
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! drop(gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body())));
//! let line = lines.lock().unwrap()[0].clone();
//! assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
//! assert!(line.contains("] \"GET /x HTTP/1.1\" 200 5 \"-\" \"-\""), "{line}");
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use gateway_core::driver::ResponseBody;
use gateway_core::{
    App, Body, BodyOutcome, BoxError, Environ, Middleware, SharedSink, StartResponse, clf_time,
    driver, log_escape,
};
use http::StatusCode;
use http_body::Frame;

/// What is known of a request when its log line is written. The request's values are escaped
/// for a log line ([`log_escape`]): a client cannot end the line or move its fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogRecord {
    /// `REMOTE_ADDR`, or `-`.
    pub remote_addr: String,
    /// `REMOTE_USER`, or `-`.
    pub remote_user: String,
    /// When the request started.
    pub time: SystemTime,
    /// `REQUEST_METHOD`.
    pub method: String,
    /// The request target: `REQUEST_URI`, or `SCRIPT_NAME` + `PATH_INFO` + `?QUERY_STRING`.
    pub target: String,
    /// `SERVER_PROTOCOL`.
    pub protocol: String,
    /// The response status: the server's answer when the app failed for its request body
    /// (413, 408 or 400 in place of the driver's 500, read from the server's
    /// [`BodyOutcome`](gateway_core::BodyOutcome)).
    pub status: StatusCode,
    /// Body bytes sent.
    pub bytes_sent: u64,
    /// The `Referer` header, or `-`.
    pub referer: String,
    /// The `User-Agent` header, or `-`.
    pub user_agent: String,
    /// The request's id, when a [`RequestId`](crate::RequestId) outside this layer gave it one
    /// ([`RequestIdValue`](crate::RequestIdValue)), or `-`: the id the response carries, failed
    /// responses included, for a format that logs it.
    pub request_id: String,
    /// How long the request took, until its response was over.
    pub duration: Duration,
    /// Whether the response ended before its end (an error, or the client went away). A
    /// request that ended before its response head is logged with status 499 (nginx's "client
    /// closed request") and this set.
    pub incomplete: bool,
}

/// Turns a [`LogRecord`] into a line (without its newline). Closures are formats.
pub trait LogFormat: Send + Sync + 'static {
    /// The line.
    fn format(&self, record: &LogRecord) -> String;
}

impl<F> LogFormat for F
where
    F: Fn(&LogRecord) -> String + Send + Sync + 'static,
{
    fn format(&self, record: &LogRecord) -> String {
        self(record)
    }
}

/// The Combined Log Format of Apache and nginx.
#[derive(Debug, Clone, Copy, Default)]
pub struct Combined;

impl LogFormat for Combined {
    fn format(&self, r: &LogRecord) -> String {
        format!(
            "{} - {} [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
            r.remote_addr,
            r.remote_user,
            clf_time(r.time),
            r.method,
            r.target,
            r.protocol,
            r.status.as_u16(),
            r.bytes_sent,
            r.referer,
            r.user_agent
        )
    }
}

/// Takes the log lines. Closures are sinks.
pub trait LogSink: Send + Sync + 'static {
    /// Writes one line (without its newline).
    fn write_line(&self, line: &str);
}

impl<F> LogSink for F
where
    F: Fn(&str) + Send + Sync + 'static,
{
    fn write_line(&self, line: &str) {
        self(line)
    }
}

/// The middleware: logs a line per request.
#[derive(Clone)]
pub struct AccessLog {
    format: Arc<dyn LogFormat>,
    sink: Option<Arc<dyn LogSink>>,
}

impl AccessLog {
    /// The Combined Log Format, to each request's error stream.
    pub fn new() -> Self {
        AccessLog {
            format: Arc::new(Combined),
            sink: None,
        }
    }

    /// Lines in another format.
    pub fn format(mut self, format: impl LogFormat) -> Self {
        self.format = Arc::new(format);
        self
    }

    /// Lines to another sink.
    pub fn sink(mut self, sink: impl LogSink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog::new()
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("custom_sink", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

impl<A> Middleware<A> for AccessLog {
    type App = AccessLogApp<A>;

    fn wrap(&self, app: A) -> AccessLogApp<A> {
        AccessLogApp {
            inner: app,
            log: self.clone(),
        }
    }
}

/// An app whose requests are logged; made by [`AccessLog`].
#[derive(Debug, Clone)]
pub struct AccessLogApp<A> {
    inner: A,
    log: AccessLog,
}

enum Sink {
    Custom(Arc<dyn LogSink>),
    Errors(SharedSink),
}

/// A request's value as a log field: escaped, or `-` when absent or empty.
fn text(value: Option<&[u8]>) -> String {
    match value {
        Some(v) if !v.is_empty() => log_escape(v),
        _ => "-".to_owned(),
    }
}

impl<A: App> App for AccessLogApp<A> {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let target = match environ.request_uri() {
            Some(uri) => log_escape(uri),
            None => {
                let mut t = log_escape(&environ.path());
                if !environ.query_string().is_empty() {
                    t.push('?');
                    t.push_str(&log_escape(environ.query_string()));
                }
                t
            }
        };
        let protocol = match environ.server_protocol() {
            "" => "HTTP/1.1".to_owned(),
            p => log_escape(p.as_bytes()),
        };
        let record = LogRecord {
            remote_addr: text(environ.get("REMOTE_ADDR")),
            remote_user: text(environ.get("REMOTE_USER")),
            time: SystemTime::now(),
            method: text(environ.get("REQUEST_METHOD")),
            target,
            protocol,
            status: StatusCode::OK,
            bytes_sent: 0,
            referer: text(environ.header("referer")),
            user_agent: text(environ.header("user-agent")),
            request_id: environ
                .extensions()
                .get::<crate::RequestIdValue>()
                .map_or_else(|| "-".to_owned(), |id| log_escape(id.as_str().as_bytes())),
            duration: Duration::ZERO,
            incomplete: false,
        };
        let sink = match &self.log.sink {
            Some(sink) => Sink::Custom(sink.clone()),
            None => Sink::Errors(environ.errors().sink().clone()),
        };
        let pending = Pending {
            record,
            started: Instant::now(),
            format: self.log.format.clone(),
            sink,
            written: false,
        };
        // The server's note of how the request body failed, if it keeps one: a request whose
        // app failed for it is answered 413, 408 or 400 by the server, not 500.
        let outcome = environ.extensions().get::<BodyOutcome>().cloned();
        let response = driver::call(&self.inner, environ);
        Body::from_future(async move {
            let response = response.await;
            let answered = driver::failure(&response)
                .and_then(|failure| driver::failure_status(failure, outcome.as_ref()));
            let (parts, body) = response.into_parts();
            let mut pending = pending;
            pending.record.status = answered.unwrap_or(parts.status);
            let logged = Logged { body, pending };
            Ok(gateway_core::convert::respond(
                start,
                http::Response::from_parts(parts, logged),
            ))
        })
    }
}

/// The log line of a request whose response is not over yet. Dropped unwritten, the request
/// ended before its response head (the client went away, or the server dropped the request):
/// it is logged with status 499, nginx's "client closed request", as incomplete.
struct Pending {
    record: LogRecord,
    started: Instant,
    format: Arc<dyn LogFormat>,
    sink: Sink,
    written: bool,
}

/// The status logged for a request that ended before its response head (nginx's 499).
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
};

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.written {
            self.record.status = CLIENT_CLOSED_REQUEST;
            self.write(0, true);
        }
    }
}

impl Pending {
    /// Writes the line, once.
    fn write(&mut self, bytes_sent: u64, incomplete: bool) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        self.record.bytes_sent = bytes_sent;
        self.record.incomplete = incomplete;
        self.record.duration = self.started.elapsed();
        let line = self.format.format(&self.record);
        match &self.sink {
            Sink::Custom(sink) => sink.write_line(&line),
            Sink::Errors(sink) => {
                let mut line = line.into_bytes();
                line.push(b'\n');
                sink.write_message(&line);
            }
        }
    }
}

/// The response body, logged when it is over.
struct Logged {
    body: ResponseBody,
    pending: Pending,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.pending.write(this.body.bytes_sent(), false),
            Poll::Ready(Some(Err(_))) => this.pending.write(this.body.bytes_sent(), true),
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, or nobody read it. A body with nothing
        // left to send (HEAD, 204, a sent full body) is complete all the same.
        let complete = http_body::Body::is_end_stream(&self.body);
        self.pending.write(self.body.bytes_sent(), !complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Builder;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    fn recorder() -> (AccessLog, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        (
            AccessLog::new().sink(move |l: &str| sink.lock().unwrap().push(l.to_owned())),
            lines,
        )
    }

    fn environ(method: &str) -> Environ {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_owned());
        environ.set("REQUEST_URI", "/a?b=1");
        environ.set("SERVER_PROTOCOL", "HTTP/1.0");
        environ.set("REMOTE_ADDR", "10.1.2.3");
        environ.set("HTTP_USER_AGENT", "curl/8");
        environ.set("HTTP_REFERER", "http://r/");
        environ
    }

    #[test]
    fn a_complete_response_is_logged_with_its_size() {
        let (log, lines) = recorder();
        let app = Builder::new()
            .with(log)
            .app(|_: Environ, s: StartResponse| {
                let _ = s.start(StatusCode::CREATED, http::HeaderMap::new());
                Body::from_chunks(["abc", "de"])
            });
        let response = gateway_core::block_on(driver::call(&app, environ("POST")));
        assert!(
            lines.lock().unwrap().is_empty(),
            "not before the body is sent"
        );
        gateway_core::block_on(response.into_body().collect()).unwrap();
        let line = lines.lock().unwrap()[0].clone();
        assert!(
            line.ends_with("\"POST /a?b=1 HTTP/1.0\" 201 5 \"http://r/\" \"curl/8\""),
            "{line}"
        );
        assert!(line.starts_with("10.1.2.3 - - ["), "{line}");
    }

    #[test]
    fn a_format_may_log_the_request_id() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let log = AccessLog::new()
            .format(|r: &LogRecord| format!("{} {}", r.request_id, r.status.as_u16()))
            .sink(move |l: &str| sink.lock().unwrap().push(l.to_owned()));
        let app = Builder::new()
            .with(crate::RequestId::new())
            .with(log)
            .app(|_: Environ, _: StartResponse| -> Body { panic!("a bug") });
        let mut request = environ("GET");
        request.set("HTTP_X_REQUEST_ID", "trace-7");
        let response = gateway_core::block_on(driver::call(&app, request));
        assert_eq!(response.headers()["x-request-id"], "trace-7");
        drop(response);
        assert_eq!(*lines.lock().unwrap(), ["trace-7 500"]);
        // Without a request id: `-`.
        let (log, lines) = recorder();
        let app = Builder::new()
            .with(log.format(|r: &LogRecord| r.request_id.clone()))
            .app(|_: Environ, _: StartResponse| -> Body { panic!("a bug") });
        drop(gateway_core::block_on(driver::call(&app, environ("GET"))));
        assert_eq!(*lines.lock().unwrap(), ["-"]);
    }

    #[test]
    fn an_app_failed_by_its_body_is_logged_with_the_servers_answer() {
        use gateway_core::{BodyFailure, BodyOutcome, Input};
        use std::io::Read;
        let (log, lines) = recorder();
        // The app reads its body, and fails with the read's error before its head.
        let app = Builder::new()
            .with(log)
            .app(|mut environ: Environ, _: StartResponse| {
                match environ.input().read_to_end(&mut Vec::new()) {
                    Ok(_) => Body::from("read"),
                    Err(error) => Body::error(error),
                }
            });
        let status = |outcome: Option<BodyFailure>, input: Input| {
            let mut environ = environ("POST");
            environ.set_input(input);
            if let Some(failure) = outcome {
                let noted = BodyOutcome::new();
                noted.note(failure);
                environ.extensions_mut().insert(noted);
            }
            let response = gateway_core::block_on(driver::call(&app, environ));
            drop(response);
            let line = lines.lock().unwrap().pop().unwrap();
            line.split('"').nth(2).unwrap().trim().to_owned()
        };
        let failing = || Input::from_body(Failing);
        assert_eq!(status(Some(BodyFailure::TooSlow), failing()), "408 0");
        assert_eq!(status(Some(BodyFailure::TooLarge), failing()), "413 0");
        assert_eq!(status(None, failing()), "500 0");
        // Cut short of its length: the client's doing, 400, with no note from the server.
        let short = Input::from_bytes("abc").with_limit(5);
        assert_eq!(status(None, short), "400 0");
    }

    /// A request body whose first read fails.
    struct Failing;

    impl http_body::Body for Failing {
        type Data = bytes::Bytes;
        type Error = gateway_core::BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Ready(Some(Err("timed out".into())))
        }
    }

    #[test]
    fn a_request_dropped_before_its_head_is_logged_as_499() {
        let (log, lines) = recorder();
        // An app that never decides its answer; the client goes away meanwhile.
        let app = Builder::new()
            .with(log)
            .app(|_: Environ, _: StartResponse| {
                Body::from_future(std::future::pending::<Result<Body, gateway_core::BoxError>>())
            });
        let mut response = Box::pin(driver::call(&app, environ("GET")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(response.as_mut().poll(&mut cx).is_pending());
        assert!(lines.lock().unwrap().is_empty(), "not while it runs");
        drop(response);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].ends_with("\"GET /a?b=1 HTTP/1.0\" 499 0 \"http://r/\" \"curl/8\""),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn a_client_cannot_end_the_line_or_move_its_fields() {
        let (log, lines) = recorder();
        let app = Builder::new()
            .with(log)
            .app(|_: Environ, s: StartResponse| {
                let _ = s.start(StatusCode::OK, http::HeaderMap::new());
                Body::empty()
            });
        let mut environ = environ("GET");
        environ.set("HTTP_USER_AGENT", "x\" 200 0 \"-\" \"forged");
        environ.remove("REQUEST_URI");
        environ.set("PATH_INFO", &b"/a\nfake-line \xe9"[..]);
        let response = gateway_core::block_on(driver::call(&app, environ));
        gateway_core::block_on(response.into_body().collect()).unwrap();
        let line = lines.lock().unwrap()[0].clone();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("\"GET /a\\x0afake-line \\xe9 "), "{line}");
        assert!(
            line.ends_with("\"x\\\" 200 0 \\\"-\\\" \\\"forged\""),
            "{line}"
        );
    }

    #[test]
    fn a_dropped_response_is_logged_as_incomplete() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let log = AccessLog::new()
            .format(|r: &LogRecord| {
                format!("{} {} {}", r.status.as_u16(), r.bytes_sent, r.incomplete)
            })
            .sink(move |l: &str| sink.lock().unwrap().push(l.to_owned()));
        let app = Builder::new()
            .with(log)
            .app(|_: Environ, s: StartResponse| {
                let _ = s.start(StatusCode::OK, http::HeaderMap::new());
                Body::from_chunks(["abc", "de"])
            });
        let response = gateway_core::block_on(driver::call(&app, environ("GET")));
        let mut body = response.into_body();
        gateway_core::block_on(body.frame()).unwrap().unwrap();
        drop(body);
        assert_eq!(lines.lock().unwrap()[0], "200 3 true");

        // HEAD: nothing to send, complete when dropped.
        let response = gateway_core::block_on(driver::call(&app, environ("HEAD")));
        drop(response);
        assert_eq!(lines.lock().unwrap()[1], "200 0 false");
    }

    #[test]
    fn the_default_sink_is_the_error_stream() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let app = Builder::new()
            .with(AccessLog::new())
            .app(|_: Environ, s: StartResponse| {
                let _ = s.start(StatusCode::NO_CONTENT, http::HeaderMap::new());
                Body::empty()
            });
        let mut environ = environ("GET");
        environ.set_errors(gateway_core::ErrorStream::new(move |m: &[u8]| {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(m).into_owned())
        }));
        let response = gateway_core::block_on(driver::call(&app, environ));
        gateway_core::block_on(response.into_body().collect()).unwrap();
        let line = lines.lock().unwrap()[0].clone();
        assert!(line.contains("\" 204 0 "), "{line}");
        assert!(line.ends_with('\n'));
    }
}
