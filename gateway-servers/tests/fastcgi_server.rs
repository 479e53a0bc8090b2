//! The FastCGI server over real sockets on 127.0.0.1, driven with the project's own codec as the
//! web server's side: responder requests, keep-alive, multiplexed interleaved requests, abort,
//! GET_VALUES, roles, STDERR, the environs passing the validator, and the peers
//! `FCGI_WEB_SERVER_ADDRS` allows.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gateway_core::{App, Body, Builder, Environ, StartResponse};
use gateway_servers::fastcgi::codec::{self, ProtocolStatus, Record, Role, StreamKind};
use gateway_servers::fastcgi::protocol::{Roles, Settings};
use gateway_servers::fastcgi::server::Options;
use gateway_servers::fastcgi::web_server_addrs::{self, WebServerAddrs};
use gateway_servers::runtime::{Config, Runtime};
use gateway_testkit::TestServer;
use gateway_testkit::{Mode, Validator};
use http::{HeaderMap, HeaderValue, StatusCode};

/// The FastCGI server with `app` and `roles`, on a free port.
struct Server(TestServer);

impl Server {
    fn start(app: impl App + 'static, roles: Roles) -> Server {
        Server(TestServer::start(move |listener, stop| {
            let mut settings = Settings::default();
            settings.roles = roles;
            settings.max_conns = 77;
            let runtime = Runtime::new(app, Config::default());
            gateway_servers::fastcgi::server::serve(listener, runtime, stop, settings)
        }))
    }

    /// The FastCGI server with `app`, `settings` and `config`, on a free port.
    fn start_config(app: impl App + 'static, settings: Settings, config: Config) -> Server {
        Server(TestServer::start(move |listener, stop| {
            let runtime = Runtime::new(app, config);
            gateway_servers::fastcgi::server::serve(listener, runtime, stop, settings)
        }))
    }

    /// The FastCGI server with `app` and `options`, on a free port.
    fn start_with(app: impl App + 'static, options: Options) -> Server {
        Server(TestServer::start(move |listener, stop| {
            let runtime = Runtime::new(app, Config::default());
            gateway_servers::fastcgi::server::serve_with(listener, runtime, stop, options)
        }))
    }

    fn connect(&self) -> Peer {
        let stream = TcpStream::connect(self.0.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }
}

/// The web server's side of a connection.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

/// What came back for one request.
#[derive(Debug, Default)]
struct Answer {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    end: Option<(u32, ProtocolStatus)>,
}

impl Peer {
    fn send(&mut self, wire: &BytesMut) {
        self.stream.write_all(wire).unwrap();
    }

