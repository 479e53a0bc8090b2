//! CGI (RFC 3875): one request per process. The request is the process environment and stdin;
//! the response goes to stdout as a `Status:` line, headers, a blank line and the body;
//! `wsgi.errors` goes to stderr (the web server's error log).
//!
//! No async runtime is started: the app runs on the main thread through the
//! [driver], and each body frame is written and flushed as it comes (so
//! streaming works behind servers that pass CGI output through). A script whose name starts
//! with `nph-` answers with a whole HTTP response (a status line matching `SERVER_PROTOCOL`,
//! `Date`, `Server`, `Connection: close`), as non-parsed-header scripts must.
//!
//! A program that serves CGI starts once per request: build it static and not
//! position-independent (`RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static"`
//! with `--target`), and its start-up costs about what a C program's does, with no loader work
//! and no relocations (the deployment guide, `docs/guide/03-deploying.md`, has the numbers).
//!
//! [`run`] is the whole adapter; the pieces it is made of work on any variables, reader and
//! writer, so a test drives them without a process:
//!
//! - [`environ_from_cgi`]: the environ of a request, from its meta-variables and its stdin;
//! - [`nph_protocol`]: whether the script is a non-parsed-header one;
//! - [`write_head`] and [`write_response`]: the response, to any [`io::Write`].
//!
//! ```no_run
//! use gateway_core::{Body, Environ, StartResponse};
//!
//! fn main() -> std::process::ExitCode {
//!     gateway_servers::cgi::run(|_: Environ, start: StartResponse| {
//!         let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!         Body::from("hello from CGI\n")
//!     })
//! }
//! ```
//!
//! The same request, in-process:
//!
//! ```
//! use bytes::Bytes;
//! use gateway_core::{driver, Body, Environ, StartResponse};
//! use gateway_servers::cgi;
//!
//! let app = |_: Environ, start: StartResponse| {
//!     let _ = start.start(http::StatusCode::OK, http::HeaderMap::new());
//!     Body::from("hello from CGI\n")
//! };
//! let vars = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/cgi-bin/hello")];
//! let vars = vars.map(|(n, v)| (Bytes::from(n), Bytes::from(v)));
//! let environ = cgi::environ_from_cgi(vars, std::io::empty());
//! let nph = cgi::nph_protocol(&environ, None);
//! let response = gateway_core::block_on(driver::call(&app, environ));
//! let mut stdout = Vec::new();
//! cgi::write_response(&mut stdout, response, nph).unwrap();
//! assert_eq!(stdout, b"Status: 200 OK\r\ncontent-length: 15\r\n\r\nhello from CGI\n");
//! ```

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::SystemTime;

use bytes::Bytes;
use gateway_core::driver::ResponseBody;
use gateway_core::{App, Environ, ErrorStream, Input, driver};
use http::{HeaderMap, Response, StatusCode};
use http_body::Body as _;

use crate::params::{BodyFraming, body_framing, bound_input, framed_environ_from_params};

/// The size of the buffer in front of stdout: a response whose head and body fit in it leaves
/// the process in one `write`.
pub const OUTPUT_BUFFER_SIZE: usize = 16 * 1024;

/// The prefix of the name of a non-parsed-header script (RFC 3875 §5, Apache's convention).
pub const NPH_PREFIX: &[u8] = b"nph-";

