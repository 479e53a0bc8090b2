//! The driver's enforcement of the contract, rule by rule (the numbers of the validator's rule
//! ids, `gateway_testkit::validator::Rule`: a digest of PEP 3333's rules kept outside this
//! repository).

use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_core::driver::{self, INTERNAL_ERROR_BODY, ResponseBody};
use gateway_core::{App, Body, BoxError, Environ, ErrorKind, ErrorStream, StartResponse};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body as _, Frame};

/// A body that records when it is dropped and how often it was polled.
struct Tracked {
    inner: Body,
    dropped: Arc<AtomicBool>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

fn tracked(inner: Body) -> (Body, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let body = Body::new(Tracked {
        inner,
        dropped: dropped.clone(),
    });
    (body, dropped)
}

fn request(method: &str) -> (Environ, Arc<Mutex<Vec<String>>>) {
    let mut environ = Environ::new();
    environ.set("REQUEST_METHOD", method.to_owned());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    environ.set_errors(ErrorStream::new(move |line: &[u8]| {
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(line).into_owned())
    }));
    (environ, log)
}

fn run(app: &impl App, method: &str) -> (Response<ResponseBody>, Arc<Mutex<Vec<String>>>) {
    let (environ, log) = request(method);
    (gateway_core::block_on(driver::call(app, environ)), log)
}

/// Collects the body's data, and the error that ended it, if any.
fn drain(response: Response<ResponseBody>) -> (Vec<u8>, Option<gateway_core::Error>, bool) {
    let mut body = response.into_body();
    let mut data = Vec::new();
    let error = gateway_core::block_on(std::future::poll_fn(|cx| {
        loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(e)),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(d) = frame.into_data() {
                        assert!(!d.is_empty(), "the driver never yields empty chunks");
                        data.extend_from_slice(&d);
                    }
                }
            }
        }
    }));
    (data, error, body.must_close())
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn failure(response: &Response<ResponseBody>) -> ErrorKind {
    response
        .extensions()
        .get::<Arc<gateway_core::Error>>()
        .expect("a driver-made 500 carries its error")
        .kind()
}

#[test]
fn rule_49_start_may_happen_inside_the_first_poll() {
    let app = |_: Environ, start: StartResponse| {
        Body::from_future(async move {
            start.start(StatusCode::ACCEPTED, HeaderMap::new())?;
            Ok(Body::from("late"))
        })
    };
    let (response, _) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(drain(response).0, b"late");
}

#[test]
fn rule_53_the_head_waits_for_the_first_non_empty_chunk() {
    // Empty chunks first, then start, then data: the head is decided only at the data.
    let calls = Arc::new(AtomicUsize::new(0));
    let app = {
        let calls = calls.clone();
        move |_: Environ, start: StartResponse| {
            let calls = calls.clone();
            let mut start = Some(start);
            Body::from_chunks((0..4).map(move |i| {
                calls.fetch_add(1, Ordering::SeqCst);
                if i == 2 {
                    let _ = start
                        .take()
                        .unwrap()
                        .start(StatusCode::OK, HeaderMap::new());
                    Bytes::from_static(b"data")
                } else if i < 2 {
                    Bytes::new()
                } else {
                    Bytes::from_static(b"more")
                }
            }))
        }
    };
    let (response, _) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "polled up to the first data only"
    );
    assert!(
        response.headers().get(CONTENT_LENGTH).is_none(),
        "streaming: length unknown"
    );
    assert_eq!(drain(response).0, b"datamore");
}

#[test]
fn rule_49_data_before_start_is_a_500_and_the_body_is_dropped() {
    let dropped = Arc::new(AtomicBool::new(false));
    let app = {
        let dropped = dropped.clone();
        move |_: Environ, _start: StartResponse| {
            Body::new(Tracked {
                inner: Body::from("too early"),
                dropped: dropped.clone(),
            })
        }
    };
    let (response, log) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failure(&response), ErrorKind::NotStarted);
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(drain(response).0, INTERNAL_ERROR_BODY.as_bytes());
    assert!(log.lock().unwrap()[0].contains("before the response was started"));
}