    /// The next record, or `None` when the server closed the connection.
    fn record(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = codec::decode_record(&mut self.buf).unwrap() {
                return Some(record);
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("read within the timeout");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads records until every request in `ids` ended.
    fn answers(&mut self, ids: &[u16]) -> HashMap<u16, Answer> {
        let mut answers: HashMap<u16, Answer> = HashMap::new();
        while ids
            .iter()
            .any(|id| answers.get(id).is_none_or(|a| a.end.is_none()))
        {
            match self.record().expect("the server answered every request") {
                Record::Stream {
                    request_id,
                    kind,
                    data,
                } => {
                    let answer = answers.entry(request_id).or_default();
                    match kind {
                        StreamKind::Stdout => answer.stdout.extend_from_slice(&data),
                        StreamKind::Stderr => answer.stderr.extend_from_slice(&data),
                        other => panic!("{other:?} from the application"),
                    }
                }
                Record::EndRequest {
                    request_id,
                    app_status,
                    protocol_status,
                } => {
                    answers.entry(request_id).or_default().end =
                        Some((app_status, protocol_status));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        answers
    }
}

fn request(
    wire: &mut BytesMut,
    id: u16,
    role: Role,
    keep: bool,
    params: &[(&str, &str)],
    stdin: Option<&[u8]>,
) {
    codec::encode_begin_request(wire, id, role, keep);
    let mut block = BytesMut::new();
    for (name, value) in params {
        codec::encode_pair(&mut block, name.as_bytes(), value.as_bytes());
    }
    codec::encode_stream(wire, StreamKind::Params, id, &block);
    codec::encode_end_of_stream(wire, StreamKind::Params, id);
    if let Some(stdin) = stdin {
        codec::encode_stream(wire, StreamKind::Stdin, id, stdin);
        codec::encode_end_of_stream(wire, StreamKind::Stdin, id);
    }
}

const PARAMS: &[(&str, &str)] = &[
    ("REQUEST_METHOD", "POST"),
    ("SCRIPT_NAME", "/app"),
    ("PATH_INFO", "/x"),
    ("QUERY_STRING", "q=1"),
    ("CONTENT_LENGTH", "5"),
    ("CONTENT_TYPE", "text/plain"),
    ("SERVER_NAME", "localhost"),
    ("SERVER_PORT", "80"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("HTTP_HOST", "localhost"),
];

fn echo(mut environ: Environ, start: StartResponse) -> Body {
    let mut body = Vec::new();
    if let Err(error) = environ.input().read_to_end(&mut body) {
        return Body::error(error);
    }
    let _ = writeln!(environ.errors(), "echo saw {} bytes", body.len());
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let _ = start.start(StatusCode::OK, headers);
    let mut answer = format!(
        "{} {}|",
        environ.get_str("FCGI_ROLE").unwrap_or("-"),
        String::from_utf8_lossy(environ.path_info())
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Body::from(answer)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_responder_request_then_the_connection_closes() {
    let server = Server::start(echo, Roles::RESPONDER);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, false, PARAMS, Some(b"hello"));
    peer.send(&wire);
    let answers = peer.answers(&[1]);
    let answer = &answers[&1];
    let stdout = text(&answer.stdout);
    assert!(stdout.starts_with("Status: 200 OK\r\n"), "{stdout}");
    assert!(stdout.ends_with("\r\n\r\nRESPONDER /x|hello"), "{stdout}");
    assert_eq!(text(&answer.stderr), "echo saw 5 bytes\n");
    assert_eq!(answer.end, Some((0, ProtocolStatus::RequestComplete)));
    assert!(peer.record().is_none(), "closed: no FCGI_KEEP_CONN");
}

#[test]
fn a_body_left_unread_is_read_until_the_web_server_closes_so_it_gets_the_answer() {
    // An app that answers without reading its body.
    let refuses = |_: Environ, start: StartResponse| {
        let _ = start.start(StatusCode::FORBIDDEN, HeaderMap::new());
        Body::from("no")
    };
    let server = Server::start(refuses, Roles::RESPONDER);
    // 8 MiB: more than loopback's socket buffers hold, so a web server that sends it all
    // before it reads (as nginx does) meets a closed connection unless the server reads it.
    let body = vec![b'x'; 8 << 20];
    let length = body.len().to_string();
    let mut params = PARAMS.to_vec();
    params.retain(|(name, _)| *name != "CONTENT_LENGTH");
    params.push(("CONTENT_LENGTH", &length));
    // Alone on its connection; and kept, then a request after it on the same connection.
    for ids in [&[1][..], &[1, 2]] {
        let mut peer = server.connect();
        let mut wire = BytesMut::new();
        for &id in ids {
            let keep = id < ids.len() as u16;
            request(&mut wire, id, Role::Responder, keep, &params, Some(&body));
        }
        peer.send(&wire);
        let answers = peer.answers(ids);
        for id in ids {
            let stdout = text(&answers[id].stdout);
            assert!(stdout.starts_with("Status: 403 Forbidden\r\n"), "{stdout}");
            assert_eq!(answers[id].end, Some((0, ProtocolStatus::RequestComplete)));
        }
        // The web server closes once it has its answers (the server waits for that).
    }
}

#[test]
fn keep_conn_and_multiplexed_interleaved_requests() {
    let server = Server::start(echo, Roles::RESPONDER);
    let mut peer = server.connect();
    for round in 0..2 {
        // Two requests interleaved record by record.
        let mut wire = BytesMut::new();
        codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
        codec::encode_begin_request(&mut wire, 2, Role::Responder, true);
        let mut block = BytesMut::new();
        for (n, v) in PARAMS {
            codec::encode_pair(&mut block, n.as_bytes(), v.as_bytes());
        }
        codec::encode_stream(&mut wire, StreamKind::Params, 2, &block);
        codec::encode_stream(&mut wire, StreamKind::Params, 1, &block);
        codec::encode_end_of_stream(&mut wire, StreamKind::Params, 1);
        codec::encode_end_of_stream(&mut wire, StreamKind::Params, 2);
        codec::encode_stream(&mut wire, StreamKind::Stdin, 2, b"two..");
        codec::encode_stream(&mut wire, StreamKind::Stdin, 1, b"one..");
        codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 2);
        codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
        peer.send(&wire);
        let answers = peer.answers(&[1, 2]);
        assert!(
            text(&answers[&1].stdout).ends_with("|one.."),
            "round {round}"
        );
        assert!(
            text(&answers[&2].stdout).ends_with("|two.."),
            "round {round}"
        );
    }
}

#[test]
fn get_values_and_unknown_types_are_answered_on_a_kept_connection() {
    let server = Server::start(echo, Roles::RESPONDER);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    codec::encode_get_values(&mut wire, [codec::MAX_CONNS, codec::MPXS_CONNS]);
    Record::Unknown {
        request_id: 0,
        record_type: 99,
        content: Bytes::new(),
    }
    .encode(&mut wire);
    peer.send(&wire);
    let Some(Record::GetValuesResult { pairs }) = peer.record() else {
        panic!()
    };
    let pairs: Vec<_> = codec::Pairs::new(pairs).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        pairs,
        [
            (Bytes::from_static(codec::MAX_CONNS), Bytes::from("77")),
            (Bytes::from_static(codec::MPXS_CONNS), Bytes::from("1")),
        ]
    );
    assert_eq!(peer.record(), Some(Record::UnknownType { record_type: 99 }));
    // The connection still serves requests.
    let mut wire = BytesMut::new();
    request(&mut wire, 3, Role::Responder, true, PARAMS, Some(b"after"));
    peer.send(&wire);
    assert!(text(&peer.answers(&[3])[&3].stdout).ends_with("|after"));
}

#[test]
fn roles_the_app_does_not_play_get_unknown_role() {
    let server = Server::start(echo, Roles::RESPONDER);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Authorizer, true, PARAMS, None);
    peer.send(&wire);
    assert_eq!(
        peer.answers(&[1])[&1].end,
        Some((0, ProtocolStatus::UnknownRole))
    );

    let server = Server::start(echo, Roles::ALL);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    let params: Vec<_> = PARAMS
        .iter()
        .filter(|(n, _)| *n != "CONTENT_LENGTH")
        .copied()
        .collect();
    request(&mut wire, 1, Role::Authorizer, true, &params, Some(b""));
    peer.send(&wire);
    let answer = &peer.answers(&[1])[&1];
    assert!(
        text(&answer.stdout).ends_with("AUTHORIZER /x|"),
        "{}",
        text(&answer.stdout)
    );
}

/// An app whose body never ends, the flag its body sets when it is dropped, and a channel on
/// which its body says when the server first polls it.
fn never_ending() -> (impl App + 'static, Arc<AtomicBool>, mpsc::Receiver<()>) {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let (polled_tx, polled) = mpsc::channel();
    let app = move |_: Environ, start: StartResponse| {
        let guard = Flag(flag.clone());
        let polled = polled_tx.clone();
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from_future(async move {
            let _guard = guard;
            let _ = polled.send(());
            std::future::pending::<()>().await;
            Ok(Body::empty())
        })
    };
    (app, dropped, polled)
}

/// Whether `dropped` is set within five seconds.
fn dropped_soon(dropped: &AtomicBool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    dropped.load(Ordering::SeqCst)
}

/// Starts a request whose app never ends, of each kind (a request with a body runs in a task of
/// its own; one without, in the connection's), stops it with `stop` (the web server's side of
/// its connection) once the server is polling its body, and checks that the body is dropped.
fn stopped_while_running(stop: impl Fn(Peer)) {
    let get: &[(&str, &str)] = &[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/x")];
    for (params, stdin) in [(PARAMS, &b"hello"[..]), (get, b"")] {
        let (app, dropped, polled) = never_ending();
        let server = Server::start(app, Roles::RESPONDER);
        let mut peer = server.connect();
        let mut wire = BytesMut::new();
        request(&mut wire, 1, Role::Responder, true, params, Some(stdin));
        peer.send(&wire);
        polled
            .recv_timeout(Duration::from_secs(10))
            .expect("the server polls the app's body");
        assert!(!dropped.load(Ordering::SeqCst), "dropped before the stop");
        stop(peer);
        assert!(
            dropped_soon(&dropped),
            "the app's body was dropped ({params:?})"
        );
    }
}

#[test]
fn abort_drops_the_response_and_ends_the_request() {
    stopped_while_running(|mut peer| {
        let mut wire = BytesMut::new();
        codec::encode_abort_request(&mut wire, 1);
        peer.send(&wire);
        let answer = &peer.answers(&[1])[&1];
        assert_eq!(answer.end, Some((0, ProtocolStatus::RequestComplete)));
    });
}

#[test]
fn abort_drops_only_its_request_among_those_the_connection_polls() {
    // Two requests without a body, polled by the connection's task (the first in a slot of its
    // own, the second among the others), each with a body that never ends; each flag is set
    // when the body of the request of that path is dropped.
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped: Arc<[Arc<AtomicBool>; 2]> = Arc::new(Default::default());
    let (polled_tx, polled) = mpsc::channel();
    let flags = dropped.clone();
    let app = move |environ: Environ, start: StartResponse| {
        let which = usize::from(environ.path_info() == b"/1");
        let guard = Flag(flags[which].clone());
        let polled = polled_tx.clone();
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from_future(async move {
            let _guard = guard;
            let _ = polled.send(which);
            std::future::pending::<()>().await;
            Ok(Body::empty())
        })
    };
    let server = Server::start(app, Roles::RESPONDER);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    for (id, path) in [(1, "/0"), (2, "/1")] {
        let params = [("REQUEST_METHOD", "GET"), ("PATH_INFO", path)];
        request(&mut wire, id, Role::Responder, true, &params, Some(b""));
    }
    peer.send(&wire);
    let mut seen: Vec<usize> = (0..2)
        .map(|_| polled.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1], "both bodies polled");
    for (id, which) in [(2, 1), (1, 0)] {
        wire.clear();
        codec::encode_abort_request(&mut wire, id);
        peer.send(&wire);
        let answer = &peer.answers(&[id])[&id];
        assert_eq!(answer.end, Some((0, ProtocolStatus::RequestComplete)));
        assert!(dropped_soon(&dropped[which]), "request {id}'s body dropped");
        if which == 1 {
            assert!(!dropped[0].load(Ordering::SeqCst), "request 1 runs on");
        }
    }
}

#[test]
fn the_environs_pass_the_validator() {
    let validator = Validator::new(Mode::Strict);
    let report = validator.report();
    let app = Builder::new().with(validator).app(echo);
    let server = Server::start(app, Roles::RESPONDER);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    // nginx style: empty CONTENT_* and its HTTP_CONTENT_* duplicates, and fastcgi_params'
    // `REMOTE_USER $remote_user`, empty without authentication.
    let nginx: Vec<(&str, &str)> = vec![
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/index"),
        ("QUERY_STRING", ""),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("REMOTE_USER", ""),
        ("HTTP_CONTENT_LENGTH", "0"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ];
    request(&mut wire, 1, Role::Responder, true, &nginx, Some(b""));
    request(&mut wire, 2, Role::Responder, true, PARAMS, Some(b"hello"));
    peer.send(&wire);
    let answers = peer.answers(&[1, 2]);
    assert!(text(&answers[&1].stdout).starts_with("Status: 200 OK"));
    assert!(report.is_clean(), "{:#?}", report.violations());
}

#[test]
fn fcgi_web_server_addrs_allows_listed_peers_and_closes_others() {
    let restricted = |value: &str| {
        let mut options = Options::default();
        options.web_server_addrs = web_server_addrs::parse(value)
            .unwrap()
            .map(WebServerAddrs::new);
        Server::start_with(echo, options)
    };
    // 127.0.0.1 is listed (among others): served as usual.
    let server = restricted("192.0.2.1, 127.0.0.1, ::1");
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, false, PARAMS, Some(b"hello"));
    peer.send(&wire);
    let answer = &peer.answers(&[1])[&1];
    assert!(text(&answer.stdout).ends_with("RESPONDER /x|hello"));
    assert_eq!(answer.end, Some((0, ProtocolStatus::RequestComplete)));

    // Only other addresses are listed: the connection is closed before anything is sent.
    for value in ["192.0.2.1", "192.0.2.1, ::1", "127.0.0.2"] {
        let server = restricted(value);
        let mut peer = server.connect();
        // Closed at once, with nothing sent: an end of stream within the read timeout (10 s),
        // well before the header timeout (30 s) could close a connection that sends nothing.
        let mut byte = [0u8; 1];
        let read = peer.stream.read(&mut byte);
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{value}: {read:?}"
        );
        // And a request sent anyway gets no answer.
        let mut wire = BytesMut::new();
        request(&mut wire, 1, Role::Responder, false, PARAMS, Some(b"hello"));
        let _ = peer.stream.write_all(&wire);
        assert!(
            !matches!(peer.stream.read(&mut byte), Ok(n) if n > 0),
            "{value}"
        );
    }
}

#[test]
fn without_multiplexing_a_second_request_gets_cant_mpx_conn() {
    let mut options = Options::default();
    options.settings.multiplex = false;
    let server = Server::start_with(echo, options);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    codec::encode_get_values(&mut wire, [codec::MPXS_CONNS]);
    peer.send(&wire);
    let Some(Record::GetValuesResult { pairs }) = peer.record() else {
        panic!()
    };
    let pairs: Vec<_> = codec::Pairs::new(pairs).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        pairs,
        [(Bytes::from_static(codec::MPXS_CONNS), Bytes::from("0"))]
    );

    // Request 1 is open (its params not even finished) when request 2 begins.
    let mut wire = BytesMut::new();
    codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
    let mut block = BytesMut::new();
    for (n, v) in PARAMS {
        codec::encode_pair(&mut block, n.as_bytes(), v.as_bytes());
    }
    codec::encode_stream(&mut wire, StreamKind::Params, 1, &block);
    request(&mut wire, 2, Role::Responder, true, PARAMS, Some(b"two.."));
    codec::encode_end_of_stream(&mut wire, StreamKind::Params, 1);
    codec::encode_stream(&mut wire, StreamKind::Stdin, 1, b"one..");
    codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
    peer.send(&wire);
    let answers = peer.answers(&[1, 2]);
    assert_eq!(answers[&2].end, Some((0, ProtocolStatus::CantMpxConn)));
    assert!(
        answers[&2].stdout.is_empty(),
        "the refused request never ran"
    );
    assert_eq!(answers[&1].end, Some((0, ProtocolStatus::RequestComplete)));
    assert!(text(&answers[&1].stdout).ends_with("|one.."));

    // Once request 1 ended, the connection serves the next one.
    let mut wire = BytesMut::new();
    request(&mut wire, 2, Role::Responder, false, PARAMS, Some(b"next."));
    peer.send(&wire);
    let answer = &peer.answers(&[2])[&2];
    assert_eq!(answer.end, Some((0, ProtocolStatus::RequestComplete)));
    assert!(text(&answer.stdout).ends_with("|next."));
}

#[test]
fn a_mount_prefix_splits_the_whole_path_in_script_name() {
    let mut options = Options::default();
    options.mount = Some("/app".to_owned());
    let server = Server::start_with(echo, options);
    let mut peer = server.connect();
    // nginx with `include fastcgi_params;`: the whole path in SCRIPT_NAME, no PATH_INFO.
    let nginx = |script_name| {
        let mut params: Vec<(&str, &str)> = PARAMS
            .iter()
            .filter(|(n, _)| *n != "SCRIPT_NAME" && *n != "PATH_INFO")
            .copied()
            .collect();
        params.push(("SCRIPT_NAME", script_name));
        params
    };
    let mut wire = BytesMut::new();
    request(
        &mut wire,
        1,
        Role::Responder,
        true,
        &nginx("/app/x/y"),
        Some(b"hello"),
    );
    request(
        &mut wire,
        2,
        Role::Responder,
        true,
        &nginx("/application/x"),
        Some(b"hello"),
    );
    peer.send(&wire);
    let answers = peer.answers(&[1, 2]);
    assert!(text(&answers[&1].stdout).ends_with("RESPONDER /x/y|hello"));
    // Not under the prefix: left as the front end sent it (no PATH_INFO).
    assert!(text(&answers[&2].stdout).ends_with("RESPONDER |hello"));
}

#[test]
fn an_authorizer_is_answered_without_stdin_and_its_variables_keep_their_names() {
    // Apache's mod_authnz_fcgi: role 2, no CONTENT_LENGTH, and no STDIN record at all.
    let app = |mut environ: Environ, start: StartResponse| {
        let mut body = Vec::new();
        if let Err(error) = environ.input().read_to_end(&mut body) {
            return Body::error(error);
        }
        let mut headers = HeaderMap::new();
        headers.insert("variable-auth_user", HeaderValue::from_static("alice"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        let _ = start.start(StatusCode::OK, headers);
        Body::from(format!("read {}", body.len()))
    };
    let server = Server::start(app, Roles::AUTHORIZER);
    let mut peer = server.connect();
    let params: Vec<_> = PARAMS
        .iter()
        .filter(|(n, _)| *n != "CONTENT_LENGTH")
        .copied()
        .collect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Authorizer, false, &params, None);
    peer.send(&wire);
    let answer = &peer.answers(&[1])[&1];
    let stdout = text(&answer.stdout);
    assert!(stdout.starts_with("Status: 200 OK\r\n"), "{stdout}");
    assert!(
        stdout.contains("\r\nVariable-AUTH_USER: alice\r\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\r\nx-other: 1\r\n"), "{stdout}");
    assert!(stdout.ends_with("\r\n\r\nread 0"), "{stdout}");
    assert_eq!(answer.end, Some((0, ProtocolStatus::RequestComplete)));
}

#[test]
fn a_graceful_stop_closes_idle_kept_connections_at_once_and_finishes_running_requests() {
    // The app of `/hold` answers `done` once the test releases it (`not released` if no release
    // comes within 10 s), so a request is still running when the stop comes; every other path
    // is `echo`.
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let app = move |mut environ: Environ, start: StartResponse| {
        if environ.path_info() != b"/hold" {
            return echo(environ, start);
        }
        let mut body = Vec::new();
        let _ = environ.input().read_to_end(&mut body);
        let _ = entered_tx.send(());
        let wait = released
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(10));
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from(if wait.is_ok() { "done" } else { "not released" })
    };
    let mut server = Server::start(app, Roles::RESPONDER);
    // One kept connection that answered a request and is now idle, as nginx keeps them.
    let mut idle = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, true, PARAMS, Some(b"hello"));
    idle.send(&wire);
    assert_eq!(
        idle.answers(&[1])[&1].end,
        Some((0, ProtocolStatus::RequestComplete))
    );
    // One kept connection with a request in progress.
    let mut held = PARAMS.to_vec();
    held.retain(|(name, _)| *name != "PATH_INFO");
    held.push(("PATH_INFO", "/hold"));
    let mut busy = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, true, &held, Some(b"hello"));
    busy.send(&wire);
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the app of /hold was called");

