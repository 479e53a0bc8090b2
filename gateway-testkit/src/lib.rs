//! # gateway-testkit: proving that apps, middleware and servers follow the contract
//!
//! - [`TestClient`]: runs an app in-process and returns status, headers, body, the environ the
//!   app saw and whether its body was closed;
//! - [`Validator`]: a middleware that reports every contract violation of either side by rule
//!   (see [`validator`] for the rules);
//! - [`TestServer`] (feature `servers`, on by default): this project's HTTP, FastCGI or uwsgi
//!   server on a thread of its own, on a free port of 127.0.0.1;
//! - [`clients`] (feature `servers`): HTTP/1.1, FastCGI, uwsgi and CGI clients on this
//!   project's codecs, raw enough to send odd requests;
//! - [`conformance`] (feature `servers`): the wire-level conformance suite, run against any
//!   server by address and protocol (the `gateway-conformance` program runs it);
//! - [`MockApp`]: a scripted inner app whose calls can be inspected, for testing a
//!   middleware alone;
//! - [`scripted`] (feature `servers`): a connection of scripted bytes, for testing the FastCGI
//!   or uwsgi server without sockets;
//! - [`echo`]: the reference echo app every conformance run serves;
//! - [`strategies`] (feature `proptest`, on by default): proptest strategies for environs,
//!   requests, header maps and chunked bodies.
//!
//! ```
//! use gateway_core::{Body, Builder, Environ, StartResponse};
//! use gateway_testkit::{Mode, TestClient, Validator};
//!
//! let validator = Validator::new(Mode::Strict);
//! let report = validator.report();
//! let app = Builder::new().with(validator).app(|_: Environ, start: StartResponse| {
//!     let mut headers = http::HeaderMap::new();
//!     headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
//!     let _ = start.start(http::StatusCode::OK, headers);
//!     "fine"
//! });
//! let response = TestClient::new(app).get("/").send();
//! assert_eq!(response.text(), "fine");
//! assert!(report.is_clean(), "{:?}", report.violations());
//! ```
#![forbid(unsafe_code)]

mod client;
#[cfg(feature = "servers")]
pub mod clients;
mod close;
#[cfg(feature = "servers")]
pub mod conformance;
pub mod echo;
mod mock;
#[cfg(feature = "servers")]
pub mod scripted;
#[cfg(feature = "servers")]
mod server;
#[cfg(feature = "proptest")]
pub mod strategies;
pub mod validator;

pub use client::{EnvironSnapshot, TestClient, TestRequest, TestResponse};
pub use mock::{MockApp, MockCall, MockResponse};
#[cfg(feature = "servers")]
pub use server::TestServer;
pub use validator::{Mode, Report, Rule, Severity, Validator, ValidatorApp, Violation};