#[test]
fn a_body_that_ends_without_start_is_a_500() {
    let (response, _) = run(&|_: Environ, _: StartResponse| Body::empty(), "GET");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failure(&response), ErrorKind::NotStarted);
}

#[test]
fn a_refused_start_is_a_500_that_says_why() {
    let app = |_: Environ, start: StartResponse| match start
        .start(StatusCode::OK, headers(&[("connection", "close")]))
    {
        Ok(_) => Body::from("unreachable"),
        Err(error) => Body::error(error),
    };
    let (response, log) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failure(&response), ErrorKind::StartRefused);
    assert!(log.lock().unwrap()[0].contains("hop-by-hop header `connection`"));
}

#[test]
fn rule_54_written_data_goes_first_and_fixes_the_head() {
    let restart = Arc::new(Mutex::new(None));
    let app = {
        let restart = restart.clone();
        move |_: Environ, start: StartResponse| {
            let mut writer = start.start(StatusCode::OK, HeaderMap::new()).unwrap();
            writer.write("one,").unwrap();
            writer.write_all(b"two,").unwrap();
            let outcome =
                writer.restart_on_error("late".into(), StatusCode::BAD_GATEWAY, HeaderMap::new());
            *restart.lock().unwrap() = Some(outcome.map_err(|e| e.to_string()));
            Body::from("three")
        }
    };
    let (response, _) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        *restart.lock().unwrap(),
        Some(Err("late".to_owned())),
        "rule 51: a restart after write() hands back the error"
    );
    assert_eq!(drain(response).0, b"one,two,three");
}

#[test]
fn rule_55_write_from_inside_the_body_is_refused() {
    let result = Arc::new(Mutex::new(None));
    let app = {
        let result = result.clone();
        move |_: Environ, start: StartResponse| {
            let result = result.clone();
            Body::from_future(async move {
                let mut writer = start.start(StatusCode::OK, HeaderMap::new())?;
                *result.lock().unwrap() = Some(writer.write("nope").is_err());
                Ok(Body::from("body"))
            })
        }
    };
    let (response, _) = run(&app, "GET");
    assert_eq!(drain(response).0, b"body");
    assert_eq!(*result.lock().unwrap(), Some(true));
}

#[test]
fn rule_51_restart_before_anything_was_sent_replaces_the_head() {
    let app = |_: Environ, start: StartResponse| {
        let mut writer = start
            .start(StatusCode::OK, headers(&[("x-first", "1")]))
            .unwrap();
        writer
            .restart_on_error(
                "db down".into(),
                StatusCode::SERVICE_UNAVAILABLE,
                HeaderMap::new(),
            )
            .unwrap();
        Body::from("sorry")
    };
    let (response, _) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("x-first").is_none());
    assert_eq!(drain(response).0, b"sorry");
}

#[test]
fn rule_62_content_length_is_added_when_the_whole_body_is_known() {
    let (response, _) = run(
        &|_: Environ, s: StartResponse| {
            let _ = s.start(StatusCode::OK, HeaderMap::new());
            "12345"
        },
        "GET",
    );
    assert_eq!(response.headers()[CONTENT_LENGTH], "5");
    assert_eq!(response.body().size_hint().exact(), Some(5));
    assert_eq!(drain(response).0, b"12345");

    // An app with write() and an empty body: the length is what was written.
    let (response, _) = run(
        &|_: Environ, s: StartResponse| {
            let mut w = s.start(StatusCode::OK, HeaderMap::new()).unwrap();
            w.write("abc").unwrap();
            Body::empty()
        },
        "GET",
    );
    assert_eq!(response.headers()[CONTENT_LENGTH], "3");
}

