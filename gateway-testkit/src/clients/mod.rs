//! Protocol clients, built on this project's codecs, raw enough to send odd requests: HTTP/1.1
//! ([`http`]), FastCGI ([`fastcgi`], every role and management record), uwsgi ([`uwsgi`]) and
//! CGI ([`cgi`], a program spawned with an environment and stdin). They use blocking sockets
//! with timeouts, so a test drives them from any thread, with no runtime.
//!
//! A request is a [`WireRequest`], as a client sends it over HTTP; the FastCGI, uwsgi and CGI
//! clients play the front end and turn it into CGI variables ([`cgi_vars`], as nginx's
//! `fastcgi_params` would). Each answer is a [`Reply`].
//!
//! ```no_run
//! use gateway_testkit::clients::{http, WireRequest};
//!
//! let reply = http::exchange("127.0.0.1:8000", &WireRequest::get("/a%20b?x=1")).unwrap();
//! assert_eq!(reply.status, 200);
//! ```

pub mod cgi;
pub mod fastcgi;
pub mod http;
pub mod uwsgi;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::convert::percent_decode;

/// How long a client waits for a read or a write by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request as a client sends it over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    /// The method, as sent.
    pub method: String,
    /// The request target, raw (`/a%20b?x=1`).
    pub target: Vec<u8>,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'static str,
    /// The headers, in order, as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: WireBody,
}

/// The body of a [`WireRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WireBody {
    /// No body (and no `Content-Length`).
    #[default]
    None,
    /// A body with its `Content-Length`.
    Full(Vec<u8>),
    /// A body of unknown length, in these chunks (`Transfer-Encoding: chunked` over HTTP; over
    /// FastCGI a stdin stream with no `CONTENT_LENGTH`; over uwsgi a raw chunked body).
    Chunked(Vec<Vec<u8>>),
}

impl WireBody {
    /// All its bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            WireBody::None => Vec::new(),
            WireBody::Full(data) => data.clone(),
            WireBody::Chunked(chunks) => chunks.concat(),
        }
    }
}

impl WireRequest {
    /// An HTTP/1.1 request with one header, `Host: localhost`, and no body.
    pub fn new(method: &str, target: impl Into<Vec<u8>>) -> WireRequest {
        WireRequest {
            method: method.to_owned(),
            target: target.into(),
            version: "HTTP/1.1",
            headers: vec![("Host".to_owned(), b"localhost".to_vec())],
            body: WireBody::None,
        }
    }

    /// `GET target`, with `Host: localhost`.
    pub fn get(target: impl Into<Vec<u8>>) -> WireRequest {
        WireRequest::new("GET", target)
    }

    /// `POST target` with a body and its length.
    pub fn post(target: impl Into<Vec<u8>>, body: impl Into<Vec<u8>>) -> WireRequest {
        WireRequest::new("POST", target).body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> WireRequest {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Removes every header of this name.
    pub fn without_header(mut self, name: &str) -> WireRequest {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Sets a body of known length.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> WireRequest {
        self.body = WireBody::Full(body.into());
        self
    }

    /// Sets a body of unknown length, in chunks.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> WireRequest {
        self.body = WireBody::Chunked(chunks);
        self
    }

    /// Uses HTTP/1.0.
    pub fn http10(mut self) -> WireRequest {
        self.version = "HTTP/1.0";
        self
    }

    /// The path part of the target, raw.
    pub fn raw_path(&self) -> &[u8] {
        let end = self
            .target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(self.target.len());
        &self.target[..end]
    }

    /// The query part of the target, raw (empty when there is none).
    pub fn raw_query(&self) -> &[u8] {
        match self.target.iter().position(|&b| b == b'?') {
            Some(at) => &self.target[at + 1..],
            None => b"",
        }
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The final status.
    pub status: u16,
    /// The interim (1xx) statuses seen before it.
    pub interim: Vec<u16>,
    /// The headers, names in lower case, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// The first line of the head as sent (`HTTP/1.1 200 OK`, `Status: 200 OK`, or the first
    /// header line when there is no status line).
    pub first_line: String,
}

impl Reply {
    /// The last value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The body as JSON (the echo app's answer).
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let shown =
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
            format!("the body is not JSON ({e}): {shown:?}")
        })
    }
}

