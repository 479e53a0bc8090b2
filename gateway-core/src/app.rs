//! [`App`], [`Middleware`] and the [`Builder`] that stacks middleware around an app.

use std::fmt;
use std::sync::Arc;

use crate::{Body, Environ, StartResponse};

/// An application: WSGI's application callable.
///
/// A server calls [`App::call`] once per request, with the request's [`Environ`] and a
/// [`StartResponse`], from any thread and possibly from many at once, so an app is `Send +
/// Sync` and is called through `&self`.
///
/// # What an app must do
///
/// - Start the response exactly once (a second start is possible only after an error, with
///   [`Writer::restart_on_error`](crate::Writer::restart_on_error)), either in `call` or in its
///   body before the body's first non-empty chunk.
/// - Return at once: `call` builds a [`Body`] and returns it. Waiting belongs inside the body
///   (a [`Body::from_future`] for async work); blocking inside `call` is allowed, since servers
///   call apps on a worker pool by default, but it holds a worker; an app served as
///   non-blocking (on the event loop) must not block.
/// - Send no hop-by-hop headers and apply no transfer coding: those are the server's.
/// - Leave `Content-Length` out, or make it agree with the body.
///
/// # What a server must do
///
/// Run the app through [`driver::call`](crate::driver::call), which enforces the rest: when
/// the head goes out, bodies of HEAD, 1xx, 204 and 304 responses, Content-Length, errors and
/// panics (500 before the head, an aborted response after it), and dropping the body on every
/// path, which is the app's `close()`.
///
/// # Closures are apps
///
/// Any `Fn(Environ, StartResponse) -> B` where `B: Into<Body>` is an app. A blocking app reads
/// its input and answers in the call:
///
/// ```
/// use std::io::Read;
/// use gateway_core::{Body, Environ, StartResponse};
/// use http::{HeaderMap, StatusCode};
///
/// let echo = |mut environ: Environ, start: StartResponse| {
///     let mut body = Vec::new();
///     if let Err(error) = environ.input().read_to_end(&mut body) {
///         return Body::error(error);
///     }
///     match start.start(StatusCode::OK, HeaderMap::new()) {
///         Ok(_) => Body::from(body),
///         Err(error) => Body::error(error),
///     }
/// };
/// # let response = gateway_core::block_on(gateway_core::driver::call(&echo, Environ::new()));
/// # assert_eq!(response.status(), 200);
/// ```
///
/// An async app returns at once and decides its status after an `.await`, inside its body:
///
/// ```
/// use gateway_core::{Body, Environ, StartResponse};
/// use http::{HeaderMap, StatusCode};
///
/// async fn lookup(key: String) -> Option<String> {
///     (key == "/answer").then(|| "42".to_owned())
/// }
///
/// let app = |environ: Environ, start: StartResponse| {
///     let key = String::from_utf8_lossy(environ.path_info()).into_owned();
///     Body::from_future(async move {
///         let (status, body) = match lookup(key).await {
///             Some(value) => (StatusCode::OK, Body::from(value)),
///             None => (StatusCode::NOT_FOUND, Body::empty()),
///         };
///         start.start(status, HeaderMap::new())?;
///         Ok(body)
///     })
/// };
/// # let mut environ = Environ::new();
/// # environ.set("PATH_INFO", "/answer");
/// # let response = gateway_core::block_on(gateway_core::driver::call(&app, environ));
/// # assert_eq!(response.status(), 200);
/// ```
pub trait App: Send + Sync {
    /// Handles one request: starts the response (now or from the body) and returns the body.
    fn call(&self, environ: Environ, start: StartResponse) -> Body;
}

impl<F, B> App for F
where
    F: Fn(Environ, StartResponse) -> B + Send + Sync,
    B: Into<Body>,
{
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        self(environ, start).into()
    }
}

impl<A: App + ?Sized> App for Arc<A> {
    fn call(&self, environ: Environ, start: StartResponse) -> Body {
        (**self).call(environ, start)
    }
}

/// A shared, type-erased app, for when the type of an app is chosen at run time.
///
/// (`Box<dyn App>` and `&A` cannot be apps themselves, because closures are apps and a boxed
/// or borrowed closure is a closure too; an `Arc` is used instead.)
pub type SharedApp = Arc<dyn App>;

