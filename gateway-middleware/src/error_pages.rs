//! Pages for error responses: [`ErrorPages`].
//!
//! When the app fails before its head (an error or a panic, which the driver turns into a 500)
//! or answers an error status (400 and up) with no body, the response gets a page instead: HTML
//! naming the status by default, or what a [`Page`] hook renders. The status and the app's other
//! headers (`Allow`, `WWW-Authenticate`, `Retry-After`, ...) are kept. A failure after the head
//! was sent cannot be turned into a page: that response is aborted, as the contract says.
//!
//! ```
//! use gateway_core::{driver, Body, Builder, Environ, StartResponse};
//! use gateway_middleware::ErrorPages;
//!
//! let app = Builder::new()
//!     .with(ErrorPages::new())
//!     .app(|_: Environ, _: StartResponse| -> Body { panic!("bug") });
//! let response = gateway_core::block_on(driver::call(&app, Environ::new()));
//! assert_eq!(response.status(), 500);
//! assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use gateway_core::convert::respond;
use gateway_core::{App, Body, Environ, Middleware, StartResponse, driver};
use http::StatusCode;
use http::header::{self, HeaderValue};
use http_body::Body as _;

/// Renders the page of an error status: its `Content-Type` and body. Closures are hooks.
pub trait Page: Send + Sync + 'static {
    /// The page for `status`.
    fn render(&self, status: StatusCode) -> (HeaderValue, Bytes);
}

impl<F> Page for F
where
    F: Fn(StatusCode) -> (HeaderValue, Bytes) + Send + Sync + 'static,
{
    fn render(&self, status: StatusCode) -> (HeaderValue, Bytes) {
        self(status)
    }
}

/// The default page: a small HTML document naming the status.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPage;

impl Page for DefaultPage {
    fn render(&self, status: StatusCode) -> (HeaderValue, Bytes) {
        let name = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        let html = format!("<!doctype html>\n<title>{name}</title>\n<h1>{name}</h1>\n");
        (
            HeaderValue::from_static("text/html; charset=utf-8"),
            Bytes::from(html),
        )
    }
}

/// The middleware: error responses without a body get a page.
#[derive(Clone)]
pub struct ErrorPages {
    page: Arc<dyn Page>,
}

impl ErrorPages {
    /// The default HTML pages.
    pub fn new() -> Self {
        ErrorPages {
            page: Arc::new(DefaultPage),
        }
    }

    /// Pages of your own.
    pub fn page(mut self, page: impl Page) -> Self {
        self.page = Arc::new(page);
        self
    }
}

impl Default for ErrorPages {
    fn default() -> Self {
        ErrorPages::new()
    }
}

impl fmt::Debug for ErrorPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorPages").finish_non_exhaustive()
    }
}

impl<A> Middleware<A> for ErrorPages {
    type App = ErrorPagesApp<A>;

    fn wrap(&self, app: A) -> ErrorPagesApp<A> {
        ErrorPagesApp {
            inner: app,
            config: self.clone(),
        }
    }
}

/// An app whose error responses get pages; made by [`ErrorPages`].
#[derive(Debug, Clone)]
pub struct ErrorPagesApp<A> {
    inner: A,
    config: ErrorPages,
}

impl<A: App> App for ErrorPagesApp<A> {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let response = driver::call(&self.inner, environ);
        let page = self.config.page.clone();
        Body::from_future(async move {
            let response = response.await;
            let failed = driver::failure(&response).is_some();
            let empty_error = response.status().as_u16() >= 400
                && response.body().size_hint().exact() == Some(0)
                && !response.headers().contains_key(header::CONTENT_TYPE);
            if !failed && !empty_error {
                return Ok(respond(start, response));
            }
            let (mut parts, body) = response.into_parts();
            drop(body);
            let (content_type, html) = page.render(parts.status);
            parts.headers.insert(header::CONTENT_TYPE, content_type);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(html.len()));
            start.start(parts.status, parts.headers)?;
            Ok(Body::from(html))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Builder;
    use http::HeaderMap;
    use http_body_util::BodyExt;

    fn run(app: &impl App, method: &str) -> (StatusCode, HeaderMap, Bytes) {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_owned());
        let response = gateway_core::block_on(driver::call(app, environ));
        let (parts, body) = response.into_parts();
        let body = gateway_core::block_on(body.collect()).unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    #[test]
    fn failures_and_empty_errors_get_pages_and_keep_their_headers() {
        let app = Builder::new()
            .with(ErrorPages::new())
            .app(|_: Environ, _: StartResponse| Body::error("x"));
        let (status, headers, body) = run(&app, "GET");
        assert_eq!(status, 500);
        assert!(String::from_utf8_lossy(&body).contains("<h1>500 Internal Server Error</h1>"));
        assert_eq!(headers["content-length"], body.len().to_string().as_str());

        let app = Builder::new()
            .with(ErrorPages::new())
            .app(|_: Environ, s: StartResponse| {
                let mut headers = HeaderMap::new();
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
                let _ = s.start(StatusCode::METHOD_NOT_ALLOWED, headers);
                Body::empty()
            });
        let (status, headers, body) = run(&app, "POST");
        assert_eq!(status, 405);
        assert_eq!(headers["allow"], "GET");
        assert!(String::from_utf8_lossy(&body).contains("405 Method Not Allowed"));
        let (_, headers, body) = run(&app, "HEAD");
        assert!(body.is_empty());
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    }

    #[test]
    fn successes_and_errors_with_bodies_pass() {
        let app = Builder::new()
            .with(ErrorPages::new().page(|s: StatusCode| {
                (
                    HeaderValue::from_static("text/plain"),
                    Bytes::from(format!("custom {}", s.as_u16())),
                )
            }))
            .app(|_: Environ, s: StartResponse| {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let _ = s.start(StatusCode::NOT_FOUND, headers);
                "{\"error\":\"no such user\"}"
            });
        let (status, _, body) = run(&app, "GET");
        assert_eq!(status, 404);
        assert_eq!(body, "{\"error\":\"no such user\"}");

        let app = Builder::new()
            .with(ErrorPages::new().page(|s: StatusCode| {
                (
                    HeaderValue::from_static("text/plain"),
                    Bytes::from(format!("custom {}", s.as_u16())),
                )
            }))
            .app(|_: Environ, _: StartResponse| -> Body { panic!("boom") });
        assert_eq!(run(&app, "GET").2, "custom 500");
    }
}
