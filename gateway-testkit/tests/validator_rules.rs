//! Every rule of the validator: a violating server or app it catches, and the compliant twin it
//! passes.

use gateway_core::{App, Body, Builder, Environ, StartResponse, driver};
use gateway_testkit::{Mode, Report, Rule, TestClient, Validator};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Body as _;

fn typed() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers
}

fn hello(_: Environ, start: StartResponse) -> Body {
    let _ = start.start(StatusCode::OK, typed());
    Body::from("hello")
}

fn valid_environ() -> Environ {
    let mut environ = Environ::new();
    for (name, value) in [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/app"),
        ("PATH_INFO", "/x"),
        ("QUERY_STRING", ""),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("HTTP_X_OK", "1"),
    ] {
        environ.set(name, value);
    }
    environ
}

/// Runs a compliant app under a validator with an environ the server built, changed by `edit`.
fn server_report(edit: impl FnOnce(&mut Environ)) -> Report {
    let validator = Validator::new(Mode::Warn);
    let report = validator.report();
    let app = Builder::new().with(validator).app(hello);
    let mut environ = valid_environ();
    environ.set_errors(gateway_core::ErrorStream::new(|_: &[u8]| {}));
    edit(&mut environ);
    gateway_core::block_on(driver::call(&app, environ));
    report
}

/// Runs `app` under a validator through the test client.
fn app_report(app: impl App + 'static, method: http::Method) -> Report {
    checked_run(app, Mode::Warn, method).1
}

/// Runs `app` under a validator in `mode` through the test client, its error lines dropped:
/// the response and the validator's report.
fn checked_run(
    app: impl App + 'static,
    mode: Mode,
    method: http::Method,
) -> (gateway_testkit::TestResponse, Report) {
    let validator = Validator::new(mode);
    let report = validator.report();
    let app = Builder::new().with(validator).app(app);
    let mut context = gateway_core::convert::ServerContext::default();
    context.errors = Some(gateway_core::ErrorStream::new(|_: &[u8]| {}));
    let response = TestClient::new(app)
        .with_context(context)
        .request(method, "/x")
        .send();
    (response, report)
}

/// Sends `hello` a request with one header (and `body`, when not empty) under a strict
/// validator through the test client: the response and the validator's report.
fn strict_hello(
    method: http::Method,
    header: (&str, &str),
    body: &'static str,
) -> (gateway_testkit::TestResponse, Report) {
    let validator = Validator::new(Mode::Strict);
    let report = validator.report();
    let app = Builder::new().with(validator).app(hello);
    let client = TestClient::new(app);
    let mut request = client.request(method, "/").header(header.0, header.1);
    if !body.is_empty() {
        request = request.body(body);
    }
    (request.send(), report)
}

