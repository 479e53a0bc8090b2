//! Every case of the conformance suite fails for a server that breaks its rule: this
//! project's servers with a deliberately broken layer between them and the app (an environ
//! mangled as a broken adapter would build it, a head or body mangled on the way out, a
//! configuration without a limit), or small broken servers written here (a naive HTTP server,
//! a naive FastCGI application, a naive uwsgi server, broken CGI programs).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gateway_core::convert::{percent_decode, respond};
use gateway_core::{App, Body, Environ, Input, StartResponse, UrlScheme, driver};
use gateway_servers::fastcgi::codec::{self as fcgi, Pairs, ProtocolStatus, Record, StreamKind};
use gateway_servers::runtime::{Config, Runtime};
use gateway_testkit::TestServer;
use gateway_testkit::conformance::{self, Hooks, Limits, Options, SuiteApp, Target, Verdict};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;

/// A server that breaks a rule, and what the suite needs to run against it.
struct Broken {
    target: Target,
    options: Options,
    _server: Option<TestServer>,
}

/// Runs one case against a broken server: it must fail.
fn assert_fails(id: &str, broken: &Broken) {
    let mut options = broken.options.clone();
    options.only = vec![id.to_owned()];
    let report = conformance::run(&broken.target, &options);
    let outcome = report
        .outcomes
        .iter()
        .find(|o| o.case.id == id)
        .unwrap_or_else(|| panic!("no case {id}"));
    assert!(
        matches!(outcome.verdict, Verdict::Fail(_)),
        "{id} did not fail against a server that breaks it: {:?}",
        outcome.verdict
    );
}

// ----- this project's HTTP server with a broken layer -----

/// The HTTP server with `wrap` between it and the suite's app.
fn layered(wrap: impl Fn(SuiteApp) -> Arc<dyn App> + Send + 'static, config: Config) -> Broken {
    let (app, hooks) = SuiteApp::new();
    let app = wrap(app);
    let server = TestServer::start(move |listener, stop| {
        gateway_servers::http::serve(listener, Runtime::new(app, config), stop)
    });
    Broken {
        target: Target::Http(server.addr.to_string()),
        options: options_with(hooks),
        _server: Some(server),
    }
}

fn options_with(hooks: Hooks) -> Options {
    Options {
        suite_app: true,
        hooks: Some(hooks),
        limits: Limits {
            max_body: Some(1024 * 1024),
        },
        ..Options::default()
    }
}

/// The environ changed before the app sees it, as a broken adapter would build it.
fn env(change: fn(&mut Environ)) -> Broken {
    layered(
        move |app| {
            Arc::new(move |mut environ: Environ, start: StartResponse| {
                change(&mut environ);
                app.call(environ, start)
            })
        },
        Config::default(),
    )
}

/// The status and headers changed on the way out.
fn head(change: fn(&mut StatusCode, &mut HeaderMap)) -> Broken {
    layered(
        move |app| {
            Arc::new(move |environ: Environ, start: StartResponse| {
                app.call(environ, start.map_head(change))
            })
        },
        Config::default(),
    )
}

/// The response, as the driver gives it, changed on the way out.
fn response(change: fn(http::Response<gateway_core::driver::ResponseBody>) -> Body) -> Broken {
    layered(
        move |app| {
            let app = Arc::new(app);
            Arc::new(move |environ: Environ, start: StartResponse| {
                let response = driver::call(&app, environ);
                Body::from_future(
                    async move { Ok(change_and_respond(start, response.await, change)) },
                )
            })
        },
        Config::default(),
    )
}

fn change_and_respond(
    start: StartResponse,
    response: http::Response<gateway_core::driver::ResponseBody>,
    change: fn(http::Response<gateway_core::driver::ResponseBody>) -> Body,
) -> Body {
    // The change decides the body; the head goes out as the app made it (status 200 for a
    // failure turned into an empty answer).
    let failed = driver::failure(&response).is_some();
    let (mut parts, body) = response.into_parts();
    if failed {
        parts.status = StatusCode::OK;
    }
    let body = change(http::Response::from_parts(parts.clone(), body));
    respond(start, http::Response::from_parts(parts, body))
}

/// The input replaced by what `make` makes of the whole body.
fn input(make: fn(Vec<u8>) -> Vec<u8>) -> Broken {
    layered(
        move |app| {
            Arc::new(move |mut environ: Environ, start: StartResponse| {
                let mut body = Vec::new();
                let _ = environ.input().read_to_end(&mut body);
                let body = make(body);
                environ.set("CONTENT_LENGTH", body.len().to_string());
                environ.set_input(Input::from_bytes(body));
                app.call(environ, start)
            })
        },
        Config::default(),
    )
}

