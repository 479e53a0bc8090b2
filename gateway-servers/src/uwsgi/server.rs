//! The uwsgi server: one request per connection, as nginx's `uwsgi_pass`, Apache's
//! `mod_proxy_uwsgi`, lighttpd's `scgi.protocol = "uwsgi"` and uWSGI's HTTP router send it.
//!
//! A connection carries one packet: `modifier1` 0 is a request (30 too, with `PATH_INFO` still
//! holding `SCRIPT_NAME`, which is stripped), 100 is a ping (answered with a pong, as uWSGI
//! does), anything else is refused with 501 and logged. The vars go through the same
//! normalisation as CGI's ([`environ_from_params`](crate::params::environ_from_params)); the
//! body follows the packet, `CONTENT_LENGTH` bytes of it, or chunked when uWSGI's router
//! forwards a chunked request raw (`--http-chunked-input`). The answer is a whole HTTP/1.1 response (a status line, which Apache
//! requires), streamed as the app produces it, and the connection closes after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use gateway_core::{App, Input};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf};

use super::codec::MODIFIER_WSGI_MANAGE_PATH_INFO;
use super::codec::{self, ChunkedDecoder, DecodeError, MODIFIER_PING, MODIFIER_WSGI};
use crate::params::{BodyFraming, bound_input, framed_environ_from_block};
use crate::runtime::{
    BodyGuard, Config, Lingering, Listener, Runtime, Shutdown, Stream, plain_response,
    read_until_close, serve_connections, write_all_bufs,
};

/// Serves `runtime`'s app over uwsgi on `listener` until `shutdown` asks to stop; then waits
/// for the requests in progress (within the config's `shutdown_timeout`). Vars blocks larger
/// than `max_vars_size` are answered 431 ([`codec::MAX_VARS_SIZE`] is the protocol's own
/// limit and the sensible default).
pub async fn serve<A: App + 'static>(
    listener: Listener,
    runtime: Runtime<A>,
    shutdown: Shutdown,
    max_vars_size: usize,
) -> io::Result<()> {
    let handler_runtime = runtime.clone();
    serve_connections(
        listener.one_response_per_connection(),
        runtime.config(),
        runtime.connection_limit(),
        shutdown,
        move |connection| {
            let runtime = handler_runtime.clone();
            async move {
                if let Err(error) =
                    handle(runtime, connection.stream, connection.peer, max_vars_size).await
                {
                    tracing::debug!(%error, "uwsgi connection ended with an error");
                }
            }
        },
    )
    .await
}

/// Reads until a whole packet is in `buf`: `None` if the peer closed first.
async fn read_packet(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    limit: usize,
) -> io::Result<Result<Option<codec::Packet>, DecodeError>> {
    loop {
        match codec::decode_packet(buf, limit) {
            Ok(Some(packet)) => return Ok(Ok(Some(packet))),
            Err(error) => return Ok(Err(error)),
            Ok(None) => {}
        }
        if reader.read_buf(buf).await? == 0 {
            return Ok(Ok(None));
        }
    }
}

/// Serves one connection (one request) until it ends: any byte stream, a socket accepted
/// elsewhere or the scripted bytes of a test (`gateway_testkit::scripted`). Vars blocks larger
/// than `max_vars_size` are answered 431.
pub async fn serve_connection<A: App + 'static>(
    runtime: Runtime<A>,
    stream: impl Stream,
    peer: Option<std::net::SocketAddr>,
    max_vars_size: usize,
) -> io::Result<()> {
    handle(runtime, Box::new(stream), peer, max_vars_size).await
}

