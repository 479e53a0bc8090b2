//! A request id for every request: [`RequestId`].
//!
//! The id comes from the request's `X-Request-Id` header (or the header configured) when it is
//! there and sane (1 to 200 visible ASCII characters); otherwise one is made, unique within the
//! process and unlikely to repeat across processes. The app finds it in the environ (as the
//! header's variable, `HTTP_X_REQUEST_ID`, and in the [`RequestIdValue`] extension), and the
//! response carries it back in the same header unless the app set one. So does the 500 the
//! driver answers when the app fails before its head, and the 413, 408 or 400 a server answers
//! in its place (see [`StartResponse::with_failure_header`]): the failures are where the id is
//! needed most.
//!
//! ```
//! use gateway_core::{driver, Body, Builder, Environ, StartResponse};
//! use gateway_middleware::{RequestId, RequestIdValue};
//!
//! let app = Builder::new().with(RequestId::new()).app(|environ: Environ, start: StartResponse| {
//!     let id = environ.extensions().get::<RequestIdValue>().unwrap().as_str().to_owned();
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from(id)
//! });
//! let mut environ = Environ::new();
//! environ.set("HTTP_X_REQUEST_ID", "abc-123");
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! assert_eq!(response.headers()["x-request-id"], "abc-123");
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use gateway_core::{App, Body, Environ, Middleware, StartResponse, header_var_name};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

/// The longest incoming id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// The request's id, in the environ's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestIdValue(HeaderValue);

impl RequestIdValue {
    /// The id.
    pub fn as_str(&self) -> &str {
        // Ids are visible ASCII, checked or made so.
        self.0.to_str().unwrap_or_default()
    }
}

/// The middleware: gives every request an id.
#[derive(Debug, Clone)]
pub struct RequestId {
    header: HeaderName,
}

impl RequestId {
    /// Ids in `X-Request-Id`.
    pub fn new() -> Self {
        RequestId::with_header(HeaderName::from_static("x-request-id"))
    }

    /// Ids in another header.
    pub fn with_header(header: HeaderName) -> Self {
        RequestId { header }
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl<A> Middleware<A> for RequestId {
    type App = RequestIdApp<A>;

    fn wrap(&self, app: A) -> RequestIdApp<A> {
        RequestIdApp {
            inner: app,
            variable: String::from_utf8_lossy(&header_var_name(self.header.as_str())).into_owned(),
            header: self.header.clone(),
        }
    }
}

/// An app whose requests get ids; made by [`RequestId`].
#[derive(Debug, Clone)]
pub struct RequestIdApp<A> {
    inner: A,
    header: HeaderName,
    variable: String,
}

/// A new id: a random per-process prefix and a counter.
fn make_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:016x}-{n:x}")).unwrap_or(HeaderValue::from_static("0"))
}

fn valid(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

impl<A: App> App for RequestIdApp<A> {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let id = match environ.get(&self.variable).filter(|v| valid(v)) {
            Some(id) => HeaderValue::from_bytes(id).unwrap_or_else(|_| make_id()),
            None => make_id(),
        };
        environ.set(
            Bytes::from(self.variable.clone()),
            Bytes::copy_from_slice(id.as_bytes()),
        );
        environ.extensions_mut().insert(RequestIdValue(id.clone()));
        let header = self.header.clone();
        let start = start.with_failure_header(header.clone(), id.clone());
        let start = start.map_head(move |_: &mut StatusCode, headers: &mut HeaderMap| {
            if !headers.contains_key(&header) {
                headers.insert(header.clone(), id.clone());
            }
        });
        self.inner.call(environ, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::{Builder, driver};

    fn echo_id(environ: Environ, start: StartResponse) -> Body {
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from(environ.get("HTTP_X_REQUEST_ID").unwrap_or(b"none").to_vec())
    }

    fn run(app: &impl App, incoming: Option<&str>) -> HeaderValue {
        let mut environ = Environ::new();
        if let Some(id) = incoming {
            environ.set("HTTP_X_REQUEST_ID", id.to_owned());
        }
        let response = gateway_core::block_on(driver::call(app, environ));
        response.headers()["x-request-id"].clone()
    }

    #[test]
    fn incoming_ids_are_kept_and_bad_ones_replaced() {
        let app = Builder::new().with(RequestId::new()).app(echo_id);
        assert_eq!(run(&app, Some("trace-1")), "trace-1");
        for bad in ["", "has space", &"x".repeat(201)] {
            let made = run(&app, Some(bad));
            assert_ne!(made, bad);
            assert!(valid(made.as_bytes()));
        }
    }

    #[test]
    fn failures_before_the_head_carry_the_id() {
        let panics = Builder::new()
            .with(RequestId::new())
            .app(|_: Environ, _: StartResponse| -> Body { panic!("a bug") });
        let mut environ = Environ::new();
        environ.set("HTTP_X_REQUEST_ID", "trace-500");
        let response = gateway_core::block_on(driver::call(&panics, environ));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-request-id"], "trace-500");
        assert!(
            driver::failure(&response).is_some(),
            "still the driver's failure"
        );

        // A body that fails before its head, under a middleware that plays server (the
        // failure is relayed outward, with the header).
        let fails = Builder::new()
            .with(crate::Compression::new())
            .with(RequestId::new())
            .app(|_: Environ, _: StartResponse| Body::error("no database"));
        let made = run(&fails, None);
        assert!(valid(made.as_bytes()));
    }

    #[test]
    fn made_ids_are_unique() {
        let app = Builder::new().with(RequestId::new()).app(echo_id);
        let a = run(&app, None);
        let b = run(&app, None);
        assert_ne!(a, b);
    }

    #[test]
    fn an_id_the_app_sets_is_kept_and_other_headers_work() {
        let app = Builder::new()
            .with(RequestId::with_header(HeaderName::from_static("x-trace")))
            .app(|environ: Environ, start: StartResponse| {
                let seen = environ.get("HTTP_X_TRACE").map(<[u8]>::to_vec);
                let mut headers = HeaderMap::new();
                headers.insert("x-request-id", HeaderValue::from_static("app"));
                let _ = start.start(StatusCode::OK, headers);
                Body::from(seen.unwrap_or_default())
            });
        let mut environ = Environ::new();
        environ.set("HTTP_X_TRACE", "t-9");
        let response = gateway_core::block_on(driver::call(&app, environ));
        assert_eq!(response.headers()["x-trace"], "t-9");
        assert_eq!(response.headers()["x-request-id"], "app");
    }
}