#[test]
fn rule_64_head_sends_no_body_but_keeps_the_length() {
    let (body, dropped) = tracked(Body::from_chunks(["abc", "def"]));
    let body = Mutex::new(Some(body));
    let app = move |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, headers(&[("content-length", "6")]));
        body.lock().unwrap().take().unwrap()
    };
    let (response, _) = run(&app, "HEAD");
    assert_eq!(response.headers()[CONTENT_LENGTH], "6");
    assert!(dropped.load(Ordering::SeqCst), "the body is closed at once");
    assert!(response.body().is_end_stream());
    let (data, error, _) = drain(response);
    assert!(data.is_empty() && error.is_none());

    // Without a declared length, the length of a known body is given.
    let (response, _) = run(
        &|_: Environ, s: StartResponse| {
            let _ = s.start(StatusCode::OK, HeaderMap::new());
            "hello"
        },
        "HEAD",
    );
    assert_eq!(response.headers()[CONTENT_LENGTH], "5");
    assert!(drain(response).0.is_empty());

    // An app that knows it answers HEAD and returns no body says nothing of the length: no
    // `Content-Length: 0` for a resource that a GET would get whole.
    let (response, _) = run(
        &|_: Environ, s: StartResponse| {
            let _ = s.start(StatusCode::OK, HeaderMap::new());
            Body::empty()
        },
        "HEAD",
    );
    assert!(!response.headers().contains_key(CONTENT_LENGTH));
    assert!(drain(response).0.is_empty());
}

#[test]
fn rule_65_no_body_for_1xx_204_304() {
    for (status, keeps_length) in [(204, false), (304, true), (103, false), (100, false)] {
        let (body, dropped) = tracked(Body::from("ignored"));
        let body = Mutex::new(Some(body));
        let app = move |_: Environ, s: StartResponse| {
            let status = StatusCode::from_u16(status).unwrap();
            let _ = s.start(status, headers(&[("content-length", "7")]));
            body.lock().unwrap().take().unwrap()
        };
        let (response, _) = run(&app, "GET");
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers().contains_key(CONTENT_LENGTH),
            keeps_length,
            "{status}"
        );
        assert!(dropped.load(Ordering::SeqCst), "{status}");
        assert!(drain(response).0.is_empty(), "{status}");
    }
}

#[test]
fn rule_61_a_body_in_memory_too_long_marks_the_connection_with_the_head() {
    for (body, declared, marked, sent) in [
        ("hello world", "5", true, &b"hello"[..]),
        ("hello", "5", false, b"hello"),
        ("hel", "5", false, b"hel"),
        ("", "0", false, b""),
    ] {
        let app = move |_: Environ, s: StartResponse| {
            let _ = s.start(StatusCode::OK, headers(&[("content-length", declared)]));
            body
        };
        let (response, _) = run(&app, "GET");
        assert_eq!(
            response.body().must_close(),
            marked,
            "{body:?} as {declared}"
        );
        let (data, error, must_close) = drain(response);
        assert_eq!(data, sent);
        assert_eq!(must_close, marked);
        assert_eq!(
            error.is_some(),
            body.len() < 5 && declared == "5",
            "{body:?}"
        );
    }
    // A HEAD response sends no body, so nothing is cut.
    let app = |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, headers(&[("content-length", "5")]));
        "hello world"
    };
    let (response, _) = run(&app, "HEAD");
    assert!(!response.body().must_close());
}

#[test]
fn rule_61_a_longer_body_is_cut_and_the_connection_marked() {
    let (body, dropped) = tracked(Body::from_chunks(["abc", "defgh", "ijk"]));
    let body = Mutex::new(Some(body));
    let app = move |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, headers(&[("content-length", "5")]));
        body.lock().unwrap().take().unwrap()
    };
    let (response, log) = run(&app, "GET");
    let (data, error, must_close) = drain(response);
    assert_eq!(data, b"abcde");
    assert!(error.is_none());
    assert!(must_close);
    assert!(dropped.load(Ordering::SeqCst));
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("longer than its Content-Length"))
    );
}

#[test]
fn rule_61_a_shorter_body_ends_in_an_error() {
    let app = |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, headers(&[("content-length", "10")]));
        Body::from_chunks(["abc", "de"])
    };
    let (response, _) = run(&app, "GET");
    let (data, error, _) = drain(response);
    assert_eq!(data, b"abcde");
    let error = error.expect("a short body is reported");
    assert_eq!(error.kind(), ErrorKind::ShortBody);
    assert!(error.to_string().contains("5 of the 10"), "{error}");
}