async fn handle<A: App + 'static>(
    runtime: Runtime<A>,
    stream: Box<dyn Stream>,
    peer: Option<std::net::SocketAddr>,
    max_vars_size: usize,
) -> io::Result<()> {
    let config = runtime.config().clone();
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(8192);
    let packet = {
        let read = read_packet(&mut stream, &mut buf, max_vars_size);
        let mut read = std::pin::pin!(read);
        // A connection accepted with its packet in hand (deferred accept) needs no timer.
        match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(read) => Some(read?),
            Poll::Pending => match tokio::time::timeout(config.header_read_timeout, read).await {
                Err(_) => None,
                Ok(read) => Some(read?),
            },
        }
    };
    let Some(packet) = packet else {
        if buf.is_empty() {
            tracing::info!("no uwsgi packet within the header read timeout: closing");
            return Ok(());
        }
        tracing::info!("uwsgi packet not complete within the header read timeout: 408");
        let timed_out = plain_response(http::StatusCode::REQUEST_TIMEOUT, true);
        return refuse(stream, timed_out, &config).await;
    };
    let packet = match packet {
        Ok(Some(packet)) => packet,
        Ok(None) => return Ok(()),
        Err(error) => {
            tracing::warn!(%error, "bad uwsgi packet");
            let status = match error {
                DecodeError::VarsTooLarge { .. } => {
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                }
                _ => http::StatusCode::BAD_REQUEST,
            };
            return refuse(stream, plain_response(status, true), &config).await;
        }
    };
    if packet.modifier1 == MODIFIER_PING {
        let mut pong = BytesMut::new();
        codec::encode_pong(&mut pong);
        stream.write_all(&pong).await?;
        return stream.flush().await;
    }
    if packet.modifier1 != MODIFIER_WSGI && packet.modifier1 != MODIFIER_WSGI_MANAGE_PATH_INFO {
        tracing::warn!(
            modifier1 = packet.modifier1,
            modifier2 = packet.modifier2,
            "unsupported uwsgi modifier: 501"
        );
        return refuse(
            stream,
            plain_response(http::StatusCode::NOT_IMPLEMENTED, true),
            &config,
        )
        .await;
    }
    let mut vars = packet.vars();
    let block = vars.block().clone();
    let (mut environ, framing) =
        match framed_environ_from_block(block, std::iter::from_fn(|| vars.next_range())) {
            Ok(framed) => framed,
            Err(error) => {
                tracing::warn!(%error, "bad uwsgi vars");
                return refuse(
                    stream,
                    plain_response(http::StatusCode::BAD_REQUEST, true),
                    &config,
                )
                .await;
            }
        };
    if framing == BodyFraming::Invalid {
        tracing::warn!("uwsgi request with an invalid CONTENT_LENGTH: 400");
        let refused = plain_response(http::StatusCode::BAD_REQUEST, true);
        return refuse(stream, refused, &config).await;
    }
    if packet.modifier1 == MODIFIER_WSGI_MANAGE_PATH_INFO {
        let script_name = environ.script_name().to_vec();
        if let Some(rest) = environ.path_info().strip_prefix(&script_name[..]) {
            let rest = Bytes::copy_from_slice(rest);
            environ.set("PATH_INFO", rest);
        }
    }
    environ.set_errors(runtime.errors().clone());
    environ.set_multithread(config.blocking);
    if let Some(peer) = peer {
        environ.set_peer_addr(Some(peer));
    }
    if matches!(framing, BodyFraming::Length(0) | BodyFraming::None) {
        // No body: the connection is not split between the body's reader and the response's
        // writer, and the response's end is the connection's (its shutdown ends the response,
        // the drop closes it).
        let response = runtime.respond(environ, BodyGuard::none()).await;
        send(&mut stream, response).await?;
        return stream.shutdown().await;
    }
    let (reader, mut writer) = tokio::io::split(stream);
    let body = SocketBody::new(reader, buf, framing);
    // What the app leaves unread of the body is read after it: the web server may be sending
    // it still, and would meet a reset instead of reading the response.
    let body = Lingering::new(body, true, config.linger_timeout);
    let (body, guard) = runtime.guard_body(body);
    // A short body of a declared length is read whole first (see
    // `Config::body_buffer_size`).
    let response = match framing {
        BodyFraming::Length(n) if runtime.buffers_body(n) => {
            runtime.respond_after_body(environ, body, guard, n).await
        }
        _ => {
            environ.set_input(bound_input(Input::from_body(body), framing));
            runtime.respond(environ, guard).await
        }
    };
    send(&mut writer, response).await?;
    // The body's reader may outlive this (an app that kept its input, a body read to its end
    // after the app): the web server learns that the response ended from this, not from the
    // close.
    writer.shutdown().await
}

/// Sends the server's own answer to a request it did not read (a bad packet, an unknown
/// modifier), ends the response, then reads what the web server still sends until it closes
/// (within the linger timeout), so that it reads the answer rather than meeting a reset.
async fn refuse(
    mut stream: Box<dyn Stream>,
    response: http::Response<gateway_core::Body>,
    config: &Config,
) -> io::Result<()> {
    send(&mut stream, response).await?;
    stream.shutdown().await?;
    read_until_close(&mut stream, config.linger_timeout).await;
    Ok(())
}

