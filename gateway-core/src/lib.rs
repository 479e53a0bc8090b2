//! # gateway-core: the contract between servers and applications
//!
//! What WSGI (PEP 3333) is for Python, in Rust's terms: a small contract that lets any
//! application run unchanged on CGI, FastCGI, the uwsgi protocol or an HTTP server, and lets
//! middleware written once compose with all of them.
//!
//! | WSGI | here |
//! |---|---|
//! | `environ` | [`Environ`]: CGI meta-variables as bytes, typed gateway fields, typed extensions |
//! | `wsgi.input` | [`Input`]: a stream, with a blocking `Read`/`BufRead` view, ending at the true end of the body |
//! | `wsgi.errors` | [`ErrorStream`]: an `io::Write` whose lines the server logs |
//! | `start_response` | [`StartResponse`]: started once (it is moved); a second start only after an error |
//! | `write()` | [`Writer`] |
//! | the returned iterable, `close()` | [`Body`], an `http_body::Body`; dropping it is `close()` |
//! | `wsgi.file_wrapper` | [`Body::file`] |
//! | the application callable | [`App`]; closures `Fn(Environ, StartResponse) -> impl Into<Body>` are apps |
//! | middleware | [`Middleware`] and [`Builder`] |
//! | the server's core loop | [`driver::call`]: runs an app and enforces the contract |
//!
//! A server builds an [`Environ`] (from an [`http::Request`] with
//! [`convert::environ_from_request`], or from its own protocol), runs the app with
//! [`driver::call`], and sends the [`http::Response`] it resolves to. An app receives the
//! environ and a [`StartResponse`], starts the response, and returns a [`Body`]:
//!
//! ```
//! use gateway_core::{driver, Body, Environ, StartResponse};
//! use http::{header, HeaderMap, HeaderValue, StatusCode};
//!
//! fn hello(environ: Environ, start: StartResponse) -> Body {
//!     let mut headers = HeaderMap::new();
//!     headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
//!     if let Err(error) = start.start(StatusCode::OK, headers) {
//!         return Body::error(error);
//!     }
//!     let name = String::from_utf8_lossy(environ.query_string()).into_owned();
//!     Body::from(format!("Hello, {name}!\n"))
//! }
//!
//! let mut environ = Environ::new();
//! environ.set("REQUEST_METHOD", "GET");
//! environ.set("QUERY_STRING", "world");
//! let response = gateway_core::block_on(driver::call(&hello, environ));
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["content-length"], "14");
//! ```
//!
//! The crate depends on `http`, `http-body`, `bytes`, `futures-core` and `pin-project-lite`
//! only, and on no async runtime. With the `tower` feature, [`tower`] serves a tower `Service`
//! (an axum `Router`, say) as an app, and an app as a `Service`.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod app;
mod block;
mod body;
pub mod convert;
mod decimal;
pub mod driver;
mod environ;
mod error;
mod errors;
mod input;
mod start;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use app::{App, Builder, Identity, Middleware, SharedApp, Stack};
pub use block::{block_on, is_event_loop_thread, mark_event_loop_thread};
pub use body::{Body, FILE_CHUNK_SIZE, FileBody};
pub use environ::{Environ, UrlScheme, VERSION, header_var_name, latin1};
pub use error::{Error, ErrorKind};
pub use errors::{
    ErrorSink, ErrorStream, MAX_ERROR_LINE, SharedSink, Stderr, clf_time, log_escape,
};
pub use input::{BodyFailure, BodyOutcome, Input, READ_CHUNK_SIZE};
pub use start::{StartError, StartResponse, Writer, is_hop_by_hop};

/// A boxed error that can cross threads: what bodies and apps fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
