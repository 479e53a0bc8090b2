//! Forwarding over FastCGI, as a Responder, on kept-alive connections.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use gateway_core::{Environ, ErrorStream, Input};
use gateway_servers::cgi::parse_response_head;
use gateway_servers::fastcgi::codec::{
    ProtocolStatus, Record, Role, StreamKind, decode_record, encode_begin_request,
    encode_end_of_stream, encode_pair, encode_stream,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::pool::Pool;
use super::stream::Stream;
use super::{
    Failure, Inner, MAX_HEAD, Out, Progress, ReadEnd, backend_vars, read_ahead, send_request,
};

/// The request id used: one request at a time on each connection, as nginx and Apache do.
const REQUEST_ID: u16 = 1;

pub(super) async fn exchange(inner: &Inner, pool: &Pool<Stream>, mut environ: Environ, out: Out) {
    let settings = &inner.settings;
    let ahead = match read_ahead(&mut environ, settings.max_buffered_body).await {
        Ok(ahead) => ahead,
        Err(failure) => return out.fail(failure).await,
    };
    let mut head = BytesMut::new();
    encode_begin_request(&mut head, REQUEST_ID, Role::Responder, true);
    let mut params = BytesMut::new();
    for (name, value) in backend_vars(&environ, ahead.as_ref().map(|b| b.len() as u64)) {
        encode_pair(&mut params, &name, &value);
    }
    encode_stream(&mut head, StreamKind::Params, REQUEST_ID, &params);
    encode_end_of_stream(&mut head, StreamKind::Params, REQUEST_ID);
    let errors = environ.errors().clone();
    // A request sent again when its kept connection turns out dead: one whose whole body is in
    // memory (read ahead, or none: `CONTENT_LENGTH` 0), and whose method may run twice (the
    // backend may have read it before it closed).
    let in_memory = ahead.is_some() || environ.content_length() == Some(0);
    let again = in_memory && crate::balancer::is_idempotent(environ.request_method());
    let mut input = Some(environ.take_input());
    let encode = |dst: &mut BytesMut, data: &[u8]| {
        if data.is_empty() {
            encode_end_of_stream(dst, StreamKind::Stdin, REQUEST_ID);
        } else {
            encode_stream(dst, StreamKind::Stdin, REQUEST_ID, data);
        }
    };
    let mut out = out;
    let mut pooled = pool.take(Stream::is_reusable);
    loop {
        let (stream, reused) = match pooled.take() {
            Some(stream) => (stream, true),
            None => match inner.url.endpoint.connect(settings.connect_timeout).await {
                Ok(stream) => (stream, false),
                Err(error) => return out.fail(Failure::Connect(error)).await,
            },
        };
        let (reader, writer) = tokio::io::split(stream);
        let progress = Progress::new();
        let timeout = settings.response_timeout;
        let (end, written) = send_request(
            writer,
            head.clone(),
            ahead.clone(),
            input.take().unwrap_or_else(Input::empty),
            encode,
            &progress,
            read_response(reader, &mut out, errors.clone(), timeout, &progress),
        )
        .await;
        match end {
            ReadEnd::Done(reader) => {
                // Reused only when both directions ended on a record boundary.
                if let (Some(reader), Some(writer)) = (reader, written) {
                    pool.put(reader.unsplit(writer));
                }
            }
            // A kept connection the backend had closed (PHP-FPM ends a child's connection at
            // its `pm.max_requests`): the request goes again, once, on a new connection.
            ReadEnd::Failed(Failure::ClosedWhileIdle) if reused && again => continue,
            ReadEnd::ClientGone => {}
            ReadEnd::Failed(failure) => out.fail(failure).await,
        }
        return;
    }
}

/// Reads the records of the response: `FCGI_STDOUT` to the client (the head parsed first),
/// `FCGI_STDERR` to the request's error stream, until `FCGI_END_REQUEST`.
async fn read_response<R: AsyncRead + Unpin>(
    mut reader: R,
    out: &mut Out,
    mut errors: ErrorStream,
    timeout: std::time::Duration,
    progress: &Progress,
) -> ReadEnd<R> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut head: Option<BytesMut> = Some(BytesMut::new());
    // The head must come whole within the timeout from the request's last progress, however
    // the backend trickles records (stderr lines, other requests' records) meanwhile; after
    // it, the timeout bounds each wait for more of the body.
    let mut received = false;
    loop {
        loop {
            let record = match decode_record(&mut buf) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(error) => {
                    return ReadEnd::Failed(Failure::Backend(format!("FastCGI: {error}")));
                }
            };
            match record {
                Record::Stream {
                    request_id: REQUEST_ID,
                    kind: StreamKind::Stdout,
                    data,
                } => match &mut head {
                    None => {
                        if !out.data(data).await {
                            return ReadEnd::ClientGone;
                        }
                    }
                    Some(pending) => {
                        pending.extend_from_slice(&data);
                        match parse_response_head(pending) {
                            Ok(Some((parsed, len))) => {
                                let rest: Bytes = pending.split_off(len).freeze();
                                head = None;
                                if !out.head(parsed) || !out.data(rest).await {
                                    return ReadEnd::ClientGone;
                                }
                            }
                            Ok(None) if pending.len() > MAX_HEAD => {
                                return ReadEnd::Failed(Failure::Backend(format!(
                                    "FastCGI: response head over {MAX_HEAD} bytes"
                                )));
                            }
                            Ok(None) => {}
                            Err(error) => {
                                return ReadEnd::Failed(Failure::Backend(format!(
                                    "FastCGI: {error}"
                                )));
                            }
                        }
                    }
                },
                Record::Stream {
                    request_id: REQUEST_ID,
                    kind: StreamKind::Stderr,
                    data,
                } => {
                    let _ = errors.write_all(&data);
                }
                Record::EndRequest {
                    request_id: REQUEST_ID,
                    protocol_status,
                    ..
                } => {
                    let _ = errors.flush();
                    return match protocol_status {
                        ProtocolStatus::RequestComplete if head.is_none() => {
                            ReadEnd::Done(buf.is_empty().then_some(reader))
                        }
                        ProtocolStatus::RequestComplete => ReadEnd::Failed(Failure::Backend(
                            "FastCGI: the request ended without a whole response head".into(),
                        )),
                        ProtocolStatus::Overloaded => ReadEnd::Failed(Failure::Overloaded),
                        other => ReadEnd::Failed(Failure::Backend(format!(
                            "FastCGI: the backend refused the request ({other:?})"
                        ))),
                    };
                }
                // Other requests' records and management records are not ours.
                _ => {}
            }
        }
        let read = reader.read_buf(&mut buf);
        let read = match head {
            Some(_) => progress.before_head(timeout, read).await,
            None => tokio::time::timeout(timeout, read).await.ok(),
        };
        match read {
            None => return ReadEnd::Failed(Failure::Timeout(timeout)),
            // Closed (or reset, once our write met the closed socket) before a byte came.
            Some(Ok(0)) if !received => return ReadEnd::Failed(Failure::ClosedWhileIdle),
            Some(Err(error))
                if !received && error.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                return ReadEnd::Failed(Failure::ClosedWhileIdle);
            }
            Some(Ok(0)) => {
                return ReadEnd::Failed(Failure::Backend(
                    "FastCGI: the backend closed the connection before FCGI_END_REQUEST".into(),
                ));
            }
            Some(Ok(_)) => received = true,
            Some(Err(error)) => {
                return ReadEnd::Failed(Failure::Backend(format!("FastCGI: {error}")));
            }
        }
    }
}
