//! Forwarding over the uwsgi protocol: one connection per request, the response a raw HTTP one.

use bytes::{Buf, BytesMut};
use gateway_core::Environ;
use gateway_servers::cgi::parse_response_head;
use gateway_servers::uwsgi::codec::{ChunkedDecoder, encode_request};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    Failure, Inner, MAX_HEAD, Out, Progress, ReadEnd, backend_vars, only_chunked, read_ahead,
    send_request,
};

/// `modifier1` 0: a request for the backend's app.
const MODIFIER_APP: u8 = 0;

pub(super) async fn exchange(inner: &Inner, mut environ: Environ, out: Out) {
    let settings = &inner.settings;
    let ahead = match read_ahead(&mut environ, settings.max_buffered_body).await {
        Ok(ahead) => ahead,
        Err(failure) => return out.fail(failure).await,
    };
    let vars = backend_vars(&environ, ahead.as_ref().map(|b| b.len() as u64));
    let mut head = BytesMut::new();
    let encoded = encode_request(
        &mut head,
        MODIFIER_APP,
        vars.iter().map(|(name, value)| (&name[..], &value[..])),
    );
    if let Err(error) = encoded {
        return out.fail(Failure::HeadersTooLarge(error.to_string())).await;
    }
    let head_request = environ.request_method() == "HEAD";
    let input = environ.take_input();
    let stream = match inner.url.endpoint.connect(settings.connect_timeout).await {
        Ok(stream) => stream,
        Err(error) => return out.fail(Failure::Connect(error)).await,
    };
    let (reader, writer) = tokio::io::split(stream);
    // The body follows the packet as it is: no framing.
    let encode = |dst: &mut BytesMut, data: &[u8]| dst.extend_from_slice(data);
    let mut out = out;
    let progress = Progress::new();
    let timeout = settings.response_timeout;
    let (end, _) = send_request(
        writer,
        head,
        ahead,
        input,
        encode,
        &progress,
        read_response(reader, &mut out, head_request, timeout, &progress),
    )
    .await;
    if let ReadEnd::Failed(failure) = end {
        out.fail(failure).await;
    }
}

/// How the body of a response is delimited.
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Reads the HTTP response: its head, then its body by its framing (the connection closes
/// after it in any case). An interim head (100 Continue, 103 Early Hints) is skipped: the final
/// head follows it. The answer to a HEAD request, a 204 or 304 has no body, whatever its
/// `Content-Length` says.
async fn read_response<R: AsyncRead + Unpin>(
    mut reader: R,
    out: &mut Out,
    head_request: bool,
    timeout: std::time::Duration,
    progress: &Progress,
) -> ReadEnd<R> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut framing: Option<Framing> = None;
    // The head must come whole within the timeout from the request's last progress, however
    // slowly its bytes trickle; after it, the timeout bounds each wait for more of the body.
    loop {
        match &mut framing {
            None => match parse_response_head(&buf) {
                Ok(Some((head, len))) if head.status.is_informational() => {
                    // 101 is no interim answer, but an upgrade, which the contract has not.
                    buf.advance(len);
                    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        return ReadEnd::Failed(Failure::Backend(
                            "uwsgi: 101 Switching Protocols".to_owned(),
                        ));
                    }
                    continue;
                }
                Ok(Some((mut head, len))) => {
                    buf.advance(len);
                    let length = head
                        .headers
                        .get(CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let bodiless = head_request
                        || head.status == http::StatusCode::NO_CONTENT
                        || head.status == http::StatusCode::NOT_MODIFIED;
                    // Transfer-Encoding overrides Content-Length, which must go with it (RFC
                    // 9112 §6.3). Only `chunked` is undone here; a body in another coding
                    // would reach the client without the header that names it
                    // (Transfer-Encoding is hop-by-hop), so it is refused, as nginx refuses it.
                    let encoded = head.headers.contains_key(TRANSFER_ENCODING);
                    if encoded && !bodiless && !only_chunked(&head.headers) {
                        return ReadEnd::Failed(Failure::Backend(
                            "uwsgi: a Transfer-Encoding other than chunked".into(),
                        ));
                    }
                    framing = Some(match (encoded, length) {
                        _ if bodiless => Framing::Length(0),
                        (true, _) => Framing::Chunked(ChunkedDecoder::new()),
                        (false, Some(length)) => Framing::Length(length),
                        (false, None) => Framing::UntilClose,
                    });
                    if encoded {
                        head.headers.remove(CONTENT_LENGTH);
                    }
                    if !out.head(head) {
                        return ReadEnd::ClientGone;
                    }
                    continue;
                }
                Ok(None) if buf.len() > MAX_HEAD => {
                    return ReadEnd::Failed(Failure::Backend(format!(
                        "uwsgi: response head over {MAX_HEAD} bytes"
                    )));
                }
                Ok(None) => {}
                Err(error) => return ReadEnd::Failed(Failure::Backend(format!("uwsgi: {error}"))),
            },
            Some(Framing::Length(left)) => {
                let take = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                if !out.data(buf.split_to(take).freeze()).await {
                    return ReadEnd::ClientGone;
                }
                if *left == 0 {
                    return ReadEnd::Done(None);
                }
            }
            Some(Framing::Chunked(decoder)) => loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(data)) => {
                        if !out.data(data).await {
                            return ReadEnd::ClientGone;
                        }
                    }
                    Ok(None) if decoder.is_done() => return ReadEnd::Done(None),
                    Ok(None) => break,
                    Err(error) => {
                        return ReadEnd::Failed(Failure::Backend(format!("uwsgi body: {error}")));
                    }
                }
            },
            Some(Framing::UntilClose) => {
                if !out.data(buf.split().freeze()).await {
                    return ReadEnd::ClientGone;
                }
            }
        }
        let read = reader.read_buf(&mut buf);
        let read = match framing {
            None => progress.before_head(timeout, read).await,
            Some(_) => tokio::time::timeout(timeout, read).await.ok(),
        };
        match read {
            None => return ReadEnd::Failed(Failure::Timeout(timeout)),
            Some(Ok(0)) => {
                return match framing {
                    Some(Framing::UntilClose) => ReadEnd::Done(None),
                    None => ReadEnd::Failed(Failure::Backend(
                        "uwsgi: the backend closed the connection before a whole response head"
                            .into(),
                    )),
                    Some(_) => ReadEnd::Failed(Failure::Backend(
                        "uwsgi: the backend closed the connection before the end of the body"
                            .into(),
                    )),
                };
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                return ReadEnd::Failed(Failure::Backend(format!("uwsgi: {error}")));
            }
        }
    }
}