fn set(environ: &mut Environ, name: &'static str, value: impl Into<Bytes>) {
    environ.set(name, value.into());
}

/// A body wrapper: `Buffered` holds everything back until the end; `Leaked` is never
/// closed; `Truncated` drops its last chunk; `Healed` ends normally where the body failed.
enum Mangle {
    Buffered,
    Leaked,
    Truncated,
    Healed,
}

struct Mangled {
    inner: Option<Body>,
    how: Mangle,
    held: Vec<Bytes>,
}

impl http_body::Body for Mangled {
    type Data = Bytes;
    type Error = gateway_core::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match this.how {
                        Mangle::Buffered | Mangle::Truncated => this.held.push(data),
                        _ => return Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.inner = None;
                    return match this.how {
                        Mangle::Healed => Poll::Ready(None),
                        _ => Poll::Ready(Some(Err(error))),
                    };
                }
                Poll::Ready(None) => {
                    this.inner = None;
                    if let Mangle::Truncated = this.how {
                        this.held.pop();
                    }
                    let all: Vec<u8> = this.held.concat();
                    return Poll::Ready(
                        (!all.is_empty()).then(|| Ok(http_body::Frame::data(Bytes::from(all)))),
                    );
                }
            }
        }
    }
}

impl Drop for Mangled {
    fn drop(&mut self) {
        if let Mangle::Leaked = self.how {
            // Never closed: the server "forgets" the body.
            std::mem::forget(self.inner.take());
        }
    }
}

fn mangled(how: fn() -> Mangle) -> Broken {
    layered(
        move |app| {
            Arc::new(move |environ: Environ, start: StartResponse| {
                Body::new(Mangled {
                    inner: Some(app.call(environ, start)),
                    how: how(),
                    held: Vec::new(),
                })
            })
        },
        Config::default(),
    )
}

/// Concurrent requests get each other's answers (a server that shares per-request state).
fn swapping() -> Broken {
    let waiting: Arc<Mutex<Vec<Environ>>> = Arc::default();
    layered(
        move |app| {
            let waiting = Arc::clone(&waiting);
            Arc::new(move |environ: Environ, start: StartResponse| {
                // Wait briefly for another request; answer with its environ if one comes.
                waiting.lock().unwrap().push(environ);
                std::thread::sleep(Duration::from_millis(200));
                let taken = waiting.lock().unwrap().pop();
                match taken {
                    Some(environ) => app.call(environ, start),
                    None => app.call(Environ::new(), start),
                }
            })
        },
        Config::default(),
    )
}

/// No body limit configured, while the suite is told there is one.
fn unlimited() -> Broken {
    let mut config = Config::default();
    config.max_body_size = u64::MAX;
    layered(|app| Arc::new(app), config)
}

// ----- a naive HTTP server -----

/// An HTTP server that gets everything wrong that is easy to get wrong: it keeps underscore
/// headers (the last one wins) and `Proxy`, sets no `REQUEST_URI`, has no head limit, ignores
/// `Expect` and chunked bodies, answers a malformed request by closing, sends every answer
/// chunked (HEAD, 204 and HTTP/1.0 included), and closes after each answer, or (with
/// `keep_open`) never closes, whatever the request says.
fn naive_http(keep_open: bool) -> Broken {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || naive_http_connection(stream, keep_open));
        }
    });
    Broken {
        target: Target::Http(address),
        options: Options::default(),
        _server: None,
    }
}

