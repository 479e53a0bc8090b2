//! The FastCGI server: the connection loop over [`Connection`].
//!
//! One task per connection reads and decodes its records, and writes everything that goes
//! back. The protocol answers management records and refusals itself. A request whose params
//! are complete runs among the connection's work: polled by the connection's task when it has
//! no body to read (most requests: nginx sends a GET's params and the end of its STDIN
//! together), which then writes its response at once; in a task of its own when it reads a
//! body, from a bounded per-request channel (so a slow request holds back at most its own
//! connection, once its channel is full, and never the server). Responses go out as
//! `FCGI_STDOUT` records, a `Status:` line first (nginx and Apache handle an HTTP status line
//! differently), then `FCGI_END_REQUEST`. `wsgi.errors` goes out as `FCGI_STDERR` records, so
//! app errors land in the web server's error log. `FCGI_ABORT_REQUEST` drops the app's
//! response (its body's `close()`) and ends the request. The connection closes after a
//! request without `FCGI_KEEP_CONN`, as the web server asked.
//!
//! [`serve`] takes the addresses of the web servers allowed to connect from the environment
//! variable `FCGI_WEB_SERVER_ADDRS` (see [`web_server_addrs`](super::web_server_addrs)); a TCP
//! connection from any other address is closed at once. [`serve_with`] takes them, and every
//! other setting, from its [`Options`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::future::{AbortHandle, Abortable, abortable};
use futures_util::stream::FuturesUnordered;
use gateway_core::{App, ErrorSink, ErrorStream, Input};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::codec::{self, Header, RecordType, Role, StreamKind};
use super::protocol::{Connection, Event, IdMap, Settings};
use super::web_server_addrs::WebServerAddrs;
use crate::params::{BodyFraming, bound_input, framed_environ_from_block};
use crate::runtime::{
    BodyGuard, Listener, Responding, Runtime, Shutdown, Stream, plain_response, poll_write_bufs,
    read_until_close, serve_connections,
};

/// Record batches (and ends) the requests' tasks may have queued for their connection.
const OUTPUT_QUEUE: usize = 16;
/// Input records a request may have queued before reading stops for the connection.
const INPUT_QUEUE: usize = 32;

/// The body data of the Filter role (`FCGI_DATA`), in the environ's extensions.
#[derive(Debug, Clone)]
pub struct FilterData(pub Arc<std::sync::Mutex<Option<Input>>>);

/// What a FastCGI server does beyond the protocol's [`Settings`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// The protocol's settings: roles, multiplexing, the numbers `FCGI_GET_VALUES` reports.
    pub settings: Settings,
    /// The only peers a TCP connection is accepted from (`FCGI_WEB_SERVER_ADDRS`); `None`
    /// accepts every peer.
    pub web_server_addrs: Option<WebServerAddrs>,
    /// The prefix the app is mounted at: a request whose path (`SCRIPT_NAME` and `PATH_INFO`)
    /// is under it gets the prefix as `SCRIPT_NAME` and the rest as `PATH_INFO` (see
    /// [`params::mount`](crate::params::mount)). For front ends that send the whole path in
    /// `SCRIPT_NAME`, as nginx's `fastcgi_pass` does.
    pub mount: Option<String>,
}

/// Serves `runtime`'s app over FastCGI on `listener` until `shutdown` asks to stop; then waits
/// for the connections' requests (within the config's `shutdown_timeout`). TCP connections are
/// restricted to the addresses in `FCGI_WEB_SERVER_ADDRS` when that variable is set; a value
/// that is not a list of IP addresses is an `InvalidInput` error before anything is served.
pub async fn serve<A: App + 'static>(
    listener: Listener,
    runtime: Runtime<A>,
    shutdown: Shutdown,
    settings: Settings,
) -> io::Result<()> {
    let web_server_addrs = WebServerAddrs::from_env()
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let options = Options {
        settings,
        web_server_addrs,
        mount: None,
    };
    serve_with(listener, runtime, shutdown, options).await
}

/// Serves as [`serve`] does, with `options` (the environment is not read).
pub async fn serve_with<A: App + 'static>(
    listener: Listener,
    runtime: Runtime<A>,
    shutdown: Shutdown,
    options: Options,
) -> io::Result<()> {
    if let Some(addrs) = &options.web_server_addrs {
        tracing::info!(addrs = ?addrs.addrs(), "FastCGI connections only from these addresses");
    }
    let mount: Option<Arc<str>> = options.mount.as_deref().map(Arc::from);
    let handler_runtime = runtime.clone();
    let stop = shutdown.clone();
    serve_connections(
        listener,
        runtime.config(),
        runtime.connection_limit(),
        shutdown,
        move |connection| {
            let stop = stop.clone();
            let runtime = handler_runtime.clone();
            let settings = options.settings;
            let mount = mount.clone();
            let allowed = options
                .web_server_addrs
                .as_ref()
                .is_none_or(|addrs| addrs.allows(connection.peer));
            async move {
                if !allowed {
                    // Dropping the stream closes the connection.
                    tracing::warn!(
                        peer = ?connection.peer,
                        "FastCGI connection refused: the peer is not in FCGI_WEB_SERVER_ADDRS"
                    );
                    return;
                }
                let served = handle(
                    runtime,
                    connection.stream,
                    connection.peer,
                    settings,
                    mount,
                    Some(stop),
                );
                if let Err(error) = served.await {
                    tracing::debug!(%error, "FastCGI connection ended with an error");
                }
            }
        },
    )
    .await
}