    let (stopped_tx, stopped) = mpsc::channel();
    std::thread::spawn(move || {
        server.0.stop();
        let _ = stopped_tx.send(());
    });
    // Closed while the request on the other connection is still held (it is released only
    // after this), not once the running requests are done.
    assert!(idle.record().is_none(), "the idle connection was closed");
    release.send(()).unwrap();
    let answers = busy.answers(&[1]);
    let stdout = text(&answers[&1].stdout);
    assert!(stdout.ends_with("\r\n\r\ndone"), "{stdout}");
    assert!(busy.record().is_none(), "closed after its last response");
    // The stop ends with its last connection, not at the shutdown timeout (30 s).
    stopped
        .recv_timeout(Duration::from_secs(10))
        .expect("the stop returned");
}

#[test]
fn a_short_body_is_read_whole_before_the_app_runs_and_a_truncated_one_fails_its_read() {
    let entered = Arc::new(AtomicUsize::new(0));
    let count = entered.clone();
    let app = move |environ: Environ, start: StartResponse| {
        count.fetch_add(1, Ordering::SeqCst);
        echo(environ, start)
    };
    let server = Server::start(app, Roles::RESPONDER);
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, true, PARAMS, None);
    codec::encode_stream(&mut wire, StreamKind::Stdin, 1, b"hel");
    peer.send(&wire);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        entered.load(Ordering::SeqCst),
        0,
        "called before its body came"
    );
    let mut wire = BytesMut::new();
    codec::encode_stream(&mut wire, StreamKind::Stdin, 1, b"lo");
    codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
    peer.send(&wire);
    let answers = peer.answers(&[1]);
    assert!(text(&answers[&1].stdout).ends_with("|hello"));
    assert_eq!(entered.load(Ordering::SeqCst), 1);

    // STDIN ends 2 bytes short of CONTENT_LENGTH: the app's read fails, as it would streamed,
    // and the answer is the client's 400 (the web server ended the body early), not a 500.
    let mut wire = BytesMut::new();
    request(&mut wire, 2, Role::Responder, true, PARAMS, Some(b"abc"));
    peer.send(&wire);
    let answers = peer.answers(&[2]);
    let stdout = text(&answers[&2].stdout);
    assert!(stdout.starts_with("Status: 400"), "{stdout}");
    assert!(text(&answers[&2].stderr).contains("ended after 3 of 5 bytes"));
}