/// Each of `names` set empty in an otherwise valid environ breaks no rule.
fn assert_clean_when_empty(names: &[&'static str]) {
    for name in names {
        let report = server_report(|e| e.set(*name, ""));
        assert!(report.is_clean(), "{name}: {:?}", report.violations());
    }
}

fn assert_caught(report: &Report, rule: Rule) {
    assert!(
        report.contains(rule),
        "{rule:?} not caught: {:?}",
        report.violations()
    );
}

fn assert_passed(report: &Report, rule: Rule) {
    assert!(
        !report.contains(rule),
        "{rule:?} raised on a compliant twin: {:?}",
        report.violations()
    );
}

#[test]
fn the_valid_environ_and_app_are_clean() {
    assert!(server_report(|_| {}).is_clean());
    assert!(app_report(hello, http::Method::GET).is_clean());
}

#[test]
fn r12_variables_with_no_value_are_left_out() {
    for name in [
        "REMOTE_USER",
        "AUTH_TYPE",
        "REMOTE_HOST",
        "REMOTE_IDENT",
        "HTTPS",
        "PATH_TRANSLATED",
        "X_SERVER_OWN",
    ] {
        assert_caught(&server_report(|e| e.set(name, "")), Rule::EmptyVariable);
        assert_passed(
            &server_report(|e| e.set(name, "value")),
            Rule::EmptyVariable,
        );
    }
    // The variables the rules let be empty (QUERY_STRING is empty in the valid environ).
    assert_clean_when_empty(&[
        "SCRIPT_NAME",
        "PATH_INFO",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "HTTP_X_OK",
    ]);
}

#[test]
fn r12_an_empty_header_is_an_empty_variable() {
    let (response, report) = strict_hello(http::Method::GET, ("x-empty", ""), "");
    assert_eq!(response.environ().get("HTTP_X_EMPTY"), Some(&b""[..]));
    assert!(report.is_clean(), "{:?}", report.violations());
}

#[test]
fn r13_content_header_aliases() {
    assert_caught(
        &server_report(|e| e.set("HTTP_CONTENT_TYPE", "a/b")),
        Rule::NoContentHeaderAliases,
    );
    assert_passed(
        &server_report(|e| e.set("CONTENT_TYPE", "a/b")),
        Rule::NoContentHeaderAliases,
    );
}

#[test]
fn r14_request_method() {
    assert_caught(
        &server_report(|e| {
            e.remove("REQUEST_METHOD");
        }),
        Rule::RequestMethod,
    );
    assert_caught(
        &server_report(|e| e.set("REQUEST_METHOD", "GE T")),
        Rule::RequestMethod,
    );
    assert_passed(
        &server_report(|e| e.set("REQUEST_METHOD", "PURGE")),
        Rule::RequestMethod,
    );
}

#[test]
fn r15_script_name() {
    assert_caught(
        &server_report(|e| e.set("SCRIPT_NAME", "/")),
        Rule::ScriptName,
    );
    assert_caught(
        &server_report(|e| e.set("SCRIPT_NAME", "app")),
        Rule::ScriptName,
    );
    assert_passed(
        &server_report(|e| e.set("SCRIPT_NAME", "")),
        Rule::ScriptName,
    );
}

#[test]
fn r17_path_info() {
    assert_caught(&server_report(|e| e.set("PATH_INFO", "x")), Rule::PathInfo);
    assert_passed(&server_report(|e| e.set("PATH_INFO", "")), Rule::PathInfo);
}

#[test]
fn r18_a_path_is_present() {
    let report = server_report(|e| {
        e.remove("SCRIPT_NAME");
        e.remove("PATH_INFO");
    });
    assert_caught(&report, Rule::PathPresent);
    // wsgiref.validate: an empty SCRIPT_NAME needs PATH_INFO.
    let report = server_report(|e| {
        e.set("SCRIPT_NAME", "");
        e.remove("PATH_INFO");
    });
    assert_caught(&report, Rule::PathPresent);
    assert_passed(
        &server_report(|e| {
            e.remove("SCRIPT_NAME");
        }),
        Rule::PathPresent,
    );
    // The twins: the root mount, its PATH_INFO there; a mount prefix alone.
    assert_passed(
        &server_report(|e| {
            e.set("SCRIPT_NAME", "");
            e.set("PATH_INFO", "/");
        }),
        Rule::PathPresent,
    );
    assert_passed(
        &server_report(|e| {
            e.remove("PATH_INFO");
        }),
        Rule::PathPresent,
    );
}

#[test]
fn r21_query_string() {
    assert_caught(
        &server_report(|e| {
            e.remove("QUERY_STRING");
        }),
        Rule::QueryString,
    );
    assert_passed(
        &server_report(|e| e.set("QUERY_STRING", "a=1")),
        Rule::QueryString,
    );
}

#[test]
fn r22_content_variables() {
    assert_caught(
        &server_report(|e| e.set("CONTENT_LENGTH", "12a")),
        Rule::ContentVariables,
    );
    assert_caught(
        &server_report(|e| e.set("CONTENT_LENGTH", "+5")),
        Rule::ContentVariables,
    );
    assert_passed(
        &server_report(|e| e.set("CONTENT_LENGTH", "0")),
        Rule::ContentVariables,
    );
    // PEP 3333: both "may be empty or absent".
    assert_clean_when_empty(&["CONTENT_TYPE", "CONTENT_LENGTH"]);
}

#[test]
fn r22_an_empty_content_type_header_passed_on_is_clean() {
    let (response, report) = strict_hello(http::Method::POST, ("content-type", ""), "x");
    assert_eq!(response.environ().get("CONTENT_TYPE"), Some(&b""[..]));
    assert_eq!(response.text(), "hello");
    assert!(report.is_clean(), "{:?}", report.violations());
}

#[test]
fn r23_server_name_and_port() {
    assert_caught(
        &server_report(|e| e.set("SERVER_PORT", "http")),
        Rule::ServerNameAndPort,
    );
    assert_caught(
        &server_report(|e| {
            e.remove("SERVER_NAME");
        }),
        Rule::ServerNameAndPort,
    );
    assert_passed(
        &server_report(|e| e.set("SERVER_PORT", "8443")),
        Rule::ServerNameAndPort,
    );
}

#[test]
fn r24_server_protocol() {
    assert_caught(
        &server_report(|e| e.set("SERVER_PROTOCOL", "HTTP/one")),
        Rule::ServerProtocol,
    );
    assert_caught(
        &server_report(|e| {
            e.remove("SERVER_PROTOCOL");
        }),
        Rule::ServerProtocol,
    );
    assert_passed(
        &server_report(|e| e.set("SERVER_PROTOCOL", "HTTP/2")),
        Rule::ServerProtocol,
    );
}

#[test]
fn r25_header_variable_names() {
    assert_caught(
        &server_report(|e| e.set("HTTP_X-DASH", "1")),
        Rule::HeaderVariableNames,
    );
    assert_caught(
        &server_report(|e| e.set("HTTP_lower", "1")),
        Rule::HeaderVariableNames,
    );
    for bad in ["HTTP_X Y", "HTTP_X:Y", "HTTP_X\"Y", "HTTP_"] {
        assert_caught(
            &server_report(|e| e.set(bad, "1")),
            Rule::HeaderVariableNames,
        );
    }
    // Header names are tokens: the characters of a token other than letters and `-` stay.
    for good in ["HTTP_X_UPPER_2", "HTTP_X.TRACE", "HTTP_X~Y!#$%&'*+^`|"] {
        assert_passed(
            &server_report(|e| e.set(good, "1")),
            Rule::HeaderVariableNames,
        );
    }
}

#[test]
fn r25_a_header_name_with_a_dot_passes_strict_mode() {
    let (response, report) = strict_hello(http::Method::GET, ("x.trace", "1"), "");
    assert_eq!(response.environ().get("HTTP_X.TRACE"), Some(&b"1"[..]));
    assert_eq!(response.status(), StatusCode::OK);
    assert!(report.is_clean(), "{:?}", report.violations());
}

fn with_headers(
    status: StatusCode,
    pairs: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> impl App + 'static {
    move |_: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        match start.start(status, headers) {
            Ok(_) => Body::from(body),
            Err(error) => Body::error(error),
        }
    }
}

