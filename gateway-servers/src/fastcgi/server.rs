//! The FastCGI server: the connection loop over [`Connection`].
//!
//! A connection's records are decoded as they arrive; the protocol answers management records
//! and refusals itself; each request whose params are complete runs as a task of its own (so a
//! slow request never holds back the others on a multiplexed connection), reading its body
//! from a bounded per-request channel and writing its response as `FCGI_STDOUT` records, a
//! `Status:` line first (nginx and Apache handle an HTTP status line differently), then
//! `FCGI_END_REQUEST`. `wsgi.errors` goes out as `FCGI_STDERR` records, so app errors land in
//! the web server's error log. `FCGI_ABORT_REQUEST` drops the app's response (its body's
//! `close()`) and ends the request. The connection closes after a request without
//! `FCGI_KEEP_CONN`, as the web server asked.
//!
//! [`serve`] takes the addresses of the web servers allowed to connect from the environment
//! variable `FCGI_WEB_SERVER_ADDRS` (see [`web_server_addrs`](super::web_server_addrs)); a TCP
//! connection from any other address is closed at once. [`serve_with`] takes them, and every
//! other setting, from its [`Options`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
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
use crate::params::{body_framing, bound_input, try_environ_from_params};
use crate::runtime::{
    BodyGuard, Listener, Runtime, Shutdown, Stream, serve_connections, write_all_bufs,
};

/// Record batches a request may have queued for the connection's writer.
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
    serve_connections(listener, runtime.config(), shutdown, move |connection| {
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
    })
    .await
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
/// connection's queue full go to the server's log instead.
struct StderrSink {
    request_id: u16,
    out: mpsc::Sender<Bytes>,
}

impl ErrorSink for StderrSink {
    fn write_message(&self, message: &[u8]) {
        let mut records = BytesMut::new();
        codec::encode_stream(&mut records, StreamKind::Stderr, self.request_id, message);
        if self.out.try_send(records.freeze()).is_err() {
            tracing::warn!(target: "gateway::errors", "{}", String::from_utf8_lossy(message).trim_end());
        }
    }
}

/// A request of a connection at work: the channels its body and data go through, and where it
/// runs.
struct Running {
    stdin: Option<mpsc::Sender<Bytes>>,
    data: Option<mpsc::Sender<Bytes>>,
    task: Task,
}

/// Where a request runs. One that reads a body from the connection runs in a task of its own,
/// so that the connection's task can wait on a full body channel while the request (a
/// non-blocking app reads its body in its response future) drains it. Any other (most
/// requests: nginx sends a GET's params and the end of its STDIN together) is polled by the
/// connection's task, among its others: no task, no channel back, and no wake of another task
/// per request.
enum Task {
    Spawned(tokio::task::JoinHandle<()>),
    Inline(AbortHandle),
}

impl Task {
    /// Drops the request's response, and with it the app's body (its close runs).
    fn abort(&self) {
        match self {
            Task::Spawned(task) => task.abort(),
            Task::Inline(handle) => handle.abort(),
        }
    }
}

/// A request's work, from its call to its last STDOUT record: its id and the app status for
/// `FCGI_END_REQUEST` (see [`send_response`]).
type RequestFuture = Pin<Box<dyn Future<Output = (u16, u32)> + Send>>;

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