#[test]
fn a_stdin_that_ends_with_the_params_and_one_that_comes_later_are_read_alike() {
    let server = Server::start(echo, Roles::RESPONDER);
    let mut peer = server.connect();
    let mut get: Vec<(&str, &str)> = PARAMS.to_vec();
    get.retain(|(name, _)| *name != "CONTENT_LENGTH");
    // No length, and STDIN ends in the same write as the params (nginx's GET): an empty body.
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, true, &get, Some(b""));
    peer.send(&wire);
    assert!(text(&peer.answers(&[1])[&1].stdout).ends_with("|"));
    // No length, and the body comes in later writes: streamed to its empty record.
    let mut wire = BytesMut::new();
    request(&mut wire, 2, Role::Responder, true, &get, None);
    peer.send(&wire);
    std::thread::sleep(Duration::from_millis(100));
    let mut wire = BytesMut::new();
    codec::encode_stream(&mut wire, StreamKind::Stdin, 2, b"later");
    codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 2);
    peer.send(&wire);
    assert!(text(&peer.answers(&[2])[&2].stdout).ends_with("|later"));
    // A declared length, and STDIN ends at once: the read fails, short by the whole length,
    // and the answer is the client's 400.
    let mut wire = BytesMut::new();
    request(&mut wire, 3, Role::Responder, true, PARAMS, Some(b""));
    peer.send(&wire);
    let answers = peer.answers(&[3]);
    assert!(text(&answers[&3].stdout).starts_with("Status: 400"));
    assert!(text(&answers[&3].stderr).contains("ended after 0 of 5 bytes"));
}