/// One request of a connection: its id, and which of the requests that had that id it is. A
/// web server reuses ids (nginx's is always 1), and a request's task that was aborted may still
/// queue output while it is stopped: output is taken only from the request that holds its id now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    request_id: u16,
    generation: u32,
}

/// What requests queue for their connection: records, `wsgi.errors` lines, and the end of a
/// request that runs in a task of its own, queued after its last records so that its
/// `FCGI_END_REQUEST` follows them.
enum Out {
    Records { key: Key, records: Bytes },
    Stderr { key: Key, message: Bytes },
    End { key: Key, app_status: u32 },
}

/// A request body fed by the connection's reader.
struct ChannelBody {
    records: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.records.poll_recv(cx) {
            Poll::Ready(Some(data)) if data.is_empty() => Poll::Ready(None),
            Poll::Ready(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the web server closed the connection before the end of the body",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `wsgi.errors` of one request: `FCGI_STDERR` records on its connection. Lines that find the
/// connection's queue full, or come after the request ended, go to the server's log instead.
struct StderrSink {
    key: Key,
    out: mpsc::Sender<Out>,
}

impl ErrorSink for StderrSink {
    fn write_message(&self, message: &[u8]) {
        let out = Out::Stderr {
            key: self.key,
            message: Bytes::copy_from_slice(message),
        };
        if self.out.try_send(out).is_err() {
            log_error_line(message);
        }
    }
}

/// Logs a `wsgi.errors` line that cannot reach the web server, as the other servers log
/// theirs.
fn log_error_line(message: &[u8]) {
    gateway_core::ErrorSink::write_message(&crate::runtime::TracingSink, message);
}

/// A request of a connection at work: the channels its body and data go through, and where it
/// runs.
struct Running {
    /// Which request with this id it is.
    generation: u32,
    stdin: Option<mpsc::Sender<Bytes>>,
    data: Option<mpsc::Sender<Bytes>>,
    task: Task,
}

/// Where a request runs. One that reads a body from the connection runs in a task of its own,
/// so that the connection's task can wait for room in its body channel while the request (a
/// non-blocking app reads its body in its response future) drains it. Any other (most
/// requests: nginx sends a GET's params and the end of its STDIN together) is polled by the
/// connection's task, among its others, which then writes the response itself: no task, no
/// channel, and no wake of another task per request.
enum Task {
    Spawned(tokio::task::JoinHandle<()>),
    Inline(AbortHandle),
    /// In [`Session::one`].
    One,
}

impl Task {
    /// Drops the request `request_id`'s response, and with it the app's body (its close
    /// runs); `one` is the session's.
    fn abort(&self, request_id: u16, one: &mut Option<(u16, Work)>) {
        match self {
            Task::Spawned(task) => task.abort(),
            Task::Inline(handle) => handle.abort(),
            Task::One => {
                if one.as_ref().is_some_and(|(id, _)| *id == request_id) {
                    *one = None;
                }
            }
        }
    }
}

/// What a request polled by the connection's task gives back.
enum Outcome {
    /// The app's response: the connection sends its head and what of its body is ready.
    Response(Role, http::Response<gateway_core::Body>),
    /// The rest of a response sent through the queue; the app status for `FCGI_END_REQUEST`.
    Ended(u32),
}

/// A request polled by the connection's task, among others.
type InlineFuture = Pin<Box<dyn Future<Output = (u16, Outcome)> + Send>>;

/// A request's response, as [`Session::start_request`] prepares it: most (no body to read
/// first) with the runtime's [`Responding`] as it is, which the connection's task polls in
/// [`Session::one`] without a box.
enum Respond {
    Now(Responding),
    Later(Pin<Box<dyn Future<Output = http::Response<gateway_core::Body>> + Send>>),
}

impl Future for Respond {
    type Output = http::Response<gateway_core::Body>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Respond::Now(responding) => Pin::new(responding).poll(cx),
            Respond::Later(later) => later.as_mut().poll(cx),
        }
    }
}

/// What the connection's task polls for a request: its response, or the rest of its body.
enum Work {
    Respond(Role, Respond),
    Rest(Pin<Box<dyn Future<Output = Outcome> + Send>>),
}

impl Work {
    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outcome> {
        match self {
            Work::Respond(role, respond) => Pin::new(respond)
                .poll(cx)
                .map(|response| Outcome::Response(*role, response)),
            Work::Rest(rest) => rest.as_mut().poll(cx),
        }
    }
}

/// Bytes of output waiting for the connection above which it stops reading records, and stops
/// taking records from its requests' queue (which then holds their tasks back).
const OUTPUT_LIMIT: usize = 64 * 1024;

/// Room kept free in the read buffer before each read.
const READ_SPACE: usize = 4 * 1024;

/// Output waiting for the connection, in the order it goes out.
#[derive(Default)]
struct Output {
    bufs: Vec<Bytes>,
    unflushed: bool,
}

impl Output {
    fn len(&self) -> usize {
        self.bufs.iter().map(Bytes::len).sum()
    }

