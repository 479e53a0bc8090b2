//! The CGI adapter's pieces, without a process: the environ built from the variables that
//! nginx (through fcgiwrap), Apache and lighttpd really send, and the bytes written to stdout
//! for each kind of response.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gateway_core::{Body, BoxError, Builder, Environ, StartResponse, UrlScheme, driver};
use gateway_servers::cgi::{environ_from_cgi, nph_protocol, write_head, write_response};
use gateway_testkit::{Mode, Validator};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE, HeaderValue};
use http::{HeaderMap, StatusCode};

fn vars(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
    pairs
        .iter()
        .map(|(n, v)| {
            (
                Bytes::copy_from_slice(n.as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect()
}

fn environ(pairs: &[(&str, &str)], stdin: &[u8]) -> Environ {
    environ_from_cgi(vars(pairs), io::Cursor::new(stdin.to_vec()))
}

/// The body the app would read.
fn body_of(environ: &mut Environ) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    environ.input().read_to_end(&mut body)?;
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// The environ.

/// One front end's variables and what the app must see.
struct EnvironCase {
    name: &'static str,
    vars: &'static [(&'static str, &'static str)],
    stdin: &'static [u8],
    /// Variables with these exact values.
    present: &'static [(&'static str, &'static str)],
    /// Variables that must not be there.
    absent: &'static [&'static str],
    /// The body the app reads.
    body: &'static [u8],
    scheme: UrlScheme,
}

const ENVIRON_CASES: &[EnvironCase] = &[
    EnvironCase {
        name: "nginx + fcgiwrap, GET: empty CONTENT_*, HTTP_CONTENT_* duplicates, Proxy header",
        vars: &[
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", "a=1&b=%20"),
            ("CONTENT_TYPE", ""),
            ("CONTENT_LENGTH", ""),
            ("SCRIPT_NAME", "/cgi/echo"),
            ("SCRIPT_FILENAME", "/srv/cgi/echo"),
            ("REQUEST_URI", "/cgi/echo?a=1&b=%20"),
            ("DOCUMENT_URI", "/cgi/echo"),
            ("REQUEST_SCHEME", "http"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_SOFTWARE", "nginx/1.22.1"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("REMOTE_PORT", "40000"),
            ("REMOTE_USER", ""),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "8080"),
            ("SERVER_NAME", ""),
            ("REDIRECT_STATUS", "200"),
            ("HTTP_HOST", "localhost"),
            ("HTTP_CONTENT_LENGTH", "7"),
            ("HTTP_CONTENT_TYPE", "text/plain"),
            ("HTTP_PROXY", "http://evil.example:3128"),
            ("HTTP_X_DUP", "1"),
            ("HTTP_X_DUP", "2"),
        ],
        stdin: b"unasked",
        present: &[
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", "a=1&b=%20"),
            ("SCRIPT_NAME", "/cgi/echo"),
            ("PATH_INFO", ""),
            ("REQUEST_URI", "/cgi/echo?a=1&b=%20"),
            ("SERVER_NAME", "localhost"), // it came empty: the Host header's
            ("SERVER_PORT", "8080"),
            ("HTTP_HOST", "localhost"),
            ("HTTP_X_DUP", "2"),
        ],
        absent: &[
            "CONTENT_LENGTH",
            "CONTENT_TYPE",
            // fastcgi_params' `REMOTE_USER $remote_user`, empty without authentication.
            "REMOTE_USER",
            "HTTP_CONTENT_LENGTH",
            "HTTP_CONTENT_TYPE",
            "HTTP_PROXY",
        ],
        body: b"",
        scheme: UrlScheme::Http,
    },
    EnvironCase {
        name: "nginx, chunked POST buffered: a length and Transfer-Encoding both",
        vars: &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", "5"),
            ("CONTENT_TYPE", "application/octet-stream"),
            ("HTTP_CONTENT_LENGTH", "5"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
            ("SCRIPT_NAME", "/cgi/echo"),
            ("HTTPS", "on"),
            ("REQUEST_SCHEME", "https"),
        ],
        stdin: b"hello, and what the script must not read",
        present: &[
            ("CONTENT_LENGTH", "5"),
            ("CONTENT_TYPE", "application/octet-stream"),
            ("QUERY_STRING", ""),
        ],
        absent: &["HTTP_CONTENT_LENGTH"],
        body: b"hello",
        scheme: UrlScheme::Https,
    },
    EnvironCase {
        name: "Apache mod_cgid, GET with a path: no CONTENT_LENGTH at all",
        vars: &[
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", ""),
            ("REQUEST_URI", "/cgi-bin/echo/a%20b/c"),
            ("SCRIPT_NAME", "/cgi-bin/echo"),
            ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/echo"),
            ("PATH_INFO", "/a b/c"),
            ("PATH_TRANSLATED", "/var/www/html/a b/c"),
            ("CONTEXT_PREFIX", "/cgi-bin/"),
            ("REQUEST_SCHEME", "http"),
            ("SERVER_SIGNATURE", ""),
            ("SERVER_SOFTWARE", "Apache/2.4.71 (Debian)"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "8081"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_HOST", "127.0.0.1:8081"),
            ("HTTP_USER_AGENT", "curl/7.88.1"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ],
        stdin: b"",
        present: &[
            ("SCRIPT_NAME", "/cgi-bin/echo"),
            ("PATH_INFO", "/a b/c"),
            ("PATH_TRANSLATED", "/var/www/html/a b/c"),
            ("REQUEST_URI", "/cgi-bin/echo/a%20b/c"),
            ("HTTP_HOST", "127.0.0.1:8081"),
        ],
        // Apache sets SERVER_SIGNATURE empty (`ServerSignature Off`): a variable with no value
        // is left out (PEP 3333, the validator's R12).
        absent: &["CONTENT_LENGTH", "CONTENT_TYPE", "SERVER_SIGNATURE"],
        body: b"",
        scheme: UrlScheme::Http,
    },
    EnvironCase {
        name: "Apache mod_cgid, chunked POST: no length, stdin closed at the end of the body",
        vars: &[
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", "/cgi-bin/echo"),
            ("CONTENT_TYPE", "application/octet-stream"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
            ("HTTPS", "on"),
        ],
        stdin: b"the whole de-chunked body",
        present: &[
            ("HTTP_TRANSFER_ENCODING", "chunked"),
            ("CONTENT_TYPE", "application/octet-stream"),
        ],
        absent: &["CONTENT_LENGTH"],
        body: b"the whole de-chunked body",
        scheme: UrlScheme::Https,
    },
    EnvironCase {
        name: "Apache, Transfer-Encoding listing chunked after another coding",
        vars: &[
            ("REQUEST_METHOD", "PUT"),
            ("HTTP_TRANSFER_ENCODING", "gzip, Chunked"),
        ],
        stdin: b"\x1f\x8b raw",
        present: &[],
        absent: &["CONTENT_LENGTH"],
        body: b"\x1f\x8b raw",
        scheme: UrlScheme::Http,
    },
    EnvironCase {
        name: "lighttpd mod_cgi, GET: CONTENT_LENGTH=0 on every request",
        vars: &[
            ("CONTENT_LENGTH", "0"),
            ("QUERY_STRING", "q"),
            ("SCRIPT_NAME", "/echo.cgi"),
            ("SCRIPT_FILENAME", "/srv/docroot/echo.cgi"),
            ("PATH_INFO", "/x"),
            ("REQUEST_URI", "/echo.cgi/x?q"),
            ("REQUEST_METHOD", "GET"),
            ("SERVER_SOFTWARE", "lighttpd/1.4.69"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_SCHEME", "http"),
            ("REDIRECT_STATUS", "200"),
        ],
        stdin: b"never read",
        present: &[
            ("CONTENT_LENGTH", "0"),
            ("SCRIPT_NAME", "/echo.cgi"),
            ("PATH_INFO", "/x"),
            ("QUERY_STRING", "q"),
        ],
        absent: &["HTTP_PROXY"],
        body: b"",
        scheme: UrlScheme::Http,
    },
    EnvironCase {
        name: "lighttpd mod_cgi, chunked POST: buffered, a length, Transfer-Encoding stripped",
        vars: &[
            ("CONTENT_LENGTH", "12"),
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", "/echo.cgi"),
            ("HTTPS", "on"),
        ],
        stdin: b"twelve bytes",
        present: &[("CONTENT_LENGTH", "12")],
        absent: &["HTTP_TRANSFER_ENCODING"],
        body: b"twelve bytes",
        scheme: UrlScheme::Https,
    },
    EnvironCase {
        name: "a minimal environment: QUERY_STRING added, no body without a length",
        vars: &[("REQUEST_METHOD", "POST")],
        stdin: b"no length, not chunked: not a body",
        present: &[("QUERY_STRING", "")],
        absent: &["CONTENT_LENGTH"],
        body: b"",
        scheme: UrlScheme::Http,
    },
    EnvironCase {
        name: "a script run by hand: the required variables get defaults",
        vars: &[("GATEWAY_INTERFACE", "CGI/1.1")],
        stdin: b"",
        present: &[
            ("REQUEST_METHOD", "GET"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_PORT", "80"),
            ("QUERY_STRING", ""),
            ("PATH_INFO", "/"),
        ],
        absent: &["CONTENT_LENGTH"],
        body: b"",
        scheme: UrlScheme::Http,
    },
    EnvironCase {
        name: "an empty SERVER_NAME and no SERVER_PORT: both from an IPv6 Host header",
        vars: &[
            ("REQUEST_METHOD", "GET"),
            ("SERVER_NAME", ""),
            ("HTTP_HOST", "[::1]:8443"),
            ("HTTPS", "on"),
        ],
        stdin: b"",
        present: &[("SERVER_NAME", "[::1]"), ("SERVER_PORT", "8443")],
        absent: &[],
        body: b"",
        scheme: UrlScheme::Https,
    },
    EnvironCase {
        name: "no name anywhere but the address; the scheme's port",
        vars: &[
            ("REQUEST_METHOD", "GET"),
            ("SERVER_ADDR", "10.0.0.7"),
            ("HTTP_HOST", ":"),
            ("HTTPS", "on"),
        ],
        stdin: b"",
        present: &[("SERVER_NAME", "10.0.0.7"), ("SERVER_PORT", "443")],
        absent: &[],
        body: b"",
        scheme: UrlScheme::Https,
    },
    EnvironCase {
        name: "what the server gave is kept",
        vars: &[
            ("REQUEST_METHOD", "DELETE"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "example.org"),
            ("SERVER_PORT", "8000"),
            ("HTTP_HOST", "other.example:9000"),
        ],
        stdin: b"",
        present: &[
            ("REQUEST_METHOD", "DELETE"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "example.org"),
            ("SERVER_PORT", "8000"),
        ],
        absent: &[],
        body: b"",
        scheme: UrlScheme::Http,
    },
    EnvironCase {
        name: "HTTPS other than on is not https",
        vars: &[("REQUEST_METHOD", "GET"), ("HTTPS", "off")],
        stdin: b"",
        present: &[("HTTPS", "off")],
        absent: &[],
        body: b"",
        scheme: UrlScheme::Http,
    },
];

#[test]
fn environs_from_each_front_end() {
    for case in ENVIRON_CASES {
        let mut environ = environ(case.vars, case.stdin);
        for (name, value) in case.present {
            assert_eq!(
                environ.get_latin1(name).as_deref(),
                Some(*value),
                "{}: {name}",
                case.name
            );
        }
        for name in case.absent {
            assert!(!environ.contains(name), "{}: {name} is there", case.name);
        }
        assert!(environ.contains("QUERY_STRING"), "{}", case.name);
        assert_eq!(environ.url_scheme(), case.scheme, "{}", case.name);
        assert!(environ.run_once(), "{}", case.name);
        assert!(environ.multiprocess(), "{}", case.name);
        assert!(!environ.multithread(), "{}", case.name);
        assert!(environ.input_terminated(), "{}", case.name);
        assert_eq!(
            body_of(&mut environ).unwrap(),
            case.body,
            "{}: the body",
            case.name
        );
    }
}

/// Every environ of the table passes the strict validator, as the environ of a server must.
#[test]
fn environs_from_each_front_end_pass_the_validator() {
    for case in ENVIRON_CASES {
        let validator = Validator::new(Mode::Strict);
        let report = validator.report();
        let app =
            Builder::new()
                .with(validator)
                .app(|mut environ: Environ, start: StartResponse| {
                    let mut body = Vec::new();
                    if let Err(error) = environ.input().read_to_end(&mut body) {
                        return Body::error(error);
                    }
                    let mut headers = HeaderMap::new();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    let _ = start.start(StatusCode::OK, headers);
                    Body::from(body)
                });
        let environ = environ(case.vars, case.stdin);
        let response = gateway_core::block_on(driver::call(&app, environ));
        assert_eq!(response.status(), StatusCode::OK, "{}", case.name);
        assert!(
            report.is_clean(),
            "{}: {:?}",
            case.name,
            report.violations()
        );
    }
}

#[test]
fn a_body_shorter_than_its_length_fails_to_read() {
    let mut environ = environ(
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "10")],
        b"short",
    );
    let error = body_of(&mut environ).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn values_are_bytes_not_text() {
    let environ = environ_from_cgi(
        [(
            Bytes::from_static(b"HTTP_X_LATIN"),
            Bytes::from_static(b"caf\xe9"),
        )],
        io::empty(),
    );
    assert_eq!(environ.get("HTTP_X_LATIN"), Some(&b"caf\xe9"[..]));
}

// ---------------------------------------------------------------------------------------------
// NPH.

#[test]
fn nph_is_decided_by_the_script_name() {
    /// The variables, `argv[0]`, and the protocol of the status line if it is an NPH script.
    type Case = (
        &'static [(&'static str, &'static str)],
        Option<&'static [u8]>,
        Option<&'static str>,
    );
    let cases: &[Case] = &[
        // No SERVER_PROTOCOL: the environ's default, HTTP/1.0.
        (
            &[("SCRIPT_FILENAME", "/usr/lib/cgi-bin/nph-echo")],
            None,
            Some("HTTP/1.0"),
        ),
        (
            &[
                ("SCRIPT_FILENAME", "/srv/docroot/nph-echo.cgi"),
                ("SERVER_PROTOCOL", "HTTP/1.0"),
            ],
            None,
            Some("HTTP/1.0"),
        ),
        (
            &[
                ("SCRIPT_NAME", "/cgi-bin/nph-echo"),
                ("SERVER_PROTOCOL", "HTTP/1.1"),
            ],
            None,
            Some("HTTP/1.1"),
        ),
        (
            &[("SCRIPT_NAME", "/nph-x"), ("SERVER_PROTOCOL", "HTTP/2.0")],
            None,
            Some("HTTP/1.1"),
        ),
        // SCRIPT_FILENAME first (what Apache looks at), then SCRIPT_NAME, then argv[0].
        (
            &[
                ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/echo"),
                ("SCRIPT_NAME", "/cgi-bin/nph-echo"),
            ],
            None,
            None,
        ),
        (&[], Some(b"/usr/lib/cgi-bin/nph-echo"), Some("HTTP/1.0")),
        (
            &[("SERVER_PROTOCOL", "HTTP/1.1")],
            Some(b"nph-echo"),
            Some("HTTP/1.1"),
        ),
        (&[("SCRIPT_NAME", "/cgi-bin/echo")], Some(b"nph-echo"), None),
        // Only the last segment counts, and only as a prefix.
        (&[("SCRIPT_NAME", "/nph-dir/echo")], None, None),
        (&[("SCRIPT_NAME", "/cgi-bin/echo-nph-")], None, None),
        (&[("SCRIPT_NAME", "/cgi-bin/NPH-echo")], None, None),
        (&[], None, None),
        (&[], Some(b"/usr/lib/cgi-bin/echo"), None),
    ];
    for (vars, argv0, want) in cases {
        let environ = environ(vars, b"");
        assert_eq!(nph_protocol(&environ, *argv0), *want, "{vars:?} {argv0:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The output.

/// Runs `app` as the CGI adapter does and returns what it wrote and whether it succeeded.
fn respond(
    app: impl gateway_core::App,
    pairs: &[(&str, &str)],
    stdin: &[u8],
) -> (String, io::Result<()>) {
    let environ = environ(pairs, stdin);
    let nph = nph_protocol(&environ, None);
    let response = gateway_core::block_on(driver::call(&app, environ));
    let mut out = Vec::new();
    let result = write_response(&mut out, response, nph);
    (String::from_utf8_lossy(&out).into_owned(), result)
}

fn echo_body(mut environ: Environ, start: StartResponse) -> Body {
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

fn with_status(status: u16, body: &'static str) -> impl gateway_core::App {
    move |_: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let _ = start.start(StatusCode::from_u16(status).unwrap(), headers);
        Body::from(body)
    }
}

fn streamed(_: Environ, start: StartResponse) -> Body {
    let _ = start.start(StatusCode::OK, HeaderMap::new());
    Body::from_chunks(["ab", "", "cd"])
}

#[test]
fn outputs() {
    type Case = (
        &'static str,
        Arc<dyn gateway_core::App>,
        &'static [(&'static str, &'static str)],
        &'static [u8],
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "a document: Status line, headers in order, the length the driver added",
            Arc::new(echo_body),
            &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "3")],
            b"abcdef",
            "Status: 201 Created\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
             content-length: 3\r\n\r\nabc",
        ),
        (
            "a chunked request without a length is read to its end",
            Arc::new(echo_body),
            &[
                ("REQUEST_METHOD", "POST"),
                ("HTTP_TRANSFER_ENCODING", "chunked"),
            ],
            b"all of it",
            "Status: 201 Created\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
             content-length: 9\r\n\r\nall of it",
        ),
        (
            "HEAD: the length of the body, and no body",
            Arc::new(echo_body),
            &[("REQUEST_METHOD", "HEAD"), ("CONTENT_LENGTH", "2")],
            b"xy",
            "Status: 201 Created\r\ncontent-type: text/plain\r\nx-multi: 1\r\nx-multi: 2\r\n\
             content-length: 2\r\n\r\n",
        ),
        (
            "HEAD of a streamed body: no length, no body",
            Arc::new(streamed),
            &[("REQUEST_METHOD", "HEAD")],
            b"",
            "Status: 200 OK\r\n\r\n",
        ),
        (
            "a streamed body: no length, every chunk",
            Arc::new(streamed),
            &[("REQUEST_METHOD", "GET")],
            b"",
            "Status: 200 OK\r\n\r\nabcd",
        ),
        (
            "204: no body, no length",
            Arc::new(with_status(204, "dropped")),
            &[("REQUEST_METHOD", "GET")],
            b"",
            "Status: 204 No Content\r\ncontent-type: text/plain\r\n\r\n",
        ),
        (
            "304: no body",
            Arc::new(with_status(304, "dropped")),
            &[("REQUEST_METHOD", "GET")],
            b"",
            "Status: 304 Not Modified\r\ncontent-type: text/plain\r\n\r\n",
        ),
        (
            "a status without a canonical reason",
            Arc::new(with_status(599, "odd")),
            &[("REQUEST_METHOD", "GET")],
            b"",
            "Status: 599 Unknown\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nodd",
        ),
        (
            "a failure before the head: the driver's 500",
            Arc::new(|_: Environ, _: StartResponse| Body::error("no database")),
            &[("REQUEST_METHOD", "GET")],
            b"",
            "Status: 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 22\r\n\r\nInternal Server Error\n",
        ),
        (
            "a failure before the head of a HEAD request: the 500 without its body",
            Arc::new(|_: Environ, _: StartResponse| Body::error("no database")),
            &[("REQUEST_METHOD", "HEAD")],
            b"",
            "Status: 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 22\r\n\r\n",
        ),
        (
            "a panic before the head: the driver's 500",
            Arc::new(|_: Environ, _: StartResponse| -> Body { panic!("the app panicked") }),
            &[("REQUEST_METHOD", "GET")],
            b"",
            "Status: 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 22\r\n\r\nInternal Server Error\n",
        ),
    ];
    for (name, app, vars, stdin, want) in cases {
        let (out, result) = respond(app, vars, stdin);
        assert!(result.is_ok(), "{name}: {result:?}");
        assert_eq!(out, want, "{name}");
    }
}

#[test]
fn nph_outputs_are_whole_http_responses() {
    let nph = |protocol: &'static str| {
        [
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/nph-echo"),
            ("SERVER_PROTOCOL", protocol),
        ]
    };
    let (out, result) = respond(with_status(404, "gone"), &nph("HTTP/1.0"), b"");
    result.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "HTTP/1.0 404 Not Found");
    assert!(
        lines[1].starts_with("Date: ") && lines[1].ends_with(" GMT"),
        "{head}"
    );
    assert!(lines[2].starts_with("Server: gateway/"), "{head}");
    assert_eq!(
        &lines[3..],
        [
            "Connection: close",
            "content-type: text/plain",
            "content-length: 4"
        ]
    );
    assert_eq!(body, "gone");

    // The app's own Date and Server are not doubled; a streamed body ends with the connection.
    let own_date = |_: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        headers.insert(
            DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        headers.insert("server", HeaderValue::from_static("mine"));
        let _ = start.start(StatusCode::OK, headers);
        Body::from_chunks(["a", "b"])
    };
    let (out, result) = respond(own_date, &nph("HTTP/1.1"), b"");
    result.unwrap();
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nConnection: close\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         server: mine\r\n\r\nab"
    );

    // HEAD: the whole head, no body.
    let mut head_vars = nph("HTTP/1.1");
    head_vars[0].1 = "HEAD";
    let (out, _) = respond(with_status(200, "body"), &head_vars, b"");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("content-length: 4\r\n\r\n"), "{out}");
}

#[test]
fn head_bytes_for_the_fastcgi_and_uwsgi_servers() {
    // write_head is shared with the network servers: no status line of its own in CGI form.
    let mut headers = HeaderMap::new();
    headers.append("set-cookie", HeaderValue::from_static("a=1"));
    headers.append("set-cookie", HeaderValue::from_static("b=2"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    let mut out = Vec::new();
    write_head(&mut out, StatusCode::SEE_OTHER, &headers, None).unwrap();
    assert_eq!(
        out,
        b"Status: 303 See Other\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn failures_after_the_head_fail_the_process() {
    let late = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::try_from_chunks([Ok::<_, BoxError>("part"), Err("lost".into())])
    };
    let (out, result) = respond(late, &[("REQUEST_METHOD", "GET")], b"");
    let error = result.unwrap_err();
    assert!(
        error
            .get_ref()
            .is_some_and(|e| e.is::<gateway_core::Error>()),
        "{error}"
    );
    assert_eq!(
        out, "Status: 200 OK\r\n\r\npart",
        "what was sent stays sent"
    );

    let panics = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        let mut n = 0;
        Body::from_chunks(std::iter::from_fn(move || {
            n += 1;
            assert!(n < 2, "the body panicked");
            Some("first")
        }))
    };
    let (out, result) = respond(panics, &[("REQUEST_METHOD", "GET")], b"");
    assert!(result.is_err());
    assert_eq!(out, "Status: 200 OK\r\n\r\nfirst");

    // Shorter than its Content-Length: the web server must not take it for a whole response.
    let short = |_: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("10"));
        let _ = start.start(StatusCode::OK, headers);
        Body::from_chunks(["12345"])
    };
    let (out, result) = respond(short, &[("REQUEST_METHOD", "GET")], b"");
    assert!(result.is_err());
    assert_eq!(out, "Status: 200 OK\r\ncontent-length: 10\r\n\r\n12345");
}

/// A writer that records what it holds at each flush, and can be told to fail.
#[derive(Clone, Default)]
struct Recorder {
    state: Arc<Mutex<RecorderState>>,
}

#[derive(Default)]
struct RecorderState {
    pending: Vec<u8>,
    flushed: Vec<u8>,
    /// The length of `flushed` after each flush that had something to write.
    flushes: Vec<usize>,
    fail: bool,
}

impl Recorder {
    fn flushed(&self) -> Vec<u8> {
        self.state.lock().unwrap().flushed.clone()
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock().unwrap();
        if state.fail {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        state.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if !state.pending.is_empty() {
            let pending = std::mem::take(&mut state.pending);
            state.flushed.extend_from_slice(&pending);
            let len = state.flushed.len();
            state.flushes.push(len);
        }
        Ok(())
    }
}

#[test]
fn each_chunk_is_flushed_before_the_next_is_produced() {
    let out = Recorder::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = {
        let out = out.clone();
        let seen = seen.clone();
        move |_: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, HeaderMap::new());
            let out = out.clone();
            let seen = seen.clone();
            let mut n = 0;
            Body::from_chunks(std::iter::from_fn(move || {
                // What the web server had received when the app produced chunk `n`.
                seen.lock().unwrap().push(out.flushed());
                n += 1;
                (n <= 3).then(|| format!("chunk{n};"))
            }))
        }
    };
    let response = gateway_core::block_on(driver::call(&app, Environ::new()));
    // Through a BufWriter, as `run` writes to stdout.
    write_response(io::BufWriter::new(out.clone()), response, None).unwrap();
    let head = "Status: 200 OK\r\n\r\n";
    let seen: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(
        seen,
        [
            String::new(), // the first chunk decides the head
            format!("{head}chunk1;"),
            format!("{head}chunk1;chunk2;"),
            format!("{head}chunk1;chunk2;chunk3;"),
        ]
    );
    let state = out.state.lock().unwrap();
    assert_eq!(
        state.flushes,
        [head.len() + 7, head.len() + 14, head.len() + 21]
    );
}

#[test]
fn a_whole_body_leaves_with_its_head_in_one_flush() {
    let out = Recorder::default();
    let (_, result) = {
        let environ = environ(&[("REQUEST_METHOD", "GET")], b"");
        let response = gateway_core::block_on(driver::call(&with_status(200, "hi"), environ));
        (
            (),
            write_response(io::BufWriter::new(out.clone()), response, None),
        )
    };
    result.unwrap();
    let state = out.state.lock().unwrap();
    assert_eq!(state.flushes.len(), 1, "one write to stdout");
    assert!(state.flushed.ends_with(b"\r\n\r\nhi"));
}

#[test]
fn output_errors_are_not_app_failures() {
    let out = Recorder::default();
    out.state.lock().unwrap().fail = true;
    let response = gateway_core::block_on(driver::call(&with_status(200, "hi"), Environ::new()));
    let error = write_response(io::BufWriter::new(out), response, None).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert!(
        !error
            .get_ref()
            .is_some_and(|e| e.is::<gateway_core::Error>())
    );
}
