//! Interop with tower: a [`Service`] served as an app ([`ServiceApp`]), and an app served as a
//! [`Service`] ([`AppService`]).
//!
//! With [`ServiceApp`], anything built on tower and `http` (an axum `Router`, a tower-http
//! stack, a hyper service) runs on every server of this project: CGI, FastCGI, uwsgi, HTTP.
//! With [`AppService`], an app runs wherever a tower service does (inside hyper, behind
//! tower middleware).
//!
//! ```
//! use gateway_core::tower::ServiceApp;
//! use gateway_core::{driver, Environ};
//!
//! let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
//! let app = ServiceApp::new(router);
//!
//! let mut environ = Environ::new();
//! environ.set("REQUEST_METHOD", "GET");
//! environ.set("PATH_INFO", "/hello");
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! assert_eq!(response.status(), 200);
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::convert::{ServerContext, environ_from_request, request_from_environ, respond};
use crate::driver::{self, ResponseBody, ResponseFuture};
use crate::{App, Body, BoxError, Environ, Input, StartResponse};

/// A tower [`Service`] served as an app.
///
/// Each call converts the environ with
/// [`request_from_environ`] (the service sees the path
/// below the app's mount, and the mount in the [`ScriptName`](crate::convert::ScriptName)
/// extension), clones the service, waits for it to be ready and calls it inside the returned
/// body, then answers with its response through [`respond`]. A
/// service error, or an environ that makes no valid request, fails the response (a 500).
///
/// The service must be `Clone + Sync`; wrap one that is not `Sync` in tower's
/// `BoxCloneSyncService`.
#[derive(Clone)]
pub struct ServiceApp<S> {
    service: S,
}

impl<S> ServiceApp<S> {
    /// Serves `service` as an app.
    pub const fn new(service: S) -> Self {
        ServiceApp { service }
    }

    /// The service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The service, mutable.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// The service back.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S> fmt::Debug for ServiceApp<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceApp")
            .field("service", &std::any::type_name::<S>())
            .finish()
    }
}

impl<S, B> App for ServiceApp<S>
where
    S: Service<Request<Input>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        let request = match request_from_environ(environ) {
            Ok(request) => request,
            Err(error) => return Body::error(error),
        };
        let mut service = self.service.clone();
        Body::from_future(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = service.call(request).await.map_err(Into::into)?;
            Ok(respond(start, response))
        })
    }
}

/// An app served as a tower [`Service`] of HTTP requests.
///
/// Each request becomes an environ with
/// [`environ_from_request`] and the service's
/// [`ServerContext`], and the app runs through [`driver::call`]. The app
/// is called in [`Service::call`], on the caller's thread: a blocking app blocks the caller.
///
/// ```
/// use gateway_core::tower::AppService;
/// use gateway_core::{Environ, StartResponse};
/// use tower::ServiceExt;
///
/// let app = |_: Environ, start: StartResponse| {
///     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
///     "from the app"
/// };
/// let service = AppService::new(app);
/// let request = http::Request::get("/").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
/// let response = gateway_core::block_on(service.oneshot(request)).unwrap();
/// assert_eq!(response.status(), 200);
/// ```
pub struct AppService<A> {
    app: Arc<A>,
    context: Arc<ServerContext>,
}

impl<A> AppService<A> {
    /// Serves `app`, with a default [`ServerContext`].
    pub fn new(app: A) -> Self {
        AppService::with_context(app, ServerContext::default())
    }

    /// Serves `app`, building environs with `context`.
    pub fn with_context(app: A, context: ServerContext) -> Self {
        AppService {
            app: Arc::new(app),
            context: Arc::new(context),
        }
    }

    /// The app.
    pub fn get_ref(&self) -> &A {
        &self.app
    }
}

impl<A> Clone for AppService<A> {
    fn clone(&self) -> Self {
        AppService {
            app: self.app.clone(),
            context: self.context.clone(),
        }
    }
}

impl<A> fmt::Debug for AppService<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppService")
            .field("app", &std::any::type_name::<A>())
            .field("context", &self.context)
            .finish()
    }
}

impl<A, B> Service<Request<B>> for AppService<A>
where
    A: App,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = AppServiceFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> AppServiceFuture {
        let environ = environ_from_request(request, &self.context);
        AppServiceFuture {
            inner: driver::call(&*self.app, environ),
        }
    }
}

/// The future of an [`AppService`] call: the app's response, never an error (failures are
/// 500 responses or aborted bodies, as the driver decides).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct AppServiceFuture {
    inner: ResponseFuture,
}

impl Future for AppServiceFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner).poll(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::routing::{get, post};
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn environ(method: &str, path: &str, body: &'static str) -> Environ {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", method.to_owned());
        environ.set("SCRIPT_NAME", "/mount");
        environ.set("PATH_INFO", path.to_owned());
        environ.set("QUERY_STRING", "");
        environ.set("CONTENT_LENGTH", body.len().to_string());
        environ.set("HTTP_X_NAME", "axum");
        environ.set_input(Input::from_bytes(body).with_limit(body.len() as u64));
        environ
    }

    fn body_of(response: Response<ResponseBody>) -> Bytes {
        crate::block_on(response.into_body().collect())
            .unwrap()
            .to_bytes()
    }

    #[test]
    fn an_axum_router_runs_as_an_app() {
        let router = axum::Router::new()
            .route(
                "/users/{id}",
                get(|Path(id): Path<u32>, headers: http::HeaderMap| async move {
                    format!("user {id} for {:?}", headers["x-name"])
                }),
            )
            .route("/echo", post(|body: Bytes| async move { body }));
        let app = ServiceApp::new(router);

        let response = crate::block_on(driver::call(&app, environ("GET", "/users/7", "")));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_of(response), "user 7 for \"axum\"");

        let response = crate::block_on(driver::call(&app, environ("POST", "/echo", "ping")));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_of(response), "ping");

        let response = crate::block_on(driver::call(&app, environ("GET", "/nowhere", "")));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);

        let response = crate::block_on(driver::call(&app, environ("DELETE", "/echo", "")));
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn a_failing_service_is_a_500() {
        let service = tower::service_fn(|_: Request<Input>| async {
            Err::<Response<Body>, BoxError>("backend down".into())
        });
        let app = ServiceApp::new(service);
        let response = crate::block_on(driver::call(&app, environ("GET", "/", "")));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn an_app_runs_as_a_service_and_sees_the_request() {
        let app = |environ: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, http::HeaderMap::new());
            let path = environ.path_info().to_vec();
            Body::from(path)
        };
        let service = AppService::new(app);
        let request = Request::get("/a%20b")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = crate::block_on(service.clone().oneshot(request)).unwrap();
        assert_eq!(body_of(response), "/a b");
    }

    #[test]
    fn round_trip_app_to_service_to_app() {
        // An app served as a service, served as an app again: the contract survives both ways.
        let inner = |mut environ: Environ, start: StartResponse| {
            let mut body = Vec::new();
            std::io::Read::read_to_end(environ.input(), &mut body).unwrap();
            let _ = start.start(StatusCode::CREATED, http::HeaderMap::new());
            Body::from(body)
        };
        let app = ServiceApp::new(AppService::new(inner));
        let response = crate::block_on(driver::call(&app, environ("PUT", "/x", "payload")));
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(body_of(response), "payload");
    }
}