#[test]
fn r45_hop_by_hop_and_r42_status_headers() {
    let report = app_report(
        with_headers(StatusCode::OK, &[("connection", "close")], "x"),
        http::Method::GET,
    );
    assert_caught(&report, Rule::HopByHop);
    let report = app_report(
        with_headers(StatusCode::OK, &[("status", "200")], "x"),
        http::Method::GET,
    );
    assert_caught(&report, Rule::StatusHeader);
    let report = app_report(
        with_headers(
            StatusCode::OK,
            &[("content-type", "a/b"), ("x-ok", "1")],
            "x",
        ),
        http::Method::GET,
    );
    assert_passed(&report, Rule::HopByHop);
    assert_passed(&report, Rule::StatusHeader);
}

#[test]
fn r48_content_type_on_bodies() {
    let report = app_report(
        with_headers(StatusCode::OK, &[], "untyped"),
        http::Method::GET,
    );
    assert_caught(&report, Rule::ContentTypeMissing);
    assert_passed(
        &app_report(with_headers(StatusCode::OK, &[], ""), http::Method::GET),
        Rule::ContentTypeMissing,
    );
    assert_passed(
        &app_report(hello, http::Method::GET),
        Rule::ContentTypeMissing,
    );
}

#[test]
fn r49_data_before_start_and_r53_never_started() {
    let report = app_report(
        |_: Environ, _start: StartResponse| Body::from("early"),
        http::Method::GET,
    );
    assert_caught(&report, Rule::DataBeforeStart);
    let report = app_report(
        |_: Environ, _start: StartResponse| Body::empty(),
        http::Method::GET,
    );
    assert_caught(&report, Rule::NeverStarted);
    let late_start = |_: Environ, start: StartResponse| {
        Body::from_future(async move {
            start.start(StatusCode::OK, typed())?;
            Ok(Body::from("in time"))
        })
    };
    let report = app_report(late_start, http::Method::GET);
    assert_passed(&report, Rule::DataBeforeStart);
    assert_passed(&report, Rule::NeverStarted);
}

#[test]
fn an_app_that_fails_is_not_taken_for_one_that_ended() {
    // The documented way to fail: `Body::error`, before the start or after it.
    let unstarted = |_: Environ, _start: StartResponse| Body::error("no database");
    let declared = |_: Environ, start: StartResponse| {
        let mut headers = typed();
        headers.insert("content-length", HeaderValue::from_static("5"));
        match start.start(StatusCode::OK, headers) {
            Ok(_) => Body::error("no database"),
            Err(error) => Body::error(error),
        }
    };
    // A failure after part of the body went out.
    let cut = |_: Environ, start: StartResponse| {
        let mut headers = typed();
        headers.insert("content-length", HeaderValue::from_static("5"));
        let _ = start.start(StatusCode::OK, headers);
        Body::try_from_chunks([Ok("ab"), Err("lost the backend")])
    };
    for (case, report) in [
        ("unstarted", app_report(unstarted, http::Method::GET)),
        ("declared", app_report(declared, http::Method::GET)),
        ("cut", app_report(cut, http::Method::GET)),
    ] {
        assert!(report.is_clean(), "{case}: {:?}", report.violations());
    }
}

