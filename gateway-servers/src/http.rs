//! The built-in HTTP server: HTTP/1.1 (keep-alive, pipelining, chunked bodies both ways,
//! `Expect: 100-continue`) and HTTP/2 with prior knowledge, on hyper.
//!
//! hyper parses and frames; this module turns each request into an environ with
//! [`environ_from_request`] and answers with [`Runtime::respond`], which applies the limits
//! hyper does not: the request body size (413) and its read timeout (408), and the request limit
//! (503). hyper answers heads that are too large or have too many headers with 431, and closes
//! connections whose head is too slow.
//!
//! ```no_run
//! use gateway_core::{Body, Environ, StartResponse};
//! use gateway_servers::http::serve;
//! use gateway_servers::runtime::{Bind, Config, Listener, Runtime, Shutdown};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = |_: Environ, start: StartResponse| {
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from("hello\n")
//! };
//! let listener = Listener::bind(&"127.0.0.1:8000".parse().unwrap(), None)?;
//! serve(listener, Runtime::new(app, Config::default()), Shutdown::new()).await
//! # }
//! ```

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use gateway_core::convert::{ServerContext, environ_from_request};
use gateway_core::{App, Body};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::runtime::{Listener, Runtime, Shutdown, serve_connections};

/// Serves `runtime`'s app over HTTP on `listener` until `shutdown` asks to stop; then stops
/// accepting, lets the connections finish their requests (idle keep-alive connections close at
/// once) within the config's `shutdown_timeout` (or until an immediate shutdown), and returns.
pub async fn serve<A: App + 'static>(
    listener: Listener,
    runtime: Runtime<A>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let config = runtime.config().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_head_size.max(8192))
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_head_size).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let stop = shutdown.clone();
    serve_connections(listener, &config, shutdown, move |connection| {
        let mut context = ServerContext::default();
        context.peer_addr = connection.peer;
        context.local_addr = connection.local;
        context.server_software = Some(Bytes::from_static(config.server_software.as_bytes()));
        context.multithread = config.blocking;
        context.errors = Some(runtime.errors().clone());
        let context = Arc::new(context);
        let runtime = runtime.clone();
        let service = hyper::service::service_fn(move |request| {
            handle(runtime.clone(), context.clone(), request)
        });
        let builder = builder.clone();
        let stop = stop.clone();
        async move {
            let io = TokioIo::new(connection.stream);
            let connection = builder.serve_connection_with_upgrades(io, service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.wait_graceful() => {
                    // Finish the request in progress, then close (idle keep-alive
                    // connections close at once).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        }
    })
    .await
}

async fn handle<A: App + 'static>(
    runtime: Runtime<A>,
    context: Arc<ServerContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let (body, guard) = runtime.guard_body(body);
    let environ = environ_from_request(Request::from_parts(parts, body), &context);
    Ok(runtime.respond(environ, guard).await)
}
