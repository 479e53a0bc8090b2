//! The runtime the network adapters share: listeners, limits and timeouts, the worker pool that
//! runs app calls, graceful shutdown, and logging of `wsgi.errors` through `tracing`.
//!
//! A protocol adapter is a connection loop on this layer: it takes connections from a
//! [`Listener`], builds environs, and runs apps with [`Runtime::run_app`], which applies the
//! request limit and runs blocking apps on the pool.

mod accept;
mod linger;
mod listener;
mod pool;
mod request;
mod sched;
mod shutdown;
pub mod stats;
mod tcp;
mod workers;
mod write;

use std::future::Future as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::driver::{self, ResponseBody};
use gateway_core::{App, BoxError, Environ, ErrorSink, ErrorStream};
use http::Response;
use http_body::{Body as _, Frame};
use tokio::sync::mpsc;

pub use accept::{ConnectionLimit, serve_connections};
pub(crate) use linger::{Lingering, read_until_close};
pub use listener::{
    Bind, BoundSocket, Connection, Listener, ParseBindError, Stream, inherited_fd0,
    is_listening_socket,
};
pub use request::{BodyGuard, GuardedBody, Responding, plain_response};
pub use sched::batch_scheduling;
pub use shutdown::Shutdown;
pub use workers::{Supervision, is_worker, run_master, run_master_with_stats, serve_as_worker};
pub(crate) use write::{poll_write_bufs, write_all_bufs};

