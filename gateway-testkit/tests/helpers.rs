//! The helpers for testing middleware alone ([`MockApp`]) and adapters without sockets
//! ([`ScriptedStream`]), used as their users would.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gateway_core::{App, Body, Builder, Environ, StartResponse};
use gateway_servers::fastcgi::codec::{self, ProtocolStatus, Record, StreamKind};
use gateway_servers::fastcgi::server::{Options, serve_connection};
use gateway_servers::runtime::{Config, Runtime};
use gateway_testkit::clients::{FrontEnd, WireRequest, cgi_vars};
use gateway_testkit::scripted::ScriptedStream;
use gateway_testkit::{MockApp, MockResponse, Mode, TestClient, Validator};
use http::StatusCode;

#[test]
fn a_mock_app_answers_by_its_script_and_records_every_call() {
    let inner = MockApp::new()
        .then(MockResponse::status(StatusCode::CREATED).header("x-a", "1"))
        .then(MockResponse::ok("late").fail_after_head())
        .then(MockResponse::ok("never").fail_before_head())
        .otherwise(MockResponse::ok("default").without_reading_the_body());
    let client = TestClient::new(inner.clone());
    let first = client.put("/one").body("payload").send();
    assert_eq!(
        (first.status(), first.header("x-a")),
        (StatusCode::CREATED, Some("1"))
    );
    let second = client.get("/two").send();
    assert!(second.body_error().is_some(), "cut short after the head");
    assert_eq!(client.get("/three").send().status(), 500);
    let fourth = client.post("/four").body("unread").send();
    assert_eq!(fourth.text(), "default");

    let calls = inner.calls();
    assert_eq!(inner.call_count(), 4);
    let paths: Vec<&[u8]> = calls
        .iter()
        .map(|c| c.environ.get("PATH_INFO").unwrap())
        .collect();
    assert_eq!(paths, [&b"/one"[..], b"/two", b"/three", b"/four"]);
    assert_eq!(calls[0].body, "payload");
    assert_eq!(calls[3].body, "", "told not to read");
    assert!(calls.iter().all(|c| c.body_closed()));
}

/// A broken middleware: it reads the inner app's body to its end, answers with a copy of its
/// data, and leaks the inner body instead of dropping it.
struct Leaky<A>(A);

impl<A: App> App for Leaky<A> {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let mut inner = self.0.call(environ, start);
        let mut data = Vec::new();
        while let Some(Ok(frame)) =
            gateway_core::block_on(http_body_util::BodyExt::frame(&mut inner))
        {
            if let Ok(chunk) = frame.into_data() {
                data.extend_from_slice(&chunk);
            }
        }
        std::mem::forget(inner);
        Body::from(data)
    }
}

/// The same middleware, fixed: it drops the inner body.
struct Copying<A>(A);

impl<A: App> App for Copying<A> {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let inner = self.0.call(environ, start);
        match gateway_core::block_on(http_body_util::BodyExt::collect(inner)) {
            Ok(collected) => Body::from(collected.to_bytes()),
            Err(error) => Body::error(error),
        }
    }
}

#[test]
fn a_middleware_that_leaks_the_inner_body_fails_the_close_checks() {
    // Under a mock: both the mock's record and the client see the leak, whether the inner body
    // was read to its end or failed before its head.
    for answer in [
        MockResponse::ok("leaked"),
        MockResponse::ok("never").fail_before_head(),
    ] {
        let inner = MockApp::new().then(answer.clone());
        let response = TestClient::new(Leaky(inner.clone())).get("/").send();
        assert!(!inner.calls()[0].body_closed(), "{answer:?}");
        assert!(!response.body_closed(), "{answer:?}");

        let inner = MockApp::new().then(answer.clone());
        let response = TestClient::new(Copying(inner.clone())).get("/").send();
        assert!(inner.calls()[0].body_closed(), "{answer:?}");
        assert!(response.body_closed(), "{answer:?}");
    }

    // Under validators on both sides, with a plain app: the inner validator watches the app's
    // own body for the client.
    fn app(_: Environ, start: StartResponse) -> Body {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
        let _ = start.start(StatusCode::OK, headers);
        Body::from("hello")
    }
    let leaky = Builder::new()
        .with(Validator::new(Mode::Warn))
        .with(Leaky)
        .with(Validator::new(Mode::Warn))
        .app(app);
    let response = TestClient::new(leaky).get("/").send();
    assert_eq!(response.text(), "hello");
    assert!(!response.body_closed(), "the app's body was leaked");
    let fixed = Builder::new()
        .with(Validator::new(Mode::Warn))
        .with(Copying)
        .with(Validator::new(Mode::Warn))
        .app(app);
    assert!(TestClient::new(fixed).get("/").send().body_closed());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A FastCGI request for `request`, as records.
fn fastcgi_wire(request: &WireRequest) -> Bytes {
    let mut wire = BytesMut::new();
    codec::encode_begin_request(&mut wire, 1, codec::Role::Responder, false);
    let mut pairs = BytesMut::new();
    for (name, value) in cgi_vars(request, &FrontEnd::default()) {
        codec::encode_pair(&mut pairs, &name, &value);
    }
    codec::encode_stream(&mut wire, StreamKind::Params, 1, &pairs);
    codec::encode_end_of_stream(&mut wire, StreamKind::Params, 1);
    let body = request.body.bytes();
    codec::encode_stream(&mut wire, StreamKind::Stdin, 1, &body);
    codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
    wire.freeze()
}

fn records(mut wire: BytesMut) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(record) = codec::decode_record(&mut wire).unwrap() {
        out.push(record);
    }
    assert!(wire.is_empty(), "a record cut short");
    out
}