#[test]
fn a_request_that_waits_to_read_its_body_holds_back_its_connection_only_and_loses_nothing() {
    // The app of `/wait` reads nothing until the test lets it; every other path is `echo`.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    let app = move |environ: Environ, start: StartResponse| {
        if environ.path_info() == b"/wait" {
            let _ = released.lock().unwrap().recv();
        }
        echo(environ, start)
    };
    let server = Server::start(app, Roles::RESPONDER);
    // 200 STDIN records of 1,000 bytes: far more than a request's body queue holds, so the
    // server stops reading this connection until the app reads.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let length = body.len().to_string();
    let mut waiting = PARAMS.to_vec();
    waiting.retain(|(name, _)| !matches!(*name, "PATH_INFO" | "CONTENT_LENGTH"));
    waiting.extend([("PATH_INFO", "/wait"), ("CONTENT_LENGTH", length.as_str())]);
    let mut wire = BytesMut::new();
    codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
    let mut block = BytesMut::new();
    for (name, value) in &waiting {
        codec::encode_pair(&mut block, name.as_bytes(), value.as_bytes());
    }
    codec::encode_stream(&mut wire, StreamKind::Params, 1, &block);
    codec::encode_end_of_stream(&mut wire, StreamKind::Params, 1);
    for chunk in body.chunks(1000) {
        codec::encode_stream(&mut wire, StreamKind::Stdin, 1, chunk);
    }
    codec::encode_end_of_stream(&mut wire, StreamKind::Stdin, 1);
    // A second request on the same connection, behind the first one's body.
    request(&mut wire, 2, Role::Responder, true, PARAMS, Some(b"two.."));
    let mut held = server.connect();
    let mut writer = held.stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&wire).unwrap());

    // Another connection is answered while the first waits.
    let mut other = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, false, PARAMS, Some(b"other"));
    other.send(&wire);
    assert!(text(&other.answers(&[1])[&1].stdout).ends_with("|other"));

    release.send(()).unwrap();
    sending.join().unwrap();
    let answers = held.answers(&[1, 2]);
    let first = &answers[&1].stdout;
    let at = first
        .windows(6)
        .position(|w| w == b"/wait|")
        .expect("the echo")
        + 6;
    assert_eq!(
        first[at..],
        body[..],
        "the whole body reached the app, in order"
    );
    assert_eq!(answers[&1].end, Some((0, ProtocolStatus::RequestComplete)));
    assert!(text(&answers[&2].stdout).ends_with("|two.."));
}