    fn is_pending(&self) -> bool {
        !self.bufs.is_empty() || self.unflushed
    }

    /// Writes and flushes what is waiting, as far as the stream takes it now.
    fn poll_write(
        &mut self,
        mut stream: Pin<&mut dyn Stream>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.bufs.is_empty() {
            self.unflushed = true;
            std::task::ready!(poll_write_bufs(stream.as_mut(), &mut self.bufs, cx))?;
        }
        if self.unflushed {
            std::task::ready!(stream.poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// What the connection's reads and writes came to.
enum Io {
    /// Bytes read (0 at the end of the stream).
    Read(usize),
    /// Everything waiting was written, and reading is not allowed now: the loop looks again.
    Written,
}

/// Writes what waits in `output`; then, when `read`, reads into `buf`. Ready when it read, or
/// when it wrote everything and may not read (so the loop can look again): a write that
/// leaves nothing more to do wakes nobody.
fn poll_io(
    stream: &mut Box<dyn Stream>,
    output: &mut Output,
    buf: &mut BytesMut,
    read: bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Io>> {
    if output.is_pending() {
        match output.poll_write(Pin::new(&mut **stream), cx) {
            Poll::Ready(Ok(())) if !read => return Poll::Ready(Ok(Io::Written)),
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) | Poll::Pending => {}
        }
    }
    if !read {
        return Poll::Pending;
    }
    if buf.capacity() - buf.len() < READ_SPACE {
        buf.reserve(16 * 1024);
    }
    let read = std::pin::pin!(stream.read_buf(buf)).poll(cx);
    read.map_ok(Io::Read)
}

/// A body record that found its request's channel full: reading waits until it is taken.
struct Held {
    sender: mpsc::Sender<Bytes>,
    data: Bytes,
}

/// Waits for room for the held record (never, when there is none).
async fn room_for(
    held: Option<&Held>,
) -> Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>> {
    match held {
        Some(held) => held.sender.clone().reserve_owned().await,
        None => std::future::pending().await,
    }
}

/// Why a connection is closed at once.
struct Close;

/// Where a connection stands, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No request, not even part of one.
    Idle,
    /// Part of a record, or a request whose params are not complete.
    Receiving,
    /// A request runs.
    Running,
}

impl Stage {
    /// How long the connection may stay in this stage.
    fn limit(self, config: &crate::runtime::Config) -> Option<std::time::Duration> {
        match self {
            Stage::Idle => Some(config.keep_alive_timeout),
            Stage::Receiving => Some(config.header_read_timeout),
            // A running request's body and answer have timers of their own.
            Stage::Running => None,
        }
    }
}

/// One connection's state, apart from its stream and read buffer.
struct Session<A: App + 'static> {
    runtime: Runtime<A>,
    peer: Option<std::net::SocketAddr>,
    mount: Option<Arc<str>>,
    connection: Connection,
    running: IdMap<Running>,
    /// A request polled by the connection's task while it is the only one: most connections
    /// carry one request at a time (nginx, Apache and lighttpd never multiplex), and this one
    /// costs no allocation of `inline`'s and no abort handle.
    one: Option<(u16, Work)>,
    /// The others polled by the connection's task.
    inline: FuturesUnordered<Abortable<InlineFuture>>,
    output: Output,
    out_tx: mpsc::Sender<Out>,
    out_rx: mpsc::Receiver<Out>,
    held: Option<Held>,
    /// Whether a request ended before its body (or data) stream did: the web server may still
    /// be sending it when the connection is to close.
    unread_input: bool,
    /// The generation of the next request (see [`Key`]).
    next_generation: u32,
}

/// Serves one connection until it ends: any byte stream, a socket accepted elsewhere or the
/// scripted bytes of a test (`gateway_testkit::scripted`). `peer` becomes the request's
/// [`Environ::peer_addr`](gateway_core::Environ::peer_addr); `options.web_server_addrs` is not
/// consulted (the caller accepted the peer).
pub async fn serve_connection<A: App + 'static>(
    runtime: Runtime<A>,
    stream: impl Stream,
    peer: Option<std::net::SocketAddr>,
    options: &Options,
) -> io::Result<()> {
    let mount = options.mount.as_deref().map(Arc::from);
    handle(
        runtime,
        Box::new(stream),
        peer,
        options.settings,
        mount,
        None,
    )
    .await
}

/// Serves one connection in one task: it reads and decodes the records, polls the requests
/// that need no task of their own, and writes every response. With `stop`, a graceful
/// shutdown closes the connection as soon as no request is running on it: at once when it is
/// idle (a web server keeps connections open with `FCGI_KEEP_CONN`, and a shutdown must not
/// wait for it to close them), else after the last response.
async fn handle<A: App + 'static>(
    runtime: Runtime<A>,
    mut stream: Box<dyn Stream>,
    peer: Option<std::net::SocketAddr>,
    settings: Settings,
    mount: Option<Arc<str>>,
    stop: Option<Shutdown>,
) -> io::Result<()> {
    let (out_tx, out_rx) = mpsc::channel::<Out>(OUTPUT_QUEUE);
    let mut this = Session {
        runtime,
        peer,
        mount,
        connection: Connection::new(settings),
        running: IdMap::default(),
        one: None,
        inline: FuturesUnordered::new(),
        output: Output::default(),
        out_tx,
        out_rx,
        held: None,
        unread_input: false,
        next_generation: 0,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut reading = true;
    let mut stopping = false;
    let graceful = async {
        match &stop {
            Some(stop) => stop.wait_graceful().await,
            None => std::future::pending().await,
        }
    };
    let mut graceful = std::pin::pin!(graceful);
    // The web server's time is bounded while no request of the connection runs: a request
    // being received (a record or a params stream begun) must be complete within
    // `header_read_timeout`, and an idle connection is closed after `keep_alive_timeout`. The
    // timer is moved only when it fires early; the loop notes when the connection's stage
    // changed.
    let config = this.runtime.config().clone();
    let mut stage = Stage::Idle;
    let mut stage_since = tokio::time::Instant::now();
    let timer = tokio::time::sleep_until(stage_since + config.keep_alive_timeout);
    let mut timer = std::pin::pin!(timer);
    loop {
        if this.receive(&mut buf).is_err() {
            return Ok(());
        }
        this.take_queued(false);
        let now_stage = if !this.running.is_empty() {
            Stage::Running
        } else if buf.is_empty() && this.connection.open_requests() == 0 {
            Stage::Idle
        } else {
            Stage::Receiving
        };
        if now_stage != stage {
            stage = now_stage;
            if let Some(limit) = stage.limit(&config) {
                stage_since = tokio::time::Instant::now();
                // The timer is moved back only when this stage's time ends before it fires.
                if stage_since + limit < timer.deadline() {
                    timer.as_mut().reset(stage_since + limit);
                }
            }
        }
        if this.connection.should_close()
            || (!reading && this.running.is_empty())
            // Idle (no request begun, not even partly received): close now.
            || (stopping && stage == Stage::Idle)
        {
            break;
        }
        let can_take = this.output.len() < OUTPUT_LIMIT;
        let can_read = reading && this.held.is_none() && can_take;
        tokio::select! {
            biased;
            () = graceful.as_mut(), if !stopping => stopping = true,
            // Not polled while a request runs: no deadline then, and a poll costs a waker
            // registration.
            () = timer.as_mut(), if stage != Stage::Running => {
                match stage.limit(&config).map(|limit| stage_since + limit) {
                    Some(deadline) if deadline <= tokio::time::Instant::now() => {
                        if stage == Stage::Idle {
                            tracing::debug!("FastCGI connection idle past the keep-alive timeout: closing");
                        } else {
                            tracing::info!("FastCGI request not received within the header read timeout: closing the connection");
                        }
                        break;
                    }
                    Some(deadline) => timer.as_mut().reset(deadline),
                    None => unreachable!("the timer is not polled while a request runs"),
                }
            }
            (request_id, outcome) = std::future::poll_fn(|cx| poll_one(&mut this.one, cx)), if this.one.is_some() => {
                this.inline_done(request_id, outcome).await;
            }
            Some(done) = this.inline.next(), if !this.inline.is_empty() => {
                // An aborted request was ended when its abort came.
                if let Ok((request_id, outcome)) = done {
                    this.inline_done(request_id, outcome).await;
                }
            }
            Some(out) = this.out_rx.recv(), if can_take => this.queued(out),
            room = room_for(this.held.as_ref()), if this.held.is_some() => {
                let held = this.held.take().expect("a held record");
                // No room ever: the request dropped its body.
                if let Ok(permit) = room {
                    permit.send(held.data);
                }
            }
            io = std::future::poll_fn(|cx| {
                poll_io(&mut stream, &mut this.output, &mut buf, can_read, cx)
            }) => {
                if let Io::Read(0) = io? {
                    reading = false;
                    this.held = None;
                    // The web server closed the connection: it gave up on its requests (nginx,
                    // Apache and lighttpd close it when their client goes away), and nobody
                    // would read their answers. Each is dropped now, and with it the app's
                    // body (its close runs), as the HTTP server does when a client goes away.
                    for (request_id, request) in this.running.drain() {
                        request.task.abort(request_id, &mut this.one);
                        tracing::info!(request_id, "the web server closed the connection: request dropped");
                    }
                }
            }
        }
    }
    // What the requests queued goes out; then the connection closes.
    for (request_id, request) in std::mem::take(&mut this.running) {
        request.task.abort(request_id, &mut this.one);
    }
    this.take_queued(true);
    std::future::poll_fn(|cx| this.output.poll_write(Pin::new(&mut *stream), cx)).await?;
    stream.shutdown().await?;
    if reading && this.unread_input && this.connection.should_close() {
        // A request without `FCGI_KEEP_CONN` was answered before its body was all sent: the
        // web server may be sending the rest, and would meet a reset instead of reading the
        // answer (nginx then answers 502). It closes once it has read the answer. (Not when
        // the server stops: a web server keeps an idle connection open.)
        read_until_close(&mut stream, this.runtime.config().linger_timeout).await;
    }
    Ok(())
}

impl<A: App + 'static> Session<A> {
    /// Decodes and handles the records in `buf`, until it holds no whole record or a body
    /// record must wait for room. An error closes the connection.
    fn receive(&mut self, buf: &mut BytesMut) -> Result<(), Close> {
        while self.held.is_none() {
            let record = match codec::decode_record(buf) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "bad FastCGI record: closing the connection");
                    return Err(Close);
                }
            };
            let mut out = BytesMut::new();
            let event = match self
                .connection
                .receive(record, self.runtime.has_capacity(), &mut out)
            {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "FastCGI protocol error: closing the connection");
                    return Err(Close);
                }
            };
            if !out.is_empty() {
                self.output.bufs.push(out.freeze());
            }
            match event {
                None => {}
                Some(Event::Request {
                    request_id,
                    role,
                    mut params,
                    ..
                }) => {
                    let block = params.stream().clone();
                    let ranges = std::iter::from_fn(|| params.next_range());
                    let Ok((mut environ, framing)) = framed_environ_from_block(block, ranges)
                    else {
                        tracing::warn!("bad FastCGI params: closing the connection");
                        return Err(Close);
                    };
                    if let Some(prefix) = &self.mount {
                        crate::params::mount(&mut environ, prefix.as_bytes());
                    }
                    let body_ended = stdin_ends_next(buf, request_id);
                    let key = Key {
                        request_id,
                        generation: self.next_generation,
                    };
                    self.next_generation = self.next_generation.wrapping_add(1);
                    let (stdin, data, respond) =
                        self.start_request(key, role, environ, framing, body_ended);
                    let task = if stdin.is_none() && data.is_none() {
                        self.poll_here(request_id, Work::Respond(role, respond))
                    } else {
                        let out = self.out_tx.clone();
                        Task::Spawned(tokio::spawn(async move {
                            let app_status = send_response(key, role, respond.await, &out).await;
                            let _ = out.send(Out::End { key, app_status }).await;
                        }))
                    };
                    let running = Running {
                        generation: key.generation,
                        stdin,
                        data,
                        task,
                    };
                    self.running.insert(request_id, running);
                }
                Some(Event::Stdin { request_id, data }) => {
                    self.feed(request_id, data, |request| &mut request.stdin);
                }
                Some(Event::Data { request_id, data }) => {
                    self.feed(request_id, data, |request| &mut request.data);
                }
                Some(Event::Abort { request_id }) => {
                    if let Some(request) = self.running.remove(&request_id) {
                        request.task.abort(request_id, &mut self.one);
                        tracing::info!(request_id, "request aborted by the web server");
                    }
                    self.take_queued(true);
                    let mut out = BytesMut::new();
                    self.connection.end_request(request_id, 0, &mut out);
                    self.output.bufs.push(out.freeze());
                }
            }
        }
        Ok(())
    }

    /// Gives a body record to its request; one that finds the channel full is held, and
    /// reading waits for the request to take it (a request that does not read its body holds
    /// back this connection's reading, not the server).
    ///
    /// `channel` picks the request's STDIN or DATA channel; the empty record that ends the
    /// stream is the last one it takes.
    fn feed(
        &mut self,
        request_id: u16,
        data: Bytes,
        channel: impl FnOnce(&mut Running) -> &mut Option<mpsc::Sender<Bytes>>,
    ) {
        let Some(request) = self.running.get_mut(&request_id) else {
            return;
        };
        let channel = channel(request);
        let sender = if data.is_empty() {
            channel.take()
        } else {
            channel.clone()
        };
        let Some(sender) = sender else { return };
        if let Err(mpsc::error::TrySendError::Full(data)) = sender.try_send(data) {
            self.held = Some(Held { sender, data });
        }
    }

    /// Moves what the requests' tasks queued into the output: while the output is below its
    /// limit, or, with `all`, everything queued now (before an `FCGI_END_REQUEST` that must
    /// follow it).
    fn take_queued(&mut self, all: bool) {
        while all || self.output.len() < OUTPUT_LIMIT {
            match self.out_rx.try_recv() {
                Ok(out) => self.queued(out),
                Err(_) => break,
            }
        }
    }

    /// Takes what a request queued, if it is the request that holds its id now: output of an
    /// aborted request's task, still running when it was aborted, is dropped (its
    /// `FCGI_END_REQUEST` went out with the abort, and the id may serve another request since).
    fn queued(&mut self, out: Out) {
        let key = match &out {
            Out::Records { key, .. } | Out::Stderr { key, .. } | Out::End { key, .. } => *key,
        };
        let current = self
            .running
            .get(&key.request_id)
            .is_some_and(|request| request.generation == key.generation);
        match out {
            Out::Records { records, .. } if current => self.output.bufs.push(records),
            Out::Stderr { message, .. } if current => {
                let mut records = BytesMut::new();
                codec::encode_stream(&mut records, StreamKind::Stderr, key.request_id, &message);
                self.output.bufs.push(records.freeze());
            }
            Out::Stderr { message, .. } => log_error_line(&message),
            Out::End { app_status, .. } if current => self.end(key.request_id, app_status),
            Out::Records { .. } | Out::End { .. } => {}
        }
    }

    /// Ends a request that ran to its end (one aborted was ended when its abort came).
    fn end(&mut self, request_id: u16, app_status: u32) {
        let mut out = BytesMut::new();
        self.end_in(request_id, app_status, &mut out);
        if !out.is_empty() {
            self.output.bufs.push(out.freeze());
        }
    }

    /// [`end`](Session::end), its records appended to `out`.
    fn end_in(&mut self, request_id: u16, app_status: u32, out: &mut BytesMut) {
        if let Some(request) = self.running.remove(&request_id) {
            self.unread_input |= request.stdin.is_some() || request.data.is_some();
            self.connection.end_request(request_id, app_status, out);
        }
    }

    /// Prepares a request: the senders of its body and data channels (`None` where it has none),
    /// and the future of its response, to be run by the caller.
    fn start_request(
        &self,
        key: Key,
        role: Role,
        mut environ: gateway_core::Environ,
        framing: BodyFraming,
        body_ended: bool,
    ) -> (
        Option<mpsc::Sender<Bytes>>,
        Option<mpsc::Sender<Bytes>>,
        Respond,
    ) {
        let (runtime, peer, out) = (&self.runtime, self.peer, &self.out_tx);
        environ.set("FCGI_ROLE", role.name());
        // A request known to have no body (its STDIN ends with the params, and it declares no
        // length that the end would fall short of) gets no channel for one: most requests.
        let no_body = role == Role::Authorizer
            || (body_ended && matches!(framing, BodyFraming::None | BodyFraming::Length(0)));
        let (stdin_tx, stdin_rx) = if no_body {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(INPUT_QUEUE);
            (Some(tx), Some(rx))
        };
        let (body, guard) = match stdin_rx {
            Some(records) => {
                let (body, guard) = runtime.guard_body(ChannelBody { records });
                (Some(body), guard)
            }
            None => (None, BodyGuard::none()),
        };
        // FastCGI ends STDIN with an empty record: a request without CONTENT_LENGTH still has a
        // well-defined end (Apache streams chunked bodies this way). An Authorizer has no body
        // (the Responder owns it, and Apache's mod_authnz_fcgi sends no STDIN at all).
        // A short body of a declared length is read whole first (see
        // `Config::body_buffer_size`).
        let mut read_first = None;
        let input = match (body, framing) {
            (None, _) => Input::empty(),
            (Some(body), BodyFraming::Length(n))
                if role == Role::Responder && runtime.buffers_body(n) =>
            {
                read_first = Some((body, n));
                Input::empty()
            }
            (Some(body), BodyFraming::Length(_)) => bound_input(Input::from_body(body), framing),
            (Some(body), _) => Input::from_body(body),
        };
        environ.set_input(input);
        let (data_tx, data) = if role == Role::Filter {
            let (tx, rx) = mpsc::channel(INPUT_QUEUE);
            let mut data = Input::from_body(ChannelBody { records: rx });
            if let Some(length) = environ
                .get_str("FCGI_DATA_LENGTH")
                .and_then(|l| l.parse::<u64>().ok())
            {
                data = data.with_limit(length);
            }
            (Some(tx), Some(data))
        } else {
            (None, None)
        };
        if let Some(data) = data {
            environ
                .extensions_mut()
                .insert(FilterData(Arc::new(std::sync::Mutex::new(Some(data)))));
        }
        environ.set_errors(ErrorStream::new(StderrSink {
            key,
            out: out.clone(),
        }));
        environ.set_multithread(runtime.config().blocking);
        if let Some(peer) = peer {
            environ.set_peer_addr(Some(peer));
        }
        let runtime = runtime.clone();
        let respond = match read_first {
            // The body's STDIN still comes, and is dropped as it does.
            None if framing == BodyFraming::Invalid => Respond::Later(Box::pin(async move {
                tracing::warn!("FastCGI request with an invalid CONTENT_LENGTH: 400");
                let refused = plain_response(http::StatusCode::BAD_REQUEST, false);
                runtime.answer(&environ, refused).await
            })),
            Some((body, length)) => Respond::Later(Box::pin(async move {
                runtime
                    .respond_after_body(environ, body, guard, length)
                    .await
            })),
            None => Respond::Now(runtime.respond(environ, guard)),
        };
        (stdin_tx, data_tx, respond)
    }

    /// A request polled by this task is done with a step: its response is here (the head and
    /// what of the body is ready go out, and a body that streams on is polled here as well),
    /// or the rest of its body was sent.
    async fn inline_done(&mut self, request_id: u16, outcome: Outcome) {
        let (role, response) = match outcome {
            Outcome::Ended(app_status) => {
                self.take_queued(true);
                self.end(request_id, app_status);
                return;
            }
            Outcome::Response(role, response) => (role, response),
        };
        let (mut records, rest) = begin_response(request_id, role, response).await;
        // Its `wsgi.errors` lines, queued while it ran, go first.
        self.take_queued(true);
        if !matches!(rest, Rest::More(_)) {
            // Its end goes in the same buffer, out in the same write.
            self.end_in(request_id, rest.app_status(), &mut records);
        }
        self.output.bufs.push(records.freeze());
        match rest {
            Rest::More(mut body) => {
                let Some(request) = self.running.get(&request_id) else {
                    return;
                };
                let key = Key {
                    request_id,
                    generation: request.generation,
                };
                let out = self.out_tx.clone();
                let rest =
                    Box::pin(
                        async move { Outcome::Ended(send_frames(key, &mut body, &out).await) },
                    );
                let task = self.poll_here(request_id, Work::Rest(rest));
                if let Some(request) = self.running.get_mut(&request_id) {
                    request.task = task;
                }
            }
            Rest::Ended | Rest::Failed => {}
        }
    }

    /// Has the connection's task poll `work`, for `request_id` (in `one` when it is free).
    fn poll_here(&mut self, request_id: u16, mut work: Work) -> Task {
        if self.one.is_none() {
            self.one = Some((request_id, work));
            return Task::One;
        }
        let work: InlineFuture = Box::pin(async move {
            let outcome = std::future::poll_fn(|cx| work.poll(cx)).await;
            (request_id, outcome)
        });
        let (work, handle) = abortable(work);
        self.inline.push(work);
        Task::Inline(handle)
    }
}

