//! Remote backends against real servers of this project on 127.0.0.1: the HTTP, FastCGI and
//! uwsgi servers each run a mirror app, and [`Remote`] forwards to them.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gateway_core::{App, Body, Environ, ErrorSink, ErrorStream, StartResponse};
use gateway_middleware::balancer::Balancer;
use gateway_middleware::remote::{BackendUrl, Remote};
use gateway_middleware::{BodyLimit, ProxyHeaders, TrustedNet};
use gateway_servers::fastcgi::codec::{
    ProtocolStatus, Record, StreamKind, decode_record, encode_end_of_stream, encode_end_request,
    encode_stream,
};
use gateway_servers::runtime::{Config, Runtime};
use gateway_testkit::clients::WireRequest;
use gateway_testkit::clients::http::Connection;
use gateway_testkit::{Mode, TestClient, TestServer, Validator};
use http::{HeaderMap, HeaderValue, StatusCode};

/// Answers with what it was given, in `x-` headers, and the request body as its body; writes
/// one line to `wsgi.errors`. `/slow` waits two seconds first.
fn mirror(mut environ: Environ, start: StartResponse) -> Body {
    if environ.path_info() == b"/slow" {
        std::thread::sleep(Duration::from_secs(2));
    }
    let method = environ.request_method().to_owned();
    let _ = writeln!(environ.errors(), "mirror saw {method}");
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &[u8]| {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    };
    put("x-method", environ.request_method().as_bytes());
    put("x-script-name", environ.script_name());
    put("x-path-info", environ.path_info());
    put("x-query", environ.query_string());
    put("x-scheme", environ.url_scheme().to_string().as_bytes());
    put(
        "x-terminated",
        if environ.input_terminated() {
            b"yes"
        } else {
            b"no"
        },
    );
    for (var, header) in [
        ("CONTENT_LENGTH", "x-content-length"),
        ("CONTENT_TYPE", "x-content-type"),
        ("HTTP_X_TOKEN", "x-token"),
        ("HTTP_X_HOP", "x-hop"),
        ("HTTP_X_FORWARDED_FOR", "x-saw-forwarded-for"),
        ("HTTP_X_FORWARDED_PROTO", "x-saw-forwarded-proto"),
        ("HTTP_HOST", "x-host"),
        ("REQUEST_SCHEME", "x-request-scheme"),
    ] {
        if let Some(value) = environ.get(var) {
            put(header, value);
        }
    }
    // The connection's own peer (the remote backend's side of it), not the forwarded one.
    if let Some(peer) = environ.peer_addr() {
        put("x-peer", peer.to_string().as_bytes());
    }
    let mut input = environ.take_input();
    let mut body = Vec::new();
    if let Err(error) = std::io::Read::read_to_end(&mut input, &mut body) {
        return Body::error(error);
    }
    let _ = start.start(StatusCode::OK, headers);
    // In pieces, so the response streams.
    let chunks: Vec<Bytes> = Bytes::from(body)
        .chunks(8192)
        .map(Bytes::copy_from_slice)
        .collect();
    Body::from_chunks(chunks)
}

struct Backends {
    servers: Vec<(&'static str, TestServer)>,
}

impl Backends {
    fn start() -> Backends {
        Backends {
            servers: vec![
                ("http", TestServer::http(mirror)),
                ("fastcgi", TestServer::fastcgi(mirror)),
                ("uwsgi", TestServer::uwsgi(mirror)),
            ],
        }
    }