#[test]
fn a_web_server_that_stops_reading_holds_back_the_response_not_the_server() {
    // 48 MiB of response in 64 KiB chunks, made only as they are taken.
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 768;
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let app = move |environ: Environ, start: StartResponse| {
        if environ.path_info() != b"/big" {
            return echo(environ, start);
        }
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        let counter = counter.clone();
        Body::from_chunks((0..CHUNKS).map(move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            Bytes::from(vec![(i % 251) as u8; CHUNK])
        }))
    };
    let server = Server::start(app, Roles::RESPONDER);
    let mut slow = server.connect();
    let mut params = PARAMS.to_vec();
    params.retain(|(name, _)| !matches!(*name, "PATH_INFO" | "CONTENT_LENGTH"));
    params.push(("PATH_INFO", "/big"));
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, true, &params, Some(b""));
    slow.send(&wire);

    // While it reads nothing, another connection is answered, and the app is not drained into
    // memory: only what the socket buffers and the server's bounded queues hold is made.
    let mut other = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, false, PARAMS, Some(b"other"));
    other.send(&wire);
    assert!(text(&other.answers(&[1])[&1].stdout).ends_with("|other"));
    std::thread::sleep(Duration::from_millis(300));
    let early = made.load(Ordering::SeqCst);
    assert!(
        early < CHUNKS / 2,
        "{early} of {CHUNKS} chunks made while nothing was read"
    );

    // Then every byte arrives, in order.
    let answers = slow.answers(&[1]);
    let stdout = &answers[&1].stdout;
    let body_at = stdout.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &stdout[body_at..];
    assert_eq!(body.len(), CHUNK * CHUNKS);
    assert!(
        body.chunks(CHUNK)
            .enumerate()
            .all(|(i, chunk)| chunk.iter().all(|&b| b == (i % 251) as u8))
    );
    assert_eq!(answers[&1].end, Some((0, ProtocolStatus::RequestComplete)));
    assert_eq!(made.load(Ordering::SeqCst), CHUNKS);
}