/// The longest first chunk of a response body that [`send`] copies into the head's buffer
/// (one buffer to write); a longer one is written beside it.
const COPIED_WITH_HEAD: usize = 16 * 1024;

/// Writes a whole HTTP/1.1 response (the status line and the response's headers), streaming its
/// body, each chunk flushed as it comes. The caller ends it with `writer`'s shutdown (the
/// connection's end): what was written last may wait for that (see
/// `Listener::one_response_per_connection`).
async fn send(
    writer: &mut (impl AsyncWrite + Unpin),
    response: http::Response<gateway_core::Body>,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let mut head = Vec::with_capacity(256);
    // The status line and the response's headers, no more (as uWSGI answers, and as the
    // FastCGI server does): the web server in front adds its own `Date`.
    crate::cgi::write_status_line(&mut head, "HTTP/1.1", parts.status)?;
    crate::cgi::write_fields(&mut head, &parts.headers)?;
    // The head leaves with the first chunk when that is ready now (a body in memory): one
    // write, and one read for the web server. A short chunk is copied after the head, in its
    // buffer; a long one goes beside it.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
    let mut ended = false;
    let mut beside = None;
    match first {
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) if data.len() <= COPIED_WITH_HEAD => head.extend_from_slice(&data),
            Ok(data) => beside = Some(data),
            Err(_) => {}
        },
        Poll::Ready(Some(Err(error))) => {
            tracing::warn!(%error, "response aborted");
            ended = true;
        }
        Poll::Ready(None) => ended = true,
        Poll::Pending => {}
    }
    match beside {
        None => writer.write_all(&head).await?,
        Some(data) => write_all_bufs(writer, &mut vec![Bytes::from(head), data]).await?,
    }
    if ended || http_body::Body::is_end_stream(&body) {
        // The caller's shutdown sends it, with the end of the connection.
        return Ok(());
    }
    writer.flush().await?;
    while !ended {
        let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        else {
            ended = true;
            continue;
        };
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    writer.write_all(data).await?;
                    writer.flush().await?;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "response aborted");
                ended = true;
            }
        }
    }
    Ok(())
}

/// The request body, read from the connection after the packet: `CONTENT_LENGTH` bytes, or
/// de-chunked. Nothing past the body is read.
struct SocketBody {
    reader: ReadHalf<Box<dyn Stream>>,
    buf: BytesMut,
    chunked: Option<ChunkedDecoder>,
    /// The bytes of a body of declared length still to come.
    left: Option<u64>,
    eof: bool,
}

impl SocketBody {
    /// The body of a request framed as `framing`; `buf` holds its first bytes, read with the
    /// packet.
    fn new(reader: ReadHalf<Box<dyn Stream>>, buf: BytesMut, framing: BodyFraming) -> Self {
        SocketBody {
            reader,
            buf,
            chunked: (framing == BodyFraming::UntilEnd).then(ChunkedDecoder::new),
            left: match framing {
                BodyFraming::Length(n) => Some(n),
                BodyFraming::None | BodyFraming::Invalid => Some(0),
                BodyFraming::UntilEnd => None,
            },
            eof: false,
        }
    }
}

impl http_body::Body for SocketBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.chunked {
                Some(decoder) => match decoder.decode(&mut this.buf) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) if decoder.is_done() => return Poll::Ready(None),
                    Ok(None) => {}
                    Err(error) => {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            error,
                        ))));
                    }
                },
                None if this.left == Some(0) => return Poll::Ready(None),
                None if !this.buf.is_empty() => {
                    let data = match &mut this.left {
                        Some(left) => {
                            let take = usize::try_from(*left)
                                .map_or(this.buf.len(), |left| left.min(this.buf.len()));
                            *left -= take as u64;
                            this.buf.split_to(take).freeze()
                        }
                        None => this.buf.split().freeze(),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                None => {}
            }
            if this.eof {
                return Poll::Ready(this.chunked.as_ref().map(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunked request body cut short",
                    ))
                }));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.reader).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.buf.extend_from_slice(read.filled());
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == Some(0) || self.chunked.as_ref().is_some_and(ChunkedDecoder::is_done)
    }
}