#[test]
fn an_invalid_content_length_is_a_500() {
    for bad in ["abc", "-1", "1, 2"] {
        let app = move |_: Environ, s: StartResponse| {
            let _ = s.start(StatusCode::OK, headers(&[("content-length", bad)]));
            "x"
        };
        let (response, _) = run(&app, "GET");
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{bad}"
        );
        assert_eq!(failure(&response), ErrorKind::InvalidContentLength);
    }
    // Repeated but equal values are one length.
    let app = |_: Environ, s: StartResponse| {
        let _ = s.start(
            StatusCode::OK,
            headers(&[("content-length", "1"), ("content-length", "1")]),
        );
        "x"
    };
    assert_eq!(run(&app, "GET").0.status(), StatusCode::OK);
}

#[test]
fn rule_56_failures_before_the_head_become_a_500() {
    let (response, log) = run(
        &|_: Environ, _: StartResponse| Body::error("no database"),
        "GET",
    );
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(failure(&response), ErrorKind::App);
    assert!(log.lock().unwrap()[0].contains("no database"));

    let (response, _) = run(
        &|_: Environ, _: StartResponse| -> Body { panic!("in the call") },
        "GET",
    );
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failure(&response), ErrorKind::Panic);

    // A HEAD request gets the 500 without its body.
    let (response, _) = run(&|_: Environ, _: StartResponse| Body::error("x"), "HEAD");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(drain(response).0.is_empty());
}

#[test]
fn a_panic_inside_the_body_before_the_head_is_a_500() {
    let app = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from_chunks((0..1).map(|_| -> Bytes { panic!("in the body") }))
    };
    let (response, log) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failure(&response), ErrorKind::Panic);
    assert!(log.lock().unwrap()[0].contains("in the body"));
}

#[test]
fn rule_56_failures_after_the_head_abort_the_response() {
    let (body, dropped) = tracked(Body::try_from_chunks([
        Ok::<_, BoxError>("partial"),
        Err("lost the backend".into()),
        Ok("never"),
    ]));
    let body = Mutex::new(Some(body));
    let app = move |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, HeaderMap::new());
        body.lock().unwrap().take().unwrap()
    };
    let (response, log) = run(&app, "GET");
    assert_eq!(response.status(), StatusCode::OK);
    let (data, error, _) = drain(response);
    assert_eq!(data, b"partial");
    assert_eq!(error.unwrap().kind(), ErrorKind::App);
    assert!(dropped.load(Ordering::SeqCst));
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("after the head was sent"))
    );

    let app = |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, HeaderMap::new());
        let mut n = 0;
        Body::from_chunks(std::iter::from_fn(move || {
            n += 1;
            assert!(n < 2, "panic on the second chunk");
            Some("ok")
        }))
    };
    let (response, _) = run(&app, "GET");
    let (data, error, _) = drain(response);
    assert_eq!(data, b"ok");
    assert_eq!(error.unwrap().kind(), ErrorKind::Panic);
}

#[test]
fn rule_58_dropping_the_response_closes_the_body() {
    // The client went away mid-body: the server drops the response body.
    let (body, dropped) = tracked(Body::from_chunks(["a", "b", "c"]));
    let body = Mutex::new(Some(body));
    let app = move |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, HeaderMap::new());
        body.lock().unwrap().take().unwrap()
    };
    let (response, _) = run(&app, "GET");
    let mut body = response.into_body();
    let first = gateway_core::block_on(std::future::poll_fn(|cx| {
        Pin::new(&mut body).poll_frame(cx)
    }));
    assert!(first.is_some());
    assert!(!dropped.load(Ordering::SeqCst));
    drop(body);
    assert!(dropped.load(Ordering::SeqCst));

    // Dropped before the head was even decided.
    let (body, dropped) = tracked(Body::from_future(std::future::pending()));
    let body = Mutex::new(Some(body));
    let app = move |_: Environ, _: StartResponse| body.lock().unwrap().take().unwrap();
    let (environ, _) = request("GET");
    let future = driver::call(&app, environ);
    drop(future);
    assert!(dropped.load(Ordering::SeqCst));
}