#[test]
fn idle_kept_connections_and_requests_never_completed_are_closed_at_their_timeouts() {
    let mut config = Config::default();
    config.keep_alive_timeout = Duration::from_millis(300);
    config.header_read_timeout = Duration::from_millis(300);
    let server = Server::start_config(echo, Settings::default(), config);
    let get: &[(&str, &str)] = &[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/x")];

    // Kept after its request, then idle: closed (the peer's read would fail after 10 s).
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, true, get, Some(b""));
    peer.send(&wire);
    assert_eq!(peer.answers(&[1])[&1].end.unwrap().0, 0);
    assert!(peer.record().is_none(), "closed once idle too long");

    // A request whose params never end, and half a record header.
    let mut wire = BytesMut::new();
    codec::encode_begin_request(&mut wire, 1, Role::Responder, true);
    let mut block = BytesMut::new();
    codec::encode_pair(&mut block, b"REQUEST_METHOD", b"GET");
    codec::encode_stream(&mut wire, StreamKind::Params, 1, &block);
    for partial in [&wire[..], &wire[..4]] {
        let mut peer = server.connect();
        peer.stream.write_all(partial).unwrap();
        assert!(
            peer.record().is_none(),
            "closed before the request was complete"
        );
    }
}

#[test]
fn the_web_server_closing_its_connection_drops_the_requests_running_on_it() {
    stopped_while_running(drop);
}