/// Polls the request in [`Session::one`]; done, it leaves the slot.
fn poll_one(
    one: &mut Option<(u16, Work)>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(u16, Outcome)> {
    let Some((request_id, work)) = one else {
        return std::task::Poll::Pending;
    };
    let outcome = std::task::ready!(work.poll(cx));
    let request_id = *request_id;
    *one = None;
    std::task::Poll::Ready((request_id, outcome))
}

/// Whether `buf` starts with the record that ends the STDIN of `request_id` at once: the
/// request has no body (nginx sends it with the params of every GET). Peeked, not consumed.
fn stdin_ends_next(buf: &[u8], request_id: u16) -> bool {
    Header::parse(buf).is_some_and(|header| {
        header.version == codec::VERSION_1
            && header.record_type == RecordType::Stdin
            && header.request_id == request_id
            && header.content_length == 0
    })
}

/// What is left of a response once [`begin_response`] has taken what was ready.
enum Rest {
    /// Nothing: the body ended.
    Ended,
    /// The body failed (or the head could not be written): the response is cut short.
    Failed,
    /// The body, with more to come.
    More(gateway_core::Body),
}

impl Rest {
    /// The app status of `FCGI_END_REQUEST` for a response that ends here.
    fn app_status(&self) -> u32 {
        match self {
            Rest::Failed => 1,
            Rest::Ended | Rest::More(_) => 0,
        }
    }
}

/// The STDOUT records of a response's head and of what of its body is ready now (the head
/// leaves with the first chunk: one record rather than two, and Apache's mod_authnz_fcgi only
/// passes a denying Authorizer's body to the client when it arrives in the record that ends
/// the head), and what is left of it.
async fn begin_response(
    request_id: u16,
    role: Role,
    response: http::Response<gateway_core::Body>,
) -> (BytesMut, Rest) {
    let (parts, mut body) = response.into_parts();
    // The head is written in place, in the record that its first data joins.
    let mut records = BytesMut::with_capacity(512);
    let record = codec::begin_stream_record(&mut records, StreamKind::Stdout, request_id);
    let mut writer = (&mut records).writer();
    if crate::cgi::write_head(&mut writer, parts.status, &parts.headers, None).is_err() {
        return (BytesMut::new(), Rest::Failed);
    }
    if role == Role::Authorizer {
        variable_names(record.content(&mut records));
    }
    let mut head = Some(record);
    let rest = loop {
        if records.len() >= OUTPUT_LIMIT {
            break Rest::More(body);
        }
        let frame =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let data = match frame {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(%error, request_id, "response aborted");
                break Rest::Failed;
            }
            Poll::Ready(None) => break Rest::Ended,
            Poll::Pending => break Rest::More(body),
        };
        match head.take() {
            Some(head) => {
                records.extend_from_slice(&data);
                head.close(&mut records);
            }
            None if !data.is_empty() => {
                codec::encode_stream(&mut records, StreamKind::Stdout, request_id, &data);
            }
            None => {}
        }
    };
    if let Some(head) = head {
        head.close(&mut records);
    }
    (records, rest)
}