/// Middleware: makes an app out of an app. It is an app to its server and a server to its app.
///
/// This is tower's `Layer` for apps: [`wrap`](Middleware::wrap) takes the inner app and returns
/// the wrapped one, which implements [`App`]. A closure `Fn(A) -> W` is a middleware.
///
/// # What a middleware must do
///
/// Both sides' rules at once. As a server to its app: give it an environ that follows the
/// contract (a router moves the matched prefix from `PATH_INFO` to `SCRIPT_NAME`), and never
/// consume its body itself but pass it on or wrap it, so that the server's drop reaches it
/// (its `close()`). As an app to its server: what [`App`] says, and if it transforms the body,
/// transform the data its app writes as well ([`StartResponse::map_write`]), and drop or
/// recompute `Content-Length`.
///
/// # A middleware that rewrites headers
///
/// The head is changed with [`StartResponse::map_head`]:
///
/// ```
/// use gateway_core::{App, Body, Builder, Environ, Middleware, StartResponse};
/// use http::{HeaderMap, HeaderValue, StatusCode};
///
/// /// Sets `Server: gateway` on every response.
/// #[derive(Clone, Debug)]
/// struct ServerHeader;
///
/// struct ServerHeaderApp<A>(A);
///
/// impl<A: App> Middleware<A> for ServerHeader {
///     type App = ServerHeaderApp<A>;
///     fn wrap(&self, app: A) -> ServerHeaderApp<A> {
///         ServerHeaderApp(app)
///     }
/// }
///
/// impl<A: App> App for ServerHeaderApp<A> {
///     fn call(&self, environ: Environ, start: StartResponse) -> Body {
///         let start = start.map_head(|_: &mut StatusCode, headers: &mut HeaderMap| {
///             headers.insert(http::header::SERVER, HeaderValue::from_static("gateway"));
///         });
///         self.0.call(environ, start)
///     }
/// }
///
/// let hello = |_: Environ, start: StartResponse| match start.start(StatusCode::OK, HeaderMap::new()) {
///     Ok(_) => Body::from("hi"),
///     Err(error) => Body::error(error),
/// };
/// let app = Builder::new().with(ServerHeader).app(hello);
/// let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
/// assert_eq!(response.headers()["server"], "gateway");
/// ```
///
/// # A middleware that rewrites the body
///
/// A body transformation wraps the app's body (so the app's body is still dropped when the
/// response ends), transforms what the app pushes through
/// [`Writer::write`](crate::Writer::write) with [`StartResponse::map_write`] (that data never
/// passes through the body), and removes `Content-Length`, which no longer holds:
///
/// ```
/// use std::pin::Pin;
/// use std::task::{Context, Poll};
/// use bytes::Bytes;
/// use gateway_core::{App, Body, BoxError, Environ, StartResponse};
/// use http::{header, HeaderMap, HeaderValue, StatusCode};
/// use http_body::Frame;
///
/// /// Upper-cases everything the app it wraps sends: its written data and its body chunks.
/// struct Shout<A>(A);
///
/// struct ShoutBody(Body);
///
/// fn shout(data: Bytes) -> Bytes {
///     Bytes::from(data.to_ascii_uppercase())
/// }
///
/// impl http_body::Body for ShoutBody {
///     type Data = Bytes;
///     type Error = BoxError;
///     fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>)
///         -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
///     {
///         Pin::new(&mut self.0).poll_frame(cx).map(|frame| frame.map(|r| r.map(|f| {
///             f.map_data(shout)
///         })))
///     }
/// }
///
/// impl<A: App> App for Shout<A> {
///     fn call(&self, environ: Environ, start: StartResponse) -> Body {
///         let start = start
///             .map_head(|_: &mut StatusCode, headers: &mut HeaderMap| {
///                 // Same length here, but a transformation must not trust the old value.
///                 headers.remove(header::CONTENT_LENGTH);
///             })
///             .map_write(|data: Bytes| Ok(shout(data)));
///         Body::new(ShoutBody(self.0.call(environ, start)))
///     }
/// }
///
/// // An app that writes part of its output and returns the rest as its body.
/// let app = Shout(|_: Environ, start: StartResponse| {
///     let mut headers = HeaderMap::new();
///     headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
///     let Ok(mut writer) = start.start(StatusCode::OK, headers) else {
///         return Body::empty();
///     };
///     match writer.write("hello ") {
///         Ok(()) => Body::from("world"),
///         Err(error) => Body::error(error),
///     }
/// });
/// let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
/// let body = gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body()));
/// assert_eq!(body.unwrap().to_bytes(), "HELLO WORLD");
/// ```
///
/// # The classic mistake
///
/// A middleware that reads the app's whole body before starting its own response breaks
/// streaming (and holds the whole body in memory); one that never hands the body on leaks
/// whatever the body holds until it is dropped. Wrap the body and transform it frame by frame,
/// as above; to decide from the head, use [`driver::call`](crate::driver::call) on the inner
/// app and wait for its head (not its body) inside a [`Body::from_future`].
pub trait Middleware<A> {
    /// The wrapped app.
    type App;