#[test]
fn the_fastcgi_adapter_served_byte_by_byte_with_pauses() {
    let wire = fastcgi_wire(&WireRequest::post("/scripted?q=1", "body bytes"));
    let (head, rest) = wire.split_at(20);
    let stream = ScriptedStream::new()
        .read(Bytes::copy_from_slice(head))
        .pause(Duration::from_millis(20))
        .read(Bytes::copy_from_slice(rest))
        // A web server waits for the answer with its connection open: an end of the stream
        // would say it went away, and its request would be dropped.
        .hang()
        .read_size(1);
    let written = stream.written();
    runtime()
        .block_on(async {
            let runtime = Runtime::new(gateway_testkit::echo::echo, Config::default());
            serve_connection(runtime, stream, None, &Options::default()).await
        })
        .unwrap();
    let records = records(BytesMut::from(&written.bytes()[..]));
    let stdout: Vec<u8> = records
        .iter()
        .filter_map(|r| match r {
            Record::Stream {
                kind: StreamKind::Stdout,
                data,
                ..
            } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    let stdout = String::from_utf8(stdout).unwrap();
    assert!(stdout.starts_with("Status: 200 OK\r\n"), "{stdout}");
    assert!(stdout.contains("\"PATH_INFO\":\"/scripted\""), "{stdout}");
    assert!(stdout.contains("\"body_len\":10"), "{stdout}");
    assert!(matches!(
        records.last(),
        Some(Record::EndRequest {
            protocol_status: ProtocolStatus::RequestComplete,
            ..
        })
    ));
}

#[test]
fn the_fastcgi_adapter_survives_a_broken_read_and_a_vanished_peer() {
    let wire = fastcgi_wire(&WireRequest::get("/x"));
    // The connection breaks in the middle of the params.
    let broken = ScriptedStream::new()
        .read(wire.slice(..30))
        .error(std::io::ErrorKind::ConnectionReset);
    let vanished = ScriptedStream::new()
        .read(wire.clone())
        .hang()
        .fail_writes_after(10);
    let written = vanished.written();
    runtime().block_on(async {
        let runtime = Runtime::new(gateway_testkit::echo::echo, Config::default());
        let first = serve_connection(runtime.clone(), broken, None, &Options::default()).await;
        assert!(first.is_err(), "the read error is the connection's end");
        // Writes fail after 10 bytes: the request ends, nothing hangs or panics.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            serve_connection(runtime, vanished, None, &Options::default()),
        )
        .await
        .expect("the adapter gives up on a vanished peer");
    });
    assert_eq!(written.bytes().len(), 10);
}

#[test]
fn the_uwsgi_adapter_from_scripted_bytes() {
    let request = WireRequest::post("/u", "abc");
    let vars = cgi_vars(&request, &FrontEnd::default());
    let mut wire = BytesMut::new();
    gateway_servers::uwsgi::codec::encode_request(
        &mut wire,
        0,
        vars.iter().map(|(n, v)| (&n[..], &v[..])),
    )
    .unwrap();
    wire.extend_from_slice(b"abc");
    let stream = ScriptedStream::new().read(wire.freeze()).read_size(7);
    let written = stream.written();
    runtime()
        .block_on(async {
            let runtime = Runtime::new(gateway_testkit::echo::echo, Config::default());
            let max = gateway_servers::uwsgi::codec::MAX_VARS_SIZE;
            gateway_servers::uwsgi::server::serve_connection(runtime, stream, None, max).await
        })
        .unwrap();
    let answer = String::from_utf8(written.bytes()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\"body_len\":3"), "{answer}");
}