/// Sends a response as STDOUT records through the connection's queue: the `Status:` head,
/// then each body frame. Returns the app status for `FCGI_END_REQUEST`: 0, or 1 when the
/// response was cut short.
async fn send_response(
    key: Key,
    role: Role,
    response: http::Response<gateway_core::Body>,
    out: &mpsc::Sender<Out>,
) -> u32 {
    let (records, rest) = begin_response(key.request_id, role, response).await;
    if !records.is_empty()
        && (out.send(Out::Records {
            key,
            records: records.freeze(),
        }))
        .await
        .is_err()
    {
        return 1;
    }
    match rest {
        Rest::More(mut body) => send_frames(key, &mut body, out).await,
        rest => rest.app_status(),
    }
}

/// Sends the rest of a response body, each frame as STDOUT records as it comes. Returns the
/// app status for `FCGI_END_REQUEST`.
async fn send_frames(key: Key, body: &mut gateway_core::Body, out: &mpsc::Sender<Out>) -> u32 {
    let request_id = key.request_id;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    let mut records = BytesMut::new();
                    codec::encode_stream(&mut records, StreamKind::Stdout, request_id, data);
                    let records = records.freeze();
                    if out.send(Out::Records { key, records }).await.is_err() {
                        return 1;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, request_id, "response aborted");
                return 1;
            }
        }
    }
    0
}

