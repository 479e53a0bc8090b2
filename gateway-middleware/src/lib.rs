//! # gateway-middleware: middleware for gateway apps
//!
//! Each middleware is an [`App`](gateway_core::App) that wraps or dispatches to other apps, so
//! it runs on every server of this project and composes with any other middleware.
//!
//! - Routing: [`Mount`] (apps under path prefixes, moving the prefix from `PATH_INFO` to
//!   `SCRIPT_NAME`), [`HostRouter`] (by host, exact or wildcard) and [`Router`] (by method and
//!   path pattern with named parameters, 404 and 405 with `Allow`).
//! - The everyday set: [`AccessLog`] (Combined Log Format or a format of your own),
//!   [`Compression`] (br, zstd, gzip, deflate; q-values; streaming), [`ErrorPages`],
//!   [`BodyLimit`] (413 for request bodies over a limit, chunked ones included),
//!   [`ProxyHeaders`] (`X-Forwarded-*` and `Forwarded`, from trusted proxies only) and
//!   [`RequestId`], [`Timeout`] (504), and the [`StaticFiles`] app (conditional requests, ranges, file bodies).
//! - [`balancer`]: [`Balancer`](balancer::Balancer), an app that spreads requests over backend
//!   apps (round robin, weighted, least outstanding, consistent hashing), with passive and
//!   active health checks, retries and a bound per backend.
//! - `remote` (feature `remote`, on by default): `Remote`, an app that forwards each request
//!   to another server over HTTP, FastCGI or uwsgi; the balancer's usual backends.
//! - [`NotFound`]: the app that answers 404 to everything, what the routers fall back to.
#![forbid(unsafe_code)]

mod access_log;
pub mod balancer;
mod body_limit;
mod compression;
mod error_pages;
mod host;
mod mount;
mod plain;
mod proxy_headers;
#[cfg(feature = "remote")]
pub mod remote;
mod request_id;
mod router;
mod static_files;
mod timeout;

pub use access_log::{AccessLog, AccessLogApp, Combined, LogFormat, LogRecord, LogSink};
pub use body_limit::{BodyLimit, BodyLimitApp};
pub use compression::{
    Coding, Compression, CompressionApp, DEFAULT_MIN_SIZE, DefaultPredicate, Predicate,
};
pub use error_pages::{DefaultPage, ErrorPages, ErrorPagesApp, Page};
pub use host::{HostRouter, HostRouterBuilder};
pub use mount::{Mount, MountBuilder};
pub use plain::NotFound;
pub use proxy_headers::{OriginalPeer, ProxyHeaders, ProxyHeadersApp, TrustedNet};
pub use request_id::{MAX_REQUEST_ID_LEN, RequestId, RequestIdApp, RequestIdValue};
pub use router::{RouteError, RouteParams, Router, RouterBuilder};
pub use static_files::StaticFiles;
pub use timeout::{Timeout, TimeoutApp};
