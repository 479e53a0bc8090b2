//! The `echo` program on the uwsgi protocol behind uWSGI's own HTTP router (`--http` with
//! `--http-to`, Debian's `uwsgi-core` with its `corerouter` and `http` plugins), with and
//! without `--http-chunked-input`, checked field by field; and `uwsgi --ping` against it.
//!
//! The router runs under uWSGI's master process: without `--master`, uWSGI's main process
//! becomes a worker, finds no socket to serve and exits, taking its router with it. With
//! `--die-on-term` the master stops on the SIGTERM that [`WebServer`] sends (in uWSGI 2.0 SIGTERM
//! otherwise means reload), burying the router.

mod common;

use std::process::{Child, Command, Stdio};

use common::{ECHO, TempDir, WebServer, check_front_end, curl, free_port, sha256_hex, wait_for};

/// Debian's uWSGI binary (`/usr/bin/uwsgi` is an alternatives link to it).
const UWSGI: &str = "/usr/bin/uwsgi-core";

/// A program started by a test, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `echo` with `args` and waits until `port` accepts connections.
fn start_echo(args: &[&str], port: u16) -> Backend {
    let child = Command::new(ECHO)
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let backend = Backend(child);
    wait_for(port);
    backend
}

/// Starts uWSGI's HTTP router on a free port, forwarding to `backend_port`, with `extra` flags;
/// its log goes to `dir`.
fn start_router(dir: &TempDir, backend_port: u16, extra: &[&str]) -> WebServer {
    let port = free_port();
    let log = dir.0.join("uwsgi.log");
    let http = format!("127.0.0.1:{port}");
    let to = format!("127.0.0.1:{backend_port}");
    let mut args = vec![
        "--plugins",
        "corerouter,http",
        "--master",
        "--die-on-term",
        "--logto",
        log.to_str().unwrap(),
        "--http",
        &http,
        "--http-to",
        &to,
    ];
    args.extend_from_slice(extra);
    WebServer::start(UWSGI, &args, port, log.clone())
}

/// A POST of `payload` with `Transfer-Encoding: chunked` (curl reads it from stdin).
fn chunked_post(server: &WebServer, path: &str, payload: &[u8]) -> common::Fetched {
    curl(
        &[
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            &server.url(path),
        ],
        Some(payload),
    )
}

#[test]
fn echo_behind_the_uwsgi_http_router() {
    let dir = TempDir::new("uwsgi-router");
    let backend_port = free_port();
    let _echo = start_echo(
        &["--uwsgi", &format!("127.0.0.1:{backend_port}")],
        backend_port,
    );
    let router = start_router(&dir, backend_port, &[]);

    // The router mounts at the root (SCRIPT_NAME ""). Without `--http-chunked-input` it drops
    // chunked request bodies (see the next test), so the chunked POST is left out here.
    check_front_end(&router, "", "", false, true);

    // What only this front end does: it marks its requests and URL-decodes PATH_INFO itself.
    let get = curl(&[&router.url("/a%20b/c?x=%20")], None);
    assert_eq!(get.status, 200);
    let environ = &get.json()["environ"];
    assert_eq!(environ["UWSGI_ROUTER"], "http");
    assert_eq!(environ["PATH_INFO"], "/a b/c");
    assert_eq!(environ["QUERY_STRING"], "x=%20");
    assert_eq!(environ["REQUEST_URI"], "/a%20b/c?x=%20");
}

/// Without `--http-chunked-input` uWSGI's router forwards a chunked request's head
/// (`HTTP_TRANSFER_ENCODING: chunked`, no `CONTENT_LENGTH`) but none of its body, and keeps the
/// connection open: the vars are the same as in raw mode, so the server expects a chunked body.
/// The app must not be handed a silently empty body: the body timeout ends it with 408.
#[test]
fn without_chunked_input_a_chunked_body_is_not_silently_empty() {
    let dir = TempDir::new("uwsgi-router-plain");
    let backend_port = free_port();
    let _echo = start_echo(
        &[
            "--uwsgi",
            &format!("127.0.0.1:{backend_port}"),
            "--body-timeout",
            "2",
        ],
        backend_port,
    );
    let router = start_router(&dir, backend_port, &[]);
    let post = chunked_post(&router, "/chunked", b"hello, chunked world");
    assert_eq!(post.status, 408, "{}", String::from_utf8_lossy(&post.body));
    // The same router still carries a body with a length.
    let post = curl(&["--data-binary", "hello", &router.url("/sized")], None);
    assert_eq!(post.json()["body_len"], 5);
}

#[test]
fn chunked_bodies_behind_the_router_with_chunked_input() {
    let dir = TempDir::new("uwsgi-router-chunked");
    let backend_port = free_port();
    let _echo = start_echo(
        &["--uwsgi", &format!("127.0.0.1:{backend_port}")],
        backend_port,
    );
    let router = start_router(&dir, backend_port, &["--http-chunked-input"]);

    // Every field, the chunked POST included.
    check_front_end(&router, "", "", true, true);

    // The router sends the raw chunked bytes after the vars, with no CONTENT_LENGTH, and keeps
    // the connection open (curl waits for the answer): echo reads its input to the end, so a
    // whole, exact body proves the input ended at the chunked terminator (input_terminated),
    // not at a length or at the connection's end.
    let payload: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let post = chunked_post(&router, "/big", &payload);
    assert_eq!(post.status, 200);
    let json = post.json();
    assert!(
        json["environ"].get("CONTENT_LENGTH").is_none(),
        "{}",
        json["environ"]
    );
    assert_eq!(json["environ"]["HTTP_TRANSFER_ENCODING"], "chunked");
    assert_eq!(json["body_len"], payload.len());
    assert_eq!(json["body_sha256"], sha256_hex(&payload));

    // An empty chunked body (`0\r\n\r\n` only).
    let empty = chunked_post(&router, "/empty", b"");
    assert_eq!(empty.status, 200);
    let json = empty.json();
    assert_eq!(json["environ"]["HTTP_TRANSFER_ENCODING"], "chunked");
    assert_eq!(json["body_len"], 0);
}

/// `uwsgi --ping ADDR`: exit status 0 on a pong with no payload, 1 on no answer or a wrong one.
fn ping(port: u16) -> Option<i32> {
    Command::new(UWSGI)
        .args(["--plugins", "ping", "--ping", &format!("127.0.0.1:{port}")])
        .args(["--ping-timeout", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("uwsgi-core: run scripts/install-test-deps.sh")
        .code()
}

#[test]
fn uwsgi_ping_gets_a_pong() {
    let uwsgi_port = free_port();
    let _echo = start_echo(&["--uwsgi", &format!("127.0.0.1:{uwsgi_port}")], uwsgi_port);
    assert_eq!(ping(uwsgi_port), Some(0));

    // The check can fail: nothing listening, and a live server that does not speak uwsgi (the
    // same program on HTTP answers the ping packet with an HTTP error, or not at all).
    assert_eq!(ping(free_port()), Some(1));
    let http_port = free_port();
    let _http = start_echo(&["--http", &format!("127.0.0.1:{http_port}")], http_port);
    assert_eq!(ping(http_port), Some(1));
}