/// Runs `app` for the request of this CGI process and writes its response to stdout.
///
/// Exits 0 when the response was written whole (a 500 the driver made for an app that failed
/// before its head included), 1 when the app failed after its head (the response is cut short
/// and the web server sees the process fail) or stdout failed. Either failure is logged to
/// stderr.
pub fn run<A: App>(app: A) -> ExitCode {
    let vars = std::env::vars_os().map(|(name, value)| {
        (
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        )
    });
    let environ = environ_from_cgi(vars, io::stdin());
    let argv0 = std::env::args_os().next();
    let nph = nph_protocol(&environ, argv0.as_ref().map(|a| a.as_bytes()));
    let response = if body_framing(&environ) == BodyFraming::Invalid {
        let _ = writeln!(
            io::stderr(),
            "gateway: invalid CONTENT_LENGTH {:?}: 400",
            String::from_utf8_lossy(environ.get("CONTENT_LENGTH").unwrap_or_default())
        );
        gateway_core::block_on(driver::call(&bad_request, environ))
    } else {
        let response = gateway_core::block_on(driver::call(&app, environ));
        match driver::failure(&response) {
            // stdin ended before CONTENT_LENGTH (the web server closes it when its client goes
            // away): the app failed on the client's doing, 400 (CGI has no body limits to
            // note, so that is the only answer `failure_status` can give here).
            Some(failure) if driver::failure_status(failure, None).is_some() => {
                let mut answer = gateway_core::block_on(driver::call(&bad_request, Environ::new()));
                driver::keep_failure_headers(&response, answer.headers_mut());
                answer
            }
            _ => response,
        }
    };
    let stdout = io::BufWriter::with_capacity(OUTPUT_BUFFER_SIZE, io::stdout().lock());
    match write_response(stdout, response, nph) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The driver already logged a failure of the app; an output error is ours to log.
            if !is_app_failure(&error) {
                let _ = writeln!(io::stderr(), "gateway: CGI response failed: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The answer to a request whose body cannot be delimited, or ended before its length.
fn bad_request(_: Environ, start: gateway_core::StartResponse) -> gateway_core::Body {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match start.start(http::StatusCode::BAD_REQUEST, headers) {
        Ok(_) => gateway_core::Body::from("400 Bad Request\n"),
        Err(error) => gateway_core::Body::error(error),
    }
}

/// Builds the environ of a CGI request from its meta-variables and its stdin.
///
/// - the variables are normalised as every front end's are
///   ([`environ_from_params`](crate::params::environ_from_params)): empty
///   `CONTENT_LENGTH`/`CONTENT_TYPE` (nginx) removed, `HTTP_CONTENT_LENGTH`/`HTTP_CONTENT_TYPE`
///   and `HTTP_PROXY` (httpoxy) dropped, any other empty variable left out unless it may be
///   empty ([`Environ::may_be_empty`]: Apache and lighttpd may set `REMOTE_USER`, `AUTH_TYPE`
///   or `PATH_TRANSLATED` empty, and the process environment may hold empty variables of its
///   own), `QUERY_STRING` always present, `HTTPS=on` making the scheme `https`; the others,
///   `REQUEST_URI` included, are kept as the server gave them;
/// - the input is `stdin` bounded by `CONTENT_LENGTH`, or read to its end when the request was
///   chunked and the server sent no length (Apache's mod_cgid), or empty; `input_terminated`
///   is set;
/// - the variables every environ has but a CGI environment may lack get a value:
///   `SERVER_NAME` (nginx sends it empty when its server block has no `server_name`) from the
///   `Host` header, else `SERVER_ADDR`, else `localhost`; `SERVER_PORT` from the `Host` header,
///   else the scheme's; and, for a script run by hand, `REQUEST_METHOD` (`GET`) and
///   `SERVER_PROTOCOL` (`HTTP/1.0`);
/// - `wsgi.errors` goes to stderr;
/// - `run_once` and `multiprocess` are set (each request is a process of its own, and the web
///   server runs several at once), `multithread` is not.
///
/// ```
/// use bytes::Bytes;
/// use std::io::Read;
///
/// let vars = [
///     ("REQUEST_METHOD", "POST"),
///     ("CONTENT_LENGTH", "5"),
///     ("HTTP_PROXY", "http://evil.example"),
///     ("HTTPS", "on"),
///     ("REMOTE_USER", ""),
/// ];
/// let vars = vars.map(|(n, v)| (Bytes::from(n), Bytes::from(v)));
/// let mut environ = gateway_servers::cgi::environ_from_cgi(vars, &b"hello, and more"[..]);
/// assert!(!environ.contains("REMOTE_USER")); // empty: no authentication
/// let mut body = String::new();
/// environ.input().read_to_string(&mut body).unwrap();
/// assert_eq!(body, "hello"); // CONTENT_LENGTH bytes, not one more
/// assert!(!environ.contains("HTTP_PROXY"));
/// assert_eq!(environ.query_string(), b"");
/// assert_eq!(environ.url_scheme(), gateway_core::UrlScheme::Https);
/// assert!(environ.run_once() && environ.input_terminated() && !environ.multithread());
/// ```
pub fn environ_from_cgi(
    vars: impl IntoIterator<Item = (Bytes, Bytes)>,
    stdin: impl io::Read + Send + 'static,
) -> Environ {
    let (mut environ, framing) = framed_environ_from_params(vars);
    environ.set_input(bound_input(Input::from_reader(stdin), framing));
    environ.set_errors(ErrorStream::stderr());
    environ.set_run_once(true);
    environ.set_multiprocess(true);
    environ.set_multithread(false);
    environ
}

/// The protocol of the status line to write if the script is a non-parsed-header one, `None`
/// if it is an ordinary one.
///
/// The script's name is the last segment of `SCRIPT_FILENAME` (what Apache looks at), else of
/// `SCRIPT_NAME`, else of `argv0` (the program's `argv[0]`); the script is an NPH one when that
/// name starts with [`NPH_PREFIX`]. The protocol is `HTTP/1.0` for an `HTTP/1.0` request and
/// `HTTP/1.1` otherwise.
///
/// ```
/// use bytes::Bytes;
/// use gateway_servers::cgi::{environ_from_cgi, nph_protocol};
///
/// let environ = |vars: &[(&'static str, &'static str)]| {
///     let vars = vars.iter().map(|&(n, v)| (Bytes::from(n), Bytes::from(v)));
///     environ_from_cgi(vars, std::io::empty())
/// };
/// let nph = environ(&[
///     ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/nph-echo"),
///     ("SERVER_PROTOCOL", "HTTP/1.0"),
/// ]);
/// assert_eq!(nph_protocol(&nph, None), Some("HTTP/1.0"));
/// let plain = environ(&[("SCRIPT_NAME", "/cgi-bin/echo")]);
/// assert_eq!(nph_protocol(&plain, Some(b"/srv/nph-echo")), None); // SCRIPT_NAME decides
/// let by_hand = environ(&[("SERVER_PROTOCOL", "HTTP/1.1")]);
/// assert_eq!(nph_protocol(&by_hand, Some(b"./nph-echo")), Some("HTTP/1.1"));
/// ```
pub fn nph_protocol(environ: &Environ, argv0: Option<&[u8]>) -> Option<&'static str> {
    let script = environ
        .get("SCRIPT_FILENAME")
        .filter(|s| !s.is_empty())
        .or(environ.get("SCRIPT_NAME").filter(|s| !s.is_empty()))
        .or(argv0)?;
    let name = script.rsplit(|&b| b == b'/').next().unwrap_or(script);
    if !name.starts_with(NPH_PREFIX) {
        return None;
    }
    Some(match environ.server_protocol() {
        "HTTP/1.0" => "HTTP/1.0",
        _ => "HTTP/1.1",
    })
}

/// Writes the head of a response: `Status: NNN Reason` and the headers, CRLF-terminated, or
/// with `nph` a status line of that protocol and the headers a whole HTTP response needs (a
/// `Date` and a `Server` unless the app gave them, and `Connection: close`: an NPH script must
/// not promise the connection's reuse).
///
/// ```
/// use http::{HeaderMap, HeaderValue, StatusCode};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("content-type", HeaderValue::from_static("text/plain"));
/// let mut out = Vec::new();
/// gateway_servers::cgi::write_head(&mut out, StatusCode::NOT_FOUND, &headers, None).unwrap();
/// assert_eq!(out, b"Status: 404 Not Found\r\ncontent-type: text/plain\r\n\r\n");
///
/// let mut out = Vec::new();
/// gateway_servers::cgi::write_head(&mut out, StatusCode::OK, &headers, Some("HTTP/1.1")).unwrap();
/// let head = String::from_utf8(out).unwrap();
/// assert!(head.starts_with("HTTP/1.1 200 OK\r\nDate: "));
/// assert!(head.ends_with("Connection: close\r\ncontent-type: text/plain\r\n\r\n"));
/// ```
pub fn write_head(
    out: &mut impl Write,
    status: StatusCode,
    headers: &HeaderMap,
    nph: Option<&str>,
) -> io::Result<()> {
    match nph {
        Some(protocol) => {
            write_status_line(out, protocol, status)?;
            if !headers.contains_key(http::header::DATE) {
                out.write_all(b"Date: ")?;
                with_http_date(|date| out.write_all(date))?;
                out.write_all(b"\r\n")?;
            }
            if !headers.contains_key(http::header::SERVER) {
                out.write_all(
                    concat!("Server: gateway/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
                )?;
            }
            out.write_all(b"Connection: close\r\n")?;
        }
        None => {
            out.write_all(b"Status: ")?;
            write_status(out, status)?;
        }
    }
    write_fields(out, headers)
}

/// Writes a status line, `PROTOCOL NNN Reason`, CRLF-terminated.
pub(crate) fn write_status_line(
    out: &mut impl Write,
    protocol: &str,
    status: StatusCode,
) -> io::Result<()> {
    out.write_all(protocol.as_bytes())?;
    out.write_all(b" ")?;
    write_status(out, status)
}

/// `NNN Reason`, CRLF-terminated.
fn write_status(out: &mut impl Write, status: StatusCode) -> io::Result<()> {
    out.write_all(status.as_str().as_bytes())?;
    out.write_all(b" ")?;
    out.write_all(status.canonical_reason().unwrap_or("Unknown").as_bytes())?;
    out.write_all(b"\r\n")
}

/// Writes each header as `name: value`, CRLF-terminated, then the empty line that ends a head.
pub(crate) fn write_fields(out: &mut impl Write, headers: &HeaderMap) -> io::Result<()> {
    for (name, value) in headers {
        out.write_all(name.as_str().as_bytes())?;
        out.write_all(b": ")?;
        out.write_all(value.as_bytes())?;
        out.write_all(b"\r\n")?;
    }
    out.write_all(b"\r\n")
}

/// Calls `f` with the current time as an HTTP date (`Tue, 01 Dec 2026 15:04:05 GMT`), formatted
/// once a second per thread rather than for every response.
fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    /// The second last formatted, and its date.
    struct Cached {
        second: u64,
        date: [u8; 29],
    }
    thread_local! {
        static CACHED: std::cell::RefCell<Cached> = const {
            std::cell::RefCell::new(Cached { second: u64::MAX, date: [0; 29] })
        };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.second != second {
            let date = httpdate::fmt_http_date(now);
            if let Ok(date) = <[u8; 29]>::try_from(date.as_bytes()) {
                *cached = Cached { second, date };
            } else {
                // Years past 9999 are longer; not cached.
                return f(date.as_bytes());
            }
        }
        f(&cached.date)
    })
}

/// Writes a response made by the [driver] to `out`: the head (see
/// [`write_head`]), then each body frame, `out` flushed after each one (and at the end), so a
/// streaming body reaches the web server as it is produced while a whole one leaves in a
/// single write. Trailers have no place in CGI and are dropped.
///
/// Fails when `out` fails, or when the app fails after its head (the response is then cut
/// short; the error wraps the app's [`gateway_core::Error`], which the driver has logged).
///
/// ```
/// use gateway_core::{driver, Body, Environ, StartResponse};
/// use http::{HeaderMap, StatusCode};
///
/// let app = |_: Environ, start: StartResponse| {
///     let _ = start.start(StatusCode::OK, HeaderMap::new());
///     Body::from_chunks(["one ", "two"])
/// };
/// let response = gateway_core::block_on(driver::call(&app, Environ::new()));
/// let mut out = Vec::new();
/// gateway_servers::cgi::write_response(&mut out, response, None).unwrap();
/// assert_eq!(out, b"Status: 200 OK\r\n\r\none two"); // streamed: no Content-Length
/// ```
pub fn write_response(
    mut out: impl Write,
    response: Response<ResponseBody>,
    nph: Option<&str>,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    write_head(&mut out, parts.status, &parts.headers, nph)?;
    // No flush here: the driver decided the head on the body's first chunk (or its end), so the
    // first poll below does not wait, and the head leaves with that chunk.
    loop {
        let frame = gateway_core::block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        }));
        match frame {
            None => return out.flush(),
            Some(Err(error)) => {
                // What was written stays written: the web server sees a cut response.
                let _ = out.flush();
                return Err(io::Error::other(error));
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.write_all(data)?;
                    out.flush()?;
                }
            }
        }
    }
}