/// Limits, timeouts and the worker pool of a server. Every field has a default suited to a
/// server behind a reverse proxy.
///
/// The launcher fills the fields from its flags ([`LauncherArgs::config`]). The flag names do
/// not always match the field names: each field says which flag sets it. Some settings are not
/// here: how long a FastCGI or uwsgi listener defers accept and the mode of Unix socket files
/// are arguments of [`BoundSocket`]'s methods; the largest uwsgi vars block is an argument of
/// [`uwsgi::server::serve`](crate::uwsgi::server::serve); the FastCGI protocol's limits and
/// roles are [`fastcgi::protocol::Settings`](crate::fastcgi::protocol::Settings); worker
/// processes are a [`Supervision`].
///
/// [`LauncherArgs::config`]: crate::LauncherArgs::config
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Threads of the worker pool that runs blocking apps (default 32). Flag: `--threads` (the
    /// launcher raises 0 to 1).
    pub threads: usize,
    /// Whether the app blocks (runs on the worker pool; default) or is non-blocking (runs on
    /// the event loop: it must never block; a synchronous read of its request body that would
    /// wait fails with `WouldBlock` there, which the app's 500 then reports, instead of
    /// stalling the loop). Flag: `--non-blocking` sets it to `false`.
    pub blocking: bool,
    /// Connections open at once (default 10,000), over all the listeners of a runtime; past it,
    /// new connections wait in the listen queue. Flag: `--max-connections` (the launcher raises
    /// 0 to 1).
    pub max_connections: usize,
    /// Requests in progress at once (default 1,024); past it, requests get 503. Flag:
    /// `--max-concurrent-requests` (the launcher raises 0 to 1), which the launcher also reports
    /// to FastCGI web servers as `FCGI_MAX_REQS`.
    ///
    /// Not the launcher's `--max-requests`: that flag recycles a worker process after it has
    /// served that many requests ([`Supervision::max_requests`]), and starts a master process.
    pub max_requests: usize,
    /// The largest request head, request line and headers, in bytes (default 64 KiB); past it,
    /// 431. Flag: `--max-head-size`. The built-in HTTP server applies it: over HTTP/1 to the
    /// head hyper reads, over HTTP/2 as the header list size the server announces. FastCGI and uwsgi have limits of their own (see the type's documentation).
    pub max_head_size: usize,
    /// The most request headers (default 100); past it, 431. Flag: `--max-headers`.
    pub max_headers: usize,
    /// The largest request body, in bytes (default 1 GiB); past it, 413. Flag:
    /// `--max-body-size`.
    pub max_body_size: u64,
    /// Request bodies up to this many bytes, with their length declared (and no
    /// `Expect: 100-continue`), are read whole before the app is called: a blocking app on
    /// the worker pool reads them from memory rather than waiting on the connection chunk by
    /// chunk, and a non-blocking app may read them synchronously (default 16 KiB; 0 turns
    /// this off). Longer or unsized bodies stream. Flag: `--body-buffer-size`.
    pub body_buffer_size: u64,
    /// How long a client may take to send a request head (default 30 s): the first of a
    /// connection from the connection's start, a later one from its first byte (HTTP: a head
    /// begun within 100 ms of the previous response, from that response's end, plus a second,
    /// and closed without a 408). Past it, 408 if the head started, else the connection is
    /// closed. FastCGI: from a request's first record (or the first byte of a record) to the
    /// end of its params, then the connection is closed. uwsgi: for the packet, then 408 if
    /// it began, else the connection is closed. Flag: `--header-timeout`, in seconds.
    pub header_read_timeout: Duration,
    /// How long an HTTP connection kept alive may wait for its next request (default 75 s,
    /// nginx's: longer than the 60 s after which common load balancers drop idle connections,
    /// so that they close first). HTTP/1: from the end of a response to the first byte of the
    /// next request, then the connection is closed; HTTP/2: from the end of the last response
    /// (or the connection's start) while no request is open, then `GOAWAY`. FastCGI:
    /// how long a connection the web server keeps (`FCGI_KEEP_CONN`) may stay with no request,
    /// then it is closed. Flag: `--keep-alive-timeout`, in seconds.
    pub keep_alive_timeout: Duration,
    /// How long a client may go without sending body bytes the app waits for (default 60 s);
    /// past it, 408. Flag: `--body-timeout`, in seconds.
    pub body_read_timeout: Duration,
    /// How long a response may wait for the client to take more of it (default 60 s, nginx's
    /// `send_timeout`): between two writes to a connection whose client does not read, then
    /// the connection is closed; and, on the worker pool, between two frames of a body the
    /// connection does not take (an HTTP/2 stream whose flow-control window stays shut), then
    /// the app's body is dropped and the response cut short. So a client that stops reading
    /// holds a connection, a request slot and a pool thread for this long at most.
    pub send_timeout: Duration,
    /// How long the server goes on reading, and dropping, a request body the app left unread
    /// (default 5 s; 0 turns it off). A client that sends its whole body before it reads the
    /// answer (nginx's `proxy_pass`, `uwsgi_pass` and `fastcgi_pass` do) would otherwise meet
    /// a closed connection and lose the answer (nginx turns it into a 502). Past it, the
    /// connection is closed. Flag: `--linger-timeout`, in seconds.
    pub linger_timeout: Duration,
    /// How long shutdown waits for requests in progress (default 30 s). Flag:
    /// `--shutdown-timeout`, in seconds.
    pub shutdown_timeout: Duration,
    /// `SERVER_SOFTWARE` and the `Server` header (default `gateway/` and this crate's
    /// version). No flag: the launcher keeps the default.
    pub server_software: &'static str,
    /// Whether the threads of the runtime the launcher starts (the event loop) run under
    /// Linux's `SCHED_BATCH` policy (default `true`; see [`batch_scheduling`]): a woken event
    /// loop then waits for the running thread to sleep or end its time slice instead of
    /// preempting it, so that on a core shared with the worker pool or the front end, work
    /// is handed over in batches rather than one request per thread switch. The CPU share is
    /// the same; what it costs is the wake-up latency of the event loop while other programs
    /// keep every core busy (up to a time slice, a few milliseconds). The worker pool's
    /// threads keep the policy of the thread that made the [`Runtime`] (the program's). Only
    /// the launcher applies it: a server run in a runtime of your own keeps that runtime's
    /// policy. Flag: `--no-batch-scheduling` sets it to `false`.
    pub batch_scheduling: bool,
    /// Whether each connection to the HTTP server begins with a PROXY protocol header
    /// (versions 1 and 2, see [`proxy_protocol`](crate::proxy_protocol)), as a load balancer
    /// that relays TCP sends it (default `false`). The client's address in it becomes
    /// `REMOTE_ADDR` and `REMOTE_PORT`, and the address the client reached stands in for the
    /// socket's own (`SERVER_NAME` and `SERVER_PORT` when the request names no host); a
    /// header of the proxy's own connection (`LOCAL`, `UNKNOWN`, a health check) leaves the
    /// connection's addresses. A connection that sends no valid header within
    /// [`header_read_timeout`](Config::header_read_timeout) is closed, with a log line. Only
    /// for a socket that nothing but the load balancer can reach: whoever connects may claim
    /// any address in the header. FastCGI and uwsgi get the client's address from the web
    /// server's variables, and ignore it. Flag: `--proxy-protocol`.
    pub proxy_protocol: bool,
    /// HTTPS (feature `tls`): with a [`TlsConfig`](crate::tls::TlsConfig), each connection to
    /// the HTTP server begins with a TLS handshake (after the PROXY header, if any), which
    /// must end within [`header_read_timeout`](Config::header_read_timeout); the environ then
    /// has `HTTPS=on` and `wsgi.url_scheme` `https` (default `None`: plain HTTP). FastCGI and
    /// uwsgi ignore it. Flags: `--tls-cert` and `--tls-key`.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: 32,
            blocking: true,
            max_connections: 10_000,
            max_requests: 1024,
            max_head_size: 64 * 1024,
            max_headers: 100,
            max_body_size: 1 << 30,
            body_buffer_size: 16 * 1024,
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            linger_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            server_software: concat!("gateway/", env!("CARGO_PKG_VERSION")),
            batch_scheduling: true,
            proxy_protocol: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Where `wsgi.errors` goes in the network servers: `tracing` events at the warn level, one
/// per message, a line break inside a message written as `\n` (`\r` likewise), so that what
/// an app writes (a panic message may quote a request) cannot forge lines of the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl ErrorSink for TracingSink {
    fn write_message(&self, message: &[u8]) {
        let text = String::from_utf8_lossy(message);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.contains(['\n', '\r']) {
            let text = text.replace('\n', "\\n").replace('\r', "\\r");
            tracing::warn!(target: "gateway::errors", "{text}");
        } else {
            tracing::warn!(target: "gateway::errors", "{text}");
        }
    }
}

