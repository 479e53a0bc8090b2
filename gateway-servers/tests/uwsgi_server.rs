//! The uwsgi server over real sockets on 127.0.0.1, driven with the project's own codec as the
//! client: requests with and without bodies, raw chunked bodies, modifier 30, ping, refusals,
//! limits, and the environs passing the validator.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use gateway_core::{App, Body, Builder, Environ, StartResponse};
use gateway_servers::runtime::{Config, Runtime};
use gateway_servers::uwsgi::codec;
use gateway_testkit::TestServer;
use gateway_testkit::{Mode, Validator};
use http::{HeaderMap, HeaderValue, StatusCode};

/// The uwsgi server with `app` and a vars limit, on a free port.
struct Server(TestServer);

impl Server {
    fn start(app: impl App + 'static, max_vars: usize) -> Server {
        Server::start_config(app, max_vars, Config::default())
    }

    fn start_config(app: impl App + 'static, max_vars: usize, config: Config) -> Server {
        Server(TestServer::start(move |listener, stop| {
            let runtime = Runtime::new(app, config);
            gateway_servers::uwsgi::server::serve(listener, runtime, stop, max_vars)
        }))
    }

    /// Sends raw bytes, returns everything the server sent until it closed.
    fn exchange(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(self.0.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        reply
    }

    fn request(&self, modifier1: u8, vars: &[(&str, &str)], body: &[u8]) -> String {
        let mut wire = BytesMut::new();
        codec::encode_request(
            &mut wire,
            modifier1,
            vars.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
        .unwrap();
        wire.extend_from_slice(body);
        String::from_utf8_lossy(&self.exchange(&wire)).into_owned()
    }
}

fn echo(mut environ: Environ, start: StartResponse) -> Body {
    let mut body = Vec::new();
    if let Err(error) = environ.input().read_to_end(&mut body) {
        return Body::error(error);
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let _ = start.start(StatusCode::OK, headers);
    let mut answer = format!(
        "{} {}|{}|proxy={}|",
        environ.request_method(),
        String::from_utf8_lossy(environ.script_name()),
        String::from_utf8_lossy(environ.path_info()),
        environ.contains("HTTP_PROXY"),
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Body::from(answer)
}

fn nginx_vars<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = vec![
        ("QUERY_STRING", ""),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("REQUEST_URI", "/x"),
        ("PATH_INFO", "/x"),
        ("DOCUMENT_ROOT", "/srv"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "50000"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("HTTP_HOST", "localhost"),
    ];
    for (name, value) in extra {
        vars.retain(|(n, _)| n != name);
        vars.push((name, value));
    }
    vars
}

#[test]
fn requests_with_and_without_bodies() {
    let server = Server::start(echo, codec::MAX_VARS_SIZE);
    let reply = server.request(0, &nginx_vars(&[("HTTP_PROXY", "http://evil")]), b"");
    // The status line and the response's headers only, as uWSGI answers: the web server
    // adds its Date.
    assert_eq!(
        reply,
        concat!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n",
            "server: gateway/",
            env!("CARGO_PKG_VERSION"),
            "\r\n\r\nGET |/x|proxy=false|"
        )
    );

    let reply = server.request(
        0,
        &nginx_vars(&[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "5")]),
        b"helloEXTRA",
    );
    assert!(reply.ends_with("POST |/x|proxy=false|hello"), "{reply}");
}

#[test]
fn raw_chunked_bodies_from_the_uwsgi_router() {
    let server = Server::start(echo, codec::MAX_VARS_SIZE);
    let vars = nginx_vars(&[
        ("REQUEST_METHOD", "POST"),
        ("HTTP_TRANSFER_ENCODING", "chunked"),
    ]);
    let reply = server.request(0, &vars, b"6\r\nchunky\r\n3\r\nabc\r\n0\r\n\r\n");
    assert!(reply.ends_with("POST |/x|proxy=false|chunkyabc"), "{reply}");
}

#[test]
fn modifier_30_strips_script_name_from_path_info() {
    let server = Server::start(echo, codec::MAX_VARS_SIZE);
    let vars = nginx_vars(&[("SCRIPT_NAME", "/m30"), ("PATH_INFO", "/m30/foo")]);
    let reply = server.request(30, &vars, b"");
    assert!(reply.ends_with("GET /m30|/foo|proxy=false|"), "{reply}");
}

#[test]
fn ping_unknown_modifiers_and_limits() {
    let server = Server::start(echo, 64);
    let mut ping = BytesMut::new();
    codec::encode_ping(&mut ping);
    assert_eq!(server.exchange(&ping), [100, 0, 0, 1]);

    let reply = server.request(5, &[("A", "1")], b"");
    assert!(
        reply.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
        "{reply}"
    );

    let reply = server.request(0, &nginx_vars(&[]), b"");
    assert!(
        reply.starts_with("HTTP/1.1 431 "),
        "vars over 64 bytes: {reply}"
    );

    let reply =
        String::from_utf8_lossy(&server.exchange(&[0, 4, 0, 0, 9, 0, b'A', 0])).into_owned();
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
}

#[test]
fn a_content_length_that_is_not_a_number_gets_400() {
    let server = Server::start(echo, 4096);
    let reply = server.request(0, &nginx_vars(&[("CONTENT_LENGTH", "abc")]), b"hello");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
}

#[test]
fn a_packet_not_complete_within_the_header_read_timeout_gets_408() {
    let mut config = Config::default();
    config.header_read_timeout = Duration::from_millis(300);
    let server = Server::start_config(echo, 4096, config);
    let mut wire = BytesMut::new();
    codec::encode_request(
        &mut wire,
        0,
        nginx_vars(&[])
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    )
    .unwrap();
    let reply = String::from_utf8_lossy(&server.exchange(&wire[..wire.len() / 2])).into_owned();
    assert!(
        reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{reply}"
    );
    // A connection that sent nothing is closed without an answer.
    assert_eq!(server.exchange(b""), b"");
}

/// An app that answers without reading its body.
fn refuses(_: Environ, start: StartResponse) -> Body {
    let _ = start.start(StatusCode::FORBIDDEN, HeaderMap::new());
    Body::from("no\n")
}

/// 8 MiB: more than loopback's socket buffers hold, so a client that writes it all before it
/// reads (as nginx does) meets a closed connection unless the server reads it.
const LARGE: usize = 8 << 20;

#[test]
fn a_body_left_unread_is_read_after_the_answer_so_a_client_that_sends_it_first_gets_it() {
    let server = Server::start(refuses, codec::MAX_VARS_SIZE);
    let body = vec![b'x'; LARGE];
    let length = LARGE.to_string();
    let vars = nginx_vars(&[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", &length)]);
    for _ in 0..2 {
        let reply = server.request(0, &vars, &body);
        assert!(reply.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nno\n"), "{reply}");
    }
    // The server's own refusal too, with the same load behind the packet.
    let reply = server.request(5, &vars, &body);
    assert!(reply.starts_with("HTTP/1.1 501 "), "{reply}");
    // A raw chunked body.
    let vars = nginx_vars(&[
        ("REQUEST_METHOD", "POST"),
        ("HTTP_TRANSFER_ENCODING", "chunked"),
    ]);
    let mut chunked = format!("{LARGE:x}\r\n").into_bytes();
    chunked.extend_from_slice(&body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = server.request(0, &vars, &chunked);
    assert!(reply.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{reply}");
}

#[test]
fn streaming_responses() {
    let app = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from_chunks(["one,", "two,", "three"])
    };
    let server = Server::start(app, codec::MAX_VARS_SIZE);
    let reply = server.request(0, &nginx_vars(&[]), b"");
    assert!(!reply.contains("content-length"), "{reply}");
    assert!(reply.ends_with("\r\n\r\none,two,three"), "{reply}");
}

#[test]
fn the_environs_pass_the_validator() {
    let validator = Validator::new(Mode::Strict);
    let report = validator.report();
    let app = Builder::new().with(validator).app(echo);
    let server = Server::start(app, codec::MAX_VARS_SIZE);
    server.request(0, &nginx_vars(&[]), b"");
    server.request(
        0,
        &nginx_vars(&[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", "2"),
            ("CONTENT_TYPE", "a/b"),
        ]),
        b"ok",
    );
    server.request(
        30,
        &nginx_vars(&[("SCRIPT_NAME", "/m"), ("PATH_INFO", "/m/x")]),
        b"",
    );
    // A variable with no value (a `uwsgi_param` set from an empty nginx variable) is left out.
    server.request(0, &nginx_vars(&[("REMOTE_USER", ""), ("HTTPS", "")]), b"");
    assert!(report.is_clean(), "{:#?}", report.violations());
}
