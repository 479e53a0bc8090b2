//! The HTTP server over real sockets on 127.0.0.1: keep-alive, pipelining, chunked bodies both
//! ways, 100-continue, HEAD, h2c, every limit, slow and vanishing clients, panics, a blocking
//! app beside fast ones, and graceful shutdown. Every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gateway_core::{App, Body, Environ, StartResponse};
use gateway_servers::runtime::{Config, Runtime};
use gateway_servers::uwsgi::codec::ChunkedDecoder;
use gateway_testkit::TestServer;
use http::{HeaderMap, HeaderValue, StatusCode};

/// The HTTP server with `app` and `config`, on a free port.
struct Server(TestServer);

impl Server {
    fn start(app: impl App + 'static, config: Config) -> Server {
        Server(TestServer::start(move |listener, stop| {
            gateway_servers::http::serve(listener, Runtime::new(app, config), stop)
        }))
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.0.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    fn stop(&mut self) {
        self.0.stop();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `stream` (with `buf` holding bytes already read), for a request
/// with `method`.
fn read_reply(stream: &mut TcpStream, buf: &mut BytesMut, method: &str) -> Reply {
    let (status, headers, head_len) = loop {
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut parsed);
        if let httparse::Status::Complete(len) = response.parse(buf).unwrap() {
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect::<Vec<_>>();
            break (response.code.unwrap(), headers, len);
        }
        fill(stream, buf);
    };
    let _ = buf.split_to(head_len);
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        return reply;
    }
    if let Some(len) = reply
        .header("content-length")
        .map(|l| l.parse::<usize>().unwrap())
    {
        while buf.len() < len {
            fill(stream, buf);
        }
        reply.body = buf.split_to(len).to_vec();
    } else if reply.header("transfer-encoding") == Some("chunked") {
        let mut decoder = ChunkedDecoder::new();
        while !decoder.is_done() {
            match decoder.decode(buf).unwrap() {
                Some(data) => reply.body.extend_from_slice(&data),
                None if decoder.is_done() => break,
                None => fill(stream, buf),
            }
        }
    } else {
        stream.read_to_end(&mut reply.body).unwrap();
        reply.body.splice(0..0, buf.split().to_vec());
    }
    reply
}

fn fill(stream: &mut TcpStream, buf: &mut BytesMut) {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).expect("read within the timeout");
    assert!(n > 0, "connection closed early; have {buf:?}");
    buf.extend_from_slice(&chunk[..n]);
}

/// Sends the start of a head and no more: the server answers 408 and closes.
fn head_never_ends_408(stream: &mut TcpStream) {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{rest:?}"
    );
}

fn request(server: &Server, raw: &str) -> Reply {
    let mut stream = server.connect();
    stream.write_all(raw.as_bytes()).unwrap();
    let method = raw.split(' ').next().unwrap().to_owned();
    read_reply(&mut stream, &mut BytesMut::new(), &method)
}