    fn remotes(&self) -> Vec<(&'static str, Remote)> {
        self.servers
            .iter()
            .map(|(scheme, server)| {
                let url: BackendUrl = format!("{scheme}://{}", server.addr).parse().unwrap();
                (*scheme, Remote::new(url))
            })
            .collect()
    }
}

#[test]
fn requests_go_through_each_protocol_and_pass_the_validator_both_sides() {
    let backends = Backends::start();
    for (scheme, remote) in backends.remotes() {
        let validator = Validator::new(Mode::Strict);
        let report = validator.report();
        let client = TestClient::new(gateway_core::Builder::new().with(validator).app(remote));
        let response = client
            .get("/a%20b/c?x=1&y=%20")
            .header("x-token", "t-1")
            .header("connection", "x-hop")
            .header("x-hop", "dropped")
            .send();
        assert_eq!(response.status(), 200, "{scheme}: {:?}", response.text());
        assert_eq!(response.header("x-method"), Some("GET"), "{scheme}");
        assert_eq!(response.header("x-path-info"), Some("/a b/c"), "{scheme}");
        assert_eq!(response.header("x-query"), Some("x=1&y=%20"), "{scheme}");
        assert_eq!(response.header("x-token"), Some("t-1"), "{scheme}");
        assert_eq!(response.header("x-hop"), None, "{scheme}: hop-by-hop");
        assert_eq!(response.body(), "", "{scheme}");
        assert!(report.is_clean(), "{scheme}: {:?}", report.violations());
    }
}

#[test]
fn bodies_stream_both_ways_with_and_without_a_length() {
    let backends = Backends::start();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for (scheme, remote) in backends.remotes() {
        let client = TestClient::new(remote);
        let response = client.post("/echo").body(body.clone()).send();
        assert_eq!(response.status(), 200, "{scheme}");
        assert_eq!(response.body().len(), body.len(), "{scheme}");
        assert!(response.body()[..] == body[..], "{scheme}: the body echoed");
        assert_eq!(response.header("x-content-length"), Some("200000"));

        let pieces: Vec<Bytes> = body.chunks(7000).map(Bytes::copy_from_slice).collect();
        let response = client.post("/echo").chunks(pieces).send();
        assert_eq!(response.status(), 200, "{scheme}");
        assert!(
            response.body()[..] == body[..],
            "{scheme}: the chunked body echoed"
        );
        match scheme {
            // HTTP forwards the body chunked, as it came.
            "http" => assert_eq!(response.header("x-terminated"), Some("yes")),
            // FastCGI and uwsgi need its length: it was read ahead.
            _ => assert_eq!(
                response.header("x-content-length"),
                Some("200000"),
                "{scheme}"
            ),
        }
    }
}

#[test]
fn a_chunked_body_over_the_read_ahead_limit_is_413() {
    let backends = Backends::start();
    for (scheme, server) in &backends.servers[1..] {
        let url: BackendUrl = format!("{scheme}://{}", server.addr).parse().unwrap();
        let remote = Remote::builder(url).max_buffered_body(1000).build();
        let response = TestClient::new(remote)
            .post("/")
            .chunks([vec![b'a'; 600], vec![b'b'; 600]])
            .send();
        assert_eq!(response.status(), 413, "{scheme}");
    }
}

#[test]
fn http_backends_get_forwarded_headers() {
    let backends = Backends::start();
    let (_, remote) = backends.remotes().remove(0);
    let client = TestClient::new(remote);
    let response = client
        .get("/")
        .header("host", "example.org")
        .header("x-forwarded-for", "192.0.2.7")
        .send();
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("x-host"), Some("example.org"), "Host kept");
    let forwarded = response.header("x-saw-forwarded-for").unwrap();
    assert!(forwarded.starts_with("192.0.2.7, "), "{forwarded}");
    assert_eq!(response.header("x-saw-forwarded-proto"), Some("http"));
}

#[test]
fn connections_are_kept_alive_for_http_and_fastcgi_not_uwsgi() {
    let backends = Backends::start();
    for (scheme, remote) in backends.remotes() {
        let client = TestClient::new(remote);
        let ports: Vec<String> = (0..3)
            .map(|_| {
                let response = client.get("/").send();
                assert_eq!(response.status(), 200, "{scheme}");
                response.header("x-peer").unwrap().to_owned()
            })
            .collect();
        let reused = ports.iter().all(|port| *port == ports[0]);
        assert_eq!(reused, scheme != "uwsgi", "{scheme}: {ports:?}");
    }
}

/// An error sink that keeps the lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl ErrorSink for Lines {
    fn write_message(&self, message: &[u8]) {
        let line = String::from_utf8_lossy(message).into_owned();
        self.0.lock().unwrap().push(line);
    }
}

/// `app` with the request's `wsgi.errors` going to `lines`.
fn logged(app: Remote, lines: Lines) -> impl App {
    move |mut environ: Environ, start: StartResponse| {
        environ.set_errors(ErrorStream::new(lines.clone()));
        app.call(environ, start)
    }
}

#[test]
fn fastcgi_stderr_reaches_the_request_error_stream() {
    let backends = Backends::start();
    let (_, remote) = backends.remotes().remove(1);
    let lines = Lines::default();
    let response = TestClient::new(logged(remote, lines.clone()))
        .put("/")
        .send();
    assert_eq!(response.status(), 200);
    let lines = lines.0.lock().unwrap().join("");
    assert!(lines.contains("mirror saw PUT"), "{lines:?}");
}

#[test]
fn unreachable_and_slow_backends_are_502_and_504_and_logged() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for scheme in ["http", "fastcgi", "uwsgi"] {
        let url: BackendUrl = format!("{scheme}://127.0.0.1:{closed_port}")
            .parse()
            .unwrap();
        let lines = Lines::default();
        let response = TestClient::new(logged(Remote::new(url), lines.clone()))
            .get("/")
            .send();
        assert_eq!(response.status(), 502, "{scheme}");
        let logged = lines.0.lock().unwrap().join("");
        assert!(logged.contains("cannot connect"), "{scheme}: {logged:?}");
    }
    let backends = Backends::start();
    for (scheme, server) in &backends.servers {
        let url: BackendUrl = format!("{scheme}://{}", server.addr).parse().unwrap();
        let remote = Remote::builder(url)
            .response_timeout(Duration::from_millis(300))
            .build();
        let response = TestClient::new(remote).get("/slow").send();
        assert_eq!(response.status(), 504, "{scheme}");
    }
}

