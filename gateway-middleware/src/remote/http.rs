//! Forwarding over HTTP/1.1, on hyper's client connections.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gateway_core::convert::{percent_encode_path, request_from_environ};
use gateway_core::{Environ, Input};
use gateway_servers::cgi::ResponseHead;
use http::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{Request, Response, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::pool::Pool;
use super::{Failure, Inner, Out, Progress, only_chunked, strip_hop_by_hop};
use crate::OriginalPeer;

/// The sending half of a kept-alive connection.
pub(super) type Sender = http1::SendRequest<Upload>;

/// The request body on its way to the backend: the request's input, each poll hyper makes
/// telling the exchange's [`Progress`] (a piece taken, or a wait for the client).
pub(super) struct Upload {
    input: Input,
    progress: Arc<Progress>,
}

impl Upload {
    fn new(input: Input, progress: &Arc<Progress>) -> Upload {
        Upload {
            input,
            progress: Arc::clone(progress),
        }
    }
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        this.progress
            .input(Pin::new(&mut this.input).poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.input.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.input.size_hint()
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub(super) async fn exchange(inner: &Inner, pool: &Pool<Sender>, environ: Environ, mut out: Out) {
    let settings = &inner.settings;
    let progress = Arc::new(Progress::new());
    let idempotent = crate::balancer::is_idempotent(environ.request_method());
    let head_request = environ.request_method() == "HEAD";
    let mut request = match to_request(environ) {
        Ok(request) => request.map(|input| Upload::new(input, &progress)),
        Err(why) => return out.fail(Failure::BadRequest(why)).await,
    };
    // What is needed to send the request again when a kept connection ends under it: only a
    // request whose method may run twice (the backend may have read it before it closed the
    // connection) and whose body is known to be empty (none of it can have been used up).
    let again = (idempotent && request.body().is_end_stream()).then(|| Again::of(&request));
    let mut may_reuse = true;
    let (mut sender, response) = loop {
        let kept = match may_reuse {
            true => reuse(pool).await,
            false => None,
        };
        let (mut sender, fresh) = match kept {
            Some(sender) => (sender, false),
            None => match connect(inner).await {
                Ok(sender) => (sender, true),
                Err(failure) => return out.fail(failure).await,
            },
        };
        match attempt(
            &mut sender,
            request,
            fresh,
            &progress,
            settings.response_timeout,
        )
        .await
        {
            Attempt::Answered(response) => break (sender, response),
            // A kept-alive connection the backend had closed in the meantime: the request goes
            // on another.
            Attempt::GivenBack(unsent) => request = unsent,
            // A kept-alive connection the backend closed just as the request went out: it goes
            // again, once, on a new connection, as nginx gives a cached connection's failure
            // another try.
            Attempt::Lost(failure) => match again.as_ref().filter(|_| may_reuse) {
                Some(again) => {
                    request = again.request(Upload::new(Input::empty(), &progress));
                    may_reuse = false;
                }
                None => return out.fail(failure).await,
            },
            Attempt::Failed(failure) => return out.fail(failure).await,
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut headers = parts.headers;
    // hyper reads a body by its Transfer-Encoding when it has both that and Content-Length,
    // but keeps the length, which the body as the client gets it need not have (the driver
    // would cut it there): it goes, as RFC 9112 §6.3 has a proxy do. hyper undoes only
    // `chunked`: a body in another coding would reach the client without the header that
    // names it (Transfer-Encoding is hop-by-hop), so it is refused, as nginx refuses it.
    let bodiless = head_request
        || parts.status.is_informational()
        || parts.status == http::StatusCode::NO_CONTENT
        || parts.status == http::StatusCode::NOT_MODIFIED;
    if headers.contains_key(TRANSFER_ENCODING) {
        if !bodiless && !only_chunked(&headers) {
            let failure = Failure::Backend("HTTP: a Transfer-Encoding other than chunked".into());
            return out.fail(failure).await;
        }
        headers.remove(CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut headers);
    if !out.head(ResponseHead {
        status: parts.status,
        headers,
    }) {
        return;
    }
    loop {
        match tokio::time::timeout(settings.response_timeout, body.frame()).await {
            Err(_) => return out.fail(Failure::Timeout(settings.response_timeout)).await,
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return out
                    .fail(Failure::Backend(format!("HTTP body: {error}")))
                    .await;
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data()
                    && !out.data(data).await
                {
                    // The client has gone: dropping the unread body closes the connection.
                    return;
                }
            }
        }
    }
    drop(body);
    // Ready at once on a healthy connection; a connection that does not settle is not kept.
    let ready = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await;
    if matches!(ready, Ok(Ok(()))) {
        pool.put(sender);
    }
}

/// How sending a request on a connection ended.
enum Attempt {
    /// The backend's head came.
    Answered(Response<Incoming>),
    /// A kept connection gave the request back unsent: it had closed.
    GivenBack(Request<Upload>),
    /// A kept connection ended before the backend's head, after the request went out: the
    /// backend may have closed it as the request came.
    Lost(Failure),
    /// The exchange fails.
    Failed(Failure),
}

/// Sends `request` on `sender`, a connection just opened (`fresh`) or kept; the backend's head
/// is awaited for `timeout` from the request's last progress (hyper answers once the head
/// arrives, while the body may still be uploading).
async fn attempt(
    sender: &mut Sender,
    request: Request<Upload>,
    fresh: bool,
    progress: &Progress,
    timeout: Duration,
) -> Attempt {
    progress.moved();
    let sent = progress
        .before_head(timeout, sender.try_send_request(request))
        .await;
    let mut error = match sent {
        None => return Attempt::Failed(Failure::Timeout(timeout)),
        Some(Ok(response)) => return Attempt::Answered(response),
        Some(Err(error)) => error,
    };
    let unsent = error.take_message();
    let error = error.into_error();
    match unsent {
        Some(unsent) if !fresh => return Attempt::GivenBack(unsent),
        // A new connection that closed before hyper wrote a byte of the request: the backend
        // never had it, and a balancer may send it elsewhere.
        Some(_) => {
            return Attempt::Failed(Failure::Unsent(format!(
                "HTTP: the connection closed before the request was sent: {error}"
            )));
        }
        None => {}
    }
    // A failure of the request's own (its body's, which is an `io::Error`, or one hyper found
    // in its head): not the backend's doing.
    if error.is_user() {
        let cause = std::error::Error::source(&error);
        return Attempt::Failed(
            match cause.and_then(|c| c.downcast_ref::<std::io::Error>()) {
                Some(input) => Failure::Input(std::io::Error::new(input.kind(), input.to_string())),
                None => Failure::BadRequest(error.to_string()),
            },
        );
    }
    let failure = Failure::Backend(format!("HTTP: {error}"));
    match !fresh && connection_ended(&error) {
        true => Attempt::Lost(failure),
        false => Attempt::Failed(failure),
    }
}

/// Whether `error` is the end of the connection (closed, or reset), not an answer the backend
/// got wrong.
fn connection_ended(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    error.is_incomplete_message() || error.is_canceled()
}

/// A request's head, kept to send the request again with an empty body.
struct Again {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Again {
    fn of<B>(request: &Request<B>) -> Again {
        Again {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        }
    }

    /// The request again, with `body`.
    fn request(&self, body: Upload) -> Request<Upload> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// An idle connection that is still open and ready for a request.
async fn reuse(pool: &Pool<Sender>) -> Option<Sender> {
    while let Some(mut sender) = pool.take(|sender| !sender.is_closed()) {
        let ready = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await;
        if matches!(ready, Ok(Ok(()))) {
            return Some(sender);
        }
    }
    None
}

async fn connect(inner: &Inner) -> Result<Sender, Failure> {
    let stream = inner
        .url
        .endpoint
        .connect(inner.settings.connect_timeout)
        .await
        .map_err(Failure::Connect)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Backend(format!("HTTP handshake: {e}")))?;
    // The connection lives until the backend or the last sender closes it.
    tokio::spawn(connection);
    Ok(sender)
}

/// The request as the backend gets it: the original target, the request's headers but the
/// hop-by-hop ones, and the `X-Forwarded-*` headers.
fn to_request(environ: Environ) -> Result<Request<Input>, String> {
    let target = original_target(&environ);
    // Whether the client may have sent a body of unknown length: chunked, or over HTTP/2
    // (which frames bodies itself), or with a method that takes one (FastCGI without
    // `CONTENT_LENGTH`).
    let chunked = environ.get("HTTP_TRANSFER_ENCODING").is_some()
        || environ.server_protocol().starts_with("HTTP/2")
        || !matches!(
            environ.request_method(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "DELETE"
        );
    // The hop this request came from: behind `ProxyHeaders`, `REMOTE_ADDR` is the client it
    // believed, which `X-Forwarded-For` already names, and the peer is the original one.
    let peer = match environ.extensions().get::<OriginalPeer>() {
        Some(original) => original.remote_addr.clone(),
        None => environ
            .remote_addr()
            .map(|addr| Bytes::copy_from_slice(addr.as_bytes())),
    };
    let scheme = environ.url_scheme().to_string();
    let host = environ
        .get("HTTP_HOST")
        .map(Bytes::copy_from_slice)
        .or_else(|| (!environ.server_name().is_empty()).then(|| host_of(&environ)));
    let mut request = request_from_environ(environ).map_err(|e| e.to_string())?;
    *request.uri_mut() = Uri::from_maybe_shared(target).map_err(|e| e.to_string())?;
    *request.version_mut() = http::Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(peer) = peer {
        let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
            Some(earlier) => {
                let mut value = earlier.as_bytes().to_vec();
                value.extend_from_slice(b", ");
                value.extend_from_slice(&peer);
                HeaderValue::from_bytes(&value)
            }
            None => HeaderValue::from_maybe_shared(peer),
        };
        if let Ok(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&scheme) {
        headers.insert(X_FORWARDED_PROTO, value);
    }
    if let Some(host) = host.and_then(|h| HeaderValue::from_maybe_shared(h).ok()) {
        headers.insert(X_FORWARDED_HOST, host.clone());
        headers.entry(HOST).or_insert(host);
    }
    // hyper sends a body of unknown length chunked, but not for GET and HEAD, whose body it
    // drops then (taking one for a mistake) unless the request says how it is framed. Said
    // so only when the client sent one: a FastCGI web server's GET whose empty stdin has not
    // come yet is no body to send.
    let body = request.body();
    let unframed = !body.is_end_stream() && body.size_hint().exact().is_none();
    if chunked && unframed && !request.headers().contains_key(CONTENT_LENGTH) {
        let chunked = HeaderValue::from_static("chunked");
        request.headers_mut().insert(TRANSFER_ENCODING, chunked);
    }
    Ok(request)
}

/// `REQUEST_URI` when the front end gave it (the raw target, as the client wrote it), else the
/// path made from `SCRIPT_NAME` and `PATH_INFO`, encoded, and the query string.
fn original_target(environ: &Environ) -> Bytes {
    if let Some(uri) = environ.request_uri().filter(|uri| uri.starts_with(b"/")) {
        return Bytes::copy_from_slice(uri);
    }
    let mut target = BytesMut::new();
    let path = environ.path();
    if path.is_empty() {
        target.put_u8(b'/');
    } else {
        percent_encode_path(&path, &mut target);
    }
    if !environ.query_string().is_empty() {
        target.put_u8(b'?');
        target.extend_from_slice(environ.query_string());
    }
    target.freeze()
}

/// `SERVER_NAME[:SERVER_PORT]`, for a request that came without `Host`.
fn host_of(environ: &Environ) -> Bytes {
    let mut host = BytesMut::from(environ.server_name());
    if let Some(port) = environ.server_port() {
        host.extend_from_slice(format!(":{port}").as_bytes());
    }
    host.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_a_backend_gets() {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "POST");
        environ.set("SCRIPT_NAME", "/api");
        environ.set("PATH_INFO", "/a b");
        environ.set("QUERY_STRING", "q=1");
        environ.set("REMOTE_ADDR", "10.0.0.9");
        environ.set("HTTP_HOST", "example.org");
        environ.set("HTTP_X_FORWARDED_FOR", "192.0.2.1");
        environ.set("HTTP_CONNECTION", "keep-alive, x-hop");
        environ.set("HTTP_X_HOP", "1");
        environ.set("HTTP_X_KEPT", "2");
        environ.set("CONTENT_LENGTH", "0");
        let request = to_request(environ).unwrap();
        assert_eq!(request.uri(), "/api/a%20b?q=1");
        let headers = request.headers();
        assert_eq!(headers["host"], "example.org");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.0.0.9");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "example.org");
        assert_eq!(headers["x-kept"], "2");
        assert!(!headers.contains_key("connection"));
        assert!(!headers.contains_key("x-hop"));
    }

    #[tokio::test]
    async fn a_new_connection_that_closed_before_the_request_was_written_leaves_it_unsent() {
        // A backend that accepts a connection and closes it at once; the close has come before
        // the connection is handed to hyper, whose connection task then sees it before it
        // takes the request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        drop(listener.accept().await.unwrap());
        assert_eq!(stream.peek(&mut [0u8; 1]).await.unwrap(), 0, "closed");
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let progress = Arc::new(Progress::new());
        let request = Request::new(Upload::new(Input::empty(), &progress));
        let timeout = Duration::from_secs(10);
        let fresh = true;
        match attempt(&mut sender, request, fresh, &progress, timeout).await {
            Attempt::Failed(failure @ Failure::Unsent(_)) => {
                assert_eq!(failure.status(), http::StatusCode::BAD_GATEWAY);
            }
            Attempt::Failed(other) | Attempt::Lost(other) => panic!("{other:?}"),
            Attempt::Answered(_) | Attempt::GivenBack(_) => panic!("not unsent"),
        }
    }

    #[test]
    fn the_raw_target_is_kept() {
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "GET");
        environ.set("PATH_INFO", "/a/b");
        environ.set("REQUEST_URI", "/a%2Fb?x");
        environ.set("SERVER_NAME", "localhost");
        environ.set("SERVER_PORT", "8080");
        let request = to_request(environ).unwrap();
        assert_eq!(request.uri(), "/a%2Fb?x");
        assert_eq!(request.headers()["host"], "localhost:8080");
    }
}
