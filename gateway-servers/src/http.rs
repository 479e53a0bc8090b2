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
use std::time::Duration;

use bytes::Bytes;
use gateway_core::convert::{ServerContext, environ_from_request};
use gateway_core::{App, Body};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;

use crate::runtime::{Listener, Runtime, Shutdown};

/// Serves `runtime`'s app over HTTP on `listener` until `shutdown` asks to stop; then stops
/// accepting, lets the connections finish their requests within the config's
/// `shutdown_timeout` (or until an immediate shutdown), and returns.
pub async fn serve<A: App + 'static>(
    listener: Listener,
    runtime: Runtime<A>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let config = runtime.config().clone();
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
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

    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.wait_graceful() => break,
        };
        let connection = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait_graceful() => break,
        };
        let connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
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
        let io = TokioIo::new(connection.stream);
        let watched = graceful.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if shutdown.is_immediate() {
        return Ok(());
    }
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!("shutdown timeout: closing the connections still open");
        }
        () = shutdown.wait_immediate() => {}
    }
    Ok(())
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
