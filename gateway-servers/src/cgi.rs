//! CGI (RFC 3875): one request per process. The request is the process environment and stdin;
//! the response goes to stdout as a `Status:` line, headers, a blank line and the body;
//! `wsgi.errors` goes to stderr (the web server's error log).
//!
//! No async runtime is started: the app runs on the main thread through the driver, and each
//! body frame is written and flushed as it comes (so streaming works behind servers that pass
//! CGI output through). A script whose name starts with `nph-` answers with a whole HTTP
//! response (a status line matching `SERVER_PROTOCOL`, `Date`, `Server`, `Connection: close`),
//! as non-parsed-header scripts must.
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

use crate::params::{body_framing, bound_input, environ_from_params};

/// Runs `app` for the request of this CGI process and writes its response to stdout. Exits 0
/// when the response was written whole, 1 when the app failed after its head or stdout failed.
pub fn run<A: App>(app: A) -> ExitCode {
    let vars = std::env::vars_os().map(|(name, value)| {
        (
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        )
    });
    let environ = environ_from_cgi(vars, io::stdin());
    let nph = nph_protocol(&environ);
    let response = gateway_core::block_on(driver::call(&app, environ));
    let stdout = io::stdout().lock();
    match write_response(
        io::BufWriter::with_capacity(16 * 1024, stdout),
        response,
        nph.as_deref(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(io::stderr(), "gateway: CGI response failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the environ of a CGI request from its variables and its stdin: the variables
/// normalised (see [`environ_from_params`]), the body bounded by `CONTENT_LENGTH` or read to its
/// end when a chunked request came without one, `wsgi.errors` to stderr, `run_once` and
/// `multiprocess` set.
pub fn environ_from_cgi(
    vars: impl IntoIterator<Item = (Bytes, Bytes)>,
    stdin: impl io::Read + Send + 'static,
) -> Environ {
    let mut environ = environ_from_params(vars);
    let framing = body_framing(&environ);
    environ.set_input(bound_input(Input::from_reader(stdin), framing));
    environ.set_errors(ErrorStream::stderr());
    environ.set_run_once(true);
    environ.set_multiprocess(true);
    environ.set_multithread(false);
    environ
}

/// The protocol of the status line if the script is a non-parsed-header one (its name, from
/// `SCRIPT_FILENAME` or `SCRIPT_NAME`, starts with `nph-`).
pub fn nph_protocol(environ: &Environ) -> Option<String> {
    let script = environ
        .get("SCRIPT_FILENAME")
        .or(environ.get("SCRIPT_NAME"))?;
    let name = script.rsplit(|&b| b == b'/').next().unwrap_or(script);
    if !name.starts_with(b"nph-") {
        return None;
    }
    Some(match environ.server_protocol() {
        "HTTP/1.0" => "HTTP/1.0".to_owned(),
        _ => "HTTP/1.1".to_owned(),
    })
}

/// Writes the head of a response: `Status: NNN Reason` and the headers, CRLF-terminated, or
/// with `nph` a status line of that protocol and the headers a whole HTTP response needs.
pub fn write_head(
    out: &mut impl Write,
    status: StatusCode,
    headers: &HeaderMap,
    nph: Option<&str>,
) -> io::Result<()> {
    let reason = status.canonical_reason().unwrap_or("Unknown");
    match nph {
        Some(protocol) => {
            write!(out, "{protocol} {} {reason}\r\n", status.as_u16())?;
            if !headers.contains_key(http::header::DATE) {
                write!(
                    out,
                    "Date: {}\r\n",
                    httpdate::fmt_http_date(SystemTime::now())
                )?;
            }
            if !headers.contains_key(http::header::SERVER) {
                write!(out, "Server: gateway/{}\r\n", env!("CARGO_PKG_VERSION"))?;
            }
            out.write_all(b"Connection: close\r\n")?;
        }
        None => write!(out, "Status: {} {reason}\r\n", status.as_u16())?,
    }
    for (name, value) in headers {
        out.write_all(name.as_str().as_bytes())?;
        out.write_all(b": ")?;
        out.write_all(value.as_bytes())?;
        out.write_all(b"\r\n")?;
    }
    out.write_all(b"\r\n")
}

/// Writes a response to `out`: the head, then each body frame, flushed as it comes. Fails when
/// the app fails after its head (the response is cut short) or `out` fails.
pub fn write_response(
    mut out: impl Write,
    response: Response<ResponseBody>,
    nph: Option<&str>,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    write_head(&mut out, parts.status, &parts.headers, nph)?;
    out.flush()?;
    loop {
        let frame = gateway_core::block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        }));
        match frame {
            None => return out.flush(),
            Some(Err(error)) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::{Body, StartResponse};
    use http::header::{CONTENT_TYPE, HeaderValue};
    use std::io::Read;

    fn vars(pairs: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::from_static(n.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                )
            })
            .collect()
    }

    fn respond(
        app: impl App,
        pairs: &[(&'static str, &'static str)],
        stdin: &'static [u8],
    ) -> (String, bool) {
        let environ = environ_from_cgi(vars(pairs), io::Cursor::new(stdin));
        let nph = nph_protocol(&environ);
        let response = gateway_core::block_on(driver::call(&app, environ));
        let mut out = Vec::new();
        let ok = write_response(&mut out, response, nph.as_deref()).is_ok();
        (String::from_utf8_lossy(&out).into_owned(), ok)
    }

    fn echo(mut environ: Environ, start: StartResponse) -> Body {
        let mut body = Vec::new();
        if let Err(error) = environ.input().read_to_end(&mut body) {
            return Body::error(error);
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        let _ = start.start(StatusCode::CREATED, headers);
        Body::from(body)
    }

    #[test]
    fn a_document_response_with_a_status_line() {
        let (out, ok) = respond(
            echo,
            &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "3")],
            b"abcdef",
        );
        assert!(ok);
        assert_eq!(
            out,
            "Status: 201 Created\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
             content-length: 3\r\n\r\nabc"
        );
    }

    #[test]
    fn chunked_requests_without_a_length_are_read_to_the_end() {
        let (out, _) = respond(
            echo,
            &[
                ("REQUEST_METHOD", "POST"),
                ("HTTP_TRANSFER_ENCODING", "chunked"),
            ],
            b"all of it",
        );
        assert!(out.ends_with("\r\n\r\nall of it"), "{out}");
        let (out, _) = respond(echo, &[("REQUEST_METHOD", "POST")], b"ignored");
        assert!(out.ends_with("content-length: 0\r\n\r\n"), "{out}");
    }

    #[test]
    fn head_and_statuses_without_a_body() {
        let (out, _) = respond(
            echo,
            &[("REQUEST_METHOD", "HEAD"), ("CONTENT_LENGTH", "2")],
            b"xy",
        );
        assert!(out.ends_with("content-length: 2\r\n\r\n"), "{out}");
        let no_content = |_: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::NO_CONTENT, HeaderMap::new());
            Body::from("dropped")
        };
        let (out, _) = respond(no_content, &[("REQUEST_METHOD", "GET")], b"");
        assert_eq!(out, "Status: 204 No Content\r\n\r\n");
    }

    #[test]
    fn nph_scripts_write_a_whole_http_response() {
        let (out, _) = respond(
            echo,
            &[
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/nph-echo"),
                ("SERVER_PROTOCOL", "HTTP/1.0"),
            ],
            b"",
        );
        assert!(out.starts_with("HTTP/1.0 201 Created\r\nDate: "), "{out}");
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
        assert!(out.contains("\r\nServer: gateway/"), "{out}");
    }

    #[test]
    fn failures_before_and_after_the_head() {
        let (out, ok) = respond(
            |_: Environ, _: StartResponse| Body::error("broken"),
            &[],
            b"",
        );
        assert!(ok);
        assert!(
            out.starts_with("Status: 500 Internal Server Error\r\n"),
            "{out}"
        );
        let late = |_: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, HeaderMap::new());
            Body::try_from_chunks([Ok::<_, gateway_core::BoxError>("part"), Err("lost".into())])
        };
        let (out, ok) = respond(late, &[], b"");
        assert!(!ok, "a failure after the head fails the process");
        assert!(out.ends_with("\r\n\r\npart"), "{out}");
    }

    #[test]
    fn streaming_frames_are_flushed_one_by_one() {
        struct Flushes(Vec<usize>, usize);
        impl Write for Flushes {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.1 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.push(self.1);
                Ok(())
            }
        }
        let app = |_: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, HeaderMap::new());
            Body::from_chunks(["aaa", "bb"])
        };
        let response = gateway_core::block_on(driver::call(&app, Environ::new()));
        let mut out = Flushes(Vec::new(), 0);
        write_response(&mut out, response, None).unwrap();
        let head = out.0[0];
        assert_eq!(
            &out.0[1..3],
            [head + 3, head + 5],
            "each frame flushed as it comes"
        );
    }
}