/// Serves one connection. With `stop`, a graceful shutdown closes the connection as soon as no
/// request is running on it: at once when it is idle (a web server keeps connections open with
/// `FCGI_KEEP_CONN`, and a shutdown must not wait for it to close them), else after the last
/// response.
async fn handle<A: App + 'static>(
    runtime: Runtime<A>,
    stream: Box<dyn Stream>,
    peer: Option<std::net::SocketAddr>,
    settings: Settings,
    mount: Option<Arc<str>>,
    stop: Option<Shutdown>,
) -> io::Result<()> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let writer_task = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(bytes) = out_rx.recv().await {
            batch.push(bytes);
            // Let the tasks that are ready now add theirs (a response's END_REQUEST follows
            // its STDOUT at once): what is queued then goes out in one write.
            crate::runtime::yield_to_ready_tasks().await;
            while let Ok(more) = out_rx.try_recv() {
                batch.push(more);
            }
            write_all_bufs(&mut writer, &mut batch).await?;
            writer.flush().await?;
        }
        writer.shutdown().await
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u16, u32)>();
    let mut inline = FuturesUnordered::<Abortable<RequestFuture>>::new();
    let mut connection = Connection::new(settings);
    let mut running: IdMap<Running> = IdMap::default();
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
    loop {
        if connection.should_close() {
            break;
        }
        if !reading && running.is_empty() {
            break;
        }
        if stopping && running.is_empty() && connection.open_requests() == 0 {
            // Idle (no request begun, not even partly received): close now.
            break;
        }
        tokio::select! {
            () = graceful.as_mut(), if !stopping => {
                stopping = true;
                continue;
            }
            read = reader.read_buf(&mut buf), if reading => {
                if read? == 0 {
                    reading = false;
                    // The web server is gone: the bodies still being read end in an error.
                    for request in running.values_mut() {
                        request.stdin = None;
                        request.data = None;
                    }
                    continue;
                }
                loop {
                    let record = match codec::decode_record(&mut buf) {
                        Ok(Some(record)) => record,
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(%error, "bad FastCGI record: closing the connection");
                            return Ok(());
                        }
                    };
                    let mut out = BytesMut::new();
                    let event = match connection.receive(record, runtime.has_capacity(), &mut out) {
                        Ok(event) => event,
                        Err(error) => {
                            tracing::warn!(%error, "FastCGI protocol error: closing the connection");
                            return Ok(());
                        }
                    };
                    if !out.is_empty() && out_tx.send(out.freeze()).await.is_err() {
                        return Ok(());
                    }
                    match event {
                        None => {}
                        Some(Event::Request { request_id, role, params, .. }) => {
                            let Ok(mut environ) = try_environ_from_params(params) else {
                                tracing::warn!("bad FastCGI params: closing the connection");
                                return Ok(());
                            };
                            if let Some(prefix) = &mount {
                                crate::params::mount(&mut environ, prefix.as_bytes());
                            }
                            let body_ended = stdin_ends_next(&buf, request_id);
                            let (stdin, data, work) = start_request(
                                &runtime, request_id, role, environ, body_ended, peer, out_tx.clone(),
                            );
                            let task = if stdin.is_none() && data.is_none() {
                                let (work, handle) = abortable(work);
                                inline.push(work);
                                Task::Inline(handle)
                            } else {
                                let done = done_tx.clone();
                                Task::Spawned(tokio::spawn(async move {
                                    let _ = done.send(work.await);
                                }))
                            };
                            running.insert(request_id, Running { stdin, data, task });
                        }
                        Some(Event::Stdin { request_id, data }) => {
                            let sender = running.get(&request_id).and_then(|r| r.stdin.clone());
                            if let Some(sender) = sender {
                                // Bounded: a request that does not read its body holds back
                                // this connection's reading, not the server.
                                let _ = sender.send(data.clone()).await;
                            }
                            if data.is_empty() {
                                if let Some(r) = running.get_mut(&request_id) { r.stdin = None; }
                            }
                        }
                        Some(Event::Data { request_id, data }) => {
                            let sender = running.get(&request_id).and_then(|r| r.data.clone());
                            if let Some(sender) = sender {
                                let _ = sender.send(data.clone()).await;
                            }
                            if data.is_empty() {
                                if let Some(r) = running.get_mut(&request_id) { r.data = None; }
                            }
                        }
                        Some(Event::Abort { request_id }) => {
                            if let Some(request) = running.remove(&request_id) {
                                request.task.abort();
                                tracing::info!(request_id, "request aborted by the web server");
                            }
                            let mut out = BytesMut::new();
                            connection.end_request(request_id, 0, &mut out);
                            let _ = out_tx.send(out.freeze()).await;
                        }
                    }
                }
            }
            Some(done) = inline.next(), if !inline.is_empty() => {
                // An aborted request was ended when its abort came.
                let Ok((request_id, app_status)) = done else { continue };
                if running.remove(&request_id).is_some() {
                    let mut out = BytesMut::new();
                    connection.end_request(request_id, app_status, &mut out);
                    if out_tx.send(out.freeze()).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Some((request_id, app_status)) = done_rx.recv() => {
                if running.remove(&request_id).is_some() {
                    let mut out = BytesMut::new();
                    connection.end_request(request_id, app_status, &mut out);
                    if out_tx.send(out.freeze()).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    drop(out_tx);
    for (_, request) in running {
        request.task.abort();
    }
    writer_task.await.map_err(io::Error::other)?
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

/// Prepares a request: the senders of its body and data channels (`None` where it has none),
/// and its work, to be run by the caller.
fn start_request<A: App + 'static>(
    runtime: &Runtime<A>,
    request_id: u16,
    role: Role,
    mut environ: gateway_core::Environ,
    body_ended: bool,
    peer: Option<std::net::SocketAddr>,
    out: mpsc::Sender<Bytes>,
) -> (
    Option<mpsc::Sender<Bytes>>,
    Option<mpsc::Sender<Bytes>>,
    RequestFuture,
) {
    environ.set("FCGI_ROLE", role.name());
    let framing = body_framing(&environ);
    // A request known to have no body (its STDIN ends with the params, and it declares no
    // length that the end would fall short of) gets no channel for one: most requests.
    let no_body = role == Role::Authorizer
        || (body_ended
            && matches!(
                framing,
                crate::params::BodyFraming::None | crate::params::BodyFraming::Length(0)
            ));
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
    // A short body of a declared length, for a blocking app, is read whole first (see
    // `Config::body_buffer_size`).
    let mut read_first = None;
    let input = match (body, framing) {
        (None, _) => Input::empty(),
        (Some(body), crate::params::BodyFraming::Length(n))
            if role == Role::Responder && runtime.buffers_body(n) =>
        {
            read_first = Some((body, n));
            Input::empty()
        }
        (Some(body), crate::params::BodyFraming::Length(_)) => {
            bound_input(Input::from_body(body), framing)
        }
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
        request_id,
        out: out.clone(),
    }));
    environ.set_multithread(runtime.config().blocking);
    if let Some(peer) = peer {
        environ.set_peer_addr(Some(peer));
    }
    let runtime = runtime.clone();
    let work = Box::pin(async move {
        let response = match read_first {
            Some((body, length)) => {
                runtime
                    .respond_after_body(environ, body, guard, length)
                    .await
            }
            None => runtime.respond(environ, guard).await,
        };
        (
            request_id,
            send_response(request_id, role, response, &out).await,
        )
    });
    (stdin_tx, data_tx, work)
}

/// Sends a response as STDOUT records: the `Status:` head, then each body frame. Returns the
/// app status for `FCGI_END_REQUEST`: 0, or 1 when the response was cut short.
async fn send_response(
    request_id: u16,
    role: Role,
    response: http::Response<gateway_core::Body>,
    out: &mpsc::Sender<Bytes>,
) -> u32 {
    let (parts, mut body) = response.into_parts();
    let mut head = Vec::with_capacity(256);
    if crate::cgi::write_head(&mut head, parts.status, &parts.headers, None).is_err() {
        return 1;
    }
    if role == Role::Authorizer {
        variable_names(&mut head);
    }
    // The head leaves with the first chunk when that is ready now (a full body): one STDOUT
    // record rather than two, and Apache's mod_authnz_fcgi only passes a denying Authorizer's
    // body to the client when it arrives in the record that ends the head.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
    let mut ended = false;
    match first {
        Poll::Ready(Some(Ok(frame))) => {
            if let Some(data) = frame.data_ref() {
                head.extend_from_slice(data);
            }
        }
        Poll::Ready(Some(Err(error))) => {
            tracing::warn!(%error, request_id, "response aborted");
            return 1;
        }
        Poll::Ready(None) => ended = true,
        Poll::Pending => {}
    }
    let mut records = BytesMut::new();
    codec::encode_stream(&mut records, StreamKind::Stdout, request_id, &head);
    if out.send(records.freeze()).await.is_err() {
        return 1;
    }
    if ended {
        return 0;
    }
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    let mut records = BytesMut::new();
                    codec::encode_stream(&mut records, StreamKind::Stdout, request_id, data);
                    if out.send(records.freeze()).await.is_err() {
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