/// Answers with the method, path and body it got, and `x-seen-*` headers for a few variables.
fn echo(mut environ: Environ, start: StartResponse) -> Body {
    let mut body = Vec::new();
    if let Err(error) = environ.input().read_to_end(&mut body) {
        return Body::error(error);
    }
    let mut headers = HeaderMap::new();
    for name in [
        "HTTP_X_AUTH_USER",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "CONTENT_LENGTH",
    ] {
        if let Some(value) = environ.get(name) {
            let header = format!("x-seen-{}", name.to_ascii_lowercase().replace('_', "-"));
            headers.insert(
                http::header::HeaderName::from_bytes(header.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
    }
    let terminated = if environ.input_terminated() { "1" } else { "0" };
    headers.insert("x-input-terminated", HeaderValue::from_static(terminated));
    let _ = start.start(StatusCode::OK, headers);
    let mut answer = format!(
        "{} {} ",
        environ.request_method(),
        String::from_utf8_lossy(environ.path_info())
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Body::from(answer)
}

fn config() -> Config {
    Config::default()
}

/// An app that answers `ok`, after `delay` for `/slow`: a blocking app beside quick requests.
fn slow_on_slow_path(delay: Duration) -> impl App + 'static {
    move |environ: Environ, start: StartResponse| {
        if environ.path_info() == b"/slow" {
            std::thread::sleep(delay);
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from("ok")
    }
}

/// An HTTP/2 client connection with prior knowledge to `addr`, its connection task spawned.
async fn h2_connect(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(connection))
}

#[test]
fn keep_alive_and_pipelining() {
    let server = Server::start(echo, config());
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    for i in 0..3 {
        stream
            .write_all(format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let reply = read_reply(&mut stream, &mut buf, "GET");
        assert_eq!(reply.body, format!("GET /k{i} ").as_bytes());
        assert!(reply.header("date").is_some());
        assert!(reply.header("server").unwrap().starts_with("gateway/"));
    }
    // Pipelined: three requests in one write, three answers in order.
    stream
        .write_all(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for i in 1..=3 {
        assert_eq!(
            read_reply(&mut stream, &mut buf, "GET").body,
            format!("GET /p{i} ").as_bytes()
        );
    }
}

#[test]
fn chunked_both_ways_and_input_terminated() {
    let server = Server::start(echo, config());
    let reply = request(
        &server,
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(reply.body, b"POST /c hello world");
    assert_eq!(reply.header("x-input-terminated"), Some("1"));
    assert_eq!(reply.header("x-seen-content-length"), None);

    let streaming = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from_chunks(["one,", "two,", "three"])
    };
    let server = Server::start(streaming, config());
    let reply = request(&server, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.body, b"one,two,three");
}

#[test]
fn expect_100_continue_is_sent_when_the_app_reads() {
    let server = Server::start(echo, config());
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut buf = BytesMut::new();
    let interim = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(interim.status, 100);
    stream.write_all(b"body").unwrap();
    let reply = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"POST /e body"[..])
    );
}

#[test]
fn head_keeps_the_length_and_sends_no_body() {
    let server = Server::start(echo, config());
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    stream
        .write_all(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut stream, &mut buf, "HEAD");
    assert_eq!(
        reply.header("content-length"),
        Some("8"),
        "the length of `HEAD /h `"
    );
    // The connection is still in step: the next answer parses.
    stream
        .write_all(b"GET /n HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf, "GET").body, b"GET /n ");
}

#[test]
fn underscore_headers_are_dropped() {
    let server = Server::start(echo, config());
    let reply = request(
        &server,
        "GET / HTTP/1.1\r\nHost: x\r\nX_Auth_User: mallory\r\n\r\n",
    );
    assert_eq!(reply.header("x-seen-http-x-auth-user"), None);
    let reply = request(
        &server,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Auth-User: alice\r\n\r\n",
    );
    assert_eq!(reply.header("x-seen-http-x-auth-user"), Some("alice"));
    assert_eq!(reply.header("x-seen-remote-addr"), Some("127.0.0.1"));
}

#[test]
fn body_limits_answer_413() {
    let mut config = config();
    config.max_body_size = 10;
    let server = Server::start(echo, config);
    let reply = request(
        &server,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n01234567890",
    );
    assert_eq!(reply.status, 413);
    let reply = request(
        &server,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, 413);
    let reply = request(
        &server,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn a_413_in_place_of_the_drivers_500_keeps_the_failure_headers() {
    let mut config = config();
    config.max_body_size = 10;
    // The app fails reading its body (past the limit), before its head.
    let marked = |environ: Environ, start: StartResponse| {
        let start = start.with_failure_header(
            http::header::HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("r-413"),
        );
        echo(environ, start)
    };
    let server = Server::start(marked, config);
    let reply = request(
        &server,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("x-request-id"), Some("r-413"));
}

#[test]
fn a_non_blocking_app_that_reads_its_body_synchronously_fails_its_request_and_not_the_server() {
    let mut config = config();
    config.blocking = false;
    config.body_buffer_size = 10;
    let server = Server::start(echo, config);
    // A body longer than the buffer streams, and it comes later than the head: the app's
    // synchronous read would wait on the event loop.
    let mut stream = server.connect();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n")
        .unwrap();
    let mut buf = BytesMut::new();
    let reply = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(reply.status, 500);
    // The server still answers, and a short body, read whole before the app runs, is read
    // synchronously.
    let reply = request(
        &server,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!((reply.status, &reply.body[..]), (200, &b"POST / hello"[..]));
}

/// 8 MiB: more than loopback's socket buffers hold, so a client that writes it all before it
/// reads (as nginx's `proxy_pass` does) meets a closed connection unless the server reads it.
const LARGE: usize = 8 << 20;

/// `echo` under `/echo`; elsewhere an answer that does not read the body.
fn refuses_but_echo(environ: Environ, start: StartResponse) -> Body {
    if environ.path_info() == b"/echo" {
        return echo(environ, start);
    }
    let _ = start.start(StatusCode::FORBIDDEN, HeaderMap::new());
    Body::from("no")
}

#[test]
fn a_body_left_unread_is_read_after_the_answer_and_the_connection_kept() {
    let mut config = config();
    config.max_body_size = LARGE as u64;
    let server = Server::start(refuses_but_echo, config);
    let body = vec![b'x'; LARGE];
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    for _ in 0..2 {
        let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {LARGE}\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let reply = read_reply(&mut stream, &mut buf, "POST");
        assert_eq!((reply.status, &reply.body[..]), (403, &b"no"[..]));
        assert_eq!(reply.header("connection"), None, "kept alive");
    }
    // The same connection serves the next request.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    let reply = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(reply.body, b"POST /echo hi");

    // A chunked body.
    let mut stream = server.connect();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    stream
        .write_all(format!("{LARGE:x}\r\n").as_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").unwrap();
    let reply = read_reply(&mut stream, &mut BytesMut::new(), "POST");
    assert_eq!(reply.status, 403);

    // The server's own 413 for a declared length over the limit reaches the client too.
    let mut stream = server.connect();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        LARGE + 1
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    stream.write_all(b"x").unwrap();
    let reply = read_reply(&mut stream, &mut BytesMut::new(), "POST");
    assert_eq!(reply.status, 413);
}

#[test]
fn a_connection_whose_unread_body_ended_after_its_answer_waits_the_keep_alive_timeout() {
    // The body is read to its end by a task of its own after the answer: its end must still
    // let the connection be parked, and kept for the keep-alive timeout (not closed by hyper's
    // own head timer, a second past the header timeout). The idle time is more than a second
    // past hyper's timer and more than a second short of the keep-alive timeout.
    let mut config = config();
    config.max_body_size = LARGE as u64;
    config.header_read_timeout = Duration::from_millis(300);
    config.keep_alive_timeout = Duration::from_secs(4);
    let server = Server::start(refuses_but_echo, config);
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {LARGE}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b'x'; LARGE]).unwrap();
    let reply = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(reply.status, 403);
    std::thread::sleep(Duration::from_millis(2500));
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    let reply = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(reply.body, b"POST /echo hi", "kept past the header timer");
}

#[test]
fn lingering_over_an_unread_body_stops_at_the_linger_timeout() {
    let mut config = config();
    config.linger_timeout = Duration::from_millis(300);
    let server = Server::start(refuses_but_echo, config);
    let mut stream = server.connect();
    // A body that never comes whole: the answer arrives, and the connection closes after the
    // linger timeout (the read timeout, 10 s, would fail the read otherwise).
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nsome")
        .unwrap();
    let mut buf = BytesMut::new();
    let reply = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(reply.status, 403);
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(buf.is_empty() && rest.is_empty(), "{rest:?}"),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

#[test]
fn head_limits_answer_431() {
    let mut config = config();
    config.max_head_size = 8192;
    config.max_headers = 20;
    let server = Server::start(echo, config);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(request(&server, &big).status, 431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(request(&server, &many).status, 431);
    assert_eq!(
        request(&server, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
}

#[test]
fn a_head_limit_below_hyper_s_smallest_buffer_is_applied_too() {
    let mut config = config();
    config.max_head_size = 1024;
    let server = Server::start(echo, config);
    let head = |size: usize| {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ");
        head.push_str(&"a".repeat(size - head.len() - 4));
        head.push_str("\r\n\r\n");
        head
    };
    assert_eq!(request(&server, &head(4000)).status, 431);
    assert_eq!(request(&server, &head(900)).status, 200);
}

#[test]
fn a_slow_body_is_408_and_so_is_a_slow_first_head() {
    let mut config = config();
    config.body_read_timeout = Duration::from_millis(300);
    // Long enough that a head sent in pieces over 200 ms is in time after a stall of a second.
    config.header_read_timeout = Duration::from_millis(1500);
    // A slow body: `a_slow_body_is_408_whether_read_first_or_streamed`.
    let server = Server::start(echo, config);
    // The three connections run their header timeouts side by side. One sends the start of a
    // head and no more.
    let mut never_ends = server.connect();
    never_ends
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut silent = server.connect();
    let mut slow = server.connect();

    // A head that arrives in time, slowly, is served: the watch ends with it.
    for (i, piece) in [&b"GET / HTTP/1.1\r\n"[..], b"Host: x\r\n", b"\r\n"]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        slow.write_all(piece).unwrap();
    }
    let reply = read_reply(&mut slow, &mut BytesMut::new(), "GET");
    assert_eq!(reply.status, 200);
    // The kept-alive connection then idles until well past the first head's deadline (1.5 s
    // from the connection's start) with a response already sent: nothing more is written into
    // it.
    std::thread::sleep(Duration::from_secs(3));
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let again = read_reply(&mut slow, &mut BytesMut::new(), "GET");
    assert_eq!(again.status, 200);

    // The head that never ended: 408, then the connection closed.
    let mut rest = Vec::new();
    let _ = never_ends.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{rest:?}"
    );

    // No byte at all: closed without an answer (as nginx does: an unused connection).
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn the_keep_alive_timeout_closes_idle_connections_longer_or_shorter_than_the_head_timeout() {
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let ms = Duration::from_millis;
    // (head timeout, keep-alive timeout, an idle time the connection outlives). Longer than
    // the head timeout, the keep-alive timeout keeps a connection well past it (the idle time
    // is eight times the head timeout, and more than a second short of the keep-alive
    // timeout). Shorter, it closes one before the head timeout: within the client's read
    // timeout of 10 s, half the head timeout.
    for (head, keep_alive, outlived) in [
        (ms(300), ms(3600), Some(ms(2400))),
        (ms(20_000), ms(400), None),
    ] {
        let mut config = config();
        config.header_read_timeout = head;
        config.keep_alive_timeout = keep_alive;
        let server = Server::start(echo, config);
        let ask = |stream: &mut TcpStream| {
            stream.write_all(get).unwrap();
            let reply = read_reply(stream, &mut BytesMut::new(), "GET");
            assert_eq!(reply.status, 200, "{head:?} {keep_alive:?}");
        };
        // One connection left idle after a request, to be closed; another, to outlive the
        // idle time.
        let mut closed = server.connect();
        ask(&mut closed);
        if let Some(idle) = outlived {
            let mut kept = server.connect();
            ask(&mut kept);
            std::thread::sleep(idle);
            ask(&mut kept);
        }
        // Closed without an answer.
        let mut rest = Vec::new();
        closed
            .read_to_end(&mut rest)
            .expect("closed within the read timeout");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
}

/// An idle HTTP/1 connection gives hyper's buffers back after a moment and is served by a new
/// hyper connection when its next bytes come: what it was doing then must not matter.
#[test]
fn an_idle_connection_taken_from_hyper_and_back_loses_nothing() {
    let idle = Duration::from_millis(400);
    let mut config = config();
    // Well above `idle`: a head begun before an idle time must not time out during it, even on
    // a loaded machine.
    config.header_read_timeout = Duration::from_millis(1500);
    let server = Server::start(echo, config);
    // Sends `raw` (a request, or its end) and reads the reply.
    let ask = |stream: &mut TcpStream, buf: &mut BytesMut, raw: &[u8], method: &str| {
        stream.write_all(raw).unwrap();
        read_reply(stream, buf, method)
    };

    // Requests after an idle time, on the same connection.
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    for path in ["/one", "/two", "/three"] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let reply = ask(&mut stream, &mut buf, head.as_bytes(), "GET");
        assert_eq!(reply.body, format!("GET {path} ").as_bytes());
        std::thread::sleep(idle);
    }

    // A second head begun with the first and finished after the idle time.
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    let first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHo";
    assert_eq!(ask(&mut stream, &mut buf, first, "GET").body, b"GET /a ");
    std::thread::sleep(idle);
    let rest = b"st: x\r\nContent-Length: 4\r\n\r\nbody";
    assert_eq!(
        ask(&mut stream, &mut buf, rest, "POST").body,
        b"POST /b body"
    );

    // A response larger than the socket buffers, which the client reads only after the idle
    // time: hyper still holds the rest of it, so the connection stays with hyper.
    let mut stream = server.connect();
    let body = vec![b'z'; 8 << 20];
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    std::thread::sleep(idle);
    let mut buf = BytesMut::new();
    let reply = read_reply(&mut stream, &mut buf, "POST");
    assert_eq!(reply.body.len(), b"POST /big ".len() + body.len());
    assert!(reply.body.ends_with(&body));
    let after = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        ask(&mut stream, &mut buf, after, "GET").body,
        b"GET /after "
    );

    // A later head that starts after the idle time has the header timeout, and its 408.
    let mut stream = server.connect();
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        ask(&mut stream, &mut BytesMut::new(), get, "GET").status,
        200
    );
    std::thread::sleep(idle);
    // (The keep-alive timeout, 75 s, is past the client's 10 s read timeout.)
    head_never_ends_408(&mut stream);

    // A later head begun with the request before it, and never finished: the connection is
    // parked with it and answers its 408 too (hyper's own head timer is not set).
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf, "GET").body, b"GET /a ");
    let mut rest = buf.to_vec();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{rest:?}"
    );
}

#[test]
fn the_request_limit_answers_503() {
    let release = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicUsize::new(0));
    let (gate, count) = (release.clone(), entered.clone());
    let app = move |environ: Environ, start: StartResponse| {
        if environ.path_info() == b"/hold" {
            count.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !gate.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from("done")
    };
    let mut config = config();
    config.max_requests = 1;
    let server = Server::start(app, config);
    let mut held = server.connect();
    held.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while entered.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let reply = request(&server, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    release.store(true, Ordering::SeqCst);
    assert_eq!(
        read_reply(&mut held, &mut BytesMut::new(), "GET").body,
        b"done"
    );
    assert_eq!(
        request(&server, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
}

/// An app that answers with the body it read, and sends on the returned channel, each time it
/// is called, how many bytes of its body it could take then, without waiting for more.
fn echo_telling_the_body_at_hand() -> (mpsc::Receiver<usize>, impl App + 'static) {
    let (tx, rx) = mpsc::channel();
    let app = move |mut environ: Environ, start: StartResponse| {
        let mut body = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Some(Ok(chunk))) = environ.input().poll_chunk(&mut cx) {
            body.extend_from_slice(&chunk);
        }
        let _ = tx.send(body.len());
        if let Err(error) = environ.input().read_to_end(&mut body) {
            return Body::error(error);
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from(body)
    };
    (rx, app)
}

#[test]
fn short_bodies_are_read_whole_before_a_blocking_app_is_called() {
    // (body_buffer_size, Expect header, body length) and whether the app is called before the
    // body is complete.
    let cases: [(u64, &str, usize, bool); 5] = [
        (1024, "", 10, false),
        (1024, "", 1024, false),
        (1024, "", 1025, true),
        (0, "", 10, true),
        (1024, "Expect: 100-continue\r\n", 10, true),
    ];
    for (buffer, expect, length, called_early) in cases {
        let case = format!("buffer {buffer}, {expect:?}, {length} bytes");
        let head =
            format!("POST /b HTTP/1.1\r\nHost: x\r\n{expect}Content-Length: {length}\r\n\r\n");
        let body = vec![b'y'; length];
        let (at_hand, app) = echo_telling_the_body_at_hand();
        let mut config = config();
        config.body_buffer_size = buffer;
        let server = Server::start(app, config.clone());
        let mut stream = server.connect();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body[..length - 1]).unwrap();
        if called_early {
            // The last byte is sent only once the app has been called.
            let had = at_hand
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{case}: the app was not called before the last byte"));
            assert!(had < length, "{case}: {had} bytes at hand");
        }
        stream.write_all(&body[length - 1..]).unwrap();
        if !called_early {
            // (A server that called the app early could still have had the last byte at hand
            // by then: what shows that it waits for the body is the 408 below.)
            let had = at_hand
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{case}: the app was not called"));
            assert_eq!(
                had, length,
                "{case}: the whole body was at hand when the app was called"
            );
        }
        let mut buf = BytesMut::new();
        let mut reply = read_reply(&mut stream, &mut buf, "POST");
        if !expect.is_empty() {
            assert_eq!(reply.status, 100, "{case}");
            reply = read_reply(&mut stream, &mut buf, "POST");
        }
        assert_eq!(reply.status, 200, "{case}");
        assert!(reply.body == body, "{case}: the body echoed whole");
        assert!(
            at_hand.try_recv().is_err(),
            "{case}: the app was called once"
        );

        if !called_early {
            // The last byte never comes: the server gives up on the body with a 408 and never
            // calls the app. (A streamed body is read by the app, which is called at once, and
            // whose failed read becomes the 408.)
            config.body_read_timeout = Duration::from_millis(200);
            let (at_hand, app) = echo_telling_the_body_at_hand();
            let server = Server::start(app, config);
            let mut stream = server.connect();
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body[..length - 1]).unwrap();
            let reply = read_reply(&mut stream, &mut BytesMut::new(), "POST");
            assert_eq!(reply.status, 408, "{case}");
            assert!(at_hand.try_recv().is_err(), "{case}: the app was called");
        }
    }
}

#[test]
fn a_slow_body_is_408_whether_read_first_or_streamed() {
    // (body_buffer_size, app calls): a body read before the app runs is answered without it;
    // a streamed one fails the app's read, and the driver's 500 becomes the 408. The app finds
    // the server's note of the failure in its environ, as a middleware that answers for the
    // server (an access log) does.
    for (buffer, calls) in [(Config::default().body_buffer_size, 0), (0, 1)] {
        let entered = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(None));
        let (count, noted) = (entered.clone(), seen.clone());
        let app = move |mut environ: Environ, _: StartResponse| {
            count.fetch_add(1, Ordering::SeqCst);
            let outcome = environ
                .extensions()
                .get::<gateway_core::BodyOutcome>()
                .cloned();
            let read = std::io::Read::read_to_end(environ.input(), &mut Vec::new());
            *noted.lock().unwrap() = outcome.map(|o| o.failure());
            match read {
                Ok(_) => Body::from("read"),
                Err(error) => Body::error(error),
            }
        };
        let mut config = config();
        config.body_read_timeout = Duration::from_millis(200);
        config.body_buffer_size = buffer;
        let server = Server::start(app, config);
        let mut stream = server.connect();
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        let reply = read_reply(&mut stream, &mut BytesMut::new(), "POST");
        assert_eq!(reply.status, 408, "buffer {buffer}");
        assert!(reply.header("server").is_some(), "buffer {buffer}");
        assert_eq!(entered.load(Ordering::SeqCst), calls, "buffer {buffer}");
        if calls == 1 {
            let failure = *seen.lock().unwrap();
            assert_eq!(failure, Some(Some(gateway_core::BodyFailure::TooSlow)));
        }
    }
}

#[test]
fn a_whole_body_leaves_the_request_limit_while_it_is_sent() {
    // With room for one request, a client that does not read its 8 MiB answer holds the
    // connection but not the request slot: the app is done, the answer is in memory.
    for blocking in [true, false] {
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        let app = move |environ: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, HeaderMap::new());
            if environ.path_info() == b"/big" {
                count.fetch_add(1, Ordering::SeqCst);
                return Body::from(vec![b'x'; 8 << 20]);
            }
            Body::from("small")
        };
        let mut config = config();
        config.max_requests = 1;
        config.blocking = blocking;
        let server = Server::start(app, config);
        let mut unread = server.connect();
        unread
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The slot goes back just after the app returns: allow a moment for that.
        let mut reply = request(&server, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
        while reply.status == 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            reply = request(&server, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        assert_eq!((blocking, reply.status), (blocking, 200));
        assert_eq!(reply.body, b"small");
        // The first client still gets all of its answer.
        let big = read_reply(&mut unread, &mut BytesMut::new(), "GET");
        assert_eq!(big.body.len(), 8 << 20, "blocking: {blocking}");
    }
}

#[test]
fn a_blocking_app_does_not_stall_other_connections() {
    // `/slow` holds its worker until the test releases it, then answers `ok`; if no release
    // comes within 10 s, it answers `not released`. Every other path answers `ok` at once.
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let app = move |environ: Environ, start: StartResponse| {
        let mut answer = "ok";
        if environ.path_info() == b"/slow" {
            let _ = entered_tx.send(());
            let wait = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
            if wait.is_err() {
                answer = "not released";
            }
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from(answer)
    };
    let server = Server::start(app, config());
    let mut slow = server.connect();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the app of /slow was called");
    // Served while `/slow` is held: a server that made them wait for it would serve them only
    // once its app gave up waiting (if the client's 10 s read timeout did not fail them first),
    // and `/slow` would then be answered `not released`.
    for _ in 0..5 {
        let reply = request(&server, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((reply.status, &reply.body[..]), (200, &b"ok"[..]));
    }
    release.send(()).unwrap();
    let reply = read_reply(&mut slow, &mut BytesMut::new(), "GET");
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        "ok",
        "released only after the fast requests were answered"
    );
}

#[test]
fn a_panic_is_a_500_for_that_request_only() {
    let app = |environ: Environ, start: StartResponse| {
        if environ.path_info() == b"/panic" {
            panic!("the app broke");
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from("fine")
    };
    let server = Server::start(app, config());
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    stream
        .write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf, "GET").status, 500);
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf, "GET").body, b"fine");
}

#[test]
fn a_body_longer_than_its_length_is_cut_and_the_connection_closed() {
    let app = |environ: Environ, start: StartResponse| {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("5"));
        let _ = start.start(StatusCode::OK, headers);
        match environ.path_info() {
            b"/long" => Body::from("hello world"),
            _ => Body::from("fine!"),
        }
    };
    for blocking in [true, false] {
        let mut config = config();
        config.blocking = blocking;
        let server = Server::start(app, config);
        let mut stream = server.connect();
        let mut buf = BytesMut::new();
        for _ in 0..2 {
            stream
                .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let reply = read_reply(&mut stream, &mut buf, "GET");
            assert_eq!(reply.body, b"fine!");
            assert_eq!(reply.header("connection"), None, "blocking: {blocking}");
        }
        stream
            .write_all(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let reply = read_reply(&mut stream, &mut buf, "GET");
        assert_eq!(reply.body, b"hello");
        assert_eq!(reply.header("connection"), Some("close"));
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty() && buf.is_empty(), "nothing past the cut");
    }
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_client_that_goes_away_mid_body_closes_the_app_body() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let app = move |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        let guard = DropFlag(flag.clone());
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        Body::from_chunks((0..100_000).map(move |_| {
            let _keep = &guard;
            std::thread::sleep(Duration::from_millis(1));
            chunk.clone()
        }))
    };
    let server = Server::start(app, config());
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut some = [0u8; 4096];
    stream.read_exact(&mut some).unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the app's body was dropped after the client left"
    );
}

