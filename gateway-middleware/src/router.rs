//! Routing by method and path pattern: [`Router`].
//!
//! Patterns are matched against `PATH_INFO` (the path below the router's own mount) with
//! `matchit`, a radix tree, so a lookup costs about the same among ten thousand routes as among
//! ten. `{name}` matches one segment, `{*name}` the rest of the path; the values are given to the
//! app in the [`RouteParams`] extension. A path that matches no pattern gets the fallback (404 by
//! default); a path that matches with the wrong method gets 405 with an `Allow` header. HEAD is
//! served by the GET route when there is no HEAD route.
//!
//! ```
//! use gateway_core::{driver, Body, Environ, StartResponse};
//! use gateway_middleware::{RouteParams, Router};
//! use http::Method;
//!
//! let user = |environ: Environ, start: StartResponse| {
//!     let id = environ.extensions().get::<RouteParams>().unwrap().get("id").unwrap().to_owned();
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from(id)
//! };
//! let router = Router::builder().route(Method::GET, "/users/{id}", user).build().unwrap();
//!
//! let mut environ = Environ::new();
//! environ.set("REQUEST_METHOD", "GET");
//! environ.set("PATH_INFO", "/users/42");
//! let response = gateway_core::block_on(driver::call(&router, environ));
//! assert_eq!(response.status(), 200);
//!
//! let mut environ = Environ::new();
//! environ.set("REQUEST_METHOD", "POST");
//! environ.set("PATH_INFO", "/users/42");
//! let response = gateway_core::block_on(driver::call(&router, environ));
//! assert_eq!(response.status(), 405);
//! assert_eq!(response.headers()["allow"], "GET, HEAD");
//! ```

use std::fmt;
use std::sync::Arc;

use gateway_core::{App, Body, Environ, SharedApp, StartResponse};
use http::header::{ALLOW, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::NotFound;
use crate::plain::plain;

/// The named parameters of the route that matched, in the environ's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteParams {
    params: Vec<(Box<str>, Box<str>)>,
}

impl RouteParams {
    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }

    /// Every parameter, in the order of the pattern.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (&**n, &**v))
    }
}

struct Route {
    methods: Vec<(Method, SharedApp)>,
    /// The `Allow` header for this path.
    allow: HeaderValue,
}

impl Route {
    fn app_for(&self, method: &Method) -> Option<&SharedApp> {
        let find = |m: &Method| self.methods.iter().find(|(k, _)| k == m).map(|(_, a)| a);
        find(method).or_else(|| {
            (method == Method::HEAD)
                .then(|| find(&Method::GET))
                .flatten()
        })
    }
}

/// Dispatches by method and path pattern. Built with [`Router::builder`].
pub struct Router {
    tree: matchit::Router<usize>,
    routes: Vec<Route>,
    fallback: SharedApp,
}

/// Builds a [`Router`]; errors in patterns are reported by [`RouterBuilder::build`].
pub struct RouterBuilder {
    routes: Vec<(Method, String, SharedApp)>,
    fallback: SharedApp,
}

/// A pattern the router cannot take.
#[derive(Debug)]
pub struct RouteError {
    pattern: String,
    inner: matchit::InsertError,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid route `{}`: {}", self.pattern, self.inner)
    }
}

impl std::error::Error for RouteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner)
    }
}

impl Router {
    /// A builder with no routes and a 404 fallback.
    pub fn builder() -> RouterBuilder {
        RouterBuilder {
            routes: Vec::new(),
            fallback: Arc::new(NotFound),
        }
    }
}

impl RouterBuilder {
    /// Serves `method` requests whose path matches `pattern` with `app`. Adding the same method
    /// and pattern again replaces the app.
    pub fn route(mut self, method: Method, pattern: &str, app: impl App + 'static) -> Self {
        self.routes
            .retain(|(m, p, _)| !(m == method && p == pattern));
        self.routes
            .push((method, pattern.to_owned(), Arc::new(app)));
        self
    }

    /// The app for paths no pattern matches (404 by default).
    pub fn fallback(mut self, app: impl App + 'static) -> Self {
        self.fallback = Arc::new(app);
        self
    }