/// Where a server listens: `host:port` or `unix:/path`.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix socket.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `host:port` or `unix:/path`, with [`DEFAULT_TIMEOUT`] for reads and writes.
    pub fn connect(address: &str) -> io::Result<Stream> {
        let stream = match address.strip_prefix("unix:") {
            Some(path) => Stream::Unix(UnixStream::connect(path)?),
            None => {
                let stream = TcpStream::connect(address)?;
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
        };
        stream.set_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(stream)
    }

    /// Sets the read and write timeouts.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }

    /// Waits up to `wait` for the peer to close the connection: true if it did (a read gave
    /// the end of the stream or an error), false if it stayed open or sent more bytes (kept in
    /// `buf` for the next read).
    pub fn closed_within(&mut self, buf: &mut bytes::BytesMut, wait: Duration) -> bool {
        if !buf.is_empty() {
            return false;
        }
        let _ = self.set_timeout(Some(wait));
        let mut byte = [0u8; 1];
        let closed = match self.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => {
                buf.extend_from_slice(&byte);
                false
            }
            Err(error) => !matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.set_timeout(Some(DEFAULT_TIMEOUT));
        closed
    }

    /// Closes the writing half (the server reads end of input).
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// What a front end tells the app about itself and the connection, for [`cgi_vars`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontEnd {
    /// `SERVER_NAME` when the request has no `Host`.
    pub server_name: String,
    /// `SERVER_PORT`.
    pub server_port: u16,
    /// `REMOTE_ADDR`.
    pub remote_addr: String,
    /// `REMOTE_PORT`.
    pub remote_port: u16,
    /// `SCRIPT_NAME`: the mount point of the app (the rest of the path is `PATH_INFO`).
    pub script_name: String,
}

impl Default for FrontEnd {
    fn default() -> Self {
        FrontEnd {
            server_name: "localhost".to_owned(),
            server_port: 80,
            remote_addr: "127.0.0.1".to_owned(),
            remote_port: 40000,
            script_name: String::new(),
        }
    }
}

/// The CGI variables a front end sends for `request` (as nginx's `fastcgi_params` does):
/// `REQUEST_URI` raw, `PATH_INFO` percent-decoded (minus the `SCRIPT_NAME` prefix),
/// `QUERY_STRING` raw, `SERVER_NAME` from the `Host` header (else `front.server_name`),
/// `CONTENT_TYPE` from its header, `CONTENT_LENGTH` the length of a [`WireBody::Full`] body
/// (none for the other bodies: a `Content-Length` header of the request is ignored), every
/// other header as `HTTP_*` (repeated ones joined by `", "`, `Cookie` by `"; "`; names with
/// `_` dropped, as nginx does by default).
pub fn cgi_vars(request: &WireRequest, front: &FrontEnd) -> Vec<(Bytes, Bytes)> {
    let mut vars: Vec<(Bytes, Bytes)> = Vec::new();
    let mut set = |name: &str, value: &[u8]| {
        vars.push((
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(value),
        ));
    };
    let path = percent_decode(request.raw_path());
    let script = front.script_name.as_bytes();
    let path_info = path.strip_prefix(script).unwrap_or(&path);
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set("SERVER_SOFTWARE", b"gateway-conformance");
    set("REQUEST_METHOD", request.method.as_bytes());
    set("REQUEST_URI", &request.target);
    set("SCRIPT_NAME", script);
    set("PATH_INFO", path_info);
    set("QUERY_STRING", request.raw_query());
    set("SERVER_PROTOCOL", request.version.as_bytes());
    set("REQUEST_SCHEME", b"http");
    set("REMOTE_ADDR", front.remote_addr.as_bytes());
    set("REMOTE_PORT", front.remote_port.to_string().as_bytes());
    set("SERVER_PORT", front.server_port.to_string().as_bytes());
    let host = request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    let server_name = match &host {
        Some(host) => gateway_core::convert::split_host(host).0.to_vec(),
        None => front.server_name.as_bytes().to_vec(),
    };
    set("SERVER_NAME", &server_name);
    match &request.body {
        WireBody::Full(data) => set("CONTENT_LENGTH", data.len().to_string().as_bytes()),
        WireBody::None | WireBody::Chunked(_) => {}
    }
    let mut joined: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in &request.headers {
        if name.contains('_') || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let var = if name.eq_ignore_ascii_case("content-type") {
            "CONTENT_TYPE".to_owned()
        } else {
            format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"))
        };
        match joined.iter_mut().find(|(n, _)| *n == var) {
            Some((_, earlier)) => {
                earlier.extend_from_slice(if var == "HTTP_COOKIE" { b"; " } else { b", " });
                earlier.extend_from_slice(value);
            }
            None => joined.push((var, value.clone())),
        }
    }
    for (name, value) in joined {
        set(&name, &value);
    }
    vars
}

