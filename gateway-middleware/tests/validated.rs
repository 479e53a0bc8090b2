//! Every middleware under the validator on both sides: `Validator(middleware(Validator(app)))`
//! in strict mode, through the test client, for the requests it is built for. The middleware is
//! a server to the inner validator and an app to the outer one; both must stay clean.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::{App, Body, Builder, Environ, Middleware, StartResponse};
use gateway_middleware::{
    AccessLog, BodyLimit, Compression, ErrorPages, HostRouter, Mount, ProxyHeaders, RequestId,
    Router, StaticFiles, Timeout, TrustedNet,
};
use gateway_testkit::{Mode, Report, Severity, TestClient, Validator};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// A compliant app: typed, with a body long enough to compress.
fn app(mut environ: Environ, start: StartResponse) -> Body {
    let mut body = Vec::new();
    if let Err(error) = std::io::Read::read_to_end(environ.input(), &mut body) {
        return Body::error(error);
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let _ = start.start(StatusCode::OK, headers);
    let text = format!(
        "{} {} {} {}",
        String::from_utf8_lossy(environ.script_name()),
        String::from_utf8_lossy(environ.path_info()),
        body.len(),
        "lorem ipsum dolor sit amet ".repeat(20)
    );
    Body::from(text)
}

/// A request to send: method, target, headers, body.
type Request<'a> = (
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'static str>,
);

/// Runs requests through `Validator(middleware(Validator(app)))`; returns both reports.
fn check<M>(middleware: M, requests: &[Request<'_>]) -> (Report, Report)
where
    M: Middleware<gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>>,
    M::App: App + 'static,
{
    let inner = Validator::new(Mode::Strict);
    let outer = Validator::new(Mode::Strict);
    let (inner_report, outer_report) = (inner.report(), outer.report());
    let app: fn(Environ, StartResponse) -> Body = app;
    let stack = Builder::new()
        .with(outer)
        .with(middleware)
        .with(inner)
        .app(app);
    let client = TestClient::new(stack);
    for (method, uri, headers, body) in requests {
        let mut request = client.request(method.clone(), uri);
        for (name, value) in *headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(*body);
        }
        let response = request.send();
        assert!(response.body_closed(), "{uri}: the app's body was closed");
    }
    (inner_report, outer_report)
}

/// No error on either side (warnings, such as a HEAD body the server strips, are allowed).
fn assert_clean((inner, outer): (Report, Report)) {
    let errors = |report: &Report| {
        report
            .violations()
            .into_iter()
            .filter(|v| v.rule.severity() == Severity::Error)
            .collect::<Vec<_>>()
    };
    assert!(
        errors(&inner).is_empty(),
        "server side (inner): {:#?}",
        errors(&inner)
    );
    assert!(
        errors(&outer).is_empty(),
        "app side (outer): {:#?}",
        errors(&outer)
    );
}

const PLAIN: &[Request<'static>] = &[
    (Method::GET, "/", &[], None),
    (
        Method::GET,
        "/a/b?q=1",
        &[("accept-encoding", "gzip, br")],
        None,
    ),
    (Method::HEAD, "/a", &[("accept-encoding", "gzip")], None),
    (
        Method::POST,
        "/upload",
        &[("content-type", "text/plain")],
        Some("payload"),
    ),
];

#[test]
fn pass_through_middleware() {
    assert_clean(check(AccessLog::new().sink(|_: &str| {}), PLAIN));
    assert_clean(check(RequestId::new(), PLAIN));
    assert_clean(check(Compression::new(), PLAIN));
    assert_clean(check(ErrorPages::new(), PLAIN));
    assert_clean(check(BodyLimit::new(1024), PLAIN));
    assert_clean(check(Timeout::new(Duration::from_secs(30)), PLAIN));
    assert_clean(check(
        ProxyHeaders::new().trust("127.0.0.1".parse::<TrustedNet>().unwrap()),
        &[(
            Method::GET,
            "/",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
            ],
            None,
        )],
    ));
}

#[test]
fn routers_as_middleware() {
    // The routers dispatch to the inner app: wrapped as middleware by closures.
    let mount = |inner: gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>| {
        let inner = Arc::new(inner);
        Mount::builder()
            .mount("/api", inner.clone())
            .mount("/legacy/app", inner)
            .build()
    };
    assert_clean(check(
        mount,
        &[
            (Method::GET, "/api", &[], None),
            (Method::GET, "/api/", &[], None),
            (Method::GET, "/legacy/app/x/y", &[], None),
            (Method::GET, "/nowhere", &[], None),
        ],
    ));
    let router = |inner: gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>| {
        Router::builder()
            .route(Method::GET, "/users/{id}", Arc::new(inner))
            .build()
            .unwrap()
    };
    assert_clean(check(
        router,
        &[
            (Method::GET, "/users/7", &[], None),
            (Method::POST, "/users/7", &[], None),
            (Method::GET, "/missing", &[], None),
        ],
    ));
    let hosts = |inner: gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>| {
        HostRouter::builder()
            .host("*.example.com", Arc::new(inner))
            .build()
    };
    assert_clean(check(
        hosts,
        &[
            (Method::GET, "/", &[("host", "a.example.com")], None),
            (Method::GET, "/", &[("host", "other.org")], None),
        ],
    ));
}

#[test]
fn static_files_follow_the_contract() {
    let dir = std::env::temp_dir().join(format!("gateway-validated-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "0123456789").unwrap();
    let validator = Validator::new(Mode::Strict);
    let report = validator.report();
    let client = TestClient::new(Builder::new().with(validator).app(StaticFiles::new(&dir)));
    assert_eq!(client.get("/a.txt").send().status(), 200);
    assert_eq!(client.head("/a.txt").send().status(), 200);
    let range = client.get("/a.txt").header("range", "bytes=2-4").send();
    assert_eq!(
        (range.status().as_u16(), range.text().as_str()),
        (206, "234")
    );
    let etag = client
        .get("/a.txt")
        .send()
        .header("etag")
        .unwrap()
        .to_owned();
    let again = client.get("/a.txt").header("if-none-match", &etag).send();
    assert_eq!(again.status(), 304);
    let failed = client.get("/a.txt").header("if-match", "\"other\"").send();
    assert_eq!(failed.status(), 412);
    assert_eq!(client.get("/missing").send().status(), 404);
    assert_eq!(client.post("/a.txt").send().status(), 405);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(report.is_clean(), "{:#?}", report.violations());
}