#[test]
fn a_content_length_that_is_not_a_number_gets_400_and_the_connection_serves_on() {
    let called = Arc::new(AtomicUsize::new(0));
    let count = called.clone();
    let app = move |environ: Environ, start: StartResponse| {
        count.fetch_add(1, Ordering::SeqCst);
        echo(environ, start)
    };
    let server = Server::start(app, Roles::RESPONDER);
    let mut peer = server.connect();
    let bad = [("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "abc")];
    let mut wire = BytesMut::new();
    request(&mut wire, 1, Role::Responder, true, &bad, Some(b"hello"));
    request(&mut wire, 2, Role::Responder, true, PARAMS, Some(b"hello"));
    peer.send(&wire);
    let answers = peer.answers(&[1, 2]);
    assert!(text(&answers[&1].stdout).starts_with("Status: 400 Bad Request\r\n"));
    assert!(text(&answers[&2].stdout).starts_with("Status: 200 OK\r\n"));
    assert_eq!(
        called.load(Ordering::SeqCst),
        1,
        "the app saw only the valid request"
    );
}

#[test]
fn params_held_for_requests_not_yet_complete_are_bounded_per_connection() {
    let mut settings = Settings::default();
    settings.max_params_size = 1000;
    let server = Server::start_config(echo, settings, Config::default());
    let begin = |wire: &mut BytesMut, id: u16| {
        codec::encode_begin_request(wire, id, Role::Responder, true);
        let mut block = BytesMut::new();
        codec::encode_pair(&mut block, b"HTTP_X_PAD", &[b'p'; 400]);
        codec::encode_stream(wire, StreamKind::Params, id, &block);
    };
    let finish = |wire: &mut BytesMut, id: u16| {
        codec::encode_end_of_stream(wire, StreamKind::Params, id);
        codec::encode_end_of_stream(wire, StreamKind::Stdin, id);
    };

    // Two at once fit, and their places are free again once they ran: two more fit after.
    let mut peer = server.connect();
    for ids in [[1, 2], [3, 4]] {
        let mut wire = BytesMut::new();
        for id in ids {
            begin(&mut wire, id);
        }
        for id in ids {
            finish(&mut wire, id);
        }
        peer.send(&wire);
        let answers = peer.answers(&ids);
        assert!(
            ids.iter()
                .all(|id| answers[id].end == Some((0, ProtocolStatus::RequestComplete)))
        );
    }

    // A third one begun while two hold theirs closes the connection.
    let mut peer = server.connect();
    let mut wire = BytesMut::new();
    for id in [1, 2, 3] {
        begin(&mut wire, id);
    }
    peer.send(&wire);
    assert!(peer.record().is_none(), "closed past the limit");
}

#[test]
fn wsgi_errors_lines_of_an_aborted_request_never_reach_the_next_request_with_its_id() {
    // The aborted request's app goes on running on its thread (a blocking call cannot be
    // stopped) and writes a line after the abort, while the next request with id 1 runs: the
    // app of `/first` writes it once the app of `/second` has been called, and `/second`
    // answers `done` once it is written (`no late line` if that does not happen within 10 s).
    let (first_entered_tx, first_entered) = mpsc::channel();
    let (second_entered_tx, second_entered) = mpsc::channel::<()>();
    let (written_tx, written) = mpsc::channel::<()>();
    let (second_entered, written) = (Mutex::new(second_entered), Mutex::new(written));
    let app = move |mut environ: Environ, start: StartResponse| {
        let wait = Duration::from_secs(10);
        let answer = if environ.path_info() == b"/first" {
            let _ = first_entered_tx.send(());
            if second_entered.lock().unwrap().recv_timeout(wait).is_ok() {
                let _ = writeln!(environ.errors(), "late line of the aborted request");
                let _ = written_tx.send(());
            }
            "first"
        } else {
            let _ = second_entered_tx.send(());
            match written.lock().unwrap().recv_timeout(wait) {
                Ok(()) => "done",
                Err(_) => "no late line",
            }
        };
        let _ = start.start(StatusCode::OK, HeaderMap::new());
        Body::from(answer)
    };
    let server = Server::start(app, Roles::RESPONDER);
    let mut peer = server.connect();
    let path = |path| [("REQUEST_METHOD", "GET"), ("PATH_INFO", path)];
    let mut wire = BytesMut::new();
    request(
        &mut wire,
        1,
        Role::Responder,
        true,
        &path("/first"),
        Some(b""),
    );
    peer.send(&wire);
    first_entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the app of /first was called");
    let mut wire = BytesMut::new();
    codec::encode_abort_request(&mut wire, 1);
    peer.send(&wire);
    assert_eq!(peer.answers(&[1])[&1].stdout, b"");
    let mut wire = BytesMut::new();
    request(
        &mut wire,
        1,
        Role::Responder,
        true,
        &path("/second"),
        Some(b""),
    );
    peer.send(&wire);
    let answer = &peer.answers(&[1])[&1];
    assert!(
        text(&answer.stdout).ends_with("\r\n\r\ndone"),
        "the late line was written while /second ran: {}",
        text(&answer.stdout)
    );
    assert_eq!(text(&answer.stderr), "", "nothing of the aborted request");
}
