//! The apps of the example programs, kept in a library so tests and other programs reuse them.
//!
//! - [`hello`]: `Hello, world!` in plain text.
//! - [`echo`]: the environ the app saw and a digest of the request body, as JSON; what every
//!   conformance run uses. It lives in the testkit, beside the conformance suite that relies on
//!   its fixed behaviour: see [`gateway_testkit::echo`].
//!
//! ```
//! use gateway_core::{driver, Environ};
//!
//! let mut environ = Environ::new();
//! environ.set("REQUEST_METHOD", "GET");
//! environ.set("PATH_INFO", "/status/201");
//! let response = gateway_core::block_on(driver::call(&examples::echo, environ));
//! assert_eq!(response.status(), 201);
//! ```

use gateway_core::{Body, Environ, StartResponse};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

/// The allocator of every example program (they all link this library), unless built without
/// the `mimalloc` feature.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use gateway_testkit::echo::{STREAM_CHUNK, echo};

/// Answers `Hello, world!` in plain text.
pub fn hello(_environ: Environ, start: StartResponse) -> Body {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match start.start(StatusCode::OK, headers) {
        Ok(_) => Body::from("Hello, world!\n"),
        Err(error) => Body::error(error),
    }
}

/// The user guide's pages and the repository's README, included here so that
/// `cargo test -p examples --doc` compiles and runs every Rust block of them.
pub mod guide {
    #[doc = include_str!("../../README.md")]
    pub mod readme {}
    #[doc = include_str!("../../docs/guide/README.md")]
    pub mod index {}
    #[doc = include_str!("../../docs/guide/01-writing-an-app.md")]
    pub mod writing_an_app {}
    #[doc = include_str!("../../docs/guide/02-writing-middleware.md")]
    pub mod writing_middleware {}
    #[doc = include_str!("../../docs/guide/03-deploying.md")]
    pub mod deploying {}
    #[doc = include_str!("../../docs/guide/04-beyond-one-machine.md")]
    pub mod beyond_one_machine {}
    #[doc = include_str!("../../docs/guide/05-conformance.md")]
    pub mod conformance {}
    #[doc = include_str!("../../docs/guide/06-reference.md")]
    pub mod reference {}
}