fn naive_http_connection(mut stream: TcpStream, keep_open: bool) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = request.parse(&buf[..end]) else {
            return;
        };
        let mut environ = Environ::new();
        let target = request.path.unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        set(
            &mut environ,
            "REQUEST_METHOD",
            request.method.unwrap_or("GET").to_owned(),
        );
        set(&mut environ, "SCRIPT_NAME", "");
        set(&mut environ, "PATH_INFO", path.to_owned());
        set(&mut environ, "QUERY_STRING", query.to_owned());
        set(&mut environ, "SERVER_NAME", "localhost");
        set(&mut environ, "SERVER_PORT", "80");
        set(&mut environ, "SERVER_PROTOCOL", "HTTP/1.1");
        set(&mut environ, "REMOTE_ADDR", "127.0.0.1");
        let mut length = 0;
        for header in request.headers.iter() {
            let name = header.name.to_ascii_uppercase().replace('-', "_");
            let var = match name.as_str() {
                "CONTENT_LENGTH" => {
                    length = std::str::from_utf8(header.value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    "CONTENT_LENGTH".to_owned()
                }
                "CONTENT_TYPE" => name,
                _ => format!("HTTP_{name}"),
            };
            environ.set(var, Bytes::copy_from_slice(header.value));
        }
        buf.drain(..end);
        while buf.len() < length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        environ.set_input(Input::from_bytes(body));
        let response = gateway_core::block_on(driver::call(&SuiteApp::new().0, environ));
        let (parts, body) = response.into_parts();
        let body = gateway_core::block_on(body.collect())
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut out = format!("HTTP/1.1 {}\r\n", parts.status).into_bytes();
        for (name, value) in &parts.headers {
            if name != "content-length" {
                out.extend_from_slice(format!("{name}: ").as_bytes());
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        out.extend_from_slice(&gateway_testkit::clients::http::encode_chunks(&[
            body.to_vec()
        ]));
        if stream.write_all(&out).is_err() || !keep_open {
            return;
        }
    }
}

// ----- a naive FastCGI application -----

/// A FastCGI application that reads only the first params record, takes every role for a
/// Responder, ignores management records and aborts by closing the connection, answers one
/// request at a time without a `Status:` line and without stderr, and closes after each
/// request (or, with `keep_open`, never).
fn naive_fastcgi(keep_open: bool) -> Broken {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || naive_fastcgi_connection(stream, keep_open));
        }
    });
    Broken {
        target: Target::FastCgi(address),
        options: Options {
            suite_app: true,
            all_roles: true,
            ..Options::default()
        },
        _server: None,
    }
}

fn naive_fastcgi_connection(mut stream: TcpStream, keep_open: bool) {
    let mut buf = BytesMut::new();
    let mut params: Option<Bytes> = None;
    let mut stdin = Vec::new();
    loop {
        let record = loop {
            match fcgi::decode_record(&mut buf) {
                Ok(Some(record)) => break record,
                Ok(None) => {}
                Err(_) => return,
            }
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        match record {
            Record::Stream {
                request_id: 1,
                kind: StreamKind::Params,
                data,
            } => {
                if params.is_none() {
                    params = Some(data);
                }
            }
            Record::Stream {
                request_id: 1,
                kind: StreamKind::Stdin,
                data,
            } if !data.is_empty() => {
                stdin.extend_from_slice(&data);
            }
            Record::Stream {
                request_id: 1,
                kind: StreamKind::Stdin,
                ..
            } => {
                let mut environ = Environ::new();
                for pair in Pairs::new(params.take().unwrap_or_default()).flatten() {
                    environ.set(pair.0, pair.1);
                }
                environ.set_input(Input::from_bytes(std::mem::take(&mut stdin)));
                let response = gateway_core::block_on(driver::call(&SuiteApp::new().0, environ));
                let (parts, body) = response.into_parts();
                let body = gateway_core::block_on(body.collect())
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mut stdout = Vec::new();
                for (name, value) in &parts.headers {
                    stdout.extend_from_slice(format!("{name}: ").as_bytes());
                    stdout.extend_from_slice(value.as_bytes());
                    stdout.extend_from_slice(b"\r\n");
                }
                stdout.extend_from_slice(b"\r\n");
                stdout.extend_from_slice(&body);
                let mut out = BytesMut::new();
                fcgi::encode_stream(&mut out, StreamKind::Stdout, 1, &stdout);
                fcgi::encode_end_of_stream(&mut out, StreamKind::Stdout, 1);
                fcgi::encode_end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
                if stream.write_all(&out).is_err() || !keep_open {
                    return;
                }
            }
            Record::BeginRequest { .. } | Record::Stream { .. } => {}
            // Management records and aborts: it gives up on the connection.
            _ => return,
        }
    }
}

// ----- a naive uwsgi server -----

/// A uwsgi server that answers CGI-style (a `Status:` line, no HTTP status line) and closes
/// on a ping without answering.
fn naive_uwsgi() -> Broken {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 65536];
            let n = stream.read(&mut buf).unwrap_or(0);
            if n == 0 || buf[0] == 100 {
                continue;
            }
            let _ = stream.write_all(
                b"Status: 200 OK\r\nContent-Type: application/json\r\n\r\n{\"environ\":{}}",
            );
        }
    });
    Broken {
        target: Target::Uwsgi(address),
        options: Options::default(),
        _server: None,
    }
}

