//! The built-in HTTP server: HTTP/1.1 (keep-alive, pipelining, chunked bodies both ways,
//! `Expect: 100-continue`) and HTTP/2 with prior knowledge, on hyper.
//!
//! hyper parses and frames; this module turns each request into an environ with
//! [`environ_from_request`], runs the app on the
//! [`Runtime`], and applies the limits hyper does not: the request body size (413) and its read
//! timeout (408), and the request limit (503). hyper answers heads that are too large or have
//! too many headers with 431, and closes connections whose head is too slow.
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
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::convert::{ServerContext, environ_from_request};
use gateway_core::{App, Body, BoxError};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
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

/// Why the request body stopped: nothing yet, too large, too slow.
const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_TOO_SLOW: u8 = 2;

async fn handle<A: App + 'static>(
    runtime: Runtime<A>,
    context: Arc<ServerContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let config = runtime.config();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_size) {
        tracing::info!(limit = config.max_body_size, "request body too large: 413");
        return Ok(finish(
            config.server_software,
            plain(StatusCode::PAYLOAD_TOO_LARGE, true),
        ));
    }
    let outcome = Arc::new(AtomicU8::new(BODY_OK));
    let request = request.map(|body| Guarded {
        body,
        left: config.max_body_size,
        timeout: config.body_read_timeout,
        timer: None,
        runtime: tokio::runtime::Handle::current(),
        outcome: outcome.clone(),
    });
    let environ = environ_from_request(request, &context);
    let Some(response) = runtime.run_app(environ).await else {
        tracing::warn!(limit = config.max_requests, "request limit reached: 503");
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, false);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(finish(config.server_software, response));
    };
    let failed = gateway_core::driver::failure(&response).is_some();
    let response = match outcome.load(Ordering::Relaxed) {
        BODY_TOO_LARGE if failed => {
            tracing::info!(limit = config.max_body_size, "request body too large: 413");
            plain(StatusCode::PAYLOAD_TOO_LARGE, true)
        }
        BODY_TOO_SLOW if failed => {
            tracing::info!("request body too slow: 408");
            plain(StatusCode::REQUEST_TIMEOUT, true)
        }
        _ => response,
    };
    Ok(finish(config.server_software, response))
}

/// Adds the `Server` header unless the app set one.
fn finish(software: &'static str, mut response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key(header::SERVER) {
        response
            .headers_mut()
            .insert(header::SERVER, HeaderValue::from_static(software));
    }
    response
}

/// A short plain-text answer of the server itself; `close` asks the client to close the
/// connection (the request body was not read).
fn plain(status: StatusCode, close: bool) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(Body::from(text.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The request body, with the size limit and the read timeout applied.
struct Guarded {
    body: Incoming,
    left: u64,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The body is read on worker threads; its timer belongs to the server's runtime.
    runtime: tokio::runtime::Handle,
    outcome: Arc<AtomicU8>,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                if let Some(data) = frame.data_ref() {
                    if data.len() as u64 > this.left {
                        this.outcome.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("request body larger than the limit".into())));
                    }
                    this.left -= data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let (timeout, runtime) = (this.timeout, &this.runtime);
                let timer = this.timer.get_or_insert_with(|| {
                    let _entered = runtime.enter();
                    Box::pin(tokio::time::sleep(timeout))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.outcome.store(BODY_TOO_SLOW, Ordering::Relaxed);
                        Poll::Ready(Some(Err("request body read timed out".into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