/// A body whose close() (its drop) panics.
struct PanicsOnClose(Body);

impl Drop for PanicsOnClose {
    fn drop(&mut self) {
        panic!("close failed");
    }
}

impl http_body::Body for PanicsOnClose {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

#[test]
fn a_panic_in_the_close_of_a_body_is_caught_and_logged_on_every_path() {
    /// Runs an app whose body is `inner` behind a panicking close, started with `pairs` (or
    /// not at all), then `finish`es the response as a server would.
    fn closing(
        method: &str,
        pairs: Option<&'static [(&'static str, &'static str)]>,
        inner: fn() -> Body,
        finish: fn(driver::ResponseFuture),
    ) -> Vec<String> {
        let app = move |_: Environ, start: StartResponse| {
            if let Some(pairs) = pairs {
                let _ = start.start(StatusCode::OK, headers(pairs));
            }
            Body::new(PanicsOnClose(inner()))
        };
        let (environ, log) = request(method);
        finish(driver::call(&app, environ));
        log.lock().unwrap().clone()
    }
    fn drained(future: driver::ResponseFuture) {
        drain(gateway_core::block_on(future));
    }
    fn dropped_after_one_frame(future: driver::ResponseFuture) {
        let mut body = gateway_core::block_on(future).into_body();
        let first = gateway_core::block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        }));
        assert!(first.is_some());
        drop(body);
    }
    fn dropped_before_the_head(future: driver::ResponseFuture) {
        drop(future);
    }
    let lazy = || {
        Body::from_future(async {
            std::future::ready(()).await;
            Ok(Body::empty())
        })
    };
    let cases: [(&str, Vec<String>); 7] = [
        (
            "ended",
            closing("GET", Some(&[]), || Body::from_chunks(["a", "b"]), drained),
        ),
        (
            "dropped by the server",
            closing(
                "GET",
                Some(&[]),
                || Body::from_chunks(["a", "b"]),
                dropped_after_one_frame,
            ),
        ),
        (
            "cut at its Content-Length",
            closing(
                "GET",
                Some(&[("content-length", "1")]),
                || Body::from_chunks(["ab", "c"]),
                drained,
            ),
        ),
        (
            "no body for HEAD",
            closing("HEAD", Some(&[]), || Body::from_chunks(["a"]), drained),
        ),
        (
            "ended before the head",
            closing("GET", Some(&[]), lazy, drained),
        ),
        (
            "failed before the head",
            closing("GET", Some(&[]), || Body::error("no"), drained),
        ),
        (
            "dropped before the head",
            closing(
                "GET",
                None,
                || Body::from_future(std::future::pending()),
                dropped_before_the_head,
            ),
        ),
    ];
    for (case, log) in cases {
        assert!(
            log.iter()
                .any(|l| l.contains("app panicked: close failed (closing its body)")),
            "{case}: {log:?}"
        );
    }
}

#[test]
fn a_full_body_is_closed_as_soon_as_it_is_read() {
    let (body, dropped) = tracked(Body::from("all"));
    let body = Mutex::new(Some(body));
    let app = move |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, HeaderMap::new());
        body.lock().unwrap().take().unwrap()
    };
    let (response, _) = run(&app, "GET");
    assert!(
        dropped.load(Ordering::SeqCst),
        "closed before the body is sent"
    );
    assert_eq!(response.headers()[CONTENT_LENGTH], "3");
    assert_eq!(drain(response).0, b"all");
}

#[test]
fn trailers_pass_through() {
    let app = |_: Environ, s: StartResponse| {
        let _ = s.start(StatusCode::OK, HeaderMap::new());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from("x"))),
            Ok(Frame::trailers(headers(&[("x-checksum", "1")]))),
        ];
        Body::new(http_body_util::StreamBody::new(Frames(frames.into_iter())))
    };
    let (response, _) = run(&app, "GET");
    let collected =
        gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body())).unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "1");
    assert_eq!(collected.to_bytes(), "x");
}