    /// Wraps `app`.
    fn wrap(&self, app: A) -> Self::App;
}

impl<A, F, W> Middleware<A> for F
where
    F: Fn(A) -> W,
{
    type App = W;

    fn wrap(&self, app: A) -> W {
        self(app)
    }
}

/// The middleware that changes nothing: [`Builder::new`] starts from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<A> Middleware<A> for Identity {
    type App = A;

    fn wrap(&self, app: A) -> A {
        app
    }
}

/// Two middleware, one inside the other: `outer` wraps what `inner` made.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<Inner, Outer> Stack<Inner, Outer> {
    /// Stacks `outer` around `inner`.
    pub const fn new(inner: Inner, outer: Outer) -> Self {
        Stack { inner, outer }
    }
}

impl<A, Inner, Outer> Middleware<A> for Stack<Inner, Outer>
where
    Inner: Middleware<A>,
    Outer: Middleware<Inner::App>,
{
    type App = Outer::App;

    fn wrap(&self, app: A) -> Self::App {
        self.outer.wrap(self.inner.wrap(app))
    }
}

/// Stacks middleware around an app. The first middleware added is the outermost: it sees the
/// request first and the response last.
///
/// ```
/// use gateway_core::{Body, Builder, Environ, StartResponse};
///
/// fn tag<A: gateway_core::App>(name: &'static str) -> impl Fn(A) -> Tagged<A> {
///     move |app| Tagged(name, app)
/// }
/// struct Tagged<A>(&'static str, A);
/// impl<A: gateway_core::App> gateway_core::App for Tagged<A> {
///     fn call(&self, mut environ: Environ, start: StartResponse) -> Body {
///         let seen = [environ.get("X_SEEN").unwrap_or(b""), self.0.as_bytes()].concat();
///         environ.set("X_SEEN", seen);
///         self.1.call(environ, start)
///     }
/// }
///
/// let app = Builder::new()
///     .with(tag("a"))
///     .with(tag("b"))
///     .app(|environ: Environ, start: StartResponse| {
///         let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
///         Body::from(environ.get("X_SEEN").unwrap().to_vec())
///     });
/// let response = gateway_core::block_on(gateway_core::driver::call(&app, Environ::new()));
/// let body = gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body()));
/// assert_eq!(body.unwrap().to_bytes(), "ab");
/// ```
#[derive(Clone, Copy, Default)]
pub struct Builder<M> {
    middleware: M,
}

impl Builder<Identity> {
    /// A builder with no middleware.
    pub const fn new() -> Self {
        Builder {
            middleware: Identity,
        }
    }
}

impl<M> Builder<M> {
    /// Adds a middleware inside those added before.
    pub fn with<N>(self, middleware: N) -> Builder<Stack<N, M>> {
        Builder {
            middleware: Stack::new(middleware, self.middleware),
        }
    }

    /// Wraps `app` in the middleware.
    pub fn app<A>(&self, app: A) -> M::App
    where
        M: Middleware<A>,
    {
        self.middleware.wrap(app)
    }

    /// The stacked middleware, as one middleware.
    pub fn into_inner(self) -> M {
        self.middleware
    }
}

impl<M> fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("middleware", &std::any::type_name::<M>())
            .finish()
    }
}