// ----- broken CGI programs -----

fn cgi(script: &str) -> Broken {
    Broken {
        target: Target::Cgi(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        options: Options::default(),
        _server: None,
    }
}

/// Which broken server breaks each case.
fn breaker(id: &str) -> Broken {
    match id {
        "env-required" => env(|e| {
            e.remove("SERVER_PORT");
        }),
        "env-method" => env(|e| set(e, "REQUEST_METHOD", "GET")),
        "env-protocol" => env(|e| set(e, "SERVER_PROTOCOL", "HTTP/1.0")),
        "env-script-name" => env(|e| set(e, "SCRIPT_NAME", "/")),
        "env-url-scheme" => env(|e| e.set_url_scheme(UrlScheme::Https)),
        "env-remote-addr" => env(|e| set(e, "REMOTE_ADDR", "somewhere")),
        "path-decoded" => env(|e| {
            let raw = e
                .request_uri()
                .unwrap_or(b"")
                .split(|&b| b == b'?')
                .next()
                .unwrap_or(b"")
                .to_vec();
            set(e, "PATH_INFO", raw);
        }),
        "path-decoded-once" => env(|e| {
            let twice = percent_decode(e.path_info());
            set(e, "PATH_INFO", twice);
        }),
        "path-latin1" => env(|e| {
            let lossy = String::from_utf8_lossy(e.path_info()).into_owned();
            set(e, "PATH_INFO", lossy);
        }),
        "path-raw-target" => env(|e| {
            let decoded = e.path_info().to_vec();
            set(e, "REQUEST_URI", decoded);
        }),
        "path-root" => env(|e| set(e, "PATH_INFO", "")),
        "query-empty" => env(|e| {
            if e.query_string().is_empty() {
                e.remove("QUERY_STRING");
            }
        }),
        "query-raw" => env(|e| {
            let decoded = percent_decode(e.query_string());
            set(e, "QUERY_STRING", decoded);
        }),
        "query-question-mark" => env(|e| {
            let last = e
                .request_uri()
                .unwrap_or(b"")
                .rsplit(|&b| b == b'?')
                .next()
                .unwrap_or(b"")
                .to_vec();
            set(e, "QUERY_STRING", last);
        }),
        "hdr-passed" => env(|e| {
            e.remove("HTTP_X_CUSTOM_THING");
        }),
        "hdr-repeated" => env(|e| {
            let last = e
                .get_str("HTTP_X_MULTI")
                .and_then(|v| v.rsplit(',').next())
                .unwrap_or("")
                .trim()
                .to_owned();
            set(e, "HTTP_X_MULTI", last);
        }),
        "hdr-content-type" => env(|e| {
            let value = e.get_bytes("CONTENT_TYPE").unwrap_or_default();
            set(e, "HTTP_CONTENT_TYPE", value);
        }),
        "hdr-content-length" => env(|e| {
            let value = e.get_bytes("CONTENT_LENGTH").unwrap_or_default();
            set(e, "HTTP_CONTENT_LENGTH", value);
        }),
        "hdr-no-content-headers" => env(|e| {
            if !e.contains("CONTENT_TYPE") {
                set(e, "CONTENT_TYPE", "application/octet-stream");
            }
        }),
        "hdr-host" => env(|e| set(e, "SERVER_NAME", "localhost")),
        "hdr-large" => env(|e| {
            let cut = e
                .get("HTTP_X_LARGE")
                .map(|v| Bytes::copy_from_slice(&v[..v.len().min(4096)]));
            if let Some(cut) = cut {
                set(e, "HTTP_X_LARGE", cut);
            }
        }),
        "hdr-many" => env(|e| {
            e.remove("HTTP_X_H59");
        }),
        "hdr-underscore" | "hdr-proxy" | "status-204" | "status-304" | "head-no-body"
        | "expect-continue" | "stream-http10" | "limit-head" | "limit-bad-request"
        | "ka-sequence" | "ka-pipelined" | "body-past-length" => naive_http(false),
        "ka-close" | "ka-http10" => naive_http(true),
        "resp-json" => head(|_, h| {
            h.insert("content-type", HeaderValue::from_static("text/plain"));
        }),
        "resp-repeated" => head(|_, h| {
            for name in ["x-rep", "set-cookie"] {
                let joined: Vec<String> = h
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .collect();
                if !joined.is_empty() {
                    h.insert(name, HeaderValue::from_str(&joined.join(", ")).unwrap());
                }
            }
        }),
        "resp-value" => head(|_, h| {
            if h.contains_key("x-words") {
                h.insert("x-words", HeaderValue::from_static("two%20words"));
            }
        }),
        "status-201" | "status-404" | "status-503" => head(|s, _| *s = StatusCode::OK),
        "body-empty" => input(|_| b"\r\n".to_vec()),
        "body-small" | "body-binary" | "body-64k" | "body-1m" => input(|mut body| {
            body.pop();
            body
        }),
        "chunked-body" | "chunked-empty" | "chunked-many-small" => {
            input(|body| gateway_testkit::clients::http::encode_chunks(&[body]))
        }
        "stream-chunks" => mangled(|| Mangle::Truncated),
        "stream-unbuffered" => mangled(|| Mangle::Buffered),
        "disconnect-closes-body" => mangled(|| Mangle::Leaked),
        "fail-after-head" => mangled(|| Mangle::Healed),
        "fail-before-head" => response(|response| {
            if driver::failure(&response).is_some() {
                Body::empty()
            } else {
                Body::new(response.into_body())
            }
        }),
        "concurrent" => swapping(),
        "limit-body" => unlimited(),
        "fcgi-close" => naive_fastcgi(true),
        "hdr-proxy-var" => naive_fastcgi(false),
        id if id.starts_with("fcgi-") => naive_fastcgi(false),
        id if id.starts_with("uwsgi-") => naive_uwsgi(),
        "cgi-exit-code" => {
            cgi("printf 'Status: 200 OK\\r\\nContent-Type: application/json\\r\\n\\r\\n{}'; exit 1")
        }
        "cgi-content-length" => cgi(
            "n=$(cat | wc -c); printf 'Status: 200 OK\\r\\nContent-Type: application/json\\r\\n\\r\\n{\"body_len\": %d}' \"$n\"",
        ),
        "cgi-status-line" => cgi("printf 'Content-Type: application/json\\r\\n\\r\\n{}'"),
        other => panic!("no broken server for {other}: add one"),
    }
}

#[test]
fn every_case_fails_against_a_server_that_breaks_its_rule() {
    let mut seen = BTreeSet::new();
    for case in conformance::cases() {
        let broken = breaker(case.id);
        assert_fails(case.id, &broken);
        seen.insert(case.id);
    }
    assert_eq!(seen.len(), conformance::cases().len());
}

#[test]
fn a_server_side_violation_fails_its_case_late_in_a_run_whose_app_side_warned_earlier() {
    // The validator between the server and the suite's app; the server gives chunked requests
    // a SERVER_PORT that is not a number (rule 23), which the case's own checks do not look
    // at. `status-204` runs first: the echo app's Content-Type on its 204 is a warning of the
    // app's side, which must not hide the server's violation of the later case.
    let validator = gateway_testkit::Validator::new(gateway_testkit::Mode::Warn);
    let report = validator.report();
    let mut broken = layered(
        move |app| {
            let checked = gateway_core::Builder::new()
                .with(validator.clone())
                .app(app);
            Arc::new(move |mut environ: Environ, start: StartResponse| {
                if environ.content_length().is_none() && environ.request_method() == "POST" {
                    set(&mut environ, "SERVER_PORT", "eighty");
                }
                checked.call(environ, start)
            })
        },
        Config::default(),
    );
    broken.options.validator = Some(report.clone());
    broken.options.only = vec!["status-204".to_owned(), "chunked-body".to_owned()];
    let run = conformance::run(&broken.target, &broken.options);
    let verdict = |id: &str| {
        run.outcomes
            .iter()
            .find(|o| o.case.id == id)
            .map(|o| o.verdict.clone())
    };
    assert!(
        report.violations().iter().any(|v| v.side == "app"),
        "the app's side warned: {:?}",
        report.violations()
    );
    assert!(
        matches!(verdict("status-204"), Some(Verdict::Pass)),
        "{:?}",
        verdict("status-204")
    );
    assert!(
        matches!(verdict("chunked-body"), Some(Verdict::Fail(ref why)) if why.contains("R23")),
        "{:?}",
        verdict("chunked-body")
    );
}

#[test]
fn fail_after_head_fails_against_a_server_that_holds_the_connection_open() {
    // The app holds its answer open after the first chunk instead of failing: the connection
    // never ends, which the case must not take for a failure shown to the client.
    let broken = env(|environ| {
        if environ.path_info() == b"/__suite/fail-after" {
            set(environ, "PATH_INFO", "/__suite/hold/never-ends");
        }
    });
    assert_fails("fail-after-head", &broken);
}