    /// The [`Router`], or the first pattern that is invalid or conflicts with another.
    pub fn build(self) -> Result<Router, RouteError> {
        let mut tree = matchit::Router::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut routes: Vec<Route> = Vec::new();
        for (method, pattern, app) in self.routes {
            let index = match patterns.iter().position(|p| *p == pattern) {
                Some(index) => index,
                None => {
                    tree.insert(pattern.clone(), routes.len())
                        .map_err(|inner| RouteError {
                            pattern: pattern.clone(),
                            inner,
                        })?;
                    patterns.push(pattern);
                    routes.push(Route {
                        methods: Vec::new(),
                        allow: HeaderValue::from_static(""),
                    });
                    routes.len() - 1
                }
            };
            routes[index].methods.push((method, app));
        }
        for route in &mut routes {
            let mut names: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
            if names.contains(&"GET") && !names.contains(&"HEAD") {
                names.push("HEAD");
            }
            names.sort_unstable();
            names.dedup();
            route.allow = HeaderValue::from_str(&names.join(", "))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        }
        Ok(Router {
            tree,
            routes,
            fallback: self.fallback,
        })
    }
}

impl App for Router {
    fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
        let Ok(path) = std::str::from_utf8(environ.path_info()) else {
            return self.fallback.call(environ, start);
        };
        let path = if path.is_empty() { "/" } else { path };
        let Ok(matched) = self.tree.at(path) else {
            return self.fallback.call(environ, start);
        };
        let route = &self.routes[*matched.value];
        let method = Method::from_bytes(environ.request_method().as_bytes()).ok();
        let Some(app) = method.as_ref().and_then(|m| route.app_for(m)) else {
            let mut headers = HeaderMap::new();
            headers.insert(ALLOW, route.allow.clone());
            return plain(start, StatusCode::METHOD_NOT_ALLOWED, headers);
        };
        let params = RouteParams {
            params: matched
                .params
                .iter()
                .map(|(name, value)| (Box::from(name), Box::from(value)))
                .collect(),
        };
        environ.extensions_mut().insert(params);
        app.call(environ, start)
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn answer(tag: &'static str) -> impl App + 'static {
        move |environ: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, HeaderMap::new());
            let params = environ
                .extensions()
                .get::<RouteParams>()
                .map(|p| {
                    p.iter()
                        .map(|(n, v)| format!("{n}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            Body::from(format!("{tag} {params}"))
        }
    }

    fn request(router: &Router, method: &str, path: &str) -> (u16, Option<String>, String) {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_owned());
        environ.set("PATH_INFO", path.to_owned());
        let response = gateway_core::block_on(gateway_core::driver::call(router, environ));
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get(ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = gateway_core::block_on(response.into_body().collect()).unwrap();
        (
            status,
            allow,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    fn router() -> Router {
        Router::builder()
            .route(Method::GET, "/", answer("index"))
            .route(Method::GET, "/users/{id}", answer("show"))
            .route(Method::PUT, "/users/{id}", answer("update"))
            .route(Method::DELETE, "/users/{id}", answer("delete"))
            .route(Method::GET, "/files/{*path}", answer("file"))
            .route(Method::POST, "/users", answer("create"))
            .build()
            .unwrap()
    }

    #[test]
    fn methods_and_patterns_dispatch_with_parameters() {
        let router = router();
        assert_eq!(request(&router, "GET", "/").2, "index ");
        assert_eq!(request(&router, "GET", "").2, "index ");
        assert_eq!(request(&router, "GET", "/users/7").2, "show id=7");
        assert_eq!(request(&router, "PUT", "/users/7").2, "update id=7");
        assert_eq!(
            request(&router, "GET", "/files/a/b.txt").2,
            "file path=a/b.txt"
        );
        assert_eq!(request(&router, "POST", "/users").2, "create ");
        assert_eq!(request(&router, "HEAD", "/users/7").0, 200);
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
        let router = router();
        assert_eq!(request(&router, "GET", "/nothing").0, 404);
        assert_eq!(request(&router, "GET", "/users/7/extra").0, 404);
        let (status, allow, _) = request(&router, "POST", "/users/7");
        assert_eq!(status, 405);
        assert_eq!(allow.as_deref(), Some("DELETE, GET, HEAD, PUT"));
        let (status, allow, _) = request(&router, "GET", "/users");
        assert_eq!((status, allow.as_deref()), (405, Some("POST")));
    }

    #[test]
    fn conflicting_patterns_are_reported_at_build() {
        let error = Router::builder()
            .route(Method::GET, "/a/{x}", answer("1"))
            .route(Method::GET, "/a/{y}", answer("2"))
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("/a/{y}"), "{error}");
    }

    #[test]
    fn ten_thousand_routes_each_found_by_its_pattern() {
        let mut builder = Router::builder();
        for i in 0..10_000 {
            builder = builder.route(Method::GET, &format!("/r{i}/{{id}}"), answer("many"));
        }
        let router = builder.build().unwrap();
        assert_eq!(request(&router, "GET", "/r9876/5").2, "many id=5");
    }
}