#[test]
fn r61_content_length_agrees_with_the_body() {
    let long = with_headers(
        StatusCode::OK,
        &[("content-type", "a/b"), ("content-length", "2")],
        "three",
    );
    assert_caught(
        &app_report(long, http::Method::GET),
        Rule::ContentLengthMismatch,
    );
    let short = with_headers(
        StatusCode::OK,
        &[("content-type", "a/b"), ("content-length", "9")],
        "three",
    );
    assert_caught(
        &app_report(short, http::Method::GET),
        Rule::ContentLengthMismatch,
    );
    let right = with_headers(
        StatusCode::OK,
        &[("content-type", "a/b"), ("content-length", "5")],
        "three",
    );
    assert_passed(
        &app_report(right, http::Method::GET),
        Rule::ContentLengthMismatch,
    );
    // HEAD: the length describes the GET body; no body is expected.
    let head = |_: Environ, start: StartResponse| {
        let mut headers = typed();
        headers.insert("content-length", HeaderValue::from_static("5"));
        let _ = start.start(StatusCode::OK, headers);
        Body::empty()
    };
    assert_passed(
        &app_report(head, http::Method::HEAD),
        Rule::ContentLengthMismatch,
    );
}

/// A size hint made from the bytes a body has left.
type HintOf = fn(u64) -> http_body::SizeHint;

/// A body of `chunks` whose size hint is `hint(bytes left)`: the truth, or a lie.
struct Hinting {
    chunks: std::collections::VecDeque<&'static str>,
    hint: HintOf,
}