struct Frames<I>(I);
impl<I: Iterator + Unpin> futures_core::Stream for Frames<I> {
    type Item = I::Item;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
        Poll::Ready(self.0.next())
    }
}

/// Asks for a request id on the driver's 500, along with two headers it must leave out (a
/// hop-by-hop one, and a `Content-Type` the 500 has already).
fn marked(start: StartResponse) -> StartResponse {
    use http::header::{CONNECTION, HeaderName};
    start
        .with_failure_header(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("r-1"),
        )
        .with_failure_header(CONNECTION, HeaderValue::from_static("close"))
        .with_failure_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
}

fn assert_marked_500(response: Response<ResponseBody>) {
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["x-request-id"], "r-1");
    assert!(!response.headers().contains_key(http::header::CONNECTION));
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(drain(response).0, INTERNAL_ERROR_BODY.as_bytes());
}

#[test]
fn failure_headers_reach_the_500_on_every_way_to_fail_before_the_head() {
    // A panic in the call.
    let panics = |_: Environ, s: StartResponse| -> Body {
        let _s = marked(s);
        panic!("a bug")
    };
    assert_marked_500(run(&panics, "GET").0);
    // A body that fails before its head.
    let fails = |_: Environ, s: StartResponse| {
        let _s = marked(s);
        Body::error("no database")
    };
    assert_marked_500(run(&fails, "GET").0);
    // Data in memory with no start.
    let unstarted = |_: Environ, s: StartResponse| {
        let _s = marked(s);
        Body::from("data")
    };
    assert_marked_500(run(&unstarted, "GET").0);
    // A body that panics in its first poll, which was to start the response.
    let lazy = |_: Environ, s: StartResponse| {
        let s = marked(s);
        Body::from_future(async move {
            let _s = s;
            panic!("a bug in the body");
        })
    };
    assert_marked_500(run(&lazy, "GET").0);
    // An invalid Content-Length, found when the head is taken; the app keeps its writer, so
    // the head is taken under the lock.
    let bad_length = |_: Environ, s: StartResponse| {
        let writer = marked(s)
            .start(StatusCode::OK, headers(&[("content-length", "x")]))
            .unwrap();
        Body::from_future(async move {
            drop(writer);
            Ok(Body::from("data"))
        })
    };
    assert_marked_500(run(&bad_length, "GET").0);
    let bad_length_in_memory = |_: Environ, s: StartResponse| {
        let _ = marked(s).start(StatusCode::OK, headers(&[("content-length", "x")]));
        Body::from("data")
    };
    assert_marked_500(run(&bad_length_in_memory, "GET").0);
}

#[test]
fn failure_headers_stay_off_other_responses_and_other_requests() {
    let succeeds = |_: Environ, s: StartResponse| {
        let _ = marked(s).start(StatusCode::OK, HeaderMap::new());
        Body::from("fine")
    };
    let (response, _) = run(&succeeds, "GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("x-request-id"));
    drop(response);
    // The next request on this thread gets the state the last one left (it is recycled): the
    // headers asked for there are gone.
    let panics = |_: Environ, _: StartResponse| -> Body { panic!("a bug") };
    let (response, _) = run(&panics, "GET");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!response.headers().contains_key("x-request-id"));
}

#[test]
fn failure_headers_go_out_with_a_relayed_failure() {
    // A middleware that plays server: the inner app's 500 is relayed outward as a failure.
    let inner = |_: Environ, s: StartResponse| {
        let _s = marked(s);
        Body::error("no database")
    };
    let outer = move |environ: Environ, start: StartResponse| {
        let response = driver::call(&inner, environ);
        Body::from_future(async move { Ok(gateway_core::convert::respond(start, response.await)) })
    };
    let (response, log) = run(&outer, "GET");
    assert_eq!(failure(&response), ErrorKind::App);
    assert_marked_500(response);
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "logged once: {:?}",
        log.lock().unwrap()
    );
}