#[test]
fn a_body_the_client_cuts_short_is_an_unexpected_eof_to_the_app() {
    let (seen, results) = std::sync::mpsc::channel();
    let seen = Mutex::new(seen);
    let app = move |mut environ: Environ, start: StartResponse| {
        let read = environ.input().read_to_end(&mut Vec::new());
        let _ = seen
            .lock()
            .unwrap()
            .send(read.map_err(|e| (e.kind(), e.to_string())));
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::empty()
    };
    let server = Server::start(app, config());
    // A declared length (above what is read before the app runs), and a chunked body.
    for (framing, sent) in [
        ("Content-Length: 100000\r\n", "0123456789"),
        ("Transfer-Encoding: chunked\r\n", "a\r\n0123456789\r\n"),
    ] {
        let mut stream = server.connect();
        stream
            .write_all(format!("POST / HTTP/1.1\r\nHost: x\r\n{framing}\r\n{sent}").as_bytes())
            .unwrap();
        drop(stream);
        let read = results
            .recv_timeout(Duration::from_secs(10))
            .expect("the app ran");
        let (kind, message) = read.expect_err(framing);
        assert_eq!(
            kind,
            std::io::ErrorKind::UnexpectedEof,
            "{framing}{message}"
        );
        if framing.starts_with("Content-Length") {
            assert!(message.contains("10 of 100000"), "{message}");
        }
    }
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    let started = Arc::new(AtomicUsize::new(0));
    let count = started.clone();
    let app = move |_: Environ, start: StartResponse| {
        count.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from("finished")
    };
    let mut server = Server::start(app, config());
    let addr = server.0.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut stream = server.connect();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let replies = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut stream| {
            let replies = replies.clone();
            std::thread::spawn(move || {
                let reply = read_reply(&mut stream, &mut BytesMut::new(), "GET");
                replies.lock().unwrap().push(reply.body);
            })
        })
        .collect();
    server.stop();
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(replies.lock().unwrap().len(), 4);
    assert!(replies.lock().unwrap().iter().all(|b| b == b"finished"));
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn http2_with_prior_knowledge() {
    let server = Server::start(echo, config());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.0.addr;
    let (status, protocol, body) = runtime.block_on(async move {
        let (mut sender, _connection) = h2_connect(addr).await;
        let request = http::Request::post("http://localhost/h2")
            .body(http_body_util::Full::new(Bytes::from("two")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let protocol = response.headers()["x-seen-server-protocol"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, protocol, body)
    });
    assert_eq!(status, 200);
    assert_eq!(protocol, "HTTP/2");
    assert_eq!(body, "POST /h2 two");
}

#[test]
fn repeated_equal_content_lengths_are_one_number() {
    let server = Server::start(echo, config());
    // HTTP/1: hyper takes the same number repeated, and refuses a list.
    for (lengths, status) in [
        ("Content-Length: 3\r\nContent-Length: 3\r\n", 200),
        ("Content-Length: 3, 3\r\n", 400),
    ] {
        let reply = request(
            &server,
            &format!("POST /cl HTTP/1.1\r\nHost: x\r\n{lengths}\r\nabc"),
        );
        assert_eq!(reply.status, status, "{lengths:?}");
        if status == 200 {
            assert_eq!(reply.header("x-seen-content-length"), Some("3"));
            assert_eq!(reply.body, b"POST /cl abc");
        }
    }
    // HTTP/2 takes the same number repeated.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.0.addr;
    let (status, seen, body) = runtime.block_on(async move {
        let (mut sender, _connection) = h2_connect(addr).await;
        let request = http::Request::post("http://localhost/cl")
            .header("content-length", "3")
            .header("content-length", "3")
            .body(http_body_util::Full::new(Bytes::from("abc")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let seen = response
            .headers()
            .get("x-seen-content-length")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, seen, body)
    });
    assert_eq!(status, 200);
    assert_eq!(seen.as_deref(), Some("3"));
    assert_eq!(body, "POST /cl abc");
}

#[test]
fn http2_requests_with_too_many_headers_answer_431() {
    let mut config = config();
    config.max_headers = 20;
    let server = Server::start(echo, config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.0.addr;
    let statuses = runtime.block_on(async move {
        let (mut sender, _connection) = h2_connect(addr).await;
        let mut statuses = Vec::new();
        for count in [30, 10] {
            let mut request = http::Request::get("http://localhost/");
            for i in 0..count {
                request = request.header(format!("x-h{i}"), "v");
            }
            let request = request
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            statuses.push(sender.send_request(request).await.unwrap().status());
        }
        statuses
    });
    assert_eq!(
        statuses,
        [431, 200],
        "the connection serves the next request"
    );
}

#[test]
fn an_idle_http2_connection_is_closed_at_the_keep_alive_timeout() {
    // `/slow` answers after longer than the keep-alive timeout: a request open is not idle.
    let mut config = config();
    config.keep_alive_timeout = Duration::from_millis(400);
    let server = Server::start(slow_on_slow_path(Duration::from_millis(800)), config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.0.addr;
    runtime.block_on(async move {
        // A connection that never sends a request is idle from its start.
        let (_unused, silent) = h2_connect(addr).await;
        let (mut sender, connection) = h2_connect(addr).await;
        for path in ["/slow", "/fast"] {
            let request = http::Request::get(format!("http://localhost{path}"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
        // Then nothing: the server says GOAWAY and the connection ends.
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(ended.is_ok(), "the idle HTTP/2 connection is still open");
        let ended = tokio::time::timeout(Duration::from_secs(5), silent).await;
        assert!(
            ended.is_ok(),
            "the HTTP/2 connection without a request is still open"
        );
    });
}

#[test]
fn the_environs_the_server_builds_pass_the_validator() {
    let validator = gateway_testkit::Validator::new(gateway_testkit::Mode::Strict);
    let report = validator.report();
    let app = gateway_core::Builder::new().with(validator).app(
        |mut environ: Environ, start: StartResponse| {
            let mut body = Vec::new();
            let _ = environ.input().read_to_end(&mut body);
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("text/plain"));
            let _ = start.start(StatusCode::OK, headers);
            Body::from(body)
        },
    );
    let server = Server::start(app, config());
    for raw in [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a%20b/c?q=1&r HTTP/1.1\r\nHost: example.com:8080\r\nX-Many: 1\r\nX-Many: 2\r\n\r\n",
        "POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        let reply = request(&server, raw);
        assert_eq!(reply.status, 200, "{raw}");
    }
    assert!(report.is_clean(), "{:#?}", report.violations());
}

/// Streams 64 MiB for `/big`, frame by frame from the worker pool (an iterator, which may
/// block, is not sent from memory); `ok` otherwise.
fn big_or_ok(environ: Environ, start: StartResponse) -> Body {
    let _ = start.start(StatusCode::OK, HeaderMap::new());
    if environ.path_info() == b"/big" {
        return Body::from_chunks((0..1024).map(|_| Bytes::from(vec![b'x'; 64 * 1024])));
    }
    Body::from("ok")
}

/// Sends `GET /` on new connections until one is answered with `status` (true), for `wait` at
/// most; the others must be answered 200 or 503.
fn answered_within(server: &Server, status: u16, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let mut stream = server.connect();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        if reply.starts_with(format!("HTTP/1.1 {status} ").as_bytes()) {
            return true;
        }
        assert!(
            reply.starts_with(b"HTTP/1.1 200 ") || reply.starts_with(b"HTTP/1.1 503 "),
            "{reply:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_client_that_stops_reading_gives_up_its_request_slot_at_the_send_timeout() {
    // One request at a time: while the stalled response holds its slot, others get 503.
    let mut config = config();
    config.max_requests = 1;
    config.send_timeout = Duration::from_secs(2);
    let server = Server::start(big_or_ok, config);
    let mut stalled = server.connect();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Its status line, so that it holds the slot before the others ask (else one of them may
    // take it first, and the big request gets the 503).
    let mut status = [0u8; 12];
    stalled.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    // Then reads nothing: the socket's buffers fill, and the server's writes wait. The stalled
    // response holds the slot (others get 503, for the two seconds of the send timeout, long
    // enough to see on a loaded machine); once its writes have waited that long, the
    // connection is closed and the slot is free again.
    assert!(
        answered_within(&server, 503, Duration::from_secs(10)),
        "the stalled response never held the slot"
    );
    assert!(
        answered_within(&server, 200, Duration::from_secs(20)),
        "the stalled response kept the only request slot"
    );
    // The stalled client finds its response cut short: far less than 64 MiB, then the end.
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert!(got.len() < 64 << 20, "{} bytes", got.len());
}

#[test]
fn an_http2_stream_whose_window_stays_shut_gives_up_its_request_slot_at_the_send_timeout() {
    let mut config = config();
    config.max_requests = 1;
    config.send_timeout = Duration::from_secs(2);
    let server = Server::start(big_or_ok, config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.0.addr;
    // A client that opens no flow-control window: the server may send the head, no data.
    let status = runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(0)
                .adaptive_window(false)
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get("http://localhost/big")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        // Kept, unread, while the other connection tries its luck.
        let status = response.status();
        tokio::task::spawn_blocking(move || {
            (
                answered_within(&server, 200, Duration::from_secs(20)),
                response,
            )
        })
        .await
        .map(|(answered, _)| (status, answered))
        .unwrap()
    });
    assert_eq!(status.0, 200);
    assert!(status.1, "the stalled stream kept the only request slot");
}

#[test]
fn a_connection_whose_client_stops_reading_a_response_from_memory_is_closed_at_the_send_timeout() {
    // A 32 MiB body whole in memory is sent by the connection itself (no request slot, no
    // pool thread): only the send timeout ends the connection that holds it.
    let mut config = config();
    config.send_timeout = Duration::from_millis(300);
    let server = Server::start(
        |_: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::OK, HeaderMap::new());
            Body::from(vec![b'x'; 32 << 20])
        },
        config,
    );
    let mut stalled = server.connect();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Ten times the send timeout without reading; then what is left in the sockets' buffers
    // is all that comes (the whole body would come if the server were still waiting).
    std::thread::sleep(Duration::from_secs(3));
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert!(got.len() < 32 << 20, "{} bytes", got.len());
}

#[test]
fn an_idle_http2_connection_whose_client_never_acknowledges_goaway_is_closed() {
    // h2 sends its last GOAWAY only once the client acknowledges a PING; this client sends the
    // preface and its settings, then reads and answers nothing.
    let mut config = config();
    config.keep_alive_timeout = Duration::from_millis(300);
    let server = Server::start(echo, config);
    let mut stream = server.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let mut sink = [0u8; 4096];
    let ended = loop {
        match stream.read(&mut sink) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "the connection was still open after 30 s");
}

#[test]
fn a_broken_request_body_is_the_client_s_400_not_a_500() {
    // A chunked body (it streams to the app) whose second chunk-size line is not hex: the
    // app's read fails, and the answer is the client's fault.
    let server = Server::start(echo, config());
    let mut raw = String::from("POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    raw.push_str(&format!("{:x}\r\n{}\r\n", 20_000, "c".repeat(20_000)));
    raw.push_str("zz\r\nnot a chunk\r\n");
    assert_eq!(request(&server, &raw).status, 400);
}

#[test]
fn a_crlf_after_a_request_leaves_the_connection_idle_not_owing_a_head() {
    // Some clients send a CRLF after a body; an empty line before a request line is ignored
    // (RFC 9112 §2.2). The connection must then wait for its keep-alive timeout, not time out
    // a head that never began.
    let mut config = config();
    config.header_read_timeout = Duration::from_millis(500);
    config.keep_alive_timeout = Duration::from_secs(6);
    let server = Server::start(echo, config);
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    stream
        .write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut stream, &mut buf, "POST").status, 200);
    // Another empty line once the connection is parked (idle past 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(b"\r\n").unwrap();
    // Three times the header timeout, well within the keep-alive timeout.
    std::thread::sleep(Duration::from_millis(1500));
    stream
        .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut stream, &mut buf, "GET");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"GET /b ");
}

/// Refuses `CONNECT` with 405 (and its `Allow`), answers anything else as [`echo`] does.
fn refuses_connect(environ: Environ, start: StartResponse) -> Body {
    if environ.request_method() != "CONNECT" {
        return echo(environ, start);
    }
    let mut headers = HeaderMap::new();
    headers.insert("allow", HeaderValue::from_static("GET, POST"));
    let _ = start.start(StatusCode::METHOD_NOT_ALLOWED, headers);
    Body::from("no tunnels here")
}

#[test]
fn a_2xx_answer_to_connect_is_501_and_a_refusal_goes_through() {
    // A 2xx to CONNECT would make the connection a tunnel, which the contract cannot serve
    // (hyper dropped the connection without a word): the client gets 501, and the connection
    // goes on as HTTP.
    let server = Server::start(echo, config());
    let mut stream = server.connect();
    let mut buf = BytesMut::new();
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut stream, &mut buf, "CONNECT");
    assert_eq!(reply.status, 501, "{reply:?}");
    assert_eq!(reply.body, b"501 Not Implemented\n");
    assert!(reply.header("server").unwrap().starts_with("gateway/"));
    stream
        .write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut stream, &mut buf, "GET");
    assert_eq!((reply.status, &reply.body[..]), (200, &b"GET /after "[..]));
    // With a body (short enough to be read whole for another method) too.
    let reply = request(
        &server,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(reply.status, 501, "{reply:?}");

    // An app that refuses the method is answered as it says.
    let refusing = Server::start(refuses_connect, config());
    let reply = request(
        &refusing,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
    assert_eq!(reply.body, b"no tunnels here");

    // HTTP/2 likewise (hyper reset the stream).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.0.addr;
    let status = runtime.block_on(async move {
        let (mut sender, _connection) = h2_connect(addr).await;
        let request = http::Request::connect("example.com:443")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        sender.send_request(request).await.unwrap().status()
    });
    assert_eq!(status, 501);
}

/// What a connection gets after writing `parts` one after another, a little apart: the
/// whole answer, until the server closes the connection.
fn after_writes(server: &Server, parts: &[&[u8]]) -> Vec<u8> {
    let mut stream = server.connect();
    for part in parts {
        stream.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn with_the_proxy_protocol_the_header_gives_the_client_and_anything_else_is_closed() {
    let mut config = config();
    config.proxy_protocol = true;
    config.header_read_timeout = Duration::from_millis(500);
    let server = Server::start(echo, config);
    let get = &b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..];
    let seen = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("x-seen-remote-addr: "))
            .unwrap_or_default()
            .to_owned()
    };
    // Version 1, cut in the middle of an address and sent with the request.
    let answer = after_writes(
        &server,
        &[
            b"PROXY TCP4 192.0.2.7 198.51.",
            b"100.1 40001 80\r\nGET /p HTTP/1.1\r\n",
            b"Host: x\r\nConnection: close\r\n\r\n",
        ],
    );
    assert_eq!(seen(&answer), "192.0.2.7");
    // Version 2, IPv6, alone in its write.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\0\x24".to_vec();
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0; 16]);
    v2.extend_from_slice(&[0x9c, 0x41, 0, 80]);
    assert_eq!(seen(&after_writes(&server, &[&v2, get])), "2001:db8::7");
    // The proxy's own connection (LOCAL): the socket's address stands.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\0\0";
    assert_eq!(seen(&after_writes(&server, &[local, get])), "127.0.0.1");
    // No header: closed without a byte.
    assert!(after_writes(&server, &[get]).is_empty());
    // A header that never ends: closed at the header timeout.
    let started = Instant::now();
    assert!(after_writes(&server, &[b"PROXY TCP4 192.0.2.7"]).is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
}

/// Answers with the environ's scheme, `HTTPS` and `REMOTE_ADDR` in headers, and
/// `SERVER_PROTOCOL` as its body.
#[cfg(feature = "tls")]
fn tells_the_scheme(environ: Environ, start: StartResponse) -> Body {
    let mut headers = HeaderMap::new();
    let scheme = HeaderValue::from_str(environ.url_scheme().as_str()).unwrap();
    headers.insert("x-scheme", scheme);
    let https = environ.get("HTTPS").unwrap_or(b"-");
    headers.insert("x-https", HeaderValue::from_bytes(https).unwrap());
    let remote = environ.get("REMOTE_ADDR").unwrap_or(b"-");
    headers.insert("x-remote-addr", HeaderValue::from_bytes(remote).unwrap());
    let _ = start.start(StatusCode::OK, headers);
    Body::from(environ.get("SERVER_PROTOCOL").unwrap_or_default().to_vec())
}

#[cfg(feature = "tls")]
#[test]
fn https_serves_http1_and_http2_by_alpn_after_a_proxy_header_too_and_tells_plain_http_clients() {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("gateway-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut config = config();
    config.tls = Some(gateway_servers::tls::TlsConfig::from_pem_files(&cert, &key).unwrap());
    config.header_read_timeout = Duration::from_millis(500);
    let server = Server::start(tells_the_scheme, config.clone());
    // Behind a load balancer that relays TCP: its PROXY header, then the handshake.
    config.proxy_protocol = true;
    let proxied = Server::start(tells_the_scheme, config);
    let _ = std::fs::remove_dir_all(&dir);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (alpn, protocol, proxy) in [
        ("http/1.1", "HTTP/1.1", false),
        ("h2", "HTTP/2", false),
        ("http/1.1", "HTTP/1.1", true),
        ("h2", "HTTP/2", true),
    ] {
        let addr = if proxy { proxied.0.addr } else { server.0.addr };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        client.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let (status, scheme, https, remote, body) = runtime.block_on(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            if proxy {
                let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n";
                tokio::io::AsyncWriteExt::write_all(&mut tcp, header)
                    .await
                    .unwrap();
            }
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(name, tcp)
                .await
                .unwrap();
            let io = hyper_util::rt::TokioIo::new(tls);
            let request = http::Request::get("https://localhost/x")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let response = if alpn == "h2" {
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await.unwrap()
            } else {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await.unwrap()
            };
            let status = response.status();
            let scheme = response.headers()["x-scheme"].to_str().unwrap().to_owned();
            let https = response.headers()["x-https"].to_str().unwrap().to_owned();
            let remote = response.headers()["x-remote-addr"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, scheme, https, remote, body)
        });
        assert_eq!(status, 200);
        assert_eq!((scheme.as_str(), https.as_str()), ("https", "on"));
        assert_eq!(body, protocol.as_bytes());
        let client = if proxy { "192.0.2.7" } else { "127.0.0.1" };
        assert_eq!(remote, client);
    }

    // Plain HTTP: a 400 that says why, in the clear, then the close.
    let answer = after_writes(&server, &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("This port speaks HTTPS: use an https:// URL.\n"),
        "{answer}"
    );
    // A handshake that never ends is closed at the header timeout, without a byte.
    let started = Instant::now();
    assert!(after_writes(&server, &[&[0x16, 0x03, 0x01]]).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(450));
}

/// Answers with the environ's `SSL_CLIENT_VERIFY`, a line feed, and its `SSL_CLIENT_CERT`
/// (`-` for each that is not set).
#[cfg(feature = "tls")]
fn tells_the_client_certificate(environ: Environ, start: StartResponse) -> Body {
    let mut body = environ.get("SSL_CLIENT_VERIFY").unwrap_or(b"-").to_vec();
    body.push(b'\n');
    body.extend_from_slice(environ.get("SSL_CLIENT_CERT").unwrap_or(b"-"));
    let _ = start.start(StatusCode::OK, HeaderMap::new());
    Body::from(body)
}

#[cfg(feature = "tls")]
#[test]
fn client_certificates_are_asked_for_verified_and_shown_to_the_app() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let authority = |name: &str| {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let (trusted, stranger) = (authority("trusted CA"), authority("stranger CA"));
    // A client's certificate and key, signed by `issuer`.
    let client = |issuer: &CertifiedIssuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.der().clone(), key.serialize_der())
    };
    let (good, good_key) = client(&trusted);
    let (bad, bad_key) = client(&stranger);

    let server_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("gateway-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, ca) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert, server_cert.cert.pem()).unwrap();
    std::fs::write(&key, server_cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&ca, trusted.pem()).unwrap();
    let server = |required: bool| {
        let mut config = config();
        config.tls = Some(
            gateway_servers::tls::TlsConfig::from_pem_files_with_client_ca(
                &cert, &key, &ca, required,
            )
            .unwrap(),
        );
        Server::start(tells_the_client_certificate, config)
    };
    let (required, optional) = (server(true), server(false));
    // A file with no authority in it: an error that names it.
    let error =
        gateway_servers::tls::TlsConfig::from_pem_files_with_client_ca(&cert, &key, &key, true)
            .unwrap_err();
    assert!(error.to_string().contains("key.pem: "), "{error}");
    let _ = std::fs::remove_dir_all(&dir);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert.cert.der().clone()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One GET over HTTP/1.1 with the client's certificate, if any: the body, or why not.
    let get = |addr: std::net::SocketAddr, identity: Option<(&CertificateDer<'static>, &[u8])>| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone());
        let client = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![cert.clone()],
                    PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.to_vec())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        runtime.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let io = hyper_util::rt::TokioIo::new(tls);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = http::Request::get("https://localhost/")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            // Under TLS 1.3 the server refuses a client's certificate after the client's side
            // of the handshake is done: the request fails then.
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>(String::from_utf8(body.to_vec()).unwrap())
        })
    };
    for server in [&required, &optional] {
        // A certificate from the trusted authority: the app sees it, as PEM.
        let seen = get(server.0.addr, Some((&good, &good_key))).unwrap();
        let (verify, pem) = seen.split_once('\n').unwrap();
        assert_eq!(verify, "SUCCESS");
        let shown = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(shown, good);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert!(pem.lines().all(|line| line.len() <= 64), "{pem}");
        // One from another authority: refused.
        let refused = get(server.0.addr, Some((&bad, &bad_key)));
        assert!(refused.is_err(), "{refused:?}");
    }
    // None: refused when one is required, served as NONE when it is optional.
    let refused = get(required.0.addr, None);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(get(optional.0.addr, None).unwrap(), "NONE\n-");

    // A rustls configuration that asks for no certificate: neither variable is set.
    let plain = {
        let rustls_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.cert.der().clone()],
            PrivateKeyDer::from(PrivatePkcs8KeyDer::from(
                server_cert.signing_key.serialize_der(),
            )),
        )
        .unwrap();
        let mut config = config();
        config.tls = Some(gateway_servers::tls::TlsConfig::new(Arc::new(
            rustls_config,
        )));
        Server::start(tells_the_client_certificate, config)
    };
    assert_eq!(get(plain.0.addr, None).unwrap(), "-\n-");
}