#[test]
fn unix_socket_backends() {
    let dir = std::env::temp_dir().join(format!("gateway-remote-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fcgi.sock");
    let bind = gateway_servers::runtime::Bind::Unix(path.clone());
    let _server = TestServer::start(move |_, stop| {
        let listener = gateway_servers::runtime::Listener::bind(&bind, None).unwrap();
        let runtime = gateway_servers::runtime::Runtime::new(
            mirror,
            gateway_servers::runtime::Config::default(),
        );
        gateway_servers::fastcgi::server::serve(listener, runtime, stop, Default::default())
    });
    let url: BackendUrl = format!("fastcgi://unix:{}", path.display())
        .parse()
        .unwrap();
    let response = TestClient::new(Remote::new(url))
        .post("/u")
        .body("over unix")
        .send();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), "over unix");
    let _ = std::fs::remove_dir_all(dir);
}

/// A FastCGI backend that keeps the records it is sent, grouped by request, and answers each
/// request with `ok` once its `FCGI_STDIN` stream has ended. It serves its connections one after
/// the other, until it has seen `requests` requests and the connection they came on closes, then
/// gives the records.
fn recording_fastcgi(requests: usize) -> (String, std::thread::JoinHandle<Vec<Vec<Record>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("fastcgi://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen: Vec<Vec<Record>> = Vec::new();
        while seen.len() < requests {
            let (mut conn, _) = listener.accept().unwrap();
            // A remote backend that never closes its connection fails the test, not hangs it.
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = BytesMut::new();
            let mut answered = true;
            loop {
                while let Some(record) = decode_record(&mut buf).unwrap() {
                    if let Record::BeginRequest { .. } = record {
                        seen.push(Vec::new());
                        answered = false;
                    }
                    let ends_stdin = matches!(
                        &record,
                        Record::Stream { kind: StreamKind::Stdin, data, .. } if data.is_empty()
                    );
                    seen.last_mut()
                        .expect("a record before FCGI_BEGIN_REQUEST")
                        .push(record);
                    if ends_stdin && !answered {
                        answered = true;
                        let mut answer = BytesMut::new();
                        let response = b"Content-Type: text/plain\r\n\r\nok";
                        encode_stream(&mut answer, StreamKind::Stdout, 1, response);
                        encode_end_of_stream(&mut answer, StreamKind::Stdout, 1);
                        encode_end_request(&mut answer, 1, 0, ProtocolStatus::RequestComplete);
                        conn.write_all(&answer).unwrap();
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = std::io::Read::read(&mut conn, &mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        seen
    });
    (url, handle)
}

#[test]
fn fastcgi_requests_end_their_stdin_with_exactly_one_empty_record() {
    let (url, backend) = recording_fastcgi(5);
    let client = TestClient::new(Remote::new(url.parse().unwrap()));
    // No body and no `CONTENT_LENGTH`: read ahead to nothing.
    assert_eq!(client.get("/").send().text(), "ok");
    // An empty chunked body, and one with an empty piece: read ahead too.
    assert_eq!(
        client.post("/").chunks(Vec::<Bytes>::new()).send().text(),
        "ok"
    );
    let pieces = [&b"ab"[..], b"", b"c"].map(Bytes::from_static);
    assert_eq!(client.post("/").chunks(pieces).send().text(), "ok");
    // A length of 0, and a body of known length: streamed.
    assert_eq!(client.post("/").body("").send().text(), "ok");
    assert_eq!(client.post("/").body("abc").send().text(), "ok");
    // The backend has all the records once the remote backend's connections close.
    drop(client);
    let requests = backend.join().expect("the recording backend");
    let bodies = ["", "", "abc", "", "abc"];
    assert_eq!(requests.len(), bodies.len(), "{requests:?}");
    for (records, body) in requests.iter().zip(bodies) {
        let stdin: Vec<&[u8]> = records
            .iter()
            .filter_map(|record| match record {
                Record::Stream {
                    kind: StreamKind::Stdin,
                    data,
                    ..
                } => Some(&data[..]),
                _ => None,
            })
            .collect();
        let ends = stdin.iter().filter(|data| data.is_empty()).count();
        assert_eq!(ends, 1, "one empty FCGI_STDIN record: {records:?}");
        assert!(
            stdin.last().unwrap().is_empty(),
            "it comes last: {records:?}"
        );
        assert_eq!(stdin.concat(), body.as_bytes(), "{records:?}");
    }
}

#[test]
fn a_balancer_sends_a_post_again_only_when_the_remote_could_not_connect() {
    let backends = Backends::start();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for (scheme, server) in &backends.servers {
        let up: BackendUrl = format!("{scheme}://{}", server.addr).parse().unwrap();
        let down: BackendUrl = format!("{scheme}://127.0.0.1:{closed_port}")
            .parse()
            .unwrap();
        // Round robin: the first request of each balancer goes to its first backend.
        let balancer = Balancer::builder()
            .backend("down", Remote::new(down))
            .backend("up", Remote::new(up.clone()))
            .build();
        let response = TestClient::new(balancer).post("/").body("once").send();
        assert_eq!(
            response.status(),
            200,
            "{scheme}: sent to the second backend"
        );
        assert_eq!(response.text(), "once", "{scheme}");

        // The first backend took the POST and did not answer in time: it may still be running
        // it, so it is not sent to the second. It has no body, so none of it was read: that
        // does not make it safe to send again.
        let slow = Remote::builder(up.clone())
            .response_timeout(Duration::from_millis(300))
            .build();
        let balancer = Balancer::builder()
            .backend("slow", slow)
            .backend("up", Remote::new(up))
            .build();
        // Sent again, it would be answered 200 by the second backend two seconds later.
        let response = TestClient::new(balancer).post("/slow").send();
        assert_eq!(response.status(), 504, "{scheme}: not sent twice");
    }
}

/// A backend on a free port that serves one connection with `serve`.
fn one_connection(
    serve: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve(stream);
    });
    (addr, backend)
}

/// A uwsgi backend on a free port that reads one request packet (its vars ignored), then
/// answers with `answer`.
fn uwsgi_backend(
    answer: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    one_connection(move |mut stream| {
        // The packet's header says how long its vars are.
        let mut header = [0u8; 4];
        std::io::Read::read_exact(&mut stream, &mut header).unwrap();
        let mut vars = vec![0u8; usize::from(u16::from_le_bytes([header[1], header[2]]))];
        std::io::Read::read_exact(&mut stream, &mut vars).unwrap();
        answer(stream);
    })
}

/// Reads one HTTP request from `stream`, its body framed by `Content-Length` or chunked (up to
/// the last chunk, trailers not expected): the bytes as they came. `None` when the connection
/// ends before a byte of it.
fn read_http_request(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    // A remote backend that never sends the whole request fails the test, not hangs it.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |request: &[u8]| {
        let end = request.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
        let body = &request[end..];
        if head.contains("\r\ntransfer-encoding: chunked\r\n") {
            return body.ends_with(b"0\r\n\r\n").then_some(());
        }
        let length = head
            .split("\r\n")
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        (body.len() >= length).then_some(())
    };
    while complete(&request).is_none() {
        let n = std::io::Read::read(stream, &mut chunk).unwrap();
        if n == 0 {
            assert!(request.is_empty(), "a request cut short: {request:?}");
            return None;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    Some(request)
}

/// An HTTP backend on a free port that reads one request, then answers with `answer`, given
/// the request's bytes.
fn http_backend(
    answer: impl FnOnce(std::net::TcpStream, Vec<u8>) + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    one_connection(move |mut stream| {
        let request = read_http_request(&mut stream).expect("a request");
        answer(stream, request);
    })
}

#[test]
fn a_uwsgi_backend_s_interim_head_is_skipped_for_its_final_one() {
    let (addr, backend) = uwsgi_backend(|mut stream| {
        stream
            .write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                  HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade",
            )
            .unwrap();
    });
    let url: BackendUrl = format!("uwsgi://{addr}").parse().unwrap();
    let response = TestClient::new(Remote::new(url)).get("/").send();
    assert_eq!(response.status(), 201);
    assert_eq!(response.text(), "made");
    backend.join().unwrap();
}

#[test]
fn a_head_trickled_past_the_response_timeout_is_504() {
    let (addr, backend) = uwsgi_backend(|mut stream| {
        // A byte every 100 ms: each read comes well within the timeout, the head never does.
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let url: BackendUrl = format!("uwsgi://{addr}").parse().unwrap();
    let remote = Remote::builder(url)
        .response_timeout(Duration::from_millis(500))
        .build();
    let response = TestClient::new(remote).get("/").send();
    assert_eq!(response.status(), 504);
    backend.join().unwrap();
}

/// Sends two GETs (with `Content-Length: 0` or with no body) through a Remote to `url`: both
/// must be answered 200 `ok`.
fn two_gets_answered_ok(url: BackendUrl, with_length: bool) {
    let client = TestClient::new(Remote::new(url));
    for _ in 0..2 {
        let request = match with_length {
            true => client.get("/").body(""),
            false => client.get("/"),
        };
        let response = request.send();
        assert_eq!(
            (response.status().as_u16(), response.text().as_str()),
            (200, "ok"),
            "with a length: {with_length}: {:?}",
            response.failure()
        );
    }
}

#[test]
fn a_kept_fastcgi_connection_the_backend_closed_is_replaced_for_the_next_request() {
    // The backend answers the first request and keeps the connection, then closes it when the
    // second comes, unanswered, as a PHP-FPM child does when it ends at `pm.max_requests` just
    // as a request arrives; it answers on the next connection. The GETs have no body, or one of
    // `Content-Length: 0`.
    for with_length in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: BackendUrl = format!("fastcgi://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let backend = std::thread::spawn(move || {
            /// Reads one request whole from `conn`.
            fn read_request(conn: &mut std::net::TcpStream, buf: &mut BytesMut) {
                loop {
                    while let Some(record) = decode_record(buf).unwrap() {
                        if matches!(&record, Record::Stream { kind: StreamKind::Stdin, data, .. } if data.is_empty())
                        {
                            return;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    let n = std::io::Read::read(conn, &mut chunk).unwrap();
                    assert!(n > 0, "the request came whole");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            let answer = || {
                let mut answer = BytesMut::new();
                encode_stream(
                    &mut answer,
                    StreamKind::Stdout,
                    1,
                    b"Status: 200 OK\r\n\r\nok",
                );
                encode_end_of_stream(&mut answer, StreamKind::Stdout, 1);
                encode_end_request(&mut answer, 1, 0, ProtocolStatus::RequestComplete);
                answer
            };
            let (mut first, _) = listener.accept().unwrap();
            let mut buf = BytesMut::new();
            read_request(&mut first, &mut buf);
            first.write_all(&answer()).unwrap();
            read_request(&mut first, &mut buf);
            drop(first);
            let (mut second, _) = listener.accept().unwrap();
            read_request(&mut second, &mut BytesMut::new());
            second.write_all(&answer()).unwrap();
        });
        two_gets_answered_ok(url, with_length);
        backend.join().unwrap();
    }
}

#[test]
fn a_kept_http_connection_the_backend_closed_as_the_request_came_is_replaced_for_a_get() {
    // The backend answers the first request and keeps the connection, then reads the second
    // and closes the connection unanswered, as a server does whose keep-alive time ends just as
    // a request comes; it answers on the next connection. The GETs have no body, or one of
    // `Content-Length: 0`: nothing of them is lost.
    for with_length in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: BackendUrl = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let backend = std::thread::spawn(move || {
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            let (mut first, _) = listener.accept().unwrap();
            read_http_request(&mut first).expect("the first request");
            first.write_all(ok).unwrap();
            read_http_request(&mut first).expect("the second request");
            drop(first);
            let (mut second, _) = listener.accept().unwrap();
            read_http_request(&mut second).expect("the second request again");
            second.write_all(ok).unwrap();
        });
        two_gets_answered_ok(url, with_length);
        backend.join().unwrap();
    }
}

/// A request body that arrives in `pieces` pieces of 1,000 bytes, `gap` apart: a slow client.
struct Trickle {
    pieces: usize,
    gap: Duration,
    delay: Option<futures_timer::Delay>,
}

impl futures_core::Stream for Trickle {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.pieces == 0 {
            return std::task::Poll::Ready(None);
        }
        let gap = self.gap;
        let delay = self
            .delay
            .get_or_insert_with(|| futures_timer::Delay::new(gap));
        std::task::ready!(std::pin::Pin::new(delay).poll(cx));
        self.delay = None;
        self.pieces -= 1;
        std::task::Poll::Ready(Some(Ok(Bytes::from(vec![b'u'; 1000]))))
    }
}

/// Sends a body of `pieces` pieces, `gap` apart, through a Remote with `response_timeout` to
/// each backend, which answers once it has read the whole body: each must answer it whole.
fn trickled_through_each_backend(response_timeout: Duration, pieces: usize, gap: Duration) {
    let backends = Backends::start();
    for (scheme, server) in &backends.servers {
        let url: BackendUrl = format!("{scheme}://{}", server.addr).parse().unwrap();
        let remote = Remote::builder(url)
            .response_timeout(response_timeout)
            .build();
        let body = Trickle {
            pieces,
            gap,
            delay: None,
        };
        let response = TestClient::new(remote)
            .post("/upload")
            .header("content-length", (pieces * 1000).to_string())
            .stream(body)
            .send();
        assert_eq!(response.status(), 200, "{scheme}: {:?}", response.text());
        assert_eq!(response.text(), "u".repeat(pieces * 1000), "{scheme}");
    }
}

#[test]
fn a_body_uploading_longer_than_the_response_timeout_is_not_cut_while_it_moves() {
    // Eight pieces 250 ms apart: two seconds to send, against a one-second response timeout
    // that each gap stays well inside.
    trickled_through_each_backend(Duration::from_secs(1), 8, Duration::from_millis(250));
}

#[test]
fn a_backend_that_stops_reading_the_body_and_never_answers_is_504() {
    // The backend takes the packet's vars and then nothing: the 4 MiB body fills the socket's
    // buffers, the request stops moving, and the response timeout runs out.
    let (addr, backend) = uwsgi_backend(|stream| {
        std::thread::sleep(Duration::from_secs(2));
        drop(stream);
    });
    let url: BackendUrl = format!("uwsgi://{addr}").parse().unwrap();
    let remote = Remote::builder(url)
        .response_timeout(Duration::from_millis(500))
        .build();
    let response = TestClient::new(remote)
        .post("/")
        .body(vec![b'b'; 4 << 20])
        .send();
    assert_eq!(response.status(), 504);
    backend.join().unwrap();
}

#[test]
fn timeouts_too_large_to_add_to_an_instant_mean_no_timeout() {
    let backends = Backends::start();
    for (scheme, server) in &backends.servers {
        let url: BackendUrl = format!("{scheme}://{}", server.addr).parse().unwrap();
        let remote = Remote::builder(url)
            .connect_timeout(Duration::MAX)
            .response_timeout(Duration::MAX)
            .build();
        let response = TestClient::new(remote).post("/").body("no limit").send();
        assert_eq!(response.status(), 200, "{scheme}: {:?}", response.failure());
        assert_eq!(response.text(), "no limit", "{scheme}");
    }
}

#[test]
fn a_status_header_from_an_http_or_uwsgi_backend_is_dropped_and_logged() {
    let answer = b"HTTP/1.1 200 OK\r\nStatus: 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let (http, http_backend) = http_backend(|mut stream, _| stream.write_all(answer).unwrap());
    let (uwsgi, uwsgi_backend) = uwsgi_backend(|mut stream| stream.write_all(answer).unwrap());
    for url in [format!("http://{http}"), format!("uwsgi://{uwsgi}")] {
        let lines = Lines::default();
        let remote = Remote::new(url.parse().unwrap());
        let response = TestClient::new(logged(remote, lines.clone()))
            .get("/")
            .send();
        assert_eq!(response.status(), 200, "{url}: {:?}", response.failure());
        assert_eq!(response.text(), "ok", "{url}");
        assert_eq!(response.header("status"), None, "{url}");
        let logged = lines.0.lock().unwrap().join("");
        assert_eq!(
            logged.matches("`Status` header dropped").count(),
            1,
            "{url}: {logged:?}"
        );
    }
    http_backend.join().unwrap();
    uwsgi_backend.join().unwrap();
}

#[test]
fn connection_tokens_do_not_take_the_body_s_length_and_type_or_the_host() {
    let backends = Backends::start();
    for (scheme, remote) in backends.remotes() {
        let response = TestClient::new(remote)
            .post("/")
            .header("host", "example.org")
            .header("content-type", "text/plain")
            .header("connection", "content-length, content-type, host, x-hop")
            .header("x-hop", "dropped")
            .body("abc")
            .send();
        assert_eq!(response.status(), 200, "{scheme}");
        assert_eq!(response.text(), "abc", "{scheme}: the body came whole");
        assert_eq!(response.header("x-content-length"), Some("3"), "{scheme}");
        assert_eq!(response.header("x-host"), Some("example.org"), "{scheme}");
        assert_eq!(response.header("x-hop"), None, "{scheme}: hop-by-hop");
        if scheme != "http" {
            // An HTTP proxy removes the fields `Connection` names (RFC 9110 §7.6.1); hyper
            // frames the body again by its length.
            assert_eq!(
                response.header("x-content-type"),
                Some("text/plain"),
                "{scheme}"
            );
        }
    }
}

#[test]
fn behind_proxy_headers_the_hop_appended_is_the_peer_and_the_scheme_the_believed_one() {
    let backends = Backends::start();
    for (scheme, remote) in backends.remotes() {
        let trusted = "127.0.0.1".parse::<TrustedNet>().unwrap();
        let proxied = gateway_core::Builder::new()
            .with(ProxyHeaders::new().trust(trusted))
            .app(remote);
        // A front end that gives its own hop's scheme, as a FastCGI one does.
        let front = move |mut environ: Environ, start: StartResponse| {
            environ.set("REQUEST_SCHEME", "http");
            proxied.call(environ, start)
        };
        // The peer (the test client's 127.0.0.1) is a trusted proxy, which says its client
        // came over https.
        let response = TestClient::new(front)
            .get("/")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .send();
        assert_eq!(response.status(), 200, "{scheme}");
        match scheme {
            "http" => {
                assert_eq!(
                    response.header("x-saw-forwarded-for"),
                    Some("203.0.113.7, 127.0.0.1")
                );
                assert_eq!(response.header("x-saw-forwarded-proto"), Some("https"));
            }
            _ => assert_eq!(
                response.header("x-request-scheme"),
                Some("https"),
                "{scheme}"
            ),
        }
    }
}

#[test]
fn transfer_encoding_overrides_content_length_in_an_answer() {
    // Each answer's Content-Length is shorter than its body: kept, it would cut the body there
    // and the answer would look complete.
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                    6\r\nabcdef\r\n0\r\n\r\n";
    let (http, http_backend) = http_backend(|mut stream, _| stream.write_all(chunked).unwrap());
    let url: BackendUrl = format!("http://{http}").parse().unwrap();
    let response = TestClient::new(Remote::new(url)).get("/").send();
    assert_eq!(response.status(), 200, "{:?}", response.failure());
    assert_eq!(response.text(), "abcdef", "http");
    assert_eq!(response.header("content-length"), None, "http");
    http_backend.join().unwrap();

    let (uwsgi, backend) = uwsgi_backend(move |mut stream| stream.write_all(chunked).unwrap());
    let url: BackendUrl = format!("uwsgi://{uwsgi}").parse().unwrap();
    let response = TestClient::new(Remote::new(url)).get("/").send();
    assert_eq!(response.status(), 200, "{:?}", response.failure());
    assert_eq!(response.text(), "abcdef", "uwsgi");
    assert_eq!(response.header("content-length"), None, "uwsgi");
    backend.join().unwrap();
}

#[test]
fn an_answer_in_a_transfer_coding_other_than_chunked_is_a_502() {
    // Only `chunked` is undone: a gzip-coded body would reach the client without the header
    // that names its coding (Transfer-Encoding is hop-by-hop).
    for answer in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\nabc",
        // An empty element: hyper reads this body to the close, chunk lines and all.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ] {
        let shown = String::from_utf8_lossy(answer).into_owned();
        let (http, backend) = http_backend(move |mut stream, _| stream.write_all(answer).unwrap());
        let url: BackendUrl = format!("http://{http}").parse().unwrap();
        let response = TestClient::new(Remote::new(url)).get("/").send();
        assert_eq!(response.status(), 502, "http, {shown:?}");
        backend.join().unwrap();
        let (uwsgi, backend) = uwsgi_backend(move |mut stream| stream.write_all(answer).unwrap());
        let url: BackendUrl = format!("uwsgi://{uwsgi}").parse().unwrap();
        let response = TestClient::new(Remote::new(url)).get("/").send();
        assert_eq!(response.status(), 502, "uwsgi, {shown:?}");
        backend.join().unwrap();
    }
    // The answer to a HEAD has no body to decode, whatever its Transfer-Encoding says.
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    let (http, backend) = http_backend(move |mut stream, _| stream.write_all(head).unwrap());
    let url: BackendUrl = format!("http://{http}").parse().unwrap();
    let response = TestClient::new(Remote::new(url)).head("/").send();
    assert_eq!(response.status(), 200, "{:?}", response.failure());
    backend.join().unwrap();
}

#[test]
fn a_body_of_unknown_length_goes_chunked_whatever_the_method_and_no_body_goes_as_none() {
    // A GET's body of unknown length reaches the backend whole (hyper sends none for a GET of
    // unknown length unless told the framing).
    let backends = Backends::start();
    let (_, remote) = backends.remotes().remove(0);
    let response = TestClient::new(remote)
        .get("/")
        .header("transfer-encoding", "chunked")
        .chunks(["ab", "cd"])
        .send();
    assert_eq!(
        (response.status().as_u16(), response.text().as_str()),
        (200, "abcd")
    );

    // Behind a balancer, which reads the body for each attempt, each request goes as it came.
    // The backend answers with the request as it got it.
    let cases: [(&str, Option<Vec<&'static str>>, &str); 4] = [
        ("GET", None, ""),
        ("DELETE", None, ""),
        (
            "GET",
            Some(vec!["ab", "cd"]),
            "2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
        ),
        ("PUT", Some(vec!["abc"]), "abc"),
    ];
    for (method, chunks, sent) in cases {
        let (addr, backend) = request_mirror();
        let url: BackendUrl = format!("http://{addr}").parse().unwrap();
        let balancer = Balancer::builder().backend("one", Remote::new(url)).build();
        let client = TestClient::new(balancer);
        let request = client.request(method.parse().unwrap(), "/");
        let request = match chunks {
            // A length: PUT's body is given with one.
            Some(chunks) if method == "PUT" => request.body(chunks.concat()),
            Some(chunks) => request
                .header("transfer-encoding", "chunked")
                .chunks(chunks),
            None => request,
        };
        let response = request.send();
        assert_eq!(response.status(), 200, "{method}");
        let got = response.text();
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        assert_eq!(body, sent, "{method}: {got:?}");
        let chunked = head.contains("\r\ntransfer-encoding: chunked");
        assert_eq!(chunked, sent.ends_with("0\r\n\r\n"), "{method}: {got:?}");
        if method == "PUT" {
            assert!(head.contains("\r\ncontent-length: 3"), "{got:?}");
        }
        backend.join().unwrap();
    }
}

#[test]
fn a_client_that_stalls_its_upload_longer_than_the_response_timeout_is_not_the_backend_s_504() {
    // The body's one piece comes after three times the response timeout: the Remote waits for
    // the client, not for the backend.
    trickled_through_each_backend(Duration::from_millis(500), 1, Duration::from_millis(1500));
}

/// This project's HTTP server with `config`, running `app`.
fn http_server(app: impl App + 'static, config: Config) -> TestServer {
    TestServer::start(move |listener, stop| {
        gateway_servers::http::serve(listener, Runtime::new(app, config), stop)
    })
}

#[test]
fn a_request_body_over_a_limit_behind_a_remote_is_the_limit_s_413_not_the_backend_s_failure() {
    // A chunked body of 1,200 bytes against limits of 1,000: the server's `max_body_size`, and
    // a `BodyLimit` inside it. The remote backends read it (HTTP streams it, FastCGI and uwsgi
    // read it ahead) until it fails; behind a balancer that ejects at the first failure.
    let backends = Backends::start();
    for (scheme, remote) in backends.remotes() {
        for limit in ["server", "BodyLimit"] {
            let balancer = Balancer::builder()
                .max_fails(1)
                .backend(scheme, remote.clone())
                .build();
            let mut config = Config::default();
            let server = match limit {
                "server" => {
                    config.max_body_size = 1000;
                    http_server(balancer.clone(), config)
                }
                _ => {
                    let limited = gateway_core::Builder::new()
                        .with(BodyLimit::new(1000))
                        .app(balancer.clone());
                    http_server(limited, config)
                }
            };
            let mut client = Connection::connect(&server.addr.to_string()).unwrap();
            let request = WireRequest::new("POST", "/").chunked(vec![vec![b'a'; 600]; 2]);
            let reply = client.exchange(&request).unwrap();
            assert_eq!(reply.status, 413, "{scheme}, {limit}");
            assert_eq!(
                balancer.status()[0].fails,
                0,
                "{scheme}, {limit}: not counted"
            );
        }
    }
}

#[test]
fn a_client_that_stalls_its_upload_behind_a_remote_gets_the_server_s_408() {
    // The client sends 3 of its 10 bytes and stops: the server's body timeout ends the body,
    // and the server answers 408, though the Remote's response timeout is shorter.
    let backends = Backends::start();
    for (scheme, server) in &backends.servers {
        let url: BackendUrl = format!("{scheme}://{}", server.addr).parse().unwrap();
        let remote = Remote::builder(url)
            .response_timeout(Duration::from_millis(200))
            .build();
        let balancer = Balancer::builder()
            .max_fails(1)
            .backend(*scheme, remote)
            .build();
        let mut config = Config::default();
        config.body_read_timeout = Duration::from_millis(800);
        // The body streams to the app (a short one of known length is read before it).
        config.body_buffer_size = 0;
        let front = http_server(balancer.clone(), config);
        let mut client = Connection::connect(&front.addr.to_string()).unwrap();
        client
            .send_raw(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        let reply = client.read_reply(false).unwrap();
        assert_eq!(reply.status, 408, "{scheme}");
        assert_eq!(balancer.status()[0].fails, 0, "{scheme}: not counted");
    }
}

/// An HTTP backend for one request that answers with the request as it got it, head and body.
fn request_mirror() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    http_backend(|mut stream, request| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            request.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&request).unwrap();
    })
}

#[test]
fn a_get_whose_input_is_of_unknown_length_but_was_not_chunked_goes_without_a_body() {
    // As a FastCGI web server's GET comes when its empty stdin record is still on the way: an
    // input not yet known to be empty, and no sign of a body from the client.
    let (addr, backend) = request_mirror();
    let url: BackendUrl = format!("http://{addr}").parse().unwrap();
    let nothing = Trickle {
        pieces: 0,
        gap: Duration::ZERO,
        delay: None,
    };
    let response = TestClient::new(Remote::new(url))
        .get("/")
        .stream(nothing)
        .send();
    assert_eq!(response.status(), 200);
    let sent = response.text().to_ascii_lowercase();
    assert!(!sent.contains("transfer-encoding"), "{sent:?}");
    assert!(sent.ends_with("\r\n\r\n"), "no body: {sent:?}");
    backend.join().unwrap();
}

#[test]
fn an_http2_get_s_body_of_unknown_length_reaches_the_backend() {
    // HTTP/2 frames a body itself: a GET with DATA frames and no content-length has no
    // Transfer-Encoding to tell of it, and its body goes on chunked.
    let (addr, backend) = request_mirror();
    let url: BackendUrl = format!("http://{addr}").parse().unwrap();
    let mut environ = Environ::new();
    environ.set("REQUEST_METHOD", "GET");
    environ.set("SERVER_PROTOCOL", "HTTP/2");
    environ.set("PATH_INFO", "/");
    environ.set_input(gateway_core::Input::from_body(Body::from_chunks([
        "ab", "cd",
    ])));
    let response = gateway_core::block_on(gateway_core::driver::call(&Remote::new(url), environ));
    let body = gateway_core::block_on(http_body_util::BodyExt::collect(response.into_body()))
        .unwrap()
        .to_bytes();
    let sent = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(
        sent.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{sent:?}"
    );
    assert!(
        sent.ends_with("2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
        "{sent:?}"
    );
    backend.join().unwrap();
}
