//! Short plain-text answers the routers give: 404, 405.

use gateway_core::{App, Body, Environ, StartResponse};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

/// Answers with a short plain-text body naming `status`, plus `headers`.
pub(crate) fn plain(start: StartResponse, status: StatusCode, mut headers: HeaderMap) -> Body {
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match start.start(status, headers) {
        Ok(_) => Body::from(format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )),
        Err(error) => Body::error(error),
    }
}

/// The app that answers every request with 404 Not Found: what the routers fall back to.
///
/// ```
/// use gateway_core::{driver, Environ};
/// use gateway_middleware::NotFound;
///
/// let response = gateway_core::block_on(driver::call(&NotFound, Environ::new()));
/// assert_eq!(response.status(), 404);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NotFound;

impl App for NotFound {
    fn call(&self, _environ: Environ, start: StartResponse) -> Body {
        plain(start, StatusCode::NOT_FOUND, HeaderMap::new())
    }
}