impl http_body::Body for Hinting {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let chunk = self.chunks.pop_front();
        std::task::Poll::Ready(chunk.map(|c| Ok(http_body::Frame::data(c.into()))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        (self.hint)(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

/// An app whose body is "hel", "lo" with the size hint `hint(bytes left)`.
fn hinting(hint: HintOf) -> impl App + 'static {
    move |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, typed());
        Body::new(Hinting {
            chunks: ["hel", "lo"].into(),
            hint,
        })
    }
}

fn bounds(lower: u64, upper: Option<u64>) -> http_body::SizeHint {
    let mut hint = http_body::SizeHint::new();
    hint.set_lower(lower);
    if let Some(upper) = upper {
        hint.set_upper(upper);
    }
    hint
}

#[test]
fn r57_a_size_hint_is_right() {
    let lies: [(&str, HintOf); 5] = [
        ("exactly 10, from the start", |_| {
            http_body::SizeHint::with_exact(10)
        }),
        ("exactly 3, from the start", |_| {
            http_body::SizeHint::with_exact(3)
        }),
        ("exactly 5, never less", |_| {
            http_body::SizeHint::with_exact(5)
        }),
        ("at most 4", |_| bounds(0, Some(4))),
        ("at least one more byte than there is", |left| {
            bounds(left + 1, None)
        }),
    ];
    for (lie, hint) in lies {
        let report = app_report(hinting(hint), http::Method::GET);
        assert!(
            report.contains(Rule::SizeHint),
            "{lie}: not caught: {:?}",
            report.violations()
        );
    }
    let truths: [(&str, HintOf); 4] = [
        ("exact", http_body::SizeHint::with_exact),
        ("bounds around it", |left| bounds(left / 2, Some(left * 2))),
        ("no bound", |_| http_body::SizeHint::new()),
        ("at most 5, from the start", |_| bounds(0, Some(5))),
    ];
    for (truth, hint) in truths {
        let report = app_report(hinting(hint), http::Method::GET);
        assert!(report.is_clean(), "{truth}: {:?}", report.violations());
    }
    // The body the validator passes on keeps the app's hint, for the server to frame by.
    let app = Builder::new()
        .with(Validator::new(Mode::Strict))
        .app(hinting(http_body::SizeHint::with_exact));
    let environ = valid_environ();
    let response = gateway_core::block_on(driver::call(&app, environ));
    assert_eq!(http_body::Body::size_hint(response.body()).exact(), Some(5));
    // Strict mode fails the response.
    let (response, _) = checked_run(
        hinting(|_| http_body::SizeHint::with_exact(10)),
        Mode::Strict,
        http::Method::GET,
    );
    let error = response.body_error().expect("the body fails");
    assert!(error.contains("R57"), "{error}");
}

#[test]
fn r61b_content_length_is_read_as_the_driver_reads_it() {
    let cases: [(&[&'static str], bool); 12] = [
        (&["5"], true),
        (&["05"], true),
        (&["5", "5"], true),
        (&["+5"], false),
        (&["-5"], false),
        (&[" 5"], false),
        (&["5 "], false),
        (&["5, 5"], false),
        (&["5", "6"], false),
        (&[""], false),
        (&["0x5"], false),
        // 20 digits are too many, even when the number is small.
        (&["00000000000000000005"], false),
    ];
    for (values, valid) in cases {
        let app = move |_: Environ, start: StartResponse| {
            let mut headers = typed();
            for value in values {
                headers.append("content-length", HeaderValue::from_static(value));
            }
            let _ = start.start(StatusCode::OK, headers);
            Body::from("hello")
        };
        let (response, report) = checked_run(app, Mode::Warn, http::Method::GET);
        let driver_refused = response
            .failure()
            .is_some_and(|f| f.contains("Content-Length"));
        assert_eq!(driver_refused, !valid, "{values:?}: the driver");
        assert_eq!(
            report.contains(Rule::ContentLengthInvalid),
            !valid,
            "{values:?}: the validator, {:?}",
            report.violations()
        );
        if valid {
            assert!(report.is_clean(), "{values:?}: {:?}", report.violations());
        }
    }
}

/// An app that starts with `status` and `pairs`, pushes `written` through `write()`, then
/// returns `body`.
fn writing(
    status: StatusCode,
    pairs: &'static [(&'static str, &'static str)],
    written: &'static str,
    body: &'static str,
) -> impl App + 'static {
    move |_: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        let mut writer = match start.start(status, headers) {
            Ok(writer) => writer,
            Err(error) => return Body::error(error),
        };
        match writer.write(written) {
            Ok(()) => Body::from(body),
            Err(error) => Body::error(error),
        }
    }
}

#[test]
fn r61_written_data_counts_toward_the_content_length() {
    const TYPED_5: &[(&str, &str)] = &[("content-type", "a/b"), ("content-length", "5")];
    let split = || writing(StatusCode::OK, TYPED_5, "hel", "lo");
    assert!(app_report(split(), http::Method::GET).is_clean());
    let written_only = writing(StatusCode::OK, TYPED_5, "hello", "");
    assert!(app_report(written_only, http::Method::GET).is_clean());
    let short = writing(StatusCode::OK, TYPED_5, "hel", "");
    assert_caught(
        &app_report(short, http::Method::GET),
        Rule::ContentLengthMismatch,
    );
    let long = writing(StatusCode::OK, TYPED_5, "hello!", "");
    assert_caught(
        &app_report(long, http::Method::GET),
        Rule::ContentLengthMismatch,
    );

    // Strict mode lets the correct response through whole.
    let validator = Validator::new(Mode::Strict);
    let report = validator.report();
    let app = Builder::new().with(validator).app(split());
    let response = TestClient::new(app).get("/").send();
    assert_eq!(response.text(), "hello");
    assert_eq!(response.body_error(), None);
    assert!(report.is_clean(), "{:?}", report.violations());
}

#[test]
fn written_data_is_checked_as_body_data() {
    let no_content = writing(StatusCode::NO_CONTENT, &[], "oops", "");
    assert_caught(
        &app_report(no_content, http::Method::GET),
        Rule::BodyForbidden,
    );
    let head = writing(StatusCode::OK, &[("content-type", "a/b")], "hello", "");
    assert_caught(&app_report(head, http::Method::HEAD), Rule::HeadBody);
    let untyped = writing(StatusCode::OK, &[], "hello", "");
    assert_caught(
        &app_report(untyped, http::Method::GET),
        Rule::ContentTypeMissing,
    );

    // In strict mode the write that breaks a rule is refused, and the request fails.
    let validator = Validator::new(Mode::Strict);
    let app = Builder::new()
        .with(validator)
        .app(|_: Environ, start: StartResponse| {
            let mut writer = start
                .start(StatusCode::NO_CONTENT, HeaderMap::new())
                .unwrap();
            let refused = writer.write("oops").unwrap_err();
            assert!(refused.to_string().contains("R65"), "{refused}");
            Body::empty()
        });
    let mut context = gateway_core::convert::ServerContext::default();
    context.errors = Some(gateway_core::ErrorStream::new(|_: &[u8]| {}));
    let response = TestClient::new(app).with_context(context).get("/").send();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn an_empty_write_does_not_slip_a_broken_head_past_strict_mode() {
    // An empty write fixes the head; the driver then sends it without polling the body, so
    // the write itself must be refused.
    let written = std::sync::Arc::new(std::sync::Mutex::new(None));
    let result = written.clone();
    let app = move |_: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("3"));
        let mut writer = start.start(StatusCode::NO_CONTENT, headers).unwrap();
        *result.lock().unwrap() = Some(writer.write("").map_err(|e| e.to_string()));
        Body::empty()
    };
    let (response, report) = checked_run(app, Mode::Strict, http::Method::GET);
    let refused = written.lock().unwrap().take().expect("the app wrote");
    assert!(refused.expect_err("the write is refused").contains("R65"));
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(report.contains(Rule::BodyForbidden));
}