/// Writes the names of an Authorizer's `Variable-NAME` headers in `head` as `Variable-` and
/// NAME in upper case. Header names reach the server in lower case (an `http::HeaderMap`), but
/// the web server makes the text after the prefix a variable name as it is (Apache's
/// mod_authnz_fcgi and lighttpd both do), and CGI variable names are upper case: an app's
/// `Variable-AUTH_METHOD` must reach the Responder as `AUTH_METHOD`, not `auth_method`.
fn variable_names(head: &mut [u8]) {
    const PREFIX: &[u8] = b"Variable-";
    for line in head.split_mut(|&b| b == b'\n') {
        if line.len() <= PREFIX.len() || !line[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            continue;
        }
        let end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        line[..PREFIX.len()].copy_from_slice(PREFIX);
        line[PREFIX.len()..end].make_ascii_uppercase();
    }
}

#[cfg(test)]
mod tests {
    use super::variable_names;

    #[test]
    fn authorizer_variable_names_are_upper_case() {
        let mut head = b"Status: 200 OK\r\nvariable-auth_user: Alice\r\nvariable-x-y: b\r\n\
            x-variable-no: c\r\nvariable-: d\r\ncontent-type: text/plain\r\n\r\n"
            .to_vec();
        variable_names(&mut head);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "Status: 200 OK\r\nVariable-AUTH_USER: Alice\r\nVariable-X-Y: b\r\n\
             x-variable-no: c\r\nVariable-: d\r\ncontent-type: text/plain\r\n\r\n"
        );
    }
}