/// Whether an error of [`write_response`] is the app's failure after its head (rather than the
/// output's).
fn is_app_failure(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<gateway_core::Error>())
}

/// The most header lines [`parse_response_head`] takes in one head.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// A response head read back by [`parse_response_head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status: from an HTTP status line, a `Status:` header, or 302 for a bare `Location`,
    /// else 200 (RFC 3875 §6.3).
    pub status: StatusCode,
    /// The headers, `Status` removed.
    pub headers: HeaderMap,
}

/// Why bytes are not a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// A line is not a header, or a status is not a three-digit code.
    Malformed,
    /// More than [`MAX_RESPONSE_HEADERS`] header lines.
    TooManyHeaders,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Malformed => f.write_str("malformed response head"),
            HeadError::TooManyHeaders => write!(
                f,
                "response head with more than {MAX_RESPONSE_HEADERS} header lines"
            ),
        }
    }
}

impl std::error::Error for HeadError {}

/// Reads the head of a response as an application writes it: CGI style (headers, `Status:` for
/// the status, as FastCGI responders and CGI scripts do) or with an HTTP status line (as uwsgi
/// applications and non-parsed-header scripts do); lines may end in CRLF or a bare LF.
///
/// `Ok(None)`: `src` does not yet hold the blank line that ends the head. `Ok(Some((head,
/// len)))`: the head took the first `len` bytes; the body follows. This is the client side of
/// [`write_head`], used by the remote backends and the protocol clients.
///
/// ```
/// use gateway_servers::cgi::parse_response_head;
///
/// let (head, len) = parse_response_head(b"Status: 404 Gone\nX-A: 1\n\nbody").unwrap().unwrap();
/// assert_eq!((head.status.as_u16(), head.headers["x-a"].to_str().unwrap(), len), (404, "1", 25));
/// let (head, _) = parse_response_head(b"HTTP/1.1 201 Created\r\n\r\n").unwrap().unwrap();
/// assert_eq!(head.status, 201);
/// assert_eq!(parse_response_head(b"Content-Type: text/plain\r\n").unwrap(), None);
/// ```
pub fn parse_response_head(src: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let map_error = |error| match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        _ => HeadError::Malformed,
    };
    let (mut status, len, parsed) = if src.starts_with(b"HTTP/") {
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(src).map_err(map_error)? {
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(len) => {
                let code = response.code.ok_or(HeadError::Malformed)?;
                let status = StatusCode::from_u16(code).map_err(|_| HeadError::Malformed)?;
                (Some(status), len, &*response.headers)
            }
        }
    } else {
        // A head with no header at all is just the blank line.
        if src.starts_with(b"\r\n") || src.starts_with(b"\n") {
            let len = if src[0] == b'\r' { 2 } else { 1 };
            return Ok(Some((
                ResponseHead {
                    status: StatusCode::OK,
                    headers: HeaderMap::new(),
                },
                len,
            )));
        }
        match httparse::parse_headers(src, &mut slots).map_err(map_error)? {
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete((len, headers)) => (None, len, headers),
        }
    };
    let mut headers = HeaderMap::with_capacity(parsed.len());
    for header in parsed {
        if status.is_none() && header.name.eq_ignore_ascii_case("status") {
            let code = header.value.get(..3).ok_or(HeadError::Malformed)?;
            let is_code = header.value.get(3).is_none_or(|&b| b == b' ');
            if !is_code {
                return Err(HeadError::Malformed);
            }
            status = Some(StatusCode::from_bytes(code).map_err(|_| HeadError::Malformed)?);
            continue;
        }
        let name = http::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HeadError::Malformed)?;
        let value =
            http::HeaderValue::from_bytes(header.value).map_err(|_| HeadError::Malformed)?;
        headers.append(name, value);
    }
    let status = status.unwrap_or(if headers.contains_key(http::header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok(Some((ResponseHead { status, headers }, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_date_is_the_current_one() {
        for _ in 0..3 {
            let date = with_http_date(|date| String::from_utf8(date.to_vec()).unwrap());
            let parsed = httpdate::parse_http_date(&date).unwrap();
            let now = SystemTime::now();
            let behind = now.duration_since(parsed).unwrap();
            assert!(
                behind < std::time::Duration::from_secs(2),
                "{date} at {now:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(600));
        }
    }

    #[test]
    fn response_heads_by_table() {
        // (input, Some((status, header count, head length)) or None for "wait for more").
        type Case = (&'static [u8], Option<(u16, usize, usize)>);
        let cases: &[Case] = &[
            (b"\r\n", Some((200, 0, 2))),
            (b"\n", Some((200, 0, 1))),
            (b"Content-Type: a\r\n\r\n", Some((200, 1, 19))),
            (b"Location: /x\n\n", Some((302, 1, 14))),
            (b"Status: 301\r\nLocation: /x\r\n\r\n", Some((301, 1, 29))),
            (b"status: 204 No Content\r\n\r\n", Some((204, 0, 26))),
            (
                b"HTTP/1.0 503 Busy\r\nA: b\r\nA: c\r\n\r\n",
                Some((503, 2, 33)),
            ),
            (b"Content-Type: a\r\n", None),
            (b"HTTP/1.1 200", None),
            (b"", None),
        ];
        for &(input, expected) in cases {
            let got = parse_response_head(input)
                .unwrap()
                .map(|(head, len)| (head.status.as_u16(), head.headers.len(), len));
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
        }
        for bad in [
            &b"Status: abc\r\n\r\n"[..],
            b"Status: 2000\r\n\r\n",
            b"no colon here\r\n\r\n",
            b"HTTP/1.1 99x\r\n\r\n",
        ] {
            assert_eq!(
                parse_response_head(bad),
                Err(HeadError::Malformed),
                "{bad:?}"
            );
        }
        let many: Vec<u8> = (0..=MAX_RESPONSE_HEADERS)
            .flat_map(|i| format!("X-{i}: v\r\n").into_bytes())
            .chain(*b"\r\n")
            .collect();
        assert_eq!(parse_response_head(&many), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn every_prefix_of_a_head_waits_for_more() {
        let head = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nbody";
        let end = head.len() - 4;
        for cut in 0..end {
            assert_eq!(parse_response_head(&head[..cut]), Ok(None), "cut at {cut}");
        }
        let (parsed, len) = parse_response_head(head).unwrap().unwrap();
        assert_eq!(
            (parsed.status.as_u16(), parsed.headers.len(), len),
            (404, 2, end)
        );
    }

    #[test]
    fn write_head_reads_back() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", "a=1".parse().unwrap());
        headers.append("set-cookie", "b=2".parse().unwrap());
        for nph in [None, Some("HTTP/1.1")] {
            let mut out = Vec::new();
            write_head(&mut out, StatusCode::IM_A_TEAPOT, &headers, nph).unwrap();
            let (head, len) = parse_response_head(&out).unwrap().unwrap();
            assert_eq!((head.status, len), (StatusCode::IM_A_TEAPOT, out.len()));
            let cookies: Vec<_> = head.headers.get_all("set-cookie").iter().collect();
            assert_eq!(cookies, ["a=1", "b=2"]);
        }
    }
}