#[test]
fn r64_head_bodies() {
    assert_caught(&app_report(hello, http::Method::HEAD), Rule::HeadBody);
    let bodiless = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, typed());
        Body::empty()
    };
    assert_passed(&app_report(bodiless, http::Method::HEAD), Rule::HeadBody);
}

#[test]
fn r65_statuses_without_a_body_and_r65b_their_content_type() {
    let body = with_headers(StatusCode::NO_CONTENT, &[], "oops");
    assert_caught(&app_report(body, http::Method::GET), Rule::BodyForbidden);
    let length = with_headers(StatusCode::NO_CONTENT, &[("content-length", "0")], "");
    assert_caught(&app_report(length, http::Method::GET), Rule::BodyForbidden);
    let typed_304 = with_headers(StatusCode::NOT_MODIFIED, &[("content-type", "a/b")], "");
    assert_caught(
        &app_report(typed_304, http::Method::GET),
        Rule::ContentTypeWithoutBody,
    );
    let clean = with_headers(StatusCode::NOT_MODIFIED, &[("etag", "\"1\"")], "");
    let report = app_report(clean, http::Method::GET);
    assert_passed(&report, Rule::BodyForbidden);
    assert_passed(&report, Rule::ContentTypeWithoutBody);
}

#[test]
fn strict_mode_fails_the_request() {
    // A server-side error: the request fails before the app's head.
    let validator = Validator::new(Mode::Strict);
    let app = Builder::new().with(validator).app(hello);
    let mut environ = valid_environ();
    environ.set_errors(gateway_core::ErrorStream::new(|_: &[u8]| {}));
    environ.set("SCRIPT_NAME", "/");
    let response = gateway_core::block_on(driver::call(&app, environ));
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // An app error seen before its head: a 500.
    let quiet = || {
        let mut context = gateway_core::convert::ServerContext::default();
        context.errors = Some(gateway_core::ErrorStream::new(|_: &[u8]| {}));
        context
    };
    let short = with_headers(
        StatusCode::OK,
        &[("content-type", "a/b"), ("content-length", "9")],
        "three",
    );
    let app = Builder::new().with(Validator::new(Mode::Strict)).app(short);
    let response = TestClient::new(app).with_context(quiet()).get("/").send();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        response.failure().unwrap().contains("R61"),
        "{:?}",
        response.failure()
    );

    // An app error seen after its head: the response is aborted.
    let streamed_short = |_: Environ, start: StartResponse| {
        let mut headers = typed();
        headers.insert("content-length", HeaderValue::from_static("9"));
        let _ = start.start(StatusCode::OK, headers);
        Body::from_chunks(["ab", "cd"])
    };
    let app = Builder::new()
        .with(Validator::new(Mode::Strict))
        .app(streamed_short);
    let response = TestClient::new(app).with_context(quiet()).get("/").send();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.body_error().unwrap().contains("R61"),
        "{:?}",
        response.body_error()
    );

    // Warnings never fail a request.
    let validator = Validator::new(Mode::Strict);
    let report = validator.report();
    let app = Builder::new()
        .with(validator)
        .app(with_headers(StatusCode::OK, &[], "untyped"));
    let response = TestClient::new(app).get("/").send();
    assert_eq!(response.text(), "untyped");
    assert!(report.contains(Rule::ContentTypeMissing));
}

#[test]
fn a_middleware_is_checked_on_both_sides() {
    // A broken middleware: it rewrites the body but keeps the old Content-Length.
    struct Doubler<A>(A);
    impl<A: App> App for Doubler<A> {
        fn call(&self, environ: Environ, start: StartResponse) -> Body {
            let body = self.0.call(environ, start);
            let doubled = gateway_core::block_on(http_body_util::BodyExt::collect(body))
                .map(|c| c.to_bytes().repeat(2))
                .unwrap_or_default();
            Body::from(doubled)
        }
    }
    let outer = Validator::new(Mode::Warn);
    let inner = Validator::new(Mode::Warn);
    let (outer_report, inner_report) = (outer.report(), inner.report());
    let app = Builder::new()
        .with(outer)
        .with(Doubler)
        .with(inner)
        .app(with_headers(
            StatusCode::OK,
            &[("content-type", "a/b"), ("content-length", "5")],
            "hello",
        ));
    TestClient::new(app).get("/").send();
    assert!(
        inner_report.is_clean(),
        "the app is fine: {:?}",
        inner_report.violations()
    );
    assert!(
        outer_report.contains(Rule::ContentLengthMismatch),
        "the middleware is not"
    );
}

