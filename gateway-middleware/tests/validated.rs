//! Every middleware under the validator on both sides: `Validator(middleware(Validator(app)))`
//! in strict mode, through the test client, for the requests it is built for. The middleware is
//! a server to the inner validator and an app to the outer one; both must stay clean. The app
//! answers in one chunk, in three, and in three with a wait before each, so that the
//! middleware's own rules, which only the two validators together see (R66: a value per chunk
//! of the app; R67: the app's body is polled only as the middleware's is), are put to it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;

use gateway_core::{App, Body, Builder, Environ, Middleware, StartResponse};
use gateway_middleware::{
    AccessLog, BodyLimit, Compression, ErrorPages, HostRouter, Mount, ProxyHeaders, RequestId,
    Router, StaticFiles, Timeout, TrustedNet,
};
use gateway_testkit::{Mode, Report, Severity, TestClient, Validator};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// A compliant app: typed, with a body long enough to compress, in one chunk.
fn app(environ: Environ, start: StartResponse) -> Body {
    match answer(environ, start) {
        Ok(text) => Body::from(text),
        Err(error) => Body::error(error),
    }
}

/// The same answer in three chunks.
fn chunked_app(environ: Environ, start: StartResponse) -> Body {
    match answer(environ, start) {
        Ok(text) => Body::from_chunks(thirds(text)),
        Err(error) => Body::error(error),
    }
}

/// The same answer in three chunks, with a wait before each (as a body fed by a backend).
fn waiting_app(environ: Environ, start: StartResponse) -> Body {
    match answer(environ, start) {
        Ok(text) => Body::new(Waiting {
            chunks: thirds(text).into(),
            ready: false,
        }),
        Err(error) => Body::error(error),
    }
}

fn thirds(text: String) -> Vec<Bytes> {
    let text = Bytes::from(text);
    let third = text.len() / 3;
    vec![
        text.slice(..third),
        text.slice(third..2 * third),
        text.slice(2 * third..),
    ]
}

/// A body that is pending once (and wakes itself) before each of its chunks.
struct Waiting {
    chunks: VecDeque<Bytes>,
    ready: bool,
}

impl http_body::Body for Waiting {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !std::mem::replace(&mut self.ready, false) && !self.chunks.is_empty() {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.chunks.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// The app's answer: its head started, its text made.
fn answer(mut environ: Environ, start: StartResponse) -> std::io::Result<String> {
    let mut body = Vec::new();
    std::io::Read::read_to_end(environ.input(), &mut body)?;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let _ = start.start(StatusCode::OK, headers);
    Ok(format!(
        "{} {} {} {}",
        String::from_utf8_lossy(environ.script_name()),
        String::from_utf8_lossy(environ.path_info()),
        body.len(),
        "lorem ipsum dolor sit amet ".repeat(20)
    ))
}

/// A request to send: method, target, headers, body.
type Request<'a> = (
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'static str>,
);

/// Runs requests through `Validator(middleware(Validator(app)))`, for each of the apps (one
/// chunk, three, three with waits); returns both reports.
fn check<M>(middleware: M, requests: &[Request<'_>]) -> (Report, Report)
where
    M: Middleware<gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>> + Clone,
    M::App: App + 'static,
{
    let inner = Validator::new(Mode::Strict);
    let outer = Validator::new(Mode::Strict);
    let (inner_report, outer_report) = (inner.report(), outer.report());
    let apps: [fn(Environ, StartResponse) -> Body; 3] = [app, chunked_app, waiting_app];
    for app in apps {
        let stack = Builder::new()
            .with(outer.clone())
            .with(middleware.clone())
            .with(inner.clone())
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
fn the_balancer_as_middleware() {
    let balancer = |inner: gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>| {
        gateway_middleware::balancer::Balancer::builder()
            .backend("a", inner.clone())
            .backend("b", inner)
            .build()
    };
    assert_clean(check(balancer, PLAIN));
}

/// The checks above can fail: a middleware that collects the app's body in its call (R67), or
/// in its own body's first poll (R66), is reported by the same harness.
#[test]
fn a_middleware_that_consumes_the_apps_body_is_reported() {
    type Inner = gateway_testkit::ValidatorApp<fn(Environ, StartResponse) -> Body>;
    let errors = |(_, outer): (Report, Report)| {
        outer
            .violations()
            .into_iter()
            .filter(|v| v.side == "middleware")
            .map(|v| v.rule.id())
            .collect::<Vec<_>>()
    };
    let in_call = |inner: Inner| {
        move |environ: Environ, start: StartResponse| {
            let body = inner.call(environ, start);
            match gateway_core::block_on(http_body_util::BodyExt::collect(body)) {
                Ok(collected) => Body::from(collected.to_bytes()),
                Err(error) => Body::error(error),
            }
        }
    };
    assert!(errors(check(in_call, PLAIN)).contains(&"R67"));
    let in_first_poll = |inner: Inner| {
        move |environ: Environ, start: StartResponse| {
            let body = inner.call(environ, start);
            Body::from_future(async move {
                let collected = http_body_util::BodyExt::collect(body).await?;
                Ok(Body::from(collected.to_bytes()))
            })
        }
    };
    assert!(errors(check(in_first_poll, PLAIN)).contains(&"R66"));
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
