//! Middleware stacked on middleware: a failure of the app inside (before its head) stays a
//! failure through every layer that passes responses on, so the layers outside still see it.

use std::io::Read;

use bytes::Bytes;
use gateway_core::{Body, Builder, Environ, StartResponse};
use gateway_middleware::{AccessLog, BodyLimit, ErrorPages};
use gateway_testkit::TestClient;
use http::{HeaderMap, StatusCode};

/// An app that fails before its head.
fn failing(_: Environ, _: StartResponse) -> Body {
    Body::error("the database went away")
}

/// An app that reads its whole body, then answers.
fn reading(mut environ: Environ, start: StartResponse) -> Body {
    let mut body = Vec::new();
    if let Err(error) = environ.input().read_to_end(&mut body) {
        return Body::error(error);
    }
    let _ = start.start(StatusCode::OK, HeaderMap::new());
    Body::from(body)
}

#[test]
fn error_pages_outside_another_layer_still_see_the_failure() {
    let app = Builder::new()
        .with(ErrorPages::new())
        .with(AccessLog::new().sink(|_: &str| {}))
        .app(failing);
    let response = TestClient::new(app).get("/").send();
    assert_eq!(response.status(), 500);
    assert!(
        response
            .text()
            .contains("<h1>500 Internal Server Error</h1>"),
        "{}",
        response.text()
    );
}

#[test]
fn a_failure_passed_on_by_a_layer_is_still_the_app_s_failure() {
    let app = Builder::new()
        .with(AccessLog::new().sink(|_: &str| {}))
        .app(failing);
    let response = TestClient::new(app).get("/").send();
    assert_eq!(response.status(), 500);
    assert!(
        response
            .failure()
            .is_some_and(|f| f.contains("the database went away")),
        "the original failure: {:?}",
        response.failure()
    );
}

#[test]
fn a_body_limit_outside_another_layer_still_answers_413() {
    let app = Builder::new()
        .with(BodyLimit::new(4))
        .with(AccessLog::new().sink(|_: &str| {}))
        .app(reading);
    let client = TestClient::new(app);
    let chunks = ["0123", "456789"].map(Bytes::from);
    let response = client.post("/").chunks(chunks).send();
    assert_eq!(response.status(), 413);
    let response = client.post("/").chunks(["0123"].map(Bytes::from)).send();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), "0123");
}

/// The app inside answers 500 itself: an ordinary response, passed on as it is.
#[test]
fn an_app_s_own_500_is_not_taken_for_a_failure() {
    let own = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::INTERNAL_SERVER_ERROR, HeaderMap::new());
        Body::from("mine")
    };
    let app = Builder::new()
        .with(AccessLog::new().sink(|_: &str| {}))
        .app(own);
    let response = TestClient::new(app).get("/").send();
    assert_eq!(response.status(), 500);
    assert_eq!(response.text(), "mine");
    assert!(response.failure().is_none());
}