/// The app under the middleware of the R66 and R67 tests: a body of three chunks.
fn three_chunks(_: Environ, start: StartResponse) -> Body {
    let _ = start.start(StatusCode::OK, typed());
    Body::from_chunks(["a", "b", "c"])
}

/// `Validator(middleware(Validator(three_chunks)))` in warn mode, through the test client: the
/// response's text and the outer report (where the middleware's violations go). The inner
/// report must stay clean: the app is fine.
fn around(middleware: impl Fn(InnerApp) -> Wrapped) -> (String, Report) {
    let (outer, inner) = (Validator::new(Mode::Warn), Validator::new(Mode::Warn));
    let (outer_report, inner_report) = (outer.report(), inner.report());
    let app: fn(Environ, StartResponse) -> Body = three_chunks;
    let stack = Builder::new()
        .with(outer)
        .with(middleware)
        .with(inner)
        .app(app);
    let mut context = gateway_core::convert::ServerContext::default();
    context.errors = Some(gateway_core::ErrorStream::new(|_: &[u8]| {}));
    let text = TestClient::new(stack)
        .with_context(context)
        .get("/")
        .send()
        .text();
    assert!(
        inner_report.is_clean(),
        "the app is fine: {:?}",
        inner_report.violations()
    );
    (text, outer_report)
}

/// The app the middleware of the R66 and R67 tests wrap: the validated app.
type InnerApp = gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>;

/// The app a test middleware makes of it.
struct Wrapped(Box<dyn Fn(Environ, StartResponse) -> Body + Send + Sync>);

impl App for Wrapped {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        (self.0)(environ, start)
    }
}

/// What a test middleware's body gives for one poll.
type Polled =
    std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, gateway_core::BoxError>>>;

/// A test middleware's body: each of its frames made by `step` from the app's `body` and the
/// middleware's `state`, and `close` run on the two when it is dropped.
struct Stepped<S> {
    body: Body,
    state: S,
    step: fn(&mut S, &mut Body, &mut std::task::Context<'_>) -> Polled,
    close: fn(&mut S, &mut Body),
}

impl<S: Unpin> http_body::Body for Stepped<S> {
    type Data = bytes::Bytes;
    type Error = gateway_core::BoxError;

    fn poll_frame(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Polled {
        let this = &mut *self;
        (this.step)(&mut this.state, &mut this.body, cx)
    }
}

impl<S> Drop for Stepped<S> {
    fn drop(&mut self) {
        (self.close)(&mut self.state, &mut self.body);
    }
}

/// The app's body under a test middleware's `step`, with nothing to do when dropped.
fn stepped<S: Unpin + Send + 'static>(
    body: Body,
    state: S,
    step: fn(&mut S, &mut Body, &mut std::task::Context<'_>) -> Polled,
) -> Body {
    Body::new(Stepped {
        body,
        state,
        step,
        close: |_, _| {},
    })
}

/// A middleware's body that upper-cases every frame of the app's body, one for one.
fn upper_cased(body: Body) -> Body {
    stepped(body, (), |_, body, cx| {
        std::pin::Pin::new(body)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map(|f| f.map_data(|d| d.to_ascii_uppercase().into()))))
    })
}

/// A middleware's body that batches: it joins the app's chunks two by two, polling the app's
/// body until it has two (the WSGI middleware that blocks for several app chunks).
fn in_pairs(body: Body) -> Body {
    stepped(body, Vec::new(), |held: &mut Vec<u8>, body, cx| {
        use std::task::Poll;
        let mut chunks = 0;
        loop {
            match std::pin::Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        held.extend_from_slice(&data);
                        chunks += 1;
                    }
                    if chunks < 2 {
                        continue;
                    }
                }
                Poll::Ready(None) if held.is_empty() => return Poll::Ready(None),
                Poll::Ready(None) => {}
            }
            let data = bytes::Bytes::from(std::mem::take(held));
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
    })
}

/// A middleware's body that buffers as PEP 3333 asks: an empty chunk for each chunk of the
/// app's body, and all of it at the end.
fn buffered(body: Body) -> Body {
    stepped(
        body,
        Some(Vec::new()),
        |held: &mut Option<Vec<u8>>, body, cx| {
            use std::task::Poll;
            if held.is_none() {
                return Poll::Ready(None);
            }
            match std::pin::Pin::new(body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Ok(data), Some(held)) = (frame.into_data(), held.as_mut()) {
                        held.extend_from_slice(&data);
                    }
                    Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::new()))))
                }
                Poll::Ready(None) => {
                    let all = held.take().unwrap_or_default();
                    Poll::Ready(Some(Ok(http_body::Frame::data(all.into()))))
                }
            }
        },
    )
}

