//! Routing by host: [`HostRouter`].
//!
//! The host is the request's `Host` header (`HTTP_HOST`), else `SERVER_NAME`, without its port,
//! compared case-insensitively. An exact name wins over a wildcard; among wildcards
//! (`*.example.com`, which matches `a.example.com` and `a.b.example.com` but not
//! `example.com`) the longest wins. A lookup costs a hash lookup per label of the host.
//!
//! ```
//! use gateway_core::{driver, Body, Environ, StartResponse};
//! use gateway_middleware::HostRouter;
//!
//! let tagged = |tag: &'static str| move |_: Environ, start: StartResponse| {
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from(tag)
//! };
//! let app = HostRouter::builder()
//!     .host("example.com", tagged("main"))
//!     .host("*.example.com", tagged("tenant"))
//!     .build();
//!
//! let mut environ = Environ::new();
//! environ.set("HTTP_HOST", "shop.Example.com:8080");
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! let body = gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body()));
//! assert_eq!(body.unwrap().to_bytes(), "tenant");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use gateway_core::{App, Body, Environ, SharedApp, StartResponse};

use crate::NotFound;

/// Dispatches by host. Built with [`HostRouter::builder`].
#[derive(Clone)]
pub struct HostRouter {
    exact: HashMap<Box<[u8]>, SharedApp>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<[u8]>, SharedApp>,
    fallback: SharedApp,
}

/// Builds a [`HostRouter`].
#[derive(Clone)]
pub struct HostRouterBuilder {
    router: HostRouter,
}

impl HostRouter {
    /// A builder with no hosts and a 404 fallback.
    pub fn builder() -> HostRouterBuilder {
        HostRouterBuilder {
            router: HostRouter {
                exact: HashMap::new(),
                wildcard: HashMap::new(),
                fallback: Arc::new(NotFound),
            },
        }
    }

    fn find(&self, host: &[u8]) -> Option<&SharedApp> {
        if let Some(app) = self.exact.get(host) {
            return Some(app);
        }
        host.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'.')
            .find_map(|(at, _)| self.wildcard.get(&host[at + 1..]))
    }
}

/// The host part of a `Host` value: lower case, without the port (`[v6]` kept whole).
fn host_name(value: &[u8]) -> Vec<u8> {
    let end = if value.starts_with(b"[") {
        value
            .iter()
            .position(|&b| b == b']')
            .map_or(value.len(), |i| i + 1)
    } else {
        value
            .iter()
            .rposition(|&b| b == b':')
            .unwrap_or(value.len())
    };
    let mut name = value[..end].to_ascii_lowercase();
    if name.last() == Some(&b'.') {
        name.pop();
    }
    name
}

impl HostRouterBuilder {
    /// Serves requests for `host` with `app`: a name (`example.com`) or a wildcard
    /// (`*.example.com`).
    pub fn host(mut self, host: &str, app: impl App + 'static) -> Self {
        let app: SharedApp = Arc::new(app);
        match host.strip_prefix("*.") {
            Some(suffix) => self
                .router
                .wildcard
                .insert(host_name(suffix.as_bytes()).into(), app),
            None => self
                .router
                .exact
                .insert(host_name(host.as_bytes()).into(), app),
        };
        self
    }

    /// The app for hosts nothing matches (404 by default).
    pub fn fallback(mut self, app: impl App + 'static) -> Self {
        self.router.fallback = Arc::new(app);
        self
    }

    /// The [`HostRouter`].
    pub fn build(self) -> HostRouter {
        self.router
    }
}

impl App for HostRouter {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let host = environ
            .get("HTTP_HOST")
            .filter(|h| !h.is_empty())
            .unwrap_or(environ.server_name());
        match self.find(&host_name(host)) {
            Some(app) => app.call(environ, start),
            None => self.fallback.call(environ, start),
        }
    }
}

impl fmt::Debug for HostRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRouter")
            .field("exact", &self.exact.len())
            .field("wildcard", &self.wildcard.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for HostRouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRouterBuilder")
            .field("router", &self.router)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn tagged(tag: &'static str) -> impl App + 'static {
        move |_: Environ, start: StartResponse| {
            let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
            Body::from(tag)
        }
    }

    fn ask(app: &HostRouter, host: Option<&str>, server_name: &str) -> (u16, String) {
        let mut environ = Environ::new();
        if let Some(host) = host {
            environ.set("HTTP_HOST", host.to_owned());
        }
        environ.set("SERVER_NAME", server_name.to_owned());
        let response = gateway_core::block_on(gateway_core::driver::call(app, environ));
        let status = response.status().as_u16();
        let body = gateway_core::block_on(response.into_body().collect()).unwrap();
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    #[test]
    fn exact_then_longest_wildcard_then_fallback() {
        let app = HostRouter::builder()
            .host("example.com", tagged("main"))
            .host("*.example.com", tagged("any"))
            .host("*.eu.example.com", tagged("eu"))
            .host("[::1]", tagged("v6"))
            .build();
        let tag = |host: &str| ask(&app, Some(host), "fallback.invalid").1;
        assert_eq!(tag("example.com"), "main");
        assert_eq!(tag("EXAMPLE.com.:80"), "main");
        assert_eq!(tag("a.example.com"), "any");
        assert_eq!(tag("a.b.example.com"), "any");
        assert_eq!(tag("x.eu.example.com"), "eu");
        assert_eq!(tag("[::1]:8080"), "v6");
        assert_eq!(ask(&app, Some("other.org"), "x").0, 404);
        assert_eq!(
            ask(&app, None, "example.com").1,
            "main",
            "SERVER_NAME without Host"
        );
    }
}