/// An app ready to be served: the app, the config, the request limit and the worker pool.
pub struct Runtime<A> {
    app: Arc<A>,
    config: Arc<Config>,
    requests: Arc<RequestLimit>,
    connections: ConnectionLimit,
    errors: ErrorStream,
}

impl<A> Clone for Runtime<A> {
    fn clone(&self) -> Self {
        Runtime {
            app: self.app.clone(),
            config: self.config.clone(),
            requests: self.requests.clone(),
            connections: self.connections.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl<A> std::fmt::Debug for Runtime<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The body of a response that is produced on the worker pool, frame by frame.
#[derive(Debug)]
pub struct PooledBody {
    frames: mpsc::Receiver<Pumped>,
    /// Set by the pump when the app's body ended: a channel that closes without it was given
    /// up on (the app's body panicked, or the connection took nothing for the send timeout),
    /// and the response is cut short. A flag, not a last item, so that the end needs no room
    /// in the channel (the pool thread leaves as soon as the body ends).
    ended: Arc<AtomicBool>,
    done: bool,
}

/// What goes through a pumped body's channel: a frame, or the body's error.
type Pumped = Result<Frame<Bytes>, BoxError>;

/// The largest piece of a pumped body's data that goes through its channel. The send timeout
/// measures the wait for room in the channel; a connection takes a piece once it has written
/// about as much, so a client that reads as slowly as this many bytes per send timeout is
/// still served (HTTP/2's frames are this size too).
const PUMPED_PIECE: usize = 16 * 1024;

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        match std::task::ready!(self.frames.poll_recv(cx)) {
            Some(frame) => std::task::Poll::Ready(Some(frame)),
            None if self.ended.load(Ordering::Acquire) => {
                self.done = true;
                std::task::Poll::Ready(None)
            }
            None => {
                self.done = true;
                std::task::Poll::Ready(Some(Err("the app's response ended before its end".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The response of an app run by [`Runtime::run_app`].
pub type AppResponse = Response<gateway_core::Body>;

impl<A: App + 'static> Runtime<A> {
    /// A runtime for `app`.
    pub fn new(app: A, config: Config) -> Self {
        Runtime {
            app: Arc::new(app),
            requests: Arc::new(RequestLimit {
                in_flight: AtomicUsize::new(0),
                max: config.max_requests,
                pool: pool::Pool::new(config.threads),
            }),
            connections: ConnectionLimit::new(config.max_connections),
            config: Arc::new(config),
            errors: ErrorStream::from_static(&TracingSink),
        }
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The limit on connections open at once, shared by every listener that serves this
    /// runtime's app.
    pub fn connection_limit(&self) -> &ConnectionLimit {
        &self.connections
    }

    /// Whether one more request may start now (the request limit is not reached).
    pub fn has_capacity(&self) -> bool {
        self.requests.in_flight.load(Ordering::Relaxed) < self.requests.max
    }

    /// The error stream every environ of this runtime gets.
    pub fn errors(&self) -> &ErrorStream {
        &self.errors
    }

    /// Starts the app on one request: `None` when the server is at its request limit (answer
    /// 503). A blocking app runs on the worker pool, its call and every poll of its body (a
    /// body may block too), and its frames reach the connection through a bounded channel; a
    /// non-blocking app is called here, at once (this thread is then marked as an event loop's,
    /// [`gateway_core::mark_event_loop_thread`]: a synchronous read of the request body that
    /// would wait fails rather than hang the loop). Either way the driver enforces the contract,
    /// and dropping the response body (the client went away) drops the app's body within one
    /// frame. A body that is whole in memory when the head is decided is sent as it is, and
    /// the request leaves the request limit then.
    pub fn run_app(&self, environ: Environ) -> Option<AppRun> {
        let permit = RequestLimit::acquire(&self.requests)?;
        let permit = RequestPermit {
            in_flight: workers::request_started(&environ),
            _permit: permit,
        };
        if !self.config.blocking {
            gateway_core::mark_event_loop_thread();
            return Some(AppRun {
                state: AppRunState::Direct {
                    response: driver::call(&*self.app, environ),
                    permit: Some(permit),
                },
            });
        }
        let (sender, receiver) = handoff();
        let flush = self.requests.pool.spawn(PooledJob {
            app: self.app.clone(),
            environ,
            permit,
            head: sender,
            send_timeout: self.config.send_timeout,
        });
        Some(AppRun {
            state: AppRunState::Pooled {
                head: receiver,
                flush,
                yielded: false,
            },
        })
    }
}

/// A blocking app's request, queued on the worker pool: everything the job needs, by value (the
/// pool queues jobs without a box of their own).
struct PooledJob {
    app: Arc<dyn App>,
    environ: Environ,
    permit: RequestPermit,
    head: HeadSender,
    send_timeout: Duration,
}

impl pool::Job for PooledJob {
    fn run(self) {
        let PooledJob {
            app,
            environ,
            permit,
            head,
            send_timeout,
        } = self;
        if head.is_closed() {
            // The connection gave up while the job waited for a thread (the client left,
            // the web server timed out): the app is not called for nobody.
            return;
        }
        // Harakiri watches the app from now (not the wait in the queue), on this thread.
        let _here = permit.in_flight.as_ref().map(workers::InFlight::run_here);
        let mut response = std::pin::pin!(driver::call(&*app, environ));
        // Wait for the head, unless the connection gives up first (the client left, or
        // the web server aborted the request): then the app's response is dropped here.
        let response = gateway_core::block_on(std::future::poll_fn(|cx| {
            if let Poll::Ready(response) = response.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            head.poll_closed(cx).map(|()| None)
        }));
        let Some(response) = response else {
            return;
        };
        let (parts, body) = into_parts(response);
        let body = match body.try_into_bytes() {
            Ok(data) => Ok(gateway_core::Body::full(data)),
            // Nothing left that could block: the connection sends it itself.
            Err(body) if body.is_buffered() => Ok(gateway_core::Body::new(BodyWith::new(
                body,
                permit.app_done(),
            ))),
            Err(body) => Err((body, permit)),
        };
        match body {
            Ok(body) => {
                // A connection that gave up has the head dropped in `send`.
                let _ = head.send((parts, body));
            }
            Err((body, mut permit)) => {
                // Only a body that may block is pumped through a channel, made now (most
                // responses never need one).
                let (frame_tx, frames) = mpsc::channel(4);
                let ended = Arc::new(AtomicBool::new(false));
                let pooled = gateway_core::Body::new(PooledBody {
                    frames,
                    ended: ended.clone(),
                    done: false,
                });
                if head.send((parts, pooled)) {
                    let wait = Wait {
                        // A pool thread has entered the runtime: its timer bounds the wait.
                        handle: tokio::runtime::Handle::try_current().ok(),
                        send_timeout,
                    };
                    if pump(body, &frame_tx, &mut permit, &wait) {
                        ended.store(true, Ordering::Release);
                    }
                }
            }
        }
    }
}

/// A head and body on their way from a pool thread to the connection.
type Head = (http::response::Parts, gateway_core::Body);

/// Where a pooled request's head meets its connection: one allocation for the two sides, made
/// by the connection's thread and, as the pool thread lets go first, freed there too (glibc's
/// per-thread caches then serve it again; a tokio oneshot and the job's box, made on one thread
/// and freed on the other, each took the allocator's slow path).
#[derive(Default)]
struct Handoff {
    state: std::sync::Mutex<HandoffState>,
}

#[derive(Default)]
struct HandoffState {
    head: Option<Head>,
    /// The job ended, with or without a head.
    ended: bool,
    /// The connection gave up on the head.
    left: bool,
    /// The connection's task, waiting for the head.
    connection: Option<std::task::Waker>,
    /// The job, waiting for its app while it watches for the connection to leave.
    job: Option<std::task::Waker>,
}

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandoffState> {
        // Nothing runs under the lock but these few lines: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new handoff's two sides.
fn handoff() -> (HeadSender, HeadReceiver) {
    let shared = Arc::new(Handoff::default());
    (HeadSender(shared.clone()), HeadReceiver(shared))
}

/// The job's side of a [`Handoff`]. Dropped without a head, it tells the connection so.
struct HeadSender(Arc<Handoff>);

impl HeadSender {
    /// Whether the connection gave up.
    fn is_closed(&self) -> bool {
        self.0.lock().left
    }

    /// Ready once the connection gives up.
    fn poll_closed(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut state = self.0.lock();
        if state.left {
            return Poll::Ready(());
        }
        state.job = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Hands the head over; false when the connection gave up (the head is dropped here).
    fn send(self, head: Head) -> bool {
        let mut state = self.0.lock();
        if state.left {
            drop(state);
            drop(head);
            return false;
        }
        state.head = Some(head);
        true
    }
}

impl Drop for HeadSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.ended = true;
            state.connection.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The connection's side of a [`Handoff`]: resolves to the head, or to an error when the job
/// ended without one.
struct HeadReceiver(Arc<Handoff>);

impl std::future::Future for HeadReceiver {
    type Output = Result<Head, ()>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut state = self.0.lock();
        if let Some(head) = state.head.take() {
            return Poll::Ready(Ok(head));
        }
        if state.ended {
            return Poll::Ready(Err(()));
        }
        match &mut state.connection {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for HeadReceiver {
    fn drop(&mut self) {
        let (waker, head) = {
            let mut state = self.0.lock();
            state.left = true;
            (state.job.take(), state.head.take())
        };
        // A head never taken is dropped outside the lock (its body's close runs app code).
        drop(head);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// An app at work on a request: resolves to its response. Made by [`Runtime::run_app`].
#[must_use = "a response does nothing unless polled"]
pub struct AppRun {
    state: AppRunState,
}

// The large variant is the one of non-blocking apps, made for every request: not boxed.
#[allow(clippy::large_enum_variant)]
enum AppRunState {
    /// A non-blocking app, run by the driver on this task.
    Direct {
        response: driver::ResponseFuture,
        permit: Option<RequestPermit>,
    },
    /// A blocking app on the worker pool: its head comes back through `head`, with its body:
    /// the data when it is in memory, else a [`PooledBody`] its frames come through. The
    /// first job of a batch holds the pool's wake-up (`flush`) until its task has yielded
    /// once, behind the tasks that are ready now (the requests that came in together queue
    /// their jobs meanwhile): one wake-up of a pool thread for the batch, with no task of its
    /// own.
    Pooled {
        head: HeadReceiver,
        flush: Option<pool::Flush<PooledJob>>,
        yielded: bool,
    },
}

impl std::fmt::Debug for AppRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pooled = matches!(self.state, AppRunState::Pooled { .. });
        f.debug_struct("AppRun")
            .field("pooled", &pooled)
            .finish_non_exhaustive()
    }
}

impl std::future::Future for AppRun {
    type Output = AppResponse;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<AppResponse> {
        match &mut self.state {
            AppRunState::Direct { response, permit } => {
                let response = std::task::ready!(std::pin::Pin::new(response).poll(cx));
                let (parts, body) = into_parts(response);
                let body = match body.try_into_bytes() {
                    Ok(data) => gateway_core::Body::full(data),
                    Err(body) => {
                        let permit = permit.take().expect("an app run resolves once");
                        let permit = match body.is_buffered() {
                            true => permit.app_done(),
                            false => permit,
                        };
                        gateway_core::Body::new(BodyWith::new(body, permit))
                    }
                };
                Poll::Ready(Response::from_parts(parts, body))
            }
            AppRunState::Pooled {
                head,
                flush,
                yielded,
            } => {
                if flush.is_some() {
                    // The task wakes itself and is queued behind the tasks that are ready
                    // now. Unlike `tokio::task::yield_now`, which defers the wake-up until
                    // the worker has polled the I/O driver (an `epoll_wait` each time), this
                    // costs no system call.
                    if !std::mem::replace(yielded, true) {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    *flush = None;
                }
                let (parts, body) = match std::task::ready!(std::pin::Pin::new(head).poll(cx)) {
                    Ok(head) => head,
                    // The job ended without a head: the pool dropped it unrun (it was
                    // shutting down), or the job failed outside the driver (which catches the
                    // app's panics).
                    Err(_) => {
                        tracing::error!("the worker running the app ended without a response");
                        let response =
                            request::plain_response(http::StatusCode::INTERNAL_SERVER_ERROR, false);
                        return Poll::Ready(response);
                    }
                };
                Poll::Ready(Response::from_parts(parts, body))
            }
        }
    }
}

/// Marks a response whose connection must not be reused: its body is longer than its
/// `Content-Length` and will be cut there (see [`ResponseBody::must_close`]). The HTTP server
/// then answers `Connection: close`; FastCGI and uwsgi, whose framing does not rest on the
/// `Content-Length`, keep their connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MustClose;

/// Splits the driver's response, marking it with [`MustClose`] when its head already says
/// that the body will be cut.
fn into_parts(response: Response<ResponseBody>) -> (http::response::Parts, ResponseBody) {
    let (mut parts, body) = response.into_parts();
    if body.must_close() {
        parts.extensions.insert(MustClose);
    }
    (parts, body)
}

/// How long a pumped body waits for the connection to take a frame, and the runtime whose
/// timer measures it.
struct Wait {
    handle: Option<tokio::runtime::Handle>,
    send_timeout: Duration,
}

impl Wait {
    /// Sends `frame`, blocking this worker while the connection is behind, for the send
    /// timeout at most: false when the frame could not be sent.
    fn send(&self, frames: &mpsc::Sender<Pumped>, frame: Pumped) -> bool {
        let Some(handle) = &self.handle else {
            return frames.blocking_send(frame).is_ok();
        };
        let send = async { tokio::time::timeout(self.send_timeout, frames.send(frame)).await };
        match handle.block_on(send) {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::info!(
                    timeout = ?self.send_timeout,
                    "the connection took no more of the response in time: cut short"
                );
                false
            }
        }
    }
}

/// Sends the frames of `body` through `frames`, data in pieces of [`PUMPED_PIECE`] at most,
/// blocking this worker while the connection is behind (for the send timeout at most, then the
/// response is cut short); stops (dropping the body) when the receiver is gone. True when the
/// body ended and all of it was sent.
fn pump(
    mut body: ResponseBody,
    frames: &mpsc::Sender<Pumped>,
    permit: &mut RequestPermit,
    wait: &Wait,
) -> bool {
    loop {
        // The next frame, unless the connection is gone first (then the body is dropped).
        let mut closed = std::pin::pin!(frames.closed());
        let frame = gateway_core::block_on(std::future::poll_fn(|cx| {
            if let Poll::Ready(frame) = std::pin::Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Some(frame));
            }
            closed.as_mut().poll(cx).map(|()| None)
        }));
        let frame = match frame {
            // The connection is gone.
            None => return false,
            Some(None) => return true,
            Some(Some(frame)) => frame.map_err(Into::into),
        };
        let mut rest = match frame.map(Frame::into_data) {
            Ok(Ok(data)) => Some(data),
            Ok(Err(trailers)) => {
                if !send_one(frames, Ok(trailers), permit, wait) {
                    return false;
                }
                None
            }
            Err(error) => {
                send_one(frames, Err(error), permit, wait);
                return false;
            }
        };
        while let Some(mut data) = rest.take() {
            if data.len() > PUMPED_PIECE {
                rest = Some(data.split_off(PUMPED_PIECE));
            }
            if !send_one(frames, Ok(Frame::data(data)), permit, wait) {
                return false;
            }
        }
    }
}

/// Sends one frame through `frames`, waiting for room as [`Wait::send`] does: false when it
/// could not be sent.
fn send_one(
    frames: &mpsc::Sender<Pumped>,
    frame: Pumped,
    permit: &mut RequestPermit,
    wait: &Wait,
) -> bool {
    match frames.try_send(frame) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        // The client is slower than the app: that wait is not the app's.
        Err(mpsc::error::TrySendError::Full(frame)) => match &mut permit.in_flight {
            Some(watched) => watched.waiting(|| wait.send(frames, frame)),
            None => wait.send(frames, frame),
        },
    }
}

/// A request's place under the request limit, held as long as the app works on the request,
/// on the pool or in its body; and (in a worker) under harakiri's watch, while the app
/// produces its response (not while the client takes it).
struct RequestPermit {
    in_flight: Option<workers::InFlight>,
    _permit: RequestSlot,
}

impl RequestPermit {
    /// The permit of a request whose app has produced its whole response: out of harakiri's
    /// watch, since what is left is the client's to take.
    fn app_done(mut self) -> Self {
        self.in_flight = None;
        self
    }
}

/// The request limit: how many requests are in progress, and how many may be; and the pool
/// that runs them when the app blocks.
#[derive(Debug)]
struct RequestLimit {
    in_flight: AtomicUsize,
    max: usize,
    pool: pool::Pool<PooledJob>,
}

impl RequestLimit {
    /// A place for one more request, unless `max` are in progress.
    fn acquire(limit: &Arc<RequestLimit>) -> Option<RequestSlot> {
        if limit.in_flight.fetch_add(1, Ordering::Acquire) >= limit.max {
            limit.in_flight.fetch_sub(1, Ordering::Release);
            return None;
        }
        Some(RequestSlot(limit.clone()))
    }
}

/// One request's place under the limit, given back when dropped.
#[derive(Debug)]
struct RequestSlot(Arc<RequestLimit>);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

pin_project_lite::pin_project! {
    /// A body that holds `guard` (a request permit, a count of open requests) until it is
    /// dropped, and is otherwise `body`.
    pub(crate) struct BodyWith<B, G> {
        #[pin]
        body: B,
        _guard: G,
    }
}

impl<B, G> BodyWith<B, G> {
    /// `body`, holding `guard` until it is dropped.
    pub(crate) fn new(body: B, guard: G) -> Self {
        BodyWith {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body, G> http_body::Body for BodyWith<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn a_head(text: &'static str) -> Head {
        let (parts, ()) = Response::new(()).into_parts();
        (parts, gateway_core::Body::from(text))
    }

    #[test]
    fn a_batch_runs_when_its_first_request_is_dropped_unpolled() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (called_tx, called) = std::sync::mpsc::channel();
        let called_tx = Mutex::new(called_tx);
        let app = move |environ: Environ, start: gateway_core::StartResponse| {
            let path = environ.path_info().to_vec();
            called_tx.lock().unwrap().send(path).unwrap();
            let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
            gateway_core::Body::empty()
        };
        let server = Runtime::new(app, Config::default());
        let request = |path: &'static str| {
            let mut environ = Environ::new();
            environ.set("PATH_INFO", path);
            server.run_app(environ).expect("room for the request")
        };
        runtime.block_on(async {
            // The first holds the batch's wake-up of the pool; the second is queued behind it.
            let first = request("/first");
            let second = request("/second");
            assert!(matches!(
                &first.state,
                AppRunState::Pooled { flush: Some(_), .. }
            ));
            assert!(matches!(
                &second.state,
                AppRunState::Pooled { flush: None, .. }
            ));
            drop(first);
            let response = tokio::time::timeout(Duration::from_secs(10), second)
                .await
                .expect("the second request ran");
            assert_eq!(response.status(), http::StatusCode::OK);
        });
        // The first was given up before a thread took it: its app was not called.
        assert_eq!(called.try_iter().collect::<Vec<_>>(), [b"/second".to_vec()]);
    }

    #[test]
    fn a_head_handed_over_wakes_the_connection_and_arrives_whole() {
        let (sender, receiver) = handoff();
        let job = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            assert!(!sender.is_closed());
            assert!(sender.send(a_head("hi")));
        });
        let (_, body) = gateway_core::block_on(receiver).expect("the head");
        job.join().unwrap();
        let data = gateway_core::block_on(http_body_util::BodyExt::collect(body));
        assert_eq!(data.unwrap().to_bytes(), "hi");
    }

    #[test]
    fn a_job_that_ends_without_a_head_says_so() {
        let (sender, receiver) = handoff();
        std::thread::spawn(move || drop(sender)).join().unwrap();
        assert!(gateway_core::block_on(receiver).is_err());
    }

    #[test]
    fn a_connection_that_gives_up_wakes_the_job_and_gets_nothing() {
        let (sender, receiver) = handoff();
        let job = std::thread::spawn(move || {
            gateway_core::block_on(std::future::poll_fn(|cx| sender.poll_closed(cx)));
            assert!(sender.is_closed());
            // The head is dropped, its body closed, here.
            assert!(!sender.send(a_head("late")));
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(receiver);
        job.join().unwrap();
    }

    /// Collects what a `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_pumped_body_its_connection_takes_as_its_bytes_go_out_is_not_cut() {
        // Six chunks of 1 MiB from the worker pool; the connection takes each piece after as
        // long as writing it takes (1 ms per 8 KiB here), as hyper does: a 1 MiB piece would
        // hold its channel slot past the send timeout, though the body never stops moving.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = Config {
            send_timeout: Duration::from_millis(100),
            ..Config::default()
        };
        let app = Runtime::new(
            |_: Environ, start: gateway_core::StartResponse| {
                let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
                gateway_core::Body::from_chunks((0..6).map(|_| Bytes::from(vec![b'x'; 1 << 20])))
            },
            config,
        );
        let (total, failed) = runtime.block_on(async move {
            let response = app.run_app(Environ::new()).expect("a request slot").await;
            let mut body = response.into_body();
            let (mut total, mut failed) = (0, None);
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                match frame.map(Frame::into_data) {
                    Ok(Ok(data)) => {
                        total += data.len();
                        let writing = data.len() as u64 * 1000 / 8192;
                        tokio::time::sleep(Duration::from_micros(writing)).await;
                    }
                    Ok(Err(_)) => {}
                    Err(error) => {
                        failed = Some(error.to_string());
                        break;
                    }
                }
            }
            (total, failed)
        });
        assert_eq!(failed, None);
        assert_eq!(total, 6 << 20);
    }

    #[test]
    fn an_error_message_cannot_forge_a_log_line() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            TracingSink.write_message(b"gateway: bad input\nWARN forged: line\r\n");
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            log.trim_end().ends_with("bad input\\nWARN forged: line"),
            "{log}"
        );
    }
}