/// A middleware's body that yields the app's first chunk and ends; dropped, it drains the
/// rest of the app's body when `drain` is set.
fn first_chunk(body: Body, drain: bool) -> Body {
    Body::new(Stepped {
        body,
        state: false,
        step: |done, body, cx| {
            if std::mem::replace(done, true) {
                return std::task::Poll::Ready(None);
            }
            std::pin::Pin::new(body).poll_frame(cx)
        },
        close: match drain {
            true => |_, body| {
                while let Some(Ok(_)) = gateway_core::block_on(http_body_util::BodyExt::frame(body))
                {
                }
            },
            false => |_, _| {},
        },
    })
}

/// A test middleware that calls the app and makes its body into `make(body)`.
fn body_middleware(make: fn(Body) -> Body) -> impl Fn(InnerApp) -> Wrapped {
    move |app| {
        Wrapped(Box::new(move |environ, start| {
            make(app.call(environ, start))
        }))
    }
}

/// A test middleware that collects the app's body in its call.
fn collecting(app: InnerApp) -> Wrapped {
    Wrapped(Box::new(move |environ, start| {
        let body = app.call(environ, start);
        match gateway_core::block_on(http_body_util::BodyExt::collect(body)) {
            Ok(collected) => Body::from(collected.to_bytes()),
            Err(error) => Body::error(error),
        }
    }))
}

#[test]
fn r66_a_middleware_yields_a_value_per_chunk_of_the_app() {
    // Wrong: two app chunks per chunk of its own.
    let (text, report) = around(body_middleware(in_pairs));
    assert_eq!(text, "abc");
    assert_caught(&report, Rule::MiddlewareBatches);
    // Wrong: the whole body collected in its body's first poll.
    let (text, report) = around(body_middleware(|body| {
        Body::from_future(async move {
            let collected = http_body_util::BodyExt::collect(body).await?;
            Ok(Body::from(collected.to_bytes()))
        })
    }));
    assert_eq!(text, "abc");
    assert_caught(&report, Rule::MiddlewareBatches);
    // Right: a chunk per chunk; an empty one per chunk while it buffers, all at the end.
    let (text, report) = around(body_middleware(upper_cased));
    assert_eq!(text, "ABC");
    assert!(report.is_clean(), "{:?}", report.violations());
    let (text, report) = around(body_middleware(buffered));
    assert_eq!(text, "abc");
    assert!(report.is_clean(), "{:?}", report.violations());
}

#[test]
fn r67_a_middleware_never_consumes_the_apps_body_itself() {
    // Wrong: the body collected in the middleware's call.
    let (text, report) = around(collecting);
    assert_eq!(text, "abc");
    assert_caught(&report, Rule::MiddlewareConsumes);
    let said = |report: &Report| report.violations()[0].detail.clone();
    assert!(
        said(&report).contains("in the middleware's call"),
        "{report:?}"
    );
    // Wrong: the rest of the body drained by the middleware, after its own body ended.
    let (text, report) = around(body_middleware(|body| first_chunk(body, true)));
    assert_eq!(text, "a");
    assert_caught(&report, Rule::MiddlewareConsumes);
    assert!(said(&report).contains("no poll"), "{report:?}");
    // Right: the same without the drain; the app's body relayed as it is polled.
    let (text, report) = around(body_middleware(|body| first_chunk(body, false)));
    assert_eq!(text, "a");
    assert!(report.is_clean(), "{:?}", report.violations());
    let (text, report) = around(body_middleware(|body| body));
    assert_eq!(text, "abc");
    assert!(report.is_clean(), "{:?}", report.violations());
}

#[test]
fn r66_and_r67_fail_the_response_in_strict_mode() {
    let quiet = || {
        let mut context = gateway_core::convert::ServerContext::default();
        context.errors = Some(gateway_core::ErrorStream::new(|_: &[u8]| {}));
        context
    };
    let app: fn(Environ, StartResponse) -> Body = three_chunks;
    let stack = Builder::new()
        .with(Validator::new(Mode::Strict))
        .with(collecting)
        .with(Validator::new(Mode::Strict))
        .app(app);
    let response = TestClient::new(stack).with_context(quiet()).get("/").send();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.failure().unwrap().contains("R67"));
    let batching = body_middleware(in_pairs);
    let stack = Builder::new()
        .with(Validator::new(Mode::Strict))
        .with(batching)
        .with(Validator::new(Mode::Strict))
        .app(app);
    let response = TestClient::new(stack).with_context(quiet()).get("/").send();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.failure().unwrap().contains("R66"));
}

#[test]
fn every_rule_has_a_unique_id_and_an_explanation() {
    let mut ids = std::collections::HashSet::new();
    for rule in Rule::ALL {
        assert!(rule.id().starts_with('R'));
        assert!(ids.insert(rule.id()), "{} is used twice", rule.id());
        assert!(rule.explanation().ends_with('.'));
    }
}
