//! # gateway-servers: the adapters that run any gateway app
//!
//! - [`http`]: the built-in HTTP/1.1 and HTTP/2 server, on hyper;
//! - [`cgi`]: CGI, one request per process, no runtime;
//! - [`fastcgi`]: the FastCGI server (all three roles, multiplexing), its record codec and the
//!   application side of a connection (both sans-I/O);
//! - [`uwsgi`]: the uwsgi server and its packet codec (sans-I/O);
//! - [`runtime`]: what the network servers share: listeners (TCP, Unix sockets, inherited and
//!   systemd sockets), the worker pool, limits and timeouts ([`runtime::Config`]), graceful
//!   shutdown, worker processes under a master ([`runtime::run_master`]) and the counters of
//!   `--stats` and `--access-log` ([`runtime::stats`]);
//! - [`params`]: the normalisation of CGI-style variables from front ends;
//! - the launcher, [`run`]: serves an app on whatever interface the process is in.
//!
//! ```no_run
//! use gateway_core::{Body, Environ, StartResponse};
//!
//! fn main() -> std::process::ExitCode {
//!     gateway_servers::run(|_: Environ, start: StartResponse| {
//!         let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!         Body::from("Hello, world!\n")
//!     })
//! }
//! ```

pub mod cgi;
pub mod fastcgi;
pub mod http;
mod launcher;
pub mod params;
pub mod proxy_protocol;
pub mod runtime;
#[cfg(feature = "tls")]
pub mod tls;
pub mod uwsgi;

pub use launcher::{LauncherArgs, LogFormat, flag_error, is_cgi, run, run_with};