/// The head of a response, read from `buf` (filled from `reader` as needed): an HTTP status
/// line or CGI-style headers. The bytes after the head stay in `buf`.
fn read_head<R: Read>(
    reader: &mut R,
    buf: &mut bytes::BytesMut,
) -> io::Result<(gateway_servers::cgi::ResponseHead, String)> {
    loop {
        match gateway_servers::cgi::parse_response_head(buf) {
            Ok(Some((head, len))) => {
                let first = buf[..len]
                    .split(|&b| b == b'\n')
                    .next()
                    .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
                    .unwrap_or_default();
                let _ = buf.split_to(len);
                return Ok((head, first));
            }
            Ok(None) => {}
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a head over 1 MiB",
            ));
        }
        if fill(reader, buf)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed before a whole response head ({} bytes)", buf.len()),
            ));
        }
    }
}

/// Reads more bytes into `buf`: how many (0 at the end).
fn fill<R: Read>(reader: &mut R, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = reader.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn headers_of(head: &gateway_servers::cgi::ResponseHead) -> Vec<(String, Vec<u8>)> {
    head.headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Reads one whole response (interim 1xx answers first) from `reader`: the body by its framing
/// (none for HEAD, 1xx, 204 and 304; chunked; `Content-Length`; or to the end of the stream).
fn read_reply<R: Read>(
    reader: &mut R,
    buf: &mut bytes::BytesMut,
    head_request: bool,
) -> io::Result<Reply> {
    let mut interim = Vec::new();
    let (head, first_line) = loop {
        let (head, first) = read_head(reader, buf)?;
        if head.status.is_informational() && head.status != 101 {
            interim.push(head.status.as_u16());
            continue;
        }
        break (head, first);
    };
    let status = head.status.as_u16();
    let headers = headers_of(&head);
    let mut reply = Reply {
        status,
        interim,
        headers,
        body: Vec::new(),
        chunked: false,
        first_line,
    };
    if head_request || status == 204 || status == 304 || head.status.is_informational() {
        return Ok(reply);
    }
    let chunked = reply
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        reply.chunked = true;
        let mut decoder = gateway_servers::uwsgi::codec::ChunkedDecoder::new();
        loop {
            match decoder.decode(buf) {
                Ok(Some(data)) => reply.body.extend_from_slice(&data),
                Ok(None) if decoder.is_done() => return Ok(reply),
                Ok(None) => {
                    if fill(reader, buf)? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "closed inside a chunked body",
                        ));
                    }
                }
                Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
            }
        }
    }
    if let Some(length) = reply.header("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a bad Content-Length"))?;
        while buf.len() < length {
            if fill(reader, buf)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed after {} of {length} body bytes", buf.len()),
                ));
            }
        }
        reply.body = buf.split_to(length).to_vec();
        return Ok(reply);
    }
    while fill(reader, buf)? > 0 {}
    reply.body = buf.split().to_vec();
    Ok(reply)
}
